//! [`recommend`]: starting hyper-parameters from the dataset size, and the search space to
//! sweep around them (`qtrain sweep --recommend`).
//!
//! The fine-tuning rules ([`recommend`]) and their evidence:
//!
//! | setting | rule | source |
//! |---|---|---|
//! | learning rate (LoRA) | `1e-4 × 3584 / hidden_size`, clamped to [1e-5, 5e-3] | 1e-4 at hidden 3584 is the ms-swift Qwen2.5-7B self-cognition guide's LoRA rate; Adam's learning rate for hidden matrices scales as 1 / width (µP: Yang et al. 2022, "Tensor Programs V", table 3) — Qwen2.5-0.5B (896) gets 4e-4, the embedded model (256) 1.4e-3 |
//! | learning rate (full) | a tenth of LoRA's | ms-swift's defaults (1e-4 LoRA, 1e-5 full) |
//! | effective batch | 16 (the whole dataset below 16 samples) | ms-swift's default accumulation `ceil(16 / batch)` |
//! | epochs | enough for ≈ 100 optimizer steps: `ceil(100 / steps_per_epoch)`, 1 – 50 | the guide's run is ≈ 94 steps (≈ 1 500 rows, 1 epoch, batch 16); a small dataset needs more passes for as many updates |
//! | warm-up ratio | 0.05 | the guide |
//!
//! Measured (release build, the embedded model on the bundled self-cognition set, 100 rows,
//! batch 1 × accumulation 16, the held-out identity questions of `eval_self_cognition_acc`): the
//! previous size-tier rule (3e-5 × 4 epochs = 28 steps) learned nothing (accuracy 0.0,
//! repetition rate 1.0); this rule (1.4e-3 × 15 epochs = 105 steps) reaches 0.5 (repetition 0.3);
//! 2× its rate or 2× its steps gave 0.5 as well. On a larger synthetic set (`tools/recommend_check.sh`:
//! 1 000 seeded arithmetic question/answer rows, 10 % held out, the embedded model) the
//! recommendation (1.4e-3, 2 epochs = 114 steps) reaches eval loss 5.05 / token accuracy 0.578,
//! against 6.88 / 0.158 for the previous rule (3e-5 × 4 epochs = 228 steps); the ends of the
//! search range give 5.45 / 0.502 (÷3) and 4.89 / 0.597 (×3), so the optimum lies inside it.
//! The search space spans a factor 3 around the rate and 0.5× – 2× the epochs. LoRA sweeps also
//! try `lora_rank=choice:8,16,32`.
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

/// The LoRA learning rate of the anchor model (the guide's Qwen2.5-7B, hidden 3584).
pub const ANCHOR_LEARNING_RATE: f64 = 1e-4;
pub const ANCHOR_HIDDEN_SIZE: usize = 3584;
/// Optimizer steps a fine-tuning run aims for (the guide's run is ≈ 94).
pub const TARGET_STEPS: usize = 100;

/// Applies the fine-tuning rules in the module docs to `num_samples` training samples of a
/// model whose hidden size is `hidden_size`.
pub fn recommend(num_samples: usize, method: FinetuneMethod, hidden_size: usize) -> Recommendation {
    let lora_lr = (ANCHOR_LEARNING_RATE * ANCHOR_HIDDEN_SIZE as f64 / hidden_size.max(1) as f64).clamp(1e-5, 5e-3);
    let lr = round_2(match method {
        FinetuneMethod::Lora => lora_lr,
        FinetuneMethod::Full => lora_lr / 10.0,
    });
    let effective_batch = TARGET_EFFECTIVE_BATCH.min(num_samples.max(1));
    let steps_per_epoch = num_samples.max(1).div_ceil(effective_batch);
    let epochs = TARGET_STEPS.div_ceil(steps_per_epoch).clamp(1, 50) as u32;
    let warmup = 0.05;
    let (lr_lo, lr_hi) = (round_2(lr / 3.0), round_2(lr * 3.0));
    let (ep_lo, ep_hi) = ((epochs / 2).max(1), epochs * 2);
    let mut reasoning = vec![
        format!(
            "learning rate {} for {method} at hidden size {hidden_size}: the guide's 1e-4 at Qwen2.5-7B's 3584, scaled by 3584 / {hidden_size} (Adam's rate for hidden matrices goes as 1 / width, µP){}; searched in [{}, {}].",
            sci(lr),
            if method == FinetuneMethod::Full { ", then a tenth for full fine-tuning (ms-swift's 1e-5 vs 1e-4)" } else { "" },
            sci(lr_lo),
            sci(lr_hi)
        ),
        format!(
            "{epochs} epochs (searched {ep_lo}–{ep_hi}): {num_samples} samples at an effective batch of {effective_batch} are {steps_per_epoch} optimizer steps per epoch, and a run wants ≈ {TARGET_STEPS} steps (the guide's run is ≈ 94) — {} optimizer steps in all.",
            steps_per_epoch * epochs as usize
        ),
        format!("warmup_ratio {warmup} (the guide's), i.e. {} warm-up steps.", ((steps_per_epoch * epochs as usize) as f64 * warmup).ceil()),
    ];
    if effective_batch < TARGET_EFFECTIVE_BATCH {
        reasoning.push(format!(
            "effective batch {effective_batch}: the whole dataset per optimizer step (it has fewer than {TARGET_EFFECTIVE_BATCH} samples)."
        ));
    } else {
        reasoning.push(format!(
            "effective batch {effective_batch} (per_device_train_batch_size × gradient_accumulation_steps, e.g. 1 × 16 or 4 × 4), ms-swift's default."
        ));
    }
    let mut search_space = vec![
        format!("learning_rate=loguniform:{}:{}", sci(lr_lo), sci(lr_hi)),
        format!("num_train_epochs=int:{ep_lo}:{ep_hi}"),
        "warmup_ratio=uniform:0:0.1".to_string(),
    ];
    if method == FinetuneMethod::Lora {
        search_space.push("lora_rank=choice:8,16,32".to_string());
        reasoning.push("LoRA rank tried at 8, 16 and 32.".to_string());
    }
    Recommendation {
        learning_rate: lr,
        num_train_epochs: epochs,
        effective_batch,
        warmup_ratio: warmup,
        warmup_steps: 0,
        reasoning,
        search_space,
    }
}

