//! Training data: reading conversation files, turning them into token ids + labels, the
//! `max_length` policy, and the order and grouping of samples into micro-batches.
//!
//! Formats: a JSONL file with one `{"messages": [...], "tools": [...]?}` object per line, or a
//! JSON file holding an array of such objects (told apart by the first non-blank character,
//! `[`). Rendering and the assistant-only label mask are `qtrain-data`'s conversation tokenizer
//! (assistant content + `<|im_end|>` supervised). Other formats (alpaca, query/response,
//! sharegpt), packing and streaming are meant to grow here.
//!
//! This module must not touch models or tensors: it produces plain id/label vectors and
//! index lists, which the trainer turns into batches.

use std::path::{Path, PathBuf};

use serde_json::Value;

use qtrain_core::rng::Rng;
use qtrain_data::{ChatTemplate, ConversationOptions, ConversationTokenizer, QwenTokenizer, IGNORE_INDEX};

use crate::args::TruncationStrategy;
use crate::error::{Result, TrainError};

/// One conversation as read from a file.
#[derive(Clone, Debug)]
pub struct Record {
    pub messages: Value,
    pub tools: Option<Value>,
    /// Where it came from (for error messages): file and 1-based line (JSONL) or 0-based index
    /// (JSON array, reported as "record N").
    pub path: PathBuf,
    pub location: Location,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Line(usize),
    Index(usize),
}

impl Record {
    fn error(&self, message: impl std::fmt::Display) -> TrainError {
        match self.location {
            Location::Line(line) => TrainError::Record { path: self.path.clone(), line, message: message.to_string() },
            Location::Index(i) => {
                TrainError::Dataset { path: self.path.clone(), message: format!("record {i} of the JSON array: {message}") }
            }
        }
    }
}

/// Read every conversation of a dataset file.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    if text.trim_start().starts_with('[') {
        let value: Value = serde_json::from_str(&text).map_err(|e| TrainError::Record {
            path: path.to_path_buf(),
            line: e.line(),
            message: format!("invalid JSON at column {}: {e}", e.column()),
        })?;
        let Value::Array(items) = value else { unreachable!("text starts with '['") };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let mut rec = Record { messages: Value::Null, tools: None, path: path.to_path_buf(), location: Location::Index(i) };
                let Value::Object(mut obj) = item else {
                    return Err(rec.error("expected a JSON object with a `messages` array"));
                };
                match obj.remove("messages") {
                    Some(m @ Value::Array(_)) => rec.messages = m,
                    Some(_) => return Err(rec.error("`messages` must be an array of messages")),
                    None => return Err(rec.error("missing `messages` (only the messages format is supported)")),
                }
                match obj.remove("tools") {
                    None | Some(Value::Null) => {}
                    Some(t @ Value::Array(_)) => rec.tools = Some(t),
                    Some(_) => return Err(rec.error("`tools` must be an array of tool definitions")),
                }
                Ok(rec)
            })
            .collect()
    } else {
        let records = qtrain_data::parse_conversations_jsonl(&text, path)?;
        Ok(records
            .into_iter()
            .map(|r| Record { messages: r.messages, tools: r.tools, path: path.to_path_buf(), location: Location::Line(r.line) })
            .collect())
    }
}

/// A tokenized training sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub input_ids: Vec<u32>,
    /// Aligned with `input_ids` (HF convention, unshifted); -100 = not trained on.
    pub labels: Vec<i32>,
}

impl Sample {
    /// Supervised next-token targets: labels ≠ -100 at positions ≥ 1 (position 0 is never
    /// predicted).
    pub fn num_targets(&self) -> usize {
        count_targets(&self.labels)
    }
}

/// Targets a label vector yields after the next-token shift.
pub fn count_targets(labels: &[i32]) -> usize {
    labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
}

/// How conversations become samples.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub max_length: usize,
    pub truncation: TruncationStrategy,
    /// Inserted as the first message of conversations that have no system message.
    pub system: Option<String>,
}

/// What preparation kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatasetStats {
    pub records: usize,
    pub samples: usize,
    /// Longer than `max_length` and dropped (`truncation_strategy delete`).
    pub dropped_too_long: usize,
    /// Longer than `max_length` and cut (`left` / `right`).
    pub truncated: usize,
    /// Dropped because no token is supervised (no assistant turn, or truncated away).
    pub dropped_no_targets: usize,
    pub tokens: usize,
    pub targets: usize,
    pub longest: usize,
}

/// Tokenized samples and the preparation statistics.
#[derive(Clone, Debug)]
pub struct PreparedDataset {
    pub samples: Vec<Sample>,
    pub stats: DatasetStats,
}

