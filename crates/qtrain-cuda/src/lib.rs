//! qtrain-cuda: the CUDA implementation of [`qtrain_core::Backend`].
//!
//! - [`CudaBackend`]: one device, one stream (the context's legacy default stream), a caching
//!   allocator with peak tracking ([`CudaBackend::peak_bytes`]), cuBLASLt for every GEMM
//!   (bf16 × bf16 → f32 against bf16 weights, true f32 otherwise), and the kernels of
//!   `kernels/*.cu`, compiled at run time with NVRTC for the device's compute capability.
//! - [`cuda_available`]: whether a device can be used here, and if not, why — without panicking.
//! - [`registry`]: the one list of kernel modules and kernel names; [`registry::compile_ptx`]
//!   compiles a module with only `libnvrtc` present (no driver, no GPU).
//!
//! Storage types: frozen weights uploaded as bf16 stay bf16; everything the backend computes
//! (activations, gradients, AdamW moments, LoRA weights) is f32 — see [`tensor`] and
//! `kernels/README.md`, which also says what has and has not been verified on a GPU.
//!
//! Invariant: building and testing this crate needs no CUDA toolkit, driver or GPU. The CUDA
//! libraries are opened at run time (cudarc `dynamic-loading`) and every entry point checks for
//! them first, so a missing library is a [`CudaError`], never a panic. GPU tests run only with
//! `QTRAIN_GPU_TESTS=1` (see `tools/gpu-check.sh`).
//!
//! The CUDA library generation is a cargo feature: `cuda-13000` (default, `libcublasLt.so.13`)
//! or, for a CUDA 12 machine, `--no-default-features --features cuda-12090`.

pub mod alloc;
mod backend;
mod backend_impl;
mod device;
pub mod error;
pub mod gemm;
pub mod ops;
pub mod profile;
pub mod registry;
pub mod tensor;

pub use alloc::MemoryStats;
pub use backend::CudaBackend;
pub use device::{cuda_available, driver_library_present, library_report, nvrtc_library_present, LibraryReport, BUILT_FOR_CUDA_MAJOR};
pub use error::{CudaError, Result};
pub use tensor::CudaTensor;
