//! "Did it learn?": a run that teaches an identity (`--model_name` / `--model_author`, here with
//! the bundled `self-cognition` data) asks the held-out identity questions at every evaluation
//! and logs `eval_self_cognition_acc` and `eval_repetition_rate` (logging.jsonl, trainer_state's
//! log_history, TensorBoard, images/); without a validation set it asks them once, at the last
//! step; `qtrain eval` reports them with --model_name/--model_author.

use std::path::{Path, PathBuf};

use crate::common::{fixture, read_json, read_jsonl, run_dirs, s, succeeds as ok};
use serde_json::Value;

fn only_run_dir(output: &Path) -> PathBuf {
    let dirs = run_dirs(output);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn rate(v: &Value, key: &str) -> f64 {
    let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"));
    assert!((0.0..=1.0).contains(&x), "{key} = {x} is not in [0, 1]");
    x
}

const IDENTITY: [&str; 4] = ["--model_name", "qtrain-robot", "--model_author", "qtrain-lab"];

#[test]
fn self_cognition_runs_log_identity_accuracy_and_repetition_at_every_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    let mut args = vec![
        "train",
        "--model",
        s(&model),
        "--dataset",
        "self-cognition#16",
        "--split_dataset_ratio",
        "0.25",
        "--output_dir",
        s(&out),
        "--max_steps",
        "4",
        "--eval_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "1e-2",
        "--system",
        "You are a helpful assistant.",
    ];
    args.extend(IDENTITY);
    let (_, stderr) = ok(&args);
    assert!(stderr.contains("10 held-out identity questions"), "{stderr}");
    let run = only_run_dir(&out);
    let evals: Vec<Value> = read_jsonl(&run.join("logging.jsonl")).into_iter().filter(|l| l.get("eval_loss").is_some()).collect();
    assert_eq!(evals.len(), 2, "evaluations at steps 2 and 4: {evals:?}");
    for e in &evals {
        rate(e, "eval_token_acc");
        rate(e, "eval_self_cognition_acc");
        rate(e, "eval_repetition_rate");
    }
    let state = read_json(&run.join("checkpoint-4/trainer_state.json"));
    let history: Vec<&Value> =
        state["log_history"].as_array().unwrap().iter().filter(|h| h.get("eval_self_cognition_acc").is_some()).collect();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["step"], 4);
    rate(history[1], "eval_repetition_rate");
    for png in ["eval_self_cognition_acc.png", "eval_repetition_rate.png"] {
        assert!(run.join("images").join(png).is_file(), "images/{png} missing");
    }
}

#[test]
fn without_a_validation_set_the_questions_are_asked_at_the_last_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    let mut args = vec![
        "train",
        "--model",
        s(&model),
        "--dataset",
        "self-cognition#4",
        "--output_dir",
        s(&out),
        "--max_steps",
        "2",
        "--gradient_accumulation_steps",
        "1",
    ];
    args.extend(IDENTITY);
    ok(&args);
    let logs = read_jsonl(&only_run_dir(&out).join("logging.jsonl"));
    let evals: Vec<&Value> = logs.iter().filter(|l| l.get("eval_self_cognition_acc").is_some()).collect();
    assert_eq!(evals.len(), 1, "{logs:?}");
    assert_eq!(evals[0]["global_step/max_steps"], "2/2");
    assert!(evals[0].get("eval_loss").is_none(), "no validation set, no eval_loss: {}", evals[0]);
    rate(evals[0], "eval_repetition_rate");
}

#[test]
fn qtrain_eval_asks_the_identity_questions_when_given_name_and_author() {
    let model = fixture("tiny-qwen2");
    let mut args = vec!["eval", "--model", s(&model), "--dataset", "self-cognition#4", "--json"];
    args.extend(IDENTITY);
    let (stdout, _) = ok(&args);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    rate(&v, "token_acc");
    rate(&v, "self_cognition_acc");
    rate(&v, "repetition_rate");
    let answers = v["self_cognition_answers"].as_array().unwrap();
    assert_eq!(answers.len(), 10);
    assert_eq!(answers.iter().filter(|a| a["lang"] == "zh").count(), 5);
    // An untrained model does not know its name: every answer is scored, none is correct.
    assert!(answers.iter().all(|a| a["correct"] == false && a["answer"].is_string()), "{answers:?}");
    assert_eq!(v["self_cognition_acc"], 0.0);
    // Without name and author: loss and accuracy only.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"query\": \"hi\", \"response\": \"hello\"}\n").unwrap();
    let (stdout, _) = ok(&["eval", "--model", s(&model), "--dataset", s(&data), "--json"]);
    assert!(!stdout.contains("self_cognition_acc"), "{stdout}");
}
