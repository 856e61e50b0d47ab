//! Every CUDA op against its CPU twin in qtrain-core, on fresh random inputs in real Qwen shapes.
//!
//! Compiled always, run only with `QTRAIN_GPU_TESTS=1` (otherwise each test prints
//! "skipped: set QTRAIN_GPU_TESTS=1" and passes): `tools/gpu-check.sh` runs this executable on the
//! GPU machine and tabulates the `KCHECK` lines it prints.
//!
//! Rules (METHOD.md, STYLE.md item 4): inputs are fresh random data every run (the seed is
//! printed; `QTRAIN_TEST_SEED=N` repeats a run), never zeros — gradient buffers that ops add into
//! start random too; every device allocation is poisoned with NaN before an op sees it, so an
//! element an op forgets to write fails the check. An element passes when
//! `|gpu − cpu| ≤ tol · (|cpu| + rms(cpu))`, with tol 1e-5 for f32 paths and 1e-2 where a bf16
//! operand enters a GEMM (bf16 weights; the activation is rounded to bf16 for the product).

use half::bf16;
use qtrain_core::rng::Rng;
use qtrain_core::{
    AttentionMask, Backend, CpuBackend, CpuTensor, CrossEntropyGrad, Dropout, HostData, LinearGrads, LoraWeights, MaskKey, TensorInfo,
};
use qtrain_cuda::{CudaBackend, CudaTensor};

const F32_TOL: f64 = 1e-5;
const BF16_TOL: f64 = 1e-2;

struct Env {
    gpu: CudaBackend,
    cpu: CpuBackend,
    rng: Rng,
}

fn setup(test: &str) -> Option<Env> {
    if std::env::var("QTRAIN_GPU_TESTS").as_deref() != Ok("1") {
        println!("skipped: set QTRAIN_GPU_TESTS=1");
        return None;
    }
    let gpu = CudaBackend::new(0).unwrap_or_else(|e| panic!("QTRAIN_GPU_TESTS=1 but the CUDA backend cannot start: {e}"));
    gpu.set_poison_allocations(true);
    let seed = std::env::var("QTRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    println!("{test}: {} seed {seed} (QTRAIN_TEST_SEED={seed} repeats it)", gpu.describe());
    Some(Env { gpu, cpu: CpuBackend::new(), rng: Rng::new(seed) })
}

impl Env {
    fn randn(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.normal() as f32 * std).collect()
    }

    /// The same random values on both backends; with `as_bf16` they are rounded to bf16 first and
    /// the GPU copy is stored as bf16 (a weight loaded from a checkpoint).
    fn pair(&mut self, shape: &[usize], std: f32, as_bf16: bool) -> (CudaTensor, CpuTensor) {
        let n = shape.iter().product();
        let v = self.randn(n, std);
        self.pair_from(v, shape, as_bf16)
    }

    fn pair_from(&self, v: Vec<f32>, shape: &[usize], as_bf16: bool) -> (CudaTensor, CpuTensor) {
        if as_bf16 {
            let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            let widened: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
            (self.gpu.upload(HostData::BF16(&b), shape).unwrap(), CpuTensor::new(widened, shape).unwrap())
        } else {
            (self.gpu.upload(HostData::F32(&v), shape).unwrap(), CpuTensor::new(v, shape).unwrap())
        }
    }

    fn down(&self, t: &CudaTensor) -> Vec<f32> {
        self.gpu.download(t).unwrap()
    }
}

/// Compares element-wise and prints one `KCHECK` line for tools/gpu-check.sh.
fn check(op: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{op}: lengths differ");
    let n = want.len().max(1) as f64;
    let rms = (want.iter().map(|&w| (w as f64).powi(2)).sum::<f64>() / n).sqrt();
    let (mut max_abs, mut worst, mut bad, mut nan) = (0.0f64, 0usize, 0usize, 0usize);
    let (mut err2, mut ref2) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() && w.is_finite() {
            nan += 1;
            bad += 1;
            continue;
        }
        let e = (g as f64 - w as f64).abs();
        err2 += e * e;
        ref2 += (w as f64).powi(2);
        if e > max_abs {
            max_abs = e;
            worst = i;
        }
        if e > tol * ((w as f64).abs() + rms) {
            bad += 1;
        }
    }
    let rel = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
    let status = if bad == 0 { "PASS" } else { "FAIL" };
    println!("KCHECK {status} {op:<44} n={:<10} max_abs={max_abs:.3e} rel_l2={rel:.3e} tol={tol:.0e} bad={bad} nan={nan}", want.len());
    assert!(
        bad == 0,
        "{op}: {bad} elements out of tolerance ({nan} not finite); worst [{worst}] gpu {} vs cpu {}",
        got.get(worst).copied().unwrap_or(f32::NAN),
        want.get(worst).copied().unwrap_or(f32::NAN)
    );
}

fn check_scalar(op: &str, got: f64, want: f64, rel_tol: f64) {
    let e = (got - want).abs();
    let ok = e <= rel_tol * want.abs().max(1e-30);
    println!(
        "KCHECK {} {op:<44} n=1          max_abs={e:.3e} rel_l2={:.3e} tol={rel_tol:.0e} gpu={got} cpu={want}",
        if ok { "PASS" } else { "FAIL" },
        e / want.abs().max(1e-30)
    );
    assert!(ok, "{op}: gpu {got} vs cpu {want}");
}

