//! CPU inference throughput on the bench-small shape: prefill (tokens/s of one forward over a
//! 256-token prompt) and decode (tokens/s of KV-cached single-token steps).
//! Run: `cargo bench --bench cpu_forward`.

#[path = "shapes.rs"]
mod shapes;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qtrain_core::CpuBackend;
use qtrain_model::{Batch, KvCache, QwenModel};

fn forward(c: &mut Criterion) {
    let be = CpuBackend::new();
    let model = QwenModel::random(&be, shapes::bench_small(), 1).unwrap();
    let prompt: Vec<u32> = (0..256).map(|i| (i * 37 % 8000) as u32).collect();
    let mut group = c.benchmark_group("cpu_forward");
    group.sample_size(10);
    group.throughput(Throughput::Elements(prompt.len() as u64));
    group.bench_function("prefill_256_tokens", |b| {
        // Inside rayon's pool, as the `qtrain` commands run (`CpuBackend::run`).
        b.iter(|| {
            be.run(|be| {
                let h = model.forward_hidden(be, &Batch::single(&prompt, 0), None).unwrap();
                model.logits_for_rows(be, &h, &[prompt.len() - 1]).unwrap()
            })
        })
    });
    let steps = 32;
    group.throughput(Throughput::Elements(steps as u64));
    group.bench_function("decode_32_tokens_after_256", |b| {
        b.iter_batched(
            || {
                let mut cache = KvCache::new(&be, &model.config, 1, prompt.len() + steps).unwrap();
                model.forward_hidden(&be, &Batch::single(&prompt, 0), Some(&mut cache)).unwrap();
                cache
            },
            |mut cache| {
                be.run(|be| {
                    for s in 0..steps {
                        let pos = (prompt.len() + s) as u32;
                        let h = model.forward_hidden(be, &Batch::single(&[(s * 13) as u32], pos), Some(&mut cache)).unwrap();
                        model.logits_for_rows(be, &h, &[0]).unwrap();
                    }
                })
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
