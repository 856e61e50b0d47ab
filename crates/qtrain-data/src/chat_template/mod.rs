//! Rendering a Hugging Face Jinja chat template with minijinja, byte for byte as
//! transformers' `apply_chat_template(..., tokenize=False)` renders it.
//!
//! transformers compiles templates in a Jinja2 `ImmutableSandboxedEnvironment` with
//! `trim_blocks=True, lstrip_blocks=True` and the loop-controls extension, overrides
//! `tojson` (`json.dumps(x, ensure_ascii=False, ...)`: no HTML escaping, `", "`/`": "`
//! separators, key order kept), and adds the globals `raise_exception(msg)` and
//! `strftime_now(fmt)`. This module reproduces that environment, plus Python string
//! methods (`.startswith`, `.split`, `.strip(chars)` ...), Python's printing of
//! `None`/`True`/floats/lists, and the message preparation `apply_chat_template` does
//! before rendering (null fields dropped, reasoning fields aliased).
//!
//! It must not tokenize, know about training, or look for files on its own (only
//! [`ChatTemplate::from_file`] reads the file it is given).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};

use crate::error::{DataError, Result};

/// The heap budget of one render (the binary's global allocator enforces it).
mod memory;
/// Python behaviours the templates rely on (`json.dumps`, `str()`, `strftime`, …).
mod python;

pub use memory::BudgetedAllocator;

/// Special token strings exposed to templates as `bos_token`, `eos_token`, ...
/// (transformers passes its `special_tokens_map`; unset tokens are undefined).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

/// What to render: the arguments of `apply_chat_template`.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    /// A JSON array of `{"role": ..., "content": ..., ...}` objects. As in transformers,
    /// fields set to null are dropped and `reasoning`/`thinking`/`reasoning_content`
    /// are aliased to each other before the template sees them.
    pub messages: &'a serde_json::Value,
    /// Tool definitions (a JSON array); `None` renders with `tools = None`.
    pub tools: Option<&'a serde_json::Value>,
    /// Append the header that starts the assistant's reply.
    pub add_generation_prompt: bool,
    /// Qwen3's switch; the variable is left undefined when `None`.
    pub enable_thinking: Option<bool>,
}

impl<'a> RenderRequest<'a> {
    /// Messages only: no tools, no generation prompt, `enable_thinking` undefined.
    pub fn new(messages: &'a serde_json::Value) -> Self {
        RenderRequest { messages, tools: None, add_generation_prompt: false, enable_thinking: None }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template together with the special tokens it sees.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: String,
    special_tokens: SpecialTokens,
}

impl ChatTemplate {
    /// Compile `source`; errors name the template "chat_template".
    pub fn new(source: &str, special_tokens: SpecialTokens) -> Result<Self> {
        Self::with_origin(source, special_tokens, TEMPLATE_NAME)
    }

    /// Compile `source`, naming it `origin` (typically its file) in errors.
    pub fn with_origin(source: &str, special_tokens: SpecialTokens, origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        let mut env = jinja2_environment();
        // The variant already says "syntax error"; the message is minijinja's detail.
        env.add_template_owned(TEMPLATE_NAME, translate_generation_tags(source)).map_err(|e| DataError::TemplateSyntax {
            origin: origin.clone(),
            line: e.line(),
            message: match (e.kind(), e.detail()) {
                (ErrorKind::SyntaxError, Some(detail)) => detail.to_string(),
                _ => error_message(&e),
            },
        })?;
        Ok(ChatTemplate { env, source: source.to_string(), origin, special_tokens })
    }

    /// Read a template file (e.g. `chat_template.jinja`), naming it in errors.
    pub fn from_file(path: impl AsRef<Path>, special_tokens: SpecialTokens) -> Result<Self> {
        let path = path.as_ref();
        let source = crate::error::read_text_file(path)?;
        Self::with_origin(&source, special_tokens, path.display().to_string())
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from, as used in error messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special_tokens
    }

