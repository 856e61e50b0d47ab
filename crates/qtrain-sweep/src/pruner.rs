//! Pruners: should a running trial stop at this intermediate report?
//!
//! A pruner is a pure function of the history, like the samplers: `history` holds every
//! finished trial and, when the caller has it, the running trial's own record (status
//! `Running`, with its earlier reports), found by `trial_id`. Values are direction-aware and a
//! non-finite value is always pruned (except by `none`). A step is whatever unit the caller
//! reports in (optimizer steps, evaluation index, epochs); it must increase within a trial.
//!
//! * `none` — never prunes.
//! * `median` — Optuna's `MedianPruner` (`PercentilePruner` at 50%): at step `s`, once at least
//!   `n_startup_trials` (5) trials have *completed* and `s >= n_warmup_steps` (0), prune when the
//!   trial's best value so far is worse than the median of the completed trials' values reported
//!   at exactly step `s`. Steps no completed trial reported are never pruned. Comparing the
//!   best-so-far rather than the latest value is Optuna's choice; for monotone curves they agree.
//! * `asha` — asynchronous successive halving (Li et al., "A System for Massively Parallel
//!   Hyperparameter Tuning", MLSys 2020) as Optuna's `SuccessiveHalvingPruner`. Rung `k` sits
//!   at step `min_resource · η^k` (defaults 1 and η = 3). When a trial's report first reaches
//!   a rung's step, its value there is entered in the rung and compared with the values every
//!   other trial entered in that rung: it continues only if it is within the best
//!   `max(1, ⌊m/η⌋)` of the `m` values (its own included), else it is pruned. One report can
//!   cross several rungs, each checked in turn. Decisions are made with what is known at that
//!   moment and never revisited (the asynchronous variant: no trial waits for a rung to fill,
//!   so the first trials to arrive at a rung are promoted, and a trial pruned early is not
//!   resumed when later trials turn out worse). The rung tables are rebuilt from the finished
//!   trials' reports by replaying them in trial order, so they need no storage of their own.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};
use crate::metric::Direction;
use crate::record::{TrialRecord, TrialStatus};

/// Which pruner a study uses, with its settings (stored in `study.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PrunerConfig {
    None,
    Median { n_startup_trials: usize, n_warmup_steps: u64 },
    Asha { min_resource: u64, reduction_factor: u64 },
}

impl PrunerConfig {
    /// `median` with Optuna's defaults: 5 startup trials, no warm-up steps.
    pub fn median() -> PrunerConfig {
        PrunerConfig::Median { n_startup_trials: 5, n_warmup_steps: 0 }
    }

    /// `asha` with rungs at steps 1, 3, 9, 27, …
    pub fn asha() -> PrunerConfig {
        PrunerConfig::Asha { min_resource: 1, reduction_factor: 3 }
    }

    /// `--pruner none|median|asha` with default settings.
    pub fn from_name(name: &str) -> Result<PrunerConfig> {
        match name {
            "none" => Ok(PrunerConfig::None),
            "median" => Ok(PrunerConfig::median()),
            "asha" => Ok(PrunerConfig::asha()),
            other => Err(SweepError::InvalidConfig { message: format!("unknown pruner {other:?}; valid: none, median, asha") }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            PrunerConfig::None => "none",
            PrunerConfig::Median { .. } => "median",
            PrunerConfig::Asha { .. } => "asha",
        }
    }
}

/// A pruner bound to the study's direction.
#[derive(Clone, Debug)]
pub struct Pruner {
    config: PrunerConfig,
    direction: Direction,
}

impl Pruner {
    pub fn new(config: &PrunerConfig, direction: Direction) -> Result<Pruner> {
        if let PrunerConfig::Asha { min_resource, reduction_factor } = *config {
            if min_resource == 0 || reduction_factor < 2 {
                return Err(SweepError::InvalidConfig {
                    message: format!("asha needs min_resource >= 1 and reduction_factor >= 2, got {min_resource} and {reduction_factor}"),
                });
            }
        }
        Ok(Pruner { config: config.clone(), direction })
    }

    pub fn config(&self) -> &PrunerConfig {
        &self.config
    }

