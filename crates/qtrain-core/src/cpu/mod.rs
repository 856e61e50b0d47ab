//! The CPU backend: f32 everywhere, rayon across rows, the `gemm` crate for products.
//!
//! This is the reference implementation of [`Backend`]: each op is written as plain, readable
//! loops (plus one GEMM call where there is a product) so that a reader can check it against
//! the formula in the op's doc comment, and so other backends have a twin to compare against.
//! It must not take numerical shortcuts (no reduced precision; `exp` is [`math::exp`], within
//! 1 ulp, so that element-wise loops vectorise).

pub mod attention;
pub mod backward;
pub mod gemm;
pub mod math;

use rayon::prelude::*;

use crate::backend::{
    check_matmul_shapes, check_rope_shapes, AttentionMask, Backend, CrossEntropyGrad, CrossEntropyOutput, LinearGrads, LoraWeights,
    TensorInfo,
};
use crate::error::{CoreError, Result};
use crate::{ensure_shape, HostData};

/// A contiguous row-major f32 tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl CpuTensor {
    /// Wrap `data` with `shape`; the element counts must agree.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(CoreError::ElementCount { op: "CpuTensor::new", shape: shape.to_vec(), expected, got: data.len() });
        }
        Ok(CpuTensor { shape: shape.to_vec(), data })
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The CPU backend. Threads come from rayon's global pool (set `RAYON_NUM_THREADS` to pin).
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }

    /// Runs `work` on one of rayon's worker threads while the calling thread waits, and returns
    /// its result. Every op forks across the pool: issued from a thread outside the pool, each
    /// fork is injected into the pool and the caller sleeps until it is done — a cross-thread
    /// wake-up per op, thousands per training step. Issued from a worker, a fork is a
    /// work-stealing `join` the issuing thread takes part in. Whole commands (a training run,
    /// a generation loop) should run inside this: the bench-small LoRA step ran 8–19 % faster
    /// in four interleaved rounds.
    pub fn run<R: Send>(&self, work: impl FnOnce(&CpuBackend) -> R + Send) -> R {
        // `scope` executes its closure on a worker thread (injecting it when called from outside).
        rayon::scope(|_| work(self))
    }
}

/// Rows (product of all but the last dimension) and the last dimension.
fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape.iter().product::<usize>().checked_div(cols).unwrap_or(0);
    (rows, cols)
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * math::sigmoid(x)
}

/// r = (mean(x²) + eps)^(-1/2) of one row: RMSNorm's scale, shared by its forward and backward.
#[inline(always)]
fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (math::dot(row, row) / row.len() as f32 + eps).sqrt()
}

