//! `qtrain sweep` on the tiny fixture model: a grid over learning_rate × num_train_epochs writes
//! trials.jsonl, per-trial run folders, best.toml (which `qtrain train --config` accepts) and
//! the plots; `--resume true` on a finished study runs nothing; a trial whose run fails is
//! recorded and the study goes on; ASHA and the median pruner stop an untrained trial at its
//! first evaluation.

use std::path::PathBuf;

use crate::common::{fails, fixture, qtrain, read_json, read_jsonl, s, succeeds as ok, text, write_qa_jsonl, QA};
use qtrain_sweep::{GridSampler, ParamValue, SearchSpace};
use serde_json::Value;

/// The data and the flags of a small base run (6 training rows in 3 steps per epoch, 2 held out).
struct Setup {
    _tmp: tempfile::TempDir,
    study: PathBuf,
    base: Vec<String>,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
        let study = tmp.path().join("study");
        let base = [
            "sweep",
            "--model",
            s(&fixture("tiny-qwen2")),
            "--dataset",
            s(&data),
            "--split_dataset_ratio",
            "0.25",
            "--output_dir",
            s(&study),
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--report_to",
            "none",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        Setup { _tmp: tmp, study, base }
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        self.base.iter().map(String::as_str).chain(extra.iter().copied()).collect()
    }

    fn trials(&self) -> Vec<Value> {
        read_jsonl(&self.study.join("trials.jsonl"))
    }
}

/// A `--sweep_seed` whose grid order puts `first` at trial `position` (the grid is shuffled
/// by the seed, as Optuna's GridSampler).
fn seed_putting(spec: &str, first: f64, position: usize) -> String {
    let space = SearchSpace::parse(&[spec]).unwrap();
    let seed = (0..1000u64)
        .find(|&seed| {
            let grid = GridSampler::new(&space, 3, seed).unwrap();
            grid.point(position).unwrap().get("learning_rate") == Some(&ParamValue::Float(first))
        })
        .expect("some seed orders the grid so");
    seed.to_string()
}

#[test]
fn grid_sweep_writes_trials_best_toml_and_plots_and_resume_runs_nothing_new() {
    let setup = Setup::new();
    let sweep = [
        "--search",
        "learning_rate=loguniform:1e-3:1e-2",
        "--search",
        "num_train_epochs=int:1:2",
        "--sampler",
        "grid",
        "--grid_points",
        "2",
        "--n_trials",
        "4",
        "--pruner",
        "none",
        "--eval_steps",
        "2",
    ];
    let (stdout, _) = ok(&setup.args(&sweep));
    let trials = setup.trials();
    assert_eq!(trials.len(), 4);
    let mut points: Vec<(String, i64)> = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["trial"], i);
        assert_eq!(t["status"], "complete", "{t}");
        let metric = t["metric"].as_f64().unwrap();
        assert!(metric.is_finite() && metric > 0.0);
        // The metric is the last evaluation's eval_loss; earlier evaluations were reported too.
        let inter = t["intermediate"].as_array().unwrap();
        assert_eq!(inter.last().unwrap()[1].as_f64().unwrap(), metric);
        let lr = t["params"]["learning_rate"].as_f64().unwrap();
        let epochs = t["params"]["num_train_epochs"].as_i64().unwrap();
        points.push((format!("{lr:.1e}"), epochs));
        // Each trial has its own run folder with an ms-swift-style run inside.
        let run_dir = PathBuf::from(t["run_dir"].as_str().unwrap());
        assert_eq!(run_dir, setup.study.join(format!("trial_{i:04}")));
        let runs: Vec<PathBuf> = std::fs::read_dir(&run_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].join("logging.jsonl").is_file());
        // 3 steps per epoch.
        let args = read_json(&runs[0].join("args.json"));
        assert_eq!(args["num_train_epochs"].as_f64().unwrap(), epochs as f64);
        assert!(runs[0].join(format!("checkpoint-{}", 3 * epochs)).is_dir());
    }
    points.sort();
    assert_eq!(points, [("1.0e-2".to_string(), 1), ("1.0e-2".to_string(), 2), ("1.0e-3".to_string(), 1), ("1.0e-3".to_string(), 2)]);

    // The table, best first.
    let header = stdout.lines().find(|l| l.starts_with("trial")).unwrap_or_else(|| panic!("no table in {stdout}"));
    assert!(header.contains("eval_loss") && header.contains("learning_rate") && header.contains("num_train_epochs"), "{header}");
    let best = trials.iter().min_by(|a, b| a["metric"].as_f64().unwrap().total_cmp(&b["metric"].as_f64().unwrap())).unwrap();
    let first_row = stdout.lines().skip_while(|l| !l.starts_with("trial")).nth(1).unwrap();
    assert!(first_row.starts_with(&format!("{} ", best["trial"])), "{stdout}");

    // best.toml: the base arguments plus the best values, accepted by `qtrain train --config`.
    let best_toml = setup.study.join("best.toml");
    let toml_text = std::fs::read_to_string(&best_toml).unwrap();
    assert!(toml_text.contains("qtrain train --config"), "{toml_text}");
    assert!(toml_text.contains(&format!("num_train_epochs = {}.0", best["params"]["num_train_epochs"])), "{toml_text}");
    assert!(toml_text.contains("split_dataset_ratio = 0.25"), "{toml_text}");
    let out = qtrain(&["train", "--config", s(&best_toml), "--max_steps", "1"]);
    assert!(out.status.success(), "qtrain train --config best.toml: {}", text(&out.stderr));
    assert!(setup.study.join("best").is_dir(), "best.toml's output_dir is OUTPUT_DIR/best");

    for png in ["eval_loss_vs_learning_rate.png", "eval_loss_vs_num_train_epochs.png", "intermediate_eval_loss.png"] {
        assert!(setup.study.join("images").join(png).is_file(), "images/{png} missing");
    }

    // A finished study resumed runs nothing and repeats nothing.
    let mut again = setup.args(&sweep);
    again.extend(["--resume", "true"]);
    let (stdout, _) = ok(&again);
    assert!(stdout.contains(": 0 trials run"), "{stdout}");
    assert_eq!(setup.trials(), trials);
    // Without --resume an existing study is not touched.
    let err = fails(&setup.args(&sweep));
    assert!(err.contains("--resume true"), "{err}");
}

