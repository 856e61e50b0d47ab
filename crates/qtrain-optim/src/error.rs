//! The crate's error type.
//!
//! Every fallible constructor or check in `qtrain-optim` reports an [`OptimError`]. Messages
//! name the offending parameter and list the valid choices or range, so they can be shown to a
//! user as-is. This module must not grow variants for model, file or device failures: the crate
//! knows nothing about those.

use thiserror::Error;

/// Everything that can go wrong when building a schedule or checking AdamW hyper-parameters.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimError {
    /// A scheduler name that neither qtrain nor transformers knows.
    #[error("unknown lr scheduler `{name}`; valid choices: {valid}")]
    UnknownScheduler { name: String, valid: String },

    /// A transformers scheduler name (e.g. `cosine_with_restarts`) that qtrain does not implement.
    #[error(
        "lr scheduler `{name}` exists in transformers but is not implemented by qtrain; \
         valid choices: {valid}"
    )]
    UnsupportedScheduler { name: String, valid: String },

    /// A numeric argument outside its valid range.
    #[error("invalid {param} = {value}: {expected}")]
    InvalidArgument {
        param: &'static str,
        value: String,
        /// The valid range or choices, phrased as "must be ...".
        expected: String,
    },

    /// An argument that the chosen schedule does not use (transformers raises a `TypeError` for
    /// the same mistake, since it forwards extra kwargs to the schedule function).
    #[error("`{param}` does not apply to the `{kind}` lr schedule; it applies to: {applies_to}")]
    InapplicableArgument { param: &'static str, kind: &'static str, applies_to: String },

    /// An argument the chosen schedule needs but did not get.
    #[error("the `{kind}` lr schedule requires {what}")]
    MissingArgument { kind: &'static str, what: String },
}

/// Shorthand for results in this crate.
pub type Result<T, E = OptimError> = std::result::Result<T, E>;
