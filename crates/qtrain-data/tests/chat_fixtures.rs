//! Chat templates, tokenizer and training labels against transformers' output:
//! `tests/fixtures/chat/cases.json` holds, for real Qwen2.5 and Qwen3 templates,
//! `apply_chat_template(..., tokenize=False)` renderings and their token ids by the
//! full Qwen tokenizer (`tests/fixtures/qwen-tokenizer/`).

use std::fmt::Write;
use std::path::PathBuf;

use qtrain_data::{
    tokenize_conversation, ChatTemplate, ConversationOptions, LossScale, QwenTokenizer, RenderRequest, TokenizedConversation,
    TokenizerConfig, IGNORE_INDEX,
};
use serde_json::Value;

const REGENERATE: &str = "fixtures are produced by transformers: regenerate them with \
                          `python3 tools/build_qwen_tokenizer.py --out tests/fixtures && python3 tools/make_fixtures.py` \
                          (see tools/README.md)";

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

struct Case {
    name: String,
    template: String,
    messages: Value,
    tools: Option<Value>,
    add_generation_prompt: bool,
    enable_thinking: Option<bool>,
    rendered: String,
    ids: Vec<u32>,
}

fn load_cases() -> Vec<Case> {
    let path = fixture("chat/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
    cases
        .into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            template: c["template"].as_str().unwrap().to_string(),
            messages: c["messages"].clone(),
            tools: Some(c["tools"].clone()).filter(|t| !t.is_null()),
            add_generation_prompt: c["add_generation_prompt"].as_bool().unwrap(),
            enable_thinking: c["enable_thinking"].as_bool(),
            rendered: c["rendered"].as_str().unwrap().to_string(),
            ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
        })
        .collect()
}

fn full_tokenizer() -> QwenTokenizer {
    let path = fixture("qwen-tokenizer/tokenizer.json.gz");
    QwenTokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"))
}

fn template(name: &str) -> ChatTemplate {
    let path = fixture(&format!("qwen-tokenizer/tokenizer_config_{name}.json"));
    let config = TokenizerConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
    config.chat_template().unwrap()
}

struct Templates {
    qwen25: ChatTemplate,
    qwen3: ChatTemplate,
}

impl Templates {
    fn load() -> Self {
        Templates { qwen25: template("qwen2.5"), qwen3: template("qwen3") }
    }

    fn get(&self, name: &str) -> &ChatTemplate {
        match name {
            "qwen2.5" => &self.qwen25,
            "qwen3" => &self.qwen3,
            other => panic!("unknown template {other:?} in cases.json"),
        }
    }
}

