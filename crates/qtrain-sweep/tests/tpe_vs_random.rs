//! TPE must beat random search at equal budget on an objective shaped like a fine-tuning
//! sweep: a narrow learning-rate basin on a log scale plus two milder dimensions.
//!
//! The criterion can fail: over 40 seeds, TPE's best value must be strictly better than
//! random's on at least 70% of seeds AND better on average. The two share their first 10
//! trials (TPE's startup trials are the random sampler's draws for the same seed), so any
//! difference comes from the 50 guided trials, and a tie counts against TPE.
//!
//! For reference, Optuna 5.0 on this objective (100 seeds, 60 trials, 10 startup): mean best
//! 0.32 with `TPESampler(multivariate=False)`, 0.71 with `RandomSampler`.

use qtrain_sweep::{Direction, ParamValue, Params, Sampler, SamplerConfig, SearchSpace, TpeConfig, TrialRecord, TrialStatus};

const BUDGET: usize = 60;
const SEEDS: u64 = 40;

/// Minimum 0 at lr = 10^-3.7 ≈ 2e-4, 12 epochs, warmup 0.08. The lr basin is 0.15 decades
/// wide out of 4 (random search lands within ±1σ of it on 7.5% of draws); `ln(1 + d²)`
/// keeps a slope everywhere so a sampler that models the good region can follow it.
fn objective(p: &Params) -> f64 {
    let f = |name: &str| p.get(name).and_then(ParamValue::as_f64).unwrap();
    let d_lr = (f("learning_rate").log10() + 3.7) / 0.15;
    let d_ep = (f("num_train_epochs") - 12.0) / 3.0;
    let d_w = (f("warmup_ratio") - 0.08) / 0.04;
    (1.0 + d_lr * d_lr).ln() + 0.3 * (1.0 + d_ep * d_ep).ln() + 0.3 * (1.0 + d_w * d_w).ln()
}

fn best_of(config: &SamplerConfig, space: &SearchSpace, seed: u64) -> f64 {
    let sampler = Sampler::new(config, space, seed, BUDGET).unwrap();
    let mut history: Vec<TrialRecord> = Vec::new();
    for t in 0..BUDGET {
        let params = sampler.propose(t, &history, Direction::Minimize).unwrap();
        let value = objective(&params);
        history.push(TrialRecord {
            trial: t,
            params,
            status: TrialStatus::Complete,
            reason: None,
            metric: Some(value),
            intermediate: vec![],
            run_dir: Default::default(),
        });
    }
    history.iter().filter_map(|r| r.metric).fold(f64::INFINITY, f64::min)
}

#[test]
fn tpe_beats_random_search_at_equal_budget() {
    let space =
        SearchSpace::parse(&["learning_rate=loguniform:1e-6:1e-2", "num_train_epochs=int:1:20", "warmup_ratio=uniform:0:0.3"]).unwrap();
    let tpe = SamplerConfig::Tpe(TpeConfig::default());
    let random = SamplerConfig::Random;
    let (mut wins, mut sum_tpe, mut sum_random) = (0, 0.0, 0.0);
    for seed in 0..SEEDS {
        let (t, r) = (best_of(&tpe, &space, seed), best_of(&random, &space, seed));
        wins += usize::from(t < r);
        sum_tpe += t;
        sum_random += r;
    }
    let (mean_tpe, mean_random) = (sum_tpe / SEEDS as f64, sum_random / SEEDS as f64);
    let win_rate = wins as f64 / SEEDS as f64;
    eprintln!("TPE vs random, {BUDGET} trials x {SEEDS} seeds: TPE better on {wins}/{SEEDS} ({win_rate:.2}); mean best {mean_tpe:.4} vs {mean_random:.4}");
    assert!(win_rate >= 0.7, "TPE better on only {wins}/{SEEDS} seeds");
    assert!(mean_tpe < mean_random, "mean best: TPE {mean_tpe} vs random {mean_random}");
}

/// Categorical and log-integer dimensions are modelled too: the guided trials pick the good
/// choice and the good integer decade far more often than chance.
#[test]
fn tpe_concentrates_on_good_choices_and_log_integers() {
    let space = SearchSpace::parse(&["lora_rank=choice:8,16,32,64", "lora_alpha=int:1:256:log"]).unwrap();
    let objective = |p: &Params| {
        let rank = p.get("lora_rank").and_then(ParamValue::as_i64).unwrap();
        let alpha = p.get("lora_alpha").and_then(ParamValue::as_i64).unwrap() as f64;
        f64::from(u8::from(rank != 16)) + (alpha.ln() - 32f64.ln()).powi(2)
    };
    let (mut good_rank, mut good_alpha, mut guided) = (0, 0, 0);
    for seed in 0..5 {
        let sampler = Sampler::new(&SamplerConfig::Tpe(TpeConfig::default()), &space, seed, 40).unwrap();
        let mut history: Vec<TrialRecord> = Vec::new();
        for t in 0..40 {
            let params = sampler.propose(t, &history, Direction::Minimize).unwrap();
            if t >= 20 {
                guided += 1;
                good_rank += usize::from(params.get("lora_rank") == Some(&ParamValue::Int(16)));
                let alpha = params.get("lora_alpha").and_then(ParamValue::as_i64).unwrap();
                good_alpha += usize::from((16..=64).contains(&alpha));
            }
            let value = objective(&params);
            history.push(TrialRecord {
                trial: t,
                params,
                status: TrialStatus::Complete,
                reason: None,
                metric: Some(value),
                intermediate: vec![],
                run_dir: Default::default(),
            });
        }
    }
    // Chance: 1/4 for the rank, ln(4.03)/ln(256.5) ≈ 25% for alpha in 16..=64; 40% of 100
    // guided trials is 3.5 binomial standard deviations above that.
    eprintln!("guided trials 20..40: rank 16 in {good_rank}/{guided}, alpha in 16..=64 in {good_alpha}/{guided}");
    assert!(good_rank * 5 >= guided * 2, "rank 16 chosen {good_rank}/{guided}");
    assert!(good_alpha * 5 >= guided * 2, "alpha in 16..=64 chosen {good_alpha}/{guided}");
}
