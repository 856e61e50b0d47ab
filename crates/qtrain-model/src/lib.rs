//! qtrain-model: Qwen2 / Qwen2.5 / Qwen3 causal LMs on any [`qtrain_core::Backend`].
//!
//! Owns the model configuration (`config.json`), safetensors checkpoints (memory-mapped,
//! sharded or not), the decoder forward pass with its KV cache, PEFT LoRA adapters, and token
//! sampling. It must not parse datasets, tokenizers or CLI flags (`qtrain-data`, the binary),
//! and must not contain device code: all arithmetic goes through backend ops.

pub mod adapter;
pub mod bench;
pub mod config;
pub mod error;
pub mod generate;
pub mod layer;
pub mod memory;
pub mod model;
pub mod optimizer;
pub mod random;
pub mod safetensors_io;
pub mod sampling;
pub mod shapes;
pub mod train;

pub use adapter::{AdapterConfig, LoraAdapter, TargetModules};
pub use config::{Architecture, Proj, QwenConfig};
pub use error::{ModelError, Result};
pub use model::{Batch, KvCache, QwenModel};
pub use optimizer::AdamW;
pub use sampling::{Sampler, SamplingParams};
