//! `max_length` with ms-swift's `truncation_strategy` on tokenized conversations.
//!
//! * `delete` (ms-swift's default, also spelled `raise` there): a sample longer than
//!   `max_length` is dropped; it is left untouched and the outcome says so.
//! * `left`: keep the last `max_length` tokens (the start of the conversation is cut).
//! * `right`: keep the first `max_length` tokens (the end is cut).
//!
//! After a cut, the label of the first kept token is set to [`IGNORE_INDEX`], as ms-swift's
//! `Template._truncate` does: no token precedes it, so nothing can be trained to predict it.
//! A cut can leave a sample without supervised tokens (everything the assistant said was
//! cut away); the outcome reports it and the caller decides to drop it.
//!
//! This module only shortens id and label vectors: it must not render or tokenize.

use std::str::FromStr;

use crate::conversation::{TokenizedConversation, IGNORE_INDEX};
use crate::error::DataError;

/// ms-swift's `--truncation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationStrategy {
    /// Drop samples longer than `max_length`.
    #[default]
    Delete,
    /// Keep the last `max_length` tokens.
    Left,
    /// Keep the first `max_length` tokens.
    Right,
}

impl FromStr for TruncationStrategy {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "delete" | "raise" => Ok(TruncationStrategy::Delete),
            "left" => Ok(TruncationStrategy::Left),
            "right" => Ok(TruncationStrategy::Right),
            other => Err(DataError::option("truncation_strategy", format!("unknown value `{other}`; valid: delete, left, right"))),
        }
    }
}

/// What [`truncate_tokens`] did to one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationOutcome {
    /// Not longer than `max_length`: unchanged.
    Fits,
    /// Cut to `max_length`.
    Truncated {
        /// Tokens removed.
        removed_tokens: usize,
        /// Supervised tokens (labels ≠ -100) left after the cut, counting the reset first label.
        supervised_left: usize,
    },
    /// Longer than `max_length` under `delete`: the caller must drop it (left unchanged).
    Delete { length: usize },
}

/// Cut `input_ids` and `labels` (same length) to `max_length` by `strategy`.
pub fn truncate_tokens(
    input_ids: &mut Vec<u32>,
    labels: &mut Vec<i32>,
    max_length: usize,
    strategy: TruncationStrategy,
) -> TruncationOutcome {
    debug_assert_eq!(input_ids.len(), labels.len(), "input_ids and labels must be aligned");
    let length = input_ids.len();
    if length <= max_length {
        return TruncationOutcome::Fits;
    }
    let removed_tokens = length - max_length;
    match strategy {
        TruncationStrategy::Delete => return TruncationOutcome::Delete { length },
        TruncationStrategy::Right => {
            input_ids.truncate(max_length);
            labels.truncate(max_length);
        }
        TruncationStrategy::Left => {
            input_ids.drain(..removed_tokens);
            labels.drain(..removed_tokens);
        }
    }
    if let Some(first) = labels.first_mut() {
        *first = IGNORE_INDEX;
    }
    let supervised_left = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    TruncationOutcome::Truncated { removed_tokens, supervised_left }
}

impl TokenizedConversation {
    /// [`truncate_tokens`] on this conversation, keeping `num_supervised_tokens` right.
    /// `rendered` and `supervised_spans` keep describing the whole rendering.
    pub fn truncate(&mut self, max_length: usize, strategy: TruncationStrategy) -> TruncationOutcome {
        let outcome = truncate_tokens(&mut self.input_ids, &mut self.labels, max_length, strategy);
        if let TruncationOutcome::Truncated { supervised_left, .. } = outcome {
            self.num_supervised_tokens = supervised_left;
        }
        outcome
    }
}

/// Counts of truncation outcomes over a dataset, for the run's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncationReport {
    pub fits: usize,
    pub truncated: usize,
    pub deleted: usize,
    /// Tokens removed by cuts.
    pub removed_tokens: usize,
    /// Cut samples left without any supervised token.
    pub truncated_without_targets: usize,
}

impl TruncationReport {
    pub fn record(&mut self, outcome: TruncationOutcome) {
        match outcome {
            TruncationOutcome::Fits => self.fits += 1,
            TruncationOutcome::Truncated { removed_tokens, supervised_left } => {
                self.truncated += 1;
                self.removed_tokens += removed_tokens;
                self.truncated_without_targets += usize::from(supervised_left == 0);
            }
            TruncationOutcome::Delete { .. } => self.deleted += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: i32 = IGNORE_INDEX;

    // Ten tokens 10..20; the "assistant" tokens 15..20 are supervised.
    fn sample() -> (Vec<u32>, Vec<i32>) {
        ((10..20).collect(), vec![I, I, I, I, I, 15, 16, 17, 18, 19])
    }

    #[test]
    fn strategies_on_a_known_sequence() {
        let (mut ids, mut labels) = sample();
        assert_eq!(truncate_tokens(&mut ids, &mut labels, 10, TruncationStrategy::Delete), TruncationOutcome::Fits);
        assert_eq!(truncate_tokens(&mut ids, &mut labels, 6, TruncationStrategy::Delete), TruncationOutcome::Delete { length: 10 });
        assert_eq!((ids.len(), labels.len()), (10, 10));

        let (mut ids, mut labels) = sample();
        let out = truncate_tokens(&mut ids, &mut labels, 6, TruncationStrategy::Right);
        assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 4, supervised_left: 1 });
        assert_eq!(ids, vec![10, 11, 12, 13, 14, 15]);
        assert_eq!(labels, vec![I, I, I, I, I, 15]);

        let (mut ids, mut labels) = sample();
        let out = truncate_tokens(&mut ids, &mut labels, 6, TruncationStrategy::Left);
        assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 4, supervised_left: 5 });
        assert_eq!(ids, vec![14, 15, 16, 17, 18, 19]);
        assert_eq!(labels, vec![I, 15, 16, 17, 18, 19]);

        // The first kept token's label is reset: nothing precedes it.
        let (mut ids, mut labels) = sample();
        let out = truncate_tokens(&mut ids, &mut labels, 3, TruncationStrategy::Left);
        assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 7, supervised_left: 2 });
        assert_eq!(labels, vec![I, 18, 19]);

        let (mut ids, mut labels) = sample();
        let out = truncate_tokens(&mut ids, &mut labels, 4, TruncationStrategy::Right);
        assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 6, supervised_left: 0 });
    }

    #[test]
    fn report_counts_outcomes() {
        let mut report = TruncationReport::default();
        for outcome in [
            TruncationOutcome::Fits,
            TruncationOutcome::Delete { length: 9 },
            TruncationOutcome::Truncated { removed_tokens: 3, supervised_left: 0 },
            TruncationOutcome::Truncated { removed_tokens: 2, supervised_left: 5 },
        ] {
            report.record(outcome);
        }
        assert_eq!(report, TruncationReport { fits: 1, truncated: 2, deleted: 1, removed_tokens: 5, truncated_without_targets: 1 });
    }

    #[test]
    fn parses_ms_swift_names() {
        assert_eq!("delete".parse::<TruncationStrategy>().unwrap(), TruncationStrategy::Delete);
        assert_eq!("raise".parse::<TruncationStrategy>().unwrap(), TruncationStrategy::Delete);
        assert_eq!("left".parse::<TruncationStrategy>().unwrap(), TruncationStrategy::Left);
        assert_eq!("right".parse::<TruncationStrategy>().unwrap(), TruncationStrategy::Right);
        let err = "split".parse::<TruncationStrategy>().unwrap_err();
        assert_eq!(err.to_string(), "`truncation_strategy`: unknown value `split`; valid: delete, left, right");
    }
}
