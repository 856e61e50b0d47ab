//! Test helpers: a tiny byte-level BPE tokenizer built in code, with the structure of
//! Qwen's `tokenizer.json` (NFC, Qwen2 split regex, byte-level, added special tokens),
//! so unit tests can predict token boundaries by hand.

use serde_json::json;

use crate::tokenizer::QwenTokenizer;

/// The Qwen2 pre-tokenisation regex.
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// 256 byte tokens (id = byte value), 3 merges ("Hi" = 256, "Yo" = 257, "\n\n" = 258),
/// `<|endoftext|>` = 259, `<|im_start|>` = 260, `<|im_end|>` = 261 (special) and
/// `<think>` = 262 (not special).
pub const BYTE_LEVEL_VOCAB_SIZE: usize = 263;
pub const IM_START: u32 = 260;
pub const IM_END: u32 = 261;

/// GPT-2's byte-to-unicode table used by byte-level BPE vocabularies.
pub fn byte_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~')).collect();
    bs.extend(u32::from('¡')..=u32::from('¬'));
    bs.extend(u32::from('®')..=u32::from('ÿ'));
    let mut table = vec!['\0'; 256];
    for &b in &bs {
        table[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
        }
    }
    table
}

pub fn byte_level_tokenizer_json() -> String {
    let table = byte_to_unicode();
    let mut vocab = serde_json::Map::new();
    for (b, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), json!(b));
    }
    vocab.insert("Hi".into(), json!(256));
    vocab.insert("Yo".into(), json!(257));
    vocab.insert("ĊĊ".into(), json!(258));
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            added(259, "<|endoftext|>", true),
            added(260, "<|im_start|>", true),
            added(261, "<|im_end|>", true),
            added(262, "<think>", false),
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": ["H i", "Y o", "Ċ Ċ"]},
    })
    .to_string()
}

pub fn byte_level_tokenizer() -> QwenTokenizer {
    QwenTokenizer::from_bytes(byte_level_tokenizer_json().as_bytes()).unwrap()
}
