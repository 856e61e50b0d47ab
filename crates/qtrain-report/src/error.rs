//! The one error type of this crate, [`ReportError`].
//!
//! Every variant names the file at fault. Bad numbers (NaN, infinities, empty series) are not
//! errors: plots skip them, so that a diverged run still gets its report.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// Everything that can go wrong while writing plots or event files.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or folder could not be created, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plot description itself is unusable (for example an image size of 0 pixels).
    #[error("{}: invalid plot: {message}", path.display())]
    InvalidPlot { path: PathBuf, message: String },
    /// The drawing library failed while rasterising the plot.
    #[error("{}: drawing the plot failed: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    /// The PNG encoder failed.
    #[error("{}: PNG encoding failed: {source}", path.display())]
    PngEncode {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io { path: path.into(), source }
    }
}
