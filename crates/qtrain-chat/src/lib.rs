//! qtrain-chat: a Hugging Face model folder made ready to talk, and multi-turn conversations.
//!
//! [`ModelFolder`] gathers what `qtrain infer`, evaluation and export need from one folder —
//! weights on a backend, `tokenizer.json`, the chat template from `tokenizer_config.json`, and
//! the defaults of `generation_config.json`. [`Chat`] keeps a conversation, renders it through
//! the template each turn and streams the reply; when the conversation outgrows the context it
//! drops its oldest turns and says so in the [`Reply`]. [`batch`] answers many independent
//! requests together. It must not train, and must not contain CLI parsing or printing: text
//! reaches the caller through callbacks and return values.

pub mod batch;
pub mod embedded;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use qtrain_core::{Backend, TensorInfo};
use qtrain_data::{ChatTemplate, GenerationConfig, QwenTokenizer, RenderRequest, TokenizerConfig};
use qtrain_model::generate::{generate_batch, GenerateOptions, Generation};
use qtrain_model::{LoraAdapter, QwenModel, Sampler, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Model(#[from] qtrain_model::ModelError),
    #[error(transparent)]
    Data(#[from] qtrain_data::DataError),
    #[error(transparent)]
    Backend(#[from] qtrain_core::CoreError),
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
            return Err(ChatError::Invalid(qtrain_model::config::model_folder_not_found(dir)));
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

    /// Merge the attached adapter into the base weights (W += scale · B·A, in f32, then stored
    /// as the backend keeps weights) and detach it: the same function, one product per layer
    /// less. Returns how many linear modules were merged.
    pub fn merge_adapter(&mut self, be: &B) -> Result<usize> {
        let mut merged = 0;
        for layer in &mut self.model.layers {
            for (_, lin) in layer.linears_mut() {
                let Some(lora) = lin.lora.take() else { continue };
                let shape = lin.weight.shape().to_vec();
                let delta = be.download(&be.matmul(&lora.b, &lora.a, false, false)?)?;
                let mut w = be.download(&lin.weight)?;
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += lora.scale * d);
                lin.weight = be.upload_weight(qtrain_core::HostData::F32(&w), &shape)?;
                merged += 1;
            }
        }
        Ok(merged)
    }

    /// The prompt text for `messages` (ending with a user turn), template applied.
    pub fn render_prompt(&self, messages: &Value, tools: Option<&Value>, enable_thinking: Option<bool>) -> Result<String> {
        let request = RenderRequest { messages, tools, add_generation_prompt: true, enable_thinking };
        Ok(self.template.render(&request)?)
    }

    /// The text of generated `tokens`, without stop tokens.
    pub fn reply_text(&self, tokens: &[u32]) -> Result<String> {
        let stop_ids = self.stop_ids();
        let content: Vec<u32> = tokens.iter().copied().filter(|id| !stop_ids.contains(id)).collect();
        Ok(self.tokenizer.decode(&content, false)?)
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
    /// Tokens of prompt + reply at most (`--max_length`); `None`: the model's
    /// `max_position_embeddings`.
    pub context_limit: Option<usize>,
}

impl ChatOptions {
    /// The context limit for `folder`'s model: the option, capped by the model's own.
    pub fn context_limit<B: Backend>(&self, folder: &ModelFolder<B>) -> usize {
        let model_limit = folder.model.config.max_position_embeddings;
        self.context_limit.map_or(model_limit, |l| l.min(model_limit))
    }
}

/// One assistant reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The reply text without the closing stop token.
    pub text: String,
    pub generation: Generation,
    pub prompt_tokens: usize,
    /// Oldest turns (a user message and the replies after it) dropped to make room.
    pub dropped_turns: usize,
}

/// A multi-turn conversation with a loaded model.
pub struct Chat<'a, B: Backend> {
    folder: &'a ModelFolder<B>,
    be: &'a B,
    options: ChatOptions,
    messages: Vec<Value>,
    sampler: Sampler,
    interrupt: Option<Arc<AtomicBool>>,
    /// The tokenized prompt of the user turn awaiting its reply, and the turns dropped for it.
    pending: Option<(Vec<u32>, usize)>,
}

impl<'a, B: Backend> Chat<'a, B> {
    pub fn new(folder: &'a ModelFolder<B>, be: &'a B, options: ChatOptions) -> Result<Self> {
        options.sampling.validate().map_err(ChatError::Invalid)?;
        let mut messages = vec![];
        if let Some(system) = &options.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        let sampler = Sampler::new(options.sampling.clone(), options.seed);
        Ok(Chat { folder, be, options, messages, sampler, interrupt: None, pending: None })
    }

    /// A flag that, once set, ends the reply being generated (it is cleared when a reply starts).
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    pub fn messages(&self) -> &[Value] {
        &self.messages
    }

    /// Tokens of prompt + reply at most.
    pub fn context_limit(&self) -> usize {
        self.options.context_limit(self.folder)
    }

    /// Forget every turn (the system prompt stays).
    pub fn clear(&mut self) {
        self.pending = None;
        self.messages.retain(|m| m["role"] == "system");
    }

    /// The prompt the model would see for the next reply (template applied).
    pub fn render_prompt(&self) -> Result<String> {
        self.folder.render_prompt(&Value::Array(self.messages.clone()), None, self.options.enable_thinking)
    }

    /// Add a user turn, generate the assistant's reply (streaming text pieces to `on_text`),
    /// and record the reply in the conversation: [`Chat::push_user`], then [`Chat::reply`].
    pub fn send(&mut self, user_text: &str, on_text: impl FnMut(&str)) -> Result<Reply> {
        self.push_user(user_text)?;
        self.reply(on_text)
    }

    /// Add a user turn and make the conversation fit the context: when the prompt leaves too
    /// little room for a reply, the oldest turns are dropped; returns how many. A message that
    /// does not fit even alone is an error and is not kept.
    pub fn push_user(&mut self, user_text: &str) -> Result<usize> {
        self.messages.push(json!({"role": "user", "content": user_text}));
        match self.fit_prompt() {
            Ok((ids, dropped)) => {
                self.pending = Some((ids, dropped));
                Ok(dropped)
            }
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }

    /// Generate the reply to the turn added by [`Chat::push_user`], streaming text pieces to
    /// `on_text`, and record it in the conversation.
    pub fn reply(&mut self, mut on_text: impl FnMut(&str)) -> Result<Reply> {
        let Some((prompt_ids, dropped_turns)) = self.pending.take() else {
            return Err(ChatError::Invalid("no user message to reply to".into()));
        };
        let stop_ids = self.folder.stop_ids();
        let opts = GenerateOptions { max_new_tokens: self.options.max_new_tokens, stop_ids: stop_ids.clone() };
        let mut decoder = self.folder.tokenizer.stream_decoder(false);
        let mut decode_error = None;
        let interrupt = self.interrupt.clone();
        if let Some(flag) = &interrupt {
            flag.store(false, Ordering::SeqCst);
        }
        let limit = self.context_limit();
        let prompts = [prompt_ids];
        let mut generation =
            generate_batch(&self.folder.model, self.be, &prompts, &opts, limit, std::slice::from_mut(&mut self.sampler), |_, id| {
                if interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                    return false;
                }
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
            })?
            .remove(0);
        if let Some(e) = decode_error {
            return Err(e.into());
        }
        if generation.stop == qtrain_model::generate::StopReason::Cancelled {
            // The token that arrived with the interrupt was not shown: it is not kept either.
            generation.tokens.pop();
        }
        let rest = decoder.finish()?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        let text = self.folder.reply_text(&generation.tokens)?;
        self.messages.push(json!({"role": "assistant", "content": text}));
        let [prompt_ids] = prompts;
        Ok(Reply { text, generation, prompt_tokens: prompt_ids.len(), dropped_turns })
    }

    /// The tokenized prompt, after dropping the oldest turns while it leaves less than
    /// `min(max_new_tokens, limit / 4)` tokens for the reply; returns how many were dropped.
    fn fit_prompt(&mut self) -> Result<(Vec<u32>, usize)> {
        let limit = self.context_limit();
        let room = self.options.max_new_tokens.min(limit / 4).max(1);
        let mut dropped = 0;
        loop {
            let ids = self.folder.tokenizer.encode(&self.render_prompt()?)?;
            if ids.len() + room <= limit {
                return Ok((ids, dropped));
            }
            if !self.drop_oldest_turn() {
                if ids.len() < limit {
                    return Ok((ids, dropped));
                }
                return Err(ChatError::Invalid(format!(
                    "this message makes a prompt of {} tokens; the context holds {limit}: send a shorter one",
                    ids.len()
                )));
            }
            dropped += 1;
        }
    }

    /// Remove the oldest user message and the replies after it; never the system prompt or
    /// the newest user message. Returns false when there is nothing left to drop.
    fn drop_oldest_turn(&mut self) -> bool {
        let first = usize::from(self.messages.first().is_some_and(|m| m["role"] == "system"));
        let Some(newest_user) = self.messages.iter().rposition(|m| m["role"] == "user") else { return false };
        if first >= newest_user {
            return false;
        }
        let end = (first + 1..=newest_user).find(|&i| self.messages[i]["role"] == "user").unwrap_or(newest_user);
        self.messages.drain(first..end);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtrain_core::CpuBackend;

    /// A conversation longer than the context keeps going: the oldest turns make room, the
    /// system prompt stays, and a message too long even alone is refused and not kept.
    #[test]
    fn a_full_context_drops_the_oldest_turns() {
        let tmp = tempfile::tempdir().unwrap();
        let be = CpuBackend::new();
        let folder = ModelFolder::load(&be, &embedded::ensure_embedded_model(&tmp.path().join("m")).unwrap()).unwrap();
        let options = ChatOptions {
            system: Some("Be brief.".into()),
            enable_thinking: None,
            sampling: SamplingParams::default(),
            max_new_tokens: 16,
            seed: 0,
            context_limit: Some(96),
        };
        let mut chat = Chat::new(&folder, &be, options).unwrap();
        let mut dropped = 0;
        for turn in 0..8 {
            let reply = chat.send(&format!("message number {turn}, a few words long"), |_| {}).unwrap();
            assert!(reply.prompt_tokens + reply.generation.tokens.len() <= 96, "turn {turn}");
            dropped += reply.dropped_turns;
        }
        assert!(dropped > 0, "eight turns of ~30 tokens cannot fit 96 tokens");
        assert_eq!(chat.messages()[0]["content"], "Be brief.");
        assert_eq!(chat.messages()[chat.messages().len() - 2]["content"], "message number 7, a few words long");
        let before = chat.messages().len();
        let err = chat.send(&"word ".repeat(200), |_| {}).unwrap_err().to_string();
        assert!(err.contains("the context holds 96"), "{err}");
        assert!(chat.messages().len() <= before && chat.messages().iter().all(|m| m["content"].as_str().unwrap().len() < 200));
        chat.send("still here?", |_| {}).unwrap();
    }
}
