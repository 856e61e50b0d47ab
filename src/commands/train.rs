//! `qtrain train`: flags (ms-swift's names) and an optional `--config` TOML file →
//! [`TrainArgs`] → the recipe in `qtrain-train`. Precedence: command line > config file >
//! ms-swift's defaults. Ctrl-C / SIGTERM ask the run to save a checkpoint and stop (a second
//! one exits at once); the process then exits with status 130.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Args};

use super::device::{checkpoint_dtype, cpu_weight_bytes, ensure_cpu_fits, resolve, run_on, BackendTask, Numerics};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_train::{InitLoraWeights, RunControl, SchedulerKwargs, StopReason, TrainArgs, TruncationStrategy, TunerType};

/// `qtrain train`'s flags, boxed: the flag set is large, and a `Command` enum variant holding it
/// inline would make every other subcommand's value as big (clippy's `large_enum_variant`).
#[derive(Args, Debug)]
pub struct TrainCliArgs {
    #[command(flatten)]
    pub flags: Box<TrainFlags>,
    /// cpu | cuda | cuda:N | auto (CUDA when usable, else CPU; said in the log).
    #[arg(long, default_value = "auto", help_heading = "Model and output")]
    pub device: String,
}

/// One training run on whichever backend `--device` selects.
struct TrainTask {
    args: TrainArgs,
    control: RunControl,
}

impl BackendTask for TrainTask {
    type Output = qtrain_train::TrainSummary;
    fn run<B: qtrain_core::Backend>(self, be: &B) -> Result<Self::Output> {
        Ok(qtrain_train::train_with(be, self.args, &self.control)?)
    }
}

