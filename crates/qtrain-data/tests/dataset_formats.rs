//! Loading datasets as `swift sft --dataset` does: every row format normalised to
//! `messages`, JSON and JSONL files, several files, `FILE#N`, malformed rows, `--system`,
//! the train/validation split, and the normalised rows through the real Qwen templates.

use std::path::{Path, PathBuf};

use qtrain_data::{
    apply_default_system, load_dataset, load_datasets, split_dataset, ConversationOptions, ConversationTokenizer, DataError,
    DatasetOptions, QwenTokenizer, RowFormat, RowLocation, TokenizerConfig, IGNORE_INDEX, MAX_REPORTED_SKIPS,
};
use serde_json::json;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn opts() -> DatasetOptions {
    DatasetOptions::default()
}

// One real-looking row per format, as users' files hold them.
const MESSAGES_ROW: &str = r#"{"messages": [{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Write a haiku about rain."}, {"role": "assistant", "content": "Soft rain on the roof", "loss": true}, {"role": "user", "content": "Another."}, {"role": "assistant", "content": "Puddles hold the sky"}]}"#;
const SHAREGPT_ROW: &str = r#"{"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "2+2 = 4."}, {"from": "human", "value": "And 3+3?"}, {"from": "gpt", "value": "6."}], "system": "You are a calculator."}"#;
const ALPACA_ROW: &str = r#"{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour", "system": "You translate.", "history": [["Translate to French: cat", "chat"]]}"#;
const QUERY_ROW: &str = r#"{"query": "浙江的省会在哪？", "response": "浙江的省会在杭州。", "history": [["你好", "你好！有什么可以帮你？"]], "system": "你是一个乐于助人的助手。"}"#;

#[test]
fn every_format_normalises_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "mixed.jsonl", &[MESSAGES_ROW, SHAREGPT_ROW, "", ALPACA_ROW, QUERY_ROW].join("\n"));
    let loaded = load_dataset(&file, &opts()).unwrap();
    assert_eq!(loaded.num_skipped, 0);
    let rows = &loaded.rows;
    assert_eq!(rows.len(), 4);

    assert_eq!(rows[0].format, RowFormat::Messages);
    assert_eq!(rows[0].origin.location, RowLocation::Line(1));
    assert_eq!(
        rows[0].messages,
        json!([
            {"role": "system", "content": "You are a poet."},
            {"role": "user", "content": "Write a haiku about rain."},
            {"role": "assistant", "content": "Soft rain on the roof", "loss": true},
            {"role": "user", "content": "Another."},
            {"role": "assistant", "content": "Puddles hold the sky"},
        ])
    );
    assert_eq!(rows[0].tools, None);

    assert_eq!(rows[1].format, RowFormat::ShareGpt);
    assert_eq!(rows[1].origin.location, RowLocation::Line(2));
    assert_eq!(
        rows[1].messages,
        json!([
            {"role": "system", "content": "You are a calculator."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2+2 = 4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6."},
        ])
    );

    // Line 3 is blank: the Alpaca row is line 4.
    assert_eq!(rows[2].format, RowFormat::Alpaca);
    assert_eq!(rows[2].origin.location, RowLocation::Line(4));
    assert_eq!(
        rows[2].messages,
        json!([
            {"role": "system", "content": "You translate."},
            {"role": "user", "content": "Translate to French: cat"},
            {"role": "assistant", "content": "chat"},
            {"role": "user", "content": "Translate to French.\nGood morning"},
            {"role": "assistant", "content": "Bonjour"},
        ])
    );

    assert_eq!(rows[3].format, RowFormat::QueryResponse);
    assert_eq!(
        rows[3].messages,
        json!([
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！有什么可以帮你？"},
            {"role": "user", "content": "浙江的省会在哪？"},
            {"role": "assistant", "content": "浙江的省会在杭州。"},
        ])
    );
    let counts = loaded.format_counts();
    assert_eq!(counts.values().sum::<usize>(), 4);
    assert_eq!(counts[&RowFormat::Alpaca], 1);
    // Rows serialise back to ms-swift's messages format (val_dataset.jsonl).
    assert_eq!(rows[3].to_json(), json!({"messages": rows[3].messages}));
}

