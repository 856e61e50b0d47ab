//! Model shapes shared by the CPU benchmarks (included with `#[path]`), and the PyTorch
//! baseline script `tools/bench_torch_lora.py` uses the same numbers.
#![allow(dead_code)]

use std::path::Path;

use qtrain_model::QwenConfig;

/// A ~34 M-parameter Qwen2-architecture model: big enough that GEMMs dominate like in real
/// models, small enough for a 2-core CPU benchmark.
pub const BENCH_SMALL_CONFIG: &str = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":512,"intermediate_size":1536,
  "num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":4,"vocab_size":8192,"rope_theta":1000000.0,
  "rms_norm_eps":1e-6,"max_position_embeddings":2048,"tie_word_embeddings":false}"#;

pub fn bench_small() -> QwenConfig {
    QwenConfig::from_json_str(BENCH_SMALL_CONFIG, Path::new("bench-small config")).unwrap()
}
