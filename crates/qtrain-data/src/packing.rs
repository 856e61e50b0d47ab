//! Packing several tokenized samples into rows of at most `max_length` tokens (ms-swift's
//! `--packing true`), and the next-token targets of a packed row.
//!
//! Grouping ([`plan_packing`]), as ms-swift's `calculate_matched_group`:
//! * [`PackingStrategy::BestFitDecreasing`] (default, ms-swift's `binpack`): samples in
//!   decreasing length (ties: lower index first); each goes into the open row with the
//!   least room that still fits it (ties: the older row), else a new row. Fewest rows in
//!   practice; rows come out in creation order, and the samples within a row in their
//!   input order.
//! * [`PackingStrategy::Sequential`] (ms-swift's `sequential`, next-fit): samples in input
//!   order; a row is closed when the next sample does not fit. Keeps the dataset order.
//!
//! A packed row ([`PackedRow`]) concatenates its samples' `input_ids` and `labels`; per
//! token, `segment_ids` (0-based index of the sample within the row) and `position_ids`
//! (restarting at 0 for each sample, which is what RoPE sees, so a packed sample is
//! encoded exactly as it would be alone). Attention must stay within a segment
//! ([`PackedRow::cu_seqlens`] gives the boundaries for a block-diagonal causal mask).
//!
//! Labels are concatenated unshifted. The next-token shift must respect segments:
//! [`next_token_targets`] gives, for each position `i`, the label of `i + 1` when both are
//! in the same segment and [`IGNORE_INDEX`] otherwise, so a sample's last token never
//! learns to predict the next sample's first token. For one unpacked sample (all segment
//! ids 0) it is transformers' `labels[1:]` shift with `-100` appended.
//!
//! This module is pure data over id vectors: it must not tokenize, pad or build tensors.

use std::collections::BTreeSet;

use crate::conversation::{TokenizedConversation, IGNORE_INDEX};
use crate::error::{DataError, Result};

/// How samples are grouped into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackingStrategy {
    #[default]
    BestFitDecreasing,
    Sequential,
}

/// A tokenized sample that can be packed.
pub trait TokenSequence {
    fn input_ids(&self) -> &[u32];
    /// Aligned with `input_ids`, unshifted; [`IGNORE_INDEX`] where not trained on.
    fn labels(&self) -> &[i32];
}

impl TokenSequence for TokenizedConversation {
    fn input_ids(&self) -> &[u32] {
        &self.input_ids
    }
    fn labels(&self) -> &[i32] {
        &self.labels
    }
}

impl TokenSequence for (Vec<u32>, Vec<i32>) {
    fn input_ids(&self) -> &[u32] {
        &self.0
    }
    fn labels(&self) -> &[i32] {
        &self.1
    }
}

/// Several samples in one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedRow {
    /// `[T]`, T ≤ max_length.
    pub input_ids: Vec<u32>,
    /// `[T]`, unshifted, concatenated per sample.
    pub labels: Vec<i32>,
    /// `[T]`: index of the token's sample within this row (0, 0, …, 1, 1, …).
    pub segment_ids: Vec<u32>,
    /// `[T]`: position within the token's sample (0, 1, …, 0, 1, …).
    pub position_ids: Vec<u32>,
    /// Indices of the packed samples in the input, in row order.
    pub samples: Vec<usize>,
}

impl PackedRow {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// `[S + 1]` cumulative segment boundaries `[0, len_0, len_0 + len_1, …, T]`
    /// (flash-attention's `cu_seqlens`).
    pub fn cu_seqlens(&self) -> Vec<u32> {
        let mut bounds = vec![0u32];
        for (i, w) in self.segment_ids.windows(2).enumerate() {
            if w[0] != w[1] {
                bounds.push(i as u32 + 1);
            }
        }
        if !self.is_empty() {
            bounds.push(self.len() as u32);
        }
        bounds
    }

    /// `[T]` next-token targets that never cross a segment boundary; see [`next_token_targets`].
    pub fn next_token_targets(&self) -> Vec<i32> {
        next_token_targets(&self.labels, &self.segment_ids)
    }
}

/// `[T]` targets for next-token loss: `targets[i] = labels[i + 1]` when token `i + 1` is in
/// the same segment as token `i`, else [`IGNORE_INDEX`] (so each segment's last token, and
/// the row's last token, predicts nothing). Loss = mean over `targets[i] ≠ -100` of
/// CE(logits[i], targets[i]).
pub fn next_token_targets(labels: &[i32], segment_ids: &[u32]) -> Vec<i32> {
    assert_eq!(labels.len(), segment_ids.len(), "labels and segment_ids must be aligned");
    (0..labels.len())
        .map(|i| match (segment_ids.get(i), segment_ids.get(i + 1)) {
            (Some(a), Some(b)) if a == b => labels[i + 1],
            _ => IGNORE_INDEX,
        })
        .collect()
}