/// Elements per rayon task in element-wise ops: large enough that the task overhead vanishes and
/// the inner loop runs as SIMD code, small enough to balance across threads.
pub(super) const ELEMENTWISE_CHUNK: usize = 1 << 14;

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn upload(&self, data: HostData<'_>, shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_f32_vec(), shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.clone())
    }

    fn zeros(&self, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] })
    }

    fn reshape(&self, t: CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        let n: usize = shape.iter().product();
        ensure_shape!(n == t.data.len(), "reshape", "{:?} → {:?}", t.shape, shape);
        Ok(CpuTensor { shape: shape.to_vec(), data: t.data })
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        let (n, c) = rows_cols(&x.shape);
        let mut out = Vec::with_capacity(rows.len() * c);
        for &r in rows {
            if r >= n {
                return Err(CoreError::Index { op: "gather_rows", index: r, size: n });
            }
            out.extend_from_slice(&x.data[r * c..(r + 1) * c]);
        }
        CpuTensor::new(out, &[rows.len(), c])
    }

    fn write_seq(&self, dst: &mut CpuTensor, src: &CpuTensor, at: usize) -> Result<()> {
        ensure_shape!(
            dst.shape.len() >= 2 && src.shape.len() == dst.shape.len() && dst.shape[0] == src.shape[0] && dst.shape[2..] == src.shape[2..],
            "write_seq",
            "dst {:?}, src {:?}",
            dst.shape,
            src.shape
        );
        let (b, cap, t) = (dst.shape[0], dst.shape[1], src.shape[1]);
        ensure_shape!(at + t <= cap, "write_seq", "writing {t} positions at {at} overflows capacity {cap}");
        let inner: usize = dst.shape[2..].iter().product();
        for bi in 0..b {
            let d0 = (bi * cap + at) * inner;
            let s0 = bi * t * inner;
            dst.data[d0..d0 + t * inner].copy_from_slice(&src.data[s0..s0 + t * inner]);
        }
        Ok(())
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        ensure_shape!(a.shape == b.shape, "add", "{:?} vs {:?}", a.shape, b.shape);
        let data = a.data.par_iter().zip(&b.data).map(|(x, y)| x + y).collect();
        Ok(CpuTensor { shape: a.shape.clone(), data })
    }

    fn add_scaled_assign(&self, acc: &mut CpuTensor, x: &CpuTensor, alpha: f32) -> Result<()> {
        ensure_shape!(acc.data.len() == x.data.len(), "add_scaled_assign", "{:?} vs {:?}", acc.shape, x.shape);
        acc.data.par_iter_mut().zip(&x.data).for_each(|(a, v)| *a += alpha * v);
        Ok(())
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor, trans_a: bool, trans_b: bool) -> Result<CpuTensor> {
        let (m, k, n) = check_matmul_shapes(&a.shape, &b.shape, trans_a, trans_b)?;
        CpuTensor::new(gemm::gemm_f32_new(m, n, k, &a.data, trans_a, &b.data, trans_b, 1.0), &[m, n])
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        lora: Option<LoraWeights<'_, CpuTensor>>,
    ) -> Result<CpuTensor> {
        let (n, d_in) = rows_cols(&x.shape);
        ensure_shape!(w.shape.len() == 2 && w.shape[1] == d_in, "linear", "x {:?} against weight {:?}", x.shape, w.shape);
        let d_out = w.shape[0];
        let mut y = gemm::gemm_f32_new(n, d_out, d_in, &x.data, false, &w.data, true, 1.0);
        if let Some(bias) = bias {
            ensure_shape!(bias.data.len() == d_out, "linear", "bias {:?} for {d_out} outputs", bias.shape);
            y.par_chunks_mut(d_out).for_each(|row| row.iter_mut().zip(&bias.data).for_each(|(v, b)| *v += b));
        }
        if let Some(l) = lora {
            let r = l.a.shape[0];
            ensure_shape!(
                l.a.shape == [r, d_in] && l.b.shape == [d_out, r],
                "linear",
                "LoRA A {:?} / B {:?} do not fit weight {:?}",
                l.a.shape,
                l.b.shape,
                w.shape
            );
            let xl = backward::lora_input(x, l.dropout_mask)?;
            let mut xa = vec![0.0; n * r];
            gemm::gemm_f32(n, r, d_in, &xl, false, &l.a.data, true, &mut xa, false, 1.0);
            gemm::gemm_f32(n, d_out, r, &xa, false, &l.b.data, true, &mut y, true, l.scale);
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = d_out;
        CpuTensor::new(y, &shape)
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32]) -> Result<CpuTensor> {
        ensure_shape!(table.shape.len() == 2, "embedding", "table must be [V, C], got {:?}", table.shape);
        let (v, c) = (table.shape[0], table.shape[1]);
        let mut out = Vec::with_capacity(ids.len() * c);
        for &id in ids {
            let id = id as usize;
            if id >= v {
                return Err(CoreError::Index { op: "embedding", index: id, size: v });
            }
            out.extend_from_slice(&table.data[id * c..(id + 1) * c]);
        }
        CpuTensor::new(out, &[ids.len(), c])
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let (_, c) = rows_cols(&x.shape);
        ensure_shape!(w.data.len() == c, "rms_norm", "weight {:?} for rows of {c}", w.shape);
        let mut out = vec![0.0; x.data.len()];
        out.par_chunks_mut(c).zip(x.data.par_chunks(c)).for_each(|(o, row)| {
            math::vectorized!(|| {
                // HF Qwen2RMSNorm: variance in f32, x · rsqrt(var + eps), then · weight.
                let inv = inverse_rms(row, eps);
                for ((o, v), g) in o.iter_mut().zip(row).zip(&w.data) {
                    *o = g * (v * inv);
                }
            })
        });
        CpuTensor::new(out, &x.shape)
    }

    fn rope(&self, x: &CpuTensor, cos: &CpuTensor, sin: &CpuTensor, positions: &[u32]) -> Result<CpuTensor> {
        let (_, h, d) = check_rope_shapes("rope", &x.shape, &cos.shape, &sin.shape, positions)?;
        let half = d / 2;
        let mut out = vec![0.0; x.data.len()];
        out.par_chunks_mut(h * d).zip(x.data.par_chunks(h * d)).zip(positions.par_iter()).for_each(|((o, row), &p)| {
            let c = &cos.data[p as usize * half..(p as usize + 1) * half];
            let s = &sin.data[p as usize * half..(p as usize + 1) * half];
            for head in 0..h {
                let xh = &row[head * d..(head + 1) * d];
                let oh = &mut o[head * d..(head + 1) * d];
                // out = x·cos + rotate_half(x)·sin, rotate_half(x) = [-x₂, x₁].
                for i in 0..half {
                    let (x1, x2) = (xh[i], xh[i + half]);
                    oh[i] = x1 * c[i] - x2 * s[i];
                    oh[i + half] = x2 * c[i] + x1 * s[i];
                }
            }
        });
        CpuTensor::new(out, &x.shape)
    }

    fn attention(&self, q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, mask: &AttentionMask, scale: f32) -> Result<(CpuTensor, CpuTensor)> {
        attention::attention(q, k, v, mask, scale, attention::QUERY_BLOCK)
    }

    fn swiglu(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        ensure_shape!(gate.shape == up.shape, "swiglu", "gate {:?} vs up {:?}", gate.shape, up.shape);
        let mut data = vec![0.0; gate.data.len()];
        data.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(gate.data.par_chunks(ELEMENTWISE_CHUNK).zip(up.data.par_chunks(ELEMENTWISE_CHUNK)))
            .for_each(|(out, (g, u))| {
                // Equal-length slices and an index loop: no bounds checks, so the loop vectorises.
                let len = out.len();
                let (g, u) = (&g[..len], &u[..len]);
                math::vectorized!(|| {
                    for i in 0..len {
                        out[i] = silu(g[i]) * u[i];
                    }
                })
            });
        Ok(CpuTensor { shape: gate.shape.clone(), data })
    }

    fn linear_backward(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        lora: Option<LoraWeights<'_, CpuTensor>>,
        dy: &CpuTensor,
        grads: LinearGrads<'_, CpuTensor>,
        need_dx: bool,
    ) -> Result<Option<CpuTensor>> {
        backward::linear_backward(x, w, lora, dy, grads, need_dx)
    }

    fn embedding_backward(&self, grad_table: &mut CpuTensor, ids: &[u32], dy: &CpuTensor) -> Result<()> {
        backward::embedding_backward(grad_table, ids, dy)
    }

    fn rms_norm_backward(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        eps: f32,
        dy: &CpuTensor,
        grad_w: Option<&mut CpuTensor>,
    ) -> Result<CpuTensor> {
        backward::rms_norm_backward(x, w, eps, dy, grad_w)
    }

    fn rope_backward(&self, dy: &CpuTensor, cos: &CpuTensor, sin: &CpuTensor, positions: &[u32]) -> Result<CpuTensor> {
        backward::rope_backward(dy, cos, sin, positions)
    }

    fn attention_backward(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        out: &CpuTensor,
        lse: &CpuTensor,
        dout: &CpuTensor,
        mask: &AttentionMask,
        scale: f32,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        attention::attention_backward(q, k, v, out, lse, dout, mask, scale, attention::QUERY_BLOCK)
    }

    fn swiglu_backward(&self, gate: &CpuTensor, up: &CpuTensor, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        backward::swiglu_backward(gate, up, dy)
    }

    fn lm_head_cross_entropy(
        &self,
        hidden: &CpuTensor,
        w: &CpuTensor,
        targets: &[i32],
        grad: Option<CrossEntropyGrad<'_, CpuTensor>>,
    ) -> Result<CrossEntropyOutput<CpuTensor>> {
        backward::lm_head_cross_entropy(hidden, w, targets, grad)
    }

    fn sum_squares(&self, x: &CpuTensor) -> Result<f64> {
        Ok(qtrain_optim::clip::sum_of_squares(&x.data))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        ensure_shape!(a.shape == b.shape, "mul", "{:?} vs {:?}", a.shape, b.shape);
        let data = a.data.par_iter().zip(&b.data).map(|(x, y)| x * y).collect();
        Ok(CpuTensor { shape: a.shape.clone(), data })
    }

    fn adamw_step(
        &self,
        param: &mut CpuTensor,
        grad: &CpuTensor,
        exp_avg: &mut CpuTensor,
        exp_avg_sq: &mut CpuTensor,
        hyper: &qtrain_optim::AdamWHyper,
        step: u64,
        lr: f64,
        grad_scale: f32,
    ) -> Result<()> {
        let n = param.data.len();
        ensure_shape!(
            grad.data.len() == n && exp_avg.data.len() == n && exp_avg_sq.data.len() == n,
            "adamw_step",
            "param {:?}, grad {:?}, moments {:?}/{:?}",
            param.shape,
            grad.shape,
            exp_avg.shape,
            exp_avg_sq.shape
        );
        ensure_shape!(step >= 1, "adamw_step", "step is 1-based, got 0");
        qtrain_optim::adamw_step(&mut param.data, &grad.data, &mut exp_avg.data, &mut exp_avg_sq.data, hyper, step, lr, grad_scale);
        Ok(())
    }

    fn fill_zero(&self, x: &mut CpuTensor) -> Result<()> {
        x.data.fill(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
