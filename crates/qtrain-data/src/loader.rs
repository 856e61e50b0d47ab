//! Loading training datasets the way `swift sft --dataset ...` names them: local JSON
//! (an array of rows) or JSONL (one row per line) files, each row in any format of
//! [`crate::row_format`] (recognised per row), plus the bundled `self-cognition` dataset;
//! `#N` sampling; a seeded train/validation split; the `--system` default.
//!
//! Dataset specs ([`DatasetSpec::parse`]), after ms-swift's `DatasetSyntax`:
//! * `PATH` — a `.json`/`.jsonl` file (told apart by content: a file whose first
//!   non-blank character is `[` is a JSON array, anything else JSONL). A path that exists
//!   is always taken whole, even if it contains `#`.
//! * `PATH#N` — N rows of the file, drawn as ms-swift's `sample_dataset` does with its
//!   default `dataset_shuffle=true`: `N / len` full copies in file order, then
//!   `N % len` distinct rows chosen by a seeded permutation (so N > len repeats rows,
//!   N < len is a random subset in random order). With
//!   [`DatasetOptions::shuffle_sample`] off: the copies, then the first `N % len` rows.
//!   Rows are drawn from the well-formed rows (after skipping malformed ones), so the
//!   result has exactly N rows; ms-swift samples before preprocessing and may return
//!   fewer.
//! * `self-cognition[:SUBSET][#N]` (also `swift/self-cognition`, `modelscope/self-cognition`):
//!   the bundled rows of [`crate::self_cognition`], substituted with
//!   [`DatasetOptions::model_name`] / [`DatasetOptions::model_author`].
//!
//! Malformed rows (bad JSON, unknown format, wrong types, empty conversation, no assistant
//! turn) are an error naming file and line (JSONL) or array index (JSON), or, with
//! [`DatasetOptions::skip_malformed`], skipped and counted. A file that yields no row at all
//! is an error either way. A JSON array file that does not parse as a whole cannot be
//! skipped row by row: that is always an error (with serde's line and column).
//!
//! This module must not render, tokenize or batch: it yields normalised rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{read_text_file, DataError, Result, RowLocation};
use crate::rng::SplitMix64;
use crate::row_format::{normalize, RowFormat};
use crate::self_cognition::{Bilingual, SelfCognition, SelfCognitionSubset, SELF_COGNITION_DATASET};

/// How many skipped rows [`LoadedDataset::skipped`] keeps with their reasons.
pub const MAX_REPORTED_SKIPS: usize = 20;

/// Options of [`load_dataset`] / [`load_datasets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Seed of `#N` sampling (ms-swift's `--seed`, default 42).
    pub seed: u64,
    /// Skip and count malformed rows instead of failing on the first one (ms-swift's
    /// default is to skip: `strict=False`; ours is to fail, so that typos surface).
    pub skip_malformed: bool,
    /// `#N` draws a seeded random subset (ms-swift's `dataset_shuffle`, default true);
    /// false takes the first rows.
    pub shuffle_sample: bool,
    /// `--model_name` for `self-cognition`.
    pub model_name: Option<Bilingual>,
    /// `--model_author` for `self-cognition`.
    pub model_author: Option<Bilingual>,
    /// Keep rows without an assistant turn (a prompt only: inference writes the reply, as
    /// `swift infer --val_dataset` accepts); training needs one, so the default is false.
    pub allow_prompt_only: bool,
    /// The `self-cognition` subset used when the spec names none; set it with
    /// [`SelfCognitionSubset::for_template`] to get `empty_think` for Qwen3 models.
    pub self_cognition_subset: SelfCognitionSubset,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            seed: 42,
            skip_malformed: false,
            shuffle_sample: true,
            model_name: None,
            model_author: None,
            allow_prompt_only: false,
            self_cognition_subset: SelfCognitionSubset::Default,
        }
    }
}

/// Where a row came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowOrigin {
    /// The file (or `self-cognition` for the bundled dataset).
    pub path: PathBuf,
    pub location: RowLocation,
}

impl std::fmt::Display for RowOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.path.display(), self.location)
    }
}

