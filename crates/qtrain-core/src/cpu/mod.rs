//! The CPU backend: f32 activations, rayon across rows, and matrix products in one of two
//! precisions ([`Precision`]): f32 through the `gemm` crate (the reference), or bf16 × bf16 with
//! f32 sums through [`gemm_bf16`] (`torch.autocast(bfloat16)`'s numerics), with frozen weights
//! then kept in bf16.
//!
//! This is the reference implementation of [`Backend`]: each op is written as plain, readable
//! loops (plus one GEMM call where there is a product) so that a reader can check it against
//! the formula in the op's doc comment, and so other backends have a twin to compare against.
//! It must not take numerical shortcuts beyond the chosen precision of products (everything
//! else — norms, softmax, losses, reductions, optimizer — is f32; `exp` is [`math::exp`],
//! within 1 ulp, so that element-wise loops vectorise).

pub mod attention;
pub mod backward;
pub mod gemm;
pub mod gemm_bf16;
pub mod math;

use half::bf16;
use rayon::prelude::*;

pub use gemm::Precision;
use gemm_bf16::{Operand, Product};

use crate::backend::{AttentionMask, Backend, CrossEntropyGrad, CrossEntropyOutput, LinearGrads, LoraWeights, TensorInfo};
use crate::error::{CoreError, Result};
use crate::shapes::{self, rows_cols};
use crate::{ensure_shape, AdamWScalars, DType, HostData};

/// A contiguous row-major tensor in host memory: f32, or bf16 for a frozen weight uploaded by
/// [`Backend::upload_weight`] in bf16 mode (only products, embedding lookups, row gathers and
/// downloads read those; every other op takes f32 tensors and says so when it gets a bf16 one).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    shape: Vec<usize>,
    /// The elements when stored as f32; empty for a bf16 tensor.
    data: Vec<f32>,
    /// The elements when stored as bf16; empty for an f32 tensor.
    bf16: Vec<bf16>,
}

impl CpuTensor {
    /// Wrap `data` with `shape`; the element counts must agree.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        check_count("CpuTensor::new", shape, data.len())?;
        Ok(CpuTensor { shape: shape.to_vec(), data, bf16: Vec::new() })
    }

    /// Wrap bf16 `data` with `shape` (a frozen weight).
    pub fn new_bf16(data: Vec<bf16>, shape: &[usize]) -> Result<Self> {
        check_count("CpuTensor::new_bf16", shape, data.len())?;
        // (An empty tensor has an empty `bf16` too, so it reads as f32: both types agree.)
        Ok(CpuTensor { shape: shape.to_vec(), data: Vec::new(), bf16: data })
    }

    /// The f32 elements (empty when the tensor is stored in bf16: see [`CpuTensor::dtype`]).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// How the elements are stored.
    pub fn dtype(&self) -> DType {
        if self.bf16.is_empty() {
            DType::F32
        } else {
            DType::BF16
        }
    }

    /// Bytes of element storage.
    pub fn storage_bytes(&self) -> usize {
        self.data.len() * 4 + self.bf16.len() * 2
    }

    /// The elements as a product operand, in their stored type.
    pub fn operand(&self) -> Operand<'_> {
        if self.bf16.is_empty() {
            Operand::F32(&self.data)
        } else {
            Operand::Bf16(&self.bf16)
        }
    }

    /// The elements as f32: borrowed, or widened from bf16 (exact).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        if self.bf16.is_empty() {
            std::borrow::Cow::Borrowed(&self.data)
        } else {
            std::borrow::Cow::Owned(self.bf16.iter().map(|v| v.to_f32()).collect())
        }
    }

    /// The f32 elements of a tensor an op can only take in f32; a bf16 tensor is an error
    /// naming the op.
    fn f32s(&self, op: &'static str) -> Result<&[f32]> {
        ensure_shape!(self.bf16.is_empty(), op, "takes f32 tensors, got a bf16 weight {:?}", self.shape);
        Ok(&self.data)
    }

    /// [`CpuTensor::f32s`], writable (gradient buffers).
    fn f32s_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        ensure_shape!(self.bf16.is_empty(), op, "takes f32 tensors, got a bf16 weight {:?}", self.shape);
        Ok(&mut self.data)
    }
}