#[test]
fn elementwise_and_swiglu_match_cpu() {
    let Some(mut env) = setup("elementwise_and_swiglu") else { return };
    let shape = [384, 18944]; // tokens × Qwen2.5-7B intermediate size
    let (ga, ca) = env.pair(&shape, 1.0, false);
    let (gb, cb) = env.pair(&shape, 1.0, false);
    check("add_f32", &env.down(&env.gpu.add(&ga, &gb).unwrap()), env.cpu.add(&ca, &cb).unwrap().data(), F32_TOL);
    check("mul_f32", &env.down(&env.gpu.mul(&ga, &gb).unwrap()), env.cpu.mul(&ca, &cb).unwrap().data(), F32_TOL);
    let (mut gacc, mut cacc) = env.pair(&shape, 1.0, false);
    env.gpu.add_scaled_assign(&mut gacc, &ga, -0.37).unwrap();
    env.cpu.add_scaled_assign(&mut cacc, &ca, -0.37).unwrap();
    check("axpy_f32 (add_scaled_assign)", &env.down(&gacc), cacc.data(), F32_TOL);
    check("swiglu_fwd_f32", &env.down(&env.gpu.swiglu(&ga, &gb).unwrap()), env.cpu.swiglu(&ca, &cb).unwrap().data(), F32_TOL);
    let (gdy, cdy) = env.pair(&shape, 1.0, false);
    let (gdg, gdu) = env.gpu.swiglu_backward(&ga, &gb, &gdy).unwrap();
    let (cdg, cdu) = env.cpu.swiglu_backward(&ca, &cb, &cdy).unwrap();
    check("swiglu_bwd_f32 dgate", &env.down(&gdg), cdg.data(), F32_TOL);
    check("swiglu_bwd_f32 dup", &env.down(&gdu), cdu.data(), F32_TOL);
    // bf16 operands are widened before element-wise ops.
    let (g16, c16) = env.pair(&[4096], 1.0, true);
    let (g32, c32) = env.pair(&[4096], 1.0, false);
    check("add_f32 (bf16 operand widened)", &env.down(&env.gpu.add(&g16, &g32).unwrap()), env.cpu.add(&c16, &c32).unwrap().data(), F32_TOL);
}

#[test]
fn memory_ops_match_cpu() {
    let Some(mut env) = setup("memory_ops") else { return };
    let v = env.randn(3 * 1000, 1.0);
    let f16: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    let t = env.gpu.upload(HostData::F16(&f16), &[3, 1000]).unwrap();
    check("upload f16 → download", &env.down(&t), &f16.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), 0.0);
    let (gw, cw) = env.pair(&[3584, 512], 1.0, true);
    check("upload bf16 → download", &env.down(&gw), cw.data(), 0.0);
    let (gx, cx) = env.pair(&[7, 64, 128], 1.0, false);
    let gx = env.gpu.reshape(gx, &[448, 128]).unwrap();
    let cx = env.cpu.reshape(cx, &[448, 128]).unwrap();
    let rows: Vec<usize> = (0..200).map(|_| env.rng.below(448) as usize).collect();
    check("gather_rows_f32", &env.down(&env.gpu.gather_rows(&gx, &rows).unwrap()), env.cpu.gather_rows(&cx, &rows).unwrap().data(), 0.0);
    let mut z = env.gpu.zeros(&[1000, 3]).unwrap();
    check("zeros", &env.down(&z), &[0.0; 3000], 0.0);
    let (src, _) = env.pair(&[1000, 3], 1.0, false);
    env.gpu.add_scaled_assign(&mut z, &src, 1.0).unwrap();
    env.gpu.fill_zero(&mut z).unwrap();
    check("fill_zero", &env.down(&z), &[0.0; 3000], 0.0);
    // copy: same values and storage type, independent of the source.
    let copied = env.gpu.copy(&gw).unwrap();
    assert_eq!(copied.dtype(), gw.dtype());
    check("copy (bf16)", &env.down(&copied), cw.data(), 0.0);
    let mut copied = env.gpu.copy(&src).unwrap();
    let want = env.down(&src);
    env.gpu.fill_zero(&mut copied).unwrap();
    check("copy is independent", &env.down(&src), &want, 0.0);
    // KV cache writes: [B, S_cap, KV, D] at an offset.
    let (mut gcache, mut ccache) = env.pair(&[2, 64, 4, 128], 1.0, false);
    let (gnew, cnew) = env.pair(&[2, 5, 4, 128], 1.0, false);
    env.gpu.write_seq(&mut gcache, &gnew, 40).unwrap();
    env.cpu.write_seq(&mut ccache, &cnew, 40).unwrap();
    check("write_seq (KV cache)", &env.down(&gcache), ccache.data(), 0.0);
    assert!(env.gpu.write_seq(&mut gcache, &gnew, 60).is_err(), "overflowing the cache must be refused");
}

#[test]
fn embedding_matches_cpu() {
    let Some(mut env) = setup("embedding") else { return };
    let (v, c, n) = (151_936, 1024, 512); // Qwen3-0.6B vocabulary × hidden
    let (gt, ct) = env.pair(&[v, c], 0.02, true);
    // Half the ids from a small pool so the backward scatter-add sees repeats.
    let ids: Vec<u32> =
        (0..n).map(|i| if i % 2 == 0 { env.rng.below(v as u64) as u32 } else { 151_640 + env.rng.below(8) as u32 }).collect();
    check("embedding_fwd_bf16", &env.down(&env.gpu.embedding(&gt, &ids).unwrap()), env.cpu.embedding(&ct, &ids).unwrap().data(), 0.0);
    let (gt32, ct32) = env.pair(&[5000, 896], 1.0, false);
    let small_ids: Vec<u32> = (0..300).map(|_| env.rng.below(5000) as u32).collect();
    check(
        "embedding_fwd_f32",
        &env.down(&env.gpu.embedding(&gt32, &small_ids).unwrap()),
        env.cpu.embedding(&ct32, &small_ids).unwrap().data(),
        0.0,
    );
    let (mut gg, mut cg) = env.pair(&[v, c], 1e-3, false);
    let (gdy, cdy) = env.pair(&[n, c], 1.0, false);
    env.gpu.embedding_backward(&mut gg, &ids, &gdy).unwrap();
    env.cpu.embedding_backward(&mut cg, &ids, &cdy).unwrap();
    check("embedding_bwd_f32 (scatter-add)", &env.down(&gg), cg.data(), F32_TOL);
    assert!(env.gpu.embedding(&gt, &[v as u32]).is_err(), "an id past the vocabulary must be refused");
}

