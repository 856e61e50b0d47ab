//! Autoregressive generation with a KV cache: prefill the prompt once, then one token per step.
//! Several prompts can be generated together ([`generate_batch`]): they are right-padded into
//! one batch, the padding is masked out of attention and each row keeps its own rotary
//! positions, so each row's logits are those of the row alone up to float rounding (summation
//! order over a padded key range) — greedy replies agree with one-at-a-time generation except at
//! exact near-ties. It must not know about chat templates or text: it maps token ids to token
//! ids, and reports each new token to a callback so the caller can stream text.

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

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::StopToken => "end of reply",
            StopReason::Length => "max_new_tokens reached",
            StopReason::ContextFull => "context full",
            StopReason::Cancelled => "stopped",
        })
    }
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

/// Generate up to `opts.max_new_tokens` after `prompt`, within the model's whole context.
/// `on_token` sees each new token and returns false to stop early.
pub fn generate<B: Backend>(
    model: &QwenModel<B>,
    be: &B,
    prompt: &[u32],
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let limit = model.config.max_position_embeddings;
    let mut out = generate_batch(model, be, &[prompt.to_vec()], opts, limit, std::slice::from_mut(sampler), |_, id| on_token(id))?;
    Ok(out.remove(0))
}

/// Generate after each of `prompts` together, row `i` drawing from `samplers[i]`, so that
/// prompt + reply never exceed `context_limit` tokens (at most `max_position_embeddings`).
/// `on_token(row, id)` sees each new token and returns false to stop that row. Finished rows
/// stay in the batch as masked padding until every row is done.
pub fn generate_batch<B: Backend>(
    model: &QwenModel<B>,
    be: &B,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    context_limit: usize,
    samplers: &mut [Sampler],
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    let limit = context_limit.min(model.config.max_position_embeddings);
    check_prompts(prompts, samplers.len(), limit)?;
    let (rows, longest) = (prompts.len(), prompts.iter().map(Vec::len).max().unwrap_or(0));
    let shortest = prompts.iter().map(Vec::len).min().unwrap_or(0);
    // Cache slots: the padded prompts, then one per decode step (the last token is never fed).
    let capacity = longest + opts.max_new_tokens.min(limit - shortest);
    let mut cache = KvCache::new(be, &model.config, rows, capacity)?;
    let mut contexts: Vec<Vec<u32>> = prompts.to_vec();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); rows];
    let mut stops: Vec<Option<StopReason>> = vec![if opts.max_new_tokens == 0 { Some(StopReason::Length) } else { None }; rows];
    let start = Instant::now();
    let hidden = model.forward_hidden(be, &Batch::right_padded(prompts, 0)?, Some(&mut cache))?;
    let last: Vec<usize> = prompts.iter().enumerate().map(|(i, p)| i * longest + p.len() - 1).collect();
    let mut logits = be.download(&model.logits_for_rows(be, &hidden, &last)?)?;
    let prefill_time = start.elapsed();
    let decode_start = Instant::now();
    let vocab = logits.len() / rows;
    loop {
        for i in 0..rows {
            if stops[i].is_some() {
                continue;
            }
            let next = samplers[i].sample(&mut logits[i * vocab..(i + 1) * vocab], &contexts[i]);
            tokens[i].push(next);
            contexts[i].push(next);
            stops[i] = if !on_token(i, next) {
                Some(StopReason::Cancelled)
            } else if opts.stop_ids.contains(&next) {
                Some(StopReason::StopToken)
            } else if tokens[i].len() >= opts.max_new_tokens {
                Some(StopReason::Length)
            } else if contexts[i].len() >= limit {
                Some(StopReason::ContextFull)
            } else {
                None
            };
        }
        if stops.iter().all(Option::is_some) {
            break;
        }
        // Every row feeds its newest token at the same cache slot but at its own position;
        // finished rows feed masked padding.
        let step = Batch {
            ids: (0..rows).map(|i| if stops[i].is_none() { contexts[i][contexts[i].len() - 1] } else { 0 }).collect(),
            batch: rows,
            seq_len: 1,
            positions: contexts.iter().map(|c| (c.len() - 1).min(limit - 1) as u32).collect(),
            valid: stops.iter().map(Option::is_none).collect(),
            segments: None,
        };
        let hidden = model.forward_hidden(be, &step, Some(&mut cache))?;
        logits = be.download(&model.logits_for_rows(be, &hidden, &(0..rows).collect::<Vec<_>>())?)?;
    }
    let decode_time = decode_start.elapsed();
    Ok(tokens
        .into_iter()
        .zip(stops)
        .map(|(tokens, stop)| Generation { tokens, stop: stop.unwrap_or(StopReason::Length), prefill_time, decode_time })
        .collect())
}

fn check_prompts(prompts: &[Vec<u32>], samplers: usize, limit: usize) -> Result<()> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Invalid("generation needs non-empty prompts".into()));
    }
    if samplers != prompts.len() {
        return Err(ModelError::Invalid(format!("{} prompts but {samplers} samplers", prompts.len())));
    }
    if let Some(p) = prompts.iter().find(|p| p.len() >= limit) {
        return Err(ModelError::Invalid(format!("prompt of {} tokens does not fit the context of {limit} tokens", p.len())));
    }
    Ok(())
}
