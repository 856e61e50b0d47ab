//! `qtrain train`, `qtrain eval` and `qtrain export` run as a user runs them: the built binary on
//! the tiny Qwen2/Qwen3 fixtures with a small dataset written to a temporary folder. Checks the
//! run folder layout and `logging.jsonl` keys, that checkpoints load in `infer` and `eval`, that
//! the loss really goes down, that a merged export evaluates like base + adapter, that
//! accumulation and batching give the same step, and that bad input fails without a panic.

use std::path::{Path, PathBuf};

use crate::common::{fails, fixture, qa_record, read_json, read_jsonl, run_dirs, s, QA};
use serde_json::Value;

/// The QA pairs as JSONL (first `n`).
fn write_jsonl(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("train.jsonl");
    let text: String = QA[..n].iter().map(|(q, a)| format!("{}\n", qa_record(q, a))).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The QA pairs as one JSON array.
fn write_json_array(dir: &Path) -> PathBuf {
    let path = dir.join("train.json");
    let items: Vec<Value> = QA.iter().map(|(q, a)| qa_record(q, a)).collect();
    std::fs::write(&path, serde_json::to_string_pretty(&items).unwrap()).unwrap();
    path
}

/// Run and require success; returns stdout.
fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    crate::common::succeeds(args).0
}

/// `qtrain eval --json` → (loss, token_acc, tokens).
fn eval(model: &Path, adapters: Option<&Path>, dataset: &Path) -> (f64, f64, u64) {
    let mut args = vec!["eval", "--model", s(model), "--dataset", s(dataset), "--json"];
    if let Some(a) = adapters {
        args.extend(["--adapters", s(a)]);
    }
    let v: Value = serde_json::from_str(ok(&args).trim()).unwrap();
    (v["loss"].as_f64().unwrap(), v["token_acc"].as_f64().unwrap(), v["tokens"].as_u64().unwrap())
}

const LOG_KEYS: [&str; 10] = [
    "loss",
    "grad_norm",
    "learning_rate",
    "token_acc",
    "epoch",
    "global_step/max_steps",
    "elapsed_time",
    "remaining_time",
    "memory(GiB)",
    "train_speed(s/it)",
];

