//! `generation_config.json`: the sampling defaults and stop tokens a model ships with.
//!
//! Every field is optional; a missing file gives [`GenerationConfig::default`] (all
//! `None`). This module only parses; it must not sample, nor decide how command-line
//! flags override these values.

use std::path::Path;

use serde_json::Value;

use crate::error::{parse_json, read_text_file, DataError, Result};
use crate::tokenizer_config::json_kind;

/// File name of the generation defaults in a Hugging Face model folder.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// The fields of `generation_config.json` that qtrain uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Generation stops at any of these (`eos_token_id` may be one id or a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub max_new_tokens: Option<usize>,
    pub max_length: Option<usize>,
}

impl GenerationConfig {
    /// Read `generation_config.json` at `path` (the file must exist).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_str(&read_text_file(path)?, path)
    }

    /// Read `dir/generation_config.json`, or the default when the file is absent.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(GENERATION_CONFIG_FILE);
        if path.exists() {
            Self::from_file(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Parse the text of a `generation_config.json`; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let path = origin.as_ref();
        let Value::Object(map) = parse_json(path, text)? else {
            return Err(DataError::field(path, "<root>", "expected a JSON object"));
        };
        let get = |field: &str| map.get(field).filter(|v| !v.is_null());
        let eos_token_ids = match get("eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| token_id(path, &format!("eos_token_id[{i}]"), v)).collect::<Result<_>>()?
            }
            Some(v) => vec![token_id(path, "eos_token_id", v)?],
        };
        let opt_token = |field: &str| get(field).map(|v| token_id(path, field, v)).transpose();
        let opt_f64 = |field: &str| {
            get(field)
                .map(|v| v.as_f64().ok_or_else(|| DataError::field(path, field, format!("expected a number, got {}", json_kind(v)))))
                .transpose()
        };
        let opt_usize = |field: &str| {
            get(field)
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| DataError::field(path, field, format!("expected a non-negative integer, got {v}")))
                })
                .transpose()
        };
        let do_sample = get("do_sample")
            .map(|v| v.as_bool().ok_or_else(|| DataError::field(path, "do_sample", format!("expected a boolean, got {v}"))))
            .transpose()?;
        Ok(GenerationConfig {
            eos_token_ids,
            pad_token_id: opt_token("pad_token_id")?,
            bos_token_id: opt_token("bos_token_id")?,
            do_sample,
            temperature: opt_f64("temperature")?,
            top_k: opt_usize("top_k")?,
            top_p: opt_f64("top_p")?,
            min_p: opt_f64("min_p")?,
            repetition_penalty: opt_f64("repetition_penalty")?,
            max_new_tokens: opt_usize("max_new_tokens")?,
            max_length: opt_usize("max_length")?,
        })
    }
}

fn token_id(path: &Path, field: &str, value: &Value) -> Result<u32> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| DataError::field(path, field, format!("expected a token id (non-negative integer), got {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qwen25_instruct_generation_config() {
        let text = r#"{
          "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true,
          "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
          "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"
        }"#;
        let g = GenerationConfig::from_json_str(text, "generation_config.json").unwrap();
        assert_eq!(g.eos_token_ids, vec![151645, 151643]);
        assert_eq!(g.bos_token_id, Some(151643));
        assert_eq!(g.pad_token_id, Some(151643));
        assert_eq!(g.do_sample, Some(true));
        assert_eq!(g.temperature, Some(0.7));
        assert_eq!(g.top_p, Some(0.8));
        assert_eq!(g.top_k, Some(20));
        assert_eq!(g.repetition_penalty, Some(1.05));
        assert_eq!(g.min_p, None);
        assert_eq!(g.max_new_tokens, None);
    }

    #[test]
    fn single_eos_id_nulls_and_missing_file() {
        let g = GenerationConfig::from_json_str(r#"{"eos_token_id": 7, "temperature": null, "max_new_tokens": 64}"#, "g.json").unwrap();
        assert_eq!(g.eos_token_ids, vec![7]);
        assert_eq!(g.temperature, None);
        assert_eq!(g.max_new_tokens, Some(64));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GenerationConfig::from_dir(dir.path()).unwrap(), GenerationConfig::default());
    }

    #[test]
    fn bad_values_name_file_and_field() {
        let err = GenerationConfig::from_json_str(r#"{"eos_token_id": [1, -2]}"#, "/m/generation_config.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/m/generation_config.json: field `eos_token_id[1]`: expected a token id (non-negative integer), got -2"
        );
        let err = GenerationConfig::from_json_str(r#"{"top_k": 2.5}"#, "g.json").unwrap_err();
        assert!(err.to_string().contains("field `top_k`"), "{err}");
        let err = GenerationConfig::from_json_str(r#"{"temperature": "hot"}"#, "g.json").unwrap_err();
        assert_eq!(err.to_string(), "g.json: field `temperature`: expected a number, got a string");
    }
}
