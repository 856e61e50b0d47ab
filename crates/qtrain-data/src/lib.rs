//! qtrain-data: everything between text and token ids for Qwen2/Qwen2.5/Qwen3 models.
//!
//! * [`tokenizer`] loads `tokenizer.json` (or `.json.gz`), encodes, decodes, stream-decodes.
//! * [`tokenizer_config`] reads `tokenizer_config.json` and `chat_template.jinja`.
//! * [`chat_template`] renders chat templates exactly as transformers does (with its private
//!   `python` module: Python semantics the templates rely on).
//! * [`calendar`] turns day counts into UTC dates (templates' `strftime_now`, run-folder names).
//! * [`generation_config`] reads `generation_config.json`.
//! * [`conversation`] turns conversations into `input_ids` + `labels` for training.
//! * [`row_format`] recognises dataset row formats (messages, ShareGPT, Alpaca,
//!   query/response) and normalises them to `messages`.
//! * [`loader`] loads `swift sft`-style dataset specs (`FILE`, `FILE#N`, `self-cognition`),
//!   skips or reports malformed rows, splits train/validation, applies `--system`.
//! * [`self_cognition`] is the bundled zh+en self-cognition dataset and its held-out questions.
//! * [`text`] loads raw-text datasets for pretraining (`{"text"}` rows, assistant-only
//!   `messages`, `.txt` lines), appends the eos token, splits long documents into blocks.
//! * [`truncation`] applies `max_length` with `truncation_strategy` delete/left/right.
//! * [`packing`] packs tokenized samples into rows with segment and position ids, and
//!   computes segment-respecting next-token targets.
//! * [`assets`] loads all of the above from one model folder.
//!
//! This crate must not know about models, tensors, backends or command-line flags.

pub mod assets;
pub mod calendar;
pub mod chat_template;
pub mod conversation;
pub mod error;
pub mod generation_config;
pub mod loader;
pub mod packing;
mod rng;
pub mod row_format;
pub mod self_cognition;
pub mod text;
mod third_party;
pub mod tokenizer;
pub mod tokenizer_config;
pub mod truncation;

#[cfg(test)]
mod test_support;

pub use assets::{ModelTextAssets, TOKENIZER_FILE};
pub use chat_template::{BudgetedAllocator, ChatTemplate, RenderRequest, SpecialTokens};
pub use conversation::{
    tokenize_conversation, AssistantMarkers, ConversationOptions, ConversationTokenizer, LossScale, TokenizedConversation, IGNORE_INDEX,
};
pub use error::{DataError, Result, RowLocation};
pub use generation_config::{GenerationConfig, GENERATION_CONFIG_FILE};
pub use loader::{
    apply_default_system, load_dataset, load_datasets, parse_dataset_text, read_dataset_file, split_dataset, DatasetOptions, DatasetRow,
    DatasetSource, DatasetSpec, LoadedDataset, RowOrigin, SkippedRow, MAX_REPORTED_SKIPS,
};
pub use packing::{build_packed_row, next_token_targets, pack_samples, plan_packing, PackedRow, PackingStrategy, TokenSequence};
pub use row_format::{normalize_row, NormalizedRow, RowFormat};
pub use self_cognition::{
    self_cognition_accuracy, Bilingual, Lang, SelfCognition, SelfCognitionQuestion, SelfCognitionRow, SelfCognitionScore,
    SelfCognitionSubset,
};
pub use text::{block_labels, load_text_dataset, row_text, split_blocks, TextTokenizer};
pub use tokenizer::{EncodedText, QwenTokenizer, StreamDecoder};
pub use tokenizer_config::{AddedTokenConfig, TokenizerConfig, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
pub use truncation::{truncate_tokens, TruncationOutcome, TruncationReport, TruncationStrategy};
