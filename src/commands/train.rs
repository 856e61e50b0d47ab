//! `qtrain train`: flags (ms-swift's names) and an optional `--config` TOML file →
//! [`TrainArgs`] → the recipe in `qtrain-train`. Precedence: command line > config file >
//! ms-swift's defaults. Ctrl-C / SIGTERM ask the run to save a checkpoint and stop (a second
//! one exits at once); the process then exits with status 130.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::device::{cpu_weight_bytes, ensure_cpu_fits, model_config, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_train::{RunControl, StopReason, TrainArgs, TrainArgsFlags, TrainCommand};

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

/// `--config` and the flags of every [`TrainArgs`] field (declared once, in `qtrain_train::args`).
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct TrainFlags {
    /// TOML file whose keys are these flags' names (`learning_rate = 1e-4`, `dataset = ["a.jsonl"]`);
    /// flags given on the command line win. Unknown keys are errors.
    #[arg(long, help_heading = "Config")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub args: TrainArgsFlags,
}

/// The preset used without --model and --config (its first line is the command that runs it).
pub const EMBEDDED_PRESET: &str = include_str!("../../presets/embedded-self-cognition.toml");
pub const EMBEDDED_PRESET_NAME: &str = "presets/embedded-self-cognition.toml";

impl TrainFlags {
    /// The config file (if any) under the command-line flags, over ms-swift's defaults.
    pub fn into_train_args(self) -> Result<TrainArgs> {
        self.into_args_for(TrainCommand::Train)
    }

    /// The config file (if any) under the command-line flags, over `command`'s defaults.
    pub fn into_args_for(self, command: TrainCommand) -> Result<TrainArgs> {
        // `qtrain train` with neither --model nor --config: the embedded tiny model with the self-cognition preset.
        let embedded = command == TrainCommand::Train && self.config.is_none() && self.args.model.is_none();
        let mut a = match &self.config {
            Some(path) => TrainArgs::from_toml_file_for(command, path)?,
            None if embedded => TrainArgs::from_toml_str(EMBEDDED_PRESET, std::path::Path::new(EMBEDDED_PRESET_NAME))?,
            None => TrainArgs::defaults_for(command),
        };
        if embedded {
            let dir = qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?;
            eprintln!(
                "[qtrain] no --model: fine-tuning the embedded tiny model at {} with the preset {EMBEDDED_PRESET_NAME} (command-line flags override it)",
                dir.display()
            );
            a.model = dir;
        }
        self.args.apply(&mut a);
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
    run_command(args, TrainCommand::Train)
}

/// `qtrain train` or `qtrain pt`: the same run, with `command`'s defaults.
pub fn run_command(args: TrainCliArgs, command: TrainCommand) -> Result<()> {
    let train_args = args.flags.into_args_for(command)?;
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
    let cfg = model_config(&train_args.model);
    let numerics = Numerics::resolve(train_args.torch_dtype.as_deref().unwrap_or("auto"), cfg.as_ref().and_then(stated_dtype), full)?;
    if let Some(cfg) = cfg {
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
