//! What a run reports: `logging.jsonl` records with ms-swift's keys, ms-swift's time format,
//! and the process's peak memory.
//!
//! This module must not decide when to log (the trainer does) and must not write files.

use serde_json::{json, Map, Value};

/// "1 step", "2 steps": a count with its noun, for log lines.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// ms-swift's `format_time`: `"3s"`, `"2m 5s"`, `"1h 0m 7s"`, `"2d 3h 0m 0s"`.
pub fn format_time(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let days = (s / 86400.0).floor() as u64;
    let hours = ((s % 86400.0) / 3600.0).floor() as u64;
    let minutes = ((s % 3600.0) / 60.0).floor() as u64;
    let secs = (s % 60.0).floor() as u64;
    if days > 0 {
        format!("{days}d {hours}h {minutes}m {secs}s")
    } else if hours > 0 {
        format!("{hours}h {minutes}m {secs}s")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Peak resident memory of this process in GiB (`VmHWM` of `/proc/self/status`); `None` where
/// the file does not exist (not Linux).
pub fn peak_memory_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

/// ms-swift rounds every float it logs to 8 decimals.
pub fn round8(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e8).round() / 1e8
    } else {
        x
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Loss sums over the optimizer steps since the last log.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    pub loss_sum: f64,
    pub targets: usize,
    pub correct: usize,
    pub steps: u64,
}

impl Window {
    /// Mean loss over the window's supervised tokens (`None` if it had none).
    pub fn loss(&self) -> Option<f64> {
        (self.targets > 0).then(|| self.loss_sum / self.targets as f64)
    }
    pub fn token_acc(&self) -> Option<f64> {
        (self.targets > 0).then(|| self.correct as f64 / self.targets as f64)
    }
}

/// One training log, as the keys of ms-swift's `logging.jsonl`.
#[derive(Clone, Debug)]
pub struct TrainLog {
    pub window: Window,
    /// Global gradient norm (before clipping) of the window's last step; `None` when that
    /// step had no supervised token and was skipped.
    pub grad_norm: Option<f64>,
    /// The learning rate the window's last step used.
    pub learning_rate: f64,
    pub epoch: f64,
    pub global_step: u64,
    pub max_steps: u64,
    /// Seconds since the training loop of this process started.
    pub elapsed: f64,
    /// The step this process started from (0, or the resumed checkpoint's step): speed and
    /// remaining time count only the steps run here.
    pub start_step: u64,
}

/// Seconds per optimizer step over the steps this process ran.
fn seconds_per_step(elapsed: f64, global_step: u64, start_step: u64) -> f64 {
    let done = global_step.saturating_sub(start_step);
    if done > 0 {
        elapsed / done as f64
    } else {
        0.0
    }
}

/// The progress keys both log records end with (ms-swift's order): step, percentage, elapsed and
/// remaining time, peak memory. Returns seconds per step.
fn insert_progress(m: &mut Map<String, Value>, global_step: u64, max_steps: u64, start_step: u64, elapsed: f64) -> f64 {
    m.insert("global_step/max_steps".into(), json!(format!("{global_step}/{max_steps}")));
    let fraction = if max_steps > 0 { global_step as f64 / max_steps as f64 } else { 0.0 };
    m.insert("percentage".into(), json!(format!("{:.2}%", fraction * 100.0)));
    m.insert("elapsed_time".into(), json!(format_time(elapsed)));
    let speed = seconds_per_step(elapsed, global_step, start_step);
    m.insert("remaining_time".into(), json!(format_time(max_steps.saturating_sub(global_step) as f64 * speed)));
    m.insert("memory(GiB)".into(), json!(round2(peak_memory_gib().unwrap_or(0.0))));
    speed
}

impl TrainLog {
    /// The JSON object in ms-swift's key order. A loss that does not exist (no supervised
    /// token) is `null`, never 0.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let opt = |x: Option<f64>| x.map(|v| json!(round8(v))).unwrap_or(Value::Null);
        m.insert("loss".into(), opt(self.window.loss()));
        m.insert("grad_norm".into(), opt(self.grad_norm));
        m.insert("learning_rate".into(), json!(round8(self.learning_rate)));
        m.insert("token_acc".into(), opt(self.window.token_acc()));
        m.insert("epoch".into(), json!(round8(self.epoch)));
        let speed = insert_progress(&mut m, self.global_step, self.max_steps, self.start_step, self.elapsed);
        m.insert("train_speed(s/it)".into(), json!((speed * 1e6).round() / 1e6));
        Value::Object(m)
    }

    /// One human-readable progress line.
    pub fn progress_line(&self) -> String {
        let f = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "n/a".into());
        let speed = seconds_per_step(self.elapsed, self.global_step, self.start_step);
        format!(
            "step {}/{} | loss {} | grad_norm {} | lr {:.3e} | token_acc {} | epoch {:.2} | {:.3} s/it | elapsed {} | remaining {}",
            self.global_step,
            self.max_steps,
            f(self.window.loss(), 4),
            f(self.grad_norm, 4),
            self.learning_rate,
            f(self.window.token_acc(), 4),
            self.epoch,
            speed,
            format_time(self.elapsed),
            format_time(self.max_steps.saturating_sub(self.global_step) as f64 * speed)
        )
    }
}