fn check_count(op: &'static str, shape: &[usize], got: usize) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != got {
        return Err(CoreError::ElementCount { op, shape: shape.to_vec(), expected, got });
    }
    Ok(())
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The CPU backend. Threads come from rayon's global pool (set `RAYON_NUM_THREADS` to pin).
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    precision: Precision,
    /// Frozen weights ([`Backend::upload_weight`]) kept in bf16 (only with [`Precision::Bf16`]).
    bf16_weights: bool,
}

impl CpuBackend {
    /// The f32 reference backend.
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// bf16 products with f32 sums; `bf16_weights` keeps frozen weights in bf16 (LoRA and
    /// inference). Full fine-tuning passes false: its weights stay f32 masters and the products
    /// round them to bf16 as they are packed, as torch's mixed precision computes with bf16
    /// copies.
    pub fn bf16(bf16_weights: bool) -> Self {
        CpuBackend { precision: Precision::Bf16, bf16_weights }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// One line saying which numeric path runs, for logs: "f32 weights, f32 GEMMs" or
    /// "bf16 weights, AVX512-BF16 GEMMs".
    pub fn describe_precision(&self) -> String {
        match self.precision {
            Precision::F32 => "f32 weights, f32 GEMMs".to_string(),
            Precision::Bf16 => format!(
                "{} weights, bf16 × bf16 → f32 GEMMs ({})",
                if self.bf16_weights { "bf16" } else { "f32 master" },
                gemm_bf16::Kernel::detect().describe()
            ),
        }
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

/// Rows `rows` of a `[N, C]` tensor (f32, or a bf16 table widened row by row) as an f32
/// `[rows.len(), C]`: the embedding lookup and `gather_rows`.
fn gather_table_rows(op: &'static str, x: &CpuTensor, rows: impl ExactSizeIterator<Item = usize>) -> Result<CpuTensor> {
    let (n, c) = rows_cols(&x.shape);
    let count = rows.len();
    let mut out = Vec::with_capacity(count * c);
    for r in rows {
        if r >= n {
            return Err(CoreError::Index { op, index: r, size: n });
        }
        match x.operand() {
            Operand::F32(d) => out.extend_from_slice(&d[r * c..(r + 1) * c]),
            Operand::Bf16(d) => out.extend(d[r * c..(r + 1) * c].iter().map(|v| v.to_f32())),
        }
    }
    CpuTensor::new(out, &[count, c])
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn upload(&self, data: HostData<'_>, shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_f32_vec(), shape)
    }

    fn upload_weight(&self, data: HostData<'_>, shape: &[usize]) -> Result<CpuTensor> {
        if !(self.bf16_weights && shape.len() == 2) {
            return self.upload(data, shape);
        }
        CpuTensor::new_bf16(data.to_bf16_vec(), shape)
    }

    fn upload_weight_bf16(&self, data: Vec<bf16>, shape: &[usize]) -> Result<CpuTensor> {
        if !(self.bf16_weights && shape.len() == 2) {
            return self.upload_weight(HostData::BF16(&data), shape);
        }
        CpuTensor::new_bf16(data, shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.to_f32().into_owned())
    }

    fn zeros(&self, shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(vec![0.0; shape.iter().product()], shape)
    }

    fn copy(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(x.clone())
    }

    fn reshape(&self, t: CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        shapes::check_reshape(&t.shape, shape)?;
        Ok(CpuTensor { shape: shape.to_vec(), ..t })
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        gather_table_rows("gather_rows", x, rows.iter().copied())
    }

    fn write_seq(&self, dst: &mut CpuTensor, src: &CpuTensor, at: usize) -> Result<()> {
        let (b, cap, t, inner) = shapes::check_write_seq(&dst.shape, &src.shape, at)?;
        for bi in 0..b {
            let d0 = (bi * cap + at) * inner;
            let s0 = bi * t * inner;
            dst.data[d0..d0 + t * inner].copy_from_slice(&src.data[s0..s0 + t * inner]);
        }
        Ok(())
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        shapes::check_same_shape("add", &a.shape, &b.shape)?;
        let data = a.f32s("add")?.par_iter().zip(b.f32s("add")?).map(|(x, y)| x + y).collect();
        CpuTensor::new(data, &a.shape)
    }

    fn add_scaled_assign(&self, acc: &mut CpuTensor, x: &CpuTensor, alpha: f32) -> Result<()> {
        shapes::check_same_count("add_scaled_assign", &acc.shape, &x.shape)?;
        acc.f32s("add_scaled_assign")?;
        let x = x.f32s("add_scaled_assign")?;
        acc.data.par_iter_mut().zip(x).for_each(|(a, v)| *a += alpha * v);
        Ok(())
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor, trans_a: bool, trans_b: bool) -> Result<CpuTensor> {
        let (m, k, n) = shapes::check_matmul_shapes(&a.shape, &b.shape, trans_a, trans_b)?;
        CpuTensor::new(gemm::product_new(self.precision, &Product::new(m, n, k, a.operand(), trans_a, b.operand(), trans_b), 1.0), &[m, n])
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        lora: Option<LoraWeights<'_, CpuTensor>>,
    ) -> Result<CpuTensor> {
        let lora_shapes = lora.as_ref().map(|l| (l.a.shape(), l.b.shape()));
        let shapes::LinearDims { rows: n, d_in, d_out } =
            shapes::check_linear_shapes("linear", &x.shape, &w.shape, bias.map(|b| b.shape()), lora_shapes)?;
        let mut y = gemm::product_new(
            self.precision,
            &Product::new(n, d_out, d_in, Operand::F32(x.f32s("linear")?), false, w.operand(), true),
            1.0,
        );
        if let Some(bias) = bias {
            y.par_chunks_mut(d_out).for_each(|row| row.iter_mut().zip(&bias.data).for_each(|(v, b)| *v += b));
        }
        if let Some(l) = lora {
            let r = l.a.shape[0];
            let xl = backward::lora_input(x, l.dropout)?;
            let mut xa = vec![0.0; n * r];
            gemm::gemm_f32(n, r, d_in, &xl, false, &l.a.data, true, &mut xa, false, 1.0);
            gemm::gemm_f32(n, d_out, r, &xa, false, &l.b.data, true, &mut y, true, l.scale);
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = d_out;
        CpuTensor::new(y, &shape)
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32]) -> Result<CpuTensor> {
        shapes::check_table_ids("embedding", "table", &table.shape, ids)?;
        gather_table_rows("embedding", table, ids.iter().map(|&id| id as usize))
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let (_, c) = shapes::check_rms_norm_shapes(&x.shape, &w.shape)?;
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
        let (_, h, d) = shapes::check_rope_shapes("rope", &x.shape, &cos.shape, &sin.shape, positions)?;
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
        attention::attention(q, k, v, mask, scale, attention::QUERY_BLOCK, self.precision)
    }

    fn swiglu(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        shapes::check_swiglu_shapes("swiglu", &gate.shape, &up.shape, None)?;
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
        CpuTensor::new(data, &gate.shape)
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
        backward::linear_backward(self.precision, x, w, lora, dy, grads, need_dx)
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
        attention::attention_backward(q, k, v, out, lse, dout, mask, scale, attention::QUERY_BLOCK, self.precision)
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
        backward::lm_head_cross_entropy(self.precision, hidden, w, targets, grad)
    }

    fn sum_squares(&self, x: &CpuTensor) -> Result<f64> {
        Ok(math::sum_of_squares(x.f32s("sum_squares")?))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        shapes::check_same_shape("mul", &a.shape, &b.shape)?;
        let data = a.f32s("mul")?.par_iter().zip(b.f32s("mul")?).map(|(x, y)| x * y).collect();
        CpuTensor::new(data, &a.shape)
    }

    fn adamw_step(
        &self,
        param: &mut CpuTensor,
        grad: &CpuTensor,
        exp_avg: &mut CpuTensor,
        exp_avg_sq: &mut CpuTensor,
        scalars: &AdamWScalars,
    ) -> Result<()> {
        param.f32s("adamw_step")?;
        shapes::check_adamw_shapes(&param.shape, &grad.shape, &exp_avg.shape, &exp_avg_sq.shape)?;
        crate::adamw::adamw_update(&mut param.data, &grad.data, &mut exp_avg.data, &mut exp_avg_sq.data, scalars);
        Ok(())
    }

    fn fill_zero(&self, x: &mut CpuTensor) -> Result<()> {
        x.f32s("fill_zero")?;
        x.data.fill(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
