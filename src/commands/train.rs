//! `qtrain train`: flags (ms-swift's names) and an optional `--config` TOML file →
//! [`TrainArgs`] → the recipe in `qtrain-train`. Precedence: command line > config file >
//! ms-swift's defaults. Ctrl-C / SIGTERM ask the run to save a checkpoint and stop (a second
//! one exits at once); the process then exits with status 130.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::device::{cpu_weight_bytes, ensure_cpu_fits, model_config, resolve, run_on, stated_dtype, BackendTask, Numerics};
use qtrain_model::memory::{MemoryEstimate, Target};
use qtrain_train::{origin, RunControl, StopReason, TrainArgs, TrainArgsFlags, TrainCommand};

/// `qtrain train`'s flags, boxed: the flag set is large, and a `Command` enum variant holding it
/// inline would make every other subcommand's value as big (clippy's `large_enum_variant`).
#[derive(Args, Debug)]
pub struct TrainCliArgs {
    #[command(flatten)]
    pub flags: Box<TrainFlags>,
    /// cpu | cuda | cuda:N | auto (CUDA when usable, else CPU; said in the log).
    #[arg(long, default_value = "auto", help_heading = "Model and output")]
    pub device: String,
    /// Show what the run would do — arguments, datasets, the first sample with its supervised
    /// part, the step plan, a resume's checks — and stop before anything is written.
    #[arg(long = "dry_run", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, help_heading = "Model and output")]
    pub dry_run: Option<bool>,
}

/// `--dry_run`: the run's plan on whichever backend `--device` selects.
struct DryRunTask {
    args: TrainArgs,
}

impl BackendTask for DryRunTask {
    type Output = u64;
    fn run<B: qtrain_core::Backend>(self, be: &B) -> Result<u64> {
        Ok(qtrain_train::dry_run(be, self.args)?)
    }
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

/// The preset of a bare `qtrain train` (its first line is the command that runs it).
pub const EMBEDDED_PRESET: &str = include_str!("../../presets/embedded-self-cognition.toml");
pub const EMBEDDED_PRESET_NAME: &str = "presets/embedded-self-cognition.toml";

impl TrainFlags {
    /// `qtrain train`'s arguments ([`TrainFlags::into_args_for`]).
    pub fn into_train_args(self) -> Result<TrainArgs> {
        self.into_args_for(TrainCommand::Train)
    }

    /// The arguments of the run: the command-line flags over, in this order of precedence, the
    /// `--config` file, or the checkpoint's own `args.json` (`--resume_from_checkpoint` alone
    /// continues the run), or the embedded demo preset (a bare `qtrain train`), or `command`'s
    /// defaults (ms-swift's; `qtrain pt`'s own where the args table says so). Without --model,
    /// the embedded tiny model. The log says which.
    pub fn into_args_for(mut self, command: TrainCommand) -> Result<TrainArgs> {
        if let Some(path) = self.args.resume_from_checkpoint.take() {
            let found = origin::locate(&path, "resume_from_checkpoint")?;
            if let Some(note) = &found.note {
                eprintln!("[qtrain] {note}");
            }
            self.args.resume_from_checkpoint = Some(found.dir);
        }
        let bare = command == TrainCommand::Train
            && self.config.is_none()
            && self.args.model.is_none()
            && self.args.dataset.is_none()
            && self.args.resume_from_checkpoint.is_none();
        let mut a = match (&self.config, &self.args.resume_from_checkpoint) {
            (Some(path), _) => TrainArgs::from_toml_file_for(command, path)?,
            (None, Some(ckpt)) => {
                eprintln!("[qtrain] arguments: the run's own, from {} (flags given here override them)", ckpt.join("args.json").display());
                origin::run_args(ckpt)?
            }
            (None, None) if bare => {
                eprintln!("[qtrain] a bare `qtrain train`: the demo preset {EMBEDDED_PRESET_NAME} (command-line flags override it)");
                TrainArgs::from_toml_str(EMBEDDED_PRESET, std::path::Path::new(EMBEDDED_PRESET_NAME))?
            }
            (None, None) => TrainArgs::defaults_for(command),
        };
        if !bare && self.config.is_none() && self.args.resume_from_checkpoint.is_none() {
            let defaults = if command == TrainCommand::Pt { "qtrain pt's defaults" } else { "ms-swift's defaults" };
            eprintln!("[qtrain] arguments: {defaults} under the flags given");
        }
        if self.config.is_some() && self.args.model.is_none() && a.model.as_os_str().is_empty() {
            // A config file describes a whole run: a missing model there is a mistake, not a demo.
            bail!("--model is required (a Hugging Face model folder), on the command line or as `model` in --config");
        }
        if self.args.model.is_none() && a.model.as_os_str().is_empty() {
            let dir = qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?;
            eprintln!("[qtrain] no --model: fine-tuning the embedded tiny model at {}", dir.display());
            a.model = dir;
        }
        self.args.apply(&mut a);
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
    let load_best = train_args.load_best_model_at_end;
    let full = train_args.tuner_type == qtrain_train::TunerType::Full;
    let cfg = model_config(&train_args.model);
    let dtype = train_args.dtype_flag()?;
    let numerics = Numerics::resolve(dtype.as_deref().unwrap_or("auto"), cfg.as_ref().and_then(stated_dtype), full)?;
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
    if args.dry_run == Some(true) {
        run_on(device, numerics, DryRunTask { args: train_args })?;
        return Ok(());
    }
    let summary = match run_on(device, numerics, TrainTask { args: train_args, control }) {
        Err(e) if matches!(e.downcast_ref::<qtrain_train::TrainError>(), Some(qtrain_train::TrainError::Interrupted)) => {
            eprintln!("[qtrain] interrupted before the first optimizer step; nothing was saved");
            std::process::exit(130);
        }
        other => other?,
    };
    // The run's result on stdout, so scripts can pick it up: the last checkpoint, or the best
    // one with --load_best_model_at_end.
    let result = if load_best { summary.best_checkpoint.as_ref().unwrap_or(&summary.last_checkpoint) } else { &summary.last_checkpoint };
    println!("{}", result.display());
    if summary.stop == StopReason::Interrupted {
        std::process::exit(130);
    }
    Ok(())
}
