//! Learning-rate schedules: pure functions of the optimizer step.
//!
//! Every schedule reproduces, value for value, what transformers' `get_scheduler` builds (a
//! `torch.optim.lr_scheduler.LambdaLR`): the learning rate used by optimizer step `k` (0-based,
//! i.e. the `k`-th call of `optimizer.step()`) is `base_lr * lambda(k)`, with `lambda` computed
//! in f64 by the same expressions, in the same order, as `transformers/optimization.py`.
//! `tests/fixtures/schedules/schedules.json` (from `tools/dump_schedules.py`) pins this.
//!
//! Warmup: all kinds except `constant` ramp linearly from 0 over the warmup steps, so the very
//! first step (`k = 0`) runs with lr 0 and step `k < warmup` with `base_lr * k / warmup`.
//! `constant` ignores any warmup, exactly like transformers does. See [`Warmup`] for how a ratio
//! becomes a number of steps.
//!
//! This module must not know about optimizers, models or devices: it only maps a step index to a
//! learning rate. Callers pass the value to the optimizer step themselves.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// Default `lr_end` of the `polynomial` schedule (transformers' default).
pub const DEFAULT_LR_END: f64 = 1e-7;
/// Default `power` of the `polynomial` schedule (transformers' default).
pub const DEFAULT_POWER: f64 = 1.0;
/// Default `num_cycles` of the cosine schedules (transformers' default: half a cosine wave).
pub const DEFAULT_NUM_CYCLES: f64 = 0.5;

/// Which schedule. Names (for [`FromStr`], [`fmt::Display`] and serde) are spelled as
/// transformers' `SchedulerType` spells them; `exponential` is qtrain's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum ScheduleKind {
    /// `constant`: `base_lr` on every step. Warmup is ignored (as in transformers).
    #[serde(rename = "constant")]
    Constant,
    /// `constant_with_warmup`: linear warmup, then `base_lr`.
    #[serde(rename = "constant_with_warmup")]
    ConstantWithWarmup,
    /// `linear`: linear warmup, then linear decay to 0 at `total_steps`.
    #[serde(rename = "linear")]
    Linear,
    /// `cosine`: linear warmup, then cosine decay (`num_cycles`, default 0.5: to 0 at
    /// `total_steps`).
    #[serde(rename = "cosine")]
    Cosine,
    /// `cosine_with_min_lr`: like `cosine`, but decays to `min_lr` (or `min_lr_rate * base_lr`).
    #[serde(rename = "cosine_with_min_lr")]
    CosineWithMinLr,
    /// `polynomial`: linear warmup, then `(base_lr - lr_end) * (1 - progress)^power + lr_end`,
    /// and `lr_end` after `total_steps`.
    #[serde(rename = "polynomial")]
    Polynomial,
    /// `exponential` (qtrain-specific; transformers has no such scheduler): linear warmup, then
    /// `base_lr * gamma^(k - warmup)`, i.e. `gamma` is the decay factor per optimizer step.
    #[serde(rename = "exponential")]
    Exponential,
}

/// Scheduler names transformers knows but qtrain does not implement (they get a dedicated error).
const TRANSFORMERS_ONLY: [&str; 7] = [
    "cosine_with_restarts",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
    "constant_with_min_lr",
];

impl ScheduleKind {
    /// Every kind, in the order they are listed in error messages.
    pub const ALL: [ScheduleKind; 7] = [
        ScheduleKind::Constant,
        ScheduleKind::ConstantWithWarmup,
        ScheduleKind::Linear,
        ScheduleKind::Cosine,
        ScheduleKind::CosineWithMinLr,
        ScheduleKind::Polynomial,
        ScheduleKind::Exponential,
    ];

