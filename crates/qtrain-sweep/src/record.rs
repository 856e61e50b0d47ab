//! [`TrialRecord`]: one line of `trials.jsonl`, and the only history samplers and pruners see.
//!
//! ```json
//! {"trial": 3, "params": {"learning_rate": 0.00012, "lora_rank": 16}, "status": "complete",
//!  "reason": null, "metric": 0.412, "intermediate": [[50, 0.61], [100, 0.45]], "run_dir": "sweep/trial_0003"}
//! ```
//!
//! `metric` is set for complete trials only; `reason` says why a trial was pruned or failed.
//! `intermediate` holds the finite values the objective reported, up to and including the
//! step at which the pruner said stop (later reports of a pruned trial are not kept).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::metric::Direction;
use crate::space::Params;

/// How a trial ended. `Running` exists only in memory, for the trial a pruner is judging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    Complete,
    Pruned,
    Failed,
    Running,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Complete => "complete",
            TrialStatus::Pruned => "pruned",
            TrialStatus::Failed => "failed",
            TrialStatus::Running => "running",
        }
    }
}

/// One trial: what was tried and how it went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// 0-based trial number; equals the record's line index in `trials.jsonl`.
    pub trial: usize,
    pub params: Params,
    pub status: TrialStatus,
    pub reason: Option<String>,
    /// The objective's final value; `Some` exactly when `status` is complete.
    pub metric: Option<f64>,
    /// `(step, value)` pairs in increasing step order.
    pub intermediate: Vec<(u64, f64)>,
    /// Where the caller was asked to put the trial's run (`<study dir>/trial_NNNN`).
    pub run_dir: PathBuf,
}

impl TrialRecord {
    /// The metric of a complete trial.
    pub fn complete_metric(&self) -> Option<f64> {
        if self.status == TrialStatus::Complete {
            self.metric
        } else {
            None
        }
    }

    /// The last reported `(step, value)`.
    pub fn last_intermediate(&self) -> Option<(u64, f64)> {
        self.intermediate.last().copied()
    }

    /// The value reported at exactly `step`.
    pub fn intermediate_at(&self, step: u64) -> Option<f64> {
        self.intermediate.binary_search_by_key(&step, |&(s, _)| s).ok().map(|i| self.intermediate[i].1)
    }
}

/// Ranks complete and pruned trials best first, as Optuna's TPE splits them: every complete
/// trial by its metric, then every pruned trial by (furthest step reached, then its value at
/// that step), pruned trials without reports last. Failed and running trials are left out.
/// Ties keep trial order.
pub fn rank_for_sampling(history: &[TrialRecord], direction: Direction) -> Vec<&TrialRecord> {
    let mut complete: Vec<&TrialRecord> = history.iter().filter(|r| r.complete_metric().is_some()).collect();
    complete.sort_by(|a, b| direction.cmp_best_first(a.metric.unwrap(), b.metric.unwrap()).then(a.trial.cmp(&b.trial)));
    let mut pruned: Vec<&TrialRecord> = history.iter().filter(|r| r.status == TrialStatus::Pruned).collect();
    // Optuna's `_get_pruned_trial_score`: (-step, value) for minimisation, (1, 0) without reports.
    let key = |r: &TrialRecord| match r.last_intermediate() {
        Some((step, value)) => (0u8, u64::MAX - step, direction.loss_like(value)),
        None => (1u8, 0, 0.0),
    };
    pruned.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.cmp(&kb.1)).then(ka.2.total_cmp(&kb.2)).then(a.trial.cmp(&b.trial))
    });
    complete.extend(pruned);
    complete
}
