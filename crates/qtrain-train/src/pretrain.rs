//! Training data for raw text (`qtrain pt`, `--use_chat_template false`; ms-swift's
//! `swift pt`): dataset specs → documents (`qtrain-data`'s [`qtrain_data::text`]: `{"text"}`
//! rows, one assistant message, `.txt` lines; `FILE#N`) → the train/validation split of each
//! dataset (documents, before tokenization, as ms-swift) → the text's ids + eos → the
//! `max_length` policy: `split` into consecutive blocks (pt's default), or `delete` / `left` /
//! `right` as for conversations → [`Sample`]s in which every token is a label.
//!
//! It produces the same [`PreparedData`] as the conversation path in [`crate::dataset`], so
//! packing, batching and evaluation are shared. It must not touch models or tensors.

use std::path::PathBuf;

use qtrain_data::{
    block_labels, load_text_dataset, row_text, split_blocks, split_dataset, truncate_tokens, DatasetOptions, DatasetRow, LoadedDataset,
    QwenTokenizer, TextTokenizer, TruncationOutcome, TOKENIZER_CONFIG_FILE,
};

use crate::args::TruncationStrategy;
use crate::dataset::{DatasetStats, PrepareOptions, PreparedData, Sample};
use crate::error::{Result, TrainError};

/// Load, split and tokenize raw-text datasets (spec `i` draws `#N` with seed `seed + i`).
pub fn prepare_text(
    train_specs: &[String],
    val_specs: &[String],
    split_ratio: f64,
    tokenizer: &QwenTokenizer,
    opts: &PrepareOptions,
) -> Result<PreparedData> {
    let config = tokenizer.origin().with_file_name(TOKENIZER_CONFIG_FILE);
    let text = TextTokenizer::new(tokenizer, opts.eos_token.as_deref(), &config)?;
    let load = |spec: &str, i: usize| {
        let options = DatasetOptions {
            seed: opts.seed.wrapping_add(i as u64),
            skip_malformed: !opts.strict,
            shuffle_sample: opts.shuffle_sample,
            ..DatasetOptions::default()
        };
        load_text_dataset(spec, &options)
    };
    let mut train_rows = LoadedDataset::default();
    let mut val_rows: Vec<DatasetRow> = Vec::new();
    for (i, spec) in train_specs.iter().enumerate() {
        let LoadedDataset { rows, num_skipped, skipped } = load(spec, i)?;
        let (train, val) = split_dataset(rows, split_ratio, opts.seed)?;
        train_rows.extend(LoadedDataset { rows: train, num_skipped, skipped });
        val_rows.extend(val);
    }
    let mut num_skipped = train_rows.num_skipped;
    let mut skipped = train_rows.skipped.clone();
    for (i, spec) in val_specs.iter().enumerate() {
        let loaded = load(spec, i)?;
        num_skipped += loaded.num_skipped;
        skipped.extend(loaded.skipped);
        val_rows.extend(loaded.rows);
    }
    let formats = train_rows.format_counts();
    let (train, train_stats) = text_samples(&train_rows.rows, &text, opts)?;
    if train.is_empty() {
        return Err(no_samples(train_specs, &train_stats));
    }
    let (val, val_stats) = text_samples(&val_rows, &text, opts)?;
    if !val_rows.is_empty() && val.is_empty() {
        return Err(no_samples(if val_specs.is_empty() { train_specs } else { val_specs }, &val_stats));
    }
    skipped.truncate(qtrain_data::MAX_REPORTED_SKIPS);
    Ok(PreparedData { train, train_stats, val, val_stats, val_rows, num_skipped, skipped, formats })
}

fn no_samples(specs: &[String], st: &DatasetStats) -> TrainError {
    TrainError::Dataset {
        path: PathBuf::from(specs.join(" ")),
        message: format!(
            "no usable samples: {} documents, {} dropped as too long, {} shorter than 2 tokens",
            st.records, st.dropped_too_long, st.dropped_no_targets
        ),
    }
}

/// Tokenize documents (ids + eos, every token a label) and apply `max_length`.
pub fn text_samples(rows: &[DatasetRow], text: &TextTokenizer<'_>, opts: &PrepareOptions) -> Result<(Vec<Sample>, DatasetStats)> {
    let mut samples = Vec::with_capacity(rows.len());
    let mut stats = DatasetStats::default();
    for row in rows {
        stats.records += 1;
        let ids = text.tokenize(row_text(row)?).map_err(|e| row.error(e))?;
        // A one-token document (an empty text: only eos) or last block has no target: dropped.
        for sample in document_samples(ids, opts.max_length, opts.truncation, &mut stats) {
            stats.admit(sample, &mut samples);
        }
    }
    stats.samples = samples.len();
    Ok((samples, stats))
}

