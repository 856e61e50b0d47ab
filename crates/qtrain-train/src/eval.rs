//! Evaluation: mean loss over every supervised token of a dataset and token accuracy, and —
//! for a model taught an identity (`--model_name` / `--model_author`) — the held-out
//! self-cognition questions of [`crate::cognition`].
//!
//! The loss is `Σ token losses / Σ supervised tokens` over the whole dataset (not a mean of
//! per-batch means), so it does not depend on the batch size. [`EvalMetrics`] is what one
//! evaluation during training measured, by its `logging.jsonl` names. This module must not
//! change the model or write files.

use std::path::PathBuf;

use qtrain_core::Backend;
use qtrain_data::{Bilingual, LossScale};
use qtrain_model::train::{LossStats, TrainBatch};
use qtrain_model::{LoraAdapter, QwenModel};

use crate::args::TruncationStrategy;
use crate::cognition::{CognitionEval, CognitionProbe};
use crate::dataset::{self, DatasetStats, PrepareOptions, Sample};
use crate::error::{Result, TrainError};
use crate::folder::LoadedFolder;

/// Loss and accuracy of a model over a dataset.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy over all supervised tokens.
    pub loss: f64,
    /// Fraction of supervised tokens whose arg-max prediction is right.
    pub token_acc: f64,
    /// Number of supervised tokens.
    pub tokens: usize,
    pub samples: usize,
}

impl EvalResult {
    /// `exp(loss)`: the perplexity of the supervised tokens (the usual measure on raw text).
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// What one evaluation during a training run measured: handed to the trainer's `on_eval`
/// observer (a sweep's pruner) and kept as [`crate::TrainSummary::last_eval`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalMetrics {
    pub global_step: u64,
    /// Validation loss and token accuracy; `None` when the run has no validation set (then
    /// only the identity questions are asked, at the last step).
    pub eval_loss: Option<f64>,
    pub eval_token_acc: Option<f64>,
    /// [`crate::cognition`]'s rates; `None` unless the run teaches an identity.
    pub eval_self_cognition_acc: Option<f64>,
    pub eval_repetition_rate: Option<f64>,
}

impl EvalMetrics {
    /// The names [`EvalMetrics::get`] knows (each also with an `eval_` prefix, or without it).
    pub const NAMES: [&'static str; 4] = ["eval_loss", "eval_token_acc", "self_cognition_acc", "repetition_rate"];

    /// A metric by its `logging.jsonl` name, with or without the `eval_` prefix
    /// (`eval_loss`, `token_acc`, `self_cognition_acc`, `eval_repetition_rate` …); `None` when
    /// the name is unknown or the value was not measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name.strip_prefix("eval_").unwrap_or(name) {
            "loss" => self.eval_loss,
            "token_acc" => self.eval_token_acc,
            "self_cognition_acc" => self.eval_self_cognition_acc,
            "repetition_rate" => self.eval_repetition_rate,
            _ => None,
        }
    }

    /// Whether `name` is one [`EvalMetrics::get`] knows.
    pub fn knows(name: &str) -> bool {
        matches!(name.strip_prefix("eval_").unwrap_or(name), "loss" | "token_acc" | "self_cognition_acc" | "repetition_rate")
    }
}

/// Evaluate `samples` in batches of `batch_size` (right-padded with `pad_id`).
pub fn evaluate_dataset<B: Backend>(
    be: &B,
    model: &QwenModel<B>,
    samples: &[Sample],
    batch_size: usize,
    pad_id: u32,
) -> Result<EvalResult> {
    let mut total = LossStats::default();
    for chunk in samples.chunks(batch_size.max(1)) {
        let pairs: Vec<(Vec<u32>, Vec<i32>)> = chunk.iter().map(|s| (s.input_ids.clone(), s.labels.clone())).collect();
        let tb = TrainBatch::from_samples(&pairs, pad_id)?;
        total.add(model.evaluate(be, &tb)?);
    }
    Ok(EvalResult { loss: total.mean_loss(), token_acc: total.token_accuracy(), tokens: total.num_targets, samples: samples.len() })
}

