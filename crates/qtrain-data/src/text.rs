//! Raw text for continued pretraining (`qtrain pt`, ms-swift's `swift pt`): datasets of
//! documents rather than conversations, their token ids, and the split of long documents
//! into consecutive `max_length` blocks.
//!
//! A document is, per row:
//! * `{"text": "…"}` ([`RowFormat::Text`]; ms-swift's `ResponsePreprocessor` takes a `text`
//!   column as the response),
//! * `{"messages": [{"role": "assistant", "content": "…"}]}` ([`RowFormat::Messages`],
//!   ms-swift's pretraining form): exactly one message, an assistant one,
//! * one non-empty line of a `.txt` file ([`RowFormat::TextLine`]; blank lines are skipped).
//!
//! JSON arrays, JSONL, `FILE#N` and several files mixed are read as for conversations
//! ([`crate::loader`]'s spec syntax and sampling); the bundled `self-cognition` is a
//! conversation dataset and is refused here. Rows come out as [`DatasetRow`]s holding the
//! ms-swift pretraining form, so `val_dataset.jsonl` is written in that form.
//!
//! Tokens ([`TextTokenizer`]): the tokenizer's ids of the text followed by the
//! tokenizer's eos token (`tokenizer_config.json`'s `eos_token`), as ms-swift's generation
//! template (`use_chat_template false`) renders a response: no chat template, no system
//! prompt. Every token is a label (ms-swift's `loss_scale all`).
//!
//! Blocks ([`split_blocks`]), as ms-swift's `truncation_strategy split`: a document longer
//! than `max_length` becomes consecutive blocks `ids[0..L]`, `ids[L..2L]`, …; the last may
//! be shorter. Each block is a sample of its own: its first token is predicted from nothing
//! (ms-swift sets that label to -100), so no token is lost or seen twice as a target except
//! the block-initial ones, which are not targets.
//!
//! This module must not render chat templates, pack or build tensors.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::conversation::IGNORE_INDEX;
use crate::error::{read_text_file, DataError, Result, RowLocation};
use crate::loader::{sample_indices, DatasetOptions, DatasetRow, DatasetSource, DatasetSpec, LoadedDataset, RowOrigin};
use crate::row_format::RowFormat;
use crate::tokenizer::QwenTokenizer;

/// What a pretraining row must look like, for error messages.
const EXPECTED: &str = "a pretraining row is {\"text\": \"…\"} or {\"messages\": [{\"role\": \"assistant\", \"content\": \"…\"}]}";

/// Load one dataset spec of raw text (`PATH`, `PATH#N`); `#N` draws with `opts.seed` as
/// [`crate::load_dataset`] does.
pub fn load_text_dataset(spec_text: &str, opts: &DatasetOptions) -> Result<LoadedDataset> {
    let spec = DatasetSpec::parse(spec_text)?;
    let path = match &spec.source {
        DatasetSource::File(path) => path,
        DatasetSource::SelfCognition(_) => {
            return Err(DataError::dataset(
                spec_text,
                "is a conversation dataset; pretraining takes raw text ({\"text\"} rows or .txt files): use `qtrain train` for it",
            ))
        }
    };
    let mut loaded = read_text_dataset_file(path, opts)?;
    if loaded.rows.is_empty() {
        let why = match loaded.skipped.first() {
            Some(first) => format!("no usable rows: all {} rows are malformed; the first: {first}", loaded.num_skipped),
            None => "holds no text".to_string(),
        };
        return Err(DataError::dataset(spec_text, why));
    }
    if let Some(n) = spec.sample {
        let picked = sample_indices(loaded.rows.len(), n, opts.shuffle_sample, opts.seed);
        loaded.rows = picked.into_iter().map(|i| loaded.rows[i].clone()).collect();
    }
    Ok(loaded)
}

/// Read every document of a `.txt` file (one per non-empty line) or a JSON / JSONL file of
/// pretraining rows. Only `opts.skip_malformed` applies.
pub fn read_text_dataset_file(path: &Path, opts: &DatasetOptions) -> Result<LoadedDataset> {
    if path.is_dir() {
        return Err(DataError::dataset(path.display().to_string(), "is a directory; give .txt, JSON or JSONL files"));
    }
    let text = read_text_file(path).map_err(|e| match e {
        DataError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            DataError::dataset(path.display().to_string(), "no such file; qtrain reads local .txt, JSON and JSONL files (no hub downloads)")
        }
        other => other,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
        return Ok(text_lines(text, path));
    }
    parse_text_rows(text, path, opts.skip_malformed)
}

/// One document per non-empty line (`\r\n` endings accepted).
fn text_lines(text: &str, path: &Path) -> LoadedDataset {
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| document_row(line, RowFormat::TextLine, path, RowLocation::Line(i + 1)))
        .collect();
    LoadedDataset { rows, ..LoadedDataset::default() }
}