#[test]
fn a_failing_trial_is_recorded_and_the_study_goes_on() {
    let setup = Setup::new();
    let (stdout, _) = ok(&setup.args(&[
        "--search",
        "lora_rank=choice:0,4",
        "--sampler",
        "grid",
        "--n_trials",
        "2",
        "--pruner",
        "none",
        "--max_steps",
        "1",
    ]));
    let trials = setup.trials();
    assert_eq!(trials.len(), 2);
    let failed = trials.iter().find(|t| t["params"]["lora_rank"] == 0).unwrap();
    assert_eq!(failed["status"], "failed");
    assert!(failed["reason"].as_str().unwrap().contains("--lora_rank"), "{failed}");
    let other = trials.iter().find(|t| t["params"]["lora_rank"] == 4).unwrap();
    assert_eq!(other["status"], "complete", "{other}");
    assert!(stdout.contains("failed"), "{stdout}");

    // Names that are no `qtrain train` flag are refused before anything runs.
    let err = fails(&setup.args(&["--search", "lora_rnk=choice:4,8"]));
    assert!(err.contains("unknown parameter `lora_rnk`") && err.contains("did you mean `lora_rank`"), "{err}");
}

#[test]
fn asha_prunes_an_untrained_trial_at_its_first_evaluation() {
    let setup = Setup::new();
    let spec = "learning_rate=choice:5e-3,1e-9";
    let seed = seed_putting(spec, 5e-3, 0);
    let (stdout, _) = ok(&setup.args(&[
        "--search",
        spec,
        "--sampler",
        "grid",
        "--sweep_seed",
        &seed,
        "--n_trials",
        "2",
        "--pruner",
        "asha",
        "--eval_steps",
        "1",
        "--max_steps",
        "3",
    ]));
    let trials = setup.trials();
    assert_eq!(trials[0]["params"]["learning_rate"], 5e-3);
    assert_eq!(trials[0]["status"], "complete", "{trials:?}");
    let (trained, untrained) = (trials[0]["intermediate"][0][1].as_f64().unwrap(), trials[1]["intermediate"][0][1].as_f64().unwrap());
    assert!(trained < untrained, "premise: one step at lr 5e-3 lowers the eval loss ({trained} vs {untrained})");
    // Rung 0 (step 1) keeps the best max(1, ⌊2/3⌋) = 1 of 2: the untrained trial stops there.
    assert_eq!(trials[1]["status"], "pruned", "{trials:?}");
    assert!(trials[1]["reason"].as_str().unwrap().contains("asha"), "{}", trials[1]);
    assert_eq!(trials[1]["intermediate"].as_array().unwrap().len(), 1);
    let run = std::fs::read_dir(setup.study.join("trial_0001")).unwrap().next().unwrap().unwrap().path();
    let logs = std::fs::read_to_string(run.join("logging.jsonl")).unwrap();
    assert!(logs.lines().last().unwrap().contains("\"stop_reason\":\"pruned\""), "{logs}");
    assert!(run.join("checkpoint-1").is_dir(), "a pruned run keeps a final checkpoint");
    assert!(stdout.contains("pruned"), "{stdout}");
    assert!(setup.study.join("images/intermediate_eval_loss.png").is_file());
}

#[test]
fn the_median_pruner_stops_a_trial_below_the_median_of_five_completed_ones() {
    let setup = Setup::new();
    let spec = "learning_rate=choice:5e-3,4e-3,3e-3,2e-3,1e-3,1e-9";
    let seed = seed_putting(spec, 1e-9, 5);
    ok(&setup.args(&[
        "--search",
        spec,
        "--sampler",
        "grid",
        "--sweep_seed",
        &seed,
        "--n_trials",
        "6",
        "--pruner",
        "median",
        "--eval_steps",
        "1",
        "--max_steps",
        "2",
    ]));
    let trials = setup.trials();
    assert_eq!(trials.len(), 6);
    assert!(trials[..5].iter().all(|t| t["status"] == "complete"), "5 startup trials complete: {trials:?}");
    assert_eq!(trials[5]["params"]["learning_rate"], 1e-9);
    assert_eq!(trials[5]["status"], "pruned", "{trials:?}");
    assert!(trials[5]["reason"].as_str().unwrap().contains("median"), "{}", trials[5]);
}
