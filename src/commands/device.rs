//! `--device cpu|cuda|cuda:N|auto`: pick the backend a command runs on. `auto` (the default)
//! takes the first GPU when CUDA is usable and the CPU otherwise, and says which in the log.
//! The CUDA backend loads its libraries dynamically, so this binary runs on machines without
//! CUDA; asking for `cuda` there is a clear error, never a panic.

use anyhow::{bail, Context, Result};

use qtrain_core::{Backend, CpuBackend};
use qtrain_cuda::CudaBackend;

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
                eprintln!("[qtrain] device: cpu (CUDA not usable: {why})");
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
pub fn run_on<T: BackendTask + Send>(device: Device, task: T) -> Result<T::Output>
where
    T::Output: Send,
{
    match device {
        Device::Cpu => CpuBackend::new().run(|be| task.run(be)),
        Device::Cuda(n) => {
            let be = CudaBackend::new(n).with_context(|| format!("--device cuda:{n}"))?;
            eprintln!("[qtrain] {}", be.name());
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
}