    /// Whether trial `trial_id`, reporting `value` at `step`, should stop (see the module docs).
    pub fn should_prune(&self, trial_id: usize, step: u64, value: f64, history: &[TrialRecord]) -> bool {
        if let PrunerConfig::None = self.config {
            return false;
        }
        if !value.is_finite() {
            return true;
        }
        let own: &[(u64, f64)] = history.iter().find(|r| r.trial == trial_id).map_or(&[], |r| &r.intermediate);
        let own_before: Vec<(u64, f64)> = own.iter().copied().filter(|&(s, _)| s < step).collect();
        match self.config {
            PrunerConfig::None => false,
            PrunerConfig::Median { n_startup_trials, n_warmup_steps } => {
                let completed = history.iter().filter(|r| r.trial != trial_id && r.status == TrialStatus::Complete);
                if completed.clone().count() < n_startup_trials.max(1) || step < n_warmup_steps {
                    return false;
                }
                let mut at_step: Vec<f64> = completed.filter_map(|r| r.intermediate_at(step)).filter(|v| v.is_finite()).collect();
                if at_step.is_empty() {
                    return false;
                }
                at_step.sort_by(f64::total_cmp);
                let n = at_step.len();
                let median = if n % 2 == 1 { at_step[n / 2] } else { 0.5 * (at_step[n / 2 - 1] + at_step[n / 2]) };
                let best = own_before.iter().map(|&(_, v)| v).fold(value, |b, v| if self.direction.better(v, b) { v } else { b });
                self.direction.better(median, best)
            }
            PrunerConfig::Asha { min_resource, reduction_factor } => {
                let asha = Asha { min_resource, eta: reduction_factor, direction: self.direction };
                let mut others: Vec<&TrialRecord> = history.iter().filter(|r| r.trial != trial_id).collect();
                others.sort_by_key(|r| r.trial);
                // rungs[k]: the values other trials entered in rung k, in trial order.
                let mut rungs: Vec<Vec<f64>> = Vec::new();
                for r in others {
                    for (rung, v) in asha.replay(&r.intermediate, &rungs, r.status == TrialStatus::Pruned).entries {
                        if rungs.len() <= rung {
                            rungs.resize(rung + 1, Vec::new());
                        }
                        rungs[rung].push(v);
                    }
                }
                let mut reports = own_before;
                reports.push((step, value));
                asha.replay(&reports, &rungs, true).pruned_at.is_some()
            }
        }
    }
}

/// Successive-halving arithmetic for one study.
struct Asha {
    min_resource: u64,
    eta: u64,
    direction: Direction,
}

/// What replaying one trial's reports against the rung tables gives.
#[derive(Default)]
struct Replay {
    /// `(rung, value)` for every rung the trial entered.
    entries: Vec<(usize, f64)>,
    /// The step of the first report at which it was not promotable.
    pruned_at: Option<u64>,
}

impl Asha {
    /// `min_resource · η^rung`; `None` past `u64::MAX`.
    fn rung_step(&self, rung: usize) -> Option<u64> {
        let power = self.eta.checked_pow(u32::try_from(rung).ok()?)?;
        self.min_resource.checked_mul(power)
    }

    /// Whether `value` is within the best `max(1, ⌊m/η⌋)` of itself plus `competitors`
    /// (Optuna's `_is_trial_promotable_to_next_rung`; ties favour the newcomer).
    fn promotable(&self, value: f64, competitors: &[f64]) -> bool {
        let m = competitors.len() + 1;
        let keep = (m / self.eta as usize).max(1);
        competitors.iter().filter(|&&c| self.direction.better(c, value)).count() < keep
    }