#[test]
fn rms_norm_matches_cpu() {
    let Some(mut env) = setup("rms_norm") else { return };
    // Hidden norm (Qwen2.5-7B, bf16 weight) and Qwen3 per-head q/k norm (rows N·H of D = 128, f32 weight).
    for (label, rows, cols, w_bf16) in [("hidden 3584, bf16 w", 512, 3584, true), ("per-head 128, f32 w", 512 * 16, 128, false)] {
        let eps = 1e-6;
        let (gx, cx) = env.pair(&[rows, cols], 1.5, false);
        let wv: Vec<f32> = (0..cols).map(|_| 1.0 + 0.1 * env.rng.normal() as f32).collect();
        let (gw, cw) = env.pair_from(wv, &[cols], w_bf16);
        let dt = if w_bf16 { "bf16" } else { "f32" };
        check(
            &format!("rms_norm_fwd_{dt} ({label})"),
            &env.down(&env.gpu.rms_norm(&gx, &gw, eps).unwrap()),
            env.cpu.rms_norm(&cx, &cw, eps).unwrap().data(),
            F32_TOL,
        );
        let (gdy, cdy) = env.pair(&[rows, cols], 1.0, false);
        let (mut ggw, mut cgw) = env.pair(&[cols], 1.0, false);
        let gdx = env.gpu.rms_norm_backward(&gx, &gw, eps, &gdy, Some(&mut ggw)).unwrap();
        let cdx = env.cpu.rms_norm_backward(&cx, &cw, eps, &cdy, Some(&mut cgw)).unwrap();
        check(&format!("rms_norm_bwd_{dt} dx ({label})"), &env.down(&gdx), cdx.data(), F32_TOL);
        check(&format!("rms_norm_bwd_{dt} dw ({label})"), &env.down(&ggw), cgw.data(), F32_TOL);
        let gdx2 = env.gpu.rms_norm_backward(&gx, &gw, eps, &gdy, None).unwrap();
        check(&format!("rms_norm_bwd_{dt} dx, no dw ({label})"), &env.down(&gdx2), cdx.data(), F32_TOL);
    }
}

