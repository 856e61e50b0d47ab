//! qtrain-sweep: the engine of `qtrain sweep` — hyper-parameter search with pruning.
//!
//! * [`space`] parses `learning_rate=loguniform:1e-5:5e-4`-style strings into a [`SearchSpace`].
//! * [`sampler`] proposes trials: `grid`, `random`, and [`tpe`] (Tree-structured Parzen
//!   Estimator, as Optuna's `TPESampler`).
//! * [`pruner`] stops unpromising trials: `none`, `median` (Optuna's `MedianPruner`), `asha`
//!   (asynchronous successive halving).
//! * [`study`] runs a resumable [`Study`] in one directory (`study.json` + append-only
//!   `trials.jsonl`) and reports results (table, best parameters, best-config TOML).
//! * [`metric`] says which way is better; [`recommend()`] suggests a starting point and a search
//!   space from the dataset size.
//!
//! Invariant: this crate does not know about models, datasets, tensors or training. A trial is
//! run by a caller-provided objective closure, which receives the parameters and reports
//! intermediate metric values; the CLI maps parameter names onto `qtrain train` arguments.
//! Invariant: samplers and pruners hold no state between trials. Everything they decide is a
//! function of the study config, the trial number and the finished records, so a study
//! resumed from `trials.jsonl` behaves exactly as if it had never stopped.

pub mod error;
pub mod metric;
pub mod pruner;
pub mod recommend;
pub mod record;
pub mod sampler;
pub mod space;
pub mod study;
pub mod tpe;

pub use error::{Result, SweepError};
pub use metric::{Direction, Metric};
pub use pruner::{Pruner, PrunerConfig};
pub use recommend::{recommend, recommend_pretrain, FinetuneMethod, Recommendation};
pub use record::{TrialRecord, TrialStatus};
pub use sampler::{GridSampler, Sampler, SamplerConfig, DEFAULT_GRID_POINTS};
pub use space::{Distribution, Param, ParamValue, Params, SearchSpace};
pub use study::{RunSummary, ShouldPrune, StopReason, Study, StudyConfig, Trial, TrialOutcome, STUDY_FILE, TRIALS_FILE};
pub use tpe::{TpeConfig, TpeSampler};
