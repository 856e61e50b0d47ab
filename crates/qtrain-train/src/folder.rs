//! A Hugging Face model folder loaded for training or evaluation: weights on a backend, the
//! tokenizer, the chat template, the padding id and the checkpoint's stored dtype.
//!
//! It must not train or evaluate; it only gathers what the recipe needs from one folder.

use std::path::{Path, PathBuf};

use qtrain_core::{Backend, DType};
use qtrain_data::{ChatTemplate, DataError, ModelTextAssets, QwenTokenizer};
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::{QwenConfig, QwenModel};

use crate::error::{Result, TrainError};

pub struct LoadedFolder<B: Backend> {
    pub dir: PathBuf,
    pub model: QwenModel<B>,
    pub tokenizer: QwenTokenizer,
    pub template: ChatTemplate,
    /// Padding id for right-padded batches (the tokenizer's pad token, else `<|endoftext|>`).
    pub pad_id: u32,
    /// dtype of the stored weights (full fine-tuning checkpoints and merges keep it).
    pub dtype: DType,
    /// `tokenizer_config.json`'s `eos_token` (raw-text documents end with it).
    pub eos_token: Option<String>,
}

impl<B: Backend> LoadedFolder<B> {
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(TrainError::Invalid(qtrain_model::config::model_folder_not_found(dir)));
        }
        let config = QwenConfig::from_file(&dir.join("config.json"))?;
        let store = SafetensorsStore::open_model_folder(dir)?;
        let dtype = store.dtype("model.embed_tokens.weight")?;
        let model = QwenModel::from_store(be, config, &store)?;
        let ModelTextAssets { tokenizer, tokenizer_config, chat_template, generation_config } = ModelTextAssets::load(dir)?;
        let template = chat_template.ok_or(TrainError::Data(DataError::MissingChatTemplate { path: tokenizer_config.origin.clone() }))?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(TrainError::Invalid(format!(
                "{}: tokenizer has {} tokens but the model's vocab_size is {}",
                dir.display(),
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        let pad_id = tokenizer_config
            .pad_token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
            .or_else(|| tokenizer.token_to_id("<|endoftext|>"))
            .or(generation_config.pad_token_id)
            .unwrap_or(0);
        let eos_token = tokenizer_config.eos_token.clone();
        Ok(LoadedFolder { dir: dir.to_path_buf(), model, tokenizer, template, pad_id, dtype, eos_token })
    }
}