    /// Walks `reports` through the rungs. `stop_on_prune`: stop at the first failed rung (a
    /// pruned trial, or the trial being judged); otherwise (a trial that completed anyway)
    /// keep entering later rungs.
    fn replay(&self, reports: &[(u64, f64)], rungs: &[Vec<f64>], stop_on_prune: bool) -> Replay {
        let mut out = Replay::default();
        let mut rung = 0;
        for &(step, value) in reports {
            while let Some(rung_step) = self.rung_step(rung) {
                if step < rung_step {
                    break;
                }
                let competitors = rungs.get(rung).map_or(&[][..], Vec::as_slice);
                out.entries.push((rung, value));
                rung += 1;
                if !value.is_finite() || !self.promotable(value, competitors) {
                    out.pruned_at.get_or_insert(step);
                    if stop_on_prune {
                        return out;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Params;

    fn record(trial: usize, status: TrialStatus, curve: &[(u64, f64)]) -> TrialRecord {
        TrialRecord {
            trial,
            params: Params::new(),
            status,
            reason: None,
            metric: (status == TrialStatus::Complete).then(|| curve.last().unwrap().1),
            intermediate: curve.to_vec(),
            run_dir: Default::default(),
        }
    }

    /// Loss curves `q·(1 + 10/s)` for steps 1..=10: a larger `q` is worse at every step.
    fn loss_curve(q: f64) -> Vec<(u64, f64)> {
        (1..=10).map(|s| (s, q * (1.0 + 10.0 / s as f64))).collect()
    }

    /// Five completed trials with q = 1..5: the median at every step is the q = 3 curve.
    fn five_completed() -> Vec<TrialRecord> {
        (0..5).map(|t| record(t, TrialStatus::Complete, &loss_curve(t as f64 + 1.0))).collect()
    }

    #[test]
    fn median_prunes_worse_than_median_and_keeps_the_rest() {
        let history = five_completed();
        let p = Pruner::new(&PrunerConfig::median(), Direction::Minimize).unwrap();
        // q = 4 is worse than the median at the first step; q = 2 and q = 3 (a tie) never are.
        assert!(p.should_prune(5, 1, 4.0 * 11.0, &history));
        for (s, v) in loss_curve(2.0).into_iter().chain(loss_curve(3.0)) {
            assert!(!p.should_prune(5, s, v, &history), "step {s}");
        }
        // A step no completed trial reported is never pruned.
        assert!(!p.should_prune(5, 11, 1e9, &history));
        // Non-finite values are.
        assert!(p.should_prune(5, 2, f64::NAN, &history));
        // Optuna compares the best value so far: a good step-1 report protects a bad step 2.
        let mut with_own = history.clone();
        with_own.push(record(5, TrialStatus::Running, &[(1, 10.0)]));
        assert!(!p.should_prune(5, 2, 100.0, &with_own));
        assert!(p.should_prune(6, 2, 100.0, &with_own), "another trial with the same value is pruned");
    }

    #[test]
    fn median_waits_for_startup_trials_and_warmup_steps() {
        let history = five_completed();
        let p = Pruner::new(&PrunerConfig::median(), Direction::Minimize).unwrap();
        // Four completed (plus pruned ones, which do not count): no pruning yet.
        let mut four: Vec<TrialRecord> = history[..4].to_vec();
        four.push(record(4, TrialStatus::Pruned, &loss_curve(5.0)[..2]));
        assert!(!p.should_prune(5, 1, 1e6, &four));
        let warm = Pruner::new(&PrunerConfig::Median { n_startup_trials: 5, n_warmup_steps: 3 }, Direction::Minimize).unwrap();
        let bad = loss_curve(4.0);
        assert!(!warm.should_prune(5, 1, bad[0].1, &history));
        assert!(!warm.should_prune(5, 2, bad[1].1, &history));
        assert!(warm.should_prune(5, 3, bad[2].1, &history));
    }

    #[test]
    fn median_is_direction_aware() {
        // Accuracy curves q·s/10: larger q is better.
        let acc = |q: f64| -> Vec<(u64, f64)> { (1..=10).map(|s| (s, q * s as f64 / 10.0)).collect() };
        let history: Vec<TrialRecord> = (0..5).map(|t| record(t, TrialStatus::Complete, &acc(t as f64 + 1.0))).collect();
        let p = Pruner::new(&PrunerConfig::median(), Direction::Maximize).unwrap();
        assert!(p.should_prune(5, 1, acc(2.0)[0].1, &history));
        assert!(acc(4.0).into_iter().all(|(s, v)| !p.should_prune(5, s, v, &history)));
        let none = Pruner::new(&PrunerConfig::None, Direction::Maximize).unwrap();
        assert!(!none.should_prune(5, 1, f64::NAN, &history));
    }

    /// Constant curves reported at steps 1..=9 (rungs at 1, 3, 9 with η = 3), arriving in the
    /// order q = 5, 3, 4, 1, 6, 2 (lower is better). Worked by hand:
    /// - rung 0 (step 1): 5 is alone → on; 3 beats 5 → on; 4 is behind 3 of {5,3,4} (keep 1)
    ///   → pruned; 1 → on; 6 → pruned; 2 is second of six (keep 2) → on;
    /// - rung 1 (step 3): 2 meets {5, 3, 1} and is second of four (keep 1) → pruned at step 3.
    #[test]
    fn asha_keeps_the_top_fraction_of_each_rung() {
        let p = Pruner::new(&PrunerConfig::asha(), Direction::Minimize).unwrap();
        let mut history: Vec<TrialRecord> = Vec::new();
        let mut pruned_at = Vec::new();
        for (t, q) in [5.0, 3.0, 4.0, 1.0, 6.0, 2.0].into_iter().enumerate() {
            let mut reports = Vec::new();
            let mut stop = None;
            for s in 1..=9 {
                history.retain(|r| r.trial != t);
                history.push(record(t, TrialStatus::Running, &reports));
                let prune = p.should_prune(t, s, q, &history);
                reports.push((s, q));
                if prune {
                    stop = Some(s);
                    break;
                }
            }
            history.retain(|r| r.trial != t);
            history.push(record(t, if stop.is_some() { TrialStatus::Pruned } else { TrialStatus::Complete }, &reports));
            pruned_at.push(stop);
        }
        assert_eq!(pruned_at, [None, None, Some(1), None, Some(1), Some(3)]);
        // A newcomer at rung 0 must be in the best ⌊7/3⌋ = 2 of {5,3,4,1,6,2, x}.
        assert!(!p.should_prune(6, 1, 1.5, &history));
        assert!(p.should_prune(6, 1, 2.5, &history));
        // Maximising flips the order: 6 is now the best of them.
        let max = Pruner::new(&PrunerConfig::asha(), Direction::Maximize).unwrap();
        assert!(!max.should_prune(6, 1, 5.5, &history));
        assert!(max.should_prune(6, 1, 4.5, &history));
        // One report that crosses rungs 0 and 1 at once is checked against both.
        assert!(p.should_prune(6, 3, 2.0, &history), "second of {{5,3,1,2}} at rung 1 (keep 1)");
        assert!(!p.should_prune(6, 3, 0.5, &history));
        assert!(Pruner::new(&PrunerConfig::Asha { min_resource: 1, reduction_factor: 1 }, Direction::Minimize).is_err());
    }
}
