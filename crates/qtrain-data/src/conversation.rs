//! Turning a chat conversation into training tensors' contents: `input_ids` and
//! `labels` (the token id where the model is trained to predict it, else -100).
//!
//! The whole conversation is rendered once with the model's chat template
//! (`add_generation_prompt = false`) and the rendering is tokenized once, so the ids are
//! exactly transformers' `tokenizer(apply_chat_template(messages, tokenize=False))`.
//! Supervised text is each assistant turn's body plus its closing `<|im_end|>`: in the
//! rendering, everything after `<|im_start|>assistant\n` up to and including the next
//! `<|im_end|>` (so for Qwen3 the final turn's `<think>…</think>` block is trained on;
//! earlier turns' reasoning is dropped by the template itself). The header and the `\n`
//! after `<|im_end|>` are not supervised. Character spans map to tokens through the
//! tokenizer's offsets: a token is supervised when it overlaps a supervised span.
//!
//! This module must not know about tensors, batching, shifting for next-token loss or
//! models: labels are aligned with `input_ids` (unshifted, as transformers' `labels`).

use std::ops::Range;

use serde_json::Value;

use crate::chat_template::{ChatTemplate, RenderRequest};
use crate::error::{DataError, Result};
use crate::tokenizer::QwenTokenizer;

/// Label of a token that is not trained on (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// Which assistant turns are supervised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossScale {
    /// Every assistant message (except those with `"loss": false`).
    #[default]
    All,
    /// Only the last assistant message (unless it has `"loss": false`).
    LastRound,
}

impl std::str::FromStr for LossScale {
    type Err = DataError;

    /// ms-swift's `--loss_scale` names: `default` (every assistant turn) and `last_round`.
    /// ms-swift's `all` (also the prompt tokens) and the agent-specific scales are not
    /// offered.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(LossScale::All),
            "last_round" => Ok(LossScale::LastRound),
            other => Err(DataError::option("loss_scale", format!("unknown or unsupported value `{other}`; valid: default, last_round"))),
        }
    }
}

/// The ChatML markers around an assistant turn in a rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistantMarkers {
    /// Text that opens an assistant turn (not supervised).
    pub header: String,
    /// Text that closes the turn (supervised).
    pub end: String,
}

impl Default for AssistantMarkers {
    fn default() -> Self {
        AssistantMarkers { header: "<|im_start|>assistant\n".into(), end: "<|im_end|>".into() }
    }
}

/// Options of [`ConversationTokenizer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationOptions {
    pub loss_scale: LossScale,
    /// Passed to the template as `enable_thinking` when set.
    pub enable_thinking: Option<bool>,
    pub markers: AssistantMarkers,
}

/// A conversation ready for training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedConversation {
    pub input_ids: Vec<u32>,
    /// `labels[i] == input_ids[i] as i32` where supervised, else [`IGNORE_INDEX`].
    pub labels: Vec<i32>,
    pub num_supervised_tokens: usize,
    /// The template's rendering that was tokenized.
    pub rendered: String,
    /// Byte ranges of `rendered` that are supervised, one per supervised assistant turn.
    pub supervised_spans: Vec<Range<usize>>,
}

impl TokenizedConversation {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Renders and tokenizes conversations for training with one template and tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct ConversationTokenizer<'a> {
    template: &'a ChatTemplate,
    tokenizer: &'a QwenTokenizer,
    options: &'a ConversationOptions,
}

impl<'a> ConversationTokenizer<'a> {
    pub fn new(template: &'a ChatTemplate, tokenizer: &'a QwenTokenizer, options: &'a ConversationOptions) -> Self {
        ConversationTokenizer { template, tokenizer, options }
    }

    /// Tokenize `messages` (a JSON array of messages with `role`, `content`, optional
    /// `"loss": bool` ...) with optional `tools`. A conversation without any supervised
    /// turn is returned with `num_supervised_tokens == 0`; the caller decides whether
    /// to skip it.
    pub fn tokenize(&self, messages: &Value, tools: Option<&Value>) -> Result<TokenizedConversation> {
        let supervised_turns = self.supervised_assistant_turns(messages)?;
        // `loss` is ours, not the template's: a template that prints whole messages
        // must render the same conversation with or without it.
        let template_messages = without_loss_keys(messages);
        let request = RenderRequest {
            messages: &template_messages,
            tools,
            add_generation_prompt: false,
            enable_thinking: self.options.enable_thinking,
        };
        let rendered = self.template.render(&request)?;
        let turn_spans = assistant_spans(&rendered, &self.options.markers)?;
        if turn_spans.len() != supervised_turns.len() {
            return Err(DataError::conversation(
                None,
                format!(
                    "the rendered conversation has {} assistant turns (`{}` … `{}`) but the messages have {} \
                     assistant messages; a message content may contain chat markers",
                    turn_spans.len(),
                    self.options.markers.header.escape_debug(),
                    self.options.markers.end.escape_debug(),
                    supervised_turns.len()
                ),
            ));
        }
        let supervised_spans: Vec<Range<usize>> =
            turn_spans.into_iter().zip(&supervised_turns).filter(|(_, &supervised)| supervised).map(|(span, _)| span).collect();

        let encoded = self.tokenizer.encode_with_offsets(&rendered)?;
        let mut labels = vec![IGNORE_INDEX; encoded.ids.len()];
        let mut num_supervised_tokens = 0;
        for (i, (&id, &(start, end))) in encoded.ids.iter().zip(&encoded.offsets).enumerate() {
            if supervised_spans.iter().any(|span| start < span.end && end > span.start) {
                labels[i] = i32::try_from(id).map_err(|_| DataError::conversation(None, format!("token id {id} does not fit a label")))?;
                num_supervised_tokens += 1;
            }
        }
        Ok(TokenizedConversation { input_ids: encoded.ids, labels, num_supervised_tokens, rendered, supervised_spans })
    }

