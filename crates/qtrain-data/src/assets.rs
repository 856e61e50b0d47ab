//! Loading everything text-related from a Hugging Face model folder at once:
//! `tokenizer.json` (or `tokenizer.json.gz`), `tokenizer_config.json` (+
//! `chat_template.jinja`) and `generation_config.json`.
//!
//! It only gathers what the other modules parse; it must not read weights or
//! `config.json`, which belong to the model crate.

use std::path::Path;

use crate::chat_template::ChatTemplate;
use crate::error::{DataError, Result};
use crate::generation_config::GenerationConfig;
use crate::tokenizer::QwenTokenizer;
use crate::tokenizer_config::TokenizerConfig;

/// File name of the tokenizer in a Hugging Face model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The tokenizer, its configuration, the compiled chat template (if the folder has
/// one) and the generation defaults of one model folder.
#[derive(Debug)]
pub struct ModelTextAssets {
    pub tokenizer: QwenTokenizer,
    pub tokenizer_config: TokenizerConfig,
    /// `None` for base models without a chat template.
    pub chat_template: Option<ChatTemplate>,
    pub generation_config: GenerationConfig,
}

impl ModelTextAssets {
    /// Load from `dir`. `tokenizer.json` (or `tokenizer.json.gz`) and
    /// `tokenizer_config.json` are required; `generation_config.json` is optional.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let plain = dir.join(TOKENIZER_FILE);
        let gz = dir.join(format!("{TOKENIZER_FILE}.gz"));
        let tokenizer_path = if !plain.exists() && gz.exists() { gz } else { plain };
        let tokenizer = QwenTokenizer::from_file(&tokenizer_path)?;
        let tokenizer_config = TokenizerConfig::from_dir(dir)?;
        let chat_template = match tokenizer_config.chat_template() {
            Ok(template) => Some(template),
            Err(DataError::MissingChatTemplate { .. }) => None,
            Err(e) => return Err(e),
        };
        let generation_config = GenerationConfig::from_dir(dir)?;
        Ok(ModelTextAssets { tokenizer, tokenizer_config, chat_template, generation_config })
    }

    /// Token ids that end generation: `generation_config.json`'s `eos_token_id`, or the
    /// id of `tokenizer_config.json`'s `eos_token` when the former is absent.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        if !self.generation_config.eos_token_ids.is_empty() {
            return self.generation_config.eos_token_ids.clone();
        }
        let from_config = self.tokenizer_config.eos_token.as_deref().and_then(|t| self.tokenizer.token_to_id(t));
        from_config.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_folder_and_falls_back_to_config_eos() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), crate::test_support::byte_level_tokenizer_json()).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"eos_token": "<|im_end|>", "chat_template": "{{ messages | length }}"}"#,
        )
        .unwrap();
        let assets = ModelTextAssets::load(dir.path()).unwrap();
        assert_eq!(assets.eos_token_ids(), vec![crate::test_support::IM_END]);
        assert_eq!(assets.generation_config, GenerationConfig::default());
        let rendered = assets
            .chat_template
            .as_ref()
            .unwrap()
            .render(&crate::RenderRequest::new(&serde_json::json!([{"role": "user"}, {"role": "assistant"}])))
            .unwrap();
        assert_eq!(rendered, "2");

        std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [5, 6]}"#).unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"eos_token": "<|im_end|>"}"#).unwrap();
        let assets = ModelTextAssets::load(dir.path()).unwrap();
        assert_eq!(assets.eos_token_ids(), vec![5, 6]);
        assert!(assets.chat_template.is_none());

        std::fs::remove_file(dir.path().join(TOKENIZER_FILE)).unwrap();
        let err = ModelTextAssets::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