    /// Render as `tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
    /// add_generation_prompt=..., enable_thinking=...)`.
    pub fn render(&self, request: &RenderRequest<'_>) -> Result<String> {
        let render_error = |e: Error| DataError::TemplateRender { origin: self.origin.clone(), line: e.line(), message: error_message(&e) };
        let messages = prepare_messages(request.messages)?;
        let mut ctx = std::collections::BTreeMap::<&str, Value>::new();
        ctx.insert("messages", Value::from_serialize(&messages));
        ctx.insert("tools", request.tools.map_or(Value::from(()), Value::from_serialize));
        ctx.insert("documents", Value::from(()));
        ctx.insert("add_generation_prompt", Value::from(request.add_generation_prompt));
        if let Some(enable_thinking) = request.enable_thinking {
            ctx.insert("enable_thinking", Value::from(enable_thinking));
        }
        let tokens = &self.special_tokens;
        for (name, token) in [
            ("bos_token", &tokens.bos_token),
            ("eos_token", &tokens.eos_token),
            ("pad_token", &tokens.pad_token),
            ("unk_token", &tokens.unk_token),
        ] {
            if let Some(token) = token {
                ctx.insert(name, Value::from(token.as_str()));
            }
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        let mut out = CappedText::default();
        let rendered = memory::with_budget(&self.origin, memory::RENDER_HEAP_BUDGET, || template.render_captured_to(ctx, &mut out));
        match rendered {
            Ok(_) => Ok(String::from_utf8_lossy(&out.text).into_owned()),
            Err(_) if out.overflowed => Err(DataError::TemplateRender {
                origin: self.origin.clone(),
                line: None,
                message: format!("the rendered text is longer than {} bytes", python::MAX_TEMPLATE_TEXT),
            }),
            Err(e) => Err(render_error(e)),
        }
    }
}

/// The message fields transformers treats as the same reasoning text, in priority order.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// What `apply_chat_template` does to messages before rendering: refuse an empty
/// conversation, drop keys whose value is null (`"content": null` becomes absent),
/// and alias reasoning (`_alias_reasoning_fields`): when a message has any of
/// `reasoning_content`/`thinking`/`reasoning`, the first one becomes
/// `{"thinking": r, **message, "reasoning_content": r}`.
fn prepare_messages(messages: &serde_json::Value) -> Result<serde_json::Value> {
    use serde_json::{Map, Value as Json};
    let Json::Array(list) = messages else {
        return Err(DataError::conversation(None, "`messages` must be a JSON array of message objects"));
    };
    if list.is_empty() {
        return Err(DataError::conversation(None, "Cannot apply chat template to an empty conversation. Provide at least one message."));
    }
    let mut prepared = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let Json::Object(fields) = message else {
            return Err(DataError::conversation(Some(i), "a message must be a JSON object"));
        };
        let fields: Map<String, Json> = fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let reasoning = REASONING_FIELDS.iter().find_map(|key| fields.get(*key)).cloned();
        let fields = match reasoning {
            None => fields,
            Some(reasoning) => {
                let mut aliased = Map::new();
                aliased.insert("thinking".to_string(), reasoning.clone());
                for (k, v) in fields {
                    aliased.insert(k, v);
                }
                aliased.insert("reasoning_content".to_string(), reasoning);
                aliased
            }
        };
        prepared.push(Json::Object(fields));
    }
    Ok(Json::Array(prepared))
}

/// How many VM steps (minijinja "fuel") one render may take. Real chat templates take
/// a few hundred per message, so this admits conversations of ~50,000 messages while a
/// template that loops (nearly) forever stops within seconds.
const RENDER_FUEL: u64 = 20_000_000;

/// Render output that refuses to grow past [`python::MAX_TEMPLATE_TEXT`] bytes, so a
/// template emitting huge strings in a loop fails instead of exhausting memory.
#[derive(Default)]
struct CappedText {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > python::MAX_TEMPLATE_TEXT {
            self.overflowed = true;
            return Err(std::io::Error::other("template output too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error text of a minijinja error: its kind and detail, then any causes.
fn error_message(e: &Error) -> String {
    if e.kind() == ErrorKind::OutOfFuel {
        return format!("template took too long: it ran more than {RENDER_FUEL} steps (a loop that never ends?)");
    }
    let mut message = match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// The environment transformers builds, in minijinja terms.
fn jinja2_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_fuel(Some(RENDER_FUEL));
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(python_methods);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", |value: &Value| python::py_str(value));
    env.add_test("sequence", |value: &Value| {
        matches!(value.kind(), ValueKind::String | ValueKind::Bytes | ValueKind::Seq | ValueKind::Map)
    });
    env.add_test("iterable", |value: &Value| {
        matches!(value.kind(), ValueKind::String | ValueKind::Bytes | ValueKind::Seq | ValueKind::Map | ValueKind::Iterable)
    });
    // Python's bool is an int, so Jinja2's `true is number` holds.
    env.add_test("number", |value: &Value| matches!(value.kind(), ValueKind::Number | ValueKind::Bool));
    env.add_function("raise_exception", |message: Value| -> std::result::Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, python::py_str(&message)))
    });
    env.add_function("strftime_now", |format: &str| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        python::strftime_utc(format, now)
    });
    env
}

/// Python str methods: the ones whose contrib versions differ from Python are handled
/// here, the rest by `minijinja_contrib::pycompat`.
fn python_methods(state: &State, value: &Value, method: &str, args: &[Value]) -> std::result::Result<Value, Error> {
    if let Some(s) = value.as_str() {
        if let Some(result) = python::string_method(s, method, args) {
            return result;
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// `{{ value }}` printing as Jinja2 does it: Python `str()`.
fn python_formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> std::result::Result<(), Error> {
    let text = match value.kind() {
        ValueKind::Number if !value.is_integer() => python::py_str(value),
        ValueKind::Seq | ValueKind::Map => python::py_str(value),
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write output"))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, positional or keyword.
fn tojson_filter(value: &Value, args: Rest<Value>) -> std::result::Result<Value, Error> {
    let mut positional: Vec<Value> = args.0;
    let kwargs = match positional.last() {
        Some(last) if last.is_kwargs() => Some(Kwargs::try_from(positional.pop().unwrap_or_default())?),
        _ => None,
    };
    if positional.len() > 4 {
        return Err(Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let mut slots: [Option<Value>; 4] = Default::default();
    for (slot, value) in slots.iter_mut().zip(positional) {
        *slot = Some(value);
    }
    if let Some(kwargs) = &kwargs {
        for (i, name) in ["ensure_ascii", "indent", "separators", "sort_keys"].into_iter().enumerate() {
            if let Some(v) = kwargs.get::<Option<Value>>(name)? {
                slots[i] = Some(v);
            }
        }
        kwargs.assert_all_used()?;
    }
    let opts = python::JsonOptions::from_python_args(slots[0].as_ref(), slots[1].as_ref(), slots[2].as_ref(), slots[3].as_ref())?;
    python::json_dumps(value, &opts).map(Value::from)
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant text for
/// `return_assistant_tokens_mask`; for rendering it is a plain block. minijinja has no
/// custom tags, so it becomes `{% if true %}...{% endif %}` (whitespace control kept).
fn translate_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        // The closing `%}` comes after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|i| i + 2) else {
            break;
        };
        let inner = &tag[2..end];
        let (lead, body) = split_modifier_start(inner);
        let (body, trail) = split_modifier_end(body);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(keyword) => out.push_str(&format!("{{%{lead} {keyword} {trail}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn split_modifier_start(inner: &str) -> (&str, &str) {
    match inner.chars().next() {
        Some(c @ ('-' | '+')) => inner.split_at(c.len_utf8()),
        _ => ("", inner),
    }
}

fn split_modifier_end(inner: &str) -> (&str, &str) {
    match inner.chars().last() {
        Some('-' | '+') => inner.split_at(inner.len() - 1),
        _ => (inner, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one_message() -> serde_json::Value {
        json!([{"role": "user", "content": "hi"}])
    }

    fn render(template: &str, messages: serde_json::Value) -> String {
        render_with(template, &RenderRequest::new(&messages))
    }

    fn render_with(template: &str, request: &RenderRequest<'_>) -> String {
        let special = SpecialTokens { eos_token: Some("<|im_end|>".into()), ..Default::default() };
        ChatTemplate::new(template, special).unwrap().render(request).unwrap()
    }

    #[test]
    fn templates_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
        assert_send_sync::<crate::QwenTokenizer>();
    }

    #[test]
    fn from_file_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat_template.jinja");
        std::fs::write(&path, "{{ messages[0].content }}\n{{ raise_exception('bad') }}").unwrap();
        let template = ChatTemplate::from_file(&path, SpecialTokens::default()).unwrap();
        let err = template.render(&RenderRequest::new(&one_message())).unwrap_err();
        assert_eq!(err.to_string(), format!("chat template {}: render failed at template line 2: bad", path.display()));
        let missing = ChatTemplate::from_file(dir.path().join("nope.jinja"), SpecialTokens::default()).unwrap_err();
        assert!(matches!(missing, DataError::Io { .. }), "{missing:?}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let t = "{% for m in messages %}\n    {% if m.role == 'user' %}\n<{{ m.content }}>\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render(t, json!([{"role": "user", "content": "a"}, {"role": "x"}, {"role": "user", "content": "b"}])), "<a>\n<b>\n");
    }

    #[test]
    fn tojson_is_python_json_dumps_without_html_escaping() {
        let msgs = json!([{"role": "user", "content": "x", "args": {"q": "<a & 'b'>", "n": [1, 2.0], "z": null, "a": "é"}}]);
        let t = "{{ messages[0].args | tojson }}|{{ messages[0].args | tojson(indent=2) }}|{{ messages[0].args.n | tojson(separators=(',', ':')) }}";
        assert_eq!(
            render(t, msgs),
            "{\"q\": \"<a & 'b'>\", \"n\": [1, 2.0], \"z\": null, \"a\": \"é\"}|{\n  \"q\": \"<a & 'b'>\",\n  \"n\": [\n    1,\n    2.0\n  ],\n  \"z\": null,\n  \"a\": \"é\"\n}|[1,2.0]"
        );
        // Positional arguments follow transformers' signature: ensure_ascii first.
        assert_eq!(render("{{ 'é' | tojson(true) }}", one_message()), "\"\\u00e9\"");
        let err = ChatTemplate::new("{{ 1 | tojson(bogus=1) }}", SpecialTokens::default())
            .unwrap()
            .render(&RenderRequest::new(&one_message()))
            .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn qwen3_reasoning_split_expression() {
        let t = "{%- set content = messages[0].content %}{%- if '</think>' in content %}\
                 {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\
                 {%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}\
                 [{{ reasoning }}][{{ content }}][{{ reasoning.strip('\\n') }}]";
        let msgs = json!([{"role": "assistant", "content": "<think>\n\nplan a\nplan b\n\n</think>\n\nanswer\n"}]);
        assert_eq!(render(t, msgs), "[plan a\nplan b][answer\n][plan a\nplan b]");
    }

    #[test]
    fn reverse_slice_loop_index_and_namespace() {
        let t = "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\
                 {%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}\
                 {%- if ns.multi_step_tool and message.role == 'user' and message.content is string and \
                 not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\
                 {%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}\
                 {{ ns.last_query_index }}";
        let msgs = json!([
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "", "tool_calls": []},
            {"role": "user", "content": "<tool_response>r</tool_response>"},
        ]);
        assert_eq!(render(t, msgs), "2");
    }

    #[test]
    fn set_inside_if_is_visible_after_the_if_within_a_loop() {
        // Jinja2 scoping: `if` opens no scope; each loop iteration starts afresh.
        let t = "{%- for m in messages %}{%- set c = '' %}{%- if m.content is string %}{%- set c = m.content %}{%- endif %}[{{ c }}]{%- endfor %}";
        assert_eq!(render(t, json!([{"content": "a"}, {"content": null}, {"content": "b"}])), "[a][][b]");
    }

    #[test]
    fn is_string_tests_on_missing_and_present_fields() {
        let t = "{%- for m in messages %}{{ m.reasoning_content is string }},{{ m.arguments is string }};{%- endfor %}";
        let msgs = json!([{"reasoning_content": "r", "arguments": {"a": 1}}, {"arguments": "{\"a\": 1}"}]);
        assert_eq!(render(t, msgs), "True,False;False,True;");
    }

    #[test]
    fn enable_thinking_is_undefined_unless_given() {
        let t = "{%- if enable_thinking is defined and enable_thinking is false %}off{%- elif enable_thinking is defined %}on{%- else %}unset{%- endif %}";
        let msgs = one_message();
        let mut req = RenderRequest::new(&msgs);
        assert_eq!(render_with(t, &req), "unset");
        req.enable_thinking = Some(false);
        assert_eq!(render_with(t, &req), "off");
        req.enable_thinking = Some(true);
        assert_eq!(render_with(t, &req), "on");
    }

    #[test]
    fn jinja2_tests_follow_python_types() {
        let t = "{{ 'abc' is sequence }}|{{ messages[0] is sequence }}|{{ 'abc' is iterable }}|{{ true is number }}|{{ 1.5 is number }}|{{ 'a' is number }}|{{ messages[0] is mapping }}";
        assert_eq!(render(t, one_message()), "True|True|True|True|True|False|True");
    }

    #[test]
    fn tools_none_and_special_tokens_in_context() {
        let t = "{{ tools is none }}|{{ tools | length if tools else 0 }}|{{ eos_token }}|{{ bos_token is defined }}|{{ add_generation_prompt }}";
        let msgs = one_message();
        assert_eq!(render(t, msgs.clone()), "True|0|<|im_end|>|False|False");
        let tools = json!([{"type": "function"}]);
        let req = RenderRequest { messages: &msgs, tools: Some(&tools), add_generation_prompt: true, enable_thinking: None };
        assert_eq!(render_with(t, &req), "False|1|<|im_end|>|False|True");
    }

    #[test]
    fn python_printing_of_values() {
        let t = "{{ none }}|{{ messages[0].y }}|{{ messages[0].z }}|{{ messages[0].l }}|{{ messages[0].f }}|{{ messages[0].missing }}|{{ messages[0].l | string }}|{{ 7 / 2 }}|{{ 4 / 2 }}";
        let msgs = json!([{"y": true, "z": 1e-5, "l": ["a", 1, null], "f": 2.0}]);
        assert_eq!(render(t, msgs), "None|True|1e-05|['a', 1, None]|2.0||['a', 1, None]|3.5|2.0");
    }

    #[test]
    fn raise_exception_becomes_a_render_error_with_its_message() {
        let t = "line one\n{%- if messages[0].role != 'system' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}";
        let tpl = ChatTemplate::with_origin(t, SpecialTokens::default(), "/m/tokenizer_config.json").unwrap();
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let err = tpl.render(&RenderRequest::new(&msgs)).unwrap_err();
        match &err {
            DataError::TemplateRender { origin, line, message } => {
                assert_eq!(origin, "/m/tokenizer_config.json");
                assert_eq!(*line, Some(2));
                assert_eq!(message, "Conversation roles must alternate user/assistant/user/assistant/...");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_report_origin_and_line() {
        let err = ChatTemplate::with_origin("ok\n{% if x %}\nno end", SpecialTokens::default(), "chat_template.jinja").unwrap_err();
        match &err {
            DataError::TemplateSyntax { origin, line, .. } => {
                assert_eq!(origin, "chat_template.jinja");
                assert!(line.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("chat template chat_template.jinja: syntax error at template line"), "{err}");
    }

    #[test]
    fn generation_tags_render_as_plain_blocks() {
        let t = "{%- for m in messages %}{% generation %}[{{ m.content }}]{%- endgeneration %}\n{% endfor %}";
        assert_eq!(translate_generation_tags(t), "{%- for m in messages %}{% if true %}[{{ m.content }}]{%- endif %}\n{% endfor %}");
        assert_eq!(render(t, json!([{"content": "a"}, {"content": "b"}])), "[a][b]");
    }

    #[test]
    fn strftime_now_and_python_string_methods_are_available() {
        let out = render("{{ strftime_now('%Y') }}|{{ 'a b'.split() }}|{{ 'x'.upper() }}|{{ {'k': 1}.get('k') }}", one_message());
        let (year, rest) = out.split_once('|').unwrap();
        assert!(year.len() == 4 && year.starts_with('2'), "{out}");
        assert_eq!(rest, "['a', 'b']|X|1");
    }

    #[test]
    fn messages_are_prepared_like_apply_chat_template() {
        // Null fields are dropped; reasoning under any of its names is aliased to
        // `thinking` (first) and `reasoning_content`.
        let msgs = json!([
            {"role": "user", "content": null},
            {"role": "assistant", "content": "a", "reasoning": "r"},
            {"role": "assistant", "reasoning_content": "rc", "thinking": "t", "content": "b"},
        ]);
        let t = "{%- for m in messages %}{{ m | tojson }};{%- endfor %}";
        assert_eq!(
            render(t, msgs),
            "{\"role\": \"user\"};\
             {\"thinking\": \"r\", \"role\": \"assistant\", \"content\": \"a\", \"reasoning\": \"r\", \"reasoning_content\": \"r\"};\
             {\"thinking\": \"t\", \"role\": \"assistant\", \"reasoning_content\": \"rc\", \"content\": \"b\"};"
        );
        let template = ChatTemplate::new("x", SpecialTokens::default()).unwrap();
        let err = template.render(&RenderRequest::new(&json!([]))).unwrap_err();
        assert!(err.to_string().contains("empty conversation"), "{err}");
        let err = template.render(&RenderRequest::new(&json!([{"role": "user"}, "text"]))).unwrap_err();
        assert_eq!(err.to_string(), "conversation (message 1): a message must be a JSON object");
    }

    #[test]
    fn key_order_of_messages_is_preserved() {
        let msgs = json!([{"role": "tool", "content": {"zeta": 1, "alpha": 2, "mid": {"b": 1, "a": 2}}}]);
        assert_eq!(render("{{ messages[0].content | tojson }}", msgs), r#"{"zeta": 1, "alpha": 2, "mid": {"b": 1, "a": 2}}"#);
    }

    fn render_error(template: &str) -> String {
        let template = ChatTemplate::with_origin(template, SpecialTokens::default(), "t.jinja").unwrap();
        template.render(&RenderRequest::new(&one_message())).unwrap_err().to_string()
    }

    #[test]
    fn a_tag_whose_brackets_overlap_is_a_syntax_error_not_a_panic() {
        // Issue 16 A: `{%}` once sliced `tag[2..1]`.
        for source in ["{%}", "a {%} b", "{%}{% endgeneration %}", "{%-}", "{%", "%}{%"] {
            let outcome = std::panic::catch_unwind(|| ChatTemplate::with_origin(source, SpecialTokens::default(), "t.jinja"));
            let result = outcome.unwrap_or_else(|_| panic!("{source:?} panicked"));
            if let Err(err) = result {
                assert!(err.to_string().starts_with("chat template t.jinja: syntax error"), "{source:?}: {err}");
            }
        }
        assert_eq!(translate_generation_tags("{%}x{% generation %}"), "{%}x{% generation %}");
    }

    #[test]
    fn a_template_that_loops_forever_runs_out_of_fuel() {
        // Issue 16 F: two nested range(100000) loops used to run for hours.
        let err = render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        assert!(err.starts_with("chat template t.jinja: render failed"), "{err}");
        assert!(err.contains("template took too long"), "{err}");
    }

    #[test]
    fn huge_indents_and_outputs_are_refused_before_allocating() {
        // Issue 16 F: `" ".repeat(100000000000)` aborted the process.
        let err = render_error("{{ messages | tojson(indent=100000000000) }}");
        assert!(err.contains("tojson: indent 100000000000 is wider than 256"), "{err}");
        let err = render_error("{{ messages | tojson(indent='x' * 1000) }}");
        assert!(err.contains("tojson: indent is 1000 bytes, wider than 256"), "{err}");
        let err = render_error("{% for i in range(20) %}{{ 'x' * 10000000 }}{% endfor %}");
        assert!(err.contains("the rendered text is longer than 100000000 bytes"), "{err}");
        assert_eq!(render("{{ messages | tojson(indent=2) }}", one_message()).lines().count(), 6);
    }
}
