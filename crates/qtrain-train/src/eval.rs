//! Evaluation: mean loss over every supervised token of a dataset and token accuracy.
//!
//! The loss is `Σ token losses / Σ supervised tokens` over the whole dataset (not a mean of
//! per-batch means), so it does not depend on the batch size. This module must not change the
//! model or write files.

use std::path::PathBuf;

use qtrain_core::Backend;
use qtrain_data::{Bilingual, LossScale};
use qtrain_model::train::{LossStats, TrainBatch};
use qtrain_model::{LoraAdapter, QwenModel};

use crate::args::TruncationStrategy;
use crate::dataset::{self, DatasetStats, PrepareOptions, Sample};
use crate::error::Result;
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
}

/// Load the model folder (and adapter), prepare the dataset and evaluate it.
pub fn run_eval<B: Backend>(be: &B, args: &EvalArgs) -> Result<(EvalResult, DatasetStats)> {
    let mut folder = LoadedFolder::load(be, &args.model)?;
    if let Some(dir) = &args.adapters {
        LoraAdapter::load(dir, &folder.model.config)?.attach(be, &mut folder.model)?;
    }
    let model_max = folder.model.config.max_position_embeddings;
    let max_length = args.max_length.unwrap_or(model_max).min(model_max);
    let mut opts = PrepareOptions::for_eval(max_length, args.truncation_strategy, args.system.clone());
    opts.loss_scale = args.loss_scale;
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
    Ok((result, data.train_stats))
}
