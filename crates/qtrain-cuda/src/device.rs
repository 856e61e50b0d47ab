//! Finding the CUDA libraries and a device before any cudarc call can panic.
//!
//! cudarc opens `libcuda`, `libnvrtc` and `libcublasLt` lazily at the first call into each and
//! panics when one is missing, so every entry point of this crate calls [`check_libraries`] first:
//! it tries to open each library the way cudarc will and turns a miss into a typed error.

use crate::error::{CudaError, Result};

/// Each library this backend opens, with the hint printed when it is missing.
const LIBRARIES: [(&str, &str); 3] = [
    ("driver (libcuda)", "install the NVIDIA driver; without a GPU use the CPU backend"),
    ("NVRTC (libnvrtc)", "kernels are compiled at run time: put the CUDA toolkit's lib64 (e.g. /usr/local/cuda/lib64) on LD_LIBRARY_PATH"),
    ("cuBLASLt (libcublasLt)", "put the CUDA toolkit's lib64 (e.g. /usr/local/cuda/lib64) on LD_LIBRARY_PATH"),
];

fn present(index: usize) -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on NVIDIA's library names and drops the
    // handle; running a CUDA library's initialisers is what using the backend means anyway.
    unsafe {
        match index {
            0 => cudarc::driver::sys::is_culib_present(),
            1 => cudarc::nvrtc::sys::is_culib_present(),
            _ => cudarc::cublaslt::sys::is_culib_present(),
        }
    }
}

fn candidates(name: &str) -> String {
    let c = cudarc::get_lib_name_candidates(name);
    let shown: Vec<&str> = c.iter().map(String::as_str).filter(|n| n.ends_with(".so") || n.contains(".so.")).collect();
    format!("tried {}", shown.join(", "))
}

/// Errors unless the driver, NVRTC and cuBLASLt libraries can all be opened.
pub fn check_libraries() -> Result<()> {
    let lib_names = ["cuda", "nvrtc", "cublasLt"];
    for (i, (library, hint)) in LIBRARIES.iter().enumerate() {
        if !present(i) {
            return Err(CudaError::LibraryMissing { library, searched: candidates(lib_names[i]), hint });
        }
    }
    Ok(())
}

/// Whether the driver library alone can be opened (tests use it to know what to expect).
pub fn driver_library_present() -> bool {
    present(0)
}

/// Whether NVRTC alone can be opened: kernels can then be compiled to PTX even with no driver.
pub fn nvrtc_library_present() -> bool {
    present(1)
}

/// `Ok(())` when a CUDA device can be used: the libraries open, the driver initialises and
/// reports at least one device. Otherwise why not, in words. Never panics.
pub fn cuda_available() -> std::result::Result<(), String> {
    check_libraries().map_err(|e| e.to_string())?;
    cudarc::driver::result::init().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
    let n = cudarc::driver::result::device::get_count().map_err(|e| format!("cannot count CUDA devices: {e}"))?;
    if n < 1 {
        return Err("the CUDA driver reports no device".into());
    }
    Ok(())
}