    /// The name as transformers spells it (`exponential` is qtrain's own).
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::ConstantWithWarmup => "constant_with_warmup",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::CosineWithMinLr => "cosine_with_min_lr",
            ScheduleKind::Polynomial => "polynomial",
            ScheduleKind::Exponential => "exponential",
        }
    }

    /// Whether the schedule has a warmup phase (all but `constant`).
    pub fn has_warmup(self) -> bool {
        self != ScheduleKind::Constant
    }

    fn valid_names() -> String {
        Self::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScheduleKind {
    type Err = OptimError;

    /// Parses a name exactly as transformers spells it (case-sensitive, like `SchedulerType`).
    fn from_str(s: &str) -> Result<Self> {
        if let Some(kind) = Self::ALL.iter().find(|k| k.as_str() == s) {
            return Ok(*kind);
        }
        if TRANSFORMERS_ONLY.contains(&s) {
            return Err(OptimError::UnsupportedScheduler { name: s.to_string(), valid: Self::valid_names() });
        }
        Err(OptimError::UnknownScheduler { name: s.to_string(), valid: Self::valid_names() })
    }
}

/// Deserialised through [`FromStr`], so a config file's unknown or transformers-only name gets
/// the same message as the command line's.
impl TryFrom<String> for ScheduleKind {
    type Error = OptimError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// How long the linear warmup is.
///
/// Serialised as `{"steps": 7}` or `{"ratio": 0.05}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warmup {
    /// An exact number of warmup steps (transformers' integer `warmup_steps`). It may exceed
    /// `total_steps`; as in transformers, the warmup then never finishes.
    Steps(u64),
    /// A fraction of `total_steps`, in `[0, 1]`: `ceil(total_steps * ratio)` steps, computed in
    /// f64 exactly as transformers' `TrainingArguments.get_warmup_steps` (so float artefacts
    /// carry over: `100 * 0.07 = 7.000000000000001` gives 8 steps). Transformers reads a float
    /// `warmup_steps` `>= 1` as a step count; here `Ratio(1.0)` means the whole run.
    Ratio(f64),
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup::Steps(0)
    }
}

impl Warmup {
    /// Number of warmup steps for a run of `total_steps` optimizer steps.
    pub fn steps(self, total_steps: u64) -> u64 {
        match self {
            Warmup::Steps(n) => n,
            // `math.ceil(num_training_steps * self.warmup_steps)`
            Warmup::Ratio(r) => (total_steps as f64 * r).ceil() as u64,
        }
    }

    fn validate(self) -> Result<()> {
        if let Warmup::Ratio(r) = self {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                return Err(OptimError::InvalidArgument {
                    param: "warmup ratio",
                    value: r.to_string(),
                    expected: "must be in [0, 1] (--warmup_steps takes a step count)".into(),
                });
            }
        }
        Ok(())
    }
}

/// Everything needed to build an [`LrSchedule`]. Optional fields apply to some kinds only;
/// setting one for a kind that does not use it is an error (as passing an unexpected
/// `lr_scheduler_kwargs` entry is in transformers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// The peak learning rate (transformers' `learning_rate`). Must be finite and > 0.
    pub base_lr: f64,
    #[serde(default)]
    pub warmup: Warmup,
    /// Total number of optimizer steps of the run (transformers' `num_training_steps`).
    pub total_steps: u64,
    /// `cosine`, `cosine_with_min_lr`: number of cosine waves (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_cycles: Option<f64>,
    /// `cosine_with_min_lr`: the final lr. Exactly one of `min_lr` and `min_lr_rate` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// `cosine_with_min_lr`: the final lr as a fraction of `base_lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr_rate: Option<f64>,
    /// `polynomial`: the final lr (default 1e-7). Must be below `base_lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_end: Option<f64>,
    /// `polynomial`: the power (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
    /// `exponential` (required): decay factor per optimizer step after warmup, in `(0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
}

