//! Training data for the recipe: dataset specs → normalised rows (`qtrain-data`'s loader:
//! messages / ShareGPT / Alpaca / query-response rows, `FILE#N`, `self-cognition`, malformed
//! rows named by file and line or skipped) → the train/validation split → token ids + labels
//! through the chat template (`qtrain-data`'s conversation tokenizer, `--loss_scale`) → the
//! `max_length` policy (`qtrain-data`'s truncation) → rows for batching, packed or not
//! (`qtrain-data`'s packing plan) → per-epoch orders, length grouping and micro-batches.
//!
//! This module must not touch models or tensors beyond building a [`TrainBatch`] from ids: it
//! produces plain id/label vectors and index lists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use qtrain_core::rng::Rng;
use qtrain_data::{
    apply_default_system, load_dataset, next_token_targets, pack_samples, split_dataset, truncate_tokens, Bilingual, ChatTemplate,
    ConversationOptions, ConversationTokenizer, DatasetOptions, DatasetRow, LoadedDataset, LossScale, PackingStrategy, QwenTokenizer,
    RowFormat, SelfCognitionSubset, SkippedRow, TruncationOutcome, IGNORE_INDEX,
};
use qtrain_model::train::TrainBatch;
use qtrain_model::Batch;

use crate::args::{TrainArgs, TruncationStrategy};
use crate::error::{Result, TrainError};

/// A tokenized training sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub input_ids: Vec<u32>,
    /// Aligned with `input_ids` (HF convention, unshifted); -100 = not trained on.
    pub labels: Vec<i32>,
}

impl Sample {
    /// The sample as ms-swift shows the first one at train start: `[INPUT]` the whole text the
    /// model reads, `[LABELS]` the supervised text with each unsupervised stretch written as
    /// `[-100 * N]` — so a template that supervises the wrong tokens is visible at a glance.
    pub fn render(&self, tokenizer: &qtrain_data::QwenTokenizer) -> Result<String> {
        let input = tokenizer.decode(&self.input_ids, false)?;
        let mut labels = String::new();
        let mut i = 0;
        while i < self.labels.len() {
            let supervised = self.labels[i] != -100;
            let end = (i..self.labels.len()).find(|&j| (self.labels[j] != -100) != supervised).unwrap_or(self.labels.len());
            if supervised {
                labels.push_str(&tokenizer.decode(&self.input_ids[i..end], false)?);
            } else {
                labels.push_str(&format!("[-100 * {}]", end - i));
            }
            i = end;
        }
        Ok(format!("[INPUT] {input}\n[LABELS] {labels}"))
    }

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

/// How dataset specs become samples.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub max_length: usize,
    pub truncation: TruncationStrategy,
    /// Inserted as the first message of conversations that have no system message.
    pub system: Option<String>,
    pub loss_scale: LossScale,
    /// Fail on a malformed row (else skip and count it).
    pub strict: bool,
    /// Seed of `FILE#N` draws and of the train/validation split.
    pub seed: u64,
    /// `FILE#N` draws a random subset (ms-swift's `dataset_shuffle`).
    pub shuffle_sample: bool,
    pub model_name: Option<Bilingual>,
    pub model_author: Option<Bilingual>,
    /// false: raw text ([`crate::pretrain`]) instead of conversations.
    pub use_chat_template: bool,
    /// `tokenizer_config.json`'s `eos_token`, appended to every raw-text document.
    pub eos_token: Option<String>,
}

impl PrepareOptions {
    /// The options of a resolved run.
    pub fn from_args(args: &TrainArgs) -> Result<Self> {
        let (model_name, model_author) = args.self_cognition_names()?;
        Ok(PrepareOptions {
            max_length: args.max_length.expect("resolved"),
            truncation: args.truncation_strategy,
            system: args.system.clone(),
            // Raw text trains every token (`resolve` checked `--loss_scale all`).
            loss_scale: if args.use_chat_template { args.loss_scale_kind()? } else { LossScale::All },
            strict: args.strict,
            seed: args.seed,
            shuffle_sample: args.dataset_shuffle,
            model_name,
            model_author,
            use_chat_template: args.use_chat_template,
            eos_token: None,
        })
    }