/// Every flag is optional; an unset flag keeps the config file's value, else ms-swift's default.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct TrainFlags {
    /// TOML file whose keys are these flags' names (`learning_rate = 1e-4`, `dataset = ["a.jsonl"]`);
    /// flags given on the command line win. Unknown keys are errors.
    #[arg(long, help_heading = "Config")]
    pub config: Option<PathBuf>,

    // ---- model and output ----------------------------------------------------------------
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    /// Without --model and --config: the embedded tiny model and presets/embedded-self-cognition.toml.
    #[arg(long, help_heading = "Model and output")]
    pub model: Option<PathBuf>,
    /// Runs go to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS/ [default: output].
    #[arg(long, help_heading = "Model and output")]
    pub output_dir: Option<PathBuf>,
    /// lora | full [default: lora].
    #[arg(long, alias = "train_type", help_heading = "Model and output")]
    pub tuner_type: Option<TunerType>,
    /// Continue training this PEFT adapter (its r, alpha and targets win).
    #[arg(long, help_heading = "Model and output")]
    pub adapters: Option<PathBuf>,
    /// A checkpoint-N folder of an earlier run: continue bit-exactly from its step (weights,
    /// optimizer, scheduler, RNG and data position are restored) in a new run folder.
    #[arg(long, help_heading = "Model and output")]
    pub resume_from_checkpoint: Option<PathBuf>,

    // ---- data ------------------------------------------------------------------------------
    /// Datasets: JSON/JSONL files (messages, ShareGPT conversations, Alpaca, query/response rows;
    /// detected per row), FILE#N for N rows, self-cognition[#N] (uses --model_name/--model_author).
    #[arg(long, num_args = 1.., help_heading = "Data")]
    pub dataset: Option<Vec<String>>,
    /// Validation datasets (same syntax), evaluated every --eval_steps and at the end.
    #[arg(long, num_args = 1.., help_heading = "Data")]
    pub val_dataset: Option<Vec<String>>,
    /// Fraction of each training dataset held out (seeded) for validation [default: 0].
    #[arg(long, help_heading = "Data")]
    pub split_dataset_ratio: Option<f64>,
    /// [default: the model's max_position_embeddings, which is also the upper limit]
    #[arg(long, help_heading = "Data")]
    pub max_length: Option<usize>,
    /// Samples longer than --max_length: delete | left (keep the end) | right (keep the start) [default: delete].
    #[arg(long, help_heading = "Data")]
    pub truncation_strategy: Option<TruncationStrategy>,
    /// System prompt for conversations without one (a dataset's own system message wins).
    #[arg(long, help_heading = "Data")]
    pub system: Option<String>,
    /// Which assistant turns are trained on: default (all) | last_round [default: default].
    #[arg(long, help_heading = "Data")]
    pub loss_scale: Option<String>,
    /// true: a malformed dataset row is an error naming file and line; false: skipped and counted [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = "Data")]
    pub strict: Option<bool>,
    /// Name for the self-cognition dataset's {{NAME}}: one value, or two (zh, en).
    #[arg(long, num_args = 1..=2, help_heading = "Data")]
    pub model_name: Option<Vec<String>>,
    /// Author for the self-cognition dataset's {{AUTHOR}}: one value, or two (zh, en).
    #[arg(long, num_args = 1..=2, help_heading = "Data")]
    pub model_author: Option<Vec<String>>,
    /// Pack several samples into each row of up to --max_length tokens (attention, positions and
    /// targets stay within each sample) [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = "Data")]
    pub packing: Option<bool>,
    /// Batches of similar-length samples (seeded mega-batches, as transformers) [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = "Data")]
    pub group_by_length: Option<bool>,
    /// Seed of shuffling, sampling, the validation split, LoRA init and dropout [default: 42].
    #[arg(long, help_heading = "Data")]
    pub seed: Option<u64>,
    /// Shuffle the dataset once after loading (and draw FILE#N subsets at random) [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = "Data")]
    pub dataset_shuffle: Option<bool>,
    /// Reshuffle the order every epoch [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = "Data")]
    pub train_dataloader_shuffle: Option<bool>,

    // ---- LoRA ------------------------------------------------------------------------------
    /// [default: 8]
    #[arg(long, help_heading = "LoRA")]
    pub lora_rank: Option<usize>,
    /// [default: 32]
    #[arg(long, help_heading = "LoRA")]
    pub lora_alpha: Option<f64>,
    /// [default: 0.05]
    #[arg(long, help_heading = "LoRA")]
    pub lora_dropout: Option<f64>,
    /// Module names, or all-linear [default: all-linear].
    #[arg(long, num_args = 1.., help_heading = "LoRA")]
    pub target_modules: Option<Vec<String>>,
    /// Regular expression over full module names (overrides --target_modules).
    #[arg(long, help_heading = "LoRA")]
    pub target_regex: Option<String>,
    /// alpha / sqrt(r) scaling [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = "LoRA")]
    pub use_rslora: Option<bool>,
    /// true (kaiming-uniform A) | gaussian [default: true].
    #[arg(long, help_heading = "LoRA")]
    pub init_lora_weights: Option<InitLoraWeights>,

    // ---- optimisation --------------------------------------------------------------------------
    /// [default: 1e-4 for LoRA, 1e-5 for full]
    #[arg(long, help_heading = "Optimisation")]
    pub learning_rate: Option<f64>,
    /// [default: 3]
    #[arg(long, help_heading = "Optimisation")]
    pub num_train_epochs: Option<f64>,
    /// Optimizer steps; -1 derives them from the epochs [default: -1].
    #[arg(long, allow_hyphen_values = true, help_heading = "Optimisation")]
    pub max_steps: Option<i64>,
    /// [default: 1]
    #[arg(long, help_heading = "Optimisation")]
    pub per_device_train_batch_size: Option<usize>,
    /// [default: 1]
    #[arg(long, help_heading = "Optimisation")]
    pub per_device_eval_batch_size: Option<usize>,
    /// [default: ceil(16 / per_device_train_batch_size)]
    #[arg(long, help_heading = "Optimisation")]
    pub gradient_accumulation_steps: Option<usize>,
    /// constant | constant_with_warmup | linear | cosine | cosine_with_min_lr (needs min_lr or
    /// min_lr_rate) | polynomial (lr_end, power) | exponential (gamma per step, qtrain's own) [default: cosine].
    #[arg(long, help_heading = "Optimisation")]
    pub lr_scheduler_type: Option<String>,
    /// JSON object of schedule arguments, as transformers: '{"min_lr": 1e-6}', '{"min_lr_rate": 0.1}',
    /// '{"lr_end": 1e-7, "power": 1.0}', '{"num_cycles": 0.5}', '{"gamma": 0.99}'.
    #[arg(long, help_heading = "Optimisation")]
    pub lr_scheduler_kwargs: Option<SchedulerKwargs>,
    /// [default: 0]
    #[arg(long, help_heading = "Optimisation")]
    pub warmup_ratio: Option<f64>,
    /// Wins over --warmup_ratio when > 0 [default: 0].
    #[arg(long, help_heading = "Optimisation")]
    pub warmup_steps: Option<u64>,
    /// [default: 0.1]
    #[arg(long, help_heading = "Optimisation")]
    pub weight_decay: Option<f64>,
    /// [default: 0.9]
    #[arg(long, help_heading = "Optimisation")]
    pub adam_beta1: Option<f64>,
    /// [default: 0.95]
    #[arg(long, help_heading = "Optimisation")]
    pub adam_beta2: Option<f64>,
    /// [default: 1e-8]
    #[arg(long, help_heading = "Optimisation")]
    pub adam_epsilon: Option<f64>,
    /// 0 disables clipping [default: 1].
    #[arg(long, help_heading = "Optimisation")]
    pub max_grad_norm: Option<f64>,
    /// [default: true]
    #[arg(long, action = ArgAction::Set, help_heading = "Optimisation")]
    pub gradient_checkpointing: Option<bool>,

    // ---- logging, evaluation, checkpoints --------------------------------------------------------
    /// [default: 5]
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub logging_steps: Option<u64>,
    /// [default: 500]
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub save_steps: Option<u64>,
    /// Evaluate the validation set every N steps and at the end [default: --save_steps].
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub eval_steps: Option<u64>,
    /// Keep at most N checkpoints: the best by eval loss and the newest (2 = best + last) [default: all].
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub save_total_limit: Option<usize>,
    /// Stop after N evaluations without improvement of the eval loss (saves a final checkpoint).
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub early_stopping_patience: Option<u64>,
    /// An improvement must lower the eval loss by more than this [default: 0].
    #[arg(long, help_heading = "Logging, evaluation and checkpoints")]
    pub early_stopping_threshold: Option<f64>,
    /// tensorboard (runs/) | none; other integrations are not available [default: tensorboard].
    #[arg(long, num_args = 1.., help_heading = "Logging, evaluation and checkpoints")]
    pub report_to: Option<Vec<String>>,

    // ---- accepted for ms-swift compatibility ---------------------------------------------------------
    /// Checked; the CPU backend computes in float32 and checkpoints keep the model's stored dtype.
    #[arg(long, help_heading = "Accepted for ms-swift compatibility (each explained in the log)")]
    pub torch_dtype: Option<String>,
    /// Checked against config.json's architecture.
    #[arg(long, help_heading = "Accepted for ms-swift compatibility (each explained in the log)")]
    pub model_type: Option<String>,
    /// No effect: the dataset is tokenized once before training.
    #[arg(long, help_heading = "Accepted for ms-swift compatibility (each explained in the log)")]
    pub dataloader_num_workers: Option<usize>,
    /// No effect: tokenization runs in this process.
    #[arg(long, help_heading = "Accepted for ms-swift compatibility (each explained in the log)")]
    pub dataset_num_proc: Option<usize>,
    /// No effect: one exact attention implementation.
    #[arg(long, help_heading = "Accepted for ms-swift compatibility (each explained in the log)")]
    pub attn_impl: Option<String>,
}

