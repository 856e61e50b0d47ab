//! Throughput measurement on any backend: prefill, KV-cached decode, and one LoRA training step
//! (forward + backward with optional gradient checkpointing + AdamW), on a loaded model or a
//! random model of a named shape. Used by `qtrain bench`; criterion benchmarks in `benches/`
//! cover the CPU kernels. Times include a device sync (a download) at the end of each timed
//! region. Must not print: it returns numbers.

use std::time::Instant;

use qtrain_core::Backend;

use crate::optimizer::AdamW;

use crate::adapter::{AdapterConfig, ALL_LINEAR};
use crate::error::Result;
use crate::model::{Batch, KvCache, QwenModel};
use crate::train::{BackwardOptions, LoraInit, TrainBatch, TrainMode};

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchOptions {
    pub seq_len: usize,
    pub batch: usize,
    /// Timed repetitions (after one warm-up).
    pub steps: usize,
    pub decode_tokens: usize,
    pub lora_rank: usize,
    pub gradient_checkpointing: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    pub prefill_tokens_per_s: Option<f64>,
    pub decode_tokens_per_s: Option<f64>,
    pub train_tokens_per_s: Option<f64>,
    /// Mean over the timed steps (what `train_tokens_per_s` is computed from).
    pub train_step_seconds: Option<f64>,
    /// Fastest and median (upper median) timed step: on a shared machine, where another tenant
    /// can stall a few steps, these move far less between runs than the mean, so they are what
    /// to compare two builds by.
    pub train_step_seconds_min: Option<f64>,
    pub train_step_seconds_median: Option<f64>,
    /// Matmul FLOPs per trained token (forward 2N + input-gradient backward 2N, + 2N recompute).
    pub train_flops_per_token: f64,
    pub train_tflops: Option<f64>,
    /// Peak device memory of the training steps (backends with memory of their own: CUDA's
    /// allocator, live tensors + cache + cuBLASLt workspace).
    pub train_device_peak_bytes: Option<usize>,
    /// One extra, profiled step (not among the timed ones): device milliseconds per phase
    /// (forward / loss / recompute / backward / optimizer) and per op kind, where the backend
    /// times its own work (CUDA events).
    pub train_phase_ms: Option<Vec<(String, f64)>>,
    pub train_op_ms: Option<Vec<(String, f64)>>,
}

fn ids(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + salt * 104_729) % vocab.max(1)) as u32).collect()
}

/// Prefill `batch × seq_len` tokens, then decode `decode_tokens` one at a time (batch 1).
pub fn bench_inference<B: Backend>(model: &QwenModel<B>, be: &B, opts: &BenchOptions, report: &mut BenchReport) -> Result<()> {
    let v = model.config.vocab_size;
    let seqs: Vec<Vec<u32>> = (0..opts.batch).map(|b| ids(opts.seq_len, v, b)).collect();
    let batch = Batch::right_padded(&seqs, 0)?;
    let last: Vec<usize> = (0..opts.batch).map(|b| b * opts.seq_len + opts.seq_len - 1).collect();
    let run_prefill = || -> Result<()> {
        let h = model.forward_hidden(be, &batch, None)?;
        be.download(&model.logits_for_rows(be, &h, &last)?)?;
        Ok(())
    };
    run_prefill()?;
    let t = Instant::now();
    for _ in 0..opts.steps {
        run_prefill()?;
    }
    report.prefill_tokens_per_s = Some((opts.batch * opts.seq_len * opts.steps) as f64 / t.elapsed().as_secs_f64());
    if opts.decode_tokens > 0 {
        let prompt = ids(opts.seq_len, v, 0);
        let mut cache = KvCache::new(be, &model.config, 1, opts.seq_len + opts.decode_tokens)?;
        model.forward_hidden(be, &Batch::single(&prompt, 0), Some(&mut cache))?;
        let t = Instant::now();
        for s in 0..opts.decode_tokens {
            let h = model.forward_hidden(be, &Batch::single(&[(s % v) as u32], (opts.seq_len + s) as u32), Some(&mut cache))?;
            be.download(&model.logits_for_rows(be, &h, &[0])?)?;
        }
        report.decode_tokens_per_s = Some(opts.decode_tokens as f64 / t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// One LoRA (r = `lora_rank`, all linears) optimizer step per repetition.
pub fn bench_lora_train<B: Backend>(model: &mut QwenModel<B>, be: &B, opts: &BenchOptions, report: &mut BenchReport) -> Result<()> {
    let cfg = AdapterConfig::new_lora(
        opts.lora_rank,
        2.0 * opts.lora_rank as f64,
        0.0,
        ALL_LINEAR.iter().map(|s| s.to_string()).collect(),
        false,
        None,
    );
    model.init_lora(be, &cfg, LoraInit::Kaiming, 0)?;
    let v = model.config.vocab_size;
    let samples: Vec<(Vec<u32>, Vec<i32>)> = (0..opts.batch)
        .map(|b| {
            let t = ids(opts.seq_len, v, b + 1);
            let labels = t.iter().map(|&x| x as i32).collect();
            (t, labels)
        })
        .collect();
    let tb = TrainBatch::from_samples(&samples, 0)?;
    let mut grads = model.new_grads(be, TrainMode::Lora)?;
    let hyper = qtrain_optim::AdamWHyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut optimizer = AdamW::new(be, model, &grads, hyper)?;
    let bopts = BackwardOptions {
        loss_scale: 1.0 / tb.num_targets() as f32,
        gradient_checkpointing: opts.gradient_checkpointing,
        lora_dropout: None,
        attention_dropout: None,
        neftune: None,
    };
    let mut one_step = |model: &mut QwenModel<B>| -> Result<()> {
        be.begin_phase("zero grads");
        grads.zero(be)?;
        model.forward_backward(be, &tb, &mut grads, &bopts)?;
        // No clipping, so no gradient norm is computed: the step is forward, backward, update.
        be.begin_phase("optimizer");
        optimizer.step(be, model, &grads, 1e-4, 1.0)?;
        // Sync: read one parameter back.
        if let Some(p) = model.trainable_params(&grads).first() {
            be.download(p.param)?;
        }
        Ok(())
    };
    be.reset_device_peak();
    one_step(model)?;
    let mut step_secs = Vec::with_capacity(opts.steps);
    for _ in 0..opts.steps {
        let t = Instant::now();
        one_step(model)?;
        step_secs.push(t.elapsed().as_secs_f64());
    }
    report.train_device_peak_bytes = be.device_peak_bytes();
    be.set_profiling(true);
    one_step(model)?;
    let profile = be.take_profile();
    be.set_profiling(false);
    if let Some(p) = profile? {
        report.train_phase_ms = Some(p.phases_ms);
        report.train_op_ms = Some(p.ops_ms);
    }
    let secs = step_secs.iter().sum::<f64>() / opts.steps as f64;
    step_secs.sort_by(f64::total_cmp);
    report.train_step_seconds_min = step_secs.first().copied();
    report.train_step_seconds_median = step_secs.get(step_secs.len() / 2).copied();
    let tokens = (opts.batch * opts.seq_len) as f64;
    let n = model.config.num_matmul_parameters() as f64;
    report.train_flops_per_token = if opts.gradient_checkpointing { 6.0 * n } else { 4.0 * n };
    report.train_step_seconds = Some(secs);
    report.train_tokens_per_s = Some(tokens / secs);
    report.train_tflops = Some(report.train_flops_per_token * tokens / secs / 1e12);
    model.clear_lora();
    Ok(())
}