#[test]
fn json_arrays_and_several_files() {
    let dir = tempfile::tempdir().unwrap();
    let array = write(dir.path(), "a.json", &format!("\u{feff}  [\n{ALPACA_ROW},\n{SHAREGPT_ROW}\n]\n"));
    let lines = write(dir.path(), "b.jsonl", &format!("{QUERY_ROW}\n{MESSAGES_ROW}\n"));
    let loaded = load_datasets(&[array.clone(), lines.clone()], &opts()).unwrap();
    let got: Vec<(RowFormat, String)> = loaded.rows.iter().map(|r| (r.format, r.origin.to_string())).collect();
    assert_eq!(
        got,
        vec![
            (RowFormat::Alpaca, format!("{array}: record 1 of the JSON array")),
            (RowFormat::ShareGpt, format!("{array}: record 2 of the JSON array")),
            (RowFormat::QueryResponse, format!("{lines}:1")),
            (RowFormat::Messages, format!("{lines}:2")),
        ]
    );
}

#[test]
fn sharegpt_tool_calls_render_through_the_qwen_templates() {
    let dir = tempfile::tempdir().unwrap();
    let row = json!({
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}"},
            {"from": "observation", "value": "{\"temp\": 21}"},
            {"from": "gpt", "value": "It is 21 °C in Paris."},
        ],
        "tools": "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\"}}}]",
    });
    let file = write(dir.path(), "tools.jsonl", &row.to_string());
    let loaded = load_dataset(&file, &opts()).unwrap();
    let row = &loaded.rows[0];
    let tokenizer = QwenTokenizer::from_file(fixture("qwen-tokenizer/tokenizer.json.gz")).unwrap();
    for name in ["qwen2.5", "qwen3"] {
        let template =
            TokenizerConfig::from_file(fixture(&format!("qwen-tokenizer/tokenizer_config_{name}.json"))).unwrap().chat_template().unwrap();
        let options = ConversationOptions::default();
        let t = ConversationTokenizer::new(&template, &tokenizer, &options).tokenize(&row.messages, row.tools.as_ref()).unwrap();
        assert!(
            t.rendered.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
            "{name}: {}",
            t.rendered
        );
        assert!(t.rendered.contains("<tool_response>\n{\"temp\": 21}\n</tool_response>"), "{name}: {}", t.rendered);
        assert!(t.rendered.contains("\"name\": \"get_weather\""), "{name}: tools block missing");
        // Both assistant turns (the call and the answer) are supervised.
        assert_eq!(t.supervised_spans.len(), 2, "{name}");
        let supervised: Vec<u32> = t.input_ids.iter().zip(&t.labels).filter(|(_, &l)| l != IGNORE_INDEX).map(|(&id, _)| id).collect();
        let text = tokenizer.decode(&supervised, false).unwrap();
        assert!(text.contains("get_weather") && text.ends_with("It is 21 °C in Paris.<|im_end|>"), "{name}: {text}");
    }
}