/// One document's samples under the `max_length` policy, counted in `stats`.
fn document_samples(mut ids: Vec<u32>, max_length: usize, strategy: TruncationStrategy, stats: &mut DatasetStats) -> Vec<Sample> {
    let cut = match strategy {
        TruncationStrategy::Split => {
            if ids.len() > max_length {
                stats.split_documents += 1;
            }
            return split_blocks(&ids, max_length)
                .into_iter()
                .map(|block| Sample { input_ids: block.to_vec(), labels: block_labels(block) })
                .collect();
        }
        TruncationStrategy::Delete => qtrain_data::TruncationStrategy::Delete,
        TruncationStrategy::Left => qtrain_data::TruncationStrategy::Left,
        TruncationStrategy::Right => qtrain_data::TruncationStrategy::Right,
    };
    let mut labels = block_labels(&ids);
    match truncate_tokens(&mut ids, &mut labels, max_length, cut) {
        TruncationOutcome::Fits => {}
        TruncationOutcome::Delete { .. } => {
            stats.dropped_too_long += 1;
            return Vec::new();
        }
        TruncationOutcome::Truncated { removed_tokens, .. } => {
            stats.truncated += 1;
            stats.truncated_tokens += removed_tokens;
        }
    }
    vec![Sample { input_ids: ids, labels }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtrain_data::IGNORE_INDEX;
    use std::path::Path;

    fn options(max_length: usize, truncation: TruncationStrategy) -> PrepareOptions {
        let mut o = PrepareOptions::for_eval(max_length, truncation, None);
        o.use_chat_template = false;
        o.eos_token = Some("<|im_end|>".into());
        o
    }

    #[test]
    fn documents_become_blocks_with_every_token_supervised() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-qwen2");
        let tokenizer = QwenTokenizer::from_file(model.join("tokenizer.json")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let long = "word ".repeat(40);
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, format!("{{\"text\": \"short one\"}}\n{{\"text\": \"{long}\"}}\n{{\"text\": \"\"}}\n")).unwrap();
        let specs = [path.to_string_lossy().into_owned()];
        let eos = tokenizer.token_to_id("<|im_end|>").unwrap();
        let whole = prepare_text(&specs, &[], 0.0, &tokenizer, &options(4096, TruncationStrategy::Split)).unwrap();
        // The empty text is eos alone: one token, nothing to predict.
        assert_eq!((whole.train.len(), whole.train_stats.dropped_no_targets), (2, 1));
        let doc = &whole.train[1];
        assert_eq!(*doc.input_ids.last().unwrap(), eos);
        assert_eq!(doc.input_ids, tokenizer.encode(&long).unwrap().into_iter().chain([eos]).collect::<Vec<_>>());
        assert_eq!(doc.num_targets(), doc.input_ids.len() - 1);

        let n = doc.input_ids.len();
        let max = n / 3 + 1;
        let split = prepare_text(&specs, &[], 0.0, &tokenizer, &options(max, TruncationStrategy::Split)).unwrap();
        assert_eq!(split.train_stats.split_documents, 1);
        let blocks: Vec<&Sample> = split.train.iter().skip(1).collect();
        let joined: Vec<u32> = blocks.iter().flat_map(|b| b.input_ids.clone()).collect();
        assert_eq!(joined, doc.input_ids, "consecutive blocks, nothing lost or repeated");
        assert!(blocks.iter().all(|b| b.input_ids.len() <= max && b.labels[0] == IGNORE_INDEX));
        assert_eq!(split.train_stats.tokens, whole.train_stats.tokens);

        let deleted = prepare_text(&specs, &[], 0.0, &tokenizer, &options(max, TruncationStrategy::Delete)).unwrap();
        assert_eq!((deleted.train.len(), deleted.train_stats.dropped_too_long), (1, 1));
        let right = prepare_text(&specs, &[], 0.0, &tokenizer, &options(max, TruncationStrategy::Right)).unwrap();
        assert_eq!(right.train[1].input_ids, doc.input_ids[..max]);

        let held_out = prepare_text(&specs, &[], 0.5, &tokenizer, &options(4096, TruncationStrategy::Split)).unwrap();
        assert_eq!(held_out.val_rows.len(), 1);
        assert_eq!(held_out.val_rows[0].to_json()["messages"][0]["role"], "assistant");
        let mut no_eos = options(64, TruncationStrategy::Split);
        no_eos.eos_token = None;
        let e = prepare_text(&specs, &[], 0.0, &tokenizer, &no_eos).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("eos_token"), "{e}");
    }
}
