//! Dataset row formats, recognised row by row and normalised to one shape: a `messages`
//! array of `{"role", "content", ...}` objects (roles `system`, `user`, `assistant`,
//! `tool`) plus optional `tools`, which is what [`crate::ConversationTokenizer`] and the
//! chat templates take.
//!
//! Recognised formats, tried in this order (the first whose keys a row has wins):
//!
//! | format | keys | becomes |
//! |---|---|---|
//! | [`RowFormat::Messages`] | `messages` (or `conversation(s)` whose messages use `role`/`content`) | as given, roles mapped |
//! | [`RowFormat::ShareGpt`] | `conversations` (or `conversation`/`messages`) of `{"from", "value"}` | `from` → role, `value` → content |
//! | [`RowFormat::Alpaca`] | `instruction` and/or `input`, `output`, optional `system`, `history` | history pairs, then `instruction\ninput` → `output` |
//! | [`RowFormat::QueryResponse`] | `query`, `response`, optional `system`, `history` (aliases `prompt`/`question`, `completion`/`answer`) | history pairs, then `query` → `response` |
//!
//! Roles, as ms-swift's `MessagesPreprocessor` maps them: `human`/`user` → `user`;
//! `gpt`/`assistant`/`bot` → `assistant`; `system`; `tool`, `tool_response`,
//! `function_response`, `function`, `observation(s)` → `tool`; `tool_call`/`function_call`
//! (ms-swift's and LLaMA-Factory's tool-call turn, content `{"name", "arguments"}`) →
//! an assistant message with OpenAI `tool_calls` (consecutive calls merge into one turn,
//! as the Qwen templates render several `<tool_call>` blocks in one assistant turn).
//! A top-level `system` (every format) is inserted as the first message unless the
//! conversation already starts with a system message. Message keys kept: `role`,
//! `content`, `loss` (bool, per-message supervision), `tool_calls`, `reasoning_content`,
//! `name`; others are dropped (ms-swift drops them too). String tool-call `arguments`
//! holding JSON are parsed, so templates print them as JSON rather than as a quoted string.
//! `tools` may be an array or a string holding one (ms-swift and LLaMA-Factory store
//! strings).
//!
//! Alpaca joins `instruction` and `input` as ms-swift's `AlpacaPreprocessor.concat_inst_input`
//! does: `instruction + "\n" + input` when both are non-empty, else whichever is.
//!
//! A row is malformed when it is not an object, matches no format, has a field of the
//! wrong type, has no messages, or has no assistant turn. Unknown top-level keys (`id`,
//! `tag`, `source` ...) are ignored.
//!
//! This module only reshapes JSON values: it must not read files, render or tokenize.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{DataError, Result, RowLocation};

/// The format a row was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowFormat {
    /// `{"messages": [{"role", "content"}, ...]}` (OpenAI / ms-swift).
    Messages,
    /// `{"conversations": [{"from", "value"}, ...], "system"?}`.
    ShareGpt,
    /// `{"instruction", "input", "output", "system"?, "history"?}`.
    Alpaca,
    /// `{"query", "response", "system"?, "history"?}` (ms-swift's own format).
    QueryResponse,
    /// A row of the bundled self-cognition dataset.
    SelfCognition,
    /// `{"text": "…"}`: a pretraining document ([`crate::text`]).
    Text,
    /// One line of a `.txt` file: a pretraining document ([`crate::text`]).
    TextLine,
}

impl RowFormat {
    /// Lower-case name for reports (`messages`, `sharegpt`, `alpaca`, `query-response`,
    /// `self-cognition`).
    pub fn name(self) -> &'static str {
        match self {
            RowFormat::Messages => "messages",
            RowFormat::ShareGpt => "sharegpt",
            RowFormat::Alpaca => "alpaca",
            RowFormat::QueryResponse => "query-response",
            RowFormat::SelfCognition => "self-cognition",
            RowFormat::Text => "text",
            RowFormat::TextLine => "txt-line",
        }
    }
}

/// A row in the normalised shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedRow {
    /// JSON array of `{"role", "content", ...}` messages with at least one assistant turn.
    pub messages: Value,
    /// JSON array of tool definitions, when the row has any.
    pub tools: Option<Value>,
    pub format: RowFormat,
}