#[test]
fn file_hash_n_samples_with_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..10).map(|i| format!("{{\"query\": \"q{i}\", \"response\": \"r{i}\"}}\n")).collect();
    let file = write(dir.path(), "ten.jsonl", &text);
    let queries = |spec: &str, opts: &DatasetOptions| -> Vec<String> {
        load_dataset(spec, opts).unwrap().rows.iter().map(|r| r.messages[0]["content"].as_str().unwrap().to_string()).collect()
    };
    let four = queries(&format!("{file}#4"), &opts());
    assert_eq!(four.len(), 4);
    let mut distinct = four.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "N < len draws distinct rows");
    assert_eq!(four, queries(&format!("{file}#4"), &opts()), "same seed, same rows");
    let other_seed = DatasetOptions { seed: 7, ..opts() };
    assert_ne!(four, queries(&format!("{file}#4"), &other_seed));
    // N > len: full copies in file order, then distinct random rows.
    let many = queries(&format!("{file}#23"), &opts());
    assert_eq!(many.len(), 23);
    let in_order: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    assert_eq!(&many[..10], &in_order[..]);
    assert_eq!(&many[10..20], &in_order[..]);
    // Without shuffling: the first rows.
    let first = queries(&format!("{file}#3"), &DatasetOptions { shuffle_sample: false, ..opts() });
    assert_eq!(first, vec!["q0", "q1", "q2"]);
    // Row origins survive sampling.
    let loaded = load_dataset(&format!("{file}#2"), &DatasetOptions { shuffle_sample: false, ..opts() }).unwrap();
    assert_eq!(loaded.rows[1].origin.location, RowLocation::Line(2));
}

#[test]
fn malformed_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{\"messages\": [\n", "invalid JSON at column"),
        ("{\"text\": \"hello\"}", "unknown row format (keys: text)"),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": 5}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
            "message 0: `content` must be a string",
        ),
        ("{\"messages\": []}", "empty conversation"),
        ("{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}", "no assistant turn"),
        ("{\"instruction\": \"x\", \"input\": \"y\"}", "no assistant turn"),
        ("[1, 2]", "expected a JSON object"),
    ];
    for (bad, reason) in cases {
        let file = write(dir.path(), "bad.jsonl", &format!("{QUERY_ROW}\n\n{bad}\n{QUERY_ROW}\n"));
        let err = load_dataset(&file, &opts()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("{file}:3: ")) && text.contains(reason), "{bad}: {text}");
        assert!(matches!(err, DataError::Row { location: RowLocation::Line(3), .. }), "{err:?}");
    }
    // JSON arrays: the record index.
    let file = write(dir.path(), "bad.json", &format!("[{QUERY_ROW}, {{\"query\": \"q\"}}]"));
    let err = load_dataset(&file, &opts()).unwrap_err().to_string();
    assert_eq!(err, format!("{file}: record 2 of the JSON array: `query` without `response`: no assistant turn"));
    // An array that does not parse: serde's line and column, even when skipping.
    let file = write(dir.path(), "broken.json", "[\n{\"query\": \"q\", \"response\": \"r\"},\n{oops}\n]");
    let err = load_dataset(&file, &DatasetOptions { skip_malformed: true, ..opts() }).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{file}: invalid JSON at line 3, column")), "{err}");
    // Missing files and empty files.
    let err = load_dataset("/no/such/train.jsonl", &opts()).unwrap_err().to_string();
    assert!(err.starts_with("dataset `/no/such/train.jsonl`: no such file"), "{err}");
    let file = write(dir.path(), "empty.jsonl", "\n\n");
    assert!(load_dataset(&file, &opts()).unwrap_err().to_string().ends_with("holds no rows"));
    let file = write(dir.path(), "one.json", "{\n  \"query\": \"q\",\n  \"response\": \"r\"\n}\n");
    let err = load_dataset(&file, &opts()).unwrap_err().to_string();
    assert!(err.contains("holds one JSON object; expected a JSON array of rows"), "{err}");
}

#[test]
fn skip_malformed_counts_and_reports_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("{QUERY_ROW}\n{{broken\n{{\"messages\": []}}\n{MESSAGES_ROW}\n");
    for _ in 0..30 {
        text.push_str("{\"foo\": 1}\n");
    }
    let file = write(dir.path(), "dirty.jsonl", &text);
    let loaded = load_dataset(&file, &DatasetOptions { skip_malformed: true, ..opts() }).unwrap();
    assert_eq!(loaded.rows.len(), 2);
    assert_eq!(loaded.num_skipped, 32);
    assert_eq!(loaded.skipped.len(), MAX_REPORTED_SKIPS);
    assert_eq!(loaded.skipped[0].origin.location, RowLocation::Line(2));
    assert!(loaded.skipped[0].reason.starts_with("invalid JSON"), "{}", loaded.skipped[0]);
    assert_eq!(loaded.skipped[1].to_string(), format!("{file}:3: `messages`: empty conversation"));
    // A file with nothing usable is still an error, quoting the first reason.
    let file = write(dir.path(), "junk.jsonl", "{\"foo\": 1}\n{\"bar\": 2}\n");
    let err = load_dataset(&file, &DatasetOptions { skip_malformed: true, ..opts() }).unwrap_err().to_string();
    assert!(err.contains("all 2 rows are malformed; the first: ") && err.contains("junk.jsonl:1: unknown row format"), "{err}");
}