/// One normalised training conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    /// JSON array of `{"role", "content", "loss"?, "tool_calls"?, ...}` messages, ready for
    /// [`crate::ConversationTokenizer::tokenize`].
    pub messages: Value,
    /// JSON array of tool definitions.
    pub tools: Option<Value>,
    pub format: RowFormat,
    pub origin: RowOrigin,
}

impl DatasetRow {
    /// An error about this row (e.g. a tokenization failure), named `file:LINE: ...`.
    pub fn error(&self, message: impl std::fmt::Display) -> DataError {
        DataError::row(&self.origin.path, self.origin.location, message.to_string())
    }

    /// Whether the conversation starts with a system message (even an empty one).
    pub fn has_system(&self) -> bool {
        self.messages.get(0).and_then(|m| m.get("role")).and_then(Value::as_str) == Some("system")
    }

    /// Insert `system` as the first message unless the row has its own: ms-swift's
    /// priority, dataset system > `--system` > the template's default. Returns whether it
    /// was inserted.
    pub fn set_default_system(&mut self, system: &str) -> bool {
        if self.has_system() {
            return false;
        }
        match &mut self.messages {
            Value::Array(list) => {
                list.insert(0, json!({"role": "system", "content": system}));
                true
            }
            _ => false,
        }
    }

    /// The row as ms-swift's messages format (`{"messages", "tools"?}`), e.g. for
    /// `val_dataset.jsonl`.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("messages".into(), self.messages.clone());
        if let Some(tools) = &self.tools {
            object.insert("tools".into(), tools.clone());
        }
        Value::Object(object)
    }
}

/// Apply `--system` to every row without a system message of its own; returns how many got it.
pub fn apply_default_system(rows: &mut [DatasetRow], system: &str) -> usize {
    rows.iter_mut().map(|row| usize::from(row.set_default_system(system))).sum()
}

/// A malformed row that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub origin: RowOrigin,
    pub reason: String,
}

impl std::fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Rows of one or more dataset specs, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedDataset {
    pub rows: Vec<DatasetRow>,
    /// Every malformed row skipped (with [`DatasetOptions::skip_malformed`]).
    pub num_skipped: usize,
    /// The first [`MAX_REPORTED_SKIPS`] of them, with reasons.
    pub skipped: Vec<SkippedRow>,
}

impl LoadedDataset {
    /// Append `other` (rows in order; skip counts added).
    pub fn extend(&mut self, other: LoadedDataset) {
        self.rows.extend(other.rows);
        self.num_skipped += other.num_skipped;
        let room = MAX_REPORTED_SKIPS.saturating_sub(self.skipped.len());
        self.skipped.extend(other.skipped.into_iter().take(room));
    }

    /// Rows per recognised format, for the run's report.
    pub fn format_counts(&self) -> BTreeMap<RowFormat, usize> {
        let mut counts = BTreeMap::new();
        for row in &self.rows {
            *counts.entry(row.format).or_insert(0) += 1;
        }
        counts
    }

    pub(crate) fn skip(&mut self, origin: RowOrigin, reason: String) {
        self.num_skipped += 1;
        if self.skipped.len() < MAX_REPORTED_SKIPS {
            self.skipped.push(SkippedRow { origin, reason });
        }
    }
}

/// What a dataset spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// A local JSON or JSONL file.
    File(PathBuf),
    /// The bundled self-cognition dataset; `None` = the subset of [`DatasetOptions`].
    SelfCognition(Option<SelfCognitionSubset>),
}

/// A parsed dataset spec: source and optional sample count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub source: DatasetSource,
    /// `#N`: number of rows to draw.
    pub sample: Option<usize>,
}

const SELF_COGNITION_ALIASES: [&str; 3] = [SELF_COGNITION_DATASET, "swift/self-cognition", "modelscope/self-cognition"];

