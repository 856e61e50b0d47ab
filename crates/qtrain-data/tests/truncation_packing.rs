//! `max_length` truncation on a real tokenized conversation, `loss_scale` parsing, and
//! packing: every token kept, segments and positions right, targets never crossing a
//! sample boundary, for both grouping strategies on many random length mixes.

use std::path::PathBuf;

use qtrain_data::{
    next_token_targets, pack_samples, plan_packing, ConversationOptions, ConversationTokenizer, LossScale, PackingStrategy, QwenTokenizer,
    TokenizerConfig, TruncationOutcome, TruncationReport, TruncationStrategy, IGNORE_INDEX,
};
use serde_json::json;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

#[test]
fn truncating_a_tokenized_conversation() {
    let tokenizer = QwenTokenizer::from_file(fixture("qwen-tokenizer/tokenizer.json.gz")).unwrap();
    let template = TokenizerConfig::from_file(fixture("qwen-tokenizer/tokenizer_config_qwen2.5.json")).unwrap().chat_template().unwrap();
    let messages = json!([
        {"role": "user", "content": "Name three primary colours."},
        {"role": "assistant", "content": "Red, yellow and blue."},
    ]);
    let options = ConversationOptions::default();
    let full = ConversationTokenizer::new(&template, &tokenizer, &options).tokenize(&messages, None).unwrap();
    let n = full.len();
    let supervised = full.num_supervised_tokens;
    assert!(supervised > 3 && n > 20);

    let mut t = full.clone();
    assert_eq!(t.truncate(n, TruncationStrategy::Delete), TruncationOutcome::Fits);
    assert_eq!(t, full);
    assert_eq!(t.truncate(n - 1, TruncationStrategy::Delete), TruncationOutcome::Delete { length: n });
    assert_eq!(t, full);

    // `left` keeps the reply: cut 5 tokens off the start.
    let mut t = full.clone();
    let out = t.truncate(n - 5, TruncationStrategy::Left);
    assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 5, supervised_left: supervised });
    assert_eq!(t.input_ids, full.input_ids[5..]);
    assert_eq!(t.labels[0], IGNORE_INDEX);
    assert_eq!(t.labels[1..], full.labels[6..]);
    assert_eq!(t.num_supervised_tokens, supervised);

    // `right` cuts the end of the reply: the last 3 supervised tokens go.
    let mut t = full.clone();
    let out = t.truncate(n - 4, TruncationStrategy::Right);
    // The final "\n" after <|im_end|> is not supervised; the 3 tokens before it are.
    assert_eq!(out, TruncationOutcome::Truncated { removed_tokens: 4, supervised_left: supervised - 3 });
    assert_eq!(t.input_ids, full.input_ids[..n - 4]);
    assert_eq!(t.num_supervised_tokens, supervised - 3);

    // Cutting every supervised token is reported.
    let mut t = full.clone();
    let mut report = TruncationReport::default();
    report.record(t.truncate(8, TruncationStrategy::Right));
    report.record(full.clone().truncate(n, TruncationStrategy::Right));
    report.record(full.clone().truncate(4, TruncationStrategy::Delete));
    assert_eq!(report, TruncationReport { fits: 1, truncated: 1, deleted: 1, removed_tokens: n - 8, truncated_without_targets: 1 });
}

#[test]
fn loss_scale_names_are_reachable() {
    assert_eq!("default".parse::<LossScale>().unwrap(), LossScale::All);
    assert_eq!("last_round".parse::<LossScale>().unwrap(), LossScale::LastRound);
    let err = "all".parse::<LossScale>().unwrap_err().to_string();
    assert_eq!(err, "`loss_scale`: unknown or unsupported value `all`; valid: default, last_round");
}

/// A small deterministic generator for test data (64-bit LCG, Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn random_samples(rng: &mut Lcg, count: usize, max_len: u64) -> Vec<(Vec<u32>, Vec<i32>)> {
    let mut next_id = 1000u32;
    (0..count)
        .map(|_| {
            let len = 1 + rng.below(max_len) as usize;
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    next_id += 1;
                    next_id
                })
                .collect();
            // A prompt of random length (not supervised), then a supervised reply.
            let prompt = rng.below(len as u64) as usize;
            let labels = ids.iter().enumerate().map(|(i, &id)| if i < prompt { IGNORE_INDEX } else { id as i32 }).collect();
            (ids, labels)
        })
        .collect()
}

