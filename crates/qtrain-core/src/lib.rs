//! qtrain-core: the numeric runtime every other crate stands on.
//!
//! It owns three things:
//! - [`Backend`]: the small op set (matmul, RMSNorm, rotary, attention, SwiGLU, embedding, …)
//!   that the Qwen model is written against once. A backend owns its tensors and implements
//!   each op; the model never touches device memory directly.
//! - [`cpu::CpuBackend`]: the reference backend — f32 compute, rayon threads, the `gemm` crate
//!   for matrix products. It defines what "correct" means for every other backend.
//! - [`shapes`]: the shape rule of every op, called by each backend before it touches memory,
//!   and [`adamw`]: the AdamW element-wise update the optimizer step runs as an op.
//! - small shared utilities: [`DType`]/[`HostData`] for weights on their way to a device, and a
//!   deterministic [`rng::Rng`] so sampling and initialisation are reproducible across machines.
//!
//! It must not know about Qwen, file formats, tokenizers or CUDA: those live in `qtrain-model`,
//! `qtrain-data` and the CUDA backend crate (see `kernels/README.md`), which implements the same
//! [`Backend`] trait.

pub mod adamw;
pub mod backend;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod philox;
pub mod rng;
pub mod shapes;

pub use adamw::AdamWScalars;
pub use backend::{AttentionMask, Backend, CrossEntropyGrad, CrossEntropyOutput, LinearGrads, LoraWeights, Profile, TensorInfo};
pub use cpu::{CpuBackend, CpuTensor};
pub use dtype::{DType, HostData};
pub use error::{CoreError, Result};
pub use philox::{Dropout, MaskKey};
pub use shapes::AttentionDims;