/// The preset used without --model and --config (its first line is the command that runs it).
pub const EMBEDDED_PRESET: &str = include_str!("../../presets/embedded-self-cognition.toml");
pub const EMBEDDED_PRESET_NAME: &str = "presets/embedded-self-cognition.toml";

impl TrainFlags {
    /// The config file (if any) under the command-line flags, over ms-swift's defaults.
    pub fn into_train_args(self) -> Result<TrainArgs> {
        // Neither --model nor --config: the embedded tiny model with the self-cognition preset.
        let embedded = self.config.is_none() && self.model.is_none();
        let mut a = match &self.config {
            Some(path) => TrainArgs::from_toml_file(path)?,
            None if embedded => TrainArgs::from_toml_str(EMBEDDED_PRESET, std::path::Path::new(EMBEDDED_PRESET_NAME))?,
            None => TrainArgs::default(),
        };
        if embedded {
            let dir = qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?;
            eprintln!(
                "[qtrain] no --model: fine-tuning the embedded tiny model at {} with the preset {EMBEDDED_PRESET_NAME} (command-line flags override it)",
                dir.display()
            );
            a.model = dir;
        }
        macro_rules! set {
            ($($field:ident),* $(,)?) => { $( if let Some(v) = self.$field { a.$field = v; } )* };
        }
        macro_rules! set_opt {
            ($($field:ident),* $(,)?) => { $( if self.$field.is_some() { a.$field = self.$field; } )* };
        }
        set!(
            model,
            output_dir,
            tuner_type,
            dataset,
            val_dataset,
            split_dataset_ratio,
            truncation_strategy,
            loss_scale,
            strict,
            model_name,
            model_author,
            packing,
            group_by_length,
            seed,
            dataset_shuffle,
            train_dataloader_shuffle,
            lora_rank,
            lora_alpha,
            lora_dropout,
            target_modules,
            use_rslora,
            init_lora_weights,
            num_train_epochs,
            max_steps,
            per_device_train_batch_size,
            per_device_eval_batch_size,
            lr_scheduler_type,
            lr_scheduler_kwargs,
            warmup_ratio,
            warmup_steps,
            weight_decay,
            adam_beta1,
            adam_beta2,
            adam_epsilon,
            max_grad_norm,
            gradient_checkpointing,
            logging_steps,
            save_steps,
            early_stopping_threshold,
            report_to,
        );
        set_opt!(
            adapters,
            resume_from_checkpoint,
            max_length,
            system,
            target_regex,
            learning_rate,
            gradient_accumulation_steps,
            eval_steps,
            save_total_limit,
            early_stopping_patience,
            torch_dtype,
            model_type,
            dataloader_num_workers,
            dataset_num_proc,
            attn_impl,
        );
        if a.model.as_os_str().is_empty() {
            bail!("--model is required (a Hugging Face model folder), on the command line or as `model` in --config");
        }
        if a.dataset.is_empty() {
            bail!("--dataset is required (JSON/JSONL files, FILE#N or self-cognition), on the command line or as `dataset` in --config");
        }
        Ok(a)
    }
}

