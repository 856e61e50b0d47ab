//! [`Study`]: a resumable hyper-parameter search in one directory.
//!
//! ```text
//! <dir>/study.json     the StudyConfig (search space, metric, sampler, pruner, seed); written once
//! <dir>/trials.jsonl   one TrialRecord per finished trial, appended (and fsynced) as each ends
//! <dir>/trial_NNNN/    suggested run directory of trial NNNN (created by the caller, not here)
//! ```
//!
//! [`Study::run`] loops: propose the next trial's params from the finished trials, call the
//! objective with a [`Trial`] (params, run directory, and [`Trial::report`] for intermediate
//! values, which consults the pruner), append the record, repeat until the study holds
//! `n_trials` records. `n_trials` is the study's total, so re-running the same command after an
//! interruption finishes the remaining trials. An objective that returns `Err`, panics
//! (caught with `catch_unwind`) or returns a non-finite metric gives a `failed` record with the
//! reason, and the study goes on; only I/O errors on the study files stop it.
//!
//! Resuming rebuilds nothing but the list of records: samplers and pruners are pure functions
//! of (config, trial number, finished records), and `serde_json` round-trips every `f64`
//! exactly, so a resumed study proposes exactly the trials the uninterrupted one would have.
//! A torn last line of `trials.jsonl` (a crash mid-write) is dropped with a warning
//! ([`Study::warnings`]) and its trial runs again; a bad line anywhere else is an error.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};
use crate::metric::Metric;
use crate::pruner::{Pruner, PrunerConfig};
use crate::record::{rank_for_sampling, TrialRecord, TrialStatus};
use crate::sampler::{Sampler, SamplerConfig};
use crate::space::{ParamValue, Params, SearchSpace};

/// The study's configuration file in its directory.
pub const STUDY_FILE: &str = "study.json";
/// The append-only trial log in the study directory.
pub const TRIALS_FILE: &str = "trials.jsonl";
const STUDY_FORMAT: u32 = 1;

/// Everything that decides which trials a study proposes and prunes. A study directory keeps
/// the config it was created with; resuming with a different one is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    pub space: SearchSpace,
    pub metric: Metric,
    pub sampler: SamplerConfig,
    pub pruner: PrunerConfig,
    pub seed: u64,
}

#[derive(Serialize, Deserialize)]
struct StudyFile {
    format: u32,
    config: StudyConfig,
}

/// What the objective says about a trial that did not fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrialOutcome {
    /// The run finished with this metric value.
    Complete { metric: f64 },
    /// The run stopped early, normally because [`Trial::report`] answered [`ShouldPrune::Prune`].
    Pruned,
}

/// The answer of [`Trial::report`].
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShouldPrune {
    Continue,
    /// Stop the run and return [`TrialOutcome::Pruned`]; later reports keep answering `Prune`.
    Prune,
}

impl ShouldPrune {
    pub fn is_prune(self) -> bool {
        self == ShouldPrune::Prune
    }
}

/// The trial an objective runs: its parameters, where to put its run, and a way to report
/// intermediate values to the pruner.
pub struct Trial<'a> {
    number: usize,
    params: Params,
    run_dir: PathBuf,
    pruner: &'a Pruner,
    state: RefCell<TrialState>,
}

struct TrialState {
    /// Every finished trial, then this one (status `Running`) with its reports so far.
    history: Vec<TrialRecord>,
    /// The report at which the pruner said stop.
    pruned_at: Option<(u64, f64)>,
}