impl ScheduleConfig {
    /// A config with no warmup and every optional argument at its default.
    pub fn new(kind: ScheduleKind, base_lr: f64, total_steps: u64) -> Self {
        ScheduleConfig {
            kind,
            base_lr,
            warmup: Warmup::default(),
            total_steps,
            num_cycles: None,
            min_lr: None,
            min_lr_rate: None,
            lr_end: None,
            power: None,
            gamma: None,
        }
    }

    pub fn with_warmup(mut self, warmup: Warmup) -> Self {
        self.warmup = warmup;
        self
    }
    pub fn with_num_cycles(mut self, num_cycles: f64) -> Self {
        self.num_cycles = Some(num_cycles);
        self
    }
    pub fn with_min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = Some(min_lr);
        self
    }
    pub fn with_min_lr_rate(mut self, min_lr_rate: f64) -> Self {
        self.min_lr_rate = Some(min_lr_rate);
        self
    }
    pub fn with_lr_end(mut self, lr_end: f64) -> Self {
        self.lr_end = Some(lr_end);
        self
    }
    pub fn with_power(mut self, power: f64) -> Self {
        self.power = Some(power);
        self
    }
    pub fn with_gamma(mut self, gamma: f64) -> Self {
        self.gamma = Some(gamma);
        self
    }
}

/// The kind-specific constants, resolved and validated.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Constant,
    ConstantWithWarmup,
    Linear,
    /// `cosine` is `cosine_with_min_lr` with `min_lr_rate = 0`: transformers defines
    /// `_get_cosine_schedule_with_warmup_lr_lambda` twice and the second (min-lr) definition wins.
    Cosine {
        num_cycles: f64,
        min_lr_rate: f64,
    },
    Polynomial {
        lr_end: f64,
        power: f64,
    },
    Exponential {
        gamma: f64,
    },
}

/// A validated learning-rate schedule. Serialises as its [`ScheduleConfig`] (and validates it
/// again when deserialised).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleConfig", into = "ScheduleConfig")]
pub struct LrSchedule {
    config: ScheduleConfig,
    warmup_steps: u64,
    shape: Shape,
}

impl From<LrSchedule> for ScheduleConfig {
    fn from(s: LrSchedule) -> Self {
        s.config
    }
}

impl TryFrom<ScheduleConfig> for LrSchedule {
    type Error = OptimError;
    fn try_from(config: ScheduleConfig) -> Result<Self> {
        LrSchedule::new(config)
    }
}

fn invalid(param: &'static str, value: f64, expected: &str) -> OptimError {
    OptimError::InvalidArgument { param, value: value.to_string(), expected: expected.to_string() }
}

impl LrSchedule {
    /// Validates `config` and resolves defaults.
    pub fn new(config: ScheduleConfig) -> Result<Self> {
        let kind = config.kind;
        let base_lr = config.base_lr;
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(invalid("base_lr", base_lr, "must be finite and > 0"));
        }
        config.warmup.validate()?;