/// Where two strings first differ, with escaped context on both sides.
fn text_difference(expected: &str, actual: &str) -> String {
    let at = expected.bytes().zip(actual.bytes()).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
    let floor = |s: &str, mut i: usize| {
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let ceil = |s: &str, mut i: usize| {
        i = i.min(s.len());
        while !s.is_char_boundary(i) {
            i += 1;
        }
        i
    };
    let start = floor(expected, at.saturating_sub(60)).min(floor(actual, at.saturating_sub(60)));
    let line = expected[..floor(expected, at)].matches('\n').count() + 1;
    format!(
        "first difference at byte {at} (line {line}; lengths {} vs {})\n  expected: …{:?}…\n  actual:   …{:?}…",
        expected.len(),
        actual.len(),
        &expected[floor(expected, start)..ceil(expected, at + 60)],
        &actual[floor(actual, start)..ceil(actual, at + 60)],
    )
}

/// Where two id lists first differ, with the tokens around it.
fn ids_difference(tok: &QwenTokenizer, expected: &[u32], actual: &[u32]) -> String {
    let at = expected.iter().zip(actual).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
    let window = |ids: &[u32]| {
        ids[at.saturating_sub(5)..(at + 5).min(ids.len())]
            .iter()
            .map(|&id| format!("{id}:{:?}", tok.id_to_token(id).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "first difference at token {at} (lengths {} vs {})\n  expected: {}\n  actual:   {}",
        expected.len(),
        actual.len(),
        window(expected),
        window(actual)
    )
}

fn render_case(templates: &Templates, case: &Case) -> Result<String, String> {
    let request = RenderRequest {
        messages: &case.messages,
        tools: case.tools.as_ref(),
        add_generation_prompt: case.add_generation_prompt,
        enable_thinking: case.enable_thinking,
    };
    templates.get(&case.template).render(&request).map_err(|e| e.to_string())
}

#[test]
fn every_case_renders_byte_identical_to_transformers_and_tokenizes_to_the_same_ids() {
    let cases = load_cases();
    assert_eq!(cases.len(), 24, "cases.json changed size; {REGENERATE}");
    let templates = Templates::load();
    let tok = full_tokenizer();
    let mut failures = String::new();
    for case in &cases {
        match render_case(&templates, case) {
            Err(e) => writeln!(failures, "[{}] render error: {e}", case.name).unwrap(),
            Ok(rendered) if rendered != case.rendered => {
                writeln!(failures, "[{}] rendering differs from transformers: {}", case.name, text_difference(&case.rendered, &rendered))
                    .unwrap()
            }
            Ok(_) => {}
        }
        // Ids of the reference rendering, so a template mismatch does not hide a tokenizer one.
        let ids = tok.encode(&case.rendered).unwrap();
        if ids != case.ids {
            writeln!(failures, "[{}] token ids differ from transformers: {}", case.name, ids_difference(&tok, &case.ids, &ids)).unwrap();
        }
    }
    assert!(failures.is_empty(), "{failures}\n{REGENERATE}");
}

#[test]
fn full_tokenizer_vocabulary_and_special_tokens() {
    let tok = full_tokenizer();
    // 151643 BPE ranks + 26 added tokens (Qwen3's set).
    assert_eq!(tok.vocab_size(), 151_669);
    for (token, id) in
        [("<|endoftext|>", 151_643), ("<|im_start|>", 151_644), ("<|im_end|>", 151_645), ("<think>", 151_667), ("</think>", 151_668)]
    {
        assert_eq!(tok.token_to_id(token), Some(id), "{token}");
        assert_eq!(tok.id_to_token(id).as_deref(), Some(token));
    }
    assert!(tok.is_special_token(151_645));
    assert!(!tok.is_special_token(151_667), "<think> is not special in Qwen3's tokenizer");
    // Byte-level alphabet spelling: "Ġ" is the space byte.
    let hello = tok.encode(" hello").unwrap();
    assert_eq!(hello.len(), 1);
    assert_eq!(tok.id_to_token(hello[0]).as_deref(), Some("Ġhello"));
}

#[test]
fn decode_round_trips_every_case_and_skips_only_special_tokens() {
    let tok = full_tokenizer();
    for case in load_cases() {
        assert_eq!(tok.decode(&case.ids, false).unwrap(), case.rendered, "[{}]", case.name);
        let skipped = tok.decode(&case.ids, true).unwrap();
        assert!(!skipped.contains("<|im_start|>") && !skipped.contains("<|im_end|>"), "[{}]", case.name);
        let mut without_markers = case.rendered.replace("<|im_start|>", "").replace("<|im_end|>", "");
        without_markers = without_markers.replace("<|endoftext|>", "");
        assert_eq!(skipped, without_markers, "[{}] <think>, <tool_call> ... are not special and stay", case.name);
    }
}

#[test]
fn stream_decoding_every_case_emits_only_complete_characters() {
    let tok = full_tokenizer();
    let mut held_back = 0;
    for case in load_cases() {
        let mut decoder = tok.stream_decoder(false);
        let mut text = String::new();
        for &id in &case.ids {
            let chunk = decoder.push(id).unwrap();
            assert!(!chunk.contains('\u{FFFD}'), "[{}] emitted a partial character: {chunk:?}", case.name);
            if chunk.is_empty() {
                held_back += 1;
            }
            text.push_str(&chunk);
        }
        text.push_str(&decoder.finish().unwrap());
        assert_eq!(text, case.rendered, "[{}]", case.name);
    }
    // The non-ASCII cases have emoji split over several byte-level tokens.
    assert!(held_back > 0, "no case exercised a character split across tokens");
}

/// The supervised tokens of `t` as contiguous runs, decoded.
fn supervised_runs(tok: &QwenTokenizer, t: &TokenizedConversation) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for (i, (&id, &label)) in t.input_ids.iter().zip(&t.labels).enumerate() {
        if label == IGNORE_INDEX {
            if !current.is_empty() {
                runs.push(tok.decode(&std::mem::take(&mut current), false).unwrap());
            }
        } else {
            assert_eq!(label, id as i32, "label {i} must be the token id");
            current.push(id);
        }
    }
    if !current.is_empty() {
        runs.push(tok.decode(&current, false).unwrap());
    }
    runs
}

/// What the template writes for an assistant message without tool calls, worked out
/// from the published templates: Qwen2.5 writes the content; Qwen3 writes the content
/// without any inline `<think>` block, except after the last user query (for the last
/// message, or one with non-empty reasoning) where the reasoning is shown as
/// `<think>\n{reasoning}\n</think>\n\n`.
fn expected_body(template: &str, message: &Value, after_last_query: bool, is_last: bool) -> String {
    let content = message["content"].as_str().unwrap_or("");
    if template == "qwen2.5" {
        return format!("{content}<|im_end|>");
    }
    let (mut reasoning, mut answer) = (String::new(), content.to_string());
    if let Some(r) = message["reasoning_content"].as_str() {
        reasoning = r.to_string();
    } else if let Some((before, _)) = content.split_once("</think>") {
        reasoning = before.trim_end_matches('\n').rsplit("<think>").next().unwrap().trim_start_matches('\n').to_string();
        answer = content.rsplit("</think>").next().unwrap().trim_start_matches('\n').to_string();
    }
    if after_last_query && (is_last || !reasoning.is_empty()) {
        format!("<think>\n{}\n</think>\n\n{}<|im_end|>", reasoning.trim_matches('\n'), answer.trim_start_matches('\n'))
    } else {
        format!("{answer}<|im_end|>")
    }
}

#[test]
fn training_labels_supervise_exactly_each_assistant_reply_and_im_end() {
    let templates = Templates::load();
    let tok = full_tokenizer();
    let mut checked_cases = 0;
    let mut checked_turns = 0;
    for case in load_cases() {
        let assistants: Vec<(usize, &Value)> =
            case.messages.as_array().unwrap().iter().enumerate().filter(|(_, m)| m["role"] == "assistant").collect();
        if assistants.is_empty() {
            continue;
        }
        let template = templates.get(&case.template);
        let options = ConversationOptions { enable_thinking: case.enable_thinking, ..Default::default() };
        let t = tokenize_conversation(template, &tok, &case.messages, case.tools.as_ref(), &options)
            .unwrap_or_else(|e| panic!("[{}] {e}", case.name));
        // The training rendering is the reference one without the generation prompt.
        assert!(case.rendered.starts_with(&t.rendered), "[{}] {}", case.name, text_difference(&case.rendered, &t.rendered));
        if !case.add_generation_prompt {
            assert_eq!(t.input_ids, case.ids, "[{}] {}", case.name, ids_difference(&tok, &case.ids, &t.input_ids));
        }
        assert_eq!(t.input_ids, tok.encode(&t.rendered).unwrap(), "[{}] ids must be those of the whole rendering", case.name);

        let runs = supervised_runs(&tok, &t);
        assert_eq!(runs.len(), assistants.len(), "[{}] one supervised run per assistant message: {runs:#?}", case.name);
        let count = case.messages.as_array().unwrap().len();
        // Qwen3's `ns.last_query_index`: the last user message that is not a tool response.
        let last_query = case
            .messages
            .as_array()
            .unwrap()
            .iter()
            .rposition(|m| m["role"] == "user" && !m["content"].as_str().is_some_and(|c| c.starts_with("<tool_response>")));
        let last_query = last_query.unwrap_or(count - 1);
        let mut total_tokens = 0;
        for ((index, message), run) in assistants.iter().zip(&runs) {
            let body = expected_body(&case.template, message, *index > last_query, *index == count - 1);
            if message.get("tool_calls").is_some() {
                // Tool calls follow the text; both are supervised.
                let text = body.trim_end_matches("<|im_end|>");
                assert!(run.starts_with(text), "[{}] message {index}: {run:?} should start with {text:?}", case.name);
                assert!(run.ends_with("</tool_call><|im_end|>"), "[{}] message {index}: {run:?}", case.name);
                assert_eq!(
                    run.matches("<tool_call>").count(),
                    message["tool_calls"].as_array().unwrap().len(),
                    "[{}] message {index}",
                    case.name
                );
            } else {
                assert_eq!(run, &body, "[{}] message {index}: {}", case.name, text_difference(&body, run));
            }
            total_tokens += tok.encode(run).unwrap().len();
            checked_turns += 1;
        }
        assert_eq!(t.num_supervised_tokens, total_tokens, "[{}]", case.name);
        checked_cases += 1;

        // LastRound keeps only the final run.
        let last = ConversationOptions { loss_scale: LossScale::LastRound, ..options.clone() };
        let t_last = tokenize_conversation(template, &tok, &case.messages, case.tools.as_ref(), &last).unwrap();
        assert_eq!(t_last.input_ids, t.input_ids);
        assert_eq!(supervised_runs(&tok, &t_last), runs[runs.len() - 1..].to_vec(), "[{}] LastRound", case.name);
    }
    assert!(checked_cases >= 10 && checked_turns >= 15, "only {checked_cases} cases / {checked_turns} turns checked");
}

#[test]
fn qwen3_final_turn_keeps_its_reasoning_and_earlier_turns_lose_it() {
    let templates = Templates::load();
    let tok = full_tokenizer();
    let case = load_cases().into_iter().find(|c| c.name == "qwen3/reasoning_content").expect("case qwen3/reasoning_content");
    let mut messages = case.messages.clone();
    let t = tokenize_conversation(templates.get("qwen3"), &tok, &messages, None, &ConversationOptions::default()).unwrap();
    assert_eq!(supervised_runs(&tok, &t), vec!["51.<|im_end|>", "<think>\n51 / 3 = 17.\n</think>\n\n17.<|im_end|>"]);
    // Excluding the first reply by `"loss": false` leaves only the last one.
    messages[1]["loss"] = Value::Bool(false);
    let t2 = tokenize_conversation(templates.get("qwen3"), &tok, &messages, None, &ConversationOptions::default()).unwrap();
    assert_eq!(t2.input_ids, t.input_ids, "`loss` must not change the rendering");
    assert_eq!(supervised_runs(&tok, &t2), vec!["<think>\n51 / 3 = 17.\n</think>\n\n17.<|im_end|>"]);
}
