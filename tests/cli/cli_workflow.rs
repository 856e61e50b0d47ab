//! The ms-swift workflow from checkpoints alone: after `train`, `infer`, `eval` and `export`
//! take `--adapters <checkpoint>` (or the run folder) without `--model` and give the same
//! results as with it; `train --resume_from_checkpoint <checkpoint>` alone continues the run
//! bit-exactly, and a flag that would change its course is refused without leaving a folder;
//! `--save_strategy/--eval_strategy epoch`, `--load_best_model_at_end`, `--save_only_model`,
//! `--add_version false`; a mismatched adapter is one line.

use std::path::{Path, PathBuf};

use crate::common::{checkpoint_steps, fails, fixture, read_json, read_jsonl, run_dirs, s, step_of, succeeds as ok, write_qa_jsonl, QA};
use serde_json::Value;

/// A LoRA run of 6 steps on the fixture (batch 1 × accumulation 2: 4 steps per epoch of 8
/// rows), saving every 2 steps.
fn train_args(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--model",
        s(model),
        "--dataset",
        s(data),
        "--output_dir",
        s(out),
        "--max_steps",
        "6",
        "--gradient_accumulation_steps",
        "2",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--learning_rate",
        "5e-3",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// (step, loss, grad_norm) of every train log of a run.
fn step_losses(run: &Path) -> Vec<(u64, Value, Value)> {
    read_jsonl(&run.join("logging.jsonl"))
        .into_iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| (step_of(&l), l["loss"].clone(), l["grad_norm"].clone()))
        .collect()
}

struct Trained {
    _tmp: tempfile::TempDir,
    model: PathBuf,
    data: PathBuf,
    run: PathBuf,
    last: PathBuf,
}

fn trained() -> Trained {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("out");
    let (stdout, _) = ok(&train_args(&model, &data, &out, &[]));
    let last = PathBuf::from(stdout.trim());
    let run = run_dirs(&out)[0].clone();
    Trained { _tmp: tmp, model, data, run, last }
}

fn reply(args: &[&str]) -> String {
    let mut all = vec!["infer", "--prompt", "What do bees make?", "--temperature", "0", "--max_new_tokens", "8", "--device", "cpu"];
    all.extend_from_slice(args);
    ok(&all).0
}

#[test]
fn infer_eval_and_export_read_the_base_model_from_the_checkpoint() {
    let t = trained();
    let with_model = reply(&["--model", s(&t.model), "--adapters", s(&t.last)]);
    let (without, stderr) = {
        let mut all = vec!["infer", "--prompt", "What do bees make?", "--temperature", "0", "--max_new_tokens", "8", "--device", "cpu"];
        all.extend_from_slice(&["--adapters", s(&t.last)]);
        ok(&all)
    };
    assert_eq!(without, with_model);
    assert!(stderr.contains("no --model: using the base model") && stderr.contains("args.json"), "{stderr}");
    // The run folder names its last checkpoint.
    let (from_run, stderr) = {
        let all = [
            "infer",
            "--prompt",
            "What do bees make?",
            "--temperature",
            "0",
            "--max_new_tokens",
            "8",
            "--device",
            "cpu",
            "--adapters",
            s(&t.run),
        ];
        ok(&all)
    };
    assert_eq!(from_run, with_model);
    assert!(stderr.contains("is a run folder: using its last checkpoint, checkpoint-6"), "{stderr}");

    let eval = |extra: &[&str]| -> Value {
        let mut all = vec!["eval", "--dataset", s(&t.data), "--json", "--device", "cpu", "--adapters", s(&t.last)];
        all.extend_from_slice(extra);
        serde_json::from_str(ok(&all).0.trim()).unwrap()
    };
    assert_eq!(eval(&[]), eval(&["--model", s(&t.model)]));

    let out = t.run.join("merged-a");
    ok(&["export", "--adapters", s(&t.last), "--merge_lora", "true", "--output_dir", s(&out)]);
    let out_b = t.run.join("merged-b");
    ok(&["merge", "--adapters", s(&t.last), "--model", s(&t.model), "--output_dir", s(&out_b)]);
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() == std::fs::read(out_b.join("model.safetensors")).unwrap());
}

