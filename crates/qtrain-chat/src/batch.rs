//! Batch inference: many independent conversations answered together, as `swift infer
//! --val_dataset` does. Each request is rendered and tokenized alone ([`encode_request`]), then
//! groups of up to `--max_batch_size` prompts go through [`generate_replies`], one prefill and
//! one decode step per token for the whole group. Every row samples from its own sampler
//! seeded with the same seed, so a row's reply does not depend on which rows share its batch
//! (and equals a one-question `qtrain infer --prompt` with that seed). It must not read or write
//! files: the caller owns datasets and result files.

use serde_json::Value;

use qtrain_core::Backend;
use qtrain_model::generate::{generate_batch, GenerateOptions};
use qtrain_model::Sampler;

use crate::{ChatError, ChatOptions, ModelFolder, Reply, Result};

/// Render `messages` (ending with a user turn) with `tools` and tokenize the prompt. `system`
/// of `options` is not applied here: a request carries its own system message, if any.
pub fn encode_request<B: Backend>(
    folder: &ModelFolder<B>,
    messages: &Value,
    tools: Option<&Value>,
    options: &ChatOptions,
) -> Result<Vec<u32>> {
    let prompt = folder.render_prompt(messages, tools, options.enable_thinking)?;
    let ids = folder.tokenizer.encode(&prompt)?;
    let limit = options.context_limit(folder);
    if ids.len() >= limit {
        return Err(ChatError::Invalid(format!("its prompt has {} tokens; the context holds {limit}", ids.len())));
    }
    Ok(ids)
}

/// Generate a reply for every prompt, all in one batch.
pub fn generate_replies<B: Backend>(folder: &ModelFolder<B>, be: &B, prompts: &[Vec<u32>], options: &ChatOptions) -> Result<Vec<Reply>> {
    let opts = GenerateOptions { max_new_tokens: options.max_new_tokens, stop_ids: folder.stop_ids() };
    let mut samplers = vec![Sampler::new(options.sampling.clone(), options.seed); prompts.len()];
    let generations = generate_batch(&folder.model, be, prompts, &opts, options.context_limit(folder), &mut samplers, |_, _| true)?;
    prompts
        .iter()
        .zip(generations)
        .map(|(prompt, generation)| {
            Ok(Reply { text: folder.reply_text(&generation.tokens)?, generation, prompt_tokens: prompt.len(), dropped_turns: 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::ensure_embedded_model;
    use crate::Chat;
    use qtrain_core::CpuBackend;
    use qtrain_model::SamplingParams;
    use serde_json::json;

    /// Sampled (not greedy) replies: a row's reply is the same in a batch of one, in a batch
    /// of three, and from a one-question chat with the same seed.
    #[test]
    fn a_rows_reply_does_not_depend_on_its_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let be = CpuBackend::new();
        let folder = ModelFolder::load(&be, &ensure_embedded_model(&tmp.path().join("m")).unwrap()).unwrap();
        let sampling = SamplingParams { temperature: 0.9, top_k: 50, ..SamplingParams::default() };
        let options = ChatOptions { system: None, enable_thinking: None, sampling, max_new_tokens: 12, seed: 7, context_limit: None };
        let questions = ["hello there", "who are you?", "a somewhat longer question about nothing in particular"];
        let prompts: Vec<Vec<u32>> =
            questions.iter().map(|q| encode_request(&folder, &json!([{"role": "user", "content": q}]), None, &options).unwrap()).collect();
        let together = generate_replies(&folder, &be, &prompts, &options).unwrap();
        for (i, q) in questions.iter().enumerate() {
            let alone = generate_replies(&folder, &be, &prompts[i..=i], &options).unwrap();
            assert_eq!(together[i].generation.tokens, alone[0].generation.tokens, "row {i}");
            let chat = Chat::new(&folder, &be, options.clone()).unwrap().send(q, |_| {}).unwrap();
            assert_eq!(chat.text, together[i].text, "row {i}");
        }
    }
}
