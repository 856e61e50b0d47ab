//! Predicted memory of a run — inference or one training step, on the GPU or the CPU — from the
//! configuration alone, before anything is allocated: `qtrain info` prints it, and `bench`,
//! `train` and `infer` refuse a run whose prediction exceeds the memory available.
//!
//! The plan it models: frozen weights in the run's dtype (bf16: 2 bytes per parameter); with
//! gradient checkpointing only each decoder layer's input is kept; one layer's activations live
//! during recompute + backward; the LM head and loss run in chunks of [`LM_HEAD_CHUNK_TOKENS`]
//! tokens; LoRA parameters, gradients and AdamW moments in f32. The GPU keeps activations in
//! bf16, the CPU in f32. It is an estimate for planning — within ≈ 10 % of the measured peak RSS
//! on the CPU (BENCHMARKS.md) — not a measurement; runs report their measured peak.

use crate::config::QwenConfig;

#[derive(Clone, Debug, serde::Serialize)]
pub struct MemoryEstimate {
    pub frozen_weights_bytes: u64,
    pub trainable_parameters: u64,
    /// parameters + gradients + two AdamW moments, f32
    pub trainable_state_bytes: u64,
    /// saved decoder-layer inputs (training) or the KV cache (inference)
    pub checkpoint_bytes: u64,
    /// one layer's activations during recompute and backward (or one forward layer)
    pub layer_activation_bytes: u64,
    /// one LM-head chunk of logits and their gradient (f32)
    pub lm_head_chunk_bytes: u64,
    /// rotary tables, packing buffers, the process itself
    pub runtime_bytes: u64,
    pub total_bytes: u64,
}

/// Tokens per LM-head chunk: each chunk's f32 logits stay about the size of a few hidden-state
/// copies instead of `[T × V]` (the CPU backend's `CE_CHUNK_ROWS`).
pub const LM_HEAD_CHUNK_TOKENS: u64 = 256;

/// The binary, its libraries and allocator slack: the RSS of a `qtrain` process that has
/// loaded nothing yet, rounded up.
const PROCESS_BYTES: u64 = 64 << 20;

/// Where the run's tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// CUDA backend: activations in bf16.
    Gpu,
    /// CPU backend: activations in f32.
    Cpu,
}

impl Target {
    fn activation_bytes(self) -> u64 {
        match self {
            Target::Gpu => 2,
            Target::Cpu => 4,
        }
    }
}

impl MemoryEstimate {
    /// GPU, LoRA of rank `rank` on all seven linears of every layer, bf16 weights,
    /// `tokens` = batch × seq.
    pub fn lora(cfg: &QwenConfig, tokens: u64, rank: u64) -> Self {
        Self::lora_on(Target::Gpu, cfg, tokens, rank, 2)
    }

    /// LoRA of rank `rank` (all linears) with frozen weights of `weight_bytes` per parameter
    /// (2 for bf16, 4 for f32) on `target`.
    pub fn lora_on(target: Target, cfg: &QwenConfig, tokens: u64, rank: u64, weight_bytes: u64) -> Self {
        let lora_params: u64 =
            cfg.layer_linears().iter().map(|(_, [o, i])| rank * (*o as u64 + *i as u64)).sum::<u64>() * cfg.num_layers as u64;
        Self::training(target, cfg, tokens, lora_params, cfg.num_parameters() as u64 * weight_bytes)
    }

    /// Full fine-tuning: every parameter trainable, f32 master weights with f32 grads and moments.
    pub fn full(cfg: &QwenConfig, tokens: u64) -> Self {
        Self::full_on(Target::Gpu, cfg, tokens)
    }

    pub fn full_on(target: Target, cfg: &QwenConfig, tokens: u64) -> Self {
        Self::training(target, cfg, tokens, cfg.num_parameters() as u64, 0)
    }

    /// Generation: weights of `weight_bytes` per parameter, a KV cache of `tokens` (prompt +
    /// new tokens) per sequence, a prefill of `prompt` tokens at once.
    pub fn inference(target: Target, cfg: &QwenConfig, batch: u64, prompt: u64, tokens: u64, weight_bytes: u64) -> Self {
        let act = target.activation_bytes();
        let kv_cache = cfg.num_layers as u64 * batch * tokens * cfg.kv_dim() as u64 * 2 * act;
        let layer = batch * prompt * per_token_activations(cfg) * act;
        // Prefill asks for the last position's logits only; decode for one row per sequence.
        let lm_head = batch * cfg.vocab_size as u64 * 4;
        let runtime = runtime_bytes(target, cfg, batch * prompt);
        let frozen = cfg.num_parameters() as u64 * weight_bytes;
        MemoryEstimate {
            frozen_weights_bytes: frozen,
            trainable_parameters: 0,
            trainable_state_bytes: 0,
            checkpoint_bytes: kv_cache,
            layer_activation_bytes: layer,
            lm_head_chunk_bytes: lm_head,
            runtime_bytes: runtime,
            total_bytes: frozen + kv_cache + layer + lm_head + runtime,
        }
    }