fn document_row(text: &str, format: RowFormat, path: &Path, location: RowLocation) -> DatasetRow {
    DatasetRow {
        messages: json!([{"role": "assistant", "content": text}]),
        tools: None,
        format,
        origin: RowOrigin { path: PathBuf::from(path), location },
    }
}

/// JSON-array or JSONL text of pretraining rows.
fn parse_text_rows(text: &str, path: &Path, skip_malformed: bool) -> Result<LoadedDataset> {
    let mut loaded = LoadedDataset::default();
    let take = |value: std::result::Result<Value, String>, location: RowLocation| -> Result<()> {
        match value.and_then(|v| pretraining_text(&v)) {
            Ok((text, format)) => loaded.rows.push(document_row(&text, format, path, location)),
            Err(reason) if skip_malformed => loaded.skip(RowOrigin { path: path.to_path_buf(), location }, reason),
            Err(reason) => return Err(DataError::row(path, location, reason)),
        }
        Ok(())
    };
    crate::loader::for_each_json_row(text, path, take)?;
    Ok(loaded)
}

/// The document of one JSON row: `{"text"}` or a single assistant message.
pub fn pretraining_text(row: &Value) -> std::result::Result<(String, RowFormat), String> {
    let Value::Object(object) = row else {
        return Err(format!("expected a JSON object; {EXPECTED}"));
    };
    match (object.get("text"), object.get("messages")) {
        (Some(_), Some(_)) => Err("ambiguous row: it has `text` and `messages` (keep one)".into()),
        (Some(Value::String(text)), None) => Ok((text.clone(), RowFormat::Text)),
        (Some(_), None) => Err("`text` must be a string".into()),
        (None, Some(Value::Array(list))) => match list.as_slice() {
            [message] => {
                let role = message.get("role").and_then(Value::as_str);
                match (role, message.get("content")) {
                    (Some("assistant"), Some(Value::String(content))) => Ok((content.clone(), RowFormat::Messages)),
                    (Some("assistant"), _) => Err("`messages[0].content` must be a string".into()),
                    (other, _) => Err(format!(
                        "`messages[0]` has role {}; {EXPECTED} (conversations are trained with `qtrain train`)",
                        other.map_or("none".to_string(), |r| format!("`{r}`"))
                    )),
                }
            }
            _ => Err(format!("`messages` holds {} messages; {EXPECTED} (conversations are trained with `qtrain train`)", list.len())),
        },
        (None, Some(_)) => Err("`messages` must be an array".into()),
        (None, None) => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            Err(format!("no `text` (keys: {}); {EXPECTED}", if keys.is_empty() { "none".into() } else { keys.join(", ") }))
        }
    }
}

/// The document a row loaded by [`load_text_dataset`] holds.
pub fn row_text(row: &DatasetRow) -> Result<&str> {
    row.messages
        .get(0)
        .filter(|_| row.messages.as_array().is_some_and(|m| m.len() == 1))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .ok_or_else(|| row.error(EXPECTED))
}

/// Text → token ids for pretraining: the text's ids, then the eos token.
#[derive(Clone, Copy, Debug)]
pub struct TextTokenizer<'a> {
    tokenizer: &'a QwenTokenizer,
    eos_id: u32,
}

impl<'a> TextTokenizer<'a> {
    /// `eos_token` is `tokenizer_config.json`'s; `config` names that file in the error.
    pub fn new(tokenizer: &'a QwenTokenizer, eos_token: Option<&str>, config: &Path) -> Result<Self> {
        let eos = eos_token.ok_or_else(|| {
            DataError::field(config, "eos_token", "is not set; pretraining appends it to every document, as ms-swift's `swift pt`")
        })?;
        let eos_id = tokenizer
            .token_to_id(eos)
            .ok_or_else(|| DataError::field(config, "eos_token", format!("{eos:?} is not a token of {}", tokenizer.origin().display())))?;
        Ok(TextTokenizer { tokenizer, eos_id })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The ids of `text` followed by the eos id.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text)?;
        ids.push(self.eos_id);
        Ok(ids)
    }
}

/// Consecutive blocks of at most `max_length` ids (ms-swift's `truncation_strategy split`);
/// a document that fits is one block. `max_length` must be at least 1.
pub fn split_blocks(ids: &[u32], max_length: usize) -> Vec<&[u32]> {
    assert!(max_length > 0, "max_length must be at least 1");
    ids.chunks(max_length).collect()
}