/// `x` rounded to two significant digits (a learning rate a person would type).
fn round_2(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x;
    }
    // Through its decimal text, so 1e-5 comes out as the f64 nearest 1e-5.
    format!("{x:.1e}").parse().unwrap_or(x)
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
    fn learning_rate_scales_with_width_and_epochs_aim_at_a_hundred_steps() {
        // The anchor: Qwen2.5-7B, the guide's ~1500 rows → 1e-4, 1 epoch of 94 steps.
        let r = recommend(1500, FinetuneMethod::Lora, 3584);
        assert_eq!((r.learning_rate, r.num_train_epochs, r.effective_batch, r.warmup_ratio), (1e-4, 2, 16, 0.05));
        assert_eq!(recommend(1600, FinetuneMethod::Lora, 3584).num_train_epochs, 1);
        // Qwen2.5-0.5B and the embedded model: larger rates for narrower models.
        assert!((recommend(100, FinetuneMethod::Lora, 896).learning_rate - 4e-4).abs() < 1e-12);
        let tiny = recommend(100, FinetuneMethod::Lora, 256);
        assert!((tiny.learning_rate - 1.4e-3).abs() < 1e-12);
        assert_eq!(tiny.num_train_epochs, 15, "100 rows / 16 = 7 steps per epoch → 15 epochs ≈ 105 steps");
        let full = recommend(100, FinetuneMethod::Full, 256);
        assert!((full.learning_rate - 1.4e-4).abs() < 1e-12);
        assert!(full.search_space.iter().all(|s| !s.starts_with("lora_rank")));
        // Clamps and small datasets.
        assert_eq!(recommend(10, FinetuneMethod::Lora, 16).learning_rate, 5e-3);
        assert_eq!(recommend(10, FinetuneMethod::Lora, 1 << 20).learning_rate, 1e-5);
        assert_eq!(recommend(10, FinetuneMethod::Lora, 256).effective_batch, 10);
        assert_eq!(recommend(10, FinetuneMethod::Lora, 256).num_train_epochs, 50);
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
        assert_eq!(recommend(10, FinetuneMethod::Lora, 896).warmup_steps, 0, "fine-tuning warms up by ratio");
    }

    #[test]
    fn recommended_search_spaces_parse_and_contain_the_recommendation() {
        for n in [0, 10, 99, 100, 1000, 1001, 100_000] {
            for method in [FinetuneMethod::Lora, FinetuneMethod::Full] {
                let r = recommend(n, method, 896);
                let space = SearchSpace::parse(&r.search_space).unwrap_or_else(|e| panic!("{n} {method}: {e}"));
                let lr = &space.params()[0].distribution;
                assert!(lr.contains(&crate::ParamValue::Float(r.learning_rate)), "{n} {method}: {lr} vs {}", r.learning_rate);
                assert!(space.params()[1].distribution.contains(&crate::ParamValue::Int(r.num_train_epochs as i64)));
                assert!(space.params()[2].distribution.contains(&crate::ParamValue::Float(r.warmup_ratio)));
                assert!(!r.reasoning.is_empty());
            }
        }
        assert_eq!(recommend(5000, FinetuneMethod::Full, 3584).search_space[0], "learning_rate=loguniform:3.3e-6:3e-5");
    }
}
