//! The bundled self-cognition dataset through the dataset loader: `--model_name` /
//! `--model_author` substitution by language (one value or two), `#N`, the Qwen3 subsets
//! and what the real Qwen3 template makes of the empty think block.

use std::path::PathBuf;

use qtrain_data::{
    load_dataset, load_datasets, Bilingual, ChatTemplate, ConversationOptions, ConversationTokenizer, DatasetOptions, Lang, QwenTokenizer,
    RenderRequest, RowFormat, SelfCognition, SelfCognitionSubset, TokenizerConfig, IGNORE_INDEX,
};
use serde_json::{json, Value};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

fn template(name: &str) -> ChatTemplate {
    TokenizerConfig::from_file(fixture(&format!("qwen-tokenizer/tokenizer_config_{name}.json"))).unwrap().chat_template().unwrap()
}

fn opts(name: &[&str], author: &[&str]) -> DatasetOptions {
    DatasetOptions {
        model_name: Some(Bilingual::from_values("model_name", name).unwrap()),
        model_author: Some(Bilingual::from_values("model_author", author).unwrap()),
        ..DatasetOptions::default()
    }
}

fn pair(messages: &Value) -> (&str, &str) {
    assert_eq!(messages.as_array().unwrap().len(), 2, "{messages}");
    assert_eq!((messages[0]["role"].as_str(), messages[1]["role"].as_str()), (Some("user"), Some("assistant")));
    (messages[0]["content"].as_str().unwrap(), messages[1]["content"].as_str().unwrap())
}

#[test]
fn two_values_substitute_by_language() {
    let loaded = load_dataset("self-cognition", &opts(&["小黄", "Xiao Huang"], &["魔搭", "ModelScope"])).unwrap();
    assert_eq!(loaded.rows.len(), 100);
    assert!(loaded.rows.iter().all(|r| r.format == RowFormat::SelfCognition && r.tools.is_none()));
    let (q, a) = pair(&loaded.rows[0].messages);
    assert_eq!(q, "你是谁？");
    assert_eq!(a, "我是小黄，一个由魔搭开发的人工智能助手。有什么可以帮你的吗？");
    let (q, a) = pair(&loaded.rows[50].messages);
    assert_eq!(q, "Who are you?");
    assert_eq!(a, "I am Xiao Huang, an AI assistant developed by ModelScope. How can I help you today?");
    for row in &loaded.rows[..50] {
        let (q, a) = pair(&row.messages);
        assert!(a.contains("小黄") && a.contains("魔搭") && !a.contains("Xiao Huang") && !a.contains("ModelScope"), "{a}");
        assert!(!q.contains("{{") && !a.contains("{{"));
    }
    for row in &loaded.rows[50..] {
        let (_, a) = pair(&row.messages);
        assert!(a.contains("Xiao Huang") && a.contains("ModelScope") && !a.contains("小黄"), "{a}");
    }
    // Placeholders in queries are substituted too.
    assert!(loaded.rows.iter().any(|r| pair(&r.messages).0 == "Are you Xiao Huang?"));
    assert!(loaded.rows.iter().any(|r| pair(&r.messages).0 == "你是小黄吗？"));
}

#[test]
fn one_value_serves_both_languages() {
    let loaded = load_dataset("self-cognition", &opts(&["Qbert"], &["Acme Labs"])).unwrap();
    let (_, zh) = pair(&loaded.rows[0].messages);
    let (_, en) = pair(&loaded.rows[50].messages);
    assert_eq!(zh, "我是Qbert，一个由Acme Labs开发的人工智能助手。有什么可以帮你的吗？");
    assert_eq!(en, "I am Qbert, an AI assistant developed by Acme Labs. How can I help you today?");
}

#[test]
fn names_are_required() {
    let err = load_dataset("self-cognition", &DatasetOptions::default()).unwrap_err().to_string();
    assert!(err.starts_with("dataset `self-cognition`: needs `model_name`"), "{err}");
}

#[test]
fn sampling_and_aliases() {
    let o = opts(&["Q"], &["A"]);
    let rows = load_dataset("self-cognition#10", &o).unwrap().rows;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows, load_dataset("swift/self-cognition#10", &o).unwrap().rows);
    assert_eq!(load_dataset("self-cognition#250", &o).unwrap().rows.len(), 250);
    // Mixed with a user file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.jsonl");
    std::fs::write(&file, "{\"query\": \"hi\", \"response\": \"hello\"}\n").unwrap();
    let all = load_datasets(&[file.to_str().unwrap(), "self-cognition#5"], &o).unwrap();
    assert_eq!(all.rows.len(), 6);
    assert_eq!(all.format_counts()[&RowFormat::SelfCognition], 5);
}