/// Read, tokenize and length-filter every file in `paths` (in order).
pub fn prepare(paths: &[PathBuf], template: &ChatTemplate, tokenizer: &QwenTokenizer, opts: &PrepareOptions) -> Result<PreparedDataset> {
    let conv_opts = ConversationOptions::default();
    let conv = ConversationTokenizer::new(template, tokenizer, &conv_opts);
    let mut samples = Vec::new();
    let mut stats = DatasetStats::default();
    for path in paths {
        let records = read_records(path)?;
        if records.is_empty() {
            return Err(TrainError::Dataset { path: path.clone(), message: "holds no records".into() });
        }
        for rec in records {
            stats.records += 1;
            let messages = with_default_system(&rec.messages, opts.system.as_deref());
            let t = conv.tokenize(&messages, rec.tools.as_ref()).map_err(|e| rec.error(e))?;
            let (mut ids, mut labels) = (t.input_ids, t.labels);
            if ids.len() > opts.max_length {
                match opts.truncation {
                    TruncationStrategy::Delete => {
                        stats.dropped_too_long += 1;
                        continue;
                    }
                    TruncationStrategy::Right => {
                        ids.truncate(opts.max_length);
                        labels.truncate(opts.max_length);
                    }
                    TruncationStrategy::Left => {
                        let cut = ids.len() - opts.max_length;
                        ids.drain(..cut);
                        labels.drain(..cut);
                    }
                }
                stats.truncated += 1;
            }
            let sample = Sample { input_ids: ids, labels };
            let targets = sample.num_targets();
            if targets == 0 {
                stats.dropped_no_targets += 1;
                continue;
            }
            stats.tokens += sample.input_ids.len();
            stats.targets += targets;
            stats.longest = stats.longest.max(sample.input_ids.len());
            samples.push(sample);
        }
    }
    stats.samples = samples.len();
    if samples.is_empty() {
        let path = paths.first().cloned().unwrap_or_default();
        return Err(TrainError::Dataset {
            path,
            message: format!(
                "no usable samples: {} records, {} longer than max_length {} (dropped), {} without supervised tokens",
                stats.records, stats.dropped_too_long, opts.max_length, stats.dropped_no_targets
            ),
        });
    }
    Ok(PreparedDataset { samples, stats })
}

/// `messages` with a system message first: the conversation's own, else `system` if given.
fn with_default_system(messages: &Value, system: Option<&str>) -> Value {
    let (Some(system), Some(list)) = (system, messages.as_array()) else {
        return messages.clone();
    };
    let has_system = list.first().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("system");
    if has_system {
        return messages.clone();
    }
    let mut out = Vec::with_capacity(list.len() + 1);
    out.push(serde_json::json!({"role": "system", "content": system}));
    out.extend(list.iter().cloned());
    Value::Array(out)
}

/// The dataset order after loading: shuffled once with `seed` (`dataset_shuffle`), else file
/// order.
pub fn dataset_order(n: usize, shuffle: bool, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        Rng::new(seed).shuffle(&mut order);
    }
    order
}

