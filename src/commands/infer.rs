//! `qtrain infer`: chat with a model folder, optionally with a PEFT adapter.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgAction, Args};

use qtrain_chat::{Chat, ChatOptions, ModelFolder};
use qtrain_core::Backend;

use super::device::{cpu_weight_bytes, ensure_cpu_fits, model_config, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_model::SamplingParams;

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
    /// System prompt (default: the chat template's own default, if any).
    #[arg(long)]
    pub system: Option<String>,
    /// Ask one question, print only the reply on stdout and exit. Without it: interactive chat.
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
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
    /// Print the reply as it is generated.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub stream: bool,
    /// cpu | cuda | cuda:N | auto (CUDA when usable).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto | bfloat16 | float16 | float32 (auto: the model's config.json `torch_dtype`). On the
    /// CPU, bfloat16 keeps the weights in bf16 and runs bf16 × bf16 → f32 products.
    #[arg(long, default_value = "auto")]
    pub torch_dtype: String,
}

pub fn run(args: InferArgs) -> Result<()> {
    let device = resolve(&args.device)?;
    let cfg = args.model.as_deref().and_then(model_config);
    let numerics = Numerics::resolve(&args.torch_dtype, cfg.as_ref().and_then(stated_dtype), false)?;
    if let Some(cfg) = cfg {
        // A prompt of up to 512 tokens plus the reply, one sequence.
        let tokens = (512 + args.max_new_tokens as u64).min(cfg.max_position_embeddings as u64);
        let estimate = MemoryEstimate::inference(Target::Cpu, &cfg, 1, tokens.min(512), tokens, cpu_weight_bytes(numerics));
        ensure_cpu_fits(device, "loading this model", &estimate, "use a smaller --max_new_tokens (its KV cache is part of this), --torch_dtype bfloat16 (2 bytes per parameter) or a smaller model")?;
    }
    run_on(device, numerics, args)
}

impl BackendTask for InferArgs {
    type Output = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        infer_on(be, self)
    }
}

fn infer_on<B: Backend>(be: &B, args: InferArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let dir = qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?;
            eprintln!("[qtrain] no --model given: using the embedded tiny model at {}", dir.display());
            dir
        }
    };
    let mut folder = ModelFolder::load(be, &model_dir).context("cannot load the model folder")?;
    let cfg = &folder.model.config;
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
        let adapter = folder.attach_adapter(be, dir).context("cannot load the adapter")?;
        eprintln!(
            "[qtrain] adapter {}: r={}, alpha={}, {} modules",
            dir.display(),
            adapter.config.r,
            adapter.config.lora_alpha,
            adapter.weights.len()
        );
    }
    let sampling = chat_sampling(&args, &folder);
    sampling.validate().map_err(anyhow::Error::msg)?;
    eprintln!("[qtrain] sampling: {sampling:?}, seed {}", args.seed);
    let new_chat = || {
        Chat::new(
            &folder,
            be,
            ChatOptions {
                system: args.system.clone(),
                enable_thinking: args.enable_thinking,
                sampling: sampling.clone(),
                max_new_tokens: args.max_new_tokens,
                seed: args.seed,
            },
        )
    };
    let mut chat = new_chat()?;
    let stdout = std::io::stdout();
    let turn = |chat: &mut Chat<'_, B>, text: &str| -> Result<()> {
        let mut out = stdout.lock();
        let reply = chat.send(text, |piece| {
            if args.stream {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        })?;
        if !args.stream {
            out.write_all(reply.text.as_bytes())?;
        }
        writeln!(out)?;
        let g = &reply.generation;
        eprintln!(
            "[qtrain] {} prompt tokens, {} new tokens ({:?}); prefill {:.2}s, decode {:.1} tokens/s",
            reply.prompt_tokens,
            g.tokens.len(),
            g.stop,
            g.prefill_time.as_secs_f64(),
            g.decode_tokens_per_second()
        );
        Ok(())
    };
    if let Some(prompt) = &args.prompt {
        return turn(&mut chat, prompt);
    }
    eprintln!("[qtrain] interactive chat: type a message; /clear starts over, /exit (or end of input) quits.");
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("user> ");
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                chat = new_chat()?;
                eprintln!("[qtrain] conversation cleared");
            }
            text => turn(&mut chat, text)?,
        }
    }
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
