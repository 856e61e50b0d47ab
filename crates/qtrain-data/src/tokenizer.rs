//! Loading a Hugging Face `tokenizer.json` (plain or gzip) and turning text into token
//! ids and back, the way transformers' fast Qwen tokenizer does; plus [`StreamDecoder`]
//! for printing generated text as it is produced.
//!
//! Encoding never inserts special tokens that are not in the text (no BOS/EOS added),
//! but special tokens written in the text (`<|im_start|>` …) map to their ids, as in
//! transformers. This module must not know about chat templates, models or sampling.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{read_file, DataError, Result};

/// Token ids of a text together with the byte span of the text each token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    pub ids: Vec<u32>,
    /// `offsets[i]` is the byte range `start..end` of the input that token `i` covers.
    /// A token that holds only part of a multi-byte character covers that whole character.
    pub offsets: Vec<(usize, usize)>,
}

/// A Qwen (byte-level BPE) tokenizer loaded from `tokenizer.json`.
#[derive(Clone)]
pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    origin: PathBuf,
}

impl std::fmt::Debug for QwenTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenTokenizer").field("origin", &self.origin).field("vocab_size", &self.vocab_size).finish()
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The largest `tokenizer.json` a gzip file may unpack to (Qwen's is 11 MB), so a small
/// gzip bomb cannot fill memory.
const MAX_TOKENIZER_JSON_BYTES: u64 = 1 << 30;

impl QwenTokenizer {
    /// Load `tokenizer.json`, or a gzip-compressed `tokenizer.json.gz` (detected by its
    /// gzip header, whatever the file name).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::from_bytes_named(&bytes, path)
    }

    /// Parse the contents of a `tokenizer.json` (plain or gzip-compressed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_named(bytes, Path::new("<tokenizer bytes>"))
    }

    fn from_bytes_named(bytes: &[u8], origin: &Path) -> Result<Self> {
        let load_error = |message: String| DataError::TokenizerLoad { path: origin.to_path_buf(), message };
        let json: std::borrow::Cow<'_, [u8]> = if bytes.starts_with(&GZIP_MAGIC) {
            let mut out = Vec::new();
            let mut unzipped = flate2::read::GzDecoder::new(bytes).take(MAX_TOKENIZER_JSON_BYTES + 1);
            unzipped.read_to_end(&mut out).map_err(|e| DataError::io(origin, e))?;
            if out.len() as u64 > MAX_TOKENIZER_JSON_BYTES {
                return Err(load_error(format!("it unpacks to more than {MAX_TOKENIZER_JSON_BYTES} bytes")));
            }
            out.into()
        } else {
            bytes.into()
        };
        // JSON syntax first: `tokenizers` panics on some syntax errors (a trailing comma in
        // `decoder` hits an `expect("Helper")`), and serde_json names the line and column.
        serde_json::from_slice::<serde::de::IgnoredAny>(&json).map_err(|e| load_error(format!("not valid JSON: {e}")))?;
        let parsed = crate::third_party::catch_panic(|| tokenizers::Tokenizer::from_bytes(&json))
            .map_err(|panic| load_error(format!("the tokenizers library rejected it: {panic}")))?;
        let mut inner = parsed.map_err(|e| load_error(e.to_string()))?;
        // transformers' apply_chat_template / training tokenization never truncate or pad
        // unless asked to; a tokenizer.json that configures either must not change ids.
        inner.with_truncation(None).map_err(|e| load_error(e.to_string()))?;
        inner.with_padding(None);
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self { inner, vocab_size, origin: origin.to_path_buf() })
    }

    /// The file this tokenizer was loaded from (or a placeholder for in-memory bytes).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    fn tokenizer_error(&self, operation: &'static str, e: tokenizers::Error) -> DataError {
        DataError::Tokenizer { path: self.origin.clone(), operation, message: e.to_string() }
    }

    /// Token ids of `text`. No special token is added; special tokens spelled out in
    /// the text (e.g. `<|im_end|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text)?.ids)
    }

    /// Like [`encode`](Self::encode), also returning each token's byte span in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<EncodedText> {
        let encoding = self.inner.encode(text, false).map_err(|e| self.tokenizer_error("encode", e))?;
        Ok(EncodedText { ids: encoding.get_ids().to_vec(), offsets: encoding.get_offsets().to_vec() })
    }

    /// Text of `ids`. With `skip_special_tokens`, tokens marked special in
    /// `tokenizer.json` (`<|im_end|>`, `<|endoftext|>` …) are left out; Qwen3's
    /// `<think>`/`</think>` are not special and always appear.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.tokenizer_error("decode", e))
    }

    /// Decode ids that may stop inside a character (a reply cut at `max_new_tokens`: byte-level
    /// BPE splits a multi-byte character over several tokens): the incomplete character at the
    /// end, which decodes to U+FFFD, is left out rather than shown as `�`.
    pub fn decode_prefix(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self.decode(ids, skip_special_tokens)?;
        Ok(text.trim_end_matches('\u{FFFD}').to_string())
    }

    /// Id of a token given in its vocabulary spelling (added tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary spelling of a token id (byte-level alphabet for BPE tokens).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of tokens, added tokens included (151665 for Qwen2.5, 151669 for Qwen3).
    /// The model's embedding table is usually larger (padded).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether `id` is an added token marked `special` (skipped by `decode(.., true)`).
    pub fn is_special_token(&self, id: u32) -> bool {
        self.inner.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special)
    }

    /// An incremental decoder for printing generated tokens as they arrive.
    pub fn stream_decoder(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder { tokenizer: self, ids: Vec::new(), prefix_offset: 0, read_offset: 0, skip_special_tokens }
    }

    /// The wrapped `tokenizers` tokenizer, for what this type does not expose.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Incremental detokenizer: feed generated ids one at a time with [`push`](Self::push)
