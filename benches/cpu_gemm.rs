//! The CPU GEMMs at the linear shapes of published Qwen models: `X [512, in] · Wᵀ` with W
//! `[out, in]` stored in bf16 (the checkpoint's layout and type), bf16 × bf16 → f32; and the
//! f32 GEMM on the same shapes for comparison. Throughput is in FLOP/s (criterion prints
//! "elem/s": read Gelem/s as GFLOP/s).
//! Baseline: `python3 tools/bench_torch_matmul.py --dtype bfloat16` (same shape table).
//! Run: `cargo bench --bench cpu_gemm [-- FILTER]`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use qtrain_core::cpu::gemm::gemm_f32_new;
use qtrain_core::cpu::gemm_bf16::{gemm_bf16_new, Kernel, Operand, Product};
use qtrain_core::cpu::CpuBackend;
use qtrain_core::rng::Rng;

const TOKENS: usize = 512;

/// (shape, projection, out, in) — keep in sync with tools/bench_torch_matmul.py.
const LINEARS: &[(&str, &str, usize, usize)] = &[
    ("qwen2.5-0.5b", "q_proj", 896, 896),
    ("qwen2.5-0.5b", "k_proj", 128, 896),
    ("qwen2.5-0.5b", "o_proj", 896, 896),
    ("qwen2.5-0.5b", "gate_proj", 4864, 896),
    ("qwen2.5-0.5b", "down_proj", 896, 4864),
    ("qwen3-0.6b", "q_proj", 2048, 1024),
    ("qwen3-0.6b", "k_proj", 1024, 1024),
    ("qwen3-0.6b", "o_proj", 1024, 2048),
    ("qwen3-0.6b", "gate_proj", 3072, 1024),
    ("qwen3-0.6b", "down_proj", 1024, 3072),
    ("qwen2.5-7b", "q_proj", 3584, 3584),
    ("qwen2.5-7b", "k_proj", 512, 3584),
    ("qwen2.5-7b", "gate_proj", 18944, 3584),
    ("qwen2.5-7b", "down_proj", 3584, 18944),
];

fn gemm(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut group = c.benchmark_group(format!("cpu_gemm_{}", Kernel::detect().describe().replace(' ', "_")));
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    for &(shape, proj, out_f, in_f) in LINEARS {
        let x: Vec<f32> = (0..TOKENS * in_f).map(|_| rng.normal() as f32).collect();
        let w32: Vec<f32> = (0..out_f * in_f).map(|_| rng.normal() as f32 * 0.02).collect();
        let w16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        group.throughput(Throughput::Elements(2 * (TOKENS * out_f * in_f) as u64));
        group.bench_function(format!("{shape}/{proj}/bf16"), |b| {
            let p = Product::new(TOKENS, out_f, in_f, Operand::F32(&x), false, Operand::Bf16(&w16), true);
            // From a rayon worker, as the binary calls every product (`CpuBackend::run`).
            CpuBackend::new().run(|_| b.iter(|| gemm_bf16_new(&p, 1.0, true)))
        });
        if shape != "qwen2.5-7b" {
            group.bench_function(format!("{shape}/{proj}/f32"), |b| {
                b.iter(|| gemm_f32_new(TOKENS, out_f, in_f, &x, false, &w32, true, 1.0))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches);
