//! A chat template and the messages it renders (split at the first NUL byte), compiled and
//! rendered as `apply_chat_template` would; rendering must end (fuel) and stay bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_data::{ChatTemplate, RenderRequest, SpecialTokens};
use qtrain_fuzz::{check_error, split_parts};

fuzz_target!(|data: &[u8]| {
    let parts = split_parts(data, 2);
    let (Ok(source), Ok(messages)) = (std::str::from_utf8(parts[0]), std::str::from_utf8(parts[1])) else { return };
    let special = SpecialTokens { eos_token: Some("<|im_end|>".into()), ..SpecialTokens::default() };
    let Ok(template) = ChatTemplate::new(source, special) else { return };
    let messages: serde_json::Value =
        serde_json::from_str(messages).unwrap_or_else(|_| serde_json::json!([{"role": "user", "content": "hi"}]));
    for add_generation_prompt in [false, true] {
        let request = RenderRequest { add_generation_prompt, enable_thinking: Some(false), ..RenderRequest::new(&messages) };
        check_error(template.render(&request));
    }
});