#[test]
fn lora_run_writes_ms_swift_layout_and_its_adapter_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_jsonl(tmp.path(), 8);
    let out = tmp.path().join("output");
    let model = fixture("tiny-qwen2");
    let args = [
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--max_steps",
        "6",
        "--logging_steps",
        "2",
        "--save_steps",
        "4",
        "--warmup_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--lora_rank",
        "4",
    ];
    let stdout = ok(&args);
    let runs = run_dirs(&out);
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let name = run.file_name().unwrap().to_str().unwrap();
    // v0-YYYYMMDD-HHMMSS
    assert!(name.starts_with("v0-") && name.len() == 18 && name.as_bytes()[11] == b'-', "{name}");
    assert!(name[3..11].bytes().chain(name[12..].bytes()).all(|b| b.is_ascii_digit()), "{name}");

    let args_json = read_json(&run.join("args.json"));
    assert_eq!(args_json["tuner_type"], "lora");
    assert_eq!(args_json["learning_rate"], 1e-4); // resolved LoRA default
    assert_eq!(args_json["gradient_accumulation_steps"], 2);
    assert_eq!(args_json["max_length"], 512); // the model's max_position_embeddings
    assert_eq!(args_json["lora_rank"], 4);

    let logs = read_jsonl(&run.join("logging.jsonl"));
    let steps: Vec<&str> = logs.iter().filter_map(|l| l["global_step/max_steps"].as_str()).collect();
    assert_eq!(steps, ["1/6", "2/6", "4/6", "6/6"], "first step, every logging_steps, and the last");
    for l in &logs[..4] {
        for k in LOG_KEYS {
            assert!(l.get(k).is_some(), "log line lacks {k}: {l}");
        }
        assert!(l["loss"].as_f64().unwrap() > 0.0 && l["grad_norm"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert_eq!(logs[0]["learning_rate"], 0.0, "the first warmup step runs with lr 0");
    assert_eq!(logs[1]["learning_rate"], 5e-5);
    assert_eq!(logs[0]["epoch"], 0.5); // 2 of 4 micro-batches
    let summary = &logs[4];
    let last = summary["last_model_checkpoint"].as_str().unwrap();
    assert!(last.ends_with("checkpoint-6"), "{summary}");
    assert!(summary["best_model_checkpoint"].is_null() && summary["best_metric"].is_null());
    assert_eq!(summary["global_step"], 6);
    assert!(summary["train_runtime"].as_f64().unwrap() > 0.0 && summary["train_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(stdout.trim(), last);

    let mut entries: Vec<String> = std::fs::read_dir(run).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["args.json", "checkpoint-4", "checkpoint-6", "images", "logging.jsonl", "runs"]);
    for png in ["train_loss.png", "train_learning_rate.png", "train_grad_norm.png", "train_token_acc.png"] {
        let bytes = std::fs::read(run.join("images").join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }
    let events: Vec<_> = std::fs::read_dir(run.join("runs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(events.len() == 1 && events[0].starts_with("events.out.tfevents."), "{events:?}");
    let ckpt = run.join("checkpoint-6");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "args.json",
        "trainer_state.json",
        "optimizer.safetensors",
        "scheduler.json",
        "rng_state.json",
        "data_state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    let cfg = read_json(&ckpt.join("adapter_config.json"));
    assert_eq!(cfg["target_modules"], serde_json::json!(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]));
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(Path::new(cfg["base_model_name_or_path"].as_str().unwrap()), std::fs::canonicalize(&model).unwrap());
    let state = read_json(&ckpt.join("trainer_state.json"));
    assert_eq!(state["global_step"], 6);
    assert_eq!(state["log_history"].as_array().unwrap().len(), 4);
    assert_eq!(read_json(&run.join("checkpoint-4/trainer_state.json"))["global_step"], 4);

    // The adapter works where adapters are used.
    ok(&["infer", "--model", s(&model), "--adapters", s(&ckpt), "--prompt", "What do bees make?", "--max_new_tokens", "4"]);
    let (loss, acc, tokens) = eval(&model, Some(&ckpt), &data);
    assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&acc) && tokens > 0);

    // A second run in the same output folder takes the next version.
    ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--max_steps",
        "1",
        "--gradient_accumulation_steps",
        "1",
    ]);
    let runs = run_dirs(&out);
    assert_eq!(runs.len(), 2);
    assert!(runs[1].file_name().unwrap().to_str().unwrap().starts_with("v1-"));
    assert!(runs[1].join("checkpoint-1/adapter_model.safetensors").is_file());
}

#[test]
fn loss_goes_down_and_the_merged_export_evaluates_like_the_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_jsonl(tmp.path(), 8);
    let out = tmp.path().join("output");
    let model = fixture("tiny-qwen2");
    let stdout = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--max_steps",
        "30",
        "--learning_rate",
        "1e-2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--logging_steps",
        "1",
        "--save_steps",
        "100",
    ]);
    let ckpt = PathBuf::from(stdout.trim());
    assert!(ckpt.ends_with("checkpoint-30"), "{ckpt:?}");
    let logs = read_jsonl(&run_dirs(&out)[0].join("logging.jsonl"));
    let losses: Vec<f64> = logs.iter().filter_map(|l| l["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 30);
    let tail = losses[25..].iter().sum::<f64>() / 5.0;
    assert!(tail < losses[0] - 2.0, "training loss did not fall: first {:.3}, mean of last 5 {tail:.3}", losses[0]);

    // Held-in evaluation: the adapter fits the data far better than the base model.
    let (base_loss, _, tokens) = eval(&model, None, &data);
    let (adapter_loss, adapter_acc, adapter_tokens) = eval(&model, Some(&ckpt), &data);
    assert_eq!(tokens, adapter_tokens);
    assert!(adapter_loss < base_loss - 2.0, "eval loss base {base_loss:.3}, adapter {adapter_loss:.3}");
    assert!(adapter_acc > 0.3, "token accuracy {adapter_acc}");

    // Merge with the default output name, then evaluate the merged folder on its own.
    let merged = PathBuf::from(ok(&["export", "--adapters", s(&ckpt), "--merge_lora", "true"]).trim());
    assert_eq!(merged, ckpt.with_file_name("checkpoint-30-merged"));
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"] {
        assert!(merged.join(f).is_file(), "merged folder lacks {f}");
    }
    let (merged_loss, merged_acc, _) = eval(&merged, None, &data);
    assert!((merged_loss - adapter_loss).abs() <= 1e-5 * adapter_loss, "merged {merged_loss} vs adapter {adapter_loss}");
    assert_eq!(merged_acc, adapter_acc);
    // The output exists now: exporting again must refuse rather than overwrite.
    let err = fails(&["export", "--adapters", s(&ckpt), "--merge_lora", "true"]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn qwen3_full_finetuning_writes_a_model_folder_from_a_json_array() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_json_array(tmp.path());
    let out = tmp.path().join("output");
    let model = fixture("tiny-qwen3");
    let stdout = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--tuner_type",
        "full",
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--logging_steps",
        "1",
        "--gradient_checkpointing",
        "false",
        "--dataset_shuffle",
        "false",
    ]);
    let ckpt = PathBuf::from(stdout.trim());
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "args.json",
        "trainer_state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "full checkpoint lacks {f}");
    }
    assert!(!ckpt.join("adapter_config.json").exists());
    assert_eq!(read_json(&run_dirs(&out)[0].join("args.json"))["tuner_type"], "full");
    // The checkpoint is a model folder of its own (tied embeddings: no lm_head written) that
    // fits the training data better than the base.
    ok(&["info", "--model", s(&ckpt)]);
    let (base_loss, _, _) = eval(&model, None, &data);
    let (tuned_loss, _, _) = eval(&ckpt, None, &data);
    assert!(tuned_loss < base_loss - 0.5, "full fine-tuning: base {base_loss:.3}, tuned {tuned_loss:.3}");
}