pub fn run(args: TrainCliArgs) -> Result<()> {
    let train_args = args.flags.into_train_args()?;
    // Ctrl-C / SIGTERM: finish the step in flight, save a checkpoint, stop. A second one exits now.
    let control = RunControl::new();
    let handler = control.clone();
    ctrlc::set_handler(move || {
        if handler.request_stop() {
            eprintln!("\n[qtrain] second interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\n[qtrain] interrupt received: finishing the current step, then saving a checkpoint (interrupt again to quit at once)");
    })?;
    let device = resolve(&args.device)?;
    let full = train_args.tuner_type == qtrain_train::TunerType::Full;
    let numerics = Numerics::resolve(train_args.torch_dtype.as_deref().unwrap_or("auto"), checkpoint_dtype(&train_args.model), full)?;
    if let Ok(cfg) = qtrain_model::QwenConfig::from_file(&train_args.model.join("config.json")) {
        // Rows of --max_length (512 when unset: samples are usually far shorter than the model's limit).
        let tokens = (train_args.per_device_train_batch_size * train_args.max_length.unwrap_or(512)) as u64;
        let estimate = if full {
            MemoryEstimate::full_on(Target::Cpu, &cfg, tokens)
        } else {
            MemoryEstimate::lora_on(Target::Cpu, &cfg, tokens, train_args.lora_rank as u64, cpu_weight_bytes(numerics))
        };
        let advice = "lower --max_length or --per_device_train_batch_size (raise --gradient_accumulation_steps instead), use LoRA and --torch_dtype bfloat16, or a GPU";
        ensure_cpu_fits(device, "one training step", &estimate, advice)?;
    }
    let summary = match run_on(device, numerics, TrainTask { args: train_args, control }) {
        Err(e) if matches!(e.downcast_ref::<qtrain_train::TrainError>(), Some(qtrain_train::TrainError::Interrupted)) => {
            eprintln!("[qtrain] interrupted before the first optimizer step; nothing was saved");
            std::process::exit(130);
        }
        other => other?,
    };
    // The last checkpoint on stdout, so scripts can pick it up.
    println!("{}", summary.last_checkpoint.display());
    if summary.stop == StopReason::Interrupted {
        std::process::exit(130);
    }
    Ok(())
}