fn rope_tables(positions: usize, d: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
    for p in 0..positions {
        for i in 0..half {
            let inv = 1.0 / theta.powf(2.0 * i as f64 / d as f64);
            let a = (p as f64 * inv) as f32;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

#[test]
fn rope_matches_cpu() {
    let Some(mut env) = setup("rope") else { return };
    let (n, h, d, p) = (512, 28, 128, 32_768);
    let (cos, sin) = rope_tables(p, d, 1e6);
    let (gc, cc) = env.pair_from(cos, &[p, d / 2], false);
    let (gs, cs) = env.pair_from(sin, &[p, d / 2], false);
    let positions: Vec<u32> = (0..n).map(|_| env.rng.below(p as u64) as u32).collect();
    let (gx, cx) = env.pair(&[n, h, d], 1.0, false);
    check(
        "rope_fwd_f32",
        &env.down(&env.gpu.rope(&gx, &gc, &gs, &positions).unwrap()),
        env.cpu.rope(&cx, &cc, &cs, &positions).unwrap().data(),
        F32_TOL,
    );
    check(
        "rope_bwd_f32",
        &env.down(&env.gpu.rope_backward(&gx, &gc, &gs, &positions).unwrap()),
        env.cpu.rope_backward(&cx, &cc, &cs, &positions).unwrap().data(),
        F32_TOL,
    );
    assert!(env.gpu.rope(&gx, &gc, &gs, &vec![p as u32; n]).is_err(), "a position past the table must be refused");
}

#[test]
fn matmul_matches_cpu() {
    let Some(mut env) = setup("matmul") else { return };
    let (m, k, n) = (300, 700, 500);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let ashape = if ta { [k, m] } else { [m, k] };
        let bshape = if tb { [n, k] } else { [k, n] };
        let (ga, ca) = env.pair(&ashape, 1.0, false);
        let (gb, cb) = env.pair(&bshape, 1.0, false);
        let want = env.cpu.matmul(&ca, &cb, ta, tb).unwrap();
        check(&format!("matmul f32 ta={ta} tb={tb}"), &env.down(&env.gpu.matmul(&ga, &gb, ta, tb).unwrap()), want.data(), F32_TOL);
        let (gb16, cb16) = env.pair(&bshape, 1.0, true);
        let want = env.cpu.matmul(&ca, &cb16, ta, tb).unwrap();
        check(&format!("matmul f32×bf16 ta={ta} tb={tb}"), &env.down(&env.gpu.matmul(&ga, &gb16, ta, tb).unwrap()), want.data(), BF16_TOL);
    }
}

struct LinearCase {
    label: &'static str,
    n: usize,
    d_in: usize,
    d_out: usize,
    bias: bool,
    rank: usize,
    dropout: bool,
    w_bf16: bool,
}

#[test]
fn linear_with_lora_matches_cpu() {
    let Some(mut env) = setup("linear") else { return };
    let cases = [
        LinearCase { label: "q_proj Qwen2.5-7B", n: 256, d_in: 3584, d_out: 3584, bias: true, rank: 8, dropout: true, w_bf16: true },
        LinearCase { label: "down_proj Qwen3-0.6B", n: 384, d_in: 3072, d_out: 1024, bias: false, rank: 16, dropout: false, w_bf16: true },
        LinearCase { label: "k_proj f32 weights", n: 200, d_in: 1024, d_out: 512, bias: true, rank: 8, dropout: true, w_bf16: false },
    ];
    for c in cases {
        let tol = if c.w_bf16 { BF16_TOL } else { F32_TOL };
        let (gx, cx) = env.pair(&[c.n, c.d_in], 1.0, false);
        let (gw, cw) = env.pair(&[c.d_out, c.d_in], 0.02, c.w_bf16);
        let (gbias, cbias) = env.pair(&[c.d_out], 0.1, c.w_bf16);
        let (ga, ca) = env.pair(&[c.rank, c.d_in], 1.0 / (c.d_in as f32).sqrt(), false);
        let (gb, cb) = env.pair(&[c.d_out, c.rank], 0.05, false); // non-zero B to exercise the path
        let drop = Dropout { key: MaskKey { seed: env.rng.next_u64(), layer: 3, module: 5 }, p: 0.05 };
        let scale = 32.0 / c.rank as f32;
        let glora = || LoraWeights { a: &ga, b: &gb, scale, dropout: c.dropout.then_some(drop) };
        let clora = || LoraWeights { a: &ca, b: &cb, scale, dropout: c.dropout.then_some(drop) };
        let gy = env.gpu.linear(&gx, &gw, c.bias.then_some(&gbias), Some(glora())).unwrap();
        let cy = env.cpu.linear(&cx, &cw, c.bias.then_some(&cbias), Some(clora())).unwrap();
        check(&format!("linear fwd + LoRA ({})", c.label), &env.down(&gy), cy.data(), tol);
        let gy0 = env.gpu.linear(&gx, &gw, c.bias.then_some(&gbias), None).unwrap();
        let cy0 = env.cpu.linear(&cx, &cw, c.bias.then_some(&cbias), None).unwrap();
        check(&format!("linear fwd, no LoRA ({})", c.label), &env.down(&gy0), cy0.data(), tol);

        let (gdy, cdy) = env.pair(&[c.n, c.d_out], 1.0, false);
        let (mut ggw, mut cgw) = env.pair(&[c.d_out, c.d_in], 0.01, false);
        let (mut ggb, mut cgb) = env.pair(&[c.d_out], 0.01, false);
        let (mut gg_la, mut cg_la) = env.pair(&[c.rank, c.d_in], 0.01, false);
        let (mut gg_lb, mut cg_lb) = env.pair(&[c.d_out, c.rank], 0.01, false);
        let gdx = env
            .gpu
            .linear_backward(
                &gx,
                &gw,
                Some(glora()),
                &gdy,
                LinearGrads {
                    weight: Some(&mut ggw),
                    bias: c.bias.then_some(&mut ggb),
                    lora_a: Some(&mut gg_la),
                    lora_b: Some(&mut gg_lb),
                },
                true,
            )
            .unwrap()
            .unwrap();
        let cdx = env
            .cpu
            .linear_backward(
                &cx,
                &cw,
                Some(clora()),
                &cdy,
                LinearGrads {
                    weight: Some(&mut cgw),
                    bias: c.bias.then_some(&mut cgb),
                    lora_a: Some(&mut cg_la),
                    lora_b: Some(&mut cg_lb),
                },
                true,
            )
            .unwrap()
            .unwrap();
        check(&format!("linear bwd dx ({})", c.label), &env.down(&gdx), cdx.data(), tol);
        check(&format!("linear bwd dW, f32 GEMM ({})", c.label), &env.down(&ggw), cgw.data(), F32_TOL);
        if c.bias {
            check(&format!("linear bwd db ({})", c.label), &env.down(&ggb), cgb.data(), F32_TOL);
        }
        check(&format!("lora bwd dA ({})", c.label), &env.down(&gg_la), cg_la.data(), F32_TOL);
        check(&format!("lora bwd dB ({})", c.label), &env.down(&gg_lb), cg_lb.data(), F32_TOL);
        // LoRA-only gradients without dx (the first layer's case).
        let none = env
            .gpu
            .linear_backward(&gx, &gw, Some(glora()), &gdy, LinearGrads { lora_a: Some(&mut gg_la), ..LinearGrads::default() }, false)
            .unwrap();
        env.cpu
            .linear_backward(&cx, &cw, Some(clora()), &cdy, LinearGrads { lora_a: Some(&mut cg_la), ..LinearGrads::default() }, false)
            .unwrap();
        assert!(none.is_none());
        check(&format!("lora bwd dA again, no dx ({})", c.label), &env.down(&gg_la), cg_la.data(), F32_TOL);
    }
}

struct AttnCase {
    label: &'static str,
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    cap: usize,
    q_offset: usize,
    padding: bool,
    packing: bool,
    budget: Option<usize>,
}

/// The dropout kernel draws exactly the mask `qtrain_core::philox` draws on the host: applied to
/// ones it yields the mask itself, compared bit for bit (odd column count: a partial last group).
#[test]
fn dropout_masks_are_bit_identical_to_cpu() {
    let Some(mut env) = setup("dropout") else { return };
    let (rows, cols) = (300usize, 1027usize);
    for p in [0.05f32, 0.1, 0.5] {
        let drop = Dropout { key: MaskKey { seed: env.rng.next_u64(), layer: 27, module: 6 }, p };
        let ones = env.gpu.upload(HostData::F32(&vec![1.0; rows * cols]), &[rows, cols]).unwrap();
        let out = env.gpu.zeros(&[rows, cols]).unwrap();
        qtrain_cuda::ops::lora::dropout_apply(
            &env.gpu,
            ones.device_ptr(),
            out.device_ptr(),
            rows,
            cols,
            &qtrain_cuda::ops::lora::DropoutArgs::new(Some(drop)),
        )
        .unwrap();
        let got = env.down(&out);
        let mut want = vec![0.0f32; rows * cols];
        want.chunks_mut(cols).enumerate().for_each(|(r, row)| drop.fill_row(r as u32, row));
        let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
        let status = if differ == 0 { "PASS" } else { "FAIL" };
        println!("KCHECK {status} dropout mask p={p} [{rows}×{cols}]: {differ} elements differ (bit-identical expected)");
        assert_eq!(differ, 0, "dropout mask p={p}");
    }
}

#[test]
fn attention_matches_cpu() {
    let Some(mut env) = setup("attention") else { return };
    let d = 128;
    let cases = [
        AttnCase {
            label: "causal Qwen2.5-7B heads",
            b: 2,
            t: 256,
            h: 28,
            kv: 4,
            cap: 256,
            q_offset: 0,
            padding: false,
            packing: false,
            budget: None,
        },
        AttnCase {
            label: "left padding Qwen3 heads",
            b: 3,
            t: 200,
            h: 16,
            kv: 8,
            cap: 200,
            q_offset: 0,
            padding: true,
            packing: false,
            budget: None,
        },
        AttnCase {
            label: "packed + right padding",
            b: 2,
            t: 300,
            h: 16,
            kv: 8,
            cap: 300,
            q_offset: 0,
            padding: true,
            packing: true,
            budget: None,
        },
        AttnCase {
            label: "chunked over z (small budget)",
            b: 2,
            t: 256,
            h: 28,
            kv: 4,
            cap: 256,
            q_offset: 0,
            padding: false,
            packing: true,
            budget: Some(3 << 20),
        },
        AttnCase {
            label: "row blocks inside one (batch row, kv head) slice",
            b: 2,
            t: 256,
            h: 28,
            kv: 4,
            cap: 256,
            q_offset: 0,
            padding: true,
            packing: true,
            budget: Some(200 << 10),
        },
        AttnCase {
            label: "KV cache prefill at offset",
            b: 1,
            t: 17,
            h: 28,
            kv: 4,
            cap: 512,
            q_offset: 283,
            padding: false,
            packing: false,
            budget: None,
        },
        AttnCase {
            label: "KV cache decode step",
            b: 2,
            t: 1,
            h: 16,
            kv: 8,
            cap: 512,
            q_offset: 299,
            padding: true,
            packing: false,
            budget: None,
        },
    ];
    let scale = 1.0 / (d as f32).sqrt();
    for c in cases {
        env.gpu.set_attention_score_budget(c.budget);
        let kv_len = c.q_offset + c.t;
        let key_valid = c.padding.then(|| {
            let mut v = vec![true; c.b * kv_len];
            for bi in 0..c.b {
                let pad = (bi * 37 + 5) % (kv_len / 3).max(1);
                for j in 0..pad {
                    if c.packing {
                        v[bi * kv_len + kv_len - 1 - j] = false; // right padding after packed samples
                    } else {
                        v[bi * kv_len + j] = false; // left padding
                    }
                }
            }
            v
        });
        let segments = c.packing.then(|| (0..c.b * kv_len).map(|i| ((i % kv_len) * 3 / kv_len) as u32).collect::<Vec<u32>>());
        let mask = AttentionMask { batch: c.b, q_len: c.t, kv_len, q_offset: c.q_offset, key_valid, segments, dropout: None };
        let (gq, cq) = env.pair(&[c.b, c.t, c.h, d], 1.0, false);
        let (gk, ck) = env.pair(&[c.b, c.cap, c.kv, d], 1.0, false);
        let (gv, cv) = env.pair(&[c.b, c.cap, c.kv, d], 1.0, false);
        let (go, gl) = env.gpu.attention(&gq, &gk, &gv, &mask, scale).unwrap();
        let (co, cl) = env.cpu.attention(&cq, &ck, &cv, &mask, scale).unwrap();
        check(&format!("attention fwd out ({})", c.label), &env.down(&go), co.data(), F32_TOL);
        check(&format!("attention fwd lse ({})", c.label), &env.down(&gl), cl.data(), F32_TOL);
        if c.cap != kv_len {
            continue; // backward takes k/v without a cache
        }
        // Backward from identical inputs: the CPU forward's out and lse on both sides.
        let (gdo, cdo) = env.pair(&[c.b, c.t, c.h, d], 1.0, false);
        let gout = env.gpu.upload(HostData::F32(co.data()), co.shape()).unwrap();
        let glse = env.gpu.upload(HostData::F32(cl.data()), cl.shape()).unwrap();
        let (gdq, gdk, gdv) = env.gpu.attention_backward(&gq, &gk, &gv, &gout, &glse, &gdo, &mask, scale).unwrap();
        let (cdq, cdk, cdv) = env.cpu.attention_backward(&cq, &ck, &cv, &co, &cl, &cdo, &mask, scale).unwrap();
        check(&format!("attention bwd dq ({})", c.label), &env.down(&gdq), cdq.data(), F32_TOL);
        check(&format!("attention bwd dk ({})", c.label), &env.down(&gdk), cdk.data(), F32_TOL);
        check(&format!("attention bwd dv ({})", c.label), &env.down(&gdv), cdv.data(), F32_TOL);
    }
    env.gpu.set_attention_score_budget(None);
}

#[test]
fn lm_head_cross_entropy_matches_cpu() {
    let Some(mut env) = setup("lm_head_cross_entropy") else { return };
    let (n, c, v) = (300, 1024, 151_936); // Qwen3-0.6B hidden and vocabulary
    for (label, w_bf16, chunk, full_ft) in [
        ("bf16 head, chunks of 64", true, Some(64), false),
        ("bf16 head, default chunks", true, None, false),
        ("f32 head + dW, chunks of 128", false, Some(128), true),
    ] {
        env.gpu.set_lm_head_chunk_rows(chunk);
        let tol = if w_bf16 { BF16_TOL } else { F32_TOL };
        let (gh, ch) = env.pair(&[n, c], 1.0, false);
        let (gw, cw) = env.pair(&[v, c], 0.02, w_bf16);
        let targets: Vec<i32> = (0..n).map(|_| if env.rng.next_f64() < 0.2 { -100 } else { env.rng.below(v as u64) as i32 }).collect();
        let supervised = targets.iter().filter(|&&t| t != -100).count();
        let scale = 1.0 / supervised as f32;
        let (mut ggw, mut cgw) = env.pair(&[v, c], 1e-4, false);
        let gout = env
            .gpu
            .lm_head_cross_entropy(&gh, &gw, &targets, Some(CrossEntropyGrad { scale, grad_w: full_ft.then_some(&mut ggw) }))
            .unwrap();
        let cout = env
            .cpu
            .lm_head_cross_entropy(&ch, &cw, &targets, Some(CrossEntropyGrad { scale, grad_w: full_ft.then_some(&mut cgw) }))
            .unwrap();
        assert_eq!(gout.num_targets, cout.num_targets);
        check_scalar(&format!("cross_entropy loss_sum ({label})"), gout.loss_sum, cout.loss_sum, tol);
        let allowed = if w_bf16 { (supervised / 50).max(2) } else { 1 };
        let diff = gout.num_correct.abs_diff(cout.num_correct);
        println!(
            "KCHECK {} cross_entropy num_correct ({label}) gpu={} cpu={} allowed_diff={allowed}",
            if diff <= allowed { "PASS" } else { "FAIL" },
            gout.num_correct,
            cout.num_correct
        );
        assert!(diff <= allowed, "num_correct gpu {} vs cpu {}", gout.num_correct, cout.num_correct);
        check(
            &format!("cross_entropy grad_hidden ({label})"),
            &env.down(gout.grad_hidden.as_ref().unwrap()),
            cout.grad_hidden.as_ref().unwrap().data(),
            tol,
        );
        if full_ft {
            check(&format!("cross_entropy grad_w ({label})"), &env.down(&ggw), cgw.data(), F32_TOL);
        }
        // Loss only (evaluation): no gradients requested.
        let g_eval = env.gpu.lm_head_cross_entropy(&gh, &gw, &targets, None).unwrap();
        assert!(g_eval.grad_hidden.is_none());
        check_scalar(&format!("cross_entropy loss_sum, no grad ({label})"), g_eval.loss_sum, cout.loss_sum, tol);
    }
    env.gpu.set_lm_head_chunk_rows(None);
    let bad = vec![v as i32; n];
    assert!(env.gpu.lm_head_cross_entropy(&env.gpu.zeros(&[n, c]).unwrap(), &env.gpu.zeros(&[v, c]).unwrap(), &bad, None).is_err());
}

#[test]
fn sum_squares_matches_cpu() {
    let Some(mut env) = setup("sum_squares") else { return };
    for n in [1usize, 1000, 12_345_678] {
        let (g, c) = env.pair(&[n], 1.0, false);
        check_scalar(&format!("sum_squares_f32 n={n}"), env.gpu.sum_squares(&g).unwrap(), env.cpu.sum_squares(&c).unwrap(), 1e-9);
    }
    let (g, c) = env.pair(&[4096, 3584], 1.0, true);
    check_scalar("sum_squares (bf16 widened)", env.gpu.sum_squares(&g).unwrap(), env.cpu.sum_squares(&c).unwrap(), 1e-9);
}

#[test]
fn adamw_matches_cpu() {
    let Some(mut env) = setup("adamw") else { return };
    let hyper = qtrain_optim::AdamWHyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let n = (1 << 20) + 123;
    for (label, p_bf16, wd) in [("f32 params, decay", false, 0.1), ("f32 params, no decay", false, 0.0), ("bf16 params", true, 0.1)] {
        let hyper = hyper.with_weight_decay(wd);
        let (mut gp, mut cp) = env.pair(&[n], 0.05, p_bf16);
        let (gg, cg) = env.pair(&[n], 1e-3, false);
        let (mut gm, mut cm) = env.pair(&[n], 1e-4, false);
        let vv: Vec<f32> = (0..n).map(|_| (env.rng.normal() as f32 * 1e-4).powi(2)).collect();
        let (mut gv, mut cv) = env.pair_from(vv, &[n], false);
        let scalars = hyper.scalars(7, 1e-4, 0.37);
        env.gpu.adamw_step(&mut gp, &gg, &mut gm, &mut gv, &scalars).unwrap();
        env.cpu.adamw_step(&mut cp, &cg, &mut cm, &mut cv, &scalars).unwrap();
        let want_p: Vec<f32> = if p_bf16 { cp.data().iter().map(|&x| bf16::from_f32(x).to_f32()).collect() } else { cp.data().to_vec() };
        let got_p = env.down(&gp);
        let exact = got_p.iter().zip(&want_p).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
        println!("adamw ({label}): {exact} of {n} parameters bit-identical to the CPU step");
        check(
            &format!("adamw_step_{} param ({label})", if p_bf16 { "bf16" } else { "f32" }),
            &got_p,
            &want_p,
            if p_bf16 { BF16_TOL } else { F32_TOL },
        );
        check(&format!("adamw exp_avg ({label})"), &env.down(&gm), cm.data(), F32_TOL);
        check(&format!("adamw exp_avg_sq ({label})"), &env.down(&gv), cv.data(), F32_TOL);
    }
}

#[test]
fn memory_is_tracked_and_oom_is_a_clear_error() {
    let Some(env) = setup("memory") else { return };
    env.gpu.reset_peak();
    let before = env.gpu.memory_stats();
    {
        let _big = env.gpu.zeros(&[256 << 20]).unwrap(); // 1 GiB
        assert!(env.gpu.peak_live_bytes() >= before.live + (1 << 30));
    }
    let after = env.gpu.memory_stats();
    assert_eq!(after.live, before.live, "dropping a tensor returns its block");
    assert!(env.gpu.peak_bytes() >= 1 << 30);
    let again = env.gpu.zeros(&[256 << 20]).unwrap();
    assert_eq!(env.gpu.memory_stats().driver_allocs, after.driver_allocs, "the cached block is reused");
    drop(again);
    let err = env.gpu.zeros(&[1 << 38]).expect_err("1 TiB cannot be allocated");
    let msg = err.to_string();
    println!(
        "KCHECK {} out-of-memory message: {msg}",
        if msg.contains("out of GPU memory") && msg.contains("zeros") { "PASS" } else { "FAIL" }
    );
    assert!(msg.contains("out of GPU memory") && msg.contains("zeros [274877906944]") && msg.contains("--max_length"), "{msg}");
    env.gpu.empty_cache().unwrap();
    assert_eq!(env.gpu.memory_stats().cached, 0);
}

// ---- production shapes (tools/gpu-check.sh stage 3) and one 7B layer (stage 4) -----------

/// `op(a) · op(b)` at `samples` random output coordinates in f64, from the host copies.
fn sampled_product(
    env: &mut Env,
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    b_rows_n: bool,
    samples: usize,
) -> Vec<(usize, f32)> {
    (0..samples)
        .map(|_| {
            let (i, j) = (env.rng.below(m as u64) as usize, env.rng.below(n as u64) as usize);
            let bv = |kk: usize| if b_rows_n { b[j * k + kk] } else { b[kk * n + j] };
            let v: f64 = (0..k).map(|kk| f64::from(a[i * k + kk]) * f64::from(bv(kk))).sum();
            (i * n + j, v as f32)
        })
        .collect()
}

/// Every linear GEMM of a Qwen2.5-7B LoRA step at seq 2048 (x [2048, in] against the bf16 weight,
/// forward `x Wᵀ` and input gradient `dy W`), checked against f64 sums on sampled outputs of the
/// same bf16-rounded operands, with the achieved TFLOP/s (cuBLASLt may pick split-K here).
#[test]
fn production_gemms_at_qwen25_7b_shapes_match_f64() {
    let Some(mut env) = setup("production GEMMs") else { return };
    let n = 2048;
    for (name, out, inp) in [
        ("q/o_proj", 3584, 3584),
        ("k/v_proj", 512, 3584),
        ("gate/up_proj", 18944, 3584),
        ("down_proj", 3584, 18944),
        ("lm_head chunk", 16384, 3584),
    ] {
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| bf16::from_f32(x).to_f32()).collect() };
        let x = round(env.randn(n * inp, 1.0));
        let w = round(env.randn(out * inp, 0.02));
        let (gx, _) = env.pair_from(x.clone(), &[n, inp], false);
        let (gw, _) = env.pair_from(w.clone(), &[out, inp], true);
        // Forward y = x Wᵀ [n, out], and the input gradient dx = dy W [n, inp] of the backward.
        let dy = round(env.randn(n * out, 1.0));
        let gdy = env.pair_from(dy.clone(), &[n, out], false).0;
        for forward in [true, false] {
            let run = |env: &Env| -> CudaTensor {
                if forward {
                    env.gpu.linear(&gx, &gw, None, None).unwrap()
                } else {
                    env.gpu.linear_backward(&gx, &gw, None, &gdy, LinearGrads::default(), true).unwrap().unwrap()
                }
            };
            let (dir, (m, nn, k), a) = if forward { ("fwd x·Wᵀ", (n, out, inp), &x) } else { ("bwd dy·W", (n, inp, out), &dy) };
            let y = run(&env);
            env.gpu.synchronize().unwrap();
            let reps = 5;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                drop(run(&env));
            }
            env.gpu.synchronize().unwrap();
            let tflops = 2.0 * (m * nn * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e12;
            let got = env.down(&y);
            let want = sampled_product(&mut env, a, &w, (m, nn, k), forward, 512);
            let (g, wv): (Vec<f32>, Vec<f32>) = want.iter().map(|&(i, v)| (got[i], v)).unzip();
            println!("{name} {dir} [{m}×{nn}×{k}]: {tflops:.1} TFLOP/s");
            check(&format!("GEMM {name} {dir} [{m}×{nn}×{k}] (512 sampled vs f64)"), &g, &wv, 1e-3);
        }
    }
}

