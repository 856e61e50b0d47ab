//! Errors of model loading and running. Every variant names the file or tensor at fault and,
//! where there is one, the fix; none of them is raised by a panic.

use std::path::{Path, PathBuf};

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
    /// A LoRA adapter whose tensors have another model's shapes: one line naming both models,
    /// not one line per module.
    #[error("{}", adapter_mismatch(path, base.as_deref(), model.as_deref(), example, *more))]
    AdapterMismatch { path: PathBuf, base: Option<String>, model: Option<PathBuf>, example: String, more: usize },
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

impl ModelError {
    /// Name the model folder an adapter was matched against (see [`ModelError::AdapterMismatch`]).
    pub fn for_model(self, dir: &Path) -> Self {
        match self {
            ModelError::AdapterMismatch { path, base, example, more, .. } => {
                ModelError::AdapterMismatch { path, base, model: Some(dir.to_path_buf()), example, more }
            }
            other => other,
        }
    }
}

fn adapter_mismatch(path: &Path, base: Option<&str>, model: Option<&Path>, example: &str, more: usize) -> String {
    let base = base.map(|b| format!(" ({b})")).unwrap_or_default();
    let model = model.map(|m| format!(", not for {}", m.display())).unwrap_or_default();
    let more = if more > 0 { format!(" (and {more} more modules)") } else { String::new() };
    format!(
        "adapter {}: it was trained for another base model{base}{model}: {example}{more}; pass that base model with --model, or leave --model out to use the one the checkpoint names",
        path.display()
    )
}
