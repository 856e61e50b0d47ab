//! Parsing `tokenizer_config.json` (and a sibling `chat_template.jinja`): the chat
//! template source, the special token strings the template sees, the added-token
//! table and `model_max_length`.
//!
//! It only reads configuration; it must not render templates (see `chat_template`)
//! nor load the tokenizer vocabulary (see `tokenizer`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chat_template::{ChatTemplate, SpecialTokens};
use crate::error::{parse_json, read_text_file, DataError, Result};

/// File name of the tokenizer configuration in a Hugging Face model folder.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// File that, when present next to `tokenizer_config.json`, holds the chat template
/// and overrides the config's `chat_template` field (as in transformers).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// transformers writes `int(1e30)` as "no limit"; anything this large means no limit.
const UNLIMITED_MODEL_MAX_LENGTH: f64 = 1e18;

/// One entry of `added_tokens_decoder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedTokenConfig {
    pub content: String,
    pub special: bool,
}

/// The parts of `tokenizer_config.json` that qtrain uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// The chat template used by default: the `chat_template` string, the entry named
    /// "default" when it is a list, or the contents of `chat_template.jinja`.
    pub chat_template: Option<String>,
    /// Every named template when `chat_template` is a list of `{name, template}`.
    pub named_chat_templates: BTreeMap<String, String>,
    /// Where the default chat template came from (config file or `chat_template.jinja`).
    pub chat_template_origin: Option<PathBuf>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    /// `added_tokens_decoder`: id → token.
    pub added_tokens: BTreeMap<u32, AddedTokenConfig>,
    /// `None` when absent or set to transformers' "unlimited" sentinel (1e30).
    pub model_max_length: Option<u64>,
    /// The file this configuration was read from.
    pub origin: PathBuf,
}

impl TokenizerConfig {
    /// Read `tokenizer_config.json` at `path` (no `chat_template.jinja` lookup).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_str(&read_text_file(path)?, path)
    }

    /// Read `dir/tokenizer_config.json`; if `dir/chat_template.jinja` exists, its
    /// contents replace the config's chat template, as transformers does.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut config = Self::from_file(dir.join(TOKENIZER_CONFIG_FILE))?;
        let jinja = dir.join(CHAT_TEMPLATE_FILE);
        if jinja.is_file() {
            config.chat_template = Some(read_text_file(&jinja)?);
            config.chat_template_origin = Some(jinja);
        }
        Ok(config)
    }

    /// Parse the text of a `tokenizer_config.json`; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let path = origin.as_ref();
        let root = parse_json(path, text)?;
        let Value::Object(map) = root else {
            return Err(DataError::field(path, "<root>", "expected a JSON object"));
        };
        let mut config = TokenizerConfig { origin: path.to_path_buf(), ..Default::default() };

        match map.get("chat_template") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => config.chat_template = Some(s.clone()),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("chat_template[{i}]");
                    let name = item.get("name").and_then(Value::as_str);
                    let template = item.get("template").and_then(Value::as_str);
                    let (Some(name), Some(template)) = (name, template) else {
                        return Err(DataError::field(path, field, "expected {\"name\": string, \"template\": string}"));
                    };
                    config.named_chat_templates.insert(name.to_string(), template.to_string());
                }
                config.chat_template = config.named_chat_templates.get("default").cloned();
            }
            Some(other) => {
                return Err(DataError::field(
                    path,
                    "chat_template",
                    format!("expected a string or a list of {{name, template}}, got {}", json_kind(other)),
                ))
            }
        }
        if config.chat_template.is_some() {
            config.chat_template_origin = Some(path.to_path_buf());
        }

        config.bos_token = token_string(path, &map, "bos_token")?;
        config.eos_token = token_string(path, &map, "eos_token")?;
        config.pad_token = token_string(path, &map, "pad_token")?;
        config.unk_token = token_string(path, &map, "unk_token")?;

        match map.get("added_tokens_decoder") {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                for (key, entry) in entries {
                    let field = format!("added_tokens_decoder.{key}");
                    let id: u32 = key.parse().map_err(|_| DataError::field(path, &field, "key is not a token id"))?;
                    let Some(content) = entry.get("content").and_then(Value::as_str) else {
                        return Err(DataError::field(path, &field, "missing string `content`"));
                    };
                    let special = match entry.get("special") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(other) => {
                            return Err(DataError::field(
                                path,
                                format!("{field}.special"),
                                format!("expected a boolean, got {}", json_kind(other)),
                            ))
                        }
                    };
                    config.added_tokens.insert(id, AddedTokenConfig { content: content.to_string(), special });
                }
            }
            Some(other) => {
                return Err(DataError::field(path, "added_tokens_decoder", format!("expected an object, got {}", json_kind(other))))
            }
        }

        config.model_max_length = match map.get("model_max_length") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(v), _) if (v as f64) < UNLIMITED_MODEL_MAX_LENGTH => Some(v),
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < UNLIMITED_MODEL_MAX_LENGTH => Some(f as u64),
                (_, Some(f)) if f >= UNLIMITED_MODEL_MAX_LENGTH => None,
                _ => return Err(DataError::field(path, "model_max_length", format!("expected a non-negative integer, got {n}"))),
            },
            Some(other) => return Err(DataError::field(path, "model_max_length", format!("expected a number, got {}", json_kind(other)))),
        };
        Ok(config)
    }

    /// The special token strings a chat template sees (`bos_token`, `eos_token` …).
    pub fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            pad_token: self.pad_token.clone(),
            unk_token: self.unk_token.clone(),
        }
    }

    /// Compile the default chat template with this config's special tokens.
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let Some(source) = &self.chat_template else {
            return Err(DataError::MissingChatTemplate { path: self.origin.clone() });
        };
        let origin = self.chat_template_origin.as_deref().unwrap_or(&self.origin);
        ChatTemplate::with_origin(source, self.special_tokens(), origin.display().to_string())
    }

    /// The id of the `eos_token` string, looked up in `added_tokens_decoder`.
    pub fn eos_token_id(&self) -> Option<u32> {
        let eos = self.eos_token.as_deref()?;
        self.added_tokens.iter().find(|(_, t)| t.content == eos).map(|(id, _)| *id)
    }
}

