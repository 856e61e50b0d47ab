//! The one error type of this crate, [`TrainError`].
//!
//! Variants carry the file (and line) or the argument at fault so the binary can print them
//! as they are; errors of the crates below pass through with `#[from]`. This module must not
//! grow variants for CLI parsing (the binary's business) or device internals (`qtrain-core`).

use std::path::{Path, PathBuf};

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training argument is out of range or contradicts another.
    #[error("invalid argument --{name}: {message}")]
    Argument { name: &'static str, message: String },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset record is malformed; `line` is 1-based (the record's index for JSON arrays).
    #[error("{}:{line}: {message}", path.display())]
    Record { path: PathBuf, line: usize, message: String },
    /// A dataset as a whole cannot be used (empty, unknown format, nothing left after filtering).
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    /// A `--config` TOML file is malformed or holds an unknown key.
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A checkpoint to resume from is missing, incomplete or does not fit this run.
    #[error("cannot resume from {}: {message}", path.display())]
    Resume { path: PathBuf, message: String },
    /// The loss or the gradient norm stopped being finite: the step's update was not applied
    /// and nothing of it was saved.
    #[error("training diverged at step {step}: the {what} is {value}; the update was not applied and nothing of it was saved. {hint}")]
    Diverged { step: u64, what: &'static str, value: f64, hint: String },
    /// Ctrl-C / SIGTERM arrived before the first optimizer step of the run: nothing to save.
    #[error("interrupted before the first optimizer step; nothing was saved")]
    Interrupted,
    /// The merged model disagrees with base + adapter beyond the tolerance (export self-check).
    #[error("export self-check failed: the merged model's logits differ from base + adapter by a relative error of {error:.3e} (tolerance {tolerance:.1e} for {dtype}); the output was deleted")]
    MergeCheck { error: f64, tolerance: f64, dtype: &'static str },
    /// Anything else that makes the run impossible, with the reason.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] qtrain_model::ModelError),
    #[error(transparent)]
    Data(#[from] qtrain_data::DataError),
    #[error(transparent)]
    Optim(#[from] qtrain_optim::OptimError),
    #[error(transparent)]
    Backend(#[from] qtrain_core::CoreError),
    /// A sweep's search space, settings or study files (`qtrain sweep`).
    #[error(transparent)]
    Sweep(#[from] qtrain_sweep::SweepError),
}

impl TrainError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub(crate) fn arg(name: &'static str, message: impl Into<String>) -> Self {
        TrainError::Argument { name, message: message.into() }
    }
}
