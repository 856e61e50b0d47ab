//! Continued pretraining (`qtrain pt`) is the computation transformers performs on raw text,
//! against `tools/make_pretrain_fixtures.py`'s references on the tiny models: the documents'
//! ids + eos split into the same consecutive `--max_length` blocks, `qtrain eval` on them equal
//! to `Qwen*ForCausalLM(labels=input_ids)` (≤ 1e-4 relative), and 5 training steps, full and
//! LoRA, with the same per-step losses (≤ 1e-3 relative).

use std::path::{Path, PathBuf};

use crate::common::{fixture, read_jsonl, run_dirs, s, succeeds, REGENERATE};
use qtrain_data::QwenTokenizer;
use qtrain_train::dataset::PrepareOptions;
use qtrain_train::pretrain::prepare_text;
use qtrain_train::TruncationStrategy;
use serde_json::Value;

const MODELS: [(&str, &str); 2] = [("qwen2", "tiny-qwen2"), ("qwen3", "tiny-qwen3")];

fn reference(prefix: &str) -> Value {
    let path = fixture(&format!("pretrain/{prefix}-reference.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()))).unwrap()
}

fn corpus() -> PathBuf {
    fixture("pretrain/corpus.jsonl")
}

fn max_length(r: &Value) -> usize {
    r["max_length"].as_u64().unwrap() as usize
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    let rel = (got - want).abs() / want.abs();
    assert!(rel <= tol, "{what}: {got} vs transformers {want} (relative {rel:.2e} > {tol:e}); {REGENERATE}");
}

#[test]
fn documents_split_into_the_reference_blocks() {
    for (prefix, model) in MODELS {
        let r = reference(prefix);
        let dir = fixture(model);
        let tokenizer = QwenTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let mut opts = PrepareOptions::for_eval(max_length(&r), TruncationStrategy::Split, None);
        opts.use_chat_template = false;
        opts.eos_token = r["eos_token"].as_str().map(str::to_string);
        let data = prepare_text(&[s(&corpus()).to_string()], &[], 0.0, &tokenizer, &opts).unwrap();
        let want: Vec<Vec<u32>> = serde_json::from_value(r["blocks"].clone()).unwrap();
        let got: Vec<Vec<u32>> = data.train.iter().map(|b| b.input_ids.clone()).collect();
        assert_eq!(got, want, "{prefix}: blocks; {REGENERATE}");
        assert_eq!(data.train_stats.split_documents, 2, "{prefix}");
        assert_eq!(data.train_stats.targets as u64, r["eval"]["tokens"].as_u64().unwrap());
    }
}

#[test]
fn eval_on_raw_text_matches_causal_lm_loss_on_the_same_blocks() {
    for (prefix, model) in MODELS {
        let r = reference(prefix);
        let (stdout, _) = succeeds(&[
            "eval",
            "--model",
            s(&fixture(model)),
            "--dataset",
            s(&corpus()),
            "--use_chat_template",
            "false",
            "--max_length",
            &max_length(&r).to_string(),
            "--device",
            "cpu",
            "--json",
        ]);
        let got: Value = serde_json::from_str(stdout.trim()).unwrap();
        let want = r["eval"]["loss"].as_f64().unwrap();
        assert_close(&format!("{prefix} eval loss"), got["loss"].as_f64().unwrap(), want, 1e-4);
        assert_close(&format!("{prefix} perplexity"), got["perplexity"].as_f64().unwrap(), want.exp(), 1e-4);
        assert_eq!(got["tokens"], r["eval"]["tokens"], "{prefix}: every token of every block is scored");
        assert_eq!(got["samples"].as_u64().unwrap() as usize, r["blocks"].as_array().unwrap().len());
    }
}

/// `qtrain pt` for the reference's 5 steps; returns the logged per-step losses.
fn pt_losses(model: &Path, r: &Value, out: &Path, part: &str) -> Vec<f64> {
    let t = &r["train"];
    let number = |v: &Value| v.as_f64().unwrap().to_string();
    let mut args: Vec<String> = [
        "pt",
        "--model",
        s(model),
        "--dataset",
        s(&corpus()),
        "--output_dir",
        s(out),
        "--max_length",
        &max_length(r).to_string(),
        "--max_steps",
        &t["steps"].to_string(),
        "--learning_rate",
        &number(&r[part]["learning_rate"]),
        "--lr_scheduler_type",
        "constant",
        "--weight_decay",
        &number(&t["weight_decay"]),
        "--adam_epsilon",
        &number(&t["adam_epsilon"]),
        "--max_grad_norm",
        &number(&t["max_grad_norm"]),
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--dataset_shuffle",
        "false",
        "--train_dataloader_shuffle",
        "false",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--device",
        "cpu",
        "--torch_dtype",
        "float32",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if part == "lora" {
        let adapter = fixture(r["lora"]["adapter"].as_str().unwrap());
        args.extend(["--tuner_type", "lora", "--lora_dropout", "0", "--adapters", s(&adapter)].map(str::to_string));
    }
    succeeds(&args);
    let log = read_jsonl(&run_dirs(out).pop().unwrap().join("logging.jsonl"));
    log.iter().filter_map(|l| l.get("loss").and_then(Value::as_f64).filter(|_| l.get("global_step/max_steps").is_some())).collect()
}

#[test]
fn five_pt_steps_full_and_lora_match_transformers() {
    for (prefix, model) in MODELS {
        let r = reference(prefix);
        for part in ["full", "lora"] {
            let tmp = tempfile::tempdir().unwrap();
            let got = pt_losses(&fixture(model), &r, tmp.path(), part);
            let want: Vec<f64> = serde_json::from_value(r[part]["losses"].clone()).unwrap();
            assert_eq!(got.len(), want.len(), "{prefix} {part}: one logged loss per step: {got:?}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("{prefix} {part} step {}", i + 1), *g, *w, 1e-3);
            }
        }
    }
}
