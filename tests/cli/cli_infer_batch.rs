//! `qtrain infer` batch mode as `swift infer --val_dataset … --result_path …` runs it: every row
//! answered, the result file one ms-swift row per line (`response`, `labels`, `logprobs`,
//! `messages` with the reply appended), greedy replies equal to one-question `--prompt` runs
//! whatever `--max_batch_size`, and `--load_data_args true` answering a trained run's own
//! validation split.

use std::path::Path;

use crate::common::{fails, fixture, read_jsonl, run_dirs, s, succeeds, write_qa_jsonl, QA};
use serde_json::{json, Value};

/// Rows in four formats (messages with and without a system prompt, query/response,
/// instruction/input/output, sharegpt conversations) and one two-turn conversation.
fn write_mixed_rows(path: &Path) {
    let rows = [
        json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}),
        json!({"messages": [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Tell me a story about a cat"}, {"role": "assistant", "content": "Once…"}]}),
        json!({"query": "What is 2 plus 2?", "response": "4"}),
        json!({"instruction": "Translate to French", "input": "good morning", "output": "bonjour"}),
        json!({"conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."}]}),
        json!({"messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three"}, {"role": "assistant", "content": "Four"}]}),
    ];
    std::fs::write(path, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
}

fn greedy<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["infer", "--temperature", "0", "--max_new_tokens", "10", "--device", "cpu"];
    args.extend_from_slice(extra);
    args
}

/// The user and system messages of a single-turn result row, as `--prompt` / `--system` flags.
fn prompt_flags(row: &Value) -> Option<Vec<String>> {
    let messages = row["messages"].as_array().unwrap();
    let users: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    if users.len() != 1 {
        return None;
    }
    let mut flags = vec!["--prompt".to_string(), users[0]["content"].as_str().unwrap().to_string()];
    if let Some(system) = messages.iter().find(|m| m["role"] == "system") {
        flags.extend(["--system".to_string(), system["content"].as_str().unwrap().to_string()]);
    }
    Some(flags)
}

#[test]
fn batch_results_equal_one_at_a_time_greedy_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("val.jsonl");
    write_mixed_rows(&data);
    let (model, lora) = (fixture("tiny-qwen2"), fixture("tiny-qwen2-lora"));
    let base = [s(&model), s(&lora)];
    let mut results = vec![];
    for batch_size in ["1", "4"] {
        let out = tmp.path().join(format!("result-{batch_size}.jsonl"));
        let (stdout, stderr) = succeeds(&greedy(&[
            "--model",
            base[0],
            "--adapters",
            base[1],
            "--val_dataset",
            s(&data),
            "--result_path",
            s(&out),
            "--max_batch_size",
            batch_size,
        ]));
        assert_eq!(stdout.trim(), s(&out), "stdout names the result file");
        assert!(stderr.contains("6/6 rows") && stderr.contains("6 rows answered"), "{stderr}");
        assert!(!stderr.contains("SamplingParams") && !stderr.contains("StopToken"), "{stderr}");
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 6, "one line per row");
        let rows = read_jsonl(&out);
        for row in &rows {
            let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys[..4], ["response", "labels", "logprobs", "messages"], "{row}");
            let last = row["messages"].as_array().unwrap().last().unwrap();
            assert_eq!((&last["role"], &last["content"]), (&json!("assistant"), &row["response"]), "{row}");
            assert!(!row["response"].as_str().unwrap().is_empty(), "{row}");
        }
        let labels: Vec<&str> = rows.iter().map(|r| r["labels"].as_str().unwrap()).collect();
        assert_eq!(labels, ["Hello!", "Once…", "4", "bonjour", "Blue.", "Four"], "labels are the references, in dataset order");
        // The two-turn row keeps its first exchange in the prompt.
        assert_eq!(rows[5]["messages"].as_array().unwrap().len(), 4);
        results.push(rows);
    }
    assert_eq!(results[0], results[1], "--max_batch_size must not change greedy replies");
    for row in &results[1] {
        let Some(flags) = prompt_flags(row) else { continue };
        let mut args = greedy(&["--model", base[0], "--adapters", base[1], "--stream", "false"]);
        args.extend(flags.iter().map(String::as_str));
        let (stdout, _) = succeeds(&args);
        assert_eq!(stdout, format!("{}\n", row["response"].as_str().unwrap()), "batch reply differs from --prompt for {row}");
    }
}