/// Recognise `row`'s format and normalise it. `path` and `location` only name the row in
/// the error (`file:LINE: ...`).
pub fn normalize_row(row: &Value, path: &Path, location: RowLocation) -> Result<NormalizedRow> {
    normalize(row, false).map_err(|message| DataError::row(path, location, message))
}

/// Same as [`normalize_row`], with the reason as a plain string; `prompt_only` keeps a row
/// without an assistant turn (inference only).
pub(crate) fn normalize(row: &Value, prompt_only: bool) -> std::result::Result<NormalizedRow, String> {
    let Value::Object(object) = row else {
        return Err(format!("expected a JSON object, got {}", kind(row)));
    };
    let tools = tools_field(object)?;
    let system = optional_string(object, "system")?;
    let (format, messages) = if let Some((key, list)) = messages_field(object)? {
        let sharegpt = list.first().and_then(Value::as_object).is_some_and(|m| !m.contains_key("role") && !m.contains_key("content"));
        let messages = normalize_messages(list, system, prompt_only).map_err(|e| format!("`{key}`: {e}"))?;
        (if sharegpt { RowFormat::ShareGpt } else { RowFormat::Messages }, messages)
    } else if object.contains_key("instruction") || (object.contains_key("input") && object.contains_key("output")) {
        let instruction = optional_string(object, "instruction")?;
        let input = optional_string(object, "input")?;
        let query = match (instruction, input) {
            (Some(i), Some(x)) if !i.is_empty() && !x.is_empty() => format!("{i}\n{x}"),
            (Some(i), Some(x)) => if i.is_empty() { x } else { i }.to_string(),
            (Some(only), None) | (None, Some(only)) => only.to_string(),
            (None, None) => return Err("alpaca row: `instruction` and `input` are both null".into()),
        };
        let output = optional_string(object, "output")?;
        if output.is_none() && !prompt_only {
            return Err("alpaca row without `output`: no assistant turn".into());
        }
        (RowFormat::Alpaca, pairs_to_messages(object, system, &query, output)?)
    } else if let Some(query_key) = one_of(object, &["query", "prompt", "question"])? {
        let response_key = one_of(object, &["response", "completion", "answer"])?;
        if response_key.is_none() && !prompt_only {
            return Err(format!("`{query_key}` without `response`: no assistant turn"));
        }
        let query = optional_string(object, query_key)?.ok_or(format!("`{query_key}` is null"))?;
        let response = match response_key {
            Some(key) => Some(optional_string(object, key)?.ok_or(format!("`{key}` is null: no assistant turn"))?),
            None => None,
        };
        (RowFormat::QueryResponse, pairs_to_messages(object, system, query, response)?)
    } else if object.contains_key("response") {
        return Err("`response` without `query`".into());
    } else {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown row format (keys: {}); expected `messages`, `conversations` (ShareGPT), \
             `instruction`/`input`/`output` (Alpaca) or `query`/`response`",
            if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
        ));
    };
    Ok(NormalizedRow { messages: Value::Array(messages), tools, format })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field; null and absent are `None`.
