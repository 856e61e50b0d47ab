//! `--packing true`: several samples per row with attention, positions and targets kept within
//! each sample give the same loss, token accuracy and gradient norm as the same samples
//! unpacked; `--group_by_length true` trains reproducibly.

use std::path::Path;
use std::process::Output;

use crate::common::{fixture, read_jsonl, run_dirs, s, text, write_qa_jsonl};

const QA: [(&str, &str); 8] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Name a primary color.", "Red is a primary color."),
    ("What is 2 plus 2?", "2 plus 2 is 4."),
    ("Who wrote Hamlet?", "Shakespeare wrote Hamlet, a long play about a prince of Denmark."),
    ("What color is the sky?", "The sky is blue."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("What do bees make?", "Bees make honey."),
    ("What is ice made of?", "Ice is frozen water."),
];

fn qtrain(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qtrain")).args(args).output().expect("run qtrain")
}

/// Train one step over all 8 samples; returns (loss, token_acc, grad_norm) of the step and stderr.
fn first_step(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> ((f64, f64, f64), String) {
    let mut args = vec![
        "train",
        "--model",
        s(model),
        "--dataset",
        s(data),
        "--output_dir",
        s(out),
        "--max_steps",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--per_device_train_batch_size",
        "8",
        "--lora_dropout",
        "0",
        "--dataset_shuffle",
        "false",
    ];
    args.extend_from_slice(extra);
    let o = qtrain(&args);
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "qtrain {args:?} failed:\n{stderr}");
    let log = &read_jsonl(&run_dirs(out).pop().unwrap().join("logging.jsonl"))[0];
    let f = |k: &str| log[k].as_f64().unwrap();
    ((f("loss"), f("token_acc"), f("grad_norm")), stderr)
}

#[test]
fn packed_rows_train_exactly_like_the_samples_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    for model_name in ["tiny-qwen2", "tiny-qwen3"] {
        let model = fixture(model_name);
        let out = tmp.path().join(model_name);
        let (plain, _) = first_step(&model, &data, &out, &[]);
        // All 8 samples in one row of up to 512 tokens, then rows of up to 100 tokens (several
        // per batch, padded).
        for (max_length, rows) in [("512", "1 rows"), ("100", "rows of up to 100 tokens")] {
            let (packed, stderr) = first_step(&model, &data, &out, &["--packing", "true", "--max_length", max_length]);
            assert!(stderr.contains("packing: 8 samples into") && stderr.contains(rows), "{stderr}");
            let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs();
            assert!(
                close(packed.0, plain.0, 1e-5),
                "{model_name} max_length {max_length}: packed loss {} vs unpacked {}",
                packed.0,
                plain.0
            );
            assert_eq!(packed.1, plain.1, "{model_name}: token accuracy");
            assert!(close(packed.2, plain.2, 1e-4), "{model_name}: packed grad_norm {} vs unpacked {}", packed.2, plain.2);
        }
    }
}

#[test]
fn group_by_length_is_seeded_and_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    let losses = |out: &Path| -> Vec<f64> {
        let o = qtrain(&[
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(out),
            "--max_steps",
            "4",
            "--logging_steps",
            "1",
            "--gradient_accumulation_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--group_by_length",
            "true",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        read_jsonl(&run_dirs(out)[0].join("logging.jsonl")).iter().filter_map(|l| l["loss"].as_f64()).collect()
    };
    let a = losses(&tmp.path().join("a"));
    assert_eq!(a.len(), 4);
    assert_eq!(a, losses(&tmp.path().join("b")), "same seed, same batches");
}
