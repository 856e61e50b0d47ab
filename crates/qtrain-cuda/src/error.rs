//! Errors of the CUDA backend: missing libraries or devices, driver / cuBLASLt / NVRTC failures,
//! kernel compilation and launch failures, and out-of-memory with what was being allocated.
//! Converted into [`qtrain_core::CoreError::Device`] at the `Backend` boundary.

use cudarc::cublaslt::result::CublasError;
use cudarc::driver::DriverError;
use cudarc::nvrtc::result::NvrtcError;

pub type Result<T> = std::result::Result<T, CudaError>;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A shared library the backend needs could not be opened.
    #[error("CUDA library {library} not found ({searched}); {hint}")]
    LibraryMissing { library: &'static str, searched: String, hint: &'static str },
    /// The driver loaded but reports no usable device with this ordinal.
    #[error("no CUDA device {ordinal}: {detail}")]
    NoDevice { ordinal: usize, detail: String },
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLASLt call failed.
    #[error("cuBLASLt error: {0}")]
    Cublas(#[from] CublasError),
    /// An NVRTC call (other than the compilation itself) failed.
    #[error("NVRTC error: {0}")]
    Nvrtc(#[from] NvrtcError),
    /// NVRTC rejected a kernel file; `log` is the compiler's output.
    #[error("NVRTC could not compile kernels/{file} for {arch}:\n{log}")]
    Compile { file: &'static str, arch: String, log: String },
    /// A kernel launch (or, with QTRAIN_CUDA_SYNC=1, its execution) failed.
    #[error("kernel {kernel} failed: {source}")]
    Launch {
        kernel: &'static str,
        #[source]
        source: DriverError,
    },
    /// The device had no room for an allocation even after the cache was emptied.
    #[error(
        "out of GPU memory allocating {what} ({}): {} held by live tensors, {} free of {} on the device. \
         Lower --max_length or the batch size, or turn gradient checkpointing on",
        gib(*bytes),
        gib(*live_bytes),
        gib(*free_bytes),
        gib(*total_bytes)
    )]
    OutOfMemory { what: String, bytes: usize, live_bytes: usize, free_bytes: usize, total_bytes: usize },
    /// An operand combination this backend does not implement (e.g. a bf16 gradient buffer).
    #[error("{op}: {detail}")]
    Unsupported { op: &'static str, detail: String },
}

/// Bytes as GiB with two decimals (MiB below 1 GiB), for messages.
pub fn gib(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

impl From<CudaError> for qtrain_core::CoreError {
    fn from(e: CudaError) -> Self {
        qtrain_core::CoreError::Device { backend: "cuda", detail: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_message_names_the_allocation_and_suggests_fixes() {
        let e = CudaError::OutOfMemory {
            what: "linear output [2048, 18944] f32".into(),
            bytes: 2048 * 18944 * 4,
            live_bytes: 70 << 30,
            free_bytes: 100 << 20,
            total_bytes: 80 << 30,
        };
        let msg = e.to_string();
        assert!(msg.contains("linear output [2048, 18944] f32"), "{msg}");
        assert!(msg.contains("148.0 MiB"), "{msg}");
        assert!(msg.contains("70.00 GiB"), "{msg}");
        assert!(msg.contains("--max_length") && msg.contains("batch size") && msg.contains("checkpointing"), "{msg}");
        let core: qtrain_core::CoreError = e.into();
        assert!(core.to_string().starts_with("cuda backend: out of GPU memory"), "{core}");
    }
}
