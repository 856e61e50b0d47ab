//! Errors raised by backends: shape mismatches in op arguments and device failures.
//! It must not carry file or model context; callers add that (e.g. which tensor was loading).

/// Result alias for backend operations.
pub type Result<T> = std::result::Result<T, CoreError>;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An op received operands whose shapes do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// Host data does not hold as many elements as the requested shape.
    #[error("{op}: {got} elements given for shape {shape:?} ({expected} expected)")]
    ElementCount { op: &'static str, shape: Vec<usize>, expected: usize, got: usize },
    /// An index (token id, position, row) is out of range.
    #[error("{op}: index {index} out of range (size {size})")]
    Index { op: &'static str, index: usize, size: usize },
    /// A device-side failure (allocation, launch, library), with what was being done.
    #[error("{backend} backend: {detail}")]
    Device { backend: &'static str, detail: String },
}

/// Return a [`CoreError::Shape`] unless `cond` holds.
#[macro_export]
macro_rules! ensure_shape {
    ($cond:expr, $op:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::CoreError::Shape { op: $op, detail: format!($($fmt)+) });
        }
    };
}
