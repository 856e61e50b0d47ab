//! Dataset text (JSON array or JSONL, any row format) through parsing, normalisation and
//! tokenization with the tiny Qwen2 fixture's template into input ids and label masks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_data::{parse_dataset_text, ConversationOptions, ConversationTokenizer, DatasetOptions, ModelTextAssets};
use qtrain_fuzz::fixture;
use std::sync::OnceLock;

fn assets() -> &'static ModelTextAssets {
    static ASSETS: OnceLock<ModelTextAssets> = OnceLock::new();
    ASSETS.get_or_init(|| ModelTextAssets::load(fixture("tiny-qwen2")).expect("the tiny fixture loads"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let assets = assets();
    let template = assets.chat_template.as_ref().expect("the tiny fixture has a template");
    for skip_malformed in [false, true] {
        let opts = DatasetOptions { skip_malformed, ..DatasetOptions::default() };
        let Ok(loaded) = parse_dataset_text(text, "fuzz.jsonl", &opts) else { continue };
        let options = ConversationOptions::default();
        let tokenizer = ConversationTokenizer::new(template, &assets.tokenizer, &options);
        for row in &loaded.rows {
            if let Ok(t) = tokenizer.tokenize(&row.messages, row.tools.as_ref()) {
                assert_eq!(t.input_ids.len(), t.labels.len(), "ids and labels differ in length");
            }
        }
    }
});