    /// Evaluation defaults: whole files in order, every assistant turn, strict rows.
    pub fn for_eval(max_length: usize, truncation: TruncationStrategy, system: Option<String>) -> Self {
        PrepareOptions {
            max_length,
            truncation,
            system,
            loss_scale: LossScale::All,
            strict: true,
            seed: 42,
            shuffle_sample: true,
            model_name: None,
            model_author: None,
            use_chat_template: true,
            eos_token: None,
        }
    }
}

/// What preparation kept and dropped (of one split).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatasetStats {
    /// Well-formed rows that reached tokenization.
    pub records: usize,
    pub samples: usize,
    /// Longer than `max_length` and dropped (`truncation_strategy delete`).
    pub dropped_too_long: usize,
    /// Longer than `max_length` and cut (`left` / `right`).
    pub truncated: usize,
    /// Tokens removed by cuts.
    pub truncated_tokens: usize,
    /// Dropped because no token is supervised (truncated away, or every turn has `loss: false`;
    /// raw text: a one-token document or last block).
    pub dropped_no_targets: usize,
    /// Raw-text documents longer than `max_length` split into blocks (`truncation_strategy split`).
    pub split_documents: usize,
    pub tokens: usize,
    pub targets: usize,
    pub longest: usize,
}

impl DatasetStats {
    /// Keep a finished sample and count it, or count it as dropped when no token of it is
    /// supervised (conversations and raw text alike).
    pub(crate) fn admit(&mut self, sample: Sample, samples: &mut Vec<Sample>) {
        let targets = sample.num_targets();
        if targets == 0 {
            self.dropped_no_targets += 1;
            return;
        }
        self.tokens += sample.input_ids.len();
        self.targets += targets;
        self.longest = self.longest.max(sample.input_ids.len());
        samples.push(sample);
    }
}

/// Tokenized training and validation samples and what preparation did.
#[derive(Clone, Debug)]
pub struct PreparedData {
    pub train: Vec<Sample>,
    pub train_stats: DatasetStats,
    pub val: Vec<Sample>,
    pub val_stats: DatasetStats,
    /// The validation rows as loaded (written to `val_dataset.jsonl`).
    pub val_rows: Vec<DatasetRow>,
    /// Malformed rows skipped (`--strict false`), over every dataset.
    pub num_skipped: usize,
    /// The first of them, with reasons.
    pub skipped: Vec<SkippedRow>,
    /// Training rows per recognised format.
    pub formats: BTreeMap<RowFormat, usize>,
}

fn dataset_options(opts: &PrepareOptions, template: &ChatTemplate, seed: u64) -> DatasetOptions {
    DatasetOptions {
        seed,
        skip_malformed: !opts.strict,
        shuffle_sample: opts.shuffle_sample,
        model_name: opts.model_name.clone(),
        model_author: opts.model_author.clone(),
        self_cognition_subset: SelfCognitionSubset::for_template(template),
        allow_prompt_only: false,
    }
}

