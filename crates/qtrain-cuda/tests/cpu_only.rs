//! Checks that need no GPU and no driver (they run in CI): the kernel registry agrees with the
//! files in `kernels/`, missing CUDA libraries are reported as errors rather than panics, and —
//! where `libnvrtc` can be opened (e.g. `LD_LIBRARY_PATH` pointing at the pip wheel
//! `nvidia-cuda-nvrtc-cu12`) — every kernel module compiles to PTX with the Rust side's options.

use std::collections::BTreeSet;
use std::path::PathBuf;

use qtrain_cuda::registry::{self, KernelModule, ALL_KERNELS, MODULES};
use qtrain_cuda::{cuda_available, driver_library_present, nvrtc_library_present, CudaBackend, CudaError};

/// The repository root: where this crate was built, or — when the test binary runs on another
/// machine (the GPU machine receives the binary and a copy of the tree, not the build folder) —
/// the nearest folder at or above the working directory that holds `kernels/common.cuh`.
fn repo_root() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("kernels/common.cuh").is_file() {
        return built;
    }
    let cwd = std::env::current_dir().expect("a working directory");
    cwd.ancestors()
        .find(|d| d.join("kernels/common.cuh").is_file())
        .unwrap_or_else(|| panic!("no kernels/common.cuh at or above {}: run from the repository", cwd.display()))
        .to_path_buf()
}

fn kernels_dir() -> PathBuf {
    repo_root().join("kernels")
}

#[test]
fn every_kernel_file_is_registered_and_every_registered_kernel_is_defined() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(kernels_dir())
        .expect("kernels/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    let registered: BTreeSet<String> = MODULES.iter().map(|m| m.file.to_string()).collect();
    assert_eq!(on_disk, registered, "kernels/*.cu and registry::MODULES must list the same files");

    for m in MODULES {
        assert_eq!(m.file, format!("{}.cu", m.name), "module {} lives in {}.cu", m.name, m.name);
        let disk = std::fs::read_to_string(kernels_dir().join(m.file)).unwrap();
        assert_eq!(disk, m.source, "{}: embedded source differs from the file (rebuild)", m.file);
        assert!(m.source.contains("#include \"common.cuh\""), "{} must include common.cuh", m.file);
        assert!(m.source.contains("Launch notes"), "{} must end with its launch notes", m.file);
        let declared: BTreeSet<&str> = registry::declared_kernels(m.source).into_iter().collect();
        let listed: BTreeSet<&str> = m.kernels.iter().copied().collect();
        assert_eq!(declared, listed, "{}: extern \"C\" __global__ functions vs registry list", m.file);
        if m.kernels.iter().any(|k| k.contains("_fwd_")) {
            assert!(m.kernels.iter().any(|k| k.contains("_bwd_")), "{}: a forward kernel ships without its backward", m.file);
        }
    }

    let listed_anywhere: BTreeSet<&str> = MODULES.iter().flat_map(|m| m.kernels.iter().copied()).collect();
    let constants: BTreeSet<&str> = ALL_KERNELS.iter().map(|k| k.name).collect();
    assert_eq!(listed_anywhere, constants, "every listed kernel has a launcher constant and vice versa");
    for k in ALL_KERNELS {
        let m = registry::module(k.module).unwrap_or_else(|| panic!("{}: unknown module {}", k.name, k.module));
        assert!(m.kernels.contains(&k.name), "{} is not in module {}", k.name, k.module);
        assert!(k.name.ends_with("_f32") || k.name.ends_with("_bf16"), "{}: kernel names end in their dtype", k.name);
    }
    assert_eq!(constants.len(), ALL_KERNELS.len(), "kernel names are unique");
}

#[test]
fn nvrtc_options_are_shared_and_name_no_architecture() {
    let opts = registry::nvrtc_options();
    assert!(opts.contains(&"--std=c++17"), "{opts:?}");
    assert!(opts.iter().all(|o| !o.contains("arch")), "the architecture is added per device: {opts:?}");
    assert!(opts.iter().all(|o| !o.contains("fast_math") && !o.contains("fast-math")), "kernels must not use fast math: {opts:?}");
    // tools/check_kernels.py reads the same file.
    let script = std::fs::read_to_string(repo_root().join("tools/check_kernels.py")).unwrap();
    assert!(script.contains("nvrtc_options.txt") && script.contains(registry::COMMON_HEADER.0));
}

#[test]
fn missing_cuda_is_an_error_not_a_panic() {
    let available = cuda_available();
    let backend = CudaBackend::new(0);
    if !driver_library_present() {
        let why = available.expect_err("no libcuda here, so CUDA cannot be available");
        assert!(why.contains("libcuda"), "{why}");
        match backend {
            Err(CudaError::LibraryMissing { library, .. }) => assert!(library.contains("libcuda")),
            other => panic!("expected LibraryMissing, got {other:?}"),
        }
        println!("cuda_available() here: Err({why})");
    } else {
        // A machine with a driver (the GPU machine): whatever the answer, it came without a panic.
        println!("cuda_available() here: {available:?}; CudaBackend::new(0): {:?}", backend.as_ref().map(|b| b.describe()));
    }
    // A device ordinal far out of range is an error, never a panic.
    assert!(CudaBackend::new(10_000).is_err());
}

#[test]
fn every_kernel_module_compiles_with_nvrtc_when_the_library_is_present() {
    if !nvrtc_library_present() {
        println!("skipped: libnvrtc not found (LD_LIBRARY_PATH=…/site-packages/nvidia/cuda_nvrtc/lib enables this test)");
        return;
    }
    for cc in [(8, 0), (9, 0)] {
        for m in MODULES {
            let ptx = registry::compile_ptx(m, cc).unwrap_or_else(|e| panic!("{} for compute_{}{}: {e}", m.file, cc.0, cc.1));
            for k in m.kernels {
                assert!(ptx.contains(&format!(".entry {k}(")), "{}: no .entry {k} in the PTX", m.file);
            }
        }
    }
    static BROKEN: KernelModule = KernelModule {
        name: "broken",
        file: "broken.cu",
        source: "#include \"common.cuh\"\nextern \"C\" __global__ void broken_f32(float* x) { x[0] = undefined_name; }\n",
        kernels: &["broken_f32"],
    };
    match registry::compile_ptx(&BROKEN, (9, 0)) {
        Err(CudaError::Compile { file, log, .. }) => {
            assert_eq!(file, "broken.cu");
            assert!(log.contains("undefined_name"), "{log}");
        }
        other => panic!("a compile error must be reported with its log, got {other:?}"),
    }
}
