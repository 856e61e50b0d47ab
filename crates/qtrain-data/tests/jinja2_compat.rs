//! Jinja2/Python behaviour of the chat-template environment beyond the Qwen templates:
//! `tests/data/jinja2_compat_cases.json` holds small templates rendered by transformers'
//! `apply_chat_template` (Python value printing, `tojson` options, `str` methods,
//! filters, tests, whitespace control, loops, macros, slicing, message preparation,
//! and templates that must fail).

use std::fmt::Write;

use qtrain_data::{ChatTemplate, RenderRequest, SpecialTokens};
use serde_json::Value;

const REGENERATE: &str = "cases are produced by transformers: regenerate them with \
                          `python3 crates/qtrain-data/tests/data/make_jinja2_compat_cases.py`";

#[test]
fn small_templates_render_as_transformers_renders_them() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jinja2_compat_cases.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let token = |name: &str| data["special_tokens"][name].as_str().map(str::to_string);
    let special = SpecialTokens {
        bos_token: token("bos_token"),
        eos_token: token("eos_token"),
        pad_token: token("pad_token"),
        unk_token: token("unk_token"),
    };
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "{REGENERATE}");
    let mut failures = String::new();
    let mut expected_errors = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let template = match ChatTemplate::new(case["template"].as_str().unwrap(), special.clone()) {
            Ok(t) => t,
            Err(e) => {
                writeln!(failures, "[{name}] does not compile: {e}").unwrap();
                continue;
            }
        };
        let request = RenderRequest {
            messages: &case["messages"],
            tools: Some(&case["tools"]).filter(|t| !t.is_null()),
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            enable_thinking: case["enable_thinking"].as_bool(),
        };
        match (template.render(&request), case["rendered"].as_str()) {
            (Ok(ours), Some(theirs)) if ours != theirs => {
                writeln!(failures, "[{name}]\n  transformers: {theirs:?}\n  qtrain:       {ours:?}").unwrap()
            }
            (Ok(_), Some(_)) => {}
            (Err(e), Some(theirs)) => writeln!(failures, "[{name}] failed: {e}\n  transformers: {theirs:?}").unwrap(),
            (Ok(ours), None) => writeln!(failures, "[{name}] should fail like transformers ({}) but gave {ours:?}", case["error"]).unwrap(),
            (Err(e), None) => {
                expected_errors += 1;
                if case["error"].as_str().unwrap().starts_with("TemplateError: ") {
                    // raise_exception's message is passed through unchanged.
                    let message = case["error"].as_str().unwrap().trim_start_matches("TemplateError: ");
                    if !e.to_string().ends_with(message) {
                        writeln!(failures, "[{name}] error {e} should end with {message:?}").unwrap();
                    }
                }
            }
        }
    }
    assert_eq!(expected_errors, 4, "cases that must fail did not all fail");
    assert!(failures.is_empty(), "{failures}\n{REGENERATE}");
}