#[test]
fn qwen3_adapter_continues_training_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_jsonl(tmp.path(), 4);
    let out = tmp.path().join("output");
    let model = fixture("tiny-qwen3");
    let first = PathBuf::from(
        ok(&[
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(&out),
            "--max_steps",
            "3",
            "--target_modules",
            "q_proj",
            "v_proj",
            "--lora_rank",
            "2",
            "--lora_alpha",
            "4",
            "--use_rslora",
            "true",
            "--init_lora_weights",
            "gaussian",
            "--gradient_accumulation_steps",
            "1",
            "--learning_rate",
            "5e-3",
        ])
        .trim(),
    );
    let cfg = read_json(&first.join("adapter_config.json"));
    assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    assert_eq!(
        (cfg["r"].as_u64(), cfg["use_rslora"].as_bool(), cfg["init_lora_weights"].as_str()),
        (Some(2), Some(true), Some("gaussian"))
    );
    // Continue from it: the adapter's own rank and targets win over the (default) flags.
    let second = PathBuf::from(
        ok(&[
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(&out),
            "--adapters",
            s(&first),
            "--max_steps",
            "2",
            "--gradient_accumulation_steps",
            "1",
        ])
        .trim(),
    );
    let cfg = read_json(&second.join("adapter_config.json"));
    assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    assert_eq!(cfg["r"], 2);
    let merged = tmp.path().join("merged");
    ok(&["export", "--model", s(&model), "--adapters", s(&second), "--merge_lora", "true", "--output_dir", s(&merged)]);
    let (a, _, _) = eval(&model, Some(&second), &data);
    let (m, _, _) = eval(&merged, None, &data);
    assert!((a - m).abs() <= 1e-5 * a, "merged {m} vs adapter {a}");
}