#[test]
fn qwen3_subsets_add_the_think_prefix() {
    let qwen3 = template("qwen3");
    let qwen25 = template("qwen2.5");
    assert_eq!(SelfCognitionSubset::for_template(&qwen3), SelfCognitionSubset::EmptyThink);
    assert_eq!(SelfCognitionSubset::for_template(&qwen25), SelfCognitionSubset::Default);

    let mut o = opts(&["Q"], &["A"]);
    o.self_cognition_subset = SelfCognitionSubset::for_template(&qwen3);
    let (q, a) = pair(&load_dataset("self-cognition", &o).unwrap().rows[50].messages).clone_strings();
    assert_eq!(q, "Who are you?");
    assert_eq!(a, "<think>\n\n</think>\n\nI am Q, an AI assistant developed by A. How can I help you today?");
    // The spec's subset wins over the option; `qwen3` also appends the soft switch.
    let (q, a) = pair(&load_dataset("self-cognition:qwen3", &o).unwrap().rows[50].messages).clone_strings();
    assert_eq!(q, "Who are you? /no_think");
    assert!(a.starts_with("<think>\n\n</think>\n\nI am Q"));
    let (_, a) = pair(&load_dataset("self-cognition:default", &o).unwrap().rows[50].messages).clone_strings();
    assert!(a.starts_with("I am Q"));
}

trait CloneStrings {
    fn clone_strings(self) -> (String, String);
}

impl CloneStrings for (&str, &str) {
    fn clone_strings(self) -> (String, String) {
        (self.0.to_string(), self.1.to_string())
    }
}

#[test]
fn the_qwen3_template_renders_the_prefix_as_it_renders_no_prefix() {
    // HF's Qwen3 template gives the final assistant turn an empty think block itself and
    // parses a given one out of the content: with or without ms-swift's prefix the training
    // text is the same, and the block (with its `<think>` tokens) is supervised.
    let qwen3 = template("qwen3");
    let tokenizer = QwenTokenizer::from_file(fixture("qwen-tokenizer/tokenizer.json.gz")).unwrap();
    let config = SelfCognition { name: Bilingual::same("Q"), author: Bilingual::same("A"), subset: SelfCognitionSubset::EmptyThink };
    let plain = SelfCognition { subset: SelfCognitionSubset::Default, ..config.clone() };
    let (with, without) = (config.rows()[50].messages(), plain.rows()[50].messages());
    let render = |m: &Value| qwen3.render(&RenderRequest::new(m)).unwrap();
    assert_eq!(render(&with), render(&without));
    assert_eq!(
        render(&with),
        "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nI am Q, an AI assistant developed by A. How can I help you today?<|im_end|>\n"
    );
    let options = ConversationOptions::default();
    let t = ConversationTokenizer::new(&qwen3, &tokenizer, &options).tokenize(&with, None).unwrap();
    let supervised: Vec<u32> = t.input_ids.iter().zip(&t.labels).filter(|(_, &l)| l != IGNORE_INDEX).map(|(&id, _)| id).collect();
    assert_eq!(supervised[0], tokenizer.token_to_id("<think>").unwrap());
    assert!(tokenizer.decode(&supervised, false).unwrap().ends_with("How can I help you today?<|im_end|>"));
}

#[test]
fn held_out_questions_are_substituted_per_language() {
    let config = SelfCognition::new(
        Some(&Bilingual::from_values("model_name", &["小黄", "Xiao Huang"]).unwrap()),
        Some(&Bilingual::from_values("model_author", &["魔搭", "ModelScope"]).unwrap()),
        SelfCognitionSubset::Default,
    )
    .unwrap();
    let questions = config.eval_questions();
    assert_eq!(questions.len(), 10);
    let training: Vec<String> = config.rows().into_iter().map(|r| r.query).collect();
    for q in &questions {
        assert!(!training.contains(&q.query), "{} is also a training question", q.query);
        let (name, author) = match q.lang {
            Lang::Zh => ("小黄", "魔搭"),
            Lang::En => ("Xiao Huang", "ModelScope"),
        };
        assert_eq!((q.expected_name.as_str(), q.expected_author.as_str()), (name, author));
        assert_eq!(q.messages(), json!([{"role": "user", "content": q.query}]));
    }
    let en = questions.iter().find(|q| q.lang == Lang::En).unwrap();
    assert!(en.score("I'm Xiao Huang, developed by ModelScope.").correct());
    assert!(!en.score("I'm Qwen, created by Alibaba Cloud.").correct());
}