impl DatasetSpec {
    /// Parse `PATH`, `PATH#N`, `self-cognition[:SUBSET][#N]` (see the module docs).
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(DataError::dataset(spec, "empty dataset spec"));
        }
        if Path::new(spec).is_file() {
            return Ok(DatasetSpec { source: DatasetSource::File(PathBuf::from(spec)), sample: None });
        }
        let (base, sample) = match spec.rsplit_once('#') {
            Some((base, n)) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| DataError::dataset(spec, format!("`#` must be followed by a sample count (`FILE#1000`), got `{n}`")))?;
                if n == 0 {
                    return Err(DataError::dataset(spec, "a sample count must be at least 1"));
                }
                if n > MAX_SAMPLE_ROWS {
                    let bytes = (n as u128) * std::mem::size_of::<DatasetRow>() as u128;
                    return Err(DataError::dataset(
                        spec,
                        format!("a sample count may be at most {MAX_SAMPLE_ROWS}: the {n} sampled rows are copies held in memory (at least {bytes} bytes)"),
                    ));
                }
                (base.trim(), Some(n))
            }
            None => (spec, None),
        };
        let (name, subset) = match base.split_once(':') {
            Some((name, subset)) if SELF_COGNITION_ALIASES.contains(&name) => (name, Some(subset.trim())),
            _ => (base, None),
        };
        let source = if SELF_COGNITION_ALIASES.contains(&name) {
            DatasetSource::SelfCognition(subset.map(str::parse).transpose()?)
        } else {
            DatasetSource::File(PathBuf::from(base))
        };
        Ok(DatasetSpec { source, sample })
    }
}

/// Load one dataset spec; `#N` sampling uses `opts.seed`.
pub fn load_dataset(spec: &str, opts: &DatasetOptions) -> Result<LoadedDataset> {
    load_with_seed(spec, opts, opts.seed)
}

/// Load several specs in order and concatenate them (`--dataset a.jsonl b.json#500
/// self-cognition#100`). Spec `i` samples with seed `opts.seed + i`, so adding a dataset
/// does not change what the others draw.
pub fn load_datasets(specs: &[impl AsRef<str>], opts: &DatasetOptions) -> Result<LoadedDataset> {
    let mut all = LoadedDataset::default();
    for (i, spec) in specs.iter().enumerate() {
        all.extend(load_with_seed(spec.as_ref(), opts, opts.seed.wrapping_add(i as u64))?);
    }
    Ok(all)
}

fn load_with_seed(spec_text: &str, opts: &DatasetOptions, seed: u64) -> Result<LoadedDataset> {
    let spec = DatasetSpec::parse(spec_text)?;
    let mut loaded = match &spec.source {
        DatasetSource::File(path) => read_dataset_file(path, opts)?,
        DatasetSource::SelfCognition(subset) => {
            let config =
                SelfCognition::new(opts.model_name.as_ref(), opts.model_author.as_ref(), subset.unwrap_or(opts.self_cognition_subset))?;
            let rows = config
                .rows()
                .into_iter()
                .enumerate()
                .map(|(i, row)| DatasetRow {
                    messages: row.messages(),
                    tools: None,
                    format: RowFormat::SelfCognition,
                    origin: RowOrigin { path: PathBuf::from(SELF_COGNITION_DATASET), location: RowLocation::Index(i) },
                })
                .collect();
            LoadedDataset { rows, ..LoadedDataset::default() }
        }
    };
    if loaded.rows.is_empty() {
        let why = match loaded.skipped.first() {
            Some(first) => format!("no usable rows: all {} rows are malformed; the first: {first}", loaded.num_skipped),
            None => "holds no rows".to_string(),
        };
        return Err(DataError::dataset(spec_text, why));
    }
    if let Some(n) = spec.sample {
        let picked = sample_indices(loaded.rows.len(), n, opts.shuffle_sample, seed);
        loaded.rows = picked.into_iter().map(|i| loaded.rows[i].clone()).collect();
    }
    Ok(loaded)
}

/// Read and normalise every row of a JSON or JSONL file (no `#N`, no self-cognition:
/// those are spec-level; only `opts.skip_malformed` applies).
pub fn read_dataset_file(path: impl AsRef<Path>, opts: &DatasetOptions) -> Result<LoadedDataset> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(DataError::dataset(path.display().to_string(), "is a directory; give JSON or JSONL files"));
    }
    let text = read_text_file(path).map_err(|e| match e {
        DataError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => DataError::dataset(
            path.display().to_string(),
            "no such file; qtrain reads local JSON/JSONL files and the built-in `self-cognition` (no hub downloads)",
        ),
        other => other,
    })?;
    parse_dataset_text(&text, path, opts)
}

