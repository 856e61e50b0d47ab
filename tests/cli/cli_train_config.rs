//! `qtrain train` arguments: `--config FILE.toml` under command-line flags, unknown keys and
//! flags as errors, `--lr_scheduler_kwargs`, `args.json` holding the resolved values, flags
//! accepted for ms-swift compatibility explained in the log, and issue 4's seed command run
//! unchanged on the tiny model.

use std::path::PathBuf;

use crate::common::{fails, fixture, qtrain, read_json, read_jsonl, run_dirs, s, succeeds as ok, text, write_qa_jsonl, QA};

#[test]
fn config_file_values_apply_and_command_line_flags_override_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA[..4]);
    let out = tmp.path().join("out");
    let config = tmp.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
# keys are the flag names
model = "{}"
dataset = "{}"
output_dir = "{}"
max_steps = 3
lora_rank = 4
lora_alpha = 8
learning_rate = 2e-3
logging_steps = 1
gradient_accumulation_steps = 1
lr_scheduler_type = "cosine_with_min_lr"
lr_scheduler_kwargs = {{ min_lr = 1e-3 }}
target_modules = ["q_proj", "v_proj"]
"#,
            s(&fixture("tiny-qwen2")),
            s(&data),
            s(&out)
        ),
    )
    .unwrap();
    let (stdout, _) = ok(&["train", "--config", s(&config), "--lora_rank", "2", "--max_steps", "4"]);
    let run = &run_dirs(&out)[0];
    let args = read_json(&run.join("args.json"));
    assert_eq!(args["lora_rank"], 2, "the command line wins");
    assert_eq!(args["max_steps"], 4);
    assert_eq!(args["lora_alpha"], 8.0, "the file wins over the default");
    assert_eq!(args["learning_rate"], 2e-3);
    assert_eq!(args["lr_scheduler_kwargs"], serde_json::json!({"min_lr": 1e-3}));
    // Fully resolved: every argument is recorded, dependent defaults filled in.
    for key in ["per_device_train_batch_size", "max_length", "eval_steps", "save_total_limit", "report_to", "strict", "packing", "seed"] {
        assert!(args.get(key).is_some(), "args.json lacks {key}");
    }
    assert_eq!(args["max_length"], 512);
    let adapter = read_json(&PathBuf::from(stdout.trim()).join("adapter_config.json"));
    assert_eq!((adapter["r"].as_u64(), adapter["lora_alpha"].as_f64()), (Some(2), Some(8.0)));
    assert_eq!(adapter["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    // cosine_with_min_lr decays towards min_lr and never below it.
    let lrs: Vec<f64> = read_jsonl(&run.join("logging.jsonl")).iter().filter_map(|l| l["learning_rate"].as_f64()).collect();
    assert_eq!(lrs.len(), 4);
    assert_eq!(lrs[0], 2e-3);
    assert!(lrs.windows(2).all(|w| w[1] < w[0]) && lrs[3] > 1e-3, "{lrs:?}");
}

#[test]
fn unknown_keys_and_flags_and_bad_scheduler_arguments_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA[..4]);
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("out");
    let config = tmp.path().join("typo.toml");
    std::fs::write(&config, "lora_rnk = 4\nlearning_rate = 1e-4\n").unwrap();
    let base = ["train", "--model", s(&model), "--dataset", s(&data), "--output_dir", s(&out), "--max_steps", "1"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        fails(&a)
    };
    let err = with(&["--config", s(&config)]);
    assert!(err.contains("typo.toml") && err.contains("unknown key `lora_rnk` (did you mean `lora_rank`?)"), "{err}");
    let err = with(&["--config", s(&tmp.path().join("missing.toml"))]);
    assert!(err.contains("missing.toml"), "{err}");
    let err = with(&["--dataloader_workers", "4"]);
    assert!(err.contains("--dataloader_workers"), "{err}");
    let err = with(&["--lr_scheduler_kwargs", r#"{"min_lr": 1e-6}"#]);
    assert!(err.contains("min_lr") && err.contains("cosine"), "min_lr does not apply to cosine: {err}");
    let err = with(&["--lr_scheduler_kwargs", "min_lr=1e-6"]);
    assert!(err.contains("JSON"), "{err}");
    let err = with(&["--lr_scheduler_type", "cosine_with_min_lr"]);
    assert!(err.contains("min_lr"), "cosine_with_min_lr needs min_lr or min_lr_rate: {err}");
    let err = with(&["--torch_dtype", "int4"]);
    assert!(err.contains("--torch_dtype") && err.contains("int4"), "{err}");
    let err = with(&["--model_type", "qwen3"]);
    assert!(err.contains("--model_type") && err.contains("Qwen2ForCausalLM"), "{err}");
    // Without --model and --config the embedded preset applies; a config without a model is an error.
    let no_model = tmp.path().join("no_model.toml");
    std::fs::write(&no_model, "learning_rate = 1e-4\n").unwrap();
    let err = fails(&["train", "--config", s(&no_model), "--dataset", s(&data), "--output_dir", s(&out)]);
    assert!(err.contains("--model is required"), "{err}");
    assert!(!out.exists() || run_dirs(&out).is_empty(), "nothing above may create a run folder");

    // `exponential` takes gamma, per optimizer step after warmup.
    let (_, _) = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--max_steps",
        "3",
        "--logging_steps",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler_type",
        "exponential",
        "--lr_scheduler_kwargs",
        r#"{"gamma": 0.5}"#,
    ]);
    let lrs: Vec<f64> = read_jsonl(&run_dirs(&out)[0].join("logging.jsonl")).iter().filter_map(|l| l["learning_rate"].as_f64()).collect();
    assert_eq!(lrs, [1e-3, 5e-4, 2.5e-4]);
}