/// A special-token field: a string, `{"content": string, ...}` (an AddedToken) or null.
fn token_string(path: &Path, map: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(obj)) => match obj.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(DataError::field(path, format!("{field}.content"), "expected a string")),
        },
        Some(other) => {
            Err(DataError::field(path, field, format!("expected a string or {{\"content\": string}}, got {}", json_kind(other))))
        }
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_LIKE: &str = r#"{
      "add_prefix_space": false,
      "added_tokens_decoder": {
        "151643": {"content": "<|endoftext|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true},
        "151645": {"content": "<|im_end|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true},
        "151667": {"content": "<think>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": false}
      },
      "bos_token": null,
      "chat_template": "{{ messages[0]['content'] }}",
      "eos_token": "<|im_end|>",
      "model_max_length": 131072,
      "pad_token": {"__type": "AddedToken", "content": "<|endoftext|>", "special": true},
      "unk_token": null
    }"#;

    #[test]
    fn parses_qwen_like_config() {
        let c = TokenizerConfig::from_json_str(QWEN_LIKE, "tokenizer_config.json").unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("{{ messages[0]['content'] }}"));
        assert_eq!(c.eos_token.as_deref(), Some("<|im_end|>"));
        assert_eq!(c.pad_token.as_deref(), Some("<|endoftext|>"));
        assert_eq!(c.bos_token, None);
        assert_eq!(c.model_max_length, Some(131072));
        assert_eq!(c.added_tokens.len(), 3);
        assert_eq!(c.added_tokens[&151667], AddedTokenConfig { content: "<think>".into(), special: false });
        assert!(c.added_tokens[&151645].special);
        assert_eq!(c.eos_token_id(), Some(151645));
    }

    #[test]
    fn template_list_picks_default_and_keeps_others() {
        let text = r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
                       "model_max_length": 1000000000000000019884624838656}"#;
        let c = TokenizerConfig::from_json_str(text, "x.json").unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("D"));
        assert_eq!(c.named_chat_templates["tool_use"], "T");
        assert_eq!(c.model_max_length, None);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = TokenizerConfig::from_json_str(r#"{"eos_token": 5}"#, "/m/tokenizer_config.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/m/tokenizer_config.json: field `eos_token`: expected a string or {\"content\": string}, got a number"
        );
        let err = TokenizerConfig::from_json_str(r#"{"chat_template": [{"name": "x"}]}"#, "c.json").unwrap_err();
        assert!(err.to_string().contains("field `chat_template[0]`"), "{err}");
        let err = TokenizerConfig::from_json_str(r#"{"added_tokens_decoder": {"abc": {"content": "x"}}}"#, "c.json").unwrap_err();
        assert!(err.to_string().contains("field `added_tokens_decoder.abc`"), "{err}");
    }

    #[test]
    fn chat_template_jinja_file_wins_and_missing_template_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_CONFIG_FILE), QWEN_LIKE).unwrap();
        let c = TokenizerConfig::from_dir(dir.path()).unwrap();
        assert_eq!(c.chat_template_origin.as_deref(), Some(dir.path().join(TOKENIZER_CONFIG_FILE).as_path()));

        std::fs::write(dir.path().join(CHAT_TEMPLATE_FILE), "{{ eos_token }}!").unwrap();
        let c = TokenizerConfig::from_dir(dir.path()).unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("{{ eos_token }}!"));
        let rendered =
            c.chat_template().unwrap().render(&crate::RenderRequest::new(&serde_json::json!([{"role": "user", "content": "x"}]))).unwrap();
        assert_eq!(rendered, "<|im_end|>!");

        let bare = TokenizerConfig::from_json_str("{}", "/m/tokenizer_config.json").unwrap();
        let err = bare.chat_template().unwrap_err();
        assert!(matches!(err, DataError::MissingChatTemplate { .. }), "{err:?}");

        let missing = TokenizerConfig::from_dir(dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope/tokenizer_config.json"), "{missing}");
    }
}