/// transformers' `num_items_in_batch` normalisation: one batch of 4, 4 micro-batches of 1 and
/// 2 × 2 give the same first step (loss and gradient norm), padding notwithstanding.
#[test]
fn accumulation_and_batching_give_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_jsonl(tmp.path(), 4);
    let model = fixture("tiny-qwen2");
    let first_log = |batch: &str, accum: &str| -> (f64, f64) {
        let out = tmp.path().join(format!("out-{batch}x{accum}"));
        ok(&[
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(&out),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            batch,
            "--gradient_accumulation_steps",
            accum,
            "--lora_dropout",
            "0",
            "--dataset_shuffle",
            "false",
            "--train_dataloader_shuffle",
            "false",
        ]);
        let logs = read_jsonl(&run_dirs(&out)[0].join("logging.jsonl"));
        (logs[0]["loss"].as_f64().unwrap(), logs[0]["grad_norm"].as_f64().unwrap())
    };
    let (loss, norm) = first_log("4", "1");
    for (b, a) in [("1", "4"), ("2", "2")] {
        let (l, n) = first_log(b, a);
        assert!((l - loss).abs() <= 1e-5 * loss, "{b}×{a}: loss {l} vs {loss}");
        assert!((n - norm).abs() <= 1e-4 * norm, "{b}×{a}: grad_norm {n} vs {norm}");
    }
}

#[test]
fn bad_input_fails_with_a_message_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("output");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--model", s(&model), "--output_dir", s(&out), "--max_steps", "1"];
        args.extend_from_slice(extra);
        fails(&args)
    };

    let missing = tmp.path().join("nope.jsonl");
    let err = train(&["--dataset", s(&missing)]);
    assert!(err.contains("nope.jsonl"), "{err}");

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"messages\": [oops]}}\n", qa_record("q", "a"))).unwrap();
    let err = train(&["--dataset", s(&bad)]);
    assert!(err.contains("bad.jsonl:2"), "error should name file and line: {err}");

    let no_role = tmp.path().join("norole.jsonl");
    std::fs::write(&no_role, format!("{}\n{}\n", qa_record("q", "a"), r#"{"messages": [{"content": "x"}]}"#)).unwrap();
    let err = train(&["--dataset", s(&no_role)]);
    assert!(err.contains("norole.jsonl:2") && err.contains("role"), "{err}");

    let unsupervised = tmp.path().join("users.jsonl");
    std::fs::write(&unsupervised, "{\"messages\": [{\"role\": \"user\", \"content\": \"only a question\"}]}\n").unwrap();
    let err = train(&["--dataset", s(&unsupervised)]);
    assert!(err.contains("users.jsonl:1") && err.contains("no assistant turn"), "{err}");
    // With --strict false the row is skipped, and a dataset of nothing else has no samples.
    let err = train(&["--dataset", s(&unsupervised), "--strict", "false"]);
    assert!(err.contains("malformed"), "{err}");

    let data = write_jsonl(tmp.path(), 2);
    let err = train(&["--dataset", s(&data), "--lora_rnk", "4"]);
    assert!(err.contains("--lora_rnk"), "{err}");
    let err = train(&["--dataset", s(&data), "--gradient_checkpointing", "maybe"]);
    assert!(err.contains("maybe"), "{err}");
    let err = train(&["--dataset", s(&data), "--target_modules", "qq_proj"]);
    assert!(err.contains("qq_proj"), "{err}");
    let err = train(&["--dataset", s(&data), "--lr_scheduler_type", "sawtooth"]);
    assert!(err.contains("sawtooth"), "{err}");
    let err = fails(&["train", "--model", s(&tmp.path().join("no-model")), "--dataset", s(&data)]);
    assert!(err.contains("no-model"), "{err}");
    // Nothing above got far enough to create a run folder.
    assert!(!out.exists() || run_dirs(&out).is_empty());

    let err = fails(&["export", "--model", s(&model), "--adapters", s(&fixture("tiny-qwen2-lora")), "--merge_lora", "false"]);
    assert!(err.contains("merge_lora"), "{err}");
    let err = fails(&["eval", "--model", s(&model), "--dataset", s(&missing)]);
    assert!(err.contains("nope.jsonl"), "{err}");
}
