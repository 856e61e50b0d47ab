//! `qtrain sweep`: a `qtrain-sweep` [`Study`] whose objective is a training run of this crate.
//!
//! ```text
//! OUTPUT_DIR/study.json          search space, metric, sampler, pruner, seed (qtrain-sweep)
//! OUTPUT_DIR/trials.jsonl        one record per finished trial, append-only (qtrain-sweep)
//! OUTPUT_DIR/trial_NNNN/vN-…/    each trial's own run folder (logging.jsonl, checkpoints, images)
//! OUTPUT_DIR/best.toml           the base arguments with the best trial's values
//! OUTPUT_DIR/images/*.png        metric vs each parameter; intermediate curves per trial
//! ```
//!
//! A trial's arguments are the base [`TrainArgs`] with the trial's parameters laid over them
//! by name ([`apply_params`]: the base is serialised to a JSON object, the keys are
//! overwritten, the object is deserialised back), so any `qtrain train` key can be searched
//! (except `model`, `output_dir` and `resume_from_checkpoint`) and a value of the wrong type is
//! refused before the first trial. Trials run one after another in this process. The model
//! folder is loaded once: a LoRA trial trains adapters on the shared frozen base weights, and
//! [`train_on`] removes them when the trial ends; a full fine-tuning trial changes the weights,
//! so the folder is loaded again before the next trial.
//!
//! Each evaluation of a trial ([`EvalMetrics`]) reports the study's metric at its optimizer step
//! to [`qtrain_sweep::Trial::report`]; when the pruner answers prune, the trainer's `on_eval`
//! observer stops the run (after a final checkpoint) and the trial is recorded as pruned. A
//! complete trial's metric is its last evaluation's value. A trial whose run fails (a bad
//! value such as `lora_rank` 0, a diverged loss) is recorded as failed with the error, and the
//! study goes on. Ctrl-C ends the process: the trial in flight is not recorded, and the same
//! command with `--resume true` runs it again.
//!
//! This module must not parse command-line flags or print the results table (the binary does),
//! and must not know a sampler's or a pruner's internals.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use qtrain_core::Backend;
use qtrain_report::{plot_lines, plot_scatter, Plot, Series};
use qtrain_sweep::{
    Distribution, Metric, ParamValue, Params, PrunerConfig, RunSummary, SamplerConfig, SearchSpace, Study, StudyConfig, TrialOutcome,
    TrialRecord, TrialStatus, STUDY_FILE,
};

use crate::args::{config_keys, TrainArgs, TunerType};
use crate::error::{Result, TrainError};
use crate::eval::EvalMetrics;
use crate::folder::LoadedFolder;
use crate::trainer::{train_on, RunControl, StopReason};

/// `TrainArgs` keys a sweep cannot search: the model is loaded once, and each trial's output
/// folder and start are the sweep's to decide.
const NOT_SEARCHABLE: [&str; 3] = ["model", "output_dir", "resume_from_checkpoint"];

/// The sweep's own settings (everything else is the base `TrainArgs`).
#[derive(Clone, Debug)]
pub struct SweepSettings {
    /// `NAME=KIND:ARGS` strings (qtrain-sweep's search-space syntax).
    pub search: Vec<String>,
    /// Trials the study holds when done (finished trials of a resumed study count).
    pub n_trials: usize,
    pub sampler: SamplerConfig,
    pub pruner: PrunerConfig,
    pub metric: Metric,
    pub seed: u64,
    /// Continue the study in `output_dir`; without it an existing study there is an error.
    pub resume: bool,
}

