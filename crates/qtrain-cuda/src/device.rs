//! Finding the CUDA libraries and a device before any cudarc call can panic.
//!
//! cudarc opens `libcuda`, `libnvrtc` and `libcublasLt` lazily at the first call into each and
//! panics when one is missing, so every entry point of this crate calls [`check_libraries`] first:
//! it tries to open each library the way cudarc will and turns a miss into a typed error.
//! [`library_report`] then says which files and versions were actually loaded.

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

/// The CUDA major version this build looks for (the cargo feature: `cuda-13000` → 13).
pub const BUILT_FOR_CUDA_MAJOR: u32 = if cfg!(feature = "cuda-13000") { 13 } else { 12 };

/// The CUDA libraries a backend actually uses: their versions and the files loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryReport {
    /// `cuDriverGetVersion`: 13000 for CUDA 13.0.
    pub driver: i32,
    /// `nvrtcVersion`: (major, minor).
    pub nvrtc: (i32, i32),
    /// `cublasLtGetVersion`: major·10000 + minor·100 + patch.
    pub cublaslt: usize,
    /// Files of libcuda, libnvrtc and libcublasLt mapped into this process (`/proc/self/maps`).
    pub files: Vec<String>,
}

impl std::fmt::Display for LibraryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (d, n, c) = (self.driver, self.nvrtc, self.cublaslt);
        write!(
            f,
            "driver API {}.{}, NVRTC {}.{}, cuBLASLt {}.{}.{}",
            d / 1000,
            d % 1000 / 10,
            n.0,
            n.1,
            c / 10000,
            c / 100 % 100,
            c % 100
        )?;
        write!(f, " ({})", if self.files.is_empty() { "files unknown".to_string() } else { self.files.join(", ") })
    }
}

/// Versions and files of the loaded CUDA libraries. cudarc tries the unversioned names
/// (`libcublasLt.so`) before `libcublasLt.so.13`, so whatever comes first on the library path
/// wins: this says what that was. Call after [`check_libraries`].
pub fn library_report() -> Result<LibraryReport> {
    let mut driver = 0;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: check_libraries() has opened all three; each call writes only to the pointers given.
    let cublaslt = unsafe {
        cudarc::driver::sys::cuDriverGetVersion(&mut driver).result()?;
        cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor).result()?;
        cudarc::cublaslt::sys::cublasLtGetVersion()
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| ["libcuda.so", "libnvrtc.so", "libcublasLt.so"].iter().any(|n| p.rsplit('/').next().is_some_and(|f| f.starts_with(n))))
        .map(str::to_string)
        .collect();
    files.dedup();
    files.sort();
    files.dedup();
    Ok(LibraryReport { driver, nvrtc: (major, minor), cublaslt, files })
}

/// Errors when the loaded NVRTC or cuBLASLt is not of the CUDA major version this build is for
/// (a CUDA 12 library found first on the path of a CUDA 13 build, or the other way round).
pub fn check_library_versions(report: &LibraryReport) -> Result<()> {
    let want = BUILT_FOR_CUDA_MAJOR as usize;
    if report.nvrtc.0 as usize != want || report.cublaslt / 10000 != want {
        return Err(CudaError::Unsupported {
            op: "CUDA libraries",
            detail: format!(
                "this build is for CUDA {want} but loaded {report}: put CUDA {want}'s lib64 first on LD_LIBRARY_PATH, \
                 or build with the matching cuda-* feature of qtrain-cuda"
            ),
        });
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