fn optional_string<'a>(object: &'a Map<String, Value>, key: &str) -> std::result::Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{key}` must be a string, got {}", kind(other))),
    }
}

/// The one key of `keys` that the row has; an error when it has several (they would
/// compete for the same role, so ms-swift maps none of them either).
fn one_of<'k>(object: &Map<String, Value>, keys: &[&'k str]) -> std::result::Result<Option<&'k str>, String> {
    let present: Vec<&str> = keys.iter().copied().filter(|k| object.contains_key(*k)).collect();
    match present.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => {
            Err(format!("ambiguous row: it has {} (keep one)", many.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")))
        }
    }
}

fn tools_field(object: &Map<String, Value>) -> std::result::Result<Option<Value>, String> {
    match object.get("tools") {
        None | Some(Value::Null) => Ok(None),
        Some(tools @ Value::Array(_)) => Ok(Some(tools.clone())),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(tools @ Value::Array(_)) => Ok(Some(tools)),
            Ok(other) => Err(format!("`tools` must be an array of tool definitions, got a string holding {}", kind(&other))),
            Err(e) => Err(format!("`tools` is a string but not JSON: {e}")),
        },
        Some(other) => Err(format!("`tools` must be an array of tool definitions, got {}", kind(other))),
    }
}

/// The conversation array under `messages`, `conversations` or `conversation`.
fn messages_field(object: &Map<String, Value>) -> std::result::Result<Option<(&'static str, &Vec<Value>)>, String> {
    let Some(key) = one_of(object, &["messages", "conversations", "conversation"])? else {
        return Ok(None);
    };
    match &object[key] {
        Value::Array(list) => Ok(Some((key, list))),
        other => Err(format!("`{key}` must be an array of messages, got {}", kind(other))),
    }
}

enum Role {
    System,
    User,
    Assistant,
    Tool,
    ToolCall,
}

fn map_role(role: &str) -> Option<Role> {
    Some(match role {
        "system" => Role::System,
        "user" | "human" => Role::User,
        "assistant" | "gpt" | "bot" => Role::Assistant,
        "tool" | "tool_response" | "function_response" | "function" | "observation" | "observations" => Role::Tool,
        "tool_call" | "function_call" => Role::ToolCall,
        _ => return None,
    })
}

/// Normalise a conversation (`role`/`content` or `from`/`value` messages).
fn normalize_messages(list: &[Value], system: Option<&str>, prompt_only: bool) -> std::result::Result<Vec<Value>, String> {
    if list.is_empty() {
        return Err("empty conversation".into());
    }
    let mut out: Vec<Value> = Vec::with_capacity(list.len() + 1);
    // Index in `out` of the assistant message that a following tool call joins.
    let mut open_assistant: Option<usize> = None;
    for (i, message) in list.iter().enumerate() {
        let at = |m: String| format!("message {i}: {m}");
        let Value::Object(fields) = message else {
            return Err(at(format!("expected an object, got {}", kind(message))));
        };
        let role_key = if fields.contains_key("role") { "role" } else { "from" };
        let content_key = if fields.contains_key("content") || !fields.contains_key("value") { "content" } else { "value" };
        let role_name = match fields.get(role_key) {
            Some(Value::String(r)) => r.as_str(),
            Some(other) => return Err(at(format!("`{role_key}` must be a string, got {}", kind(other)))),
            None => return Err(at("missing `role` (or ShareGPT `from`)".into())),
        };
        let role = map_role(role_name).ok_or_else(|| {
            at(format!(
                "unknown role `{role_name}` (expected system, user/human, assistant/gpt/bot, tool/function/observation or tool_call/function_call)"
            ))
        })?;
        let content = fields.get(content_key).unwrap_or(&Value::Null);
        let loss = match fields.get("loss") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => return Err(at(format!("`loss` must be true or false, got {}", kind(other)))),
        };

        if let Role::ToolCall = role {
            let call = tool_call_from_content(content).map_err(at)?;
            match open_assistant {
                Some(index) => {
                    let calls = out[index].as_object_mut().expect("assistant message").entry("tool_calls").or_insert_with(|| json!([]));
                    calls.as_array_mut().expect("tool_calls array").push(call);
                }
                None => {
                    let mut m = Map::new();
                    m.insert("role".into(), json!("assistant"));
                    m.insert("content".into(), json!(""));
                    m.insert("tool_calls".into(), json!([call]));
                    if let Some(loss) = loss {
                        m.insert("loss".into(), json!(loss));
                    }
                    out.push(Value::Object(m));
                    open_assistant = Some(out.len() - 1);
                }
            }
            continue;
        }

        let mut m = Map::new();
        let role_str = match role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::ToolCall => unreachable!("handled above"),
        };
        m.insert("role".into(), json!(role_str));
        let tool_calls = match (&role, fields.get("tool_calls")) {
            (_, None | Some(Value::Null)) => None,
            (Role::Assistant, Some(Value::Array(calls))) => {
                Some(calls.iter().map(normalize_openai_tool_call).collect::<std::result::Result<Vec<_>, _>>().map_err(at)?)
            }
            (Role::Assistant, Some(other)) => return Err(at(format!("`tool_calls` must be an array, got {}", kind(other)))),
            (_, Some(_)) => return Err(at(format!("`tool_calls` on a {role_str} message (only assistant messages call tools)"))),
        };
        match content {
            Value::String(s) => {
                m.insert("content".into(), json!(s));
            }
            Value::Null if tool_calls.is_some() => {
                m.insert("content".into(), json!(""));
            }
            Value::Null => return Err(at(format!("missing `{content_key}`"))),
            other => return Err(at(format!("`{content_key}` must be a string, got {}", kind(other)))),
        }
        if let Some(loss) = loss {
            m.insert("loss".into(), json!(loss));
        }
        if let Some(calls) = tool_calls {
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        for key in ["reasoning_content", "name"] {
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(v @ Value::String(_)) => {
                    m.insert(key.into(), v.clone());
                }
                Some(other) => return Err(at(format!("`{key}` must be a string, got {}", kind(other)))),
            }
        }
        out.push(Value::Object(m));
        open_assistant = matches!(role, Role::Assistant).then_some(out.len() - 1);
    }
    let starts_with_system = out.first().and_then(|m| m["role"].as_str()) == Some("system");
    if let (Some(system), false) = (system, starts_with_system) {
        out.insert(0, json!({"role": "system", "content": system}));
    }
    if !prompt_only && !out.iter().any(|m| m["role"] == "assistant") {
        return Err("no assistant turn".into());
    }
    Ok(out)
}

/// A tool-call turn's content: `{"name", "arguments"}` as an object or a JSON string.
fn tool_call_from_content(content: &Value) -> std::result::Result<Value, String> {
    let parsed;
    let call = match content {
        Value::Object(_) => content,
        Value::String(text) => {
            parsed =
                serde_json::from_str::<Value>(text).map_err(|e| format!("a tool call must be JSON `{{\"name\", \"arguments\"}}`: {e}"))?;
            &parsed
        }
        other => return Err(format!("a tool call must be a JSON object or string, got {}", kind(other))),
    };
    let name = call.get("name").and_then(Value::as_str).ok_or("a tool call needs a string `name`")?;
    let arguments = call.get("arguments").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({"type": "function", "function": {"name": name, "arguments": parse_arguments(arguments)}}))
}