/// What `qtrain eval` evaluates.
#[derive(Clone, Debug)]
pub struct EvalArgs {
    pub model: PathBuf,
    pub adapters: Option<PathBuf>,
    /// Dataset specs, as `qtrain train --dataset` takes them.
    pub dataset: Vec<String>,
    /// Default: the model's `max_position_embeddings`.
    pub max_length: Option<usize>,
    pub truncation_strategy: TruncationStrategy,
    pub batch_size: usize,
    pub system: Option<String>,
    /// `default` or `last_round`.
    pub loss_scale: LossScale,
    /// For `self-cognition`: one value or two (zh, en).
    pub model_name: Vec<String>,
    pub model_author: Vec<String>,
    /// false: raw text as `qtrain pt` reads it (documents + eos, every token scored).
    pub use_chat_template: bool,
}

/// What `qtrain eval` measured.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub result: EvalResult,
    pub stats: DatasetStats,
    /// The held-out identity questions, when a name and an author were given (the
    /// `self-cognition` dataset needs them).
    pub self_cognition: Option<CognitionEval>,
}

/// Load the model folder (and adapter), prepare the dataset and evaluate it; with
/// `model_name` and `model_author`, also ask the held-out self-cognition questions.
pub fn run_eval<B: Backend>(be: &B, args: &EvalArgs) -> Result<EvalReport> {
    if !args.use_chat_template {
        // Raw text is scored token by token: nothing for a system prompt or a turn choice to act on.
        if args.system.is_some() {
            return Err(TrainError::arg("system", "raw text (--use_chat_template false) has no system prompt"));
        }
        if args.loss_scale == LossScale::LastRound {
            return Err(TrainError::arg("loss_scale", "raw text (--use_chat_template false) has no turns: every token is scored"));
        }
    }
    let mut folder = LoadedFolder::load(be, &args.model)?;
    if let Some(dir) = &args.adapters {
        LoraAdapter::load(dir, &folder.model.config).map_err(|e| e.for_model(&folder.dir))?.attach(be, &mut folder.model)?;
    }
    let model_max = folder.model.config.max_position_embeddings;
    let max_length = args.max_length.unwrap_or(model_max).min(model_max);
    let mut opts = PrepareOptions::for_eval(max_length, args.truncation_strategy, args.system.clone());
    opts.loss_scale = args.loss_scale;
    opts.use_chat_template = args.use_chat_template;
    opts.eos_token = folder.eos_token.clone();
    let names = |option: &str, values: &[String]| -> Result<Option<Bilingual>> {
        if values.is_empty() {
            return Ok(None);
        }
        Ok(Some(Bilingual::from_values(option, values)?))
    };
    opts.model_name = names("model_name", &args.model_name)?;
    opts.model_author = names("model_author", &args.model_author)?;
    let data = dataset::prepare(&args.dataset, &[], 0.0, &folder.template, &folder.tokenizer, &opts)?;
    let result = evaluate_dataset(be, &folder.model, &data.train, args.batch_size, folder.pad_id)?;
    let probe = CognitionProbe::for_run(
        &args.dataset,
        opts.model_name.as_ref(),
        opts.model_author.as_ref(),
        args.system.as_deref(),
        &folder.template,
        &folder.tokenizer,
    )?;
    let self_cognition = match probe {
        Some(p) => Some(p.evaluate(be, &folder.model, &folder.tokenizer)?),
        None => None,
    };
    Ok(EvalReport { result, stats: data.train_stats, self_cognition })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_found_by_their_logging_names() {
        let m = EvalMetrics {
            global_step: 4,
            eval_loss: Some(1.5),
            eval_token_acc: Some(0.25),
            eval_self_cognition_acc: None,
            eval_repetition_rate: Some(0.1),
        };
        assert_eq!((m.get("eval_loss"), m.get("loss"), m.get("token_acc")), (Some(1.5), Some(1.5), Some(0.25)));
        assert_eq!((m.get("self_cognition_acc"), m.get("eval_repetition_rate")), (None, Some(0.1)));
        assert_eq!(m.get("bleu"), None);
        assert!(EvalMetrics::NAMES.iter().all(|n| EvalMetrics::knows(n)));
        assert!(EvalMetrics::knows("eval_self_cognition_acc") && !EvalMetrics::knows("eval_bleu"));
    }
}
