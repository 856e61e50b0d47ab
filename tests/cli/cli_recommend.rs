//! `qtrain recommend` is judged by running what it recommends (issue 13, item 8): on the
//! embedded model and the bundled self-cognition set its settings must teach the identity.

use crate::common::{read_jsonl, run_dirs, s, succeeds as ok};
use serde_json::Value;

fn recommendation(extra: &[&str]) -> Value {
    let mut args = vec!["recommend", "--dataset", "self-cognition", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(ok(&args).0.trim()).unwrap()
}

#[test]
fn self_cognition_rows_are_counted_without_names_and_the_rate_follows_the_width() {
    let r = recommendation(&[]);
    assert_eq!(r["samples"], 100);
    // The embedded model (hidden 256): 1e-4 × 3584 / 256; 7 steps per epoch → 15 epochs.
    assert_eq!((r["learning_rate"].as_f64().unwrap(), r["num_train_epochs"].as_u64().unwrap()), (1.4e-3, 15));
    assert_eq!(r["gradient_accumulation_steps"], 16);
    let warmup = r["reasoning"].as_array().unwrap().iter().find(|l| l.as_str().unwrap().starts_with("warmup_ratio")).unwrap();
    assert!(warmup.as_str().unwrap().contains("6 warm-up steps"), "the explanation states the numbers: {warmup}");
}

/// About a minute with `--release`, three in a debug build; CI skips it:
/// `cargo test --release --test cli cli_recommend:: -- --ignored`.
#[test]
#[ignore = "a 105-step training run; run with --ignored"]
fn what_it_recommends_teaches_the_embedded_model_its_identity() {
    let r = recommendation(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (lr, epochs, accumulation, warmup) = (
        r["learning_rate"].to_string(),
        r["num_train_epochs"].to_string(),
        r["gradient_accumulation_steps"].to_string(),
        r["warmup_ratio"].to_string(),
    );
    ok(&[
        "train",
        "--dataset",
        "self-cognition",
        "--model_name",
        "Q小助手",
        "qtrain-robot",
        "--model_author",
        "qtrain团队",
        "qtrain",
        "--output_dir",
        s(&out),
        "--learning_rate",
        &lr,
        "--num_train_epochs",
        &epochs,
        "--gradient_accumulation_steps",
        &accumulation,
        "--warmup_ratio",
        &warmup,
        "--device",
        "cpu",
    ]);
    let logs = read_jsonl(&run_dirs(&out)[0].join("logging.jsonl"));
    let acc = logs.iter().rev().find_map(|l| l["eval_self_cognition_acc"].as_f64()).expect("an identity evaluation");
    // Measured 0.5 (the previous rule's 3e-5 × 4 epochs: 0.0).
    assert!(acc >= 0.5, "self_cognition_acc {acc}");
}