#[test]
fn help_lists_every_scheduler_and_the_flag_groups() {
    let out = qtrain(&["train", "--help"]);
    let help = text(&out.stdout);
    for name in ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr", "polynomial", "exponential"] {
        assert!(help.contains(name), "--help does not list {name}");
    }
    for group in ["Data:", "LoRA:", "Optimisation:", "Logging, evaluation and checkpoints:", "ms-swift compatibility"] {
        assert!(help.contains(group), "--help lacks the {group} group");
    }
}

/// Issue 4's command, flag for flag, with `--model` and `--dataset` pointing at test data.
const SEED_FLAGS: [&str; 36] = [
    "--train_type",
    "lora",
    "--torch_dtype",
    "bfloat16",
    "--num_train_epochs",
    "10",
    "--per_device_train_batch_size",
    "1",
    "--learning_rate",
    "1e-4",
    "--lora_rank",
    "8",
    "--lora_alpha",
    "32",
    "--target_modules",
    "all-linear",
    "--gradient_accumulation_steps",
    "16",
    "--eval_steps",
    "50",
    "--save_steps",
    "50",
    "--save_total_limit",
    "2",
    "--logging_steps",
    "5",
    "--max_length",
    "2048",
    "--output_dir",
    "output",
    "--system",
    "You are a helpful assistant.",
    "--warmup_ratio",
    "0.05",
    "--dataloader_num_workers",
    "4",
];

#[test]
fn the_seed_command_of_issue_4_runs_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA[..4]);
    let model = fixture("tiny-qwen2");
    for dataset in [s(&data), "self-cognition#16"] {
        let mut args = vec!["train", "--model", s(&model), "--dataset", dataset];
        args.extend_from_slice(&SEED_FLAGS);
        args.extend_from_slice(&["--model_author", "swift", "--model_name", "swift-robot"]);
        // `--output_dir output` is relative: run inside the temporary folder.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qtrain")).args(&args).current_dir(tmp.path()).output().unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "seed command failed on {dataset}:\n{stderr}");
        for explained in ["--torch_dtype bfloat16", "--dataloader_num_workers 4", "--max_length 2048", "--eval_steps 50"] {
            assert!(stderr.contains(explained), "the log should explain {explained}:\n{stderr}");
        }
        // 10 epochs of one step each (≤ 16 samples, accumulation 16): checkpoint at the end.
        let run = run_dirs(&tmp.path().join("output")).pop().unwrap();
        for f in ["args.json", "logging.jsonl", "checkpoint-10/adapter_model.safetensors", "images/train_loss.png"] {
            assert!(run.join(f).exists(), "{} lacks {f}", run.display());
        }
        assert!(run.join("runs").is_dir());
        let args_json = read_json(&run.join("args.json"));
        assert_eq!(args_json["model_name"], serde_json::json!(["swift-robot"]));
        assert_eq!(args_json["torch_dtype"], "bfloat16");
        assert_eq!(args_json["max_length"], 512, "clamped to the model's max_position_embeddings");
        let logs = read_jsonl(&run.join("logging.jsonl"));
        // Training lines (eval lines carry global_step/max_steps too, as in ms-swift).
        let steps: Vec<&str> =
            logs.iter().filter(|l| l.get("loss").is_some()).filter_map(|l| l["global_step/max_steps"].as_str()).collect();
        assert_eq!(steps, ["1/10", "5/10", "10/10"]);
        assert_eq!(logs[0]["learning_rate"], 0.0, "warmup_ratio 0.05 of 10 steps = 1 warmup step");
        if dataset.starts_with("self-cognition") {
            assert!(stderr.contains("self-cognition 16"), "{stderr}");
        }
    }
}
