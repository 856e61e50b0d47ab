//! qtrain-data: everything between text and token ids for Qwen2/Qwen2.5/Qwen3 models.
//!
//! * [`tokenizer`] loads `tokenizer.json` (or `.json.gz`), encodes, decodes, stream-decodes.
//! * [`tokenizer_config`] reads `tokenizer_config.json` and `chat_template.jinja`.
//! * [`chat_template`] renders chat templates exactly as transformers does.
//! * [`generation_config`] reads `generation_config.json`.
//! * [`conversation`] turns conversations into `input_ids` + `labels` for training.
//! * [`dataset`] reads JSONL files of conversations.
//! * [`assets`] loads all of the above from one model folder.
//!
//! This crate must not know about models, tensors, backends or command-line flags.

pub mod assets;
pub mod chat_template;
pub mod conversation;
pub mod dataset;
pub mod error;
pub mod generation_config;
mod python;
pub mod tokenizer;
pub mod tokenizer_config;

#[cfg(test)]
mod test_support;

pub use assets::{ModelTextAssets, TOKENIZER_FILE};
pub use chat_template::{ChatTemplate, RenderRequest, SpecialTokens};
pub use conversation::{
    tokenize_conversation, AssistantMarkers, ConversationOptions, ConversationTokenizer, LossScale, TokenizedConversation, IGNORE_INDEX,
};
pub use dataset::{parse_conversations_jsonl, read_conversations_jsonl, ConversationRecord};
pub use error::{DataError, Result};
pub use generation_config::{GenerationConfig, GENERATION_CONFIG_FILE};
pub use tokenizer::{EncodedText, QwenTokenizer, StreamDecoder};
pub use tokenizer_config::{AddedTokenConfig, TokenizerConfig, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