/// Parse JSON-array or JSONL text; `origin` names it in errors and in each row's origin.
/// Only `opts.skip_malformed` and `opts.allow_prompt_only` apply.
pub fn parse_dataset_text(text: &str, origin: impl AsRef<Path>, opts: &DatasetOptions) -> Result<LoadedDataset> {
    let path = origin.as_ref();
    let skip_malformed = opts.skip_malformed;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(first) = text.lines().find(|l| !l.trim().is_empty()) {
        // A pretty-printed single JSON object would otherwise fail as "line 1: invalid JSON".
        if serde_json::from_str::<Value>(first).is_err() && matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_))) {
            return Err(DataError::dataset(
                path.display().to_string(),
                "holds one JSON object; expected a JSON array of rows (`[{...}, {...}]`) or one row per line (JSONL)",
            ));
        }
    }
    let mut loaded = LoadedDataset::default();
    let take = |value: std::result::Result<Value, String>, location: RowLocation| -> Result<()> {
        let origin = RowOrigin { path: path.to_path_buf(), location };
        match value.and_then(|v| normalize(&v, opts.allow_prompt_only)) {
            Ok(row) => loaded.rows.push(DatasetRow { messages: row.messages, tools: row.tools, format: row.format, origin }),
            Err(reason) if skip_malformed => loaded.skip(origin, reason),
            Err(reason) => return Err(DataError::row(path, location, reason)),
        }
        Ok(())
    };
    for_each_json_row(text, path, take)?;
    Ok(loaded)
}

/// Each row of a JSON array or of JSONL text, in order, with its location. A JSONL line that
/// is not JSON comes as `Err(reason)` (the caller decides whether to skip it); an array that
/// does not parse is an error of the whole file. Blank JSONL lines are not rows.
pub(crate) fn for_each_json_row(
    text: &str,
    path: &Path,
    mut take: impl FnMut(std::result::Result<Value, String>, RowLocation) -> Result<()>,
) -> Result<()> {
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text).map_err(|e| DataError::json(path, None, e))?;
        for (index, item) in items.into_iter().enumerate() {
            take(Ok(item), RowLocation::Index(index))?;
        }
    } else {
        for (index, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let value = serde_json::from_str::<Value>(raw).map_err(|e| format!("invalid JSON at column {}: {e}", e.column()));
            take(value, RowLocation::Line(index + 1))?;
        }
    }
    Ok(())
}

/// The largest `#N`: a hundred million rows are tens of gigabytes of copied conversations,
/// more than the machines qtrain trains on hold (ms-swift would fail the same way, later).
pub const MAX_SAMPLE_ROWS: usize = 100_000_000;

/// ms-swift's `sample_dataset`: `n / len` full copies in order, then `n % len` distinct
/// indices (a seeded permutation's prefix, or the first ones without shuffling).
pub(crate) fn sample_indices(len: usize, n: usize, shuffle: bool, seed: u64) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..n / len).flat_map(|_| 0..len).collect();
    let remain = n % len;
    if remain > 0 {
        if shuffle {
            picked.extend(SplitMix64::new(seed).permutation(len).into_iter().take(remain));
        } else {
            picked.extend(0..remain);
        }
    }
    picked
}