#[test]
fn sampled_datasets_count_rows_and_bad_input_is_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("val.jsonl");
    write_mixed_rows(&data);
    let model = fixture("tiny-qwen3");
    let out = tmp.path().join("nested/out.jsonl");
    let spec = format!("{}#9", s(&data));
    let (_, stderr) = succeeds(&greedy(&["--model", s(&model), "--val_dataset", &spec, "--result_path", s(&out), "--max_batch_size", "4"]));
    assert_eq!(read_jsonl(&out).len(), 9, "FILE#9 draws 9 rows (repeating some): {stderr}");
    assert!(stderr.contains("9 rows answered"), "{stderr}");
    // A malformed row names its file and line; nothing is written.
    std::fs::write(
        &data,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{oops\n",
    )
    .unwrap();
    let failed = tmp.path().join("failed.jsonl");
    let err = fails(&greedy(&["--model", s(&model), "--val_dataset", s(&data), "--result_path", s(&failed)]));
    assert!(err.contains("val.jsonl:2"), "{err}");
    assert!(!failed.exists() && !tmp.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    // --load_data_args needs a checkpoint; --prompt and a dataset exclude each other.
    let err = fails(&greedy(&["--model", s(&model), "--load_data_args", "true"]));
    assert!(err.contains("--adapters"), "{err}");
    let err = fails(&greedy(&["--model", s(&model), "--val_dataset", s(&data), "--prompt", "hi"]));
    assert!(err.contains("--prompt") && err.contains("one or the other"), "{err}");
}

#[test]
fn load_data_args_answers_the_runs_validation_split() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let out = tmp.path().join("out");
    let model = fixture("tiny-qwen2");
    let (stdout, _) = succeeds(&[
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
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
    ]);
    let checkpoint = stdout.trim().to_string();
    let run = &run_dirs(&out)[0];
    let held_out = read_jsonl(&run.join("val_dataset.jsonl"));
    assert_eq!(held_out.len(), 2);
    let (stdout, stderr) =
        succeeds(&greedy(&["--model", s(&model), "--adapters", &checkpoint, "--load_data_args", "true", "--max_batch_size", "2"]));
    // ms-swift's default place: <checkpoint>/infer_result/<time>.jsonl.
    let result = Path::new(stdout.trim());
    assert!(result.starts_with(Path::new(&checkpoint).join("infer_result")) && result.extension().unwrap() == "jsonl", "{stdout}");
    let rows = read_jsonl(result);
    assert_eq!(rows.len(), 2, "{stderr}");
    for (row, want) in rows.iter().zip(&held_out) {
        let reference = want["messages"].as_array().unwrap().last().unwrap()["content"].clone();
        assert_eq!(row["labels"], reference);
    }
}

#[test]
fn rows_with_a_prompt_only_are_answered_and_have_no_labels() {
    // `swift infer --val_dataset` takes rows without a reference reply; training does not.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prompts.jsonl");
    let rows = [
        json!({"query": "What is 2 plus 2?"}),
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
        json!({"instruction": "Translate to French", "input": "good morning"}),
    ];
    std::fs::write(&data, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("result.jsonl");
    succeeds(&greedy(&["--model", s(&model), "--val_dataset", s(&data), "--result_path", s(&out)]));
    let result = read_jsonl(&out);
    assert_eq!(result.len(), 3);
    for row in &result {
        assert_eq!(row["labels"], Value::Null, "{row}");
        assert!(!row["response"].as_str().unwrap().is_empty(), "{row}");
    }
    let (reply, _) = succeeds(&greedy(&["--model", s(&model), "--prompt", "What is 2 plus 2?"]));
    assert_eq!(result[0]["response"].as_str().unwrap(), reply.trim_end_matches('\n'));
    let err = fails(&["train", "--model", s(&model), "--dataset", s(&data), "--device", "cpu", "--output_dir", s(&tmp.path().join("o"))]);
    assert!(err.contains("prompts.jsonl:1: `query` without `response`: no assistant turn"), "{err}");
}