#[test]
fn packing_preserves_tokens_segments_positions_and_targets() {
    let mut rng = Lcg(2024);
    for round in 0..40 {
        let max_length = 8 + rng.below(120) as usize;
        let count = 1 + rng.below(60) as usize;
        let samples = random_samples(&mut rng, count, max_length as u64);
        for strategy in [PackingStrategy::BestFitDecreasing, PackingStrategy::Sequential] {
            let rows = pack_samples(&samples, max_length, strategy).unwrap();
            let ctx = format!("round {round}, {strategy:?}, max_length {max_length}");
            // Every sample exactly once.
            let mut seen: Vec<usize> = rows.iter().flat_map(|r| r.samples.iter().copied()).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..samples.len()).collect::<Vec<_>>(), "{ctx}");
            for row in &rows {
                assert!(!row.is_empty() && row.len() <= max_length, "{ctx}");
                let t = row.len();
                assert_eq!((row.labels.len(), row.segment_ids.len(), row.position_ids.len()), (t, t, t), "{ctx}");
                let bounds = row.cu_seqlens();
                assert_eq!(bounds.len(), row.samples.len() + 1, "{ctx}");
                let targets = row.next_token_targets();
                for (segment, &sample) in row.samples.iter().enumerate() {
                    let (start, end) = (bounds[segment] as usize, bounds[segment + 1] as usize);
                    let (ids, labels) = &samples[sample];
                    // The sample's tokens and labels, contiguous and unchanged.
                    assert_eq!(&row.input_ids[start..end], &ids[..], "{ctx}");
                    assert_eq!(&row.labels[start..end], &labels[..], "{ctx}");
                    assert!(row.segment_ids[start..end].iter().all(|&s| s == segment as u32), "{ctx}");
                    assert_eq!(row.position_ids[start..end], (0..ids.len() as u32).collect::<Vec<_>>()[..], "{ctx}");
                    // Targets inside the segment are the sample's own shifted labels, and
                    // its last token predicts nothing.
                    let own = next_token_targets(labels, &vec![0; labels.len()]);
                    assert_eq!(&targets[start..end], &own[..], "{ctx}");
                    assert_eq!(targets[end - 1], IGNORE_INDEX, "{ctx}");
                }
                // No target is a token of another sample.
                for (i, &target) in targets.iter().enumerate() {
                    if target != IGNORE_INDEX {
                        assert_eq!(row.segment_ids[i], row.segment_ids[i + 1], "{ctx}: target crosses a boundary at {i}");
                        assert_eq!(target, row.input_ids[i + 1] as i32, "{ctx}");
                    }
                }
            }
            // Supervised targets are conserved: packing loses none and invents none.
            let packed: usize = rows.iter().map(|r| r.next_token_targets().iter().filter(|&&l| l != IGNORE_INDEX).count()).sum();
            let alone: usize = samples.iter().map(|(_, l)| l.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()).sum();
            assert_eq!(packed, alone, "{ctx}");
            if strategy == PackingStrategy::Sequential {
                let order: Vec<usize> = rows.iter().flat_map(|r| r.samples.iter().copied()).collect();
                assert_eq!(order, (0..samples.len()).collect::<Vec<_>>(), "{ctx}: sequential keeps order");
            }
        }
    }
}

#[test]
fn best_fit_decreasing_never_uses_more_rows_than_sequential_here() {
    let mut rng = Lcg(7);
    for _ in 0..20 {
        let lengths: Vec<usize> = (0..200).map(|_| 1 + rng.below(512) as usize).collect();
        let bfd = plan_packing(&lengths, 1024, PackingStrategy::BestFitDecreasing).unwrap();
        let seq = plan_packing(&lengths, 1024, PackingStrategy::Sequential).unwrap();
        assert!(bfd.len() <= seq.len(), "{} > {}", bfd.len(), seq.len());
        // Lower bound: total tokens / max_length.
        let total: usize = lengths.iter().sum();
        assert!(bfd.len() >= total.div_ceil(1024));
    }
}