/// and print what it returns. Text is only emitted once it is made of complete
/// characters: a UTF-8 character whose bytes are split across several byte-level tokens
/// is held back until its last byte arrives. Concatenating every `push` result and the
/// final [`finish`](Self::finish) gives exactly `decode(all_ids)`.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a QwenTokenizer,
    /// Ids from `prefix_offset` on; earlier ids have been dropped.
    ids: Vec<u32>,
    /// `ids[..prefix_offset]` is context only; `ids[prefix_offset..read_offset]` has been
    /// emitted; `ids[read_offset..]` is pending.
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl StreamDecoder<'_> {
    /// Add one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix_text = self.tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special_tokens)?;
        let new_text = self.tokenizer.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        // An incomplete UTF-8 sequence at the end decodes to U+FFFD: wait for more bytes.
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let emitted = match new_text.strip_prefix(prefix_text.as_str()) {
            Some(rest) => rest.to_string(),
            // Decoders that rewrite earlier text (not byte-level BPE): emit from the
            // first character boundary at or after the old length.
            None => {
                let mut cut = prefix_text.len();
                while !new_text.is_char_boundary(cut) {
                    cut += 1;
                }
                new_text[cut..].to_string()
            }
        };
        // The emitted window becomes the context of the next step; drop older ids.
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(emitted)
    }

    /// Text still held back (an incomplete character at the end of generation),
    /// decoded leniently (invalid bytes become U+FFFD). Resets the decoder.
    pub fn finish(&mut self) -> Result<String> {
        let prefix_text = self.tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special_tokens)?;
        let full = self.tokenizer.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        let rest = full.strip_prefix(prefix_text.as_str()).unwrap_or("").to_string();
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::byte_level_tokenizer;

    #[test]
    fn special_tokens_in_text_map_to_ids_and_nothing_is_added() {
        let tok = byte_level_tokenizer();
        let im_start = tok.token_to_id("<|im_start|>").unwrap();
        let im_end = tok.token_to_id("<|im_end|>").unwrap();
        let ids = tok.encode("<|im_start|>ab<|im_end|>").unwrap();
        let a = tok.token_to_id("a").unwrap();
        let b = tok.token_to_id("b").unwrap();
        assert_eq!(ids, vec![im_start, a, b, im_end]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>ab<|im_end|>");
        assert_eq!(tok.decode(&ids, true).unwrap(), "ab");
        assert!(tok.is_special_token(im_end));
        assert!(!tok.is_special_token(a));
    }

    #[test]
    fn offsets_are_byte_spans_of_the_input() {
        let tok = byte_level_tokenizer();
        let text = "é<|im_end|>x";
        let enc = tok.encode_with_offsets(text).unwrap();
        // 'é' is two bytes, hence two byte tokens, both covering the whole character.
        assert_eq!(enc.ids.len(), 4);
        assert_eq!(enc.offsets, vec![(0, 2), (0, 2), (2, 12), (12, 13)]);
    }

    #[test]
    fn vocab_size_counts_added_tokens() {
        let tok = byte_level_tokenizer();
        // 256 byte tokens + the merges of the test tokenizer + 4 added tokens.
        assert_eq!(tok.vocab_size(), crate::test_support::BYTE_LEVEL_VOCAB_SIZE);
        assert_eq!(tok.id_to_token(tok.token_to_id("<|endoftext|>").unwrap()).as_deref(), Some("<|endoftext|>"));
    }

    #[test]
    fn gzip_and_plain_bytes_load_the_same_tokenizer() {
        use std::io::Write;
        let json = crate::test_support::byte_level_tokenizer_json();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json.gz");
        std::fs::write(&path, &gz).unwrap();
        let a = QwenTokenizer::from_file(&path).unwrap();
        let b = QwenTokenizer::from_bytes(json.as_bytes()).unwrap();
        let text = "héllo <|im_start|>wörld\n\n";
        assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap());
        assert_eq!(a.origin(), path.as_path());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tokenizer.json");
        let err = QwenTokenizer::from_file(&missing).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"model\": 3}").unwrap();
        let err = QwenTokenizer::from_file(&bad).unwrap_err();
        assert!(matches!(err, DataError::TokenizerLoad { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("{}: cannot load tokenizer", bad.display())), "{err}");

        // Issue 16 B: one trailing comma inside `decoder` panicked inside tokenizers.
        let json = crate::test_support::byte_level_tokenizer_json();
        let decoder = json.find("\"decoder\":{").expect("a decoder section");
        let close = decoder + json[decoder..].find('}').unwrap();
        let broken = format!("{},{}", &json[..close], &json[close..]);
        assert!(crate::third_party::catch_panic(|| tokenizers::Tokenizer::from_bytes(&broken)).is_err(), "tokenizers no longer panics");
        std::fs::write(&bad, broken).unwrap();
        let err = QwenTokenizer::from_file(&bad).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: cannot load tokenizer", bad.display())), "{err}");
        assert!(err.to_string().contains("not valid JSON") && err.to_string().contains("line"), "{err}");

        let truncated_gz = dir.path().join("t.json.gz");
        std::fs::write(&truncated_gz, [0x1f, 0x8b, 0x08, 0x00]).unwrap();
        let err = QwenTokenizer::from_file(&truncated_gz).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    }

    fn stream_all(tok: &QwenTokenizer, ids: &[u32], skip: bool) -> Vec<String> {
        let mut dec = tok.stream_decoder(skip);
        let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
        chunks.push(dec.finish().unwrap());
        chunks
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let tok = byte_level_tokenizer();
        let text = "a😀b中<|im_end|>";
        let ids = tok.encode(text).unwrap();
        // a, 4 bytes of 😀, b, 3 bytes of 中, <|im_end|>
        assert_eq!(ids.len(), 10);
        let chunks = stream_all(&tok, &ids, false);
        assert_eq!(chunks, vec!["a", "", "", "", "😀", "b", "", "", "中", "<|im_end|>", ""]);
        assert_eq!(chunks.concat(), tok.decode(&ids, false).unwrap());
        let skipped = stream_all(&tok, &ids, true);
        assert_eq!(skipped.concat(), "a😀b中");
    }

    #[test]
    fn stream_decoder_finish_flushes_an_incomplete_character() {
        let tok = byte_level_tokenizer();
        let ids = tok.encode("x中").unwrap();
        let mut dec = tok.stream_decoder(false);
        assert_eq!(dec.push(ids[0]).unwrap(), "x");
        assert_eq!(dec.push(ids[1]).unwrap(), "");
        assert_eq!(dec.finish().unwrap(), "\u{FFFD}");
        // After finish the decoder starts afresh.
        assert_eq!(dec.push(ids[0]).unwrap(), "x");
    }

    #[test]
    fn decode_prefix_leaves_out_a_character_cut_by_the_token_limit() {
        let tok = byte_level_tokenizer();
        let ids = tok.encode("ab中").unwrap();
        // a, b, then the three bytes of 中: stop after the first of them.
        assert_eq!(tok.decode(&ids[..3], false).unwrap(), "ab\u{FFFD}");
        assert_eq!(tok.decode_prefix(&ids[..3], false).unwrap(), "ab");
        assert_eq!(tok.decode_prefix(&ids, false).unwrap(), "ab中");
    }
}