/// Attention of Qwen2.5-7B (28 heads over 4 kv heads, D 128) at T = 2048, forward and backward,
/// against the CPU twin, with the device time of each.
#[test]
fn production_attention_at_t2048_matches_cpu() {
    let Some(mut env) = setup("production attention") else { return };
    let (b, t, h, kv, d) = (1, 2048, 28, 4, 128);
    let (gq, cq) = env.pair(&[b, t, h, d], 1.0, false);
    let (gk, ck) = env.pair(&[b, t, kv, d], 1.0, false);
    let (gv, cv) = env.pair(&[b, t, kv, d], 1.0, false);
    let (gdo, cdo) = env.pair(&[b, t, h, d], 1.0, false);
    let mask = AttentionMask::causal(b, t);
    let scale = 1.0 / (d as f32).sqrt();
    let clock = std::time::Instant::now();
    let (go, gl) = env.gpu.attention(&gq, &gk, &gv, &mask, scale).unwrap();
    env.gpu.synchronize().unwrap();
    let fwd_ms = clock.elapsed().as_secs_f64() * 1e3;
    let clock = std::time::Instant::now();
    let (gdq, gdk, gdv) = env.gpu.attention_backward(&gq, &gk, &gv, &go, &gl, &gdo, &mask, scale).unwrap();
    env.gpu.synchronize().unwrap();
    let bwd_ms = clock.elapsed().as_secs_f64() * 1e3;
    println!("attention T={t}: forward {fwd_ms:.1} ms, backward {bwd_ms:.1} ms (first call, includes kernel compilation if not cached)");
    let (co, cl) = env.cpu.attention(&cq, &ck, &cv, &mask, scale).unwrap();
    check("attention T=2048 fwd out", &env.down(&go), co.data(), F32_TOL);
    check("attention T=2048 fwd lse", &env.down(&gl), cl.data(), F32_TOL);
    let (cdq, cdk, cdv) = env.cpu.attention_backward(&cq, &ck, &cv, &co, &cl, &cdo, &mask, scale).unwrap();
    check("attention T=2048 bwd dq", &env.down(&gdq), cdq.data(), 1e-4);
    check("attention T=2048 bwd dk", &env.down(&gdk), cdk.data(), 1e-4);
    check("attention T=2048 bwd dv", &env.down(&gdv), cdv.data(), 1e-4);
}

