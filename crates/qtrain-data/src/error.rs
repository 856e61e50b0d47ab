//! The one error type of this crate, [`DataError`].
//!
//! Every variant names the file (and, where known, the line, field or message index)
//! at fault, so that a user can fix their model folder or dataset from the message
//! alone. It must not carry model, tensor or CLI context: callers add that.

use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading tokenizer files, rendering chat
/// templates or tokenizing conversations.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read (missing, unreadable, bad gzip stream).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (or one line of a JSONL file) is not valid JSON or has the wrong shape.
    #[error("{}{}: invalid JSON at line {line}, column {column}: {source}", path.display(), record_suffix(*record))]
    Json {
        path: PathBuf,
        /// For JSONL files: the 1-based line of the record; `None` for plain JSON files.
        record: Option<usize>,
        /// Line and column inside the JSON text (serde_json's position).
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A field of a JSON file holds a value of the wrong type or an impossible value.
    #[error("{}: field `{field}`: {message}", path.display())]
    InvalidField { path: PathBuf, field: String, message: String },
    /// `tokenizer.json` could not be parsed into a tokenizer.
    #[error("{}: cannot load tokenizer: {message}", path.display())]
    TokenizerLoad { path: PathBuf, message: String },
    /// Encoding or decoding failed inside the tokenizers library.
    #[error("tokenizer {}: {operation} failed: {message}", path.display())]
    Tokenizer { path: PathBuf, operation: &'static str, message: String },
    /// A model folder has no chat template in `tokenizer_config.json` nor `chat_template.jinja`.
    #[error("{}: no chat template (neither a `chat_template` field nor a chat_template.jinja file)", path.display())]
    MissingChatTemplate { path: PathBuf },
    /// The chat template does not parse as Jinja. `line` counts lines of the template.
    #[error("chat template {origin}: syntax error{}: {message}", line_suffix(*line))]
    TemplateSyntax { origin: String, line: Option<usize>, message: String },
    /// The chat template failed while rendering (including `raise_exception(...)` calls).
    /// `line` counts lines of the template.
    #[error("chat template {origin}: render failed{}: {message}", line_suffix(*line))]
    TemplateRender { origin: String, line: Option<usize>, message: String },
    /// A conversation is malformed or cannot be turned into ids and labels.
    #[error("conversation{}: {message}", message_suffix(*message_index))]
    Conversation {
        /// 0-based index of the offending message, when one is at fault.
        message_index: Option<usize>,
        message: String,
    },
    /// One row of a dataset file is malformed (bad JSON, unknown format, wrong types, no
    /// assistant turn ...). Displayed as `file:LINE: ...` for JSONL and
    /// `file: record I of the JSON array: ...` for JSON arrays.
    #[error("{}{location}: {message}", path.display())]
    Row { path: PathBuf, location: RowLocation, message: String },
    /// A dataset as a whole cannot be used: a bad `FILE#N` spec, a file without usable rows,
    /// a missing `--model_name` for `self-cognition` ...
    #[error("dataset `{dataset}`: {message}")]
    Dataset { dataset: String, message: String },
    /// An option has an impossible value (`split_dataset_ratio` 1.5, three model names ...).
    #[error("`{option}`: {message}")]
    InvalidOption { option: String, message: String },
    /// Samples cannot be packed (one is longer than the packing length).
    #[error("packing: {message}")]
    Packing { message: String },
}

/// Where a row sits in its dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowLocation {
    /// 1-based line of a JSONL file.
    Line(usize),
    /// 0-based index in a JSON array file (or in a built-in dataset).
    Index(usize),
}

impl std::fmt::Display for RowLocation {
    /// `:12` for JSONL lines, `: record 3 of the JSON array` for array indices — both counted
    /// from 1, as a person counts — so that `path` followed by the location reads as an
    /// editor-friendly position.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowLocation::Line(line) => write!(f, ":{line}"),
            RowLocation::Index(index) => write!(f, ": record {} of the JSON array", index + 1),
        }
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at template line {l}")).unwrap_or_default()
}

fn record_suffix(record: Option<usize>) -> String {
    record.map(|l| format!(":{l}")).unwrap_or_default()
}

fn message_suffix(index: Option<usize>) -> String {
    index.map(|i| format!(" (message {i})")).unwrap_or_default()
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn json(path: &Path, record: Option<usize>, source: serde_json::Error) -> Self {
        DataError::Json { path: path.to_path_buf(), record, line: source.line(), column: source.column(), source }
    }

    pub(crate) fn field(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::InvalidField { path: path.to_path_buf(), field: field.into(), message: message.into() }
    }

    pub(crate) fn conversation(message_index: Option<usize>, message: impl Into<String>) -> Self {
        DataError::Conversation { message_index, message: message.into() }
    }

    pub(crate) fn row(path: &Path, location: RowLocation, message: impl Into<String>) -> Self {
        DataError::Row { path: path.to_path_buf(), location, message: message.into() }
    }

    pub(crate) fn dataset(dataset: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Dataset { dataset: dataset.into(), message: message.into() }
    }

    pub(crate) fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::InvalidOption { option: option.into(), message: message.into() }
    }
}

/// Read a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Read a whole UTF-8 file, naming it in the error.
pub(crate) fn read_text_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Parse JSON text, naming the file in the error.
pub(crate) fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| DataError::json(path, None, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_names_file_line_and_column() {
        let path = Path::new("/models/x/generation_config.json");
        let err = parse_json(path, "{\n  \"a\": 1,\n  \"b\": ]\n}").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/models/x/generation_config.json: invalid JSON at line 3, column"), "{text}");
        match err {
            DataError::Json { line, record, .. } => {
                assert_eq!(line, 3);
                assert_eq!(record, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_file_names_path() {
        let err = read_text_file(Path::new("/definitely/not/here/tokenizer.json")).unwrap_err();
        assert!(err.to_string().starts_with("/definitely/not/here/tokenizer.json: "), "{err}");
    }

    #[test]
    fn row_errors_name_file_and_line_or_index() {
        let err = DataError::row(Path::new("/d/train.jsonl"), RowLocation::Line(7), "no assistant turn");
        assert_eq!(err.to_string(), "/d/train.jsonl:7: no assistant turn");
        let err = DataError::row(Path::new("/d/train.json"), RowLocation::Index(3), "no assistant turn");
        assert_eq!(err.to_string(), "/d/train.json: record 4 of the JSON array: no assistant turn");
    }

    #[test]
    fn conversation_error_names_message_index() {
        let err = DataError::conversation(Some(3), "role must be a string");
        assert_eq!(err.to_string(), "conversation (message 3): role must be a string");
    }
}
