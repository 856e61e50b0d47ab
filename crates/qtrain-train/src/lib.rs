//! qtrain-train: the training recipe and what surrounds it — run arguments, dataset
//! preparation, the training loop, checkpoints and logs, evaluation, and LoRA merging.
//!
//! Modules and what each owns:
//! - [`args`]: [`TrainArgs`], the run configuration with ms-swift's names and defaults, its
//!   resolution against a model (defaults that depend on other values) and validation, and the
//!   step arithmetic of transformers' Trainer (steps per epoch, total steps).
//! - [`dataset`]: reading conversation datasets (JSONL or a JSON array of `{"messages": …}`),
//!   tokenizing them with `qtrain-data`'s conversation tokenizer, the `max_length` policy, and
//!   forming micro-batches and accumulation groups. It never touches a model.
//! - [`trainer`]: the recipe, as one explicit loop in one file (setup, train loop, logging,
//!   checkpointing, summary) in the manner of torchtune's single-device recipes: there are no
//!   callbacks or hooks to find steps behind.
//! - [`checkpoint`]: the run folder (`vN-YYYYMMDD-HHMMSS`), `checkpoint-N/` contents (PEFT
//!   adapter or full HF model), `trainer_state.json`, copying tokenizer files; every file is
//!   written through a temporary name and a rename (except the append-only `logging.jsonl`),
//!   every checkpoint folder through `checkpoint-N.tmp`.
//! - [`folder`]: loading a model folder for training or evaluation (weights, tokenizer, chat
//!   template, padding id, stored dtype).
//! - [`metrics`]: `logging.jsonl` records, ms-swift's time format, process peak memory.
//! - [`eval`]: loss and token accuracy of a model over a dataset.
//! - [`export`]: merging a LoRA adapter into the base weights and the self-check of the result.
//!
//! Invariants: nothing here parses command-line flags (the binary maps flags to [`TrainArgs`]),
//! does arithmetic on tensors outside a [`qtrain_core::Backend`] op (except the f32 merge of
//! host weights in [`export`]), or reads model internals that `qtrain-model` does not expose.

// `u64::is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod args;
pub mod checkpoint;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod export;
pub mod folder;
pub mod metrics;
pub mod trainer;

pub use args::{InitLoraWeights, TrainArgs, TruncationStrategy, TunerType};
pub use error::{Result, TrainError};
pub use eval::{evaluate_dataset, run_eval, EvalArgs, EvalResult};
pub use export::{merge_lora, MergeOptions, MergeReport};
pub use trainer::{train, TrainSummary};
