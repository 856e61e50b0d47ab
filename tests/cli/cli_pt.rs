//! `qtrain pt` end to end: continued pretraining on the bundled text sample (full by default,
//! and LoRA), then `qtrain infer` and `qtrain eval` on the result; pt's defaults are recorded in
//! `args.json`; conversation rows are refused with the file and line.

use std::path::{Path, PathBuf};

use crate::common::{fails, fixture, read_json, read_jsonl, run_dirs, s, succeeds};

/// The bundled text sample, as an argument.
fn sample() -> String {
    s(&fixture("pretrain/sample.txt")).to_string()
}

/// The tiny Qwen2 model folder, as an argument.
fn tiny() -> String {
    s(&fixture("tiny-qwen2")).to_string()
}

/// `qtrain pt` on the text sample; returns the checkpoint it printed and its stderr.
fn pt(out: &Path, extra: &[&str]) -> (PathBuf, String) {
    let (model, dataset) = (tiny(), sample());
    let mut args = vec![
        "pt",
        "--model",
        &model,
        "--dataset",
        &dataset,
        "--output_dir",
        s(out),
        "--max_length",
        "12",
        "--max_steps",
        "3",
        "--gradient_accumulation_steps",
        "2",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let (stdout, stderr) = succeeds(&args);
    (PathBuf::from(stdout.trim()), stderr)
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let (stdout, _) = succeeds(args);
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn pt_trains_full_by_default_and_the_result_infers_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoint, stderr) = pt(tmp.path(), &[]);
    assert!(checkpoint.join("config.json").is_file(), "a full checkpoint: {}", checkpoint.display());
    assert!(stderr.contains("split into consecutive blocks"), "{stderr}");
    let run = run_dirs(tmp.path()).pop().unwrap();
    let args = read_json(&run.join("args.json"));
    assert_eq!(
        (&args["tuner_type"], &args["use_chat_template"], &args["truncation_strategy"], &args["loss_scale"]),
        (&"full".into(), &false.into(), &"split".into(), &"all".into())
    );
    let logged = read_jsonl(&run.join("logging.jsonl"));
    assert!(logged.iter().any(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));

    // The trained folder is a model folder `infer` runs (it fails loudly otherwise).
    succeeds(&[
        "infer",
        "--model",
        s(&checkpoint),
        "--prompt",
        "Every line",
        "--max_new_tokens",
        "4",
        "--temperature",
        "0",
        "--device",
        "cpu",
    ]);

    let (dataset, base_model) = (sample(), tiny());
    let (dataset, model) = (dataset.as_str(), s(&checkpoint));
    let base = eval_json(&[
        "eval",
        "--model",
        &base_model,
        "--dataset",
        dataset,
        "--use_chat_template",
        "false",
        "--max_length",
        "12",
        "--json",
        "--device",
        "cpu",
    ]);
    let trained = eval_json(&[
        "eval",
        "--model",
        model,
        "--dataset",
        dataset,
        "--use_chat_template",
        "false",
        "--max_length",
        "12",
        "--json",
        "--device",
        "cpu",
    ]);
    let (loss, ppl) = (trained["loss"].as_f64().unwrap(), trained["perplexity"].as_f64().unwrap());
    assert!((ppl - loss.exp()).abs() <= 1e-9 * ppl, "perplexity = exp(loss): {trained}");
    assert!(loss < base["loss"].as_f64().unwrap(), "training on the text lowers its loss: {trained} vs base {base}");
    assert_eq!(trained["tokens"], base["tokens"]);
}

#[test]
fn pt_with_lora_writes_an_adapter_that_eval_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoint, _) = pt(tmp.path(), &["--tuner_type", "lora", "--learning_rate", "1e-2", "--packing", "true"]);
    assert!(checkpoint.join("adapter_config.json").is_file(), "{}", checkpoint.display());
    let (base, dataset) = (tiny(), sample());
    let base = base.as_str();
    let with = |adapter: Option<&str>| {
        let mut args = vec!["eval", "--model", base, "--dataset", &dataset, "--use_chat_template", "false", "--json", "--device", "cpu"];
        if let Some(a) = adapter {
            args.extend(["--adapters", a]);
        }
        eval_json(&args)["loss"].as_f64().unwrap()
    };
    assert!(with(Some(s(&checkpoint))) < with(None), "the adapter lowers the loss on its training text");
    succeeds(&[
        "infer",
        "--model",
        base,
        "--adapters",
        s(&checkpoint),
        "--prompt",
        "qtrain",
        "--max_new_tokens",
        "3",
        "--temperature",
        "0",
        "--device",
        "cpu",
    ]);
}

#[test]
fn pt_refuses_conversations_and_chat_only_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let chat = tmp.path().join("chat.jsonl");
    std::fs::write(&chat, "{\"text\": \"fine\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n")
        .unwrap();
    let out = tmp.path().join("out");
    let (model, text) = (tiny(), sample());
    let model = model.as_str();
    let err = fails(&["pt", "--model", model, "--dataset", s(&chat), "--output_dir", s(&out), "--device", "cpu"]);
    assert!(err.contains("chat.jsonl:2") && err.contains("qtrain train"), "{err}");
    let err = fails(&["pt", "--model", model, "--dataset", &text, "--system", "Be brief.", "--output_dir", s(&out)]);
    assert!(err.contains("--system") && err.contains("no system prompt"), "{err}");
    let err = fails(&["train", "--model", model, "--dataset", s(&chat), "--truncation_strategy", "split", "--output_dir", s(&out)]);
    assert!(err.contains("--truncation_strategy") && err.contains("raw text"), "{err}");
    let err = fails(&["eval", "--model", model, "--dataset", &text, "--use_chat_template", "false", "--loss_scale", "last_round"]);
    assert!(err.contains("--loss_scale") && err.contains("no turns"), "{err}");
}