#[test]
fn without_args_json_the_adapter_config_names_the_base_and_a_wrong_base_is_one_line() {
    let t = trained();
    let bare = t.run.join("bare-adapter");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(t.last.join(f), bare.join(f)).unwrap();
    }
    assert_eq!(reply(&["--adapters", s(&bare)]), reply(&["--model", s(&t.model), "--adapters", s(&t.last)]));

    let err = fails(&["infer", "--model", s(&fixture("tiny-qwen3")), "--adapters", s(&t.last), "--prompt", "hi", "--device", "cpu"]);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    let line = error_lines[0];
    assert!(line.contains("trained for another base model") && line.contains("tiny-qwen2") && line.contains("tiny-qwen3"), "{line}");
    assert!(line.contains("more modules") && !line.contains('\n'), "{line}");
}

#[test]
fn resume_from_the_checkpoint_alone_is_bit_exact_and_changes_are_refused_cleanly() {
    let t = trained();
    let ckpt = t.run.join("checkpoint-2");
    let out = t.run.parent().unwrap().to_path_buf();
    let (stdout, stderr) = ok(&["train", "--resume_from_checkpoint", s(&ckpt), "--device", "cpu"]);
    assert!(stderr.contains("arguments: the run's own"), "{stderr}");
    let resumed = &run_dirs(&out)[1];
    let (a, b) = (step_losses(&t.run), step_losses(resumed));
    assert_eq!(b.iter().map(|l| l.0).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    assert_eq!(b, a[2..].to_vec(), "resumed losses differ from the uninterrupted run");
    let final_ckpt = PathBuf::from(stdout.trim());
    for f in ["adapter_model.safetensors", "optimizer.safetensors"] {
        assert!(std::fs::read(final_ckpt.join(f)).unwrap() == std::fs::read(t.last.join(f)).unwrap(), "{f} differs");
    }

    // A flag that changes the course is refused, naming it once, and leaves no run folder.
    let err = fails(&["train", "--resume_from_checkpoint", s(&ckpt), "--learning_rate", "1e-3", "--device", "cpu"]);
    assert_eq!(err.matches("--learning_rate 0.001").count(), 1, "{err}");
    assert!(err.contains("--resume_only_model true"), "{err}");
    assert_eq!(run_dirs(&out).len(), 2, "a refused resume must not leave a run folder");
    // Free flags (more steps) go on.
    ok(&["train", "--resume_from_checkpoint", s(&t.last), "--max_steps", "7", "--device", "cpu"]);
    // --resume_only_model: a new run from the weights, any flag may change.
    let (_, stderr) = ok(&[
        "train",
        "--resume_from_checkpoint",
        s(&ckpt),
        "--resume_only_model",
        "true",
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(stderr.contains("--resume_only_model: a new run from the weights"), "{stderr}");
}

#[test]
fn epoch_strategies_save_and_evaluate_at_epoch_ends_and_the_best_checkpoint_is_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let val = write_qa_jsonl(&tmp.path().join("val.jsonl"), &QA[..3]);
    let out = tmp.path().join("out");
    // 8 rows, batch 1 × accumulation 3: an epoch is 3 steps (3 + 3 + 2 micro-batches; the
    // partial group is a step of its own), so epochs end at steps 3, 6 and 9.
    let extra = [
        "--val_dataset",
        s(&val),
        "--save_strategy",
        "epoch",
        "--eval_strategy",
        "epoch",
        "--num_train_epochs",
        "3",
        "--max_steps",
        "-1",
        "--gradient_accumulation_steps",
        "3",
        "--load_best_model_at_end",
        "true",
        "--metric_for_best_model",
        "eval_loss",
    ];
    let model = fixture("tiny-qwen2");
    let (stdout, stderr) = ok(&train_args(&model, &data, &out, &extra));
    let run = &run_dirs(&out)[0];
    let saved = checkpoint_steps(run);
    assert_eq!(saved, vec![3, 6, 9]);
    let evals: Vec<(u64, f64)> = read_jsonl(&run.join("logging.jsonl"))
        .iter()
        .filter(|l| l.get("eval_loss").is_some())
        .map(|l| (step_of(l), l["eval_loss"].as_f64().unwrap()))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 6, 9]);
    let best = evals.iter().fold(evals[0], |b, &e| if e.1 < b.1 { e } else { b });
    let best_dir = run.join(format!("checkpoint-{}", best.0));
    assert_eq!(PathBuf::from(stdout.trim()), best_dir, "stdout gives the best checkpoint");
    let last_line = stderr.lines().rfind(|l| l.starts_with("[qtrain] done")).unwrap();
    assert!(
        last_line.contains(&format!("best checkpoint {}", best_dir.display())) && last_line.contains("--load_best_model_at_end"),
        "{last_line}"
    );
    assert_eq!(read_json(&run.join("checkpoint-9/trainer_state.json"))["best_model_checkpoint"], s(&best_dir));
}

