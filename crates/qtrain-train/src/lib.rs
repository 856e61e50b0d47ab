//! qtrain-train: the training recipe and what surrounds it — run arguments, dataset
//! preparation, the training loop, checkpoints and logs, evaluation, and LoRA merging.
//!
//! Modules and what each owns:
//! - [`args`]: [`TrainArgs`], the run configuration with ms-swift's names and defaults (also
//!   read from a `--config` TOML file with the same keys), its resolution against a model
//!   (defaults that depend on other values), validation, the log notes for flags accepted for
//!   compatibility, and the step arithmetic of transformers' Trainer.
//! - [`dataset`]: dataset specs → rows (`qtrain-data`'s loader: formats, `FILE#N`,
//!   `self-cognition`, malformed rows) → train/validation split → tokens and labels (chat
//!   template, `--loss_scale`) → `max_length` (`qtrain-data`'s truncation) → rows for batching,
//!   packed (`qtrain-data`'s packing plan) or not; epoch orders, length grouping, micro-batches.
//!   It never runs a model.
//! - [`pretrain`]: the same for raw text (`qtrain pt`): documents + eos, every token a label,
//!   long documents split into consecutive `max_length` blocks.
//! - [`trainer`]: the recipe, as one explicit loop in one file (setup, resume, train loop,
//!   logging, evaluation, early stopping, checkpointing, summary) in the manner of torchtune's
//!   single-device recipes: there are no callbacks or hooks to find steps behind.
//! - [`checkpoint`]: the run folder (`vN-YYYYMMDD-HHMMSS`), `checkpoint-N/` contents (PEFT
//!   adapter or full HF model, optimizer / scheduler / RNG / data-position state,
//!   `trainer_state.json`), `save_total_limit` rotation; every file is written through a
//!   temporary name and a rename (except the append-only `logging.jsonl`), every checkpoint
//!   folder through `checkpoint-N.tmp`.
//! - [`origin`]: where a checkpoint comes from — a run folder → its best or last checkpoint,
//!   the base model from `args.json` / `adapter_config.json`, the run's own arguments for a
//!   resume: one rule for `infer`, `eval`, `export` and `train`.
//! - [`folder`]: loading a model folder for training or evaluation (weights, tokenizer, chat
//!   template, padding id, stored dtype).
//! - [`metrics`]: `logging.jsonl` records (train and eval), ms-swift's time format, process
//!   peak memory.
//! - [`progress`]: the progress bar on a terminal, plain lines otherwise.
//! - [`report`]: TensorBoard scalars (`runs/`) and PNG plots (`images/`) through `qtrain-report`.
//! - [`eval`]: loss and token accuracy of a model over a dataset; [`EvalMetrics`], what one
//!   evaluation during training measured.
//! - [`cognition`]: "did it learn?" — the held-out self-cognition questions answered by greedy
//!   generation, scored for the configured name and author, and a repeated-phrase rate.
//! - [`export`]: merging a LoRA adapter into the base weights and the self-check of the result.
//! - [`sweep`]: `qtrain sweep` — a `qtrain-sweep` study whose trials are training runs on one
//!   loaded model folder (parameters mapped onto [`TrainArgs`] by name, intermediate evaluations
//!   reported to the pruner), with `best.toml` and the sweep plots.
//!
//! Invariants: nothing here parses command-line flags or installs signal handlers (the binary
//! maps flags to [`TrainArgs`] and turns Ctrl-C into [`RunControl::request_stop`]),
//! does arithmetic on tensors outside a [`qtrain_core::Backend`] op (except the f32 merge of
//! host weights in [`export`]), or reads model internals that `qtrain-model` does not expose.

// `u64::is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod args;
pub mod checkpoint;
pub mod cognition;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod export;
pub mod folder;
pub mod metrics;
pub mod origin;
pub mod pretrain;
pub mod progress;
pub mod report;
pub mod sweep;
pub mod trainer;

pub use args::{LossScaleArg, OnResume, SchedulerKwargs, TrainArgs, TrainArgsFlags, TrainCommand, TruncationStrategy, TunerType};
pub use cognition::{CognitionEval, CognitionProbe};
pub use error::{Result, TrainError};
pub use eval::{evaluate_dataset, run_eval, EvalArgs, EvalMetrics, EvalReport, EvalResult};
pub use export::{merge_lora, MergeOptions, MergeReport};
pub use qtrain_model::train::LoraInit;
pub use sweep::{run_sweep, SweepOutcome, SweepSettings};
pub use trainer::{dry_run, train, train_on, train_with, OnEval, RunControl, StopReason, TrainSummary};