impl<'a> Trial<'a> {
    fn new(number: usize, params: Params, run_dir: PathBuf, pruner: &'a Pruner, finished: &[TrialRecord]) -> Trial<'a> {
        let mut history = finished.to_vec();
        history.push(TrialRecord {
            trial: number,
            params: params.clone(),
            status: TrialStatus::Running,
            reason: None,
            metric: None,
            intermediate: Vec::new(),
            run_dir: run_dir.clone(),
        });
        Trial { number, params, run_dir, pruner, state: RefCell::new(TrialState { history, pruned_at: None }) }
    }

    /// 0-based trial number.
    pub fn number(&self) -> usize {
        self.number
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// `<study dir>/trial_NNNN`: where the caller should write this trial's run.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Records the metric's value at `step` and asks the pruner whether to stop. Steps must
    /// increase: a report at or before the last reported step is ignored. Non-finite values
    /// are not recorded (the pruner still sees them, and prunes).
    pub fn report(&self, step: u64, value: f64) -> ShouldPrune {
        let mut state = self.state.borrow_mut();
        if state.pruned_at.is_some() {
            return ShouldPrune::Prune;
        }
        let own = &state.history.last().expect("the running trial is last").intermediate;
        if own.last().is_some_and(|&(last, _)| step <= last) {
            return ShouldPrune::Continue;
        }
        let prune = self.pruner.should_prune(self.number, step, value, &state.history);
        if value.is_finite() {
            state.history.last_mut().expect("the running trial is last").intermediate.push((step, value));
        }
        if prune {
            state.pruned_at = Some((step, value));
            ShouldPrune::Prune
        } else {
            ShouldPrune::Continue
        }
    }

    /// The values reported so far.
    pub fn intermediate(&self) -> Vec<(u64, f64)> {
        self.state.borrow().history.last().expect("the running trial is last").intermediate.clone()
    }

    fn into_record(self, result: std::thread::Result<std::result::Result<TrialOutcome, String>>) -> TrialRecord {
        let state = self.state.into_inner();
        let mut record = state.history.into_iter().last().expect("the running trial is last");
        let (status, reason, metric) = match result {
            Ok(Ok(TrialOutcome::Complete { metric })) if metric.is_finite() => (TrialStatus::Complete, None, Some(metric)),
            Ok(Ok(TrialOutcome::Complete { metric })) => {
                (TrialStatus::Failed, Some(format!("the objective returned a non-finite metric ({metric})")), None)
            }
            Ok(Ok(TrialOutcome::Pruned)) => {
                let reason = match state.pruned_at {
                    Some((step, value)) => {
                        format!("pruned by the {} pruner at step {step} (value {})", self.pruner.config().name(), fmt_num(value))
                    }
                    None => "stopped early by the objective".to_string(),
                };
                (TrialStatus::Pruned, Some(reason), None)
            }
            Ok(Err(message)) => (TrialStatus::Failed, Some(format!("objective error: {message}")), None),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                (TrialStatus::Failed, Some(format!("objective panicked: {message}")), None)
            }
        };
        record.status = status;
        record.reason = reason;
        record.metric = metric;
        record
    }
}

/// Why [`Study::run`] stopped before reaching `n_trials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every grid point has been tried; a grid search never repeats a point.
    GridExhausted { grid_size: usize },
}

/// What one [`Study::run`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Trials already finished when the call began (from a previous run of the study).
    pub resumed_from: usize,
    /// Trials run by this call.
    pub ran: usize,
    pub stopped: Option<StopReason>,
}

/// A hyper-parameter search stored in one directory.
#[derive(Debug)]
pub struct Study {
    dir: PathBuf,
    config: StudyConfig,
    trials: Vec<TrialRecord>,
    warnings: Vec<String>,
}

impl Study {
    /// Opens the study in `dir`: creates it (writing `study.json`) when `dir` holds none,
    /// otherwise checks that `config` matches the stored one and loads `trials.jsonl`.
    pub fn create_or_resume(dir: impl AsRef<Path>, config: StudyConfig) -> Result<Study> {
        let dir = dir.as_ref().to_path_buf();
        // Refuse bad settings before touching the disk.
        Sampler::new(&config.sampler, &config.space, config.seed, 1)?;
        Pruner::new(&config.pruner, config.metric.direction)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SweepError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let study_path = dir.join(STUDY_FILE);
        let trials_path = dir.join(TRIALS_FILE);
        if study_path.exists() {
            let text = fs::read_to_string(&study_path).map_err(io(&study_path))?;
            let stored: StudyFile =
                serde_json::from_str(&text).map_err(|source| SweepError::Json { path: study_path.clone(), line: None, source })?;
            check_same_config(&study_path, &stored.config, &config)?;
        } else {
            if fs::metadata(&trials_path).is_ok_and(|m| m.len() > 0) {
                return Err(SweepError::InvalidConfig {
                    message: format!("{} exists without {STUDY_FILE}; restore it or use another directory", trials_path.display()),
                });
            }
            let file = StudyFile { format: STUDY_FORMAT, config: config.clone() };
            let text = serde_json::to_string_pretty(&file).expect("a StudyConfig always serialises");
            fs::write(&study_path, text + "\n").map_err(io(&study_path))?;
        }
        let mut study = Study { dir, config, trials: Vec::new(), warnings: Vec::new() };
        study.load_trials()?;
        Ok(study)
    }