/// One decoder layer at Qwen2.5-7B dimensions (bf16 weights, vocab cut to 4096), LoRA r = 8 on
/// all linears with dropout 0.05, attention dropout 0.1 and gradient checkpointing: forward + backward of a 128-token
/// sample on both backends from the same weights; loss and every LoRA gradient compared.
#[test]
fn decoder_layer_at_qwen25_7b_dims_matches_cpu() {
    use qtrain_model::train::{BackwardOptions, LoraInit, TrainBatch, TrainMode};
    use qtrain_model::{AdapterConfig, QwenModel};
    let Some(mut env) = setup("decoder layer 7B") else { return };
    let mut cfg = qtrain_model::shapes::shape("qwen2.5-7b").unwrap();
    (cfg.num_layers, cfg.vocab_size) = (1, 4096);
    let cpu = CpuBackend::bf16(true);
    let mut gm = QwenModel::random_bf16(&env.gpu, cfg.clone(), 5).unwrap();
    let mut cm = QwenModel::random_bf16(&cpu, cfg.clone(), 5).unwrap();
    let targets: Vec<String> = qtrain_model::adapter::ALL_LINEAR.iter().map(|s| s.to_string()).collect();
    let acfg = AdapterConfig::new_lora(8, 16.0, 0.05, targets, false, None);
    gm.init_lora(&env.gpu, &acfg, LoraInit::Kaiming, 9).unwrap();
    cm.init_lora(&cpu, &acfg, LoraInit::Kaiming, 9).unwrap();
    // PEFT starts B at zero; random B makes every LoRA gradient non-trivial.
    for (gl, cl) in gm.layers[0].linears.iter_mut().zip(cm.layers[0].linears.iter_mut()) {
        let (gp, cp) = (gl.lora.as_mut().unwrap(), cl.lora.as_mut().unwrap());
        let shape = cp.b.shape().to_vec();
        let v = env.randn(shape.iter().product(), 0.01);
        gp.b = env.gpu.upload(HostData::F32(&v), &shape).unwrap();
        cp.b = cpu.upload(HostData::F32(&v), &shape).unwrap();
    }
    let ids: Vec<u32> = (0..128).map(|_| env.rng.below(4096) as u32).collect();
    let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    let tb = TrainBatch::from_samples(&[(ids, labels)], 0).unwrap();
    let seed = env.rng.next_u64();
    let opts = BackwardOptions {
        loss_scale: 1.0 / tb.num_targets() as f32,
        gradient_checkpointing: true,
        lora_dropout: Some((0.05, seed)),
        attention_dropout: Some((0.1, seed)),
        neftune: Some((5.0, seed)),
    };
    let mut gg = gm.new_grads(&env.gpu, TrainMode::Lora).unwrap();
    let mut cg = cm.new_grads(&cpu, TrainMode::Lora).unwrap();
    let gs = gm.forward_backward(&env.gpu, &tb, &mut gg, &opts).unwrap();
    let cs = cpu.run(|be| cm.forward_backward(be, &tb, &mut cg, &opts)).unwrap();
    check_scalar("7B layer T=128 loss", gs.loss_sum, cs.loss_sum, 1e-3);
    for (i, (g, c)) in gg.layers[0].linears.iter().zip(&cg.layers[0].linears).enumerate() {
        for (what, gt, ct) in [("A", &g.lora_a, &c.lora_a), ("B", &g.lora_b, &c.lora_b)] {
            let (gt, ct) = (gt.as_ref().unwrap(), ct.as_ref().unwrap());
            check(&format!("7B layer T=128 dLoRA_{what} of {}", qtrain_model::Proj::ALL[i].name()), &env.down(gt), ct.data(), BF16_TOL);
        }
    }
}

/// tools/gpu-check.sh stage 1: the device, the CUDA library versions and files actually loaded,
/// and every kernel module compiled by NVRTC for this device.
#[test]
fn preflight_device_libraries_and_every_kernel_module() {
    let Some(env) = setup("preflight") else { return };
    println!("device: {}", env.gpu.describe());
    println!("libraries: {}", env.gpu.libraries());
    let stats = env.gpu.memory_stats();
    println!("allocator after start: {} B live (cuBLASLt workspace), {} driver allocations", stats.live, stats.driver_allocs);
    let mut failed = Vec::new();
    for (module, result) in env.gpu.compile_all_kernels() {
        let status = if result.is_ok() { "PASS" } else { "FAIL" };
        println!("KCHECK {status} NVRTC compile + load of kernels/{module}.cu");
        if let Err(e) = result {
            println!("{e}");
            failed.push(module);
        }
    }
    assert!(failed.is_empty(), "kernel modules that did not compile or load: {failed:?}");
}
