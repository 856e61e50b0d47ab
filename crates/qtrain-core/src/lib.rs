//! qtrain-core: the numeric runtime every other crate stands on.
//!
//! It owns three things:
//! - [`Backend`]: the small op set (matmul, RMSNorm, rotary, attention, SwiGLU, embedding, …)
//!   that the Qwen model is written against once. A backend owns its tensors and implements
//!   each op; the model never touches device memory directly.
//! - [`cpu::CpuBackend`]: the reference backend — f32 compute, rayon threads, the `gemm` crate
//!   for matrix products. It defines what "correct" means for every other backend.
//! - small shared utilities: [`DType`]/[`HostData`] for weights on their way to a device, and a
//!   deterministic [`rng::Rng`] so sampling and initialisation are reproducible across machines.
//!
//! It must not know about Qwen, file formats, tokenizers or CUDA: those live in `qtrain-model`,
//! `qtrain-data` and the CUDA backend crate (see `kernels/README.md`), which implements the same
//! [`Backend`] trait.

pub mod backend;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod philox;
pub mod rng;

pub use backend::{
    check_attention_backward_shapes, check_attention_shapes, check_matmul_shapes, check_rope_shapes, AttentionDims, AttentionMask, Backend,
    CrossEntropyGrad, CrossEntropyOutput, LinearGrads, LoraWeights, Profile, TensorInfo,
};
pub use cpu::{CpuBackend, CpuTensor};
pub use dtype::{DType, HostData};
pub use error::{CoreError, Result};
pub use philox::{Dropout, MaskKey};