/// The sample order of one epoch: `base` reshuffled with a seed derived from (seed, epoch) when
/// `train_dataloader_shuffle` is on (a new permutation every epoch, as a seeded
/// `RandomSampler`), else `base` as is.
pub fn epoch_order(base: &[usize], epoch: u64, shuffle: bool, seed: u64) -> Vec<usize> {
    let mut order = base.to_vec();
    if shuffle {
        Rng::new(seed ^ 0x5EED_0000_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
    }
    order
}

/// Split an order into micro-batches of `batch` samples (the last one may be smaller, as a
/// DataLoader with `drop_last=False`).
pub fn micro_batches(order: &[usize], batch: usize) -> Vec<Vec<usize>> {
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// transformers' `num_items_in_batch` normalisation: every micro-batch of an optimizer step
/// scales its summed token loss by `1 / (targets in all the step's micro-batches)`, so that
/// k micro-batches of one sample equal one batch of k samples. `None` when the step has no
/// target at all (the caller must report it, not divide by zero).
pub fn loss_scale(step_targets: usize) -> Option<f32> {
    (step_targets > 0).then(|| (1.0 / step_targets as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_jsonl_and_json_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let m = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#;
        let jsonl = write(dir.path(), "d.jsonl", &format!("{m}\n\n{m}\n"));
        let recs = read_records(&jsonl).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].location, Location::Line(3));
        let arr = write(dir.path(), "d.json", &format!("  [{m}, {m}, {m}]"));
        let recs = read_records(&arr).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].location, Location::Index(2));
    }

    #[test]
    fn malformed_input_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.jsonl", "{\"messages\": []}\n{\"messages\": [\n");
        let err = read_records(&p).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2"), "{err}");
        let p = write(dir.path(), "bad.json", "[{\"messages\": []}, {\"query\": \"x\"}]");
        let err = read_records(&p).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("record 1") && err.contains("messages"), "{err}");
        let p = write(dir.path(), "broken.json", "[\n{\"messages\": []},\n{oops}\n]");
        let err = read_records(&p).unwrap_err().to_string();
        assert!(err.contains("broken.json:3"), "{err}");
        let err = read_records(&dir.path().join("missing.jsonl")).unwrap_err().to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn default_system_is_inserted_only_when_absent() {
        let m = serde_json::json!([{"role": "user", "content": "q"}]);
        let with = with_default_system(&m, Some("S"));
        assert_eq!(with[0]["role"], "system");
        assert_eq!(with[1]["content"], "q");
        let own = serde_json::json!([{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]);
        assert_eq!(with_default_system(&own, Some("S")), own);
        assert_eq!(with_default_system(&m, None), m);
    }

    #[test]
    fn targets_count_after_the_shift() {
        assert_eq!(count_targets(&[5, -100, 7, 8]), 2); // position 0 is never a target
        assert_eq!(count_targets(&[-100]), 0);
    }

    #[test]
    fn orders_and_batches() {
        assert_eq!(dataset_order(4, false, 1), vec![0, 1, 2, 3]);
        let a = dataset_order(50, true, 42);
        assert_eq!(a, dataset_order(50, true, 42));
        assert_ne!(a, dataset_order(50, true, 43));
        let e0 = epoch_order(&a, 0, true, 42);
        let e1 = epoch_order(&a, 1, true, 42);
        assert_ne!(e0, e1);
        assert_eq!(epoch_order(&a, 1, false, 42), a);
        assert_eq!(micro_batches(&[0, 1, 2, 3, 4], 2), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn prepare_applies_max_length_policies_and_the_default_system() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-qwen2");
        let assets = qtrain_data::ModelTextAssets::load(&model).unwrap();
        let template = assets.chat_template.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let short = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        let long = r#"{"messages": [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "and a long answer to match it, word after word"}]}"#;
        let none = r#"{"messages": [{"role": "user", "content": "no answer"}]}"#;
        let path = write(dir.path(), "d.jsonl", &format!("{short}\n{long}\n{none}\n"));
        let prep = |max_length, truncation, system: Option<&str>| {
            let opts = PrepareOptions { max_length, truncation, system: system.map(str::to_string) };
            prepare(std::slice::from_ref(&path), &template, &assets.tokenizer, &opts).unwrap()
        };
        let all = prep(512, TruncationStrategy::Delete, None);
        assert_eq!((all.stats.records, all.stats.samples, all.stats.dropped_no_targets), (3, 2, 1));
        let (short_len, long_len) = (all.samples[0].input_ids.len(), all.samples[1].input_ids.len());
        assert!(short_len < long_len);
        assert_eq!(all.stats.tokens, short_len + long_len);
        assert_eq!(all.stats.longest, long_len);
        // Supervised: the assistant body and <|im_end|>, never the prompt.
        let im_end = assets.tokenizer.token_to_id("<|im_end|>").unwrap() as i32;
        assert!(all.samples[0].labels.contains(&im_end));
        assert_eq!(all.samples[0].labels[0], IGNORE_INDEX);

        let max = short_len + 2;
        let deleted = prep(max, TruncationStrategy::Delete, None);
        assert_eq!((deleted.stats.samples, deleted.stats.dropped_too_long), (1, 1));
        let right = prep(max, TruncationStrategy::Right, None);
        assert_eq!((right.stats.samples, right.stats.truncated), (2, 1));
        assert_eq!(right.samples[1].input_ids[..], all.samples[1].input_ids[..max]);
        assert!(right.samples[1].num_targets() < all.samples[1].num_targets());
        let left = prep(max, TruncationStrategy::Left, None);
        assert_eq!(left.samples[1].input_ids[..], all.samples[1].input_ids[long_len - max..]);
        assert_eq!(left.samples[1].labels.len(), max);

        let with_system = prep(512, TruncationStrategy::Delete, Some("Be brief."));
        let text = assets.tokenizer.decode(&with_system.samples[0].input_ids, false).unwrap();
        assert!(text.starts_with("<|im_start|>system\nBe brief.<|im_end|>"), "{text}");
        assert_eq!(with_system.stats.targets, all.stats.targets);
    }

    #[test]
    fn loss_scale_is_one_over_all_step_targets() {
        assert_eq!(loss_scale(0), None);
        assert_eq!(loss_scale(4), Some(0.25));
        // Four micro-batches of 3 targets each and one of 12 get the same scale.
        let per_micro: Vec<usize> = vec![3, 3, 3, 3];
        assert_eq!(loss_scale(per_micro.iter().sum()), loss_scale(12));
    }
}
