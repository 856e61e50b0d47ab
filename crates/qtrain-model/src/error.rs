//! Errors of model loading and running. Every variant names the file or tensor at fault and,
//! where there is one, the fix; none of them is raised by a panic.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, ModelError>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: malformed JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: invalid config: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{path}: unsupported: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("{path}: not a valid safetensors file ({detail}); the file may be truncated or corrupt — re-download it")]
    Safetensors { path: PathBuf, detail: String },
    #[error("{path}: tensor '{name}' has dtype {dtype}; only F32, BF16 and F16 are supported")]
    DType { path: PathBuf, name: String, dtype: String },
    /// Every problem found while matching a file's tensors against the model, reported at once.
    #[error("{path}: the weights do not match the model:\n{}", problems.join("\n"))]
    Weights { path: PathBuf, problems: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Backend(#[from] qtrain_core::CoreError),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}

/// Read and parse a JSON file, naming the file in every error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}