        // Reject arguments the kind does not use.
        let optional: [(&'static str, Option<f64>, &[ScheduleKind]); 6] = [
            ("num_cycles", config.num_cycles, &[ScheduleKind::Cosine, ScheduleKind::CosineWithMinLr]),
            ("min_lr", config.min_lr, &[ScheduleKind::CosineWithMinLr]),
            ("min_lr_rate", config.min_lr_rate, &[ScheduleKind::CosineWithMinLr]),
            ("lr_end", config.lr_end, &[ScheduleKind::Polynomial]),
            ("power", config.power, &[ScheduleKind::Polynomial]),
            ("gamma", config.gamma, &[ScheduleKind::Exponential]),
        ];
        for (param, value, kinds) in optional {
            if value.is_some() && !kinds.contains(&kind) {
                return Err(OptimError::InapplicableArgument {
                    param,
                    kind: kind.as_str(),
                    applies_to: kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                });
            }
        }

        let num_cycles = config.num_cycles.unwrap_or(DEFAULT_NUM_CYCLES);
        if !(num_cycles.is_finite() && num_cycles > 0.0) {
            return Err(invalid("num_cycles", num_cycles, "must be finite and > 0"));
        }

        let shape = match kind {
            ScheduleKind::Constant => Shape::Constant,
            ScheduleKind::ConstantWithWarmup => Shape::ConstantWithWarmup,
            ScheduleKind::Linear => Shape::Linear,
            ScheduleKind::Cosine => Shape::Cosine { num_cycles, min_lr_rate: 0.0 },
            ScheduleKind::CosineWithMinLr => {
                let min_lr_rate = match (config.min_lr, config.min_lr_rate) {
                    (Some(_), Some(_)) => {
                        return Err(OptimError::InvalidArgument {
                            param: "min_lr/min_lr_rate",
                            value: "both set".into(),
                            expected: "set exactly one of min_lr and min_lr_rate".into(),
                        })
                    }
                    (None, None) => {
                        return Err(OptimError::MissingArgument { kind: kind.as_str(), what: "one of min_lr or min_lr_rate".into() })
                    }
                    (Some(min_lr), None) => {
                        if !(min_lr.is_finite() && (0.0..=base_lr).contains(&min_lr)) {
                            return Err(invalid("min_lr", min_lr, "must be in [0, base_lr]"));
                        }
                        // `min_lr_rate = min_lr / optimizer.defaults["lr"]`
                        min_lr / base_lr
                    }
                    (None, Some(rate)) => {
                        if !(rate.is_finite() && (0.0..=1.0).contains(&rate)) {
                            return Err(invalid("min_lr_rate", rate, "must be in [0, 1]"));
                        }
                        rate
                    }
                };
                Shape::Cosine { num_cycles, min_lr_rate }
            }
            ScheduleKind::Polynomial => {
                let lr_end = config.lr_end.unwrap_or(DEFAULT_LR_END);
                if !(lr_end.is_finite() && lr_end >= 0.0 && lr_end < base_lr) {
                    return Err(invalid("lr_end", lr_end, "must be >= 0 and smaller than base_lr"));
                }
                let power = config.power.unwrap_or(DEFAULT_POWER);
                if !(power.is_finite() && power > 0.0) {
                    return Err(invalid("power", power, "must be finite and > 0"));
                }
                Shape::Polynomial { lr_end, power }
            }
            ScheduleKind::Exponential => {
                let Some(gamma) = config.gamma else {
                    return Err(OptimError::MissingArgument {
                        kind: kind.as_str(),
                        what: "gamma (decay factor per step, in (0, 1])".into(),
                    });
                };
                if !(gamma.is_finite() && gamma > 0.0 && gamma <= 1.0) {
                    return Err(invalid("gamma", gamma, "must be in (0, 1]"));
                }
                Shape::Exponential { gamma }
            }
        };

        let warmup_steps = if kind.has_warmup() { config.warmup.steps(config.total_steps) } else { 0 };
        Ok(LrSchedule { config, warmup_steps, shape })
    }

