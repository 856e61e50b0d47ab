//! `tokenizer.json` bytes (plain or gzip) loaded as a Qwen tokenizer, then a text with
//! special tokens and multi-byte characters encoded, decoded and stream-decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_data::QwenTokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(tokenizer) = QwenTokenizer::from_bytes(data) else { return };
    let text = "Hi <|im_start|>user\nhéllo 世界 123\n\n<|im_end|>";
    let Ok(ids) = tokenizer.encode(text) else { return };
    let _ = tokenizer.decode(&ids, true);
    let _ = tokenizer.decode(&[0, 1, 2, u32::MAX], false);
    let mut stream = tokenizer.stream_decoder(false);
    for id in ids {
        let _ = stream.push(id);
    }
    let _ = stream.finish();
});
