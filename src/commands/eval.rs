//! `qtrain eval`: loss and token accuracy of a model (optionally with an adapter) on a dataset;
//! with `--model_name` and `--model_author` (the `self-cognition` dataset needs them) also the
//! held-out identity questions: `self_cognition_acc` and `repetition_rate`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::device::{model_config, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_data::LossScale;
use qtrain_train::{EvalArgs, TruncationStrategy};

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct EvalCliArgs {
    /// Hugging Face model folder. Default: the base model the --adapters checkpoint names.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// PEFT LoRA adapter folder, a checkpoint-N of a run, or a run folder (its best or last checkpoint).
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    /// Datasets as `qtrain train --dataset` takes them: JSON/JSONL files, FILE#N, self-cognition[#N].
    #[arg(long, num_args = 1.., required = true)]
    pub dataset: Vec<String>,
    /// [default: the model's max_position_embeddings]
    #[arg(long)]
    pub max_length: Option<usize>,
    /// delete | left | right | split (raw text) [default: delete; split with --use_chat_template false].
    #[arg(long)]
    pub truncation_strategy: Option<TruncationStrategy>,
    /// false: raw text as `qtrain pt` trains on it ({"text"} rows, one assistant message, .txt
    /// lines; each document + eos, every token scored) [default: true].
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub use_chat_template: bool,
    #[arg(long, default_value_t = 1)]
    pub per_device_eval_batch_size: usize,
    /// System prompt for conversations without one.
    #[arg(long)]
    pub system: Option<String>,
    /// Which assistant turns are scored: default (all) | last_round.
    #[arg(long, default_value = "default")]
    pub loss_scale: LossScale,
    /// For self-cognition: {{NAME}}, one value or two (zh, en).
    #[arg(long, num_args = 1..=2)]
    pub model_name: Vec<String>,
    /// For self-cognition: {{AUTHOR}}, one value or two (zh, en).
    #[arg(long, num_args = 1..=2)]
    pub model_author: Vec<String>,
    /// Print {"loss": …, "perplexity": …, "token_acc": …, "tokens": …, "samples": …} (plus "self_cognition_acc",
    /// "repetition_rate" and "self_cognition_answers" with --model_name/--model_author) instead of text.
    #[arg(long)]
    pub json: bool,
    /// cpu | cuda | cuda:N | auto (CUDA when usable, else CPU; said in the log).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto | bfloat16 | float16 | float32 (auto: the model's config.json `torch_dtype`).
    #[arg(long, default_value = "auto")]
    pub torch_dtype: String,
}

impl BackendTask for EvalArgs {
    type Output = qtrain_train::EvalReport;
    fn run<B: qtrain_core::Backend>(self, be: &B) -> Result<Self::Output> {
        Ok(qtrain_train::run_eval(be, &self)?)
    }
}

pub fn run(args: EvalCliArgs) -> Result<()> {
    let device = resolve(&args.device)?;
    let (model, adapters) = super::checkpoint_model(args.model, args.adapters)?;
    let Some(model) = model else {
        bail!("--model is required (a Hugging Face model folder) unless --adapters names a checkpoint");
    };
    let stored = model_config(&model).as_ref().and_then(stated_dtype);
    let numerics = Numerics::resolve(&args.torch_dtype, stored, false)?;
    let eval = EvalArgs {
        model,
        adapters,
        dataset: args.dataset,
        max_length: args.max_length,
        truncation_strategy: args.truncation_strategy.unwrap_or(if args.use_chat_template {
            TruncationStrategy::Delete
        } else {
            TruncationStrategy::Split
        }),
        batch_size: args.per_device_eval_batch_size,
        system: args.system,
        loss_scale: args.loss_scale,
        model_name: args.model_name,
        model_author: args.model_author,
        use_chat_template: args.use_chat_template,
    };
    let report = run_on(device, numerics, eval)?;
    let (r, stats) = (report.result, report.stats);
    if stats.dropped_too_long + stats.dropped_no_targets + stats.truncated > 0 {
        eprintln!(
            "[qtrain] {} of {} records evaluated ({} too long dropped, {} truncated, {} without supervised tokens)",
            stats.samples, stats.records, stats.dropped_too_long, stats.truncated, stats.dropped_no_targets
        );
    }
    if args.json {
        let mut out = serde_json::json!({"loss": r.loss, "perplexity": r.perplexity(), "token_acc": r.token_acc, "tokens": r.tokens, "samples": r.samples});
        if let Some(c) = &report.self_cognition {
            out["self_cognition_acc"] = serde_json::json!(c.accuracy);
            out["repetition_rate"] = serde_json::json!(c.repetition_rate);
            out["self_cognition_answers"] = serde_json::to_value(&c.answers)?;
        }
        println!("{out}");
    } else {
        println!("loss:      {:.6}", r.loss);
        println!("perplexity: {:.4}", r.perplexity());
        println!("token_acc: {:.6}", r.token_acc);
        println!("tokens:    {}", r.tokens);
        println!("samples:   {}", r.samples);
        if let Some(c) = &report.self_cognition {
            println!("self_cognition_acc: {:.6}", c.accuracy);
            println!("repetition_rate:    {:.6}", c.repetition_rate);
            for a in &c.answers {
                let mark = if a.correct { "ok " } else { "-- " };
                let rep = if a.repetitive { " [repetitive]" } else { "" };
                println!("  {mark}{:?} → {:?}{rep}", a.query, a.answer);
            }
        }
    }
    Ok(())
}