    /// The config this schedule was built from.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    pub fn kind(&self) -> ScheduleKind {
        self.config.kind
    }

    pub fn base_lr(&self) -> f64 {
        self.config.base_lr
    }

    pub fn total_steps(&self) -> u64 {
        self.config.total_steps
    }

    /// The effective number of warmup steps (0 for `constant`, which ignores warmup).
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    /// The learning rate for optimizer step `step` (0-based): `base_lr * multiplier(step)`,
    /// exactly as `LambdaLR` computes it. Steps past `total_steps` follow the formulas as
    /// transformers does (linear stays at 0, polynomial at `lr_end`, cosine with
    /// `num_cycles = 0.5` climbs back up).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.config.base_lr * self.multiplier(step)
    }

    /// The `LambdaLR` lambda: the factor applied to `base_lr` at optimizer step `step`.
    pub fn multiplier(&self, step: u64) -> f64 {
        let warmup = self.warmup_steps;
        let total = self.config.total_steps;
        // Python ints: `num_training_steps - current_step` can be negative.
        let (k, w, t) = (step as i128, warmup as i128, total as i128);
        if self.shape != Shape::Constant && step < warmup {
            // `float(current_step) / float(max(1, num_warmup_steps))`
            return step as f64 / warmup.max(1) as f64;
        }
        match self.shape {
            Shape::Constant | Shape::ConstantWithWarmup => 1.0,
            Shape::Linear => {
                // `max(0.0, float(T - k) / float(max(1, T - W)))`
                py_max(0.0, (t - k) as f64 / (t - w).max(1) as f64)
            }
            Shape::Cosine { num_cycles, min_lr_rate } => {
                let progress = (k - w) as f64 / (t - w).max(1) as f64;
                let factor = 0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos());
                let factor = factor * (1.0 - min_lr_rate) + min_lr_rate;
                py_max(0.0, factor)
            }
            Shape::Polynomial { lr_end, power } => {
                let lr_init = self.config.base_lr;
                if k > t {
                    return lr_end / lr_init;
                }
                let decay_steps = t - w;
                if decay_steps == 0 {
                    // warmup == total == step: transformers raises ZeroDivisionError here (on
                    // the scheduler.step() after the last optimizer step). Use the limit value.
                    return lr_end / lr_init;
                }
                let lr_range = lr_init - lr_end;
                let pct_remaining = 1.0 - (k - w) as f64 / decay_steps as f64;
                let decay = lr_range * pct_remaining.powf(power) + lr_end;
                decay / lr_init
            }
            Shape::Exponential { gamma } => gamma.powf((k - w) as f64),
        }
    }
}