#[test]
fn save_only_model_and_add_version_false() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let out = tmp.path().join("flat");
    let model = fixture("tiny-qwen2");
    ok(&train_args(&model, &data, &out, &["--save_only_model", "true", "--add_version", "false", "--max_steps", "2"]));
    let ckpt = out.join("checkpoint-2");
    assert!(ckpt.join("adapter_model.safetensors").is_file() && ckpt.join("trainer_state.json").is_file());
    assert!(!ckpt.join("optimizer.safetensors").exists() && !ckpt.join("rng_state.json").exists());
    // The same folder again would mix two runs.
    let err = fails(&train_args(&model, &data, &out, &["--add_version", "false"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("already holds a run"), "{err}");
    let err = fails(&["train", "--resume_from_checkpoint", s(&ckpt), "--device", "cpu"]);
    assert!(err.contains("--save_only_model") && err.contains("--resume_only_model true"), "{err}");
}

#[test]
fn a_dataset_without_a_model_uses_ms_swift_defaults_not_the_demo_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let out = tmp.path().join("out");
    let (_, stderr) = ok(&["train", "--dataset", s(&data), "--output_dir", s(&out), "--max_steps", "1", "--device", "cpu"]);
    assert!(stderr.contains("ms-swift's defaults") && !stderr.contains("demo preset"), "{stderr}");
    let args = read_json(&run_dirs(&out)[0].join("args.json"));
    assert_eq!(args["learning_rate"], 1e-4);
    assert_eq!(args["lora_rank"], 8);
}

#[test]
fn the_first_sample_is_shown_with_its_supervised_part_and_neftune_changes_training_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA[..1]);
    let model = fixture("tiny-qwen2");
    let run = |out: &str, extra: &[&str]| -> (String, Vec<(u64, Value, Value)>) {
        let out = tmp.path().join(out);
        let mut args = train_args(&model, &data, &out, &["--max_steps", "2", "--gradient_accumulation_steps", "1", "--lora_dropout", "0"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let (_, stderr) = ok(&args);
        (stderr, step_losses(&run_dirs(&out)[0]))
    };
    let (stderr, plain) = run("plain", &[]);
    let labels = stderr.lines().find(|l| l.starts_with("[LABELS] ")).expect("a [LABELS] line");
    assert!(labels.starts_with("[LABELS] [-100 * ") && labels.contains(&format!("]{}<|im_end|>", QA[0].1)), "{labels}");
    assert!(stderr.contains("[INPUT] <|im_start|>system"), "{stderr}");
    let (_, noisy) = run("noisy", &["--neftune_noise_alpha", "5"]);
    let (_, again) = run("again", &["--neftune_noise_alpha", "5"]);
    assert_eq!(noisy, again, "NEFTune noise is seeded");
    assert_ne!(noisy[0].1, plain[0].1, "NEFTune noise must change the training loss");
}

#[test]
fn dry_run_shows_the_plan_and_the_first_sample_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    let mut args = train_args(&model, &data, &out, &[]);
    args.push("--dry_run".into());
    let (stdout, stderr) = ok(&args);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("[LABELS] [-100 * "), "{stderr}");
    assert!(
        stderr.contains("dry run: 6 steps (4 per epoch; batch 1 × accumulation 2)") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(!out.exists(), "a dry run must not create the output folder");
}
