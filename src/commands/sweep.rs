//! `qtrain sweep`: every `qtrain train` flag (and `--config`) describes the base run; the sweep
//! flags describe the search. The study is `qtrain_train::sweep` over `qtrain-sweep`; this
//! module maps flags and prints the results table. Ctrl-C ends the process at once: the trial in
//! flight is not recorded, and the same command with `--resume true` runs it again.

use anyhow::{bail, Result};
use clap::{ArgAction, Args};

use qtrain_core::CpuBackend;
use qtrain_sweep::{Direction, Metric, PrunerConfig, SamplerConfig, DEFAULT_GRID_POINTS};
use qtrain_train::SweepSettings;

use super::train::TrainFlags;

#[derive(Args, Debug)]
pub struct SweepCliArgs {
    /// The base run: the flags (and --config TOML) of `qtrain train`. Without --model and
    /// --config, the embedded tiny model with its self-cognition preset.
    #[command(flatten)]
    pub train: Box<TrainFlags>,
    #[command(flatten)]
    pub sweep: SweepFlags,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct SweepFlags {
    /// A searched `qtrain train` flag (repeatable): NAME=loguniform:LOW:HIGH, NAME=uniform:LOW:HIGH,
    /// NAME=int:LOW:HIGH[:log] or NAME=choice:A,B,... — e.g. learning_rate=loguniform:1e-5:5e-4,
    /// num_train_epochs=int:3:15, lora_rank=choice:8,16,32.
    #[arg(long, required = true, help_heading = "Sweep")]
    pub search: Vec<String>,
    /// Trials the study holds when done (a resumed study counts its finished trials).
    #[arg(long, default_value_t = 10, help_heading = "Sweep")]
    pub n_trials: usize,
    /// grid | random | tpe (Tree-structured Parzen Estimator, as Optuna's).
    #[arg(long, default_value = "tpe", help_heading = "Sweep")]
    pub sampler: String,
    /// Values per continuous dimension of a grid.
    #[arg(long, default_value_t = DEFAULT_GRID_POINTS, help_heading = "Sweep")]
    pub grid_points: usize,
    /// none | median (Optuna's MedianPruner: 5 startup trials) | asha (rungs at steps 1, 3, 9, …);
    /// trials are judged at their evaluations (--eval_steps).
    #[arg(long, default_value = "median", help_heading = "Sweep")]
    pub pruner: String,
    /// eval_loss | eval_token_acc (need a validation set) | self_cognition_acc (needs
    /// --model_name/--model_author); a trial's value is its last evaluation's.
    #[arg(long, default_value = "eval_loss", help_heading = "Sweep")]
    pub metric: String,
    /// minimize | maximize [default: from the metric's name].
    #[arg(long, help_heading = "Sweep")]
    pub direction: Option<Direction>,
    /// Seed of the sampler [default: --seed, the training seed, 42].
    #[arg(long, help_heading = "Sweep")]
    pub sweep_seed: Option<u64>,
    /// Continue the study in --output_dir without repeating finished trials (same settings).
    #[arg(long, action = ArgAction::Set, default_value_t = false, help_heading = "Sweep")]
    pub resume: bool,
}

pub fn run(args: SweepCliArgs) -> Result<()> {
    let base = args.train.into_train_args()?;
    if base.resume_from_checkpoint.is_some() {
        bail!("--resume_from_checkpoint cannot be swept (every trial starts fresh); continue an interrupted study with --resume true");
    }
    let f = args.sweep;
    let sampler = match SamplerConfig::from_name(&f.sampler)? {
        SamplerConfig::Grid { .. } => SamplerConfig::Grid { grid_points: f.grid_points },
        other => other,
    };
    let settings = SweepSettings {
        search: f.search,
        n_trials: f.n_trials,
        sampler,
        pruner: PrunerConfig::from_name(&f.pruner)?,
        metric: Metric::new(&f.metric, f.direction)?,
        seed: f.sweep_seed.unwrap_or(base.seed),
        resume: f.resume,
    };
    ctrlc::set_handler(|| {
        eprintln!(
            "\n[qtrain] interrupted: the trial in flight is not recorded; run the same command with --resume true to continue the study"
        );
        std::process::exit(130);
    })?;
    let out = CpuBackend::new().run(|be| qtrain_train::run_sweep(be, base, &settings))?;
    for w in &out.warnings {
        eprintln!("[qtrain] WARNING: {w}");
    }
    let resumed = if out.run.resumed_from > 0 { format!(" ({} finished before)", out.run.resumed_from) } else { String::new() };
    println!(
        "sweep {}: {} trials run in {:.1}s{resumed}; {} trials in the study, best first by {} ({}):",
        out.dir.display(),
        out.run.ran,
        out.seconds,
        out.trials.len(),
        settings.metric.name,
        settings.metric.direction
    );
    print!("{}", out.table);
    if let (Some(best), Some(path)) = (&out.best, &out.best_toml) {
        let params: Vec<String> = best.params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        println!("best: trial {} ({}) → {}", best.trial, params.join(" "), path.display());
        println!("      train it with: qtrain train --config {}", path.display());
    }
    for p in &out.plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}
