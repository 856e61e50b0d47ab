//! `--device cpu|cuda|cuda:N|auto`: pick the backend a command runs on. `auto` (the default)
//! takes the first GPU when CUDA is usable and the CPU otherwise, and says which in the log.
//! The CUDA backend loads its libraries dynamically, so this binary runs on machines without
//! CUDA; asking for `cuda` there is a clear error, never a panic.

use anyhow::{bail, Context, Result};

use qtrain_core::{Backend, CpuBackend, DType};
use qtrain_cuda::CudaBackend;
use qtrain_model::QwenConfig;

/// How a run computes, from `--torch_dtype` (ms-swift's flag) and the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numerics {
    /// The dtype the run computes in.
    pub dtype: DType,
    /// The base weights are trained (full fine-tuning): on the CPU they stay f32 masters and
    /// the bf16 products round them as they pack, as torch's mixed precision does.
    pub trains_base_weights: bool,
    /// `--torch_dtype auto` took the checkpoint's dtype (said in the log).
    pub from_checkpoint: bool,
}

impl Numerics {
    /// `--torch_dtype FLAG` against the checkpoint's own dtype (`config.json`'s `torch_dtype`):
    /// `auto` (ms-swift's default) takes the checkpoint's, f32 when it states none.
    pub fn resolve(flag: &str, checkpoint: Option<DType>, trains_base_weights: bool) -> Result<Numerics> {
        let requested = parse_torch_dtype(flag)?;
        let dtype = requested.or(checkpoint).unwrap_or(DType::F32);
        Ok(Numerics { dtype, trains_base_weights, from_checkpoint: requested.is_none() })
    }

    /// "--torch_dtype bfloat16", or "--torch_dtype auto: bfloat16 (the checkpoint's dtype)".
    pub fn describe(&self) -> String {
        match self.from_checkpoint {
            true => format!("--torch_dtype auto: {} (the checkpoint's dtype)", self.dtype.hf_name()),
            false => format!("--torch_dtype {}", self.dtype.hf_name()),
        }
    }
}

/// A `--torch_dtype` value: `None` for `auto`, else the dtype it names (an error lists the values).
pub fn parse_torch_dtype(flag: &str) -> Result<Option<DType>> {
    match flag {
        "auto" => Ok(None),
        other => DType::from_hf_name(other)
            .map(Some)
            .with_context(|| format!("--torch_dtype {other:?}: valid values are auto, bfloat16, float16, float32")),
    }
}

/// A model folder's `config.json`, read once for the dtype and the memory check, if it can be
/// read (a missing or unreadable folder is reported by the loader itself, with its own message).
pub fn model_config(model_dir: &std::path::Path) -> Option<QwenConfig> {
    QwenConfig::from_file(&model_dir.join("config.json")).ok()
}

/// The `torch_dtype` a config states (`auto`'s answer).
pub fn stated_dtype(config: &QwenConfig) -> Option<DType> {
    config.torch_dtype.as_deref().and_then(DType::from_hf_name)
}

/// Bytes per frozen weight on the CPU for `numerics` (bf16 kept as bf16, everything else f32).
pub fn cpu_weight_bytes(numerics: Numerics) -> u64 {
    if numerics.dtype == DType::BF16 && !numerics.trains_base_weights {
        2
    } else {
        4
    }
}

