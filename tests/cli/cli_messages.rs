//! Messages a newcomer understands (issue 13, item 7): each error is one line that states its
//! cause once, with no Rust debug text; unknown flags get the right suggestion; negative
//! numbers reach the range checks; counts read as English.

use crate::common::{fails, fixture, s, succeeds as ok, write_qa_jsonl, QA};

/// The `error:` line of a failed run, checked: exactly one, no clause said twice, no OS error
/// number, no debug formatting of Rust values.
fn error_line(err: &str) -> String {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    let line = lines[0].to_string();
    let clauses: Vec<&str> = line.split(": ").map(str::trim).filter(|c| c.len() > 12).collect();
    for (i, c) in clauses.iter().enumerate() {
        assert!(!clauses[i + 1..].contains(c), "clause {c:?} is stated twice: {line}");
    }
    assert!(!line.contains("os error"), "{line}");
    for debug in ["Some(", "None", " { ", "(StopToken)", "Names([", "Warmup::"] {
        assert!(!line.contains(debug), "debug text {debug:?} in: {line}");
    }
    line
}

#[test]
fn missing_files_and_folders_are_named_once() {
    let line = error_line(&fails(&["info", "--model", "/no/such/model"]));
    assert!(line.contains("/no/such/model/config.json") && line.contains("No such file or directory"), "{line}");
    let line = error_line(&fails(&["infer", "--model", "/no/such/model", "--prompt", "hi", "--device", "cpu"]));
    assert!(line.contains("/no/such/model: no such model folder"), "{line}");
    let tmp = tempfile::tempdir().unwrap();
    let line = error_line(&fails(&["eval", "--model", s(&fixture("tiny-qwen2")), "--dataset", "/no/data.jsonl", "--device", "cpu"]));
    assert!(line.contains("/no/data.jsonl"), "{line}");
    let data = write_qa_jsonl(&tmp.path().join("d.jsonl"), &QA);
    let line = error_line(&fails(&["train", "--model", "/no/such/model", "--dataset", s(&data), "--device", "cpu"]));
    assert!(line.contains("no such model folder"), "{line}");
}

#[test]
fn a_hub_id_where_a_folder_is_needed_says_how_to_get_the_folder() {
    let line = error_line(&fails(&["infer", "--model", "Qwen/Qwen2.5-7B-Instruct", "--prompt", "hi", "--device", "cpu"]));
    assert!(line.contains("hub id") && line.contains("huggingface-cli download Qwen/Qwen2.5-7B-Instruct"), "{line}");
}

#[test]
fn a_run_folder_where_a_checkpoint_is_meant_and_a_folder_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("v0-20261206-000000")).unwrap();
    let line = error_line(&fails(&["infer", "--adapters", s(&out), "--prompt", "hi", "--device", "cpu"]));
    assert!(line.contains("it holds run folders: pass one of them"), "{line}");
}

#[test]
fn flags_unknown_negative_or_out_of_range() {
    let err = fails(&["train", "--lerning_rate", "1e-4"]);
    assert!(err.contains("unknown flag --lerning_rate for `qtrain train`; did you mean --learning_rate?"), "{err}");
    // ms-swift flags that do nothing here are accepted, so clap's suggestion never misleads.
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("d.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("o");
    let base = ["train", "--model", s(&model), "--dataset", s(&data), "--device", "cpu", "--output_dir", s(&out)];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|a| a.to_string()).collect() };
    let line = error_line(&fails(&with(&["--learning_rate", "-1e-4"]).iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(line.contains("--learning_rate: -0.0001 must be finite and > 0"), "{line}");
    let line = error_line(&fails(&with(&["--lora_alpha", "0"]).iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(line.contains("--lora_alpha: 0 must be > 0"), "{line}");
    let line = error_line(&fails(&with(&["--warmup_ratio", "2"]).iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(line.contains("--warmup_steps"), "{line}");
    // Dashes for underscores, compatibility flags explained, counts in English.
    let (_, stderr) = ok(&with(&["--max-steps", "1", "--use_hf", "true", "--deepspeed", "zero2", "--lazy_tokenize", "true"]));
    assert!(stderr.contains("--use_hf true: no effect") && stderr.contains("--deepspeed zero2: no effect"), "{stderr}");
    assert!(stderr.contains(": 1 step (") && !stderr.contains(" 1 steps"), "{stderr}");
}

#[test]
fn json_array_records_are_counted_from_one_like_jsonl_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let good = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#;
    let array = tmp.path().join("a.json");
    std::fs::write(&array, format!("[{good}, {{\"foo\": 1}}]")).unwrap();
    let lines = tmp.path().join("b.jsonl");
    std::fs::write(&lines, format!("{good}\n{{\"foo\": 1}}\n")).unwrap();
    let model = fixture("tiny-qwen2");
    let line = error_line(&fails(&["train", "--model", s(&model), "--dataset", s(&array), "--device", "cpu"]));
    assert!(line.contains("record 2 of the JSON array"), "{line}");
    let line = error_line(&fails(&["train", "--model", s(&model), "--dataset", s(&lines), "--device", "cpu"]));
    assert!(line.contains("b.jsonl:2:"), "{line}");
}

#[test]
fn bench_json_is_plain_json_and_the_cuda_probe_is_one_clause() {
    let model = fixture("tiny-qwen2");
    let (stdout, _) =
        ok(&["bench", "--model", s(&model), "--max_length", "16", "--steps", "1", "--decode_tokens", "4", "--json", "--device", "cpu"]);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["options"].is_object() && v["report"].is_object(), "options and report are JSON objects, not debug strings: {v}");
    assert!(!stdout.contains("BenchOptions") && !stdout.contains(" { "), "{stdout}");
    // `--device auto` on a machine without CUDA: the reason in one short clause (the loader's
    // list of every library name it tried belongs to `--device cuda`).
    let (_, stderr) = ok(&["infer", "--model", s(&model), "--prompt", "hi", "--max_new_tokens", "2"]);
    let line = stderr.lines().find(|l| l.starts_with("[qtrain] device:")).expect("a device line");
    if line.contains("cpu") {
        assert!(line.len() < 160 && !line.contains("(tried"), "{line}");
    }
}
