//! `qtrain info`: what a model folder (or a published shape) holds, and the memory inference and
//! training would take on a GPU and on this machine's CPU — predicted from `config.json` alone,
//! so it answers before anything is downloaded or allocated.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use qtrain_core::DType;
use qtrain_model::memory::{available_bytes, MemoryEstimate, Target};
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::QwenConfig;

use super::gib;

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct InfoArgs {
    /// Hugging Face model folder (config.json is enough; weights, when present, are checked too).
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<PathBuf>,
    /// A published shape instead of a folder: bench-small, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen3-0.6b, qwen3-8b.
    #[arg(long)]
    pub shape: Option<String>,
    /// Sequence length for the estimates.
    #[arg(long, default_value_t = 2048)]
    pub max_length: u64,
    /// Batch size for the estimates.
    #[arg(long, default_value_t = 1)]
    pub per_device_train_batch_size: u64,
    /// LoRA rank for the estimates (all-linear targets).
    #[arg(long, default_value_t = 8)]
    pub lora_rank: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The predictions `info` prints, per target.
struct Predictions {
    gpu_lora: MemoryEstimate,
    gpu_full: MemoryEstimate,
    gpu_infer: MemoryEstimate,
    cpu_lora: MemoryEstimate,
    cpu_infer: MemoryEstimate,
    cpu_full: MemoryEstimate,
}

fn predict(cfg: &QwenConfig, args: &InfoArgs) -> Predictions {
    let (batch, len) = (args.per_device_train_batch_size, args.max_length);
    let tokens = batch * len;
    Predictions {
        gpu_lora: MemoryEstimate::lora(cfg, tokens, args.lora_rank),
        gpu_full: MemoryEstimate::full(cfg, tokens),
        gpu_infer: MemoryEstimate::inference(Target::Gpu, cfg, batch, len, len, 2),
        cpu_lora: MemoryEstimate::lora_on(Target::Cpu, cfg, tokens, args.lora_rank, 2),
        cpu_infer: MemoryEstimate::inference(Target::Cpu, cfg, batch, len, len, 2),
        cpu_full: MemoryEstimate::full_on(Target::Cpu, cfg, tokens),
    }
}

pub fn run(args: InfoArgs) -> Result<()> {
    let (name, cfg, stored_dtype) = match (&args.model, &args.shape) {
        (Some(dir), _) => {
            let cfg = QwenConfig::from_file(&dir.join("config.json"))?;
            (dir.display().to_string(), cfg.clone(), stored_dtype(dir, &cfg)?)
        }
        (None, Some(shape)) => (format!("shape {shape}"), qtrain_model::shapes::shape(shape)?, None),
        (None, None) => bail!("give --model DIR (a folder with config.json) or --shape NAME"),
    };
    let p = predict(&cfg, &args);
    let tokens = args.max_length * args.per_device_train_batch_size;
    let available = available_bytes();
    if args.json {
        let v = serde_json::json!({
            "config": cfg, "parameters": cfg.num_parameters(), "stored_dtype": stored_dtype.map(DType::hf_name),
            "tokens_per_step": tokens, "lora_rank": args.lora_rank,
            "lora_memory": p.gpu_lora, "full_memory": p.gpu_full, "inference_memory": p.gpu_infer,
            "cpu": {"lora_memory": p.cpu_lora, "full_memory": p.cpu_full, "inference_memory": p.cpu_infer, "available_bytes": available},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model:        {name}");
    println!("architecture: {} ({:?})", cfg.architecture.hf_class(), cfg.architecture);
    println!("layers:       {}, hidden {}, intermediate {}", cfg.num_layers, cfg.hidden_size, cfg.intermediate_size);
    println!(
        "attention:    {} query heads, {} key/value heads, head_dim {}, q/k/v bias {}, o bias {}, q/k norm {}",
        cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias, cfg.o_bias, cfg.qk_norm
    );
    println!("vocab:        {} (embeddings {})", cfg.vocab_size, if cfg.tie_word_embeddings { "tied" } else { "untied" });
    println!("rope:         theta {}, max positions {}", cfg.rope_theta, cfg.max_position_embeddings);
    let stored = stored_dtype.map(|d| format!(", stored as {}", d.hf_name())).unwrap_or_default();
    println!("parameters:   {} ({:.3} B){stored}", cfg.num_parameters(), cfg.num_parameters() as f64 / 1e9);
    println!();
    println!(
        "predicted memory, {} tokens (batch {} × {}), gradient checkpointing on, bf16 weights:",
        tokens, args.per_device_train_batch_size, args.max_length
    );
    println!("  LoRA r={} all-linear: {} trainable parameters", args.lora_rank, p.gpu_lora.trainable_parameters);
    for (what, bytes) in [
        ("frozen weights (bf16)", p.gpu_lora.frozen_weights_bytes),
        ("LoRA weights, grads, AdamW moments (f32)", p.gpu_lora.trainable_state_bytes),
        ("checkpointed layer inputs (bf16)", p.gpu_lora.checkpoint_bytes),
        ("one layer's recompute activations", p.gpu_lora.layer_activation_bytes),
        ("one LM-head + loss chunk (f32)", p.gpu_lora.lm_head_chunk_bytes),
        ("rotary tables, process", p.gpu_lora.runtime_bytes),
    ] {
        println!("    {what:<42} {}", gib(bytes));
    }
    println!("  {:<44} {:>10} {:>10}", "", "GPU", "CPU");
    for (what, gpu, cpu) in [
        ("inference (prefill + KV cache)", &p.gpu_infer, &p.cpu_infer),
        ("LoRA training step", &p.gpu_lora, &p.cpu_lora),
        ("full fine-tuning step (f32 masters)", &p.gpu_full, &p.cpu_full),
    ] {
        println!("  {what:<44} {:>10} {:>10}", gib(gpu.total_bytes), gib(cpu.total_bytes));
    }
    if let Some(avail) = available {
        println!("  (this machine has {} available; the CPU keeps activations in f32)", gib(avail));
    }
    Ok(())
}

/// The weights' stored dtype when the folder has them (validated against the config), `None`
/// for a folder with only `config.json`.
fn stored_dtype(dir: &std::path::Path, cfg: &QwenConfig) -> Result<Option<DType>> {
    let has_weights = dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists();
    if !has_weights {
        return Ok(None);
    }
    let store = SafetensorsStore::open_model_folder(dir).with_context(|| format!("reading weights of {}", dir.display()))?;
    store.check(&cfg.expected_tensors(), |n| cfg.tie_word_embeddings && n == "lm_head.weight")?;
    Ok(Some(store.dtype("model.embed_tokens.weight")?))
}