/// One evaluation, as ms-swift's `logging.jsonl` eval lines, plus qtrain's self-cognition
/// keys (`eval_self_cognition_acc`, `eval_repetition_rate`; see [`crate::cognition`]). A key
/// whose value was not measured is left out: a run without a validation set that teaches an
/// identity logs only the self-cognition keys, at its last step.
#[derive(Clone, Debug)]
pub struct EvalLog {
    /// Validation loss and token accuracy (`None` without a validation set).
    pub loss: Option<f64>,
    pub token_acc: Option<f64>,
    /// Held-out identity questions answered with the configured name and author.
    pub self_cognition_acc: Option<f64>,
    /// Identity answers that repeat a 4-token run three or more times.
    pub repetition_rate: Option<f64>,
    /// Seconds the evaluation took.
    pub runtime: f64,
    pub samples: usize,
    /// Evaluation batches.
    pub batches: usize,
    pub epoch: f64,
    pub global_step: u64,
    pub max_steps: u64,
    /// Seconds since the training loop of this process started, and the step it started from.
    pub elapsed: f64,
    pub start_step: u64,
}

impl EvalLog {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let keys = [
            ("eval_loss", self.loss),
            ("eval_token_acc", self.token_acc),
            ("eval_self_cognition_acc", self.self_cognition_acc),
            ("eval_repetition_rate", self.repetition_rate),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                m.insert(key.into(), json!(round8(v)));
            }
        }
        m.insert("eval_runtime".into(), json!((self.runtime * 1e4).round() / 1e4));
        let rt = self.runtime.max(1e-9);
        m.insert("eval_samples_per_second".into(), json!((self.samples as f64 / rt * 1e3).round() / 1e3));
        m.insert("eval_steps_per_second".into(), json!((self.batches as f64 / rt * 1e3).round() / 1e3));
        m.insert("epoch".into(), json!(round8(self.epoch)));
        insert_progress(&mut m, self.global_step, self.max_steps, self.start_step, self.elapsed);
        Value::Object(m)
    }

    pub fn progress_line(&self) -> String {
        let mut line = format!("eval at step {}/{}", self.global_step, self.max_steps);
        if let (Some(loss), Some(acc)) = (self.loss, self.token_acc) {
            line.push_str(&format!(" | eval_loss {loss:.4} | eval_token_acc {acc:.4} | {} samples", self.samples));
        }
        if let (Some(acc), Some(rep)) = (self.self_cognition_acc, self.repetition_rate) {
            line.push_str(&format!(" | self_cognition_acc {acc:.4} | repetition_rate {rep:.4}"));
        }
        line.push_str(&format!(" | {:.2}s", self.runtime));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_matches_ms_swift() {
        assert_eq!(format_time(0.4), "0s");
        assert_eq!(format_time(59.9), "59s");
        assert_eq!(format_time(125.0), "2m 5s");
        assert_eq!(format_time(3607.0), "1h 0m 7s");
        assert_eq!(format_time(2.0 * 86400.0 + 3.0 * 3600.0), "2d 3h 0m 0s");
    }

    #[test]
    fn log_has_ms_swift_keys_in_order_and_null_for_missing_loss() {
        let log = TrainLog {
            window: Window { loss_sum: 6.0, targets: 4, correct: 1, steps: 1 },
            grad_norm: Some(0.5),
            learning_rate: 0.0,
            epoch: 0.25,
            global_step: 5,
            max_steps: 94,
            elapsed: 10.0,
            start_step: 0,
        };
        let v = log.to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "loss",
                "grad_norm",
                "learning_rate",
                "token_acc",
                "epoch",
                "global_step/max_steps",
                "percentage",
                "elapsed_time",
                "remaining_time",
                "memory(GiB)",
                "train_speed(s/it)"
            ]
        );
        assert_eq!(v["loss"], 1.5);
        assert_eq!(v["token_acc"], 0.25);
        assert_eq!(v["global_step/max_steps"], "5/94");
        assert_eq!(v["train_speed(s/it)"], 2.0);
        assert_eq!(v["remaining_time"], "2m 58s");
        let empty = TrainLog { window: Window::default(), grad_norm: None, ..log.clone() };
        assert!(empty.to_json()["loss"].is_null());
        assert!(empty.to_json()["grad_norm"].is_null());
        assert!(peak_memory_gib().unwrap_or(1.0) > 0.0);
        // Resumed at step 3: 2 steps in 10 s → 5 s/it.
        let resumed = TrainLog { start_step: 3, ..log.clone() };
        assert_eq!(resumed.to_json()["train_speed(s/it)"], 5.0);
    }

    #[test]
    fn eval_log_has_ms_swift_keys() {
        let e = EvalLog {
            loss: Some(1.234567891),
            token_acc: Some(0.5),
            self_cognition_acc: None,
            repetition_rate: None,
            runtime: 2.0,
            samples: 8,
            batches: 4,
            epoch: 1.5,
            global_step: 10,
            max_steps: 20,
            elapsed: 20.0,
            start_step: 0,
        };
        let v = e.to_json();
        assert_eq!(v["eval_loss"], 1.23456789);
        assert_eq!(v["eval_token_acc"], 0.5);
        assert_eq!(v["eval_samples_per_second"], 4.0);
        assert_eq!(v["global_step/max_steps"], "10/20");
        assert_eq!(v["remaining_time"], "20s");
        assert!(v.get("eval_self_cognition_acc").is_none());
        // Self-cognition keys follow the token accuracy; a run without a validation set has only them.
        let both = EvalLog { self_cognition_acc: Some(0.3), repetition_rate: Some(0.1), ..e.clone() }.to_json();
        let keys: Vec<&str> = both.as_object().unwrap().keys().map(String::as_str).take(4).collect();
        assert_eq!(keys, ["eval_loss", "eval_token_acc", "eval_self_cognition_acc", "eval_repetition_rate"]);
        let only = EvalLog { loss: None, token_acc: None, self_cognition_acc: Some(0.3), repetition_rate: Some(0.1), ..e }.to_json();
        assert!(only.get("eval_loss").is_none() && only["eval_self_cognition_acc"] == 0.3);
    }
}