/// Load `train_specs` (spec `i` draws `#N` with seed `seed + i`, as `qtrain_data::load_datasets`)
/// and split each by `split_ratio` (ms-swift splits every dataset on its own), load
/// `val_specs`, apply `--system`, tokenize and length-filter both sides.
pub fn prepare(
    train_specs: &[String],
    val_specs: &[String],
    split_ratio: f64,
    template: &ChatTemplate,
    tokenizer: &QwenTokenizer,
    opts: &PrepareOptions,
) -> Result<PreparedData> {
    if !opts.use_chat_template {
        return crate::pretrain::prepare_text(train_specs, val_specs, split_ratio, tokenizer, opts);
    }
    let mut train_rows = LoadedDataset::default();
    let mut val_rows: Vec<DatasetRow> = Vec::new();
    for (i, spec) in train_specs.iter().enumerate() {
        let loaded = load_dataset(spec, &dataset_options(opts, template, opts.seed.wrapping_add(i as u64)))?;
        if split_ratio > 0.0 {
            let LoadedDataset { rows, num_skipped, skipped } = loaded;
            let (train, val) = split_dataset(rows, split_ratio, opts.seed)?;
            train_rows.extend(LoadedDataset { rows: train, num_skipped, skipped });
            val_rows.extend(val);
        } else {
            train_rows.extend(loaded);
        }
    }
    let mut num_skipped = train_rows.num_skipped;
    let mut skipped = train_rows.skipped.clone();
    for (i, spec) in val_specs.iter().enumerate() {
        let loaded = load_dataset(spec, &dataset_options(opts, template, opts.seed.wrapping_add(i as u64)))?;
        num_skipped += loaded.num_skipped;
        skipped.extend(loaded.skipped);
        val_rows.extend(loaded.rows);
    }
    if let Some(system) = &opts.system {
        apply_default_system(&mut train_rows.rows, system);
        apply_default_system(&mut val_rows, system);
    }
    let formats = train_rows.format_counts();
    let (train, train_stats) = tokenize_rows(&train_rows.rows, template, tokenizer, opts)?;
    if train.is_empty() {
        return Err(no_samples(train_specs, &train_stats, opts.max_length));
    }
    let (val, val_stats) = tokenize_rows(&val_rows, template, tokenizer, opts)?;
    if !val_rows.is_empty() && val.is_empty() {
        let names = if val_specs.is_empty() { train_specs } else { val_specs };
        return Err(no_samples(names, &val_stats, opts.max_length));
    }
    skipped.truncate(qtrain_data::MAX_REPORTED_SKIPS);
    Ok(PreparedData { train, train_stats, val, val_stats, val_rows, num_skipped, skipped, formats })
}

fn no_samples(specs: &[String], st: &DatasetStats, max_length: usize) -> TrainError {
    TrainError::Dataset {
        path: PathBuf::from(specs.join(" ")),
        message: format!(
            "no usable samples: {} rows, {} longer than max_length {max_length} (dropped), {} without supervised tokens",
            st.records, st.dropped_too_long, st.dropped_no_targets
        ),
    }
}

/// Tokenize rows through the chat template and apply `max_length`.
pub fn tokenize_rows(
    rows: &[DatasetRow],
    template: &ChatTemplate,
    tokenizer: &QwenTokenizer,
    opts: &PrepareOptions,
) -> Result<(Vec<Sample>, DatasetStats)> {
    let conv_opts = ConversationOptions { loss_scale: opts.loss_scale, ..ConversationOptions::default() };
    let conv = ConversationTokenizer::new(template, tokenizer, &conv_opts);
    let strategy = match opts.truncation {
        TruncationStrategy::Delete => qtrain_data::TruncationStrategy::Delete,
        TruncationStrategy::Left => qtrain_data::TruncationStrategy::Left,
        TruncationStrategy::Right => qtrain_data::TruncationStrategy::Right,
        TruncationStrategy::Split => {
            return Err(TrainError::arg("truncation_strategy", "split is for raw text (`qtrain pt`); conversations: delete, left or right"))
        }
    };
    let mut samples = Vec::with_capacity(rows.len());
    let mut stats = DatasetStats::default();
    for row in rows {
        stats.records += 1;
        let t = conv.tokenize(&row.messages, row.tools.as_ref()).map_err(|e| row.error(e))?;
        let (mut ids, mut labels) = (t.input_ids, t.labels);
        match truncate_tokens(&mut ids, &mut labels, opts.max_length, strategy) {
            TruncationOutcome::Fits => {}
            TruncationOutcome::Delete { .. } => {
                stats.dropped_too_long += 1;
                continue;
            }
            TruncationOutcome::Truncated { removed_tokens, .. } => {
                stats.truncated += 1;
                stats.truncated_tokens += removed_tokens;
            }
        }
        stats.admit(Sample { input_ids: ids, labels }, &mut samples);
    }
    stats.samples = samples.len();
    Ok((samples, stats))
}

/// One row of a training batch: a sample, or several packed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainRow {
    /// `[T]`
    pub input_ids: Vec<u32>,
    /// `[T]`, unshifted
    pub labels: Vec<i32>,
    /// `[T]` sample index within the row (packed rows only).
    pub segment_ids: Option<Vec<u32>>,
    /// `[T]` positions restarting at 0 for each sample (packed rows only).
    pub position_ids: Option<Vec<u32>>,
    /// Samples in the row.
    pub num_samples: usize,
}