    /// Reads `trials.jsonl`, dropping (and truncating away) a torn last line.
    fn load_trials(&mut self) -> Result<()> {
        let path = self.dir.join(TRIALS_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(SweepError::Io { path, source }),
        };
        let mut lines = Vec::new(); // (1-based line, byte offset, bytes)
        let mut offset = 0;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push((i + 1, offset, line));
            }
            offset += line.len() + 1;
        }
        let last = lines.len().saturating_sub(1);
        for (k, &(line_no, start, line)) in lines.iter().enumerate() {
            let record: TrialRecord = match serde_json::from_slice(line) {
                Ok(r) => r,
                Err(source) if k == last => {
                    self.warnings.push(format!(
                        "{} line {line_no} is incomplete or corrupt ({source}); dropping it — its trial will run again",
                        path.display()
                    ));
                    let file =
                        fs::OpenOptions::new().write(true).open(&path).map_err(|source| SweepError::Io { path: path.clone(), source })?;
                    file.set_len(start as u64).map_err(|source| SweepError::Io { path: path.clone(), source })?;
                    return Ok(());
                }
                Err(source) => return Err(SweepError::Json { path, line: Some(line_no), source }),
            };
            self.check_record(&record, k).map_err(|message| SweepError::InvalidRecord { path: path.clone(), line: line_no, message })?;
            self.trials.push(record);
        }
        if bytes.last().is_some_and(|&b| b != b'\n') && !self.trials.is_empty() {
            // A complete last record whose newline was not written: add it before appending.
            let mut file =
                fs::OpenOptions::new().append(true).open(&path).map_err(|source| SweepError::Io { path: path.clone(), source })?;
            file.write_all(b"\n").map_err(|source| SweepError::Io { path, source })?;
        }
        Ok(())
    }

    fn check_record(&self, record: &TrialRecord, index: usize) -> std::result::Result<(), String> {
        if record.trial != index {
            return Err(format!("expected trial {index}, found trial {}; records must be in trial order without gaps", record.trial));
        }
        self.config.space.check(&record.params)?;
        match (record.status, record.metric) {
            (TrialStatus::Running, _) => return Err("status \"running\" cannot appear in a finished study".into()),
            (TrialStatus::Complete, Some(m)) if m.is_finite() => {}
            (TrialStatus::Complete, _) => return Err("a complete trial needs a finite metric".into()),
            _ => {}
        }
        if record.intermediate.windows(2).any(|w| w[0].0 >= w[1].0) || record.intermediate.iter().any(|(_, v)| !v.is_finite()) {
            return Err("intermediate values must be finite, with increasing steps".into());
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &StudyConfig {
        &self.config
    }

    /// Every finished trial, in trial order.
    pub fn trials(&self) -> &[TrialRecord] {
        &self.trials
    }

    /// Problems found while resuming (a dropped torn line); the caller should print them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs trials until the study holds `n_trials` of them (or a grid is used up).
    pub fn run<F>(&mut self, n_trials: usize, mut objective: F) -> Result<RunSummary>
    where
        F: FnMut(&Trial<'_>) -> std::result::Result<TrialOutcome, String>,
    {
        let direction = self.config.metric.direction;
        let sampler = Sampler::new(&self.config.sampler, &self.config.space, self.config.seed, n_trials)?;
        let pruner = Pruner::new(&self.config.pruner, direction)?;
        let mut summary = RunSummary { resumed_from: self.trials.len(), ran: 0, stopped: None };
        while self.trials.len() < n_trials {
            let number = self.trials.len();
            let Some(params) = sampler.propose(number, &self.trials, direction) else {
                summary.stopped = Some(StopReason::GridExhausted { grid_size: sampler.grid_size().unwrap_or(number) });
                break;
            };
            let run_dir = self.dir.join(format!("trial_{number:04}"));
            let trial = Trial::new(number, params, run_dir, &pruner, &self.trials);
            let result = catch_unwind(AssertUnwindSafe(|| objective(&trial)));
            let record = trial.into_record(result);
            self.append(&record)?;
            self.trials.push(record);
            summary.ran += 1;
        }
        Ok(summary)
    }

    fn append(&self, record: &TrialRecord) -> Result<()> {
        let path = self.dir.join(TRIALS_FILE);
        let io = |source| SweepError::Io { path: path.clone(), source };
        let mut line = serde_json::to_vec(record).expect("a TrialRecord always serialises");
        line.push(b'\n');
        let mut file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        // One write per record, then fsync: a crash leaves at most one torn last line.
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// The complete trial with the best metric (the earliest on ties).
    pub fn best(&self) -> Option<&TrialRecord> {
        rank_for_sampling(&self.trials, self.config.metric.direction).into_iter().find(|r| r.status == TrialStatus::Complete)
    }

    /// The parameters of [`Study::best`].
    pub fn best_params(&self) -> Option<&Params> {
        self.best().map(|r| &r.params)
    }

    /// All trials best first: complete by metric, then pruned (furthest first), then failed.
    pub fn ranked(&self) -> Vec<&TrialRecord> {
        let mut ranked = rank_for_sampling(&self.trials, self.config.metric.direction);
        ranked.extend(self.trials.iter().filter(|r| r.status == TrialStatus::Failed));
        ranked
    }

    /// The trials as an aligned text table, best first (see [`Study::ranked`]).
    pub fn results_table(&self) -> String {
        let names: Vec<&str> = self.config.space.params().iter().map(|p| p.name.as_str()).collect();
        let mut header = vec!["trial".to_string(), "status".to_string(), self.config.metric.name.clone()];
        header.extend(names.iter().map(|n| n.to_string()));
        header.push("note".to_string());
        let mut rows = vec![header];
        for r in self.ranked() {
            let mut row = vec![r.trial.to_string(), r.status.as_str().to_string()];
            row.push(match (r.metric, r.last_intermediate()) {
                (Some(m), _) => fmt_num(m),
                (None, Some((step, v))) => format!("({} @{step})", fmt_num(v)),
                (None, None) => "-".to_string(),
            });
            row.extend(names.iter().map(|n| r.params.get(n).map_or("-".to_string(), fmt_value)));
            row.push(r.reason.clone().unwrap_or_default());
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in &rows {
            let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// The best parameters merged over `base_args` (the table a `qtrain train --config` file
    /// holds): each parameter replaces or adds the key of its name. An integer lands as a
    /// float where `base_args` already holds a float (`num_train_epochs = 3.0`), so the file
    /// keeps the types the base config used.
    pub fn best_toml(&self, base_args: &toml::Table) -> Result<toml::Table> {
        let best = self.best().ok_or_else(|| SweepError::NoCompletedTrial { dir: self.dir.clone() })?;
        let mut table = base_args.clone();
        for (name, value) in best.params.iter() {
            let v = match (value, table.get(name)) {
                (ParamValue::Int(i), Some(toml::Value::Float(_))) => toml::Value::Float(*i as f64),
                _ => value.to_toml(),
            };
            table.insert(name.to_string(), v);
        }
        Ok(table)
    }

    /// Writes [`Study::best_toml`] to `path`, headed by a comment naming the trial and the
    /// command that runs it.
    pub fn write_best_toml(&self, path: impl AsRef<Path>, base_args: &toml::Table) -> Result<()> {
        let path = path.as_ref();
        let table = self.best_toml(base_args)?;
        let best = self.best().expect("best_toml found one");
        let body = toml::to_string(&table).map_err(|e| SweepError::Toml { path: path.to_path_buf(), message: e.to_string() })?;
        let metric = &self.config.metric;
        let text = format!(
            "# Best trial {} of the sweep in {}: {} = {} ({}).\n# Run it with: qtrain train --config {}\n\n{body}",
            best.trial,
            self.dir.display(),
            metric.name,
            fmt_num(best.metric.expect("complete")),
            metric.direction,
            path.display(),
        );
        fs::write(path, text).map_err(|source| SweepError::Io { path: path.to_path_buf(), source })
    }
}

fn check_same_config(path: &Path, stored: &StudyConfig, given: &StudyConfig) -> Result<()> {
    let fields: [(&'static str, String, String); 5] = [
        ("search space", stored.space.specs().join(" "), given.space.specs().join(" ")),
        ("metric", json(&stored.metric), json(&given.metric)),
        ("sampler", json(&stored.sampler), json(&given.sampler)),
        ("pruner", json(&stored.pruner), json(&given.pruner)),
        ("seed", stored.seed.to_string(), given.seed.to_string()),
    ];
    // Compare parsed values, not strings, so `1e-5` and `0.00001` agree; the strings are for the message.
    let same = [
        stored.space == given.space,
        stored.metric == given.metric,
        stored.sampler == given.sampler,
        stored.pruner == given.pruner,
        stored.seed == given.seed,
    ];
    for ((field, s, g), same) in fields.into_iter().zip(same) {
        if !same {
            return Err(SweepError::ConfigMismatch { path: path.to_path_buf(), field, stored: s, given: g });
        }
    }
    Ok(())
}

/// Compact JSON of a config part, for mismatch messages.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Four significant digits; scientific notation outside [1e-3, 1e5).
pub(crate) fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    if x.abs() < 1e-3 || x.abs() >= 1e5 {
        return format!("{x:.3e}");
    }
    let decimals = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_value(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(x) => fmt_num(*x),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_with_four_significant_digits() {
        assert_eq!(fmt_num(0.41234), "0.4123");
        assert_eq!(fmt_num(1.5), "1.5");
        assert_eq!(fmt_num(123.456), "123.5");
        assert_eq!(fmt_num(1.234e-4), "1.234e-4");
        assert_eq!(fmt_num(0.0), "0");
    }
}
