//! [`recommend`]: starting hyper-parameters from the dataset size, and the search space to
//! sweep around them (`qtrain sweep --recommend`).
//!
//! The rules (LoRA learning rates; full fine-tuning uses one order of magnitude less):
//!
//! | training samples | learning rate (search range)  | epochs (range) | warmup_ratio (range) |
//! |------------------|-------------------------------|----------------|----------------------|
//! | < 100            | 1e-4 (5e-5 – 2e-4)            | 10 (8 – 12)    | 0.1 (0.05 – 0.2)     |
//! | 100 – 1 000      | 3e-5 (2e-5 – 5e-5)            | 4 (3 – 5)      | 0.1 (0.05 – 0.15)    |
//! | > 1 000          | 1.5e-5 (1e-5 – 2e-5)          | 2 (2 – 3)      | 0.05 (0.03 – 0.1)    |
//!
//! The effective batch (`per_device_train_batch_size × gradient_accumulation_steps`) is 16,
//! or the whole dataset when it has fewer than 16 samples (one optimizer step per epoch);
//! [`Recommendation::gradient_accumulation_steps`] turns it into an accumulation count. LoRA
//! sweeps also try `lora_rank=choice:8,16,32`. Small datasets get more epochs because each
//! epoch is only a few optimizer steps, and a larger warm-up ratio so warm-up is more than one
//! or two steps.
//!
//! Continued pretraining on raw text (`qtrain pt`, [`recommend_pretrain`]) is another regime,
//! with the pretraining values of the Qwen3 hyper-parameter guide (the guide our users follow
//! for Qwen3-0.6B; its full and LoRA fine-tuning regimes are the table above):
//!
//! | setting | value | source |
//! |---|---|---|
//! | learning rate | 3e-4 (searched 1e-4 – 1e-3) | the guide; the range (a factor ~3 either side) is qtrain's |
//! | warm-up | 2000 steps (`--warmup_steps`) | the guide |
//! | schedule | cosine | the guide; also ms-swift's default (REFERENCE.md) |
//! | weight decay | 0.1 | the guide; also ms-swift's default (REFERENCE.md) |
//! | epochs | 1 | qtrain's: a corpus is read once; more passes repeat documents |
//! | effective batch | 16 | ms-swift's default accumulation `ceil(16 / batch)` (REFERENCE.md) |
//!
//! The guide's values are for full training (`qtrain pt`'s default); with LoRA they are kept
//! and the reasoning says so. Its dropout (0.1–0.2, attention dropout) is not part of these
//! settings.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, SweepError};

/// Effective batch size the rules aim for.
pub const TARGET_EFFECTIVE_BATCH: usize = 16;

/// What is trained: LoRA adapters or every weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinetuneMethod {
    Lora,
    Full,
}

impl FromStr for FinetuneMethod {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<FinetuneMethod> {
        match s {
            "lora" => Ok(FinetuneMethod::Lora),
            "full" => Ok(FinetuneMethod::Full),
            other => Err(SweepError::InvalidConfig { message: format!("unknown fine-tuning method {other:?}; valid: lora, full") }),
        }
    }
}

impl fmt::Display for FinetuneMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FinetuneMethod::Lora => "lora",
            FinetuneMethod::Full => "full",
        })
    }
}

/// Suggested settings, why, and what to sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub learning_rate: f64,
    pub num_train_epochs: u32,
    /// `per_device_train_batch_size × gradient_accumulation_steps`.
    pub effective_batch: usize,
    pub warmup_ratio: f64,
    /// Warm-up in optimizer steps (wins over `warmup_ratio` when > 0, as `--warmup_steps`).
    pub warmup_steps: u64,
    /// One sentence per decision.
    pub reasoning: Vec<String>,
    /// Search-space strings for `qtrain sweep --space`.
    pub search_space: Vec<String>,
}

impl Recommendation {
    /// The accumulation that reaches `effective_batch` with this per-device batch (at least 1).
    pub fn gradient_accumulation_steps(&self, per_device_train_batch_size: usize) -> usize {
        self.effective_batch.div_ceil(per_device_train_batch_size.max(1)).max(1)
    }
}

