//! `qtrain bench`: throughput of prefill, decode and a LoRA training step on a model folder or
//! a random model of a published shape (`--shape qwen2.5-7b`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Args};

use qtrain_core::Backend;

use super::device::{cpu_weight_bytes, ensure_cpu_fits, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_model::bench::{bench_inference, bench_lora_train, BenchOptions, BenchReport};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_model::QwenModel;

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct BenchArgs {
    /// A Hugging Face model folder to benchmark.
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<PathBuf>,
    /// A published shape with random weights: bench-small, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen3-0.6b, qwen3-8b.
    #[arg(long)]
    pub shape: Option<String>,
    /// infer | train | all
    #[arg(long, default_value = "all")]
    pub what: String,
    #[arg(long, default_value_t = 256)]
    pub max_length: usize,
    #[arg(long, default_value_t = 1)]
    pub per_device_train_batch_size: usize,
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub lora_rank: usize,
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub gradient_checkpointing: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// cpu | cuda | cuda:N | auto (CUDA when usable).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto | bfloat16 | float16 | float32. auto: the model's config.json `torch_dtype`; with
    /// --shape, bfloat16 (the dtype of the published checkpoints).
    #[arg(long, default_value = "auto")]
    pub torch_dtype: String,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = resolve(&args.device)?;
    // A published shape has no config.json dtype: its checkpoints are bf16.
    let (cfg, stored) = match (&args.model, &args.shape) {
        (Some(dir), _) => {
            let cfg = qtrain_model::QwenConfig::from_file(&dir.join("config.json"))?;
            let stored = stated_dtype(&cfg);
            (Some(cfg), stored)
        }
        (None, Some(shape)) => (Some(qtrain_model::shapes::shape(shape)?), Some(qtrain_core::DType::BF16)),
        (None, None) => (None, None),
    };
    let numerics = Numerics::resolve(&args.torch_dtype, stored, false)?;
    if let Some(cfg) = cfg {
        let (tokens, batch) = (args.max_length as u64, args.per_device_train_batch_size as u64);
        let wb = cpu_weight_bytes(numerics);
        let infer = MemoryEstimate::inference(Target::Cpu, &cfg, batch, tokens, tokens + args.decode_tokens as u64, wb);
        let train = MemoryEstimate::lora_on(Target::Cpu, &cfg, batch * tokens, args.lora_rank as u64, wb);
        let estimate = match args.what.as_str() {
            "infer" => infer,
            "train" => train,
            _ if infer.total_bytes > train.total_bytes => infer,
            _ => train,
        };
        let advice = "lower --max_length or --per_device_train_batch_size, use --torch_dtype bfloat16, or a smaller --shape";
        ensure_cpu_fits(device, "this benchmark", &estimate, advice)?;
    }
    run_on(device, numerics, args)
}

impl BackendTask for BenchArgs {
    type Output = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        bench_on(be, self)
    }
}

fn bench_on<B: Backend>(be: &B, args: BenchArgs) -> Result<()> {
    let mut model = match (&args.model, &args.shape) {
        (Some(dir), _) => QwenModel::load(be, dir)?,
        (None, Some(shape)) => QwenModel::random_bf16(be, qtrain_model::shapes::shape(shape)?, 0)?,
        (None, None) => bail!("give --model DIR or --shape NAME"),
    };
    if args.max_length == 0 || args.per_device_train_batch_size == 0 || args.steps == 0 {
        bail!("--max_length, --per_device_train_batch_size and --steps must be positive");
    }
    if args.max_length + args.decode_tokens > model.config.max_position_embeddings {
        bail!("--max_length + --decode_tokens exceeds the model's max_position_embeddings {}", model.config.max_position_embeddings);
    }
    let opts = BenchOptions {
        seq_len: args.max_length,
        batch: args.per_device_train_batch_size,
        steps: args.steps,
        decode_tokens: args.decode_tokens,
        lora_rank: args.lora_rank,
        gradient_checkpointing: args.gradient_checkpointing,
    };
    let mut report = BenchReport::default();
    match args.what.as_str() {
        "infer" => bench_inference(&model, be, &opts, &mut report)?,
        "train" => bench_lora_train(&mut model, be, &opts, &mut report)?,
        "all" => {
            bench_inference(&model, be, &opts, &mut report)?;
            bench_lora_train(&mut model, be, &opts, &mut report)?;
        }
        other => bail!("--what must be infer, train or all, got {other:?}"),
    }
    let peak_rss_gib = qtrain_train::metrics::peak_memory_gib();
    if args.json {
        println!("{}", serde_json::json!({"device": be.name(), "options": opts, "report": report, "peak_rss_gib": peak_rss_gib}));
        return Ok(());
    }
    let cfg = &model.config;
    println!("device: {}", be.name());
    println!(
        "model: {} layers, hidden {}, {:.1} M parameters; batch {} × {} tokens",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_parameters() as f64 / 1e6,
        opts.batch,
        opts.seq_len
    );
    let show = |name: &str, v: Option<f64>, unit: &str| {
        if let Some(v) = v {
            println!("  {name:<26} {v:>12.1} {unit}");
        }
    };
    show("prefill", report.prefill_tokens_per_s, "tokens/s");
    show("decode (KV cache)", report.decode_tokens_per_s, "tokens/s");
    show("LoRA train step", report.train_tokens_per_s, "tokens/s");
    show("LoRA train step, mean", report.train_step_seconds.map(|s| s * 1e3), "ms/step");
    show("LoRA train step, median", report.train_step_seconds_median.map(|s| s * 1e3), "ms/step");
    show("LoRA train step, fastest", report.train_step_seconds_min.map(|s| s * 1e3), "ms/step");
    show("LoRA train matmul rate", report.train_tflops.map(|t| t * 1e3), "GFLOP/s");
    if let Some(g) = peak_rss_gib {
        println!("  {:<26} {g:>12.2} GiB", "peak resident memory");
    }
    if let Some(b) = report.train_device_peak_bytes {
        println!("  {:<26} {:>12.2} GiB", "LoRA train peak device memory", b as f64 / (1u64 << 30) as f64);
    }
    for (title, rows) in [("device time per phase", &report.train_phase_ms), ("device time per op kind", &report.train_op_ms)] {
        if let Some(rows) = rows {
            println!("  {title} (one profiled step):");
            rows.iter().for_each(|(name, ms)| println!("    {name:<24} {ms:>12.1} ms"));
        }
    }
    Ok(())
}
