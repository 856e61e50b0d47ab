//! `qtrain info`: what a model folder holds and what training it would cost.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use qtrain_model::memory::MemoryEstimate;
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::QwenConfig;

use super::gib;

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct InfoArgs {
    /// Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Sequence length for the memory estimate.
    #[arg(long, default_value_t = 2048)]
    pub max_length: u64,
    /// Batch size for the memory estimate.
    #[arg(long, default_value_t = 1)]
    pub per_device_train_batch_size: u64,
    /// LoRA rank for the memory estimate (all-linear targets).
    #[arg(long, default_value_t = 8)]
    pub lora_rank: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let config_path = args.model.join("config.json");
    let cfg = QwenConfig::from_file(&config_path)?;
    // Open (and validate) the checkpoint so `info` also tells whether the weights fit the config.
    let store = SafetensorsStore::open_model_folder(&args.model).with_context(|| format!("reading weights of {}", args.model.display()))?;
    store.check(&cfg.expected_tensors(), |n| cfg.tie_word_embeddings && n == "lm_head.weight")?;
    let stored_dtype = store.dtype("model.embed_tokens.weight")?;
    let tokens = args.max_length * args.per_device_train_batch_size;
    let lora = MemoryEstimate::lora(&cfg, tokens, args.lora_rank);
    let full = MemoryEstimate::full(&cfg, tokens);
    if args.json {
        let v = serde_json::json!({
            "config": cfg, "parameters": cfg.num_parameters(), "stored_dtype": stored_dtype.hf_name(),
            "tokens_per_step": tokens, "lora_rank": args.lora_rank, "lora_memory": lora, "full_memory": full,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model:        {}", args.model.display());
    println!("architecture: {} ({:?})", cfg.architecture.hf_class(), cfg.architecture);
    println!("layers:       {}, hidden {}, intermediate {}", cfg.num_layers, cfg.hidden_size, cfg.intermediate_size);
    println!(
        "attention:    {} query heads, {} key/value heads, head_dim {}, q/k/v bias {}, o bias {}, q/k norm {}",
        cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.qkv_bias, cfg.o_bias, cfg.qk_norm
    );
    println!("vocab:        {} (embeddings {})", cfg.vocab_size, if cfg.tie_word_embeddings { "tied" } else { "untied" });
    println!("rope:         theta {}, max positions {}", cfg.rope_theta, cfg.max_position_embeddings);
    println!("parameters:   {} ({:.3} B), stored as {}", cfg.num_parameters(), cfg.num_parameters() as f64 / 1e9, stored_dtype.hf_name());
    println!();
    println!(
        "predicted GPU memory for one step of {} tokens (batch {} × {}), gradient checkpointing on:",
        tokens, args.per_device_train_batch_size, args.max_length
    );
    println!("  LoRA r={} all-linear: {} trainable parameters", args.lora_rank, lora.trainable_parameters);
    for (what, bytes) in [
        ("frozen weights (bf16)", lora.frozen_weights_bytes),
        ("LoRA weights, grads, AdamW moments (f32)", lora.trainable_state_bytes),
        ("checkpointed layer inputs (bf16)", lora.checkpoint_bytes),
        ("one layer's recompute activations", lora.layer_activation_bytes),
        ("one LM-head + loss chunk (f32)", lora.lm_head_chunk_bytes),
    ] {
        println!("    {what:<42} {}", gib(bytes));
    }
    println!("    {:<42} {}", "total", gib(lora.total_bytes));
    println!("  full fine-tuning (f32 weights, grads, moments): {}", gib(full.total_bytes));
    Ok(())
}