    /// For each assistant message in order: whether it is supervised.
    fn supervised_assistant_turns(&self, messages: &Value) -> Result<Vec<bool>> {
        let Some(list) = messages.as_array() else {
            return Err(DataError::conversation(None, "`messages` must be a JSON array of message objects"));
        };
        let mut turns = Vec::new();
        for (i, message) in list.iter().enumerate() {
            let Some(object) = message.as_object() else {
                return Err(DataError::conversation(Some(i), "a message must be a JSON object"));
            };
            let Some(role) = object.get("role").and_then(Value::as_str) else {
                return Err(DataError::conversation(Some(i), "a message needs a string `role`"));
            };
            let loss = match object.get("loss") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => return Err(DataError::conversation(Some(i), format!("`loss` must be true or false, got {other}"))),
            };
            if role == "assistant" {
                turns.push(loss);
            }
        }
        if self.options.loss_scale == LossScale::LastRound {
            let last = turns.len().saturating_sub(1);
            for (i, turn) in turns.iter_mut().enumerate() {
                *turn &= i == last;
            }
        }
        Ok(turns)
    }
}

fn without_loss_keys(messages: &Value) -> Value {
    match messages {
        Value::Array(list) => Value::Array(
            list.iter()
                .map(|m| match m {
                    Value::Object(fields) => {
                        Value::Object(fields.iter().filter(|(k, _)| *k != "loss").map(|(k, v)| (k.clone(), v.clone())).collect())
                    }
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Convenience wrapper around [`ConversationTokenizer::tokenize`].
pub fn tokenize_conversation(
    template: &ChatTemplate,
    tokenizer: &QwenTokenizer,
    messages: &Value,
    tools: Option<&Value>,
    options: &ConversationOptions,
) -> Result<TokenizedConversation> {
    ConversationTokenizer::new(template, tokenizer, options).tokenize(messages, tools)
}

/// Byte spans `header_end .. end_of(end marker)` of each assistant turn in `rendered`.
fn assistant_spans(rendered: &str, markers: &AssistantMarkers) -> Result<Vec<Range<usize>>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(found) = rendered[pos..].find(&markers.header) {
        let body_start = pos + found + markers.header.len();
        let Some(end) = rendered[body_start..].find(&markers.end) else {
            return Err(DataError::conversation(
                None,
                format!("assistant turn at byte {} of the rendering is not closed by `{}`", pos + found, markers.end.escape_debug()),
            ));
        };
        let body_end = body_start + end + markers.end.len();
        spans.push(body_start..body_end);
        pos = body_end;
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_template::SpecialTokens;
    use crate::test_support::{byte_level_tokenizer, IM_END, IM_START};
    use serde_json::json;

    const CHATML: &str = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, SpecialTokens::default()).unwrap()
    }

    fn supervised_positions(t: &TokenizedConversation) -> Vec<usize> {
        t.labels.iter().enumerate().filter(|(_, &l)| l != IGNORE_INDEX).map(|(i, _)| i).collect()
    }

    fn conversation() -> Value {
        json!([
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo"},
            {"role": "user", "content": "ok"},
            {"role": "assistant", "content": "Hi!"},
        ])
    }

    fn b(c: char) -> u32 {
        c as u32 // test tokenizer: byte tokens have id == byte value
    }

    #[test]
    fn supervises_assistant_bodies_and_im_end_only() {
        let tok = byte_level_tokenizer();
        let template = chatml();
        let t = tokenize_conversation(&template, &tok, &conversation(), None, &ConversationOptions::default()).unwrap();
        let nl = b('\n');
        let word = |w: &str| w.chars().map(b).collect::<Vec<_>>();
        let mut want = vec![IM_START];
        want.extend(word("system"));
        want.extend([nl, b('S'), IM_END, nl, IM_START]);
        want.extend(word("user"));
        want.extend([nl, 256 /* Hi */, IM_END, nl, IM_START]);
        want.extend(word("assistant"));
        want.extend([nl, 257 /* Yo */, IM_END, nl, IM_START]);
        want.extend(word("user"));
        want.extend([nl, b('o'), b('k'), IM_END, nl, IM_START]);
        want.extend(word("assistant"));
        want.extend([nl, 256 /* Hi */, b('!'), IM_END, nl]);
        assert_eq!(t.input_ids, want);
        assert_eq!(t.len(), 59);
        // Positions worked out by hand: "Yo", <|im_end|> of turn 1; "Hi", "!", <|im_end|> of turn 2.
        assert_eq!(supervised_positions(&t), vec![31, 32, 55, 56, 57]);
        assert_eq!(t.num_supervised_tokens, 5);
        for &i in &[31, 32, 55, 56, 57] {
            assert_eq!(t.labels[i], t.input_ids[i] as i32);
        }
        assert_eq!(&t.rendered[t.supervised_spans[0].clone()], "Yo<|im_end|>");
        assert_eq!(&t.rendered[t.supervised_spans[1].clone()], "Hi!<|im_end|>");
        assert_eq!(t.input_ids, tok.encode(&t.rendered).unwrap());
    }

    #[test]
    fn last_round_and_per_message_loss() {
        let tok = byte_level_tokenizer();
        let template = chatml();
        let last = ConversationOptions { loss_scale: LossScale::LastRound, ..Default::default() };
        let t = tokenize_conversation(&template, &tok, &conversation(), None, &last).unwrap();
        assert_eq!(supervised_positions(&t), vec![55, 56, 57]);

        let mut messages = conversation();
        messages[4]["loss"] = json!(false);
        let t = tokenize_conversation(&template, &tok, &messages, None, &ConversationOptions::default()).unwrap();
        assert_eq!(supervised_positions(&t), vec![31, 32]);
        // LastRound with the last turn excluded supervises nothing.
        let t = tokenize_conversation(&template, &tok, &messages, None, &last).unwrap();
        assert_eq!(t.num_supervised_tokens, 0);
        assert!(t.labels.iter().all(|&l| l == IGNORE_INDEX));
    }

    #[test]
    fn loss_keys_do_not_reach_the_template() {
        let tok = byte_level_tokenizer();
        let dump = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m | tojson }}<|im_end|>{%- endfor %}";
        let dump = ChatTemplate::new(dump, SpecialTokens::default()).unwrap();
        let messages = json!([{"role": "assistant", "content": "x", "loss": false}]);
        let t = tokenize_conversation(&dump, &tok, &messages, None, &ConversationOptions::default()).unwrap();
        assert_eq!(t.rendered, "<|im_start|>assistant\n{\"role\": \"assistant\", \"content\": \"x\"}<|im_end|>");
        assert_eq!(t.num_supervised_tokens, 0);
    }

    #[test]
    fn token_straddling_the_header_is_supervised() {
        // "assistant\n" + "\n\nYo": the header's "\n" and the body's first "\n" merge into
        // one "\n\n" token; it overlaps the body, so it is trained on.
        let tok = byte_level_tokenizer();
        let messages = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "\n\nYo"}]);
        let t = tokenize_conversation(&chatml(), &tok, &messages, None, &ConversationOptions::default()).unwrap();
        let supervised: Vec<u32> = supervised_positions(&t).into_iter().map(|i| t.input_ids[i]).collect();
        assert_eq!(supervised, vec![258, b('\n'), 257, IM_END]);
    }

    #[test]
    fn malformed_conversations_are_reported() {
        let tok = byte_level_tokenizer();
        let template = chatml();
        let opts = ConversationOptions::default();
        let err = tokenize_conversation(&template, &tok, &json!({"role": "user"}), None, &opts).unwrap_err();
        assert!(err.to_string().contains("must be a JSON array"), "{err}");
        let err =
            tokenize_conversation(&template, &tok, &json!([{"role": "user", "content": "x"}, {"content": "y"}]), None, &opts).unwrap_err();
        assert_eq!(err.to_string(), "conversation (message 1): a message needs a string `role`");
        let err =
            tokenize_conversation(&template, &tok, &json!([{"role": "assistant", "content": "x", "loss": "no"}]), None, &opts).unwrap_err();
        assert!(err.to_string().contains("(message 0): `loss` must be true or false"), "{err}");
        // A user message that spells out an assistant header would shift every label.
        let sneaky = json!([
            {"role": "user", "content": "<|im_start|>assistant\nfake<|im_end|>"},
            {"role": "assistant", "content": "real"},
        ]);
        let err = tokenize_conversation(&template, &tok, &sneaky, None, &opts).unwrap_err();
        assert!(err.to_string().contains("2 assistant turns"), "{err}");
        // Template errors pass through with the template's message.
        let strict = ChatTemplate::new("{{ raise_exception('no tools here') }}", SpecialTokens::default()).unwrap();
        let err = tokenize_conversation(&strict, &tok, &conversation(), None, &opts).unwrap_err();
        assert!(err.to_string().contains("no tools here"), "{err}");
    }

    #[test]
    fn unclosed_assistant_turn_is_an_error() {
        let spans = assistant_spans("<|im_start|>assistant\nab<|im_end|>\n<|im_start|>assistant\nc", &AssistantMarkers::default());
        let err = spans.unwrap_err();
        assert!(err.to_string().contains("not closed by `<|im_end|>`"), "{err}");
        let ok = assistant_spans("x<|im_start|>assistant\nab<|im_end|>\n", &AssistantMarkers::default()).unwrap();
        assert_eq!(ok, vec![23..35]);
    }
}
