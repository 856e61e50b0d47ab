//! `config.json`, `generation_config.json` or `tokenizer_config.json` (first byte picks),
//! parsed by the same functions the model-folder loaders call; a tokenizer config's chat
//! template is compiled too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_data::{GenerationConfig, TokenizerConfig};
use qtrain_fuzz::check_error;
use qtrain_model::QwenConfig;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    match mode % 3 {
        0 => {
            if let Ok(cfg) = QwenConfig::from_json_str(text, Path::new("config.json")) {
                // Everything derived from a config that passed must be computable.
                let _ = (cfg.num_parameters(), cfg.num_matmul_parameters(), cfg.expected_tensors().len());
                let _ = qtrain_model::memory::MemoryEstimate::lora(&cfg, 512, 8);
            }
        }
        1 => check_error(GenerationConfig::from_json_str(text, "generation_config.json")),
        _ => {
            if let Ok(config) = TokenizerConfig::from_json_str(text, "tokenizer_config.json") {
                let _ = config.special_tokens();
                check_error(config.chat_template());
            }
        }
    }
});