/// What [`run_sweep`] did and wrote.
#[derive(Clone, Debug)]
pub struct SweepOutcome {
    pub dir: PathBuf,
    pub run: RunSummary,
    /// Every trial of the study (this call's and earlier ones), in trial order.
    pub trials: Vec<TrialRecord>,
    /// Best first, as an aligned text table (qtrain-sweep's `results_table`).
    pub table: String,
    pub best: Option<TrialRecord>,
    /// `best.toml`, when a trial completed.
    pub best_toml: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    /// Resume warnings and plots that could not be drawn.
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// Parse and check the search space against `base` before anything runs: every name must be a
/// `qtrain train` key that can be searched, and every kind of value the distribution can give
/// must fit the key's type.
pub fn check_search_space(space: &SearchSpace, base: &TrainArgs) -> Result<()> {
    let keys = config_keys();
    for p in space.params() {
        if NOT_SEARCHABLE.contains(&p.name.as_str()) {
            return Err(TrainError::Invalid(format!(
                "--search {p}: {} cannot be searched (the model is loaded once; each trial's output folder is OUTPUT_DIR/trial_NNNN)",
                p.name
            )));
        }
        if !keys.contains(&p.name) {
            let mut valid: Vec<&str> = keys.iter().map(String::as_str).filter(|k| !NOT_SEARCHABLE.contains(k)).collect();
            valid.sort_unstable();
            let hint = crate::args::suggest_key(&p.name, &keys).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(TrainError::Invalid(format!(
                "--search {p}: unknown parameter `{}`{hint}; valid names are the `qtrain train` flags: {}",
                p.name,
                valid.join(", ")
            )));
        }
        let samples: Vec<ParamValue> = match &p.distribution {
            Distribution::Uniform { low, .. } | Distribution::LogUniform { low, .. } => vec![ParamValue::Float(*low)],
            Distribution::Int { low, .. } => vec![ParamValue::Int(*low)],
            Distribution::Choice { choices } => choices.clone(),
        };
        for v in samples {
            let mut one = Params::new();
            one.insert(p.name.clone(), v.clone());
            if let Err(e) = apply_params(base, &one) {
                return Err(TrainError::Invalid(format!("--search {p}: the value {v} does not fit `{}`: {e}", p.name)));
            }
        }
    }
    Ok(())
}

/// `base` with `params` laid over it by name (see the module docs). Type errors name the
/// parameter; range errors are left to the run (`TrainArgs::resolve`), so they fail that trial.
pub fn apply_params(base: &TrainArgs, params: &Params) -> Result<TrainArgs> {
    let Value::Object(mut map) = serde_json::to_value(base).map_err(|e| TrainError::Invalid(e.to_string()))? else {
        unreachable!("TrainArgs is a struct")
    };
    for (name, value) in params.iter() {
        let key = if name == "train_type" { "tuner_type" } else { name };
        if !map.contains_key(key) {
            return Err(TrainError::Invalid(format!("unknown parameter `{name}`")));
        }
        map.insert(key.to_string(), value.to_json());
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| {
        let shown: Vec<String> = params.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        TrainError::Invalid(format!("{}: {e}", shown.join(", ")))
    })
}

/// The `--config` table of `base`: the keys whose values differ from `qtrain train`'s defaults,
/// plus `model` (absolute), `dataset` and every searched name, with `output_dir` set to
/// `OUTPUT_DIR/best` so a run of `best.toml` lands beside the trials.
pub fn base_config_table(base: &TrainArgs, space: &SearchSpace, study_dir: &Path) -> Result<toml::Table> {
    let to_json = |a: &TrainArgs| serde_json::to_value(a).map_err(|e| TrainError::Invalid(e.to_string()));
    let mut base = base.clone();
    if let Ok(abs) = std::fs::canonicalize(&base.model) {
        base.model = abs;
    }
    base.output_dir = study_dir.join("best");
    let (Value::Object(map), Value::Object(defaults)) = (to_json(&base)?, to_json(&TrainArgs::default())?) else {
        unreachable!("TrainArgs is a struct")
    };
    let always: Vec<&str> = ["model", "dataset", "output_dir"].into_iter().chain(space.params().iter().map(|p| p.name.as_str())).collect();
    let mut table = toml::Table::new();
    for (key, value) in map {
        if value.is_null() || (defaults.get(&key) == Some(&value) && !always.contains(&key.as_str())) {
            continue;
        }
        let v = toml::Value::try_from(&value).map_err(|e| TrainError::Invalid(format!("{key}: {e}")))?;
        table.insert(key, v);
    }
    Ok(table)
}

/// The sweep's settings against the base run, before anything is loaded: a known metric the
/// runs can measure, and notes on settings that interact (pruning without `--eval_steps`,
/// `--max_steps` over a searched epoch count).
fn check_settings(space: &SearchSpace, base: &TrainArgs, settings: &SweepSettings) -> Result<()> {
    let metric_name = &settings.metric.name;
    if !EvalMetrics::knows(metric_name) {
        return Err(TrainError::Invalid(format!("--metric {metric_name}: unknown; valid: {}", EvalMetrics::NAMES.join(", "))));
    }
    let needs_names = metric_name.contains("self_cognition") || metric_name.contains("repetition");
    if needs_names && (base.model_name.is_empty() || base.model_author.is_empty()) {
        return Err(TrainError::Invalid(format!(
            "--metric {metric_name} is measured on runs that teach an identity: give --model_name and --model_author (e.g. with --dataset self-cognition)"
        )));
    }
    if !needs_names && !base.has_validation() {
        return Err(TrainError::Invalid(format!(
            "--metric {metric_name} needs a validation set: add --split_dataset_ratio (e.g. 0.1) or --val_dataset"
        )));
    }
    if settings.pruner != PrunerConfig::None && base.eval_steps.is_none() && base.has_validation() {
        eprintln!(
            "[qtrain] note: --pruner {} judges trials at their evaluations; without --eval_steps they evaluate every save_steps ({}) and at the end only",
            settings.pruner.name(),
            base.save_steps
        );
    }
    if base.max_steps > 0 && space.params().iter().any(|p| p.name == "num_train_epochs") {
        eprintln!("[qtrain] note: --max_steps {} wins over the searched num_train_epochs in every trial", base.max_steps);
    }
    Ok(())
}

/// Run (or continue) the study in `base.output_dir` and write its results.
pub fn run_sweep<B: Backend>(be: &B, base: TrainArgs, settings: &SweepSettings) -> Result<SweepOutcome> {
    let t0 = Instant::now();
    let space = SearchSpace::parse(&settings.search)?;
    check_search_space(&space, &base)?;
    check_settings(&space, &base, settings)?;
    let metric_name = settings.metric.name.clone();

    let dir = base.output_dir.clone();
    if dir.join(STUDY_FILE).is_file() && !settings.resume {
        return Err(TrainError::Invalid(format!(
            "{} already holds a study: pass --resume true to continue it (finished trials are not repeated), or choose another --output_dir",
            dir.display()
        )));
    }
    let config = StudyConfig {
        space: space.clone(),
        metric: settings.metric.clone(),
        sampler: settings.sampler.clone(),
        pruner: settings.pruner.clone(),
        seed: settings.seed,
    };
    let mut study = Study::create_or_resume(&dir, config)?;
    let mut warnings: Vec<String> = study.warnings().to_vec();
    for w in &warnings {
        eprintln!("[qtrain] WARNING: {w}");
    }
    let done = study.trials().len();
    if done > 0 {
        eprintln!("[qtrain] resuming the study in {}: {done} of {} trials finished", dir.display(), settings.n_trials);
    }

    // The base model, loaded once and shared by the LoRA trials.
    let t_load = Instant::now();
    let mut folder = LoadedFolder::load(be, &base.model)?;
    eprintln!("[qtrain] sweep: loaded {} once in {:.2}s", folder.dir.display(), t_load.elapsed().as_secs_f64());
    let mut folder_dirty = false;
    let n_trials = settings.n_trials;
    let run = study.run(n_trials, |trial| {
        let shown: Vec<String> = trial.params().iter().map(|(n, v)| format!("{n}={v}")).collect();
        eprintln!("[qtrain] ==== sweep trial {}/{n_trials}: {} ====", trial.number() + 1, shown.join(" "));
        let mut args = apply_params(&base, trial.params()).map_err(|e| e.to_string())?;
        args.output_dir = trial.run_dir().to_path_buf();
        if folder_dirty {
            folder = LoadedFolder::load(be, &base.model).map_err(|e| format!("reloading the model: {e}"))?;
            folder_dirty = false;
        }
        let full = args.tuner_type == TunerType::Full;
        // A full run changes the weights; a panic could leave adapters behind.
        folder_dirty = true;
        let mut observer = |m: &EvalMetrics| match m.get(&metric_name) {
            Some(value) if trial.report(m.global_step, value).is_prune() => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        };
        let result = train_on(be, &mut folder, args, &RunControl::new(), Some(&mut observer));
        folder_dirty = full;
        let outcome = match result {
            Err(e) => Err(e.to_string()),
            Ok(s) if s.stop == StopReason::Pruned => Ok(TrialOutcome::Pruned),
            Ok(s) => match s.last_eval.as_ref().and_then(|m| m.get(&metric_name)) {
                Some(metric) => Ok(TrialOutcome::Complete { metric }),
                None => Err(format!("the run measured no {metric_name}")),
            },
        };
        match &outcome {
            Ok(TrialOutcome::Complete { metric }) => eprintln!("[qtrain] trial {}: complete, {metric_name} {metric:.6}", trial.number()),
            Ok(TrialOutcome::Pruned) => eprintln!("[qtrain] trial {}: pruned", trial.number()),
            Err(e) => eprintln!("[qtrain] trial {}: FAILED: {e}", trial.number()),
        }
        outcome
    })?;
    if let Some(qtrain_sweep::StopReason::GridExhausted { grid_size }) = run.stopped {
        eprintln!("[qtrain] the grid of {grid_size} points is used up: the study stops before {n_trials} trials");
    }

    // ---- results -----------------------------------------------------------------------------
    let best_toml = match study.best() {
        Some(_) => {
            let path = dir.join("best.toml");
            study.write_best_toml(&path, &base_config_table(&base, &space, &dir)?)?;
            Some(path)
        }
        None => {
            warnings.push("no trial completed, so there is no best.toml".into());
            None
        }
    };
    let (plots, plot_warnings) = plot_study(&study, &dir.join("images"));
    warnings.extend(plot_warnings);
    Ok(SweepOutcome {
        dir,
        run,
        trials: study.trials().to_vec(),
        table: study.results_table(),
        best: study.best().cloned(),
        best_toml,
        plots,
        warnings,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A parameter value as a plot coordinate: numbers as they are, a choice by its index.
fn coordinate(distribution: &Distribution, value: &ParamValue) -> Option<f64> {
    match distribution {
        Distribution::Choice { choices } => choices.iter().position(|c| c == value).map(|i| i as f64),
        _ => value.as_f64(),
    }
}

/// `images/<metric>_vs_<param>.png` for every parameter (complete trials by their metric, pruned
/// ones by their last reported value, marked; log x for `loguniform` and `int:…:log`) and
/// `images/intermediate_<metric>.png` (each trial's reported values by step, the last report of
/// a pruned trial marked). Returns the files written and warnings for those that were not.
pub fn plot_study(study: &Study, images: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let metric = &study.config().metric.name;
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    let mut draw = |file: PathBuf, plot: Plot, scatter: bool| {
        let result = if scatter { plot_scatter(&file, &plot) } else { plot_lines(&file, &plot) };
        match result {
            Ok(()) => written.push(file),
            Err(e) => warnings.push(format!("plot {} not written: {e}", file.display())),
        }
    };
    let trials = study.trials();
    for p in study.config().space.params() {
        let at = |r: &TrialRecord| r.params.get(&p.name).and_then(|v| coordinate(&p.distribution, v));
        let complete: Vec<(f64, f64)> = trials.iter().filter_map(|r| Some((at(r)?, r.complete_metric()?))).collect();
        let pruned: Vec<(f64, f64)> =
            trials.iter().filter(|r| r.status == TrialStatus::Pruned).filter_map(|r| Some((at(r)?, r.last_intermediate()?.1))).collect();
        let n_pruned = pruned.len();
        let (log_x, x_label) = match &p.distribution {
            Distribution::LogUniform { .. } | Distribution::Int { log: true, .. } => (true, format!("{} (log scale)", p.name)),
            Distribution::Choice { choices } => {
                let names: Vec<String> = choices.iter().enumerate().map(|(i, c)| format!("{i}={c}")).collect();
                (false, format!("{} ({})", p.name, names.join(", ")))
            }
            _ => (false, p.name.clone()),
        };
        let plot = Plot {
            title: format!("{metric} vs {}", p.name),
            x_label,
            y_label: metric.clone(),
            series: [
                Series::markers("complete", complete),
                Series::markers("pruned (last reported value)", pruned).with_marked((0..n_pruned).collect()),
            ]
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect(),
            log_x,
            marked_label: "pruned".into(),
            ..Plot::default()
        };
        draw(images.join(format!("{metric}_vs_{}.png", p.name)), plot, true);
    }
    let series: Vec<Series> = trials
        .iter()
        .filter(|r| !r.intermediate.is_empty())
        .map(|r| {
            let points: Vec<(f64, f64)> = r.intermediate.iter().map(|&(s, v)| (s as f64, v)).collect();
            let marked = if r.status == TrialStatus::Pruned { vec![points.len() - 1] } else { Vec::new() };
            Series::line(format!("trial {}", r.trial), points).with_marked(marked)
        })
        .collect();
    let plot = Plot {
        title: format!("intermediate {metric} per trial"),
        x_label: "step".into(),
        y_label: metric.clone(),
        series,
        marked_label: "pruned".into(),
        ..Plot::default()
    };
    draw(images.join(format!("intermediate_{metric}.png")), plot, false);
    (written, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue)]) -> Params {
        let mut p = Params::new();
        for (n, v) in pairs {
            p.insert(*n, v.clone());
        }
        p
    }

    #[test]
    fn params_land_on_train_args_by_name() {
        let base = TrainArgs { dataset: vec!["d.jsonl".into()], ..Default::default() };
        let a = apply_params(
            &base,
            &params(&[
                ("learning_rate", ParamValue::Float(3e-4)),
                ("num_train_epochs", ParamValue::Int(7)),
                ("lora_rank", ParamValue::Int(16)),
                ("lr_scheduler_type", ParamValue::Str("linear".into())),
                ("train_type", ParamValue::Str("full".into())),
            ]),
        )
        .unwrap();
        assert_eq!(a.learning_rate, Some(3e-4));
        assert_eq!(a.num_train_epochs, 7.0);
        assert_eq!(a.lora_rank, 16);
        assert_eq!(a.lr_scheduler_type, qtrain_optim::ScheduleKind::Linear);
        assert_eq!(a.tuner_type, TunerType::Full);
        assert_eq!(a.dataset, base.dataset, "other keys keep the base values");
        let err = apply_params(&base, &params(&[("lora_rank", ParamValue::Float(8.5))])).unwrap_err().to_string();
        assert!(err.contains("lora_rank = 8.5"), "{err}");
    }

    #[test]
    fn search_spaces_are_checked_against_the_train_flags() {
        let base = TrainArgs { dataset: vec!["d.jsonl".into()], ..Default::default() };
        let check = |specs: &[&str]| check_search_space(&SearchSpace::parse(specs).unwrap(), &base).map_err(|e| e.to_string());
        check(&["learning_rate=loguniform:1e-5:1e-3", "num_train_epochs=int:2:10", "lora_rank=choice:0,8,16"]).unwrap();
        let err = check(&["learnig_rate=loguniform:1e-5:1e-3"]).unwrap_err();
        assert!(err.contains("unknown parameter `learnig_rate`") && err.contains("did you mean `learning_rate`"), "{err}");
        assert!(err.contains("warmup_ratio") && !err.contains(" output_dir,"), "lists the valid names: {err}");
        let err = check(&["lora_rank=uniform:4:16"]).unwrap_err();
        assert!(err.contains("does not fit `lora_rank`"), "{err}");
        assert!(check(&["output_dir=choice:a,b"]).unwrap_err().contains("cannot be searched"));
    }

    #[test]
    fn the_base_table_keeps_changed_and_searched_keys() {
        let base = TrainArgs {
            model: "m".into(),
            dataset: vec!["self-cognition".into()],
            learning_rate: Some(1e-3),
            split_dataset_ratio: 0.1,
            ..Default::default()
        };
        let space = SearchSpace::parse(&["num_train_epochs=int:2:4"]).unwrap();
        let t = base_config_table(&base, &space, Path::new("/study")).unwrap();
        let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["dataset", "learning_rate", "model", "num_train_epochs", "output_dir", "split_dataset_ratio"]);
        assert_eq!(t["output_dir"].as_str(), Some("/study/best"));
        assert_eq!(t["num_train_epochs"].as_float(), Some(3.0));
        let back = TrainArgs::from_toml_str(&toml::to_string(&t).unwrap(), Path::new("best.toml")).unwrap();
        assert_eq!(back.learning_rate, Some(1e-3));
    }
}