    fn training(target: Target, cfg: &QwenConfig, tokens: u64, trainable: u64, frozen_bytes: u64) -> Self {
        let act = target.activation_bytes();
        let checkpoint_bytes = cfg.num_layers as u64 * tokens * cfg.hidden_size as u64 * act;
        // Activations and their gradients (× 2) of one layer.
        let layer_activation_bytes = 2 * tokens * per_token_activations(cfg) * act;
        let lm_head_chunk_bytes = 2 * LM_HEAD_CHUNK_TOKENS.min(tokens) * cfg.vocab_size as u64 * 4;
        let trainable_state_bytes = trainable * 16;
        let runtime_bytes = runtime_bytes(target, cfg, tokens);
        let total_bytes =
            frozen_bytes + trainable_state_bytes + checkpoint_bytes + layer_activation_bytes + lm_head_chunk_bytes + runtime_bytes;
        MemoryEstimate {
            frozen_weights_bytes: frozen_bytes,
            trainable_parameters: trainable,
            trainable_state_bytes,
            checkpoint_bytes,
            layer_activation_bytes,
            lm_head_chunk_bytes,
            runtime_bytes,
            total_bytes,
        }
    }
}

/// Values one token holds inside a decoder layer: normed input, q, k, v, attention output,
/// residual, normed, gate, up, activation.
fn per_token_activations(cfg: &QwenConfig) -> u64 {
    let (h, i, q, kv) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64);
    4 * h + 2 * q + 2 * kv + 3 * i
}

/// Rotary tables (f32 cos and sin for every position) and, on the CPU, the bf16 GEMM's packing
/// buffers (op(a) as bf16 pairs: tokens × the widest input / 2 × 4 bytes), plus the process.
fn runtime_bytes(target: Target, cfg: &QwenConfig, tokens: u64) -> u64 {
    // The tables cover the positions in use (at least `INITIAL_ROPE_POSITIONS`).
    let rope_positions = tokens.max(crate::model::INITIAL_ROPE_POSITIONS as u64).min(cfg.max_position_embeddings as u64);
    let rope = 2 * rope_positions * (cfg.head_dim as u64 / 2) * 4;
    let widest_input = cfg.intermediate_size.max(cfg.hidden_size).max(cfg.q_dim()) as u64;
    let packing = match target {
        Target::Cpu => tokens * widest_input * 2 + (4 << 20),
        Target::Gpu => 0,
    };
    rope + packing + PROCESS_BYTES
}

/// Memory this machine can give a new allocation now (`MemAvailable` of `/proc/meminfo`), in
/// bytes; `None` where that cannot be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `Err(message)` when `need` bytes exceed `available`, with both numbers and `advice` (what
/// to change), so a run that cannot fit stops before it allocates.
pub fn check_fits(what: &str, need: u64, available: Option<u64>, advice: &str) -> Result<(), String> {
    match available {
        Some(avail) if need > avail => Err(format!(
            "{what} needs about {:.1} GiB but this machine has {:.1} GiB available; {advice}",
            need as f64 / GIB,
            avail as f64 / GIB
        )),
        _ => Ok(()),
    }
}

const GIB: f64 = (1u64 << 30) as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::shape;

    #[test]
    fn qwen25_7b_lora_estimate_is_near_the_documented_floor() {
        let cfg = shape("qwen2.5-7b").unwrap();
        let m = MemoryEstimate::lora(&cfg, 2048, 8);
        // 20.2 M LoRA parameters for r=8 all-linear on Qwen2.5-7B (PEFT prints 20,185,088).
        assert_eq!(m.trainable_parameters, 20_185_088);
        let gib = m.total_bytes as f64 / GIB;
        assert!(gib > 14.5 && gib < 16.0, "{gib}");
        assert_eq!(m.checkpoint_bytes, 28 * 2048 * 3584 * 2);
    }

    /// The CPU predictions against peak RSS measured with `qtrain bench --device cpu` (bf16,
    /// 2 threads; BENCHMARKS.md): within 15 %.
    #[test]
    fn cpu_estimates_match_measured_peaks() {
        let cfg = shape("qwen2.5-0.5b").unwrap();
        let within = |pred: u64, measured_gib: f64| {
            let p = pred as f64 / GIB;
            assert!((p - measured_gib).abs() <= 0.15 * measured_gib, "predicted {p:.2} GiB, measured {measured_gib} GiB");
        };
        // `bench --what train --max_length 512`: 1.34 GiB; `--what infer`: 1.19 GiB.
        within(MemoryEstimate::lora_on(Target::Cpu, &cfg, 512, 8, 2).total_bytes, 1.34);
        within(MemoryEstimate::inference(Target::Cpu, &cfg, 1, 512, 544, 2).total_bytes, 1.19);
    }

    #[test]
    fn a_run_that_cannot_fit_is_refused_with_the_numbers() {
        let err = check_fits("a LoRA step", 30 << 30, Some(20 << 30), "lower --max_length").unwrap_err();
        assert!(err.contains("30.0 GiB") && err.contains("20.0 GiB") && err.contains("--max_length"), "{err}");
        assert!(check_fits("x", 1 << 30, Some(2 << 30), "").is_ok());
        assert!(check_fits("x", 1 << 30, None, "").is_ok());
    }
}
