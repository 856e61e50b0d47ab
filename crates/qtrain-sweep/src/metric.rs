//! The objective's metric and its [`Direction`].
//!
//! `--metric NAME` picks the value a trial reports (the caller reads it from its run, e.g.
//! `eval_loss` from the last evaluation); `--direction` is needed only when the name does not
//! say it: a name containing `loss`, `perplexity` or `ppl` is minimised, one containing `acc`
//! (`eval_token_acc`, `self_cognition_acc`) is maximised, anything else must be told.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};

/// Whether smaller or larger metric values are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        }
    }

    /// Orders finite values best first: the comparator for `sort_by`.
    pub fn cmp_best_first(self, a: f64, b: f64) -> std::cmp::Ordering {
        match self {
            Direction::Minimize => a.total_cmp(&b),
            Direction::Maximize => b.total_cmp(&a),
        }
    }

    /// Maps a value so that smaller is better in both directions.
    pub fn loss_like(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }
}

impl FromStr for Direction {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Direction> {
        match s {
            "minimize" | "min" => Ok(Direction::Minimize),
            "maximize" | "max" => Ok(Direction::Maximize),
            other => Err(SweepError::InvalidConfig { message: format!("unknown direction {other:?}; valid: minimize, maximize") }),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        })
    }
}

/// The metric a study optimises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub direction: Direction,
}

impl Metric {
    /// `--metric NAME [--direction D]`: an explicit direction wins; otherwise it is inferred
    /// from the name (see the module docs) or the call fails asking for `--direction`.
    pub fn new(name: &str, direction: Option<Direction>) -> Result<Metric> {
        if name.is_empty() {
            return Err(SweepError::InvalidConfig { message: "the metric name is empty (e.g. --metric eval_loss)".into() });
        }
        let direction = match direction.or_else(|| Metric::infer_direction(name)) {
            Some(d) => d,
            None => return Err(SweepError::UnknownDirection { metric: name.to_string() }),
        };
        Ok(Metric { name: name.to_string(), direction })
    }

    /// `eval_loss` → minimise; `eval_token_acc`, `self_cognition_acc` → maximise.
    pub fn infer_direction(name: &str) -> Option<Direction> {
        let n = name.to_ascii_lowercase();
        if n.contains("loss") || n.contains("perplexity") || n.contains("ppl") {
            Some(Direction::Minimize)
        } else if n.contains("acc") {
            Some(Direction::Maximize)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_follow_the_metric_name_unless_given() {
        assert_eq!(Metric::new("eval_loss", None).unwrap().direction, Direction::Minimize);
        assert_eq!(Metric::new("eval_token_acc", None).unwrap().direction, Direction::Maximize);
        assert_eq!(Metric::new("self_cognition_acc", None).unwrap().direction, Direction::Maximize);
        assert_eq!(Metric::new("eval_loss", Some(Direction::Maximize)).unwrap().direction, Direction::Maximize);
        let err = Metric::new("bleu", None).unwrap_err().to_string();
        assert!(err.contains("--direction"), "{err}");
        assert_eq!(Metric::new("bleu", Some(Direction::Maximize)).unwrap().direction, Direction::Maximize);
        assert_eq!("maximize".parse::<Direction>().unwrap(), Direction::Maximize);
        assert!("up".parse::<Direction>().is_err());
    }

    #[test]
    fn better_is_direction_aware() {
        assert!(Direction::Minimize.better(0.1, 0.2));
        assert!(Direction::Maximize.better(0.2, 0.1));
        let mut v = vec![0.3, 0.1, 0.2];
        v.sort_by(|a, b| Direction::Maximize.cmp_best_first(*a, *b));
        assert_eq!(v, [0.3, 0.2, 0.1]);
    }
}
