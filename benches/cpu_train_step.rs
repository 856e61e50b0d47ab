//! One CPU LoRA training step (forward + backward with gradient checkpointing + AdamW) on the
//! bench-small shape, batch 1 × 256 tokens, r=8 all-linear; throughput in tokens/s.
//! Baseline: `python3 tools/bench_torch_lora.py` runs the same step in PyTorch + PEFT.
//! Run: `cargo bench --bench cpu_train_step`.

#[path = "shapes.rs"]
mod shapes;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qtrain_core::CpuBackend;
use qtrain_model::adapter::ALL_LINEAR;
use qtrain_model::train::{BackwardOptions, LoraInit, TrainBatch, TrainMode};
use qtrain_model::{AdamW, AdapterConfig, QwenModel};
use qtrain_optim::AdamWHyper;

pub const SEQ: usize = 256;

fn train_step(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut model = QwenModel::random(&be, shapes::bench_small(), 1).unwrap();
    let cfg = AdapterConfig::new_lora(8, 32.0, 0.0, ALL_LINEAR.iter().map(|s| s.to_string()).collect(), false, None);
    model.init_lora(&be, &cfg, LoraInit::Kaiming, 2).unwrap();
    let ids: Vec<u32> = (0..SEQ).map(|i| (i * 37 % 8000) as u32).collect();
    let labels: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let tb = TrainBatch::from_samples(&[(ids, labels)], 0).unwrap();
    let mut grads = model.new_grads(&be, TrainMode::Lora).unwrap();
    let hyper = AdamWHyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut optimizer = AdamW::new(&be, &mut model, &grads, hyper).unwrap();
    let opts = BackwardOptions {
        loss_scale: 1.0 / tb.num_targets() as f32,
        gradient_checkpointing: true,
        lora_dropout: None,
        attention_dropout: None,
        neftune: None,
    };
    let mut group = c.benchmark_group("cpu_train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SEQ as u64));
    group.bench_function("lora_r8_all_linear_seq256", |b| {
        // Inside rayon's pool, as `qtrain train` runs (`CpuBackend::run`).
        b.iter(|| {
            be.run(|be| {
                grads.zero(be).unwrap();
                model.forward_backward(be, &tb, &mut grads, &opts).unwrap();
                optimizer.step(be, &mut model, &grads, 1e-4, 1.0).unwrap();
            })
        })
    });
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
