//! qtrain-chat: a Hugging Face model folder made ready to talk, and multi-turn conversations.
//!
//! [`ModelFolder`] gathers what `qtrain infer`, evaluation and export need from one folder —
//! weights on a backend, `tokenizer.json`, the chat template from `tokenizer_config.json`, and
//! the defaults of `generation_config.json`. [`Chat`] keeps a conversation, renders it through
//! the template each turn and streams the reply. It must not train, and must not contain CLI
//! parsing or printing: text reaches the caller through callbacks.

pub mod embedded;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use qtrain_core::Backend;
use qtrain_data::{ChatTemplate, GenerationConfig, QwenTokenizer, RenderRequest, TokenizerConfig};
use qtrain_model::generate::{generate, GenerateOptions, Generation, StopReason};
use qtrain_model::{LoraAdapter, QwenModel, Sampler, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Model(#[from] qtrain_model::ModelError),
    #[error(transparent)]
    Data(#[from] qtrain_data::DataError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ChatError>;

/// Everything loaded from one model folder.
pub struct ModelFolder<B: Backend> {
    pub dir: PathBuf,
    pub model: QwenModel<B>,
    pub tokenizer: QwenTokenizer,
    pub tokenizer_config: TokenizerConfig,
    pub template: ChatTemplate,
    pub generation: GenerationConfig,
}

impl<B: Backend> ModelFolder<B> {
    /// Load weights, tokenizer, chat template and generation defaults from `dir`.
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ChatError::Invalid(format!("{}: model folder not found", dir.display())));
        }
        let model = QwenModel::load(be, dir)?;
        let tokenizer = QwenTokenizer::from_file(dir.join("tokenizer.json"))?;
        let tokenizer_config = TokenizerConfig::from_dir(dir)?;
        let template = tokenizer_config.chat_template()?;
        let generation = GenerationConfig::from_dir(dir)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(ChatError::Invalid(format!(
                "{}: tokenizer has {} tokens but the model's vocab_size is {}",
                dir.display(),
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        Ok(ModelFolder { dir: dir.to_path_buf(), model, tokenizer, tokenizer_config, template, generation })
    }

    /// Attach a PEFT adapter folder.
    pub fn attach_adapter(&mut self, be: &B, adapter_dir: &Path) -> Result<LoraAdapter> {
        let adapter = LoraAdapter::load(adapter_dir, &self.model.config).map_err(|e| e.for_model(&self.dir))?;
        adapter.attach(be, &mut self.model)?;
        Ok(adapter)
    }

    /// Token ids that end a reply: generation_config's eos ids, the tokenizer config's eos
    /// token, and `<|im_end|>` (the end of every ChatML turn).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = self.generation.eos_token_ids.clone();
        ids.extend(self.tokenizer_config.eos_token_id());
        ids.extend(self.tokenizer.token_to_id("<|im_end|>"));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Sampling defaults from generation_config.json (greedy when it does not sample).
    pub fn default_sampling(&self) -> SamplingParams {
        let g = &self.generation;
        let sampling = g.do_sample.unwrap_or(false);
        SamplingParams {
            temperature: if sampling { g.temperature.unwrap_or(1.0) as f32 } else { 0.0 },
            top_k: g.top_k.unwrap_or(0),
            top_p: g.top_p.unwrap_or(1.0) as f32,
            min_p: g.min_p.unwrap_or(0.0) as f32,
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0) as f32,
        }
    }
}

/// Settings of a conversation.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// System prompt; `None` lets the template choose its default.
    pub system: Option<String>,
    /// Qwen3's thinking switch; `None` leaves the template's default.
    pub enable_thinking: Option<bool>,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub seed: u64,
}

/// One assistant reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The reply text without the closing stop token.
    pub text: String,
    pub generation: Generation,
    pub prompt_tokens: usize,
}

/// A multi-turn conversation with a loaded model.
pub struct Chat<'a, B: Backend> {
    folder: &'a ModelFolder<B>,
    be: &'a B,
    options: ChatOptions,
    messages: Vec<Value>,
    sampler: Sampler,
}

impl<'a, B: Backend> Chat<'a, B> {
    pub fn new(folder: &'a ModelFolder<B>, be: &'a B, options: ChatOptions) -> Result<Self> {
        options.sampling.validate().map_err(ChatError::Invalid)?;
        let mut messages = vec![];
        if let Some(system) = &options.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        let sampler = Sampler::new(options.sampling.clone(), options.seed);
        Ok(Chat { folder, be, options, messages, sampler })
    }

    pub fn messages(&self) -> &[Value] {
        &self.messages
    }

    /// The prompt the model would see for the next reply (template applied).
    pub fn render_prompt(&self) -> Result<String> {
        let messages = Value::Array(self.messages.clone());
        let request =
            RenderRequest { messages: &messages, tools: None, add_generation_prompt: true, enable_thinking: self.options.enable_thinking };
        Ok(self.folder.template.render(&request)?)
    }

    /// Add a user turn, generate the assistant's reply (streaming text pieces to `on_text`),
    /// and record the reply in the conversation.
    pub fn send(&mut self, user_text: &str, mut on_text: impl FnMut(&str)) -> Result<Reply> {
        self.messages.push(json!({"role": "user", "content": user_text}));
        let prompt = self.render_prompt()?;
        let prompt_ids = self.folder.tokenizer.encode(&prompt)?;
        let stop_ids = self.folder.stop_ids();
        let opts = GenerateOptions { max_new_tokens: self.options.max_new_tokens, stop_ids: stop_ids.clone() };
        let mut decoder = self.folder.tokenizer.stream_decoder(false);
        let mut decode_error = None;
        let generation = generate(&self.folder.model, self.be, &prompt_ids, &opts, &mut self.sampler, |id| {
            if stop_ids.contains(&id) {
                return true;
            }
            match decoder.push(id) {
                Ok(piece) => {
                    if !piece.is_empty() {
                        on_text(&piece)
                    }
                    true
                }
                Err(e) => {
                    decode_error = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = decode_error {
            return Err(e.into());
        }
        let rest = decoder.finish()?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        let content_ids: Vec<u32> = generation.tokens.iter().copied().filter(|id| !stop_ids.contains(id)).collect();
        let text = self.folder.tokenizer.decode(&content_ids, false)?;
        self.messages.push(json!({"role": "assistant", "content": text}));
        if generation.stop == StopReason::ContextFull {
            return Err(ChatError::Invalid(format!(
                "the conversation filled the model's context of {} tokens",
                self.folder.model.config.max_position_embeddings
            )));
        }
        Ok(Reply { text, generation, prompt_tokens: prompt_ids.len() })
    }
}
