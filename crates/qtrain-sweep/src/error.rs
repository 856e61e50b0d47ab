//! The one error type of this crate, [`SweepError`].
//!
//! Every variant says what to change: the offending search-space string with the valid forms,
//! the study file and line at fault, or the flag that resolves an ambiguity. Failures of a
//! trial's objective are not errors: they are recorded in `trials.jsonl` and the study goes on.

use std::path::PathBuf;

use crate::space::VALID_FORMS;

/// Result alias for this crate.
pub type Result<T, E = SweepError> = std::result::Result<T, E>;

/// Everything that can go wrong while parsing a search space or running a study.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A search-space string does not parse.
    #[error("invalid search-space entry {spec:?}: {message}; valid forms: {VALID_FORMS}")]
    Parse { spec: String, message: String },
    /// A configuration value is out of range (empty space, zero grid points, unknown sampler, …).
    #[error("invalid sweep configuration: {message}")]
    InvalidConfig { message: String },
    /// The metric's name does not say whether it should be minimised or maximised.
    #[error("cannot tell whether metric {metric:?} should be minimised or maximised; pass --direction minimize or --direction maximize")]
    UnknownDirection { metric: String },
    /// A study file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `study.json` or a line of `trials.jsonl` (not the last one) is not valid JSON of the right shape.
    #[error("{}{}: {source}; fix or remove that line, or start a new study in another directory", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Json {
        path: PathBuf,
        /// 1-based line for `trials.jsonl`; `None` for `study.json`.
        line: Option<usize>,
        #[source]
        source: serde_json::Error,
    },
    /// A record of `trials.jsonl` is valid JSON but inconsistent with the study.
    #[error("{} line {line}: {message}", path.display())]
    InvalidRecord { path: PathBuf, line: usize, message: String },
    /// `create_or_resume` found a study whose configuration differs from the one given.
    #[error(
        "{}: the existing study was created with {field} = {stored}, but this run asks for {given}; \
         resume with the original settings or start a new study in another directory",
        path.display()
    )]
    ConfigMismatch { path: PathBuf, field: &'static str, stored: String, given: String },
    /// Results were asked for but no trial has completed.
    #[error("{}: no trial has completed yet, so there are no best parameters", dir.display())]
    NoCompletedTrial { dir: PathBuf },
    /// The best-parameter TOML could not be produced.
    #[error("{}: cannot write TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
}