/// The labels of a pretraining block: every token, except the first one, which nothing
/// precedes (ms-swift's `split` sets it to -100; after the next-token shift it is never a
/// target anyway).
pub fn block_labels(block: &[u32]) -> Vec<i32> {
    block.iter().enumerate().map(|(i, &id)| if i == 0 { IGNORE_INDEX } else { id as i32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{byte_level_tokenizer_json, IM_END};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn rows_of_every_pretraining_form_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DatasetOptions::default();
        let jsonl = write(
            dir.path(),
            "a.jsonl",
            "{\"text\": \"first doc\"}\n\n{\"messages\": [{\"role\": \"assistant\", \"content\": \"second\"}]}\n",
        );
        let a = load_text_dataset(jsonl.to_str().unwrap(), &opts).unwrap();
        let texts: Vec<&str> = a.rows.iter().map(|r| row_text(r).unwrap()).collect();
        assert_eq!(texts, ["first doc", "second"]);
        assert_eq!((a.rows[0].format, a.rows[1].format), (RowFormat::Text, RowFormat::Messages));
        assert_eq!(a.rows[1].origin.to_string(), format!("{}:3", jsonl.display()));
        let array = write(dir.path(), "b.json", r#"[{"text": "x"}, {"text": "y", "id": 3}]"#);
        assert_eq!(load_text_dataset(array.to_str().unwrap(), &opts).unwrap().rows.len(), 2);
        let txt = write(dir.path(), "c.txt", "line one\r\n\n   \nline two\n");
        let c = load_text_dataset(txt.to_str().unwrap(), &opts).unwrap();
        assert_eq!(c.rows.iter().map(|r| row_text(r).unwrap()).collect::<Vec<_>>(), ["line one", "line two"]);
        assert_eq!(c.rows[1].origin.location, RowLocation::Line(4));
        assert_eq!(c.rows[0].format, RowFormat::TextLine);
        // FILE#N: copies, then a seeded draw, as for conversations.
        let five = load_text_dataset(&format!("{}#5", txt.display()), &opts).unwrap();
        assert_eq!(five.rows.len(), 5);
        assert_eq!(row_text(&five.rows[0]).unwrap(), "line one");
    }

    #[test]
    fn conversations_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DatasetOptions::default();
        let bad = |line: &str| {
            let p = write(dir.path(), "bad.jsonl", &format!("{{\"text\": \"ok\"}}\n{line}\n"));
            load_text_dataset(p.to_str().unwrap(), &opts).unwrap_err().to_string()
        };
        let e = bad(r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#);
        assert!(e.contains("bad.jsonl:2") && e.contains("2 messages") && e.contains("qtrain train"), "{e}");
        let e = bad(r#"{"messages": [{"role": "user", "content": "hi"}]}"#);
        assert!(e.contains("role `user`"), "{e}");
        assert!(bad(r#"{"text": 3}"#).contains("`text` must be a string"));
        assert!(bad(r#"{"prompt": "a"}"#).contains("no `text` (keys: prompt)"));
        assert!(bad("{not json").contains("invalid JSON"));
        assert!(bad(r#"{"text": "a", "messages": []}"#).contains("ambiguous"));
        let p = write(dir.path(), "skip.jsonl", "{\"text\": \"ok\"}\n[1]\n");
        let lenient = DatasetOptions { skip_malformed: true, ..DatasetOptions::default() };
        let l = load_text_dataset(p.to_str().unwrap(), &lenient).unwrap();
        assert_eq!((l.rows.len(), l.num_skipped), (1, 1));
        let e = load_text_dataset("self-cognition#5", &opts).unwrap_err().to_string();
        assert!(e.contains("conversation dataset"), "{e}");
        let empty = write(dir.path(), "empty.txt", "\n\n");
        assert!(load_text_dataset(empty.to_str().unwrap(), &opts).unwrap_err().to_string().contains("holds no text"));
        assert!(load_text_dataset("/no/such.txt", &opts).unwrap_err().to_string().contains("no such file"));
    }

    #[test]
    fn documents_end_with_eos_and_split_into_consecutive_blocks() {
        let tok = QwenTokenizer::from_bytes(byte_level_tokenizer_json().as_bytes()).unwrap();
        let config = Path::new("tokenizer_config.json");
        let t = TextTokenizer::new(&tok, Some("<|im_end|>"), config).unwrap();
        let ids = t.tokenize("Hi yo").unwrap();
        assert_eq!(ids, [256, b' ' as u32, b'y' as u32, b'o' as u32, IM_END]);
        let blocks = split_blocks(&ids, 2);
        assert_eq!(blocks, [&ids[0..2], &ids[2..4], &ids[4..5]]);
        assert_eq!(split_blocks(&ids, 5), [&ids[..]]);
        assert_eq!(block_labels(&ids[2..4]), [IGNORE_INDEX, b'o' as i32]);
        assert!(TextTokenizer::new(&tok, None, config).unwrap_err().to_string().contains("eos_token"));
        let e = TextTokenizer::new(&tok, Some("</s>"), config).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("\"</s>\""), "{e}");
    }
}