/// Python's `max(a, b)`: returns `a` unless `b > a`.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(config: ScheduleConfig) -> LrSchedule {
        LrSchedule::new(config).expect("valid config")
    }

    #[test]
    fn names_round_trip_through_fromstr_display_and_serde() {
        for kind in ScheduleKind::ALL {
            assert_eq!(kind.as_str().parse::<ScheduleKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ScheduleKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn unknown_names_list_valid_choices() {
        let err = "cosine_annealing".parse::<ScheduleKind>().unwrap_err();
        assert!(matches!(err, OptimError::UnknownScheduler { .. }));
        let msg = err.to_string();
        for kind in ScheduleKind::ALL {
            assert!(msg.contains(kind.as_str()), "{msg}");
        }
        // Case-sensitive, like transformers' SchedulerType.
        assert!("Linear".parse::<ScheduleKind>().is_err());
        let err = "cosine_with_restarts".parse::<ScheduleKind>().unwrap_err();
        assert!(matches!(err, OptimError::UnsupportedScheduler { .. }));
        assert!(err.to_string().contains("polynomial"));
    }

    #[test]
    fn warmup_ratio_uses_ceil_with_float_artefacts() {
        assert_eq!(Warmup::Ratio(0.05).steps(200), 10);
        // 200 * 0.033 = 6.6000000000000005 -> 7
        assert_eq!(Warmup::Ratio(0.033).steps(200), 7);
        // 100 * 0.07 = 7.000000000000001 in f64 -> 8, as in transformers.
        assert_eq!(Warmup::Ratio(0.07).steps(100), 8);
        assert_eq!(Warmup::Ratio(0.0).steps(200), 0);
        assert_eq!(Warmup::Ratio(1.0).steps(200), 200);
        assert_eq!(Warmup::Ratio(0.05).steps(1), 1);
        assert_eq!(Warmup::Steps(7).steps(3), 7);
    }

    #[test]
    fn first_warmup_step_has_lr_zero_and_ramps_linearly() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Linear, 1e-4, 100).with_warmup(Warmup::Steps(4)));
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(1), 1e-4 * 0.25);
        assert_eq!(s.lr_at(2), 1e-4 * 0.5);
        assert_eq!(s.lr_at(3), 1e-4 * 0.75);
        assert_eq!(s.lr_at(4), 1e-4);
        assert_eq!(s.lr_at(100), 0.0);
        assert_eq!(s.lr_at(150), 0.0);
    }

    #[test]
    fn warmup_zero_starts_at_base_lr() {
        for kind in ScheduleKind::ALL {
            let mut config = ScheduleConfig::new(kind, 2e-4, 50);
            match kind {
                ScheduleKind::CosineWithMinLr => config.min_lr_rate = Some(0.1),
                ScheduleKind::Exponential => config.gamma = Some(0.9),
                _ => {}
            }
            let s = sched(config);
            assert_eq!(s.warmup_steps(), 0);
            assert_eq!(s.lr_at(0), 2e-4, "{kind}");
        }
    }

    #[test]
    fn total_one_step() {
        // No warmup: the single step runs at base_lr.
        let s = sched(ScheduleConfig::new(ScheduleKind::Linear, 1e-4, 1));
        assert_eq!(s.lr_at(0), 1e-4);
        assert_eq!(s.lr_at(1), 0.0);
        // Any warmup ratio > 0 rounds up to 1 step = the whole run: the only step has lr 0
        // (this is what transformers does too).
        let s = sched(ScheduleConfig::new(ScheduleKind::Cosine, 1e-4, 1).with_warmup(Warmup::Ratio(0.05)));
        assert_eq!(s.warmup_steps(), 1);
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(1), 1e-4);
        let s = sched(ScheduleConfig::new(ScheduleKind::Polynomial, 1e-4, 1).with_warmup(Warmup::Steps(0)));
        assert_eq!(s.lr_at(0), 1e-4 * (((1e-4 - 1e-7) * 1.0 + 1e-7) / 1e-4));
        assert_eq!(s.lr_at(1), 1e-4 * (1e-7 / 1e-4));
    }

    #[test]
    fn polynomial_warmup_equal_total_does_not_divide_by_zero() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Polynomial, 1e-4, 5).with_warmup(Warmup::Steps(5)));
        assert_eq!(s.lr_at(4), 1e-4 * 0.8);
        let end = s.lr_at(5);
        assert!(end.is_finite() && (end - 1e-7).abs() < 1e-18, "{end}");
        assert!((s.lr_at(6) - 1e-7).abs() < 1e-18);
    }

    #[test]
    fn constant_ignores_warmup_like_transformers() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Constant, 3e-4, 10).with_warmup(Warmup::Ratio(0.5)));
        assert_eq!(s.warmup_steps(), 0);
        assert_eq!(s.lr_at(0), 3e-4);
        let s = sched(ScheduleConfig::new(ScheduleKind::ConstantWithWarmup, 3e-4, 10).with_warmup(Warmup::Ratio(0.5)));
        assert_eq!(s.warmup_steps(), 5);
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(5), 3e-4);
        assert_eq!(s.lr_at(1000), 3e-4);
    }

    #[test]
    fn cosine_endpoints() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Cosine, 1e-4, 110).with_warmup(Warmup::Steps(10)));
        assert_eq!(s.lr_at(10), 1e-4);
        assert!((s.lr_at(60) - 0.5e-4).abs() < 1e-18);
        assert!(s.lr_at(110) < 1e-20);
        // Past the end the half cosine climbs back, as transformers' formula does.
        assert!(s.lr_at(120) > s.lr_at(111));
    }

    #[test]
    fn cosine_with_min_lr_reaches_min_lr_either_way() {
        let by_rate = sched(ScheduleConfig::new(ScheduleKind::CosineWithMinLr, 1e-4, 100).with_min_lr_rate(0.1));
        let by_lr = sched(ScheduleConfig::new(ScheduleKind::CosineWithMinLr, 1e-4, 100).with_min_lr(1e-5));
        assert!((by_rate.lr_at(100) - 1e-5).abs() < 1e-18);
        assert!((by_lr.lr_at(100) - 1e-5).abs() < 1e-18);
        assert_eq!(by_rate.lr_at(0), 1e-4);
    }

    #[test]
    fn exponential_decays_by_gamma_per_step_after_warmup() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Exponential, 1e-3, 100).with_warmup(Warmup::Steps(2)).with_gamma(0.5));
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(1), 0.5e-3);
        assert_eq!(s.lr_at(2), 1e-3);
        assert_eq!(s.lr_at(3), 0.5e-3);
        assert_eq!(s.lr_at(5), 0.125e-3);
    }

    #[test]
    fn warmup_longer_than_run_never_finishes() {
        let s = sched(ScheduleConfig::new(ScheduleKind::Linear, 1e-4, 10).with_warmup(Warmup::Steps(20)));
        assert_eq!(s.lr_at(10), 1e-4 * 0.5);
        assert_eq!(s.lr_at(20), 0.0);
    }

    #[test]
    fn invalid_configs_are_rejected_with_reasons() {
        use ScheduleKind::*;
        let cases: Vec<(ScheduleConfig, &str)> = vec![
            (ScheduleConfig::new(Linear, 0.0, 10), "base_lr"),
            (ScheduleConfig::new(Linear, f64::NAN, 10), "base_lr"),
            (ScheduleConfig::new(Linear, 1e-4, 10).with_warmup(Warmup::Ratio(1.5)), "warmup ratio"),
            (ScheduleConfig::new(Linear, 1e-4, 10).with_warmup(Warmup::Ratio(-0.1)), "warmup ratio"),
            (ScheduleConfig::new(Linear, 1e-4, 10).with_gamma(0.9), "gamma"),
            (ScheduleConfig::new(Cosine, 1e-4, 10).with_min_lr(1e-6), "min_lr"),
            (ScheduleConfig::new(CosineWithMinLr, 1e-4, 10), "min_lr"),
            (ScheduleConfig::new(CosineWithMinLr, 1e-4, 10).with_min_lr(1e-6).with_min_lr_rate(0.1), "exactly one"),
            (ScheduleConfig::new(CosineWithMinLr, 1e-4, 10).with_min_lr_rate(1.5), "min_lr_rate"),
            (ScheduleConfig::new(Polynomial, 1e-4, 10).with_lr_end(1e-4), "lr_end"),
            (ScheduleConfig::new(Polynomial, 1e-4, 10).with_power(0.0), "power"),
            (ScheduleConfig::new(Exponential, 1e-4, 10), "gamma"),
            (ScheduleConfig::new(Exponential, 1e-4, 10).with_gamma(1.5), "gamma"),
            (ScheduleConfig::new(Cosine, 1e-4, 10).with_num_cycles(-1.0), "num_cycles"),
        ];
        for (config, needle) in cases {
            let err = LrSchedule::new(config.clone()).expect_err(&format!("{config:?}"));
            assert!(err.to_string().contains(needle), "{err} (wanted {needle})");
        }
    }

    #[test]
    fn serde_round_trip_and_validation_on_deserialise() {
        let s = sched(ScheduleConfig::new(ScheduleKind::CosineWithMinLr, 1e-4, 200).with_warmup(Warmup::Ratio(0.05)).with_min_lr(1e-6));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"kind":"cosine_with_min_lr","base_lr":0.0001,"warmup":{"ratio":0.05},"total_steps":200,"min_lr":1e-6}"#);
        let back: LrSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let bad = r#"{"kind":"polynomial","base_lr":1e-4,"total_steps":10,"gamma":0.5}"#;
        let err = serde_json::from_str::<LrSchedule>(bad).unwrap_err();
        assert!(err.to_string().contains("gamma"), "{err}");
        let unknown = r#"{"kind":"linear","base_lr":1e-4,"total_steps":10,"warmup_ratio":0.1}"#;
        assert!(serde_json::from_str::<ScheduleConfig>(unknown).is_err());
    }
}