#[test]
fn default_system_only_where_the_row_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "sys.jsonl",
        &format!(
            "{MESSAGES_ROW}\n{{\"query\": \"q\", \"response\": \"r\"}}\n{{\"query\": \"q\", \"response\": \"r\", \"system\": \"\"}}\n"
        ),
    );
    let mut rows = load_dataset(&file, &opts()).unwrap().rows;
    assert_eq!(apply_default_system(&mut rows, "Be helpful."), 1);
    assert_eq!(rows[0].messages[0], json!({"role": "system", "content": "You are a poet."}));
    assert_eq!(rows[1].messages[0], json!({"role": "system", "content": "Be helpful."}));
    assert_eq!(rows[1].messages[1], json!({"role": "user", "content": "q"}));
    // An explicit empty system prompt is the dataset's choice and is kept.
    assert_eq!(rows[2].messages[0], json!({"role": "system", "content": ""}));
    // Applying twice changes nothing.
    assert_eq!(apply_default_system(&mut rows, "Other."), 0);
}

#[test]
fn split_by_ratio_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..50).map(|i| format!("{{\"query\": \"q{i}\", \"response\": \"r\"}}\n")).collect();
    let file = write(dir.path(), "fifty.jsonl", &text);
    let rows = load_dataset(&file, &opts()).unwrap().rows;
    let (train, val) = split_dataset(rows.clone(), 0.1, 42).unwrap();
    assert_eq!((train.len(), val.len()), (45, 5));
    let (train2, val2) = split_dataset(rows, 0.1, 42).unwrap();
    assert_eq!(train, train2);
    assert_eq!(val, val2);
    let line = |r: &qtrain_data::DatasetRow| match r.origin.location {
        RowLocation::Line(l) => l,
        RowLocation::Index(_) => unreachable!(),
    };
    assert!(train.iter().all(|t| val.iter().all(|v| line(t) != line(v))));
}

#[test]
fn every_loaded_row_tokenizes_with_the_real_templates() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "all.jsonl", &[MESSAGES_ROW, SHAREGPT_ROW, ALPACA_ROW, QUERY_ROW].join("\n"));
    let rows = load_dataset(&file, &opts()).unwrap().rows;
    let tokenizer = QwenTokenizer::from_file(fixture("qwen-tokenizer/tokenizer.json.gz")).unwrap();
    let template = TokenizerConfig::from_file(fixture("qwen-tokenizer/tokenizer_config_qwen2.5.json")).unwrap().chat_template().unwrap();
    let options = ConversationOptions::default();
    let conv = ConversationTokenizer::new(&template, &tokenizer, &options);
    for row in &rows {
        let t = conv.tokenize(&row.messages, row.tools.as_ref()).map_err(|e| row.error(e)).unwrap();
        let assistant_turns = row.messages.as_array().unwrap().iter().filter(|m| m["role"] == "assistant").count();
        assert_eq!(t.supervised_spans.len(), assistant_turns, "{}", row.origin);
        let system = row.messages[0]["content"].as_str().unwrap();
        assert!(t.rendered.starts_with(&format!("<|im_start|>system\n{system}<|im_end|>\n")), "{}", t.rendered);
    }
    // A tokenization failure is reported with the row's origin.
    let err = rows[0].error("boom");
    assert_eq!(err.to_string(), format!("{file}:1: boom"));
}
