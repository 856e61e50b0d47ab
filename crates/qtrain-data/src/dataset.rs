//! Reading training conversations from a JSONL file: one JSON object per line with a
//! `messages` array and optional `tools`.
//!
//! It only reads and checks the shape of records; it must not render, tokenize,
//! shuffle or batch them. Every other format (ShareGPT, Alpaca, query/response, JSON
//! arrays), `FILE#N` and `self-cognition` are [`crate::loader`]'s.

use std::path::Path;

use serde_json::Value;

use crate::error::{read_text_file, DataError, Result};

/// One conversation of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// The `messages` array, as given.
    pub messages: Value,
    /// The `tools` array, when the record has one (null counts as absent).
    pub tools: Option<Value>,
    /// 1-based line of the record in its file.
    pub line: usize,
}

/// Read every non-blank line of a JSONL file as a [`ConversationRecord`].
pub fn read_conversations_jsonl(path: impl AsRef<Path>) -> Result<Vec<ConversationRecord>> {
    let path = path.as_ref();
    parse_conversations_jsonl(&read_text_file(path)?, path)
}

/// Parse JSONL text; `origin` names it in errors.
pub fn parse_conversations_jsonl(text: &str, origin: impl AsRef<Path>) -> Result<Vec<ConversationRecord>> {
    let path = origin.as_ref();
    let mut records = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| DataError::json(path, Some(line), e))?;
        let field = |name: &str| format!("line {line}: {name}");
        let Value::Object(mut object) = value else {
            return Err(DataError::field(path, field("<record>"), "expected a JSON object with a `messages` array"));
        };
        let messages = match object.remove("messages") {
            Some(m @ Value::Array(_)) => m,
            Some(_) => return Err(DataError::field(path, field("messages"), "expected an array of messages")),
            None => return Err(DataError::field(path, field("messages"), "missing")),
        };
        let tools = match object.remove("tools") {
            None | Some(Value::Null) => None,
            Some(t @ Value::Array(_)) => Some(t),
            Some(_) => return Err(DataError::field(path, field("tools"), "expected an array of tool definitions")),
        };
        records.push(ConversationRecord { messages, tools, line });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_skips_blank_lines() {
        let text =
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n\n{\"messages\": [], \"tools\": [{\"type\": \"function\"}]}\n";
        let records = parse_conversations_jsonl(text, "train.jsonl").unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 1);
        assert_eq!(records[0].tools, None);
        assert_eq!(records[1].line, 3);
        assert_eq!(records[1].tools.as_ref().unwrap()[0]["type"], "function");
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse_conversations_jsonl("{\"messages\": []}\n{\"messages\": [}\n", "/d/train.jsonl").unwrap_err();
        assert!(err.to_string().starts_with("/d/train.jsonl:2: invalid JSON at line 1, column"), "{err}");
        let err = parse_conversations_jsonl("\n{\"msgs\": []}", "/d/train.jsonl").unwrap_err();
        assert_eq!(err.to_string(), "/d/train.jsonl: field `line 2: messages`: missing");
        let err = read_conversations_jsonl("/no/such/train.jsonl").unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
    }
}
