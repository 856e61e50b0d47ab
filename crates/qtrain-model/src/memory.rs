//! Predicted device memory of a training run, from the configuration alone (no allocation).
//!
//! The plan it models (DESIGN.md, "Memory on the GPU"): frozen weights in bf16; per decoder
//! layer only the layer input is kept (gradient checkpointing); one layer's activations live
//! during recompute + backward; the LM head and loss run in token chunks; LoRA parameters,
//! gradients and AdamW moments in f32. It is an estimate for planning (`qtrain info`), not a
//! measurement; the trainer reports the measured peak.

use crate::config::QwenConfig;

#[derive(Clone, Debug, serde::Serialize)]
pub struct MemoryEstimate {
    pub frozen_weights_bytes: u64,
    pub trainable_parameters: u64,
    /// parameters + gradients + two AdamW moments, f32
    pub trainable_state_bytes: u64,
    /// saved decoder-layer inputs (bf16)
    pub checkpoint_bytes: u64,
    /// one layer's activations during recompute and backward (bf16), attention scores excluded
    pub layer_activation_bytes: u64,
    /// one LM-head chunk of logits and their gradient (f32)
    pub lm_head_chunk_bytes: u64,
    pub total_bytes: u64,
}

/// Tokens per LM-head chunk: each chunk's f32 logits stay about the size of a few hidden-state
/// copies instead of `[T × V]`.
pub const LM_HEAD_CHUNK_TOKENS: u64 = 256;

impl MemoryEstimate {
    /// LoRA of rank `rank` on all seven linears of every layer, `tokens` = batch × seq.
    pub fn lora(cfg: &QwenConfig, tokens: u64, rank: u64) -> Self {
        let lora_params: u64 =
            cfg.layer_linears().iter().map(|(_, [o, i])| rank * (*o as u64 + *i as u64)).sum::<u64>() * cfg.num_layers as u64;
        Self::build(cfg, tokens, lora_params, cfg.num_parameters() as u64 * 2)
    }

    /// Full fine-tuning: every parameter trainable, weights kept in f32 with f32 moments.
    pub fn full(cfg: &QwenConfig, tokens: u64) -> Self {
        let params = cfg.num_parameters() as u64;
        Self::build(cfg, tokens, params, 0)
    }

    fn build(cfg: &QwenConfig, tokens: u64, trainable: u64, frozen_bytes: u64) -> Self {
        let (h, i, q, kv) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64);
        let checkpoint_bytes = cfg.num_layers as u64 * tokens * h * 2;
        // normed input, q, k, v, attention out, residual, normed, gate, up, activation (+ grads ≈ ×2)
        let per_token = 4 * h + 2 * q + 2 * kv + 3 * i;
        let layer_activation_bytes = 2 * tokens * per_token * 2;
        let lm_head_chunk_bytes = 2 * LM_HEAD_CHUNK_TOKENS.min(tokens) * cfg.vocab_size as u64 * 4;
        let trainable_state_bytes = trainable * 16;
        let total_bytes = frozen_bytes + trainable_state_bytes + checkpoint_bytes + layer_activation_bytes + lm_head_chunk_bytes;
        MemoryEstimate {
            frozen_weights_bytes: frozen_bytes,
            trainable_parameters: trainable,
            trainable_state_bytes,
            checkpoint_bytes,
            layer_activation_bytes,
            lm_head_chunk_bytes,
            total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn qwen25_7b_lora_estimate_is_near_the_documented_floor() {
        let cfg = QwenConfig::from_json_str(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":3584,"intermediate_size":18944,"num_hidden_layers":28,
            "num_attention_heads":28,"num_key_value_heads":4,"vocab_size":152064,"rope_theta":1000000.0,"tie_word_embeddings":false}"#,
            Path::new("config.json"),
        )
        .unwrap();
        let m = MemoryEstimate::lora(&cfg, 2048, 8);
        // 20.2 M LoRA parameters for r=8 all-linear on Qwen2.5-7B (PEFT prints 20,185,088).
        assert_eq!(m.trainable_parameters, 20_185_088);
        let gib = m.total_bytes as f64 / (1u64 << 30) as f64;
        assert!(gib > 14.5 && gib < 16.0, "{gib}");
        assert_eq!(m.checkpoint_bytes, 28 * 2048 * 3584 * 2);
    }
}
