//! `qtrain infer`: answer with a model folder, optionally with a PEFT adapter — one question
//! (`--prompt`) or an interactive chat ([`chat`]), or every row of a dataset (`--val_dataset`,
//! `--load_data_args`) into a JSONL result file ([`batch`]), as `swift infer` does.

mod batch;
mod chat;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Args};

use qtrain_chat::{ChatOptions, ModelFolder};
use qtrain_core::Backend;

use super::device::{cpu_weight_bytes, ensure_cpu_fits, model_config, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_model::SamplingParams;

/// `--infer_backend` values: ms-swift's engines. qtrain runs every one of them on its own engine.
const INFER_BACKENDS: [&str; 4] = ["pt", "vllm", "sglang", "lmdeploy"];

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct InferArgs {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    /// Default: the embedded tiny model (see `qtrain train` without --model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    /// Merge the adapter into the base weights in memory (same replies, one product less per layer).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub merge_lora: bool,
    /// System prompt (default: the chat template's own default, if any). In batch mode it goes
    /// to the rows that have no system message of their own.
    #[arg(long)]
    pub system: Option<String>,
    /// Ask one question, print only the reply on stdout and exit. Without it (and without a
    /// dataset): interactive chat.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Batch inference over these datasets (same syntax as `train --dataset`: FILE, FILE#N):
    /// each row's last assistant turn is the reference, the model answers the turns before it.
    #[arg(long, num_args = 1..)]
    pub val_dataset: Vec<String>,
    /// Batch inference over the training run's own validation split (`val_dataset.jsonl` in the
    /// run folder above the --adapters checkpoint).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub load_data_args: bool,
    /// Batch inference results, one JSON object per row. Default:
    /// `<adapters or result/<model name>>/infer_result/<YYYYMMDD-HHMMSS>.jsonl`, as ms-swift.
    #[arg(long)]
    pub result_path: Option<PathBuf>,
    /// Rows generated together in batch inference.
    #[arg(long, default_value_t = 1)]
    pub max_batch_size: usize,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Tokens of prompt + reply at most (default: the model's max_position_embeddings). A chat
    /// that outgrows it drops its oldest turns.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// 0 = greedy. Default: generation_config.json's value (greedy if it does not sample).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// 0 = off. Default: generation_config.json.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// 1 = off. Default: generation_config.json.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// 0 = off. Default: generation_config.json.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// 1 = off. Default: generation_config.json.
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Qwen3 thinking switch (passed to the chat template as `enable_thinking`).
    #[arg(long, action = ArgAction::Set)]
    pub enable_thinking: Option<bool>,
    /// Print the reply as it is generated (chat and --prompt).
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub stream: bool,
    /// cpu | cuda | cuda:N | auto (CUDA when usable).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto | bfloat16 | float16 | float32 (auto: the model's config.json `torch_dtype`). On the
    /// CPU, bfloat16 keeps the weights in bf16 and runs bf16 × bf16 → f32 products.
    #[arg(long, default_value = "auto")]
    pub torch_dtype: String,
    /// Checked against config.json's architecture (e.g. qwen2_5, qwen3).
    #[arg(long)]
    pub model_type: Option<String>,
    /// pt | vllm | sglang | lmdeploy: accepted; qtrain has one engine and uses it for all.
    #[arg(long, default_value = "pt")]
    pub infer_backend: String,
}

impl InferArgs {
    /// Whether this is batch inference (a dataset to answer) rather than a chat.
    fn is_batch(&self) -> bool {
        !self.val_dataset.is_empty() || self.load_data_args
    }

    /// Flag combinations that cannot work, refused before any model is loaded.
    fn check(&self) -> Result<()> {
        if !INFER_BACKENDS.contains(&self.infer_backend.as_str()) {
            bail!("--infer_backend {}: expected one of {}", self.infer_backend, INFER_BACKENDS.join(", "));
        }
        if self.infer_backend != "pt" {
            eprintln!("[qtrain] --infer_backend {}: qtrain has one inference engine (its own); using it", self.infer_backend);
        }
        if self.merge_lora && self.adapters.is_none() {
            bail!("--merge_lora true needs an adapter to merge: give --adapters <checkpoint>");
        }
        if self.max_batch_size == 0 {
            bail!("--max_batch_size must be at least 1");
        }
        if self.max_length == Some(0) {
            bail!("--max_length must be at least 1");
        }
        if self.is_batch() && self.prompt.is_some() {
            bail!("--prompt asks one question; --val_dataset / --load_data_args answer a dataset: give one or the other");
        }
        Ok(())
    }
}

pub fn run(mut args: InferArgs) -> Result<()> {
    let device = resolve(&args.device)?;
    (args.model, args.adapters) = super::checkpoint_model(args.model.take(), args.adapters.take())?;
    args.check()?;
    let cfg = args.model.as_deref().and_then(model_config);
    let numerics = Numerics::resolve(&args.torch_dtype, cfg.as_ref().and_then(stated_dtype), false)?;
    if let Some(cfg) = cfg {
        // Prompts of up to 512 tokens plus the reply, --max_batch_size sequences in batch mode.
        let rows = if args.is_batch() { args.max_batch_size as u64 } else { 1 };
        let tokens = (512 + args.max_new_tokens as u64).min(cfg.max_position_embeddings as u64);
        let estimate = MemoryEstimate::inference(Target::Cpu, &cfg, rows, tokens.min(512), tokens, cpu_weight_bytes(numerics));
        ensure_cpu_fits(device, "loading this model", &estimate, "use a smaller --max_new_tokens (its KV cache is part of this), --torch_dtype bfloat16 (2 bytes per parameter) or a smaller model")?;
    }
    run_on(device, numerics, args)
}

impl BackendTask for InferArgs {
    type Output = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let folder = load_folder(be, &self)?;
        let sampling = chat_sampling(&self, &folder);
        sampling.validate().map_err(anyhow::Error::msg)?;
        eprintln!("[qtrain] sampling: {sampling}, seed {}", self.seed);
        let options = ChatOptions {
            system: self.system.clone(),
            enable_thinking: self.enable_thinking,
            sampling,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            context_limit: self.max_length,
        };
        if self.is_batch() {
            batch::run(be, &folder, &self, &options)
        } else {
            chat::run(be, &folder, &self, options)
        }
    }
}

/// The model folder with the adapter attached (or merged), checked against --model_type.
fn load_folder<B: Backend>(be: &B, args: &InferArgs) -> Result<ModelFolder<B>> {
    let t0 = std::time::Instant::now();
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let dir = qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?;
            eprintln!("[qtrain] no --model given: using the embedded tiny model at {}", dir.display());
            dir
        }
    };
    let mut folder = ModelFolder::load(be, &model_dir)?;
    let cfg = &folder.model.config;
    if let Some(t) = &args.model_type {
        if !cfg.architecture.accepts_model_type(t) {
            bail!("--model_type {t} does not match the model folder ({} in config.json)", cfg.architecture.hf_class());
        }
    }
    eprintln!(
        "[qtrain] {} from {}: {} layers, hidden {}, {:.1} M parameters, on {} ({:.2}s)",
        cfg.architecture.hf_class(),
        model_dir.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_parameters() as f64 / 1e6,
        be.name(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(dir) = &args.adapters {
        let adapter = folder.attach_adapter(be, dir)?;
        let (r, alpha, modules) = (adapter.config.r, adapter.config.lora_alpha, adapter.weights.len());
        if args.merge_lora {
            let merged = folder.merge_adapter(be)?;
            eprintln!("[qtrain] adapter {}: r={r}, alpha={alpha}, {merged} modules merged into the weights in memory", dir.display());
        } else {
            eprintln!("[qtrain] adapter {}: r={r}, alpha={alpha}, {modules} modules", dir.display());
        }
    }
    Ok(folder)
}

fn chat_sampling<B: Backend>(args: &InferArgs, folder: &ModelFolder<B>) -> SamplingParams {
    let d = folder.default_sampling();
    SamplingParams {
        temperature: args.temperature.unwrap_or(d.temperature),
        top_k: args.top_k.unwrap_or(d.top_k),
        top_p: args.top_p.unwrap_or(d.top_p),
        min_p: args.min_p.unwrap_or(d.min_p),
        repetition_penalty: args.repetition_penalty.unwrap_or(d.repetition_penalty),
    }
}
