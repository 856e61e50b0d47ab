//! Evaluation during training: `--split_dataset_ratio` / `--val_dataset`, `eval_loss` and
//! `eval_token_acc` at every `--eval_steps` and at the end (logging.jsonl and trainer_state),
//! the best checkpoint by eval loss, `--save_total_limit 2` keeping best + last, and
//! `--early_stopping_patience` stopping the run with a final checkpoint.

use crate::common::{
    checkpoint_steps, fixture, qtrain, read_json, read_jsonl, run_dirs, s, step_of, succeeds as ok, text, write_qa_jsonl, QA,
};
use serde_json::Value;

#[test]
fn eval_steps_log_eval_metrics_and_save_total_limit_keeps_best_and_last() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    // A constant lr high enough that the held-out loss falls, then rises again: the best
    // checkpoint is not the last one.
    let (stdout, _) = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--split_dataset_ratio",
        "0.25",
        "--output_dir",
        s(&out),
        "--max_steps",
        "12",
        "--eval_steps",
        "2",
        "--save_steps",
        "2",
        "--save_total_limit",
        "2",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "3e-2",
        "--lr_scheduler_type",
        "constant",
    ]);
    let run = &run_dirs(&out)[0];
    // Seeded split: 2 of 8 rows held out and written out as ms-swift does.
    assert_eq!(std::fs::read_to_string(run.join("val_dataset.jsonl")).unwrap().lines().count(), 2);
    let logs = read_jsonl(&run.join("logging.jsonl"));
    let evals: Vec<&Value> = logs.iter().filter(|l| l.get("eval_loss").is_some()).collect();
    assert_eq!(evals.iter().map(|l| step_of(l)).collect::<Vec<_>>(), [2, 4, 6, 8, 10, 12]);
    for e in &evals {
        assert!(e["eval_loss"].as_f64().unwrap() > 0.0, "{e}");
        assert!((0.0..=1.0).contains(&e["eval_token_acc"].as_f64().unwrap()), "{e}");
    }
    // The best is the lowest eval loss (the first one on ties).
    let (best_step, best_loss) =
        evals.iter().map(|e| (step_of(e), e["eval_loss"].as_f64().unwrap())).fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
    assert_ne!(best_step, 12, "this setup must make the best checkpoint an earlier one (eval losses: {evals:?})");
    let summary = logs.last().unwrap();
    assert!(summary["best_model_checkpoint"].as_str().unwrap().ends_with(&format!("checkpoint-{best_step}")), "{summary}");
    assert_eq!(summary["best_metric"].as_f64().unwrap(), best_loss);
    assert!(stdout.trim().ends_with("checkpoint-12"));
    // save_total_limit 2: the best and the last, nothing else.
    assert_eq!(checkpoint_steps(run), [best_step, 12]);
    let state = read_json(&run.join("checkpoint-12/trainer_state.json"));
    assert!(state["best_model_checkpoint"].as_str().unwrap().ends_with(&format!("checkpoint-{best_step}")));
    assert_eq!(state["best_global_step"], best_step);
    let eval_history = state["log_history"].as_array().unwrap().iter().filter(|h| h.get("eval_loss").is_some()).count();
    assert_eq!(eval_history, 6);
    for png in ["eval_loss.png", "eval_token_acc.png", "train_loss.png"] {
        assert!(run.join("images").join(png).is_file(), "images/{png} missing");
    }
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA[..6]);
    let val = write_qa_jsonl(&tmp.path().join("val.jsonl"), &QA[6..]);
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    // A tiny lr cannot move the eval loss by the threshold: evaluation 1 sets the best,
    // evaluations 2 and 3 do not improve on it, so patience 2 stops the run at step 3.
    let (stdout, stderr) = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--val_dataset",
        s(&val),
        "--output_dir",
        s(&out),
        "--max_steps",
        "50",
        "--eval_steps",
        "1",
        "--save_steps",
        "100",
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "1e-9",
        "--early_stopping_patience",
        "2",
        "--early_stopping_threshold",
        "0.01",
    ]);
    assert!(stderr.contains("early stopping at step 3"), "{stderr}");
    assert!(stdout.trim().ends_with("checkpoint-3"), "a final checkpoint is written: {stdout}");
    let run = &run_dirs(&out)[0];
    assert_eq!(checkpoint_steps(run), [3]);
    let logs = read_jsonl(&run.join("logging.jsonl"));
    let summary = logs.last().unwrap();
    assert_eq!(summary["stop_reason"], "early_stopping");
    assert_eq!(summary["global_step"], 3);
    // The best metric follows every improvement (however small); only a checkpoint that
    // exists can be the best checkpoint.
    let evals: Vec<(u64, f64)> =
        logs.iter().filter(|l| l.get("eval_loss").is_some()).map(|l| (step_of(l), l["eval_loss"].as_f64().unwrap())).collect();
    assert_eq!(evals.len(), 3);
    let best = evals.iter().copied().fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
    assert_eq!(summary["best_metric"].as_f64().unwrap(), best.1);
    match best.0 {
        3 => assert!(summary["best_model_checkpoint"].as_str().unwrap().ends_with("checkpoint-3"), "{summary}"),
        _ => assert!(summary["best_model_checkpoint"].is_null(), "{summary}"),
    }
    let state = read_json(&run.join("checkpoint-3/trainer_state.json"));
    assert_eq!(state["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"], 2);
    assert_eq!(std::fs::read_to_string(run.join("val_dataset.jsonl")).unwrap().lines().count(), 2);

    // Early stopping needs something to evaluate.
    let out = qtrain(&["train", "--model", s(&model), "--dataset", s(&data), "--early_stopping_patience", "2", "--max_steps", "1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--early_stopping_patience") && err.contains("validation set"), "{err}");
}
