//! `qtrain train`: flags (ms-swift's names) → [`TrainArgs`] → the recipe in `qtrain-train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Args};

use qtrain_core::CpuBackend;
use qtrain_train::{InitLoraWeights, TrainArgs, TruncationStrategy, TunerType};

/// Every flag is optional; an unset flag keeps ms-swift's default (see `TrainArgs`).
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct TrainCliArgs {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset files: JSONL (one {"messages": [...]} per line) or a JSON array of such objects.
    #[arg(long, num_args = 1.., required = true)]
    pub dataset: Vec<PathBuf>,
    /// Runs go to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS/ [default: output].
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// lora | full [default: lora].
    #[arg(long, alias = "train_type")]
    pub tuner_type: Option<TunerType>,
    /// Continue training this PEFT adapter (its r, alpha and targets win).
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    /// [default: 8]
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// [default: 32]
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// [default: 0.05]
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Module names, or all-linear [default: all-linear].
    #[arg(long, num_args = 1..)]
    pub target_modules: Option<Vec<String>>,
    /// Regular expression over full module names (overrides --target_modules).
    #[arg(long)]
    pub target_regex: Option<String>,
    #[arg(long, action = ArgAction::Set)]
    pub use_rslora: Option<bool>,
    /// true (kaiming-uniform A) | gaussian [default: true].
    #[arg(long)]
    pub init_lora_weights: Option<InitLoraWeights>,
    /// [default: 1e-4 for LoRA, 1e-5 for full]
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// [default: 3]
    #[arg(long)]
    pub num_train_epochs: Option<f64>,
    /// Optimizer steps; -1 derives them from the epochs [default: -1].
    #[arg(long, allow_hyphen_values = true)]
    pub max_steps: Option<i64>,
    /// [default: 1]
    #[arg(long)]
    pub per_device_train_batch_size: Option<usize>,
    /// [default: ceil(16 / per_device_train_batch_size)]
    #[arg(long)]
    pub gradient_accumulation_steps: Option<usize>,
    /// constant | constant_with_warmup | linear | cosine | polynomial [default: cosine].
    #[arg(long)]
    pub lr_scheduler_type: Option<String>,
    /// [default: 0]
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Wins over --warmup_ratio when > 0 [default: 0].
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// [default: 0.1]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// [default: 0.9]
    #[arg(long)]
    pub adam_beta1: Option<f64>,
    /// [default: 0.95]
    #[arg(long)]
    pub adam_beta2: Option<f64>,
    /// [default: 1e-8]
    #[arg(long)]
    pub adam_epsilon: Option<f64>,
    /// 0 disables clipping [default: 1].
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// [default: true]
    #[arg(long, action = ArgAction::Set)]
    pub gradient_checkpointing: Option<bool>,
    /// [default: 5]
    #[arg(long)]
    pub logging_steps: Option<u64>,
    /// [default: 500]
    #[arg(long)]
    pub save_steps: Option<u64>,
    /// [default: 42]
    #[arg(long)]
    pub seed: Option<u64>,
    /// [default: true]
    #[arg(long, action = ArgAction::Set)]
    pub dataset_shuffle: Option<bool>,
    /// [default: true]
    #[arg(long, action = ArgAction::Set)]
    pub train_dataloader_shuffle: Option<bool>,
    /// [default: the model's max_position_embeddings]
    #[arg(long)]
    pub max_length: Option<usize>,
    /// delete | left | right [default: delete].
    #[arg(long)]
    pub truncation_strategy: Option<TruncationStrategy>,
    /// System prompt for conversations without one.
    #[arg(long)]
    pub system: Option<String>,
}

impl TrainCliArgs {
    /// The flags over ms-swift's defaults.
    pub fn into_train_args(self) -> TrainArgs {
        let mut a = TrainArgs { model: self.model, dataset: self.dataset, ..TrainArgs::default() };
        macro_rules! set {
            ($($field:ident),* $(,)?) => { $( if let Some(v) = self.$field { a.$field = v; } )* };
        }
        macro_rules! set_opt {
            ($($field:ident),* $(,)?) => { $( if self.$field.is_some() { a.$field = self.$field; } )* };
        }
        set!(
            output_dir,
            tuner_type,
            lora_rank,
            lora_alpha,
            lora_dropout,
            target_modules,
            use_rslora,
            init_lora_weights,
            num_train_epochs,
            max_steps,
            per_device_train_batch_size,
            lr_scheduler_type,
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
            seed,
            dataset_shuffle,
            train_dataloader_shuffle,
            truncation_strategy,
        );
        set_opt!(adapters, target_regex, learning_rate, gradient_accumulation_steps, max_length, system);
        a
    }
}

pub fn run(args: TrainCliArgs) -> Result<()> {
    let be = CpuBackend::new();
    let summary = qtrain_train::train(&be, args.into_train_args())?;
    // The last checkpoint on stdout, so scripts can pick it up.
    println!("{}", summary.last_checkpoint.display());
    Ok(())
}
