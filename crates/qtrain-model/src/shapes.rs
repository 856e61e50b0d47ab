//! Configurations of published Qwen models (architecture numbers only, no weights), for
//! benchmarks and memory planning at real shapes: `qtrain bench --shape qwen2.5-7b`.
//! Numbers are the `config.json` values of the Hugging Face releases. Must not hold weights.

use std::path::Path;

use crate::config::QwenConfig;
use crate::error::{ModelError, Result};

/// (name, config.json) of every known shape.
pub const SHAPES: &[(&str, &str)] = &[
    (
        "bench-small",
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":512,"intermediate_size":1536,"num_hidden_layers":8,
        "num_attention_heads":8,"num_key_value_heads":4,"vocab_size":8192,"rope_theta":1000000.0,"rms_norm_eps":1e-6,
        "max_position_embeddings":4096,"tie_word_embeddings":false}"#,
    ),
    (
        "qwen2.5-0.5b",
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,
        "num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,"rope_theta":1000000.0,"rms_norm_eps":1e-6,
        "max_position_embeddings":32768,"tie_word_embeddings":true}"#,
    ),
    (
        "qwen2.5-1.5b",
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":1536,"intermediate_size":8960,"num_hidden_layers":28,
        "num_attention_heads":12,"num_key_value_heads":2,"vocab_size":151936,"rope_theta":1000000.0,"rms_norm_eps":1e-6,
        "max_position_embeddings":32768,"tie_word_embeddings":true}"#,
    ),
    (
        "qwen2.5-7b",
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":3584,"intermediate_size":18944,"num_hidden_layers":28,
        "num_attention_heads":28,"num_key_value_heads":4,"vocab_size":152064,"rope_theta":1000000.0,"rms_norm_eps":1e-6,
        "max_position_embeddings":32768,"tie_word_embeddings":false}"#,
    ),
    (
        "qwen3-0.6b",
        r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":28,
        "num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"rope_theta":1000000.0,
        "rms_norm_eps":1e-6,"max_position_embeddings":40960,"tie_word_embeddings":true,"attention_bias":false}"#,
    ),
    (
        "qwen3-8b",
        r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":4096,"intermediate_size":12288,"num_hidden_layers":36,
        "num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"rope_theta":1000000.0,
        "rms_norm_eps":1e-6,"max_position_embeddings":40960,"tie_word_embeddings":false,"attention_bias":false}"#,
    ),
];

/// The configuration of a named shape.
pub fn shape(name: &str) -> Result<QwenConfig> {
    let (_, json) = SHAPES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        ModelError::Invalid(format!("unknown shape {name:?}; known: {}", SHAPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
    })?;
    QwenConfig::from_json_str(json, Path::new(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shape_parses_and_matches_its_published_size() {
        // Published parameter counts (billions) of the releases.
        for (name, billions) in
            [("qwen2.5-0.5b", 0.494), ("qwen2.5-1.5b", 1.544), ("qwen2.5-7b", 7.616), ("qwen3-0.6b", 0.596), ("qwen3-8b", 8.191)]
        {
            let n = super::shape(name).unwrap().num_parameters() as f64 / 1e9;
            assert!((n - billions).abs() < 0.01 * billions, "{name}: {n}");
        }
        assert!(super::shape("bench-small").is_ok());
        assert!(super::shape("llama").unwrap_err().to_string().contains("qwen2.5-7b"));
    }
}