/// Refuses a CPU run whose predicted peak exceeds the memory available now — before anything is
/// allocated — with both numbers and `advice`. Runs on a GPU are checked against device memory
/// by the CUDA backend itself.
pub fn ensure_cpu_fits(device: Device, what: &str, estimate: &qtrain_model::memory::MemoryEstimate, advice: &str) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let available = qtrain_model::memory::available_bytes();
    qtrain_model::memory::check_fits(what, estimate.total_bytes, available, advice).map_err(anyhow::Error::msg)?;
    eprintln!(
        "[qtrain] memory: {what} needs about {} (predicted), {} available",
        super::gib(estimate.total_bytes),
        available.map(super::gib).unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

/// The CPU backend for `numerics`, and the line the log says about it.
pub fn cpu_backend(numerics: Numerics) -> (CpuBackend, String) {
    match numerics.dtype {
        DType::BF16 => {
            let be = CpuBackend::bf16(!numerics.trains_base_weights);
            let line = be.describe_precision();
            (be, line)
        }
        DType::F32 => {
            let be = CpuBackend::new();
            let line = be.describe_precision();
            (be, line)
        }
        DType::F16 => (
            CpuBackend::new(),
            "float16: the CPU has no float16 products; weights are widened to f32 and products run in f32 (use bfloat16 for the fast path)"
                .to_string(),
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

/// Parse a `--device` value; `auto` probes CUDA.
pub fn resolve(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "auto" => match qtrain_cuda::cuda_available() {
            Ok(()) => {
                eprintln!("[qtrain] device: cuda:0 (CUDA is usable; pass --device cpu to use the CPU)");
                Ok(Device::Cuda(0))
            }
            Err(why) => {
                // The loader's list of every library name it tried helps only on a GPU machine
                // (`--device cuda` prints it in full); here one clause says why.
                let why = why.to_string();
                let short = why.split(" (tried").next().unwrap_or(&why);
                eprintln!("[qtrain] device: cpu (CUDA not usable: {short})");
                Ok(Device::Cpu)
            }
        },
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => bail!("--device must be cpu, cuda, cuda:N or auto, got {other:?}"),
        },
    }
}

/// Work that runs on whichever backend the device selects.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, be: &B) -> Result<Self::Output>;
}

/// Build the backend for `device` and run `task` on it (on the CPU, from inside rayon's pool:
/// see [`CpuBackend::run`]).
pub fn run_on<T: BackendTask + Send>(device: Device, numerics: Numerics, task: T) -> Result<T::Output>
where
    T::Output: Send,
{
    match device {
        Device::Cpu => {
            let (be, line) = cpu_backend(numerics);
            eprintln!("[qtrain] cpu, {}: {line}", numerics.describe());
            be.run(|be| task.run(be))
        }
        Device::Cuda(n) => {
            let be = CudaBackend::new(n).with_context(|| format!("--device cuda:{n}"))?;
            eprintln!("[qtrain] {}; {}", be.name(), be.libraries());
            task.run(&be)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert_eq!(resolve("cpu").unwrap(), Device::Cpu);
        assert_eq!(resolve("cuda:3").unwrap(), Device::Cuda(3));
        assert!(resolve("gpu").is_err());
        assert!(resolve("cuda:x").is_err());
    }

    #[test]
    fn torch_dtype_auto_follows_the_checkpoint() {
        assert_eq!(Numerics::resolve("auto", Some(DType::BF16), false).unwrap().dtype, DType::BF16);
        assert_eq!(Numerics::resolve("auto", None, false).unwrap().dtype, DType::F32);
        assert_eq!(Numerics::resolve("float32", Some(DType::BF16), false).unwrap().dtype, DType::F32);
        assert_eq!(
            Numerics::resolve("bf16", None, true).unwrap(),
            Numerics { dtype: DType::BF16, trains_base_weights: true, from_checkpoint: false }
        );
        assert_eq!(
            Numerics::resolve("auto", Some(DType::BF16), false).unwrap().describe(),
            "--torch_dtype auto: bfloat16 (the checkpoint's dtype)"
        );
        let err = Numerics::resolve("int8", None, false).unwrap_err().to_string();
        assert!(err.contains("--torch_dtype") && err.contains("bfloat16"), "{err}");
        assert!(cpu_backend(Numerics::resolve("bfloat16", None, false).unwrap()).1.starts_with("bf16 weights"));
        assert!(cpu_backend(Numerics::resolve("bfloat16", None, true).unwrap()).1.starts_with("f32 master weights"));
    }
}