/// Group sample indices into rows of total length ≤ `max_length` (see the module docs).
/// Every sample must have 1..=`max_length` tokens (truncate first).
pub fn plan_packing(lengths: &[usize], max_length: usize, strategy: PackingStrategy) -> Result<Vec<Vec<usize>>> {
    if let Some((i, &len)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > max_length) {
        return Err(DataError::Packing {
            message: format!(
                "sample {i} has {len} tokens; packed samples need 1 to max_length = {max_length} (truncate or filter them first)"
            ),
        });
    }
    Ok(match strategy {
        PackingStrategy::Sequential => {
            let mut rows = Vec::new();
            let (mut row, mut used) = (Vec::new(), 0);
            for (i, &len) in lengths.iter().enumerate() {
                if used + len > max_length {
                    rows.push(std::mem::take(&mut row));
                    used = 0;
                }
                row.push(i);
                used += len;
            }
            if !row.is_empty() {
                rows.push(row);
            }
            rows
        }
        PackingStrategy::BestFitDecreasing => {
            let mut order: Vec<usize> = (0..lengths.len()).collect();
            order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
            let mut rows: Vec<Vec<usize>> = Vec::new();
            // (room left, row index): the first entry at or above (len, 0) is the
            // tightest fit, the oldest row among equals.
            let mut open: BTreeSet<(usize, usize)> = BTreeSet::new();
            for i in order {
                let len = lengths[i];
                match open.range((len, 0)..).next().copied() {
                    Some((room, row)) => {
                        open.remove(&(room, row));
                        rows[row].push(i);
                        if room > len {
                            open.insert((room - len, row));
                        }
                    }
                    None => {
                        rows.push(vec![i]);
                        if max_length > len {
                            open.insert((max_length - len, rows.len() - 1));
                        }
                    }
                }
            }
            for row in &mut rows {
                row.sort_unstable();
            }
            rows
        }
    })
}

/// Concatenate `samples[group[0]], samples[group[1]], …` into one row.
pub fn build_packed_row<S: TokenSequence>(samples: &[S], group: &[usize]) -> PackedRow {
    let total: usize = group.iter().map(|&i| samples[i].input_ids().len()).sum();
    let mut row = PackedRow {
        input_ids: Vec::with_capacity(total),
        labels: Vec::with_capacity(total),
        segment_ids: Vec::with_capacity(total),
        position_ids: Vec::with_capacity(total),
        samples: group.to_vec(),
    };
    for (segment, &i) in group.iter().enumerate() {
        let (ids, labels) = (samples[i].input_ids(), samples[i].labels());
        assert_eq!(ids.len(), labels.len(), "sample {i}: input_ids and labels must be aligned");
        row.input_ids.extend_from_slice(ids);
        row.labels.extend_from_slice(labels);
        row.segment_ids.extend(std::iter::repeat_n(segment as u32, ids.len()));
        row.position_ids.extend(0..ids.len() as u32);
    }
    row
}

/// Plan and build packed rows of at most `max_length` tokens.
pub fn pack_samples<S: TokenSequence>(samples: &[S], max_length: usize, strategy: PackingStrategy) -> Result<Vec<PackedRow>> {
    let lengths: Vec<usize> = samples.iter().map(|s| s.input_ids().len()).collect();
    Ok(plan_packing(&lengths, max_length, strategy)?.iter().map(|group| build_packed_row(samples, group)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: i32 = IGNORE_INDEX;

    #[test]
    fn best_fit_decreasing_plan() {
        // Lengths 5, 4, 3, 3, 2, 1 into rows of 8: 5 opens row 0 (room 3), 4 opens row 1
        // (room 4), 3 fits row 0 exactly, 3 goes to row 1 (room 1), 2 opens row 2, 1 fills row 1.
        let plan = plan_packing(&[3, 5, 1, 4, 3, 2], 8, PackingStrategy::BestFitDecreasing).unwrap();
        assert_eq!(plan, vec![vec![0, 1], vec![2, 3, 4], vec![5]]);
    }

    #[test]
    fn sequential_plan_keeps_order() {
        let plan = plan_packing(&[3, 5, 1, 4, 3, 2], 8, PackingStrategy::Sequential).unwrap();
        assert_eq!(plan, vec![vec![0, 1], vec![2, 3, 4], vec![5]]);
        let plan = plan_packing(&[8, 1, 7, 2], 8, PackingStrategy::Sequential).unwrap();
        assert_eq!(plan, vec![vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn over_long_or_empty_samples_are_errors() {
        let err = plan_packing(&[3, 9], 8, PackingStrategy::Sequential).unwrap_err();
        assert_eq!(
            err.to_string(),
            "packing: sample 1 has 9 tokens; packed samples need 1 to max_length = 8 (truncate or filter them first)"
        );
        assert!(plan_packing(&[0], 8, PackingStrategy::BestFitDecreasing).is_err());
        assert_eq!(plan_packing(&[], 8, PackingStrategy::BestFitDecreasing).unwrap(), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn row_layout_and_targets() {
        let samples = vec![(vec![1, 2, 3], vec![I, 2, 3]), (vec![4, 5], vec![I, 5])];
        let row = build_packed_row(&samples, &[0, 1]);
        assert_eq!(row.input_ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(row.labels, vec![I, 2, 3, I, 5]);
        assert_eq!(row.segment_ids, vec![0, 0, 0, 1, 1]);
        assert_eq!(row.position_ids, vec![0, 1, 2, 0, 1]);
        assert_eq!(row.cu_seqlens(), vec![0, 3, 5]);
        // Token 3 (last of sample 0) predicts nothing, not sample 1's first token.
        assert_eq!(row.next_token_targets(), vec![2, 3, I, 5, I]);
        // Unpacked: the usual shift.
        assert_eq!(next_token_targets(&[I, 7, 8], &[0, 0, 0]), vec![7, 8, I]);
        assert_eq!(PackedRow::default().cu_seqlens(), vec![0]);
    }
}