/// Split `rows` into (train, validation) by `split_dataset_ratio`, deterministically for a
/// seed. As ms-swift: ratio 0 keeps everything for training; ratio 1 makes everything
/// validation; otherwise validation gets `max(floor(len · ratio), 1)` rows chosen by a
/// seeded permutation and training must keep at least one. Both parts keep the input's
/// order (shuffling for training is the trainer's `dataset_shuffle`). ms-swift splits
/// each `--dataset` entry separately; callers wanting that call this per
/// [`load_dataset`] result.
pub fn split_dataset<T>(rows: Vec<T>, ratio: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(DataError::option("split_dataset_ratio", format!("must be in [0, 1], got {ratio}")));
    }
    let len = rows.len();
    if ratio == 0.0 {
        return Ok((rows, Vec::new()));
    }
    if ratio == 1.0 {
        return Ok((Vec::new(), rows));
    }
    let n_val = ((len as f64 * ratio).floor() as usize).max(1);
    if n_val >= len {
        return Err(DataError::option(
            "split_dataset_ratio",
            format!("{ratio} of {len} rows leaves no training rows (validation takes at least one row)"),
        ));
    }
    let mut is_val = vec![false; len];
    for i in SplitMix64::new(seed).permutation(len).into_iter().take(n_val) {
        is_val[i] = true;
    }
    let (mut train, mut val) = (Vec::with_capacity(len - n_val), Vec::with_capacity(n_val));
    for (row, to_val) in rows.into_iter().zip(is_val) {
        if to_val { &mut val } else { &mut train }.push(row);
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_ms_swift() {
        let file = |p: &str, n| DatasetSpec { source: DatasetSource::File(p.into()), sample: n };
        assert_eq!(DatasetSpec::parse("/no/such/data.jsonl").unwrap(), file("/no/such/data.jsonl", None));
        assert_eq!(DatasetSpec::parse("/no/such/data.jsonl#500").unwrap(), file("/no/such/data.jsonl", Some(500)));
        assert_eq!(
            DatasetSpec::parse("self-cognition#50").unwrap(),
            DatasetSpec { source: DatasetSource::SelfCognition(None), sample: Some(50) }
        );
        assert_eq!(
            DatasetSpec::parse("swift/self-cognition:qwen3#5").unwrap(),
            DatasetSpec { source: DatasetSource::SelfCognition(Some(SelfCognitionSubset::Qwen3)), sample: Some(5) }
        );
        assert!(DatasetSpec::parse("d.jsonl#ten").unwrap_err().to_string().contains("must be followed by a sample count"));
        assert!(DatasetSpec::parse("d.jsonl#0").unwrap_err().to_string().contains("at least 1"));
        // Issue 16 E: `#1000000000000` aborted on a 4 GB index allocation.
        let err = DatasetSpec::parse("d.jsonl#1000000000000").unwrap_err().to_string();
        assert!(err.starts_with("dataset `d.jsonl#1000000000000`: a sample count may be at most 100000000"), "{err}");
        assert!(DatasetSpec::parse("d.jsonl#100000000").is_ok());
        assert!(DatasetSpec::parse("self-cognition:nope").is_err());
        // An existing file is taken whole even with `#` in its name.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a#3");
        std::fs::write(&odd, "").unwrap();
        assert_eq!(DatasetSpec::parse(odd.to_str().unwrap()).unwrap().sample, None);
    }

    #[test]
    fn sampling_copies_then_draws_distinct_rows() {
        assert_eq!(sample_indices(5, 3, false, 1), vec![0, 1, 2]);
        assert_eq!(sample_indices(3, 7, false, 1), vec![0, 1, 2, 0, 1, 2, 0]);
        let a = sample_indices(10, 4, true, 7);
        assert_eq!(a, sample_indices(10, 4, true, 7));
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);
        let b = sample_indices(4, 10, true, 7);
        assert_eq!(&b[..8], &[0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(b.len(), 10);
        assert_ne!(b[8], b[9]);
    }

    #[test]
    fn split_is_seeded_and_keeps_order() {
        let rows: Vec<usize> = (0..20).collect();
        let (train, val) = split_dataset(rows.clone(), 0.25, 3).unwrap();
        assert_eq!((train.len(), val.len()), (15, 5));
        assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, rows);
        assert_eq!(split_dataset(rows.clone(), 0.25, 3).unwrap(), (train, val.clone()));
        assert_ne!(split_dataset(rows.clone(), 0.25, 4).unwrap().1, val);
        // At least one validation row; ratio 0 and 1 are all-train and all-validation.
        assert_eq!(split_dataset(rows.clone(), 0.01, 3).unwrap().1.len(), 1);
        assert_eq!(split_dataset(rows.clone(), 0.0, 3).unwrap(), (rows.clone(), vec![]));
        assert_eq!(split_dataset(rows.clone(), 1.0, 3).unwrap(), (vec![], rows));
        assert!(split_dataset(vec![1], 0.5, 3).unwrap_err().to_string().contains("leaves no training rows"));
        assert!(split_dataset(vec![1, 2], 1.5, 3).unwrap_err().to_string().starts_with("`split_dataset_ratio`: must be in [0, 1]"));
    }
}
