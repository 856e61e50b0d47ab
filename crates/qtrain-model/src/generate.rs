//! Autoregressive generation with a KV cache: prefill the prompt once, then one token per step.
//! It must not know about chat templates or text: it maps token ids to token ids, and reports
//! each new token to a callback so the caller can stream text.

use std::time::{Duration, Instant};

use qtrain_core::Backend;

use crate::error::{ModelError, Result};
use crate::model::{Batch, KvCache, QwenModel};
use crate::sampling::Sampler;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Generation stops after emitting any of these (eos ids, `<|im_end|>`).
    pub stop_ids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was generated (it is the last token of the output).
    StopToken,
    /// `max_new_tokens` reached.
    Length,
    /// The model's context (`max_position_embeddings`) is full.
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    /// New tokens, including the stop token if one ended the generation (as transformers).
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl Generation {
    /// Decode throughput in tokens per second (tokens after the first).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if n == 0 || self.decode_time.is_zero() {
            0.0
        } else {
            n as f64 / self.decode_time.as_secs_f64()
        }
    }
}

/// Generate up to `opts.max_new_tokens` after `prompt`. `on_token` sees each new token and
/// returns false to stop early.
pub fn generate<B: Backend>(
    model: &QwenModel<B>,
    be: &B,
    prompt: &[u32],
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Invalid("generation needs a non-empty prompt".into()));
    }
    let max_ctx = model.config.max_position_embeddings;
    if prompt.len() >= max_ctx {
        return Err(ModelError::Invalid(format!("prompt of {} tokens does not fit the model's context of {max_ctx}", prompt.len())));
    }
    let capacity = (prompt.len() + opts.max_new_tokens).min(max_ctx);
    let mut cache = KvCache::new(be, &model.config, 1, capacity)?;
    let mut context: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let start = Instant::now();
    let hidden = model.forward_hidden(be, &Batch::single(prompt, 0), Some(&mut cache))?;
    let mut logits = be.download(&model.logits_for_rows(be, &hidden, &[prompt.len() - 1])?)?;
    let prefill_time = start.elapsed();
    let decode_start = Instant::now();
    let stop = loop {
        if tokens.len() >= opts.max_new_tokens {
            break StopReason::Length;
        }
        let next = sampler.sample(&mut logits, &context);
        tokens.push(next);
        context.push(next);
        if !on_token(next) {
            break StopReason::Cancelled;
        }
        if opts.stop_ids.contains(&next) {
            break StopReason::StopToken;
        }
        if tokens.len() >= opts.max_new_tokens {
            break StopReason::Length;
        }
        if cache.len() >= capacity {
            break StopReason::ContextFull;
        }
        let pos = cache.len() as u32;
        let hidden = model.forward_hidden(be, &Batch::single(&[next], pos), Some(&mut cache))?;
        logits = be.download(&model.logits_for_rows(be, &hidden, &[0])?)?;
    };
    Ok(Generation { tokens, stop, prefill_time, decode_time: decode_start.elapsed() })
}