impl TrainRow {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// One sample per row.
pub fn unpacked_rows(samples: Vec<Sample>) -> Vec<TrainRow> {
    samples
        .into_iter()
        .map(|s| TrainRow { input_ids: s.input_ids, labels: s.labels, segment_ids: None, position_ids: None, num_samples: 1 })
        .collect()
}

/// Pack samples into rows of at most `max_length` tokens (best-fit decreasing, ms-swift's
/// `binpack`). Within a row the samples keep their input order.
pub fn packed_rows(samples: &[Sample], max_length: usize) -> Result<Vec<TrainRow>> {
    let pairs: Vec<(Vec<u32>, Vec<i32>)> = samples.iter().map(|s| (s.input_ids.clone(), s.labels.clone())).collect();
    Ok(pack_samples(&pairs, max_length, PackingStrategy::BestFitDecreasing)?
        .into_iter()
        .map(|r| TrainRow {
            num_samples: r.samples.len(),
            input_ids: r.input_ids,
            labels: r.labels,
            segment_ids: Some(r.segment_ids),
            position_ids: Some(r.position_ids),
        })
        .collect())
}

/// A right-padded micro-batch of rows. Unpacked rows go through [`TrainBatch::from_samples`];
/// a batch with packed rows carries their segment ids (attention stays within a sample), their
/// restarting positions, and targets that never cross a sample boundary.
pub fn make_batch(rows: &[&TrainRow], pad_id: u32) -> Result<TrainBatch> {
    if rows.iter().all(|r| r.segment_ids.is_none()) {
        let pairs: Vec<(Vec<u32>, Vec<i32>)> = rows.iter().map(|r| (r.input_ids.clone(), r.labels.clone())).collect();
        return Ok(TrainBatch::from_samples(&pairs, pad_id)?);
    }
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if t == 0 {
        return Err(TrainError::Invalid("empty batch".into()));
    }
    let n = rows.len() * t;
    let (mut ids, mut positions, mut valid, mut segments, mut targets) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for r in rows {
        let len = r.len();
        let seg: Vec<u32> = r.segment_ids.clone().unwrap_or_else(|| vec![0; len]);
        let pos: Vec<u32> = r.position_ids.clone().unwrap_or_else(|| (0..len as u32).collect());
        let tgt = next_token_targets(&r.labels, &seg);
        for j in 0..t {
            if j < len {
                ids.push(r.input_ids[j]);
                positions.push(pos[j]);
                valid.push(true);
                segments.push(seg[j]);
                targets.push(tgt[j]);
            } else {
                ids.push(pad_id);
                positions.push(0);
                valid.push(false);
                // Padding is its own segment (and masked as a key anyway).
                segments.push(u32::MAX);
                targets.push(IGNORE_INDEX);
            }
        }
    }
    let batch = Batch { ids, batch: rows.len(), seq_len: t, positions, valid, segments: Some(segments) };
    Ok(TrainBatch { batch, targets })
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

/// The seed of epoch `epoch`'s shuffle: a function of the run seed and the epoch only, so a
/// resumed run recomputes the very order it was in.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ 0x5EED_0000_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The row order of one epoch: `0..n` reshuffled with [`epoch_seed`] when
/// `train_dataloader_shuffle` is on (a new permutation every epoch, as a seeded
/// `RandomSampler`), else `0..n`; with `group_by_length`, regrouped by
/// [`length_grouped_order`].
pub fn epoch_order(lengths: &[usize], epoch: u64, seed: u64, shuffle: bool, group_by_length: bool, batch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if shuffle {
        Rng::new(epoch_seed(seed, epoch)).shuffle(&mut order);
    }
    if group_by_length {
        order = length_grouped_order(&order, lengths, batch);
    }
    order
}

/// transformers' `get_length_grouped_indices` on an already (randomly) permuted `order`:
/// mega-batches of `min(n / (4·batch), 50)·batch` rows (at least one batch), each sorted by
/// decreasing length (stable), and the longest row moved to the very front so an
/// out-of-memory shows up on the first step.
pub fn length_grouped_order(order: &[usize], lengths: &[usize], batch: usize) -> Vec<usize> {
    let batch = batch.max(1);
    let mult = (order.len() / (batch * 4)).clamp(1, 50);
    let mut megabatches: Vec<Vec<usize>> = order.chunks(mult * batch).map(<[usize]>::to_vec).collect();
    for m in &mut megabatches {
        m.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    }
    if let Some(longest) = (0..megabatches.len()).max_by_key(|&k| (lengths[megabatches[k][0]], std::cmp::Reverse(k))) {
        let first = megabatches[0][0];
        megabatches[0][0] = megabatches[longest][0];
        megabatches[longest][0] = first;
    }
    megabatches.concat()
}

/// Split an order into micro-batches of `batch` rows (the last one may be smaller, as a
/// DataLoader with `drop_last=False`).
pub fn micro_batches(order: &[usize], batch: usize) -> Vec<Vec<usize>> {
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// transformers' `num_items_in_batch` normalisation: every micro-batch of an optimizer step
/// scales its summed token loss by `1 / (targets in all the step's micro-batches)`, so that
/// k micro-batches of one sample equal one batch of k samples. `None` when the step has no
/// target at all (the caller must report it, not divide by zero).
pub fn per_target_scale(step_targets: usize) -> Option<f32> {
    (step_targets > 0).then(|| (1.0 / step_targets as f64) as f32)
}

/// FNV-1a over every row's ids and labels: a checkpoint records it so a resumed run can tell
/// that its dataset is not the one the checkpoint was trained on.
pub fn fingerprint(rows: &[TrainRow]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for r in rows {
        eat(r.len() as u64);
        r.input_ids.iter().for_each(|&i| eat(u64::from(i)));
        r.labels.iter().for_each(|&l| eat(l as u64));
        if let Some(s) = &r.segment_ids {
            s.iter().for_each(|&x| eat(u64::from(x)));
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
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
        let lengths = vec![1; 50];
        let e0 = epoch_order(&lengths, 0, 42, true, false, 1);
        let e1 = epoch_order(&lengths, 1, 42, true, false, 1);
        assert_ne!(e0, e1);
        assert_eq!(e1, epoch_order(&lengths, 1, 42, true, false, 1));
        assert_eq!(epoch_order(&lengths, 1, 42, false, false, 1), (0..50).collect::<Vec<_>>());
        assert_eq!(micro_batches(&[0, 1, 2, 3, 4], 2), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn length_grouping_sorts_mega_batches_and_leads_with_the_longest() {
        // 16 rows, batch 2: mega-batches of min(16 / 8, 50) · 2 = 4 rows.
        let lengths: Vec<usize> = vec![5, 1, 9, 3, 2, 8, 7, 4, 30, 6, 10, 11, 12, 13, 14, 15];
        let order: Vec<usize> = (0..16).collect();
        let g = length_grouped_order(&order, &lengths, 2);
        let mut sorted = g.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, order, "a permutation");
        assert_eq!(g[0], 8, "the longest row comes first");
        // Mega-batch 0 was [0..4] sorted as [2, 0, 3, 1]; its head (2) swapped with row 8's place.
        assert_eq!(&g[..4], &[8, 0, 3, 1]);
        assert_eq!(&g[8..12], &[2, 11, 10, 9]);
        // With shuffling each epoch's grouping differs but stays a permutation.
        let a = epoch_order(&lengths, 0, 1, true, true, 2);
        let b = epoch_order(&lengths, 1, 1, true, true, 2);
        assert_ne!(a, b);
        assert_eq!(a[0], 8);
    }

    #[test]
    fn packed_batches_keep_samples_apart() {
        let s = |ids: Vec<u32>, labels: Vec<i32>| Sample { input_ids: ids, labels };
        let samples = vec![s(vec![1, 2, 3], vec![-100, 2, 3]), s(vec![4, 5], vec![-100, 5]), s(vec![6, 7, 8, 9], vec![-100, -100, 8, 9])];
        let rows = packed_rows(&samples, 6).unwrap();
        // Best fit decreasing: the 4-token sample opens a row (room 2), the 3-token one opens
        // another (room 3), the 2-token one fits the first row exactly.
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().map(|r| r.num_samples).sum::<usize>(), 3);
        let packed = rows.iter().find(|r| r.num_samples == 2).unwrap();
        assert_eq!(packed.input_ids, vec![4, 5, 6, 7, 8, 9]);
        let tb = make_batch(&[packed, rows.iter().find(|r| r.num_samples == 1).unwrap()], 0).unwrap();
        assert_eq!(tb.batch.seq_len, 6);
        assert_eq!(tb.batch.positions[..6], [0, 1, 0, 1, 2, 3]);
        // Token 5 (last of its sample) predicts nothing; padding neither.
        assert_eq!(tb.targets[..6], [5, -100, -100, 8, 9, -100]);
        assert_eq!(tb.targets[6..], [2, 3, -100, -100, -100, -100]);
        assert_eq!(tb.batch.valid[6..], [true, true, true, false, false, false]);
        // Unpacked rows give exactly the plain batch.
        let plain = unpacked_rows(samples.clone());
        let a = make_batch(&[&plain[0], &plain[1]], 0).unwrap();
        let pairs: Vec<(Vec<u32>, Vec<i32>)> = samples[..2].iter().map(|s| (s.input_ids.clone(), s.labels.clone())).collect();
        let b = TrainBatch::from_samples(&pairs, 0).unwrap();
        assert_eq!((a.targets, a.batch.ids, a.batch.positions), (b.targets, b.batch.ids, b.batch.positions));
        assert_ne!(fingerprint(&plain), fingerprint(&rows));
    }

    #[test]
    fn prepare_loads_formats_splits_and_applies_max_length() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-qwen2");
        let assets = qtrain_data::ModelTextAssets::load(&model).unwrap();
        let template = assets.chat_template.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let short = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        let long = r#"{"query": "hey", "response": "and a long answer to match it, word after word"}"#;
        let alpaca = r#"{"instruction": "say", "input": "", "output": "ok"}"#;
        let path = write(dir.path(), "d.jsonl", &format!("{short}\n{long}\n{alpaca}\n"));
        let prep = |max_length, truncation, system: Option<&str>, ratio: f64| {
            let opts = PrepareOptions::for_eval(max_length, truncation, system.map(str::to_string));
            prepare(std::slice::from_ref(&path), &[], ratio, &template, &assets.tokenizer, &opts).unwrap()
        };
        let all = prep(512, TruncationStrategy::Delete, None, 0.0);
        assert_eq!((all.train_stats.records, all.train_stats.samples), (3, 3));
        assert_eq!(all.formats.values().sum::<usize>(), 3);
        let (short_len, long_len) = (all.train[0].input_ids.len(), all.train[1].input_ids.len());
        assert!(short_len < long_len);
        assert_eq!(all.train_stats.longest, long_len);
        let im_end = assets.tokenizer.token_to_id("<|im_end|>").unwrap() as i32;
        assert!(all.train[0].labels.contains(&im_end));
        assert_eq!(all.train[0].labels[0], IGNORE_INDEX);

        let max = short_len + 2;
        let deleted = prep(max, TruncationStrategy::Delete, None, 0.0);
        assert_eq!(deleted.train_stats.dropped_too_long, 1);
        let right = prep(max, TruncationStrategy::Right, None, 0.0);
        assert_eq!(right.train_stats.truncated, 1);
        assert_eq!(right.train[1].input_ids[..], all.train[1].input_ids[..max]);
        assert_eq!(right.train_stats.truncated_tokens, long_len - max);

        let with_system = prep(512, TruncationStrategy::Delete, Some("Be brief."), 0.0);
        let text = assets.tokenizer.decode(&with_system.train[0].input_ids, false).unwrap();
        assert!(text.starts_with("<|im_start|>system\nBe brief.<|im_end|>"), "{text}");

        let split = prep(512, TruncationStrategy::Delete, None, 0.34);
        assert_eq!((split.train.len(), split.val.len(), split.val_rows.len()), (2, 1, 1));
        assert_eq!(split.val_stats.samples, 1);
    }

    #[test]
    fn per_target_scale_is_one_over_all_step_targets() {
        assert_eq!(per_target_scale(0), None);
        assert_eq!(per_target_scale(4), Some(0.25));
    }
}