/// Applies the rules in the module docs.
pub fn recommend(num_samples: usize, method: FinetuneMethod) -> Recommendation {
    // One row of the table in the module docs (LoRA learning rates).
    struct Tier {
        lr: f64,
        lr_range: (f64, f64),
        epochs: u32,
        epoch_range: (u32, u32),
        warmup: f64,
        warmup_range: &'static str,
        size: &'static str,
    }
    let tier = if num_samples < 100 {
        Tier {
            lr: 1e-4,
            lr_range: (5e-5, 2e-4),
            epochs: 10,
            epoch_range: (8, 12),
            warmup: 0.1,
            warmup_range: "0.05:0.2",
            size: "fewer than 100 samples",
        }
    } else if num_samples <= 1000 {
        Tier {
            lr: 3e-5,
            lr_range: (2e-5, 5e-5),
            epochs: 4,
            epoch_range: (3, 5),
            warmup: 0.1,
            warmup_range: "0.05:0.15",
            size: "100 to 1000 samples",
        }
    } else {
        Tier {
            lr: 1.5e-5,
            lr_range: (1e-5, 2e-5),
            epochs: 2,
            epoch_range: (2, 3),
            warmup: 0.05,
            warmup_range: "0.03:0.1",
            size: "more than 1000 samples",
        }
    };
    let scale = match method {
        FinetuneMethod::Lora => 1.0,
        FinetuneMethod::Full => 0.1,
    };
    let lr = tier.lr * scale;
    let (lr_lo, lr_hi) = (tier.lr_range.0 * scale, tier.lr_range.1 * scale);
    let effective_batch = TARGET_EFFECTIVE_BATCH.min(num_samples.max(1));
    let mut reasoning = vec![
        format!(
            "{num_samples} samples ({}): learning rate {} for {method}{}, searched in [{}, {}] on a log scale.",
            tier.size,
            sci(lr),
            if method == FinetuneMethod::Full { " (one order of magnitude below LoRA)" } else { "" },
            sci(lr_lo),
            sci(lr_hi)
        ),
        format!(
            "{} epochs (searched {}–{}): {}.",
            tier.epochs,
            tier.epoch_range.0,
            tier.epoch_range.1,
            if num_samples < 100 {
                "a tiny dataset gives only a few optimizer steps per epoch, so it needs many passes"
            } else if num_samples <= 1000 {
                "enough passes to converge without memorising a mid-sized dataset"
            } else {
                "a large dataset gives many steps per epoch; more passes mostly overfit"
            }
        ),
        format!("warmup_ratio {} so that warm-up spans more than a step or two.", tier.warmup),
    ];
    if effective_batch < TARGET_EFFECTIVE_BATCH {
        reasoning.push(format!(
            "effective batch {effective_batch}: the whole dataset per optimizer step (it has fewer than {TARGET_EFFECTIVE_BATCH} samples)."
        ));
    } else {
        reasoning.push(format!(
            "effective batch {effective_batch} (per_device_train_batch_size × gradient_accumulation_steps, e.g. 1 × 16 or 4 × 4) for stable gradients."
        ));
    }
    let mut search_space = vec![
        format!("learning_rate=loguniform:{}:{}", sci(lr_lo), sci(lr_hi)),
        format!("num_train_epochs=int:{}:{}", tier.epoch_range.0, tier.epoch_range.1),
        format!("warmup_ratio=uniform:{}", tier.warmup_range),
    ];
    if method == FinetuneMethod::Lora {
        search_space.push("lora_rank=choice:8,16,32".to_string());
        reasoning.push("LoRA rank tried at 8, 16 and 32.".to_string());
    }
    Recommendation {
        learning_rate: lr,
        num_train_epochs: tier.epochs,
        effective_batch,
        warmup_ratio: tier.warmup,
        warmup_steps: 0,
        reasoning,
        search_space,
    }
}

/// The pretraining guide's learning rate, warm-up steps and weight decay (module docs).
pub const PRETRAIN_LEARNING_RATE: f64 = 3e-4;
pub const PRETRAIN_WARMUP_STEPS: u64 = 2000;
pub const PRETRAIN_WEIGHT_DECAY: f64 = 0.1;