/// An OpenAI `tool_calls` entry (`{"type", "function": {"name", "arguments"}}`, or the
/// function object alone), with string arguments parsed.
fn normalize_openai_tool_call(call: &Value) -> std::result::Result<Value, String> {
    let function = call.get("function").unwrap_or(call);
    let name = function.get("name").and_then(Value::as_str).ok_or("a `tool_calls` entry needs a string `function.name`")?;
    let arguments = function.get("arguments").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({"type": "function", "function": {"name": name, "arguments": parse_arguments(arguments)}}))
}

fn parse_arguments(arguments: Value) -> Value {
    match &arguments {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => arguments,
        },
        _ => arguments,
    }
}

/// `history` pairs, then the final `(query, response)` pair, as messages (ms-swift's
/// `history_to_messages`).
fn pairs_to_messages(
    object: &Map<String, Value>,
    system: Option<&str>,
    query: &str,
    response: Option<&str>,
) -> std::result::Result<Vec<Value>, String> {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    match object.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pairs)) => {
            for (i, pair) in pairs.iter().enumerate() {
                let (q, r) = match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(q), Value::String(r)]) => (q, r),
                    _ => return Err(format!("`history[{i}]` must be a [query, response] pair of strings")),
                };
                messages.push(json!({"role": "user", "content": q}));
                messages.push(json!({"role": "assistant", "content": r}));
            }
        }
        Some(other) => return Err(format!("`history` must be an array of [query, response] pairs, got {}", kind(other))),
    }
    messages.push(json!({"role": "user", "content": query}));
    if let Some(response) = response {
        messages.push(json!({"role": "assistant", "content": response}));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(row: Value) -> NormalizedRow {
        normalize(&row, false).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(row: Value) -> String {
        normalize(&row, false).unwrap_err()
    }

    #[test]
    fn messages_keep_roles_content_loss_and_tools() {
        let row = ok(json!({
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "q", "extra": 1},
                {"role": "assistant", "content": "a", "loss": false},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2", "reasoning_content": "hmm"},
            ],
            "tools": "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]",
            "id": 7,
        }));
        assert_eq!(row.format, RowFormat::Messages);
        assert_eq!(
            row.messages,
            json!([
                {"role": "system", "content": "S"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "loss": false},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2", "reasoning_content": "hmm"},
            ])
        );
        assert_eq!(row.tools, Some(json!([{"type": "function", "function": {"name": "f"}}])));
    }

    #[test]
    fn sharegpt_maps_roles_and_system() {
        let row = ok(json!({
            "conversations": [
                {"from": "human", "value": "What's the weather?"},
                {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}"},
                {"from": "observation", "value": "sunny"},
                {"from": "gpt", "value": "Sunny."},
            ],
            "system": "Be brief.",
        }));
        assert_eq!(row.format, RowFormat::ShareGpt);
        assert_eq!(
            row.messages,
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What's the weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
                ]},
                {"role": "tool", "content": "sunny"},
                {"role": "assistant", "content": "Sunny."},
            ])
        );
    }

    #[test]
    fn consecutive_tool_calls_join_the_assistant_turn() {
        let row = ok(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Checking."},
            {"role": "tool_call", "content": {"name": "a", "arguments": {}}},
            {"role": "tool_call", "content": "{\"name\": \"b\"}"},
            {"role": "tool_response", "content": "1"},
            {"role": "assistant", "content": "done"},
        ]}));
        let m = row.messages.as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1]["content"], "Checking.");
        assert_eq!(m[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[1]["tool_calls"][1]["function"]["name"], "b");
        assert_eq!(m[2]["role"], "tool");
    }

    #[test]
    fn alpaca_joins_instruction_and_input_as_ms_swift() {
        let both = ok(json!({"instruction": "Translate.", "input": "bonjour", "output": "hello"}));
        assert_eq!(both.format, RowFormat::Alpaca);
        assert_eq!(both.messages[0], json!({"role": "user", "content": "Translate.\nbonjour"}));
        let no_input = ok(json!({"instruction": "Say hi.", "input": "", "output": "hi"}));
        assert_eq!(no_input.messages[0]["content"], "Say hi.");
        let only_input = ok(json!({"input": "2+2?", "output": "4"}));
        assert_eq!(only_input.messages[0]["content"], "2+2?");
    }

    #[test]
    fn query_response_aliases() {
        let row = ok(json!({"prompt": "p", "completion": "c"}));
        assert_eq!(row.format, RowFormat::QueryResponse);
        assert_eq!(row.messages, json!([{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]));
        assert!(err(json!({"query": "q", "prompt": "p", "response": "r"})).contains("ambiguous"));
    }

    #[test]
    fn malformed_rows_say_why() {
        assert_eq!(err(json!([1])), "expected a JSON object, got an array");
        assert!(err(json!({"text": "x"})).starts_with("unknown row format (keys: text)"));
        assert_eq!(err(json!({"messages": []})), "`messages`: empty conversation");
        assert_eq!(err(json!({"messages": [{"role": "user", "content": "q"}]})), "`messages`: no assistant turn");
        assert_eq!(
            err(json!({"messages": [{"role": "user", "content": 3}]})),
            "`messages`: message 0: `content` must be a string, got a number"
        );
        assert!(err(json!({"messages": [{"role": "wizard", "content": "q"}]})).contains("unknown role `wizard`"));
        assert_eq!(
            err(json!({"messages": [{"role": "assistant", "content": "a", "loss": 1}]})),
            "`messages`: message 0: `loss` must be true or false, got a number"
        );
        assert_eq!(err(json!({"messages": "hi"})), "`messages` must be an array of messages, got a string");
        assert_eq!(err(json!({"query": "q"})), "`query` without `response`: no assistant turn");
        assert_eq!(
            err(json!({"query": "q", "response": "r", "history": [["a"]]})),
            "`history[0]` must be a [query, response] pair of strings"
        );
        assert_eq!(err(json!({"instruction": "i", "input": ""})), "alpaca row without `output`: no assistant turn");
        assert_eq!(err(json!({"instruction": "i", "output": 5})), "`output` must be a string, got a number");
        assert_eq!(err(json!({"query": "q", "response": "r", "system": ["s"]})), "`system` must be a string, got an array");
        assert!(err(json!({"query": "q", "response": "r", "tools": "{oops"})).starts_with("`tools` is a string but not JSON"));
    }

    #[test]
    fn normalize_row_names_the_row() {
        let e = normalize_row(&json!({}), Path::new("d.jsonl"), RowLocation::Line(4)).unwrap_err();
        assert!(e.to_string().starts_with("d.jsonl:4: unknown row format"), "{e}");
    }
}