/// The continued-pretraining regime (`qtrain pt`) for `num_documents` documents (module docs).
pub fn recommend_pretrain(num_documents: usize, method: FinetuneMethod) -> Recommendation {
    let mut reasoning = vec![
        format!(
            "continued pretraining: learning rate {}, cosine schedule, weight decay {PRETRAIN_WEIGHT_DECAY} (the Qwen3 hyper-parameter guide's pretraining values), searched in [1e-4, 1e-3] on a log scale.",
            sci(PRETRAIN_LEARNING_RATE)
        ),
        format!(
            "{PRETRAIN_WARMUP_STEPS} warm-up steps (the guide): a run with fewer optimizer steps spends all of them warming up; lower --warmup_steps or use --warmup_ratio for short runs."
        ),
        format!("1 epoch over {num_documents} documents: a corpus is read once (qtrain's rule); more passes repeat documents."),
        format!("effective batch {TARGET_EFFECTIVE_BATCH} (ms-swift's default accumulation, ceil(16 / per_device_train_batch_size))."),
    ];
    if method == FinetuneMethod::Lora {
        reasoning.push("the guide's pretraining values are for full training; they are kept for LoRA.".to_string());
    }
    Recommendation {
        learning_rate: PRETRAIN_LEARNING_RATE,
        num_train_epochs: 1,
        effective_batch: TARGET_EFFECTIVE_BATCH,
        warmup_ratio: 0.0,
        warmup_steps: PRETRAIN_WARMUP_STEPS,
        reasoning,
        search_space: vec!["learning_rate=loguniform:1e-4:1e-3".to_string()],
    }
}

/// `1e-4`, `1.5e-5`: scientific notation without float noise.
fn sci(x: f64) -> String {
    let mut exp = x.abs().log10().floor() as i32;
    let mut mantissa = (x / 10f64.powi(exp) * 100.0).round() / 100.0;
    if mantissa.abs() >= 10.0 {
        mantissa /= 10.0;
        exp += 1;
    }
    let m = format!("{mantissa:.2}");
    let m = m.trim_end_matches('0').trim_end_matches('.');
    format!("{m}e{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;

    #[test]
    fn tiers_follow_the_documented_rules() {
        let r = recommend(50, FinetuneMethod::Lora);
        assert_eq!((r.learning_rate, r.num_train_epochs, r.effective_batch), (1e-4, 10, 16));
        assert!((8..=12).contains(&r.num_train_epochs));
        let r = recommend(500, FinetuneMethod::Lora);
        assert!((2e-5..=5e-5).contains(&r.learning_rate) && (3..=5).contains(&r.num_train_epochs));
        let r = recommend(1000, FinetuneMethod::Lora);
        assert!((2e-5..=5e-5).contains(&r.learning_rate), "1000 is still the middle tier");
        let r = recommend(20_000, FinetuneMethod::Lora);
        assert!((1e-5..=2e-5).contains(&r.learning_rate) && (2..=3).contains(&r.num_train_epochs));
        assert!(r.effective_batch >= 16);
        let full = recommend(20_000, FinetuneMethod::Full);
        assert!((full.learning_rate - r.learning_rate / 10.0).abs() < 1e-18);
        assert!(full.search_space.iter().all(|s| !s.starts_with("lora_rank")));
        assert_eq!(recommend(10, FinetuneMethod::Lora).effective_batch, 10);
        assert_eq!(r.gradient_accumulation_steps(4), 4);
        assert_eq!(r.gradient_accumulation_steps(3), 6);
    }

    #[test]
    fn pretraining_follows_the_guide() {
        for method in [FinetuneMethod::Full, FinetuneMethod::Lora] {
            let r = recommend_pretrain(10, method);
            assert_eq!((r.learning_rate, r.warmup_steps, r.num_train_epochs, r.effective_batch), (3e-4, 2000, 1, 16));
            let space = SearchSpace::parse(&r.search_space).unwrap();
            assert!(space.params()[0].distribution.contains(&crate::ParamValue::Float(r.learning_rate)));
            assert_eq!(r.reasoning.iter().any(|l| l.contains("kept for LoRA")), method == FinetuneMethod::Lora);
        }
        assert_eq!(recommend(10, FinetuneMethod::Lora).warmup_steps, 0, "fine-tuning warms up by ratio");
    }

    #[test]
    fn recommended_search_spaces_parse_and_contain_the_recommendation() {
        for n in [0, 10, 99, 100, 1000, 1001, 100_000] {
            for method in [FinetuneMethod::Lora, FinetuneMethod::Full] {
                let r = recommend(n, method);
                let space = SearchSpace::parse(&r.search_space).unwrap_or_else(|e| panic!("{n} {method}: {e}"));
                let lr = &space.params()[0].distribution;
                assert!(lr.contains(&crate::ParamValue::Float(r.learning_rate)), "{n} {method}: {lr} vs {}", r.learning_rate);
                assert!(space.params()[1].distribution.contains(&crate::ParamValue::Int(r.num_train_epochs as i64)));
                assert!(space.params()[2].distribution.contains(&crate::ParamValue::Float(r.warmup_ratio)));
                assert!(!r.reasoning.is_empty());
            }
        }
        assert_eq!(recommend(5000, FinetuneMethod::Full).search_space[0], "learning_rate=loguniform:1e-6:2e-6");
    }
}
