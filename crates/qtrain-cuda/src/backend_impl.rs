//! `impl qtrain_core::Backend for CudaBackend`: each op validates its operands exactly as the
//! CPU reference does (same ops names, same error kinds), converts storage types where a kernel
//! wants f32, and calls its launcher in `ops/`.

use qtrain_core::shapes::{self, rows_cols};
use qtrain_core::{
    AdamWScalars, AttentionMask, Backend, CoreError, CrossEntropyGrad, CrossEntropyOutput, DType, HostData, LinearGrads, LoraWeights,
    Result, TensorInfo,
};

use crate::backend::CudaBackend;
use crate::error::CudaError;
use crate::ops::{self, attention::Dims, linear::LoraArgs};
use crate::profile::OpKind;
use crate::tensor::CudaTensor;

/// Gradient buffers must be f32 (their shapes are checked by the op's shape rule).
fn require_f32_grad(op: &'static str, what: &str, g: Option<&CudaTensor>) -> Result<()> {
    match g {
        Some(g) if g.dtype != DType::F32 => {
            Err(CudaError::Unsupported { op, detail: format!("{what} gradient buffer must be f32, is {:?}", g.dtype) }.into())
        }
        _ => Ok(()),
    }
}

fn require_f32(op: &'static str, what: &str, t: &CudaTensor) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(CudaError::Unsupported { op, detail: format!("{what} must be f32 (it is written to), is {:?}", t.dtype) }.into());
    }
    Ok(())
}

impl CudaBackend {
    /// LoRA operands (their shapes already checked by the op's rule) as f32 launcher args.
    fn lora_args<'a>(
        &self,
        op: &'static str,
        l: &'a LoraWeights<'a, CudaTensor>,
        x: &CudaTensor,
        d_in: usize,
        keep: &'a mut Vec<CudaTensor>,
    ) -> Result<LoraArgs<'a>> {
        let r = l.a.shape().first().copied().unwrap_or(0);
        if l.dropout.is_some() {
            shapes::check_dropout_rows(op, x.numel().checked_div(d_in).unwrap_or(0), d_in)?;
        }
        // LoRA weights are f32 by construction; convert anything else once.
        for t in [l.a, l.b] {
            if !t.is_f32() {
                let c = self.empty(t.shape(), DType::F32, "LoRA operand as f32")?;
                ops::copy::cast(self, t, &c)?;
                keep.push(c);
            }
        }
        let keep: &'a Vec<CudaTensor> = keep;
        let mut converted = keep.iter();
        let mut pick = |t: &'a CudaTensor| if t.is_f32() { t } else { converted.next().expect("converted above") };
        let a = pick(l.a);
        let b = pick(l.b);
        Ok(LoraArgs { a, b, scale: l.scale, dropout: l.dropout, rank: r })
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> String {
        self.describe()
    }

    fn upload(&self, data: HostData<'_>, shape: &[usize]) -> Result<CudaTensor> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(CoreError::ElementCount { op: "upload", shape: shape.to_vec(), expected, got: data.len() });
        }
        let (dtype, buf) = match data {
            // Uploaded tensors are weights, parameters and tables that stay: exact-size blocks.
            HostData::F32(d) => (DType::F32, self.upload_slice_sized(d, "uploaded tensor", true)?),
            HostData::BF16(d) => {
                let bits: Vec<u16> = d.iter().map(|x| x.to_bits()).collect();
                (DType::BF16, self.upload_slice_sized(&bits, "uploaded bf16 tensor", true)?)
            }
            HostData::F16(_) => (DType::F32, self.upload_slice_sized(&data.to_f32_vec(), "uploaded f16 tensor (widened to f32)", true)?),
        };
        Ok(CudaTensor { shape: shape.to_vec(), dtype, buf })
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        let n = t.numel();
        Ok(match t.dtype {
            DType::BF16 => self.download_slice::<u16>(t.ptr(), n)?.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
            _ => self.download_slice::<f32>(t.ptr(), n)?,
        })
    }

    fn zeros(&self, shape: &[usize]) -> Result<CudaTensor> {
        Ok(self.zeros_f32(shape, "zeros")?)
    }

    fn copy(&self, x: &CudaTensor) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let out = self.empty(&x.shape, x.dtype, "copy")?;
        let bytes = x.size_in_bytes();
        if bytes > 0 {
            self.ctx.bind_to_thread().map_err(CudaError::from)?;
            // SAFETY: both buffers hold `bytes` bytes (same shape and dtype) and are distinct;
            // queued on the backend's stream.
            unsafe { cudarc::driver::result::memcpy_dtod_async(out.ptr(), x.ptr(), bytes, self.stream.cu_stream()) }
                .map_err(CudaError::from)?;
        }
        Ok(out)
    }

    fn reshape(&self, t: CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        shapes::check_reshape(&t.shape, shape)?;
        Ok(CudaTensor { shape: shape.to_vec(), ..t })
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &[usize]) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (n, c) = rows_cols(&x.shape);
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(CoreError::Index { op: "gather_rows", index: r, size: n });
        }
        let out = self.empty(&[rows.len(), c], DType::F32, "gather_rows output")?;
        if rows.is_empty() || c == 0 {
            return Ok(out);
        }
        let x32 = self.as_f32(x)?;
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let dev = self.upload_slice(&idx, "gather_rows indices")?;
        ops::copy::gather_rows(self, x32.ptr(), dev.ptr(), rows.len(), c, out.ptr())?;
        Ok(out)
    }

    fn write_seq(&self, dst: &mut CudaTensor, src: &CudaTensor, at: usize) -> Result<()> {
        self.op_mark(OpKind::Elementwise)?;
        let (b, cap, t, inner) = shapes::check_write_seq(&dst.shape, &src.shape, at)?;
        let converted;
        let src = if src.dtype == dst.dtype {
            src
        } else {
            converted = self.empty(&src.shape, dst.dtype, "write_seq source converted")?;
            ops::copy::cast(self, src, &converted)?;
            &converted
        };
        let es = dst.dtype.size_in_bytes();
        let bytes = t * inner * es;
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(CudaError::from)?;
        for bi in 0..b {
            let d0 = dst.ptr() + (((bi * cap + at) * inner) * es) as u64;
            let s0 = src.ptr() + ((bi * t * inner) * es) as u64;
            // SAFETY: both ranges lie inside their tensors (shapes checked above) and do not
            // overlap (distinct tensors); queued on the backend's stream.
            unsafe { cudarc::driver::result::memcpy_dtod_async(d0, s0, bytes, self.stream.cu_stream()) }.map_err(CudaError::from)?;
        }
        Ok(())
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        shapes::check_same_shape("add", &a.shape, &b.shape)?;
        let (a32, b32) = (self.as_f32(a)?, self.as_f32(b)?);
        let out = self.empty(&a.shape, DType::F32, "add output")?;
        ops::elementwise::add(self, &a32, &b32, &out)?;
        Ok(out)
    }

    fn add_scaled_assign(&self, acc: &mut CudaTensor, x: &CudaTensor, alpha: f32) -> Result<()> {
        self.op_mark(OpKind::Elementwise)?;
        shapes::check_same_count("add_scaled_assign", &acc.shape, &x.shape)?;
        require_f32("add_scaled_assign", "the accumulator", acc)?;
        let x32 = self.as_f32(x)?;
        ops::elementwise::axpy(self, acc.ptr(), x32.ptr(), alpha, acc.numel())?;
        Ok(())
    }

    fn matmul(&self, a: &CudaTensor, b: &CudaTensor, trans_a: bool, trans_b: bool) -> Result<CudaTensor> {
        self.op_mark(OpKind::Gemm)?;
        let (m, k, n) = shapes::check_matmul_shapes(&a.shape, &b.shape, trans_a, trans_b)?;
        if k == 0 {
            return self.zeros(&[m, n]);
        }
        Ok(ops::linear::matmul(self, a, b, trans_a, trans_b, m, n)?)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        lora: Option<LoraWeights<'_, CudaTensor>>,
    ) -> Result<CudaTensor> {
        self.op_mark(OpKind::Gemm)?;
        let lora_shapes = lora.as_ref().map(|l| (l.a.shape(), l.b.shape()));
        let shapes::LinearDims { rows: n, d_in, d_out } =
            shapes::check_linear_shapes("linear", &x.shape, &w.shape, bias.map(|b| b.shape()), lora_shapes)?;
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = d_out;
        if n == 0 || d_out == 0 || d_in == 0 {
            let y = self.zeros(&shape)?;
            return Ok(y);
        }
        let mut keep = Vec::new();
        let args = match lora.as_ref() {
            Some(l) => Some(self.lora_args("linear", l, x, d_in, &mut keep)?),
            None => None,
        };
        Ok(ops::linear::forward(self, x, w, bias, args, (n, d_in, d_out), &shape)?)
    }

    fn embedding(&self, table: &CudaTensor, ids: &[u32]) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (_, c) = shapes::check_table_ids("embedding", "table", &table.shape, ids)?;
        let out = self.empty(&[ids.len(), c], DType::F32, "embedding output")?;
        if ids.is_empty() || c == 0 {
            return Ok(out);
        }
        let dev = self.upload_slice(ids, "token ids")?;
        ops::embedding::forward(self, table, dev.ptr(), ids.len(), c, &out)?;
        Ok(out)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (rows, c) = shapes::check_rms_norm_shapes(&x.shape, &w.shape)?;
        let out = self.empty(&x.shape, DType::F32, "rms_norm output")?;
        if rows == 0 {
            return Ok(out);
        }
        let x32 = self.as_f32(x)?;
        ops::rms_norm::forward(self, &x32, w, eps, rows, c, &out)?;
        Ok(out)
    }

    fn rope(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor, positions: &[u32]) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (n, h, d) = shapes::check_rope_shapes("rope", &x.shape, &cos.shape, &sin.shape, positions)?;
        self.rope_common(false, x, cos, sin, positions, (n, h, d))
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        mask: &AttentionMask,
        scale: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.op_mark(OpKind::Attention)?;
        let ad = shapes::check_attention_shapes("attention", &q.shape, &k.shape, &v.shape, mask)?;
        let (q32, k32, v32) = (self.as_f32(q)?, self.as_f32(k)?, self.as_f32(v)?);
        let dims = Dims { shape: ad, s: mask.kv_len };
        Ok(ops::attention::forward(self, &q32, &k32, &v32, mask, scale, dims)?)
    }

    fn swiglu(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        shapes::check_swiglu_shapes("swiglu", &gate.shape, &up.shape, None)?;
        let (g32, u32_) = (self.as_f32(gate)?, self.as_f32(up)?);
        let out = self.empty(&gate.shape, DType::F32, "swiglu output")?;
        ops::swiglu::forward(self, &g32, &u32_, &out, gate.numel())?;
        Ok(out)
    }

    fn linear_backward(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        lora: Option<LoraWeights<'_, CudaTensor>>,
        dy: &CudaTensor,
        grads: LinearGrads<'_, CudaTensor>,
        need_dx: bool,
    ) -> Result<Option<CudaTensor>> {
        self.op_mark(OpKind::Gemm)?;
        let op = "linear_backward";
        let grad_shapes = grads.shapes();
        let lora_shapes = lora.as_ref().map(|l| (l.a.shape(), l.b.shape()));
        let shapes::LinearDims { rows: n, d_in, d_out } =
            shapes::check_linear_backward_shapes(&x.shape, &w.shape, lora_shapes, &dy.shape, grad_shapes)?;
        require_f32_grad(op, "weight", grads.weight.as_deref())?;
        require_f32_grad(op, "bias", grads.bias.as_deref())?;
        if lora.is_some() {
            require_f32_grad(op, "lora_A", grads.lora_a.as_deref())?;
            require_f32_grad(op, "lora_B", grads.lora_b.as_deref())?;
        }
        if n == 0 || d_in == 0 || d_out == 0 {
            return Ok(if need_dx { Some(self.zeros(&x.shape)?) } else { None });
        }
        let mut keep = Vec::new();
        let args = match lora.as_ref() {
            Some(l) => Some(self.lora_args(op, l, x, d_in, &mut keep)?),
            None => None,
        };
        // Without LoRA, LoRA gradient buffers are ignored, as on the CPU.
        let grads = if args.is_some() { grads } else { LinearGrads { lora_a: None, lora_b: None, ..grads } };
        Ok(ops::linear::backward(self, x, w, args, dy, grads, need_dx, (n, d_in, d_out))?)
    }

    fn embedding_backward(&self, grad_table: &mut CudaTensor, ids: &[u32], dy: &CudaTensor) -> Result<()> {
        self.op_mark(OpKind::Elementwise)?;
        let (_, c) = shapes::check_embedding_backward_shapes(&grad_table.shape, ids, &dy.shape)?;
        require_f32("embedding_backward", "the table gradient", grad_table)?;
        if ids.is_empty() || c == 0 {
            return Ok(());
        }
        let dy32 = self.as_f32(dy)?;
        let dev = self.upload_slice(ids, "token ids")?;
        ops::embedding::backward(self, grad_table, dev.ptr(), ids.len(), c, &dy32)?;
        Ok(())
    }

    fn rms_norm_backward(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        dy: &CudaTensor,
        grad_w: Option<&mut CudaTensor>,
    ) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (rows, c) = shapes::check_rms_norm_backward_shapes(&x.shape, &w.shape, &dy.shape, grad_w.as_deref().map(|g| g.shape()))?;
        require_f32_grad("rms_norm_backward", "weight", grad_w.as_deref())?;
        let dx = self.empty(&x.shape, DType::F32, "rms_norm dx")?;
        if rows == 0 {
            return Ok(dx);
        }
        let (x32, dy32) = (self.as_f32(x)?, self.as_f32(dy)?);
        ops::rms_norm::backward(self, &x32, w, eps, &dy32, rows, c, &dx, grad_w.as_deref())?;
        Ok(dx)
    }

    fn rope_backward(&self, dy: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor, positions: &[u32]) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        let (n, h, d) = shapes::check_rope_shapes("rope_backward", &dy.shape, &cos.shape, &sin.shape, positions)?;
        self.rope_common(true, dy, cos, sin, positions, (n, h, d))
    }

    fn attention_backward(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        out: &CudaTensor,
        lse: &CudaTensor,
        dout: &CudaTensor,
        mask: &AttentionMask,
        scale: f32,
    ) -> Result<(CudaTensor, CudaTensor, CudaTensor)> {
        self.op_mark(OpKind::Attention)?;
        let ad = shapes::check_attention_backward_shapes(&q.shape, &k.shape, &v.shape, &out.shape, &lse.shape, &dout.shape, mask)?;
        let (b, t, h, d) = (ad.batch, ad.q_len, ad.heads, ad.head_dim);
        // Backward takes no cache: its shape check holds kv_len == the k/v rows.
        let dims = Dims { shape: ad, s: ad.kv_capacity };
        if b * t * h * d == 0 {
            return Ok((self.zeros(&q.shape)?, self.zeros(&k.shape)?, self.zeros(&v.shape)?));
        }
        let (q32, k32, v32, o32, l32, do32) =
            (self.as_f32(q)?, self.as_f32(k)?, self.as_f32(v)?, self.as_f32(out)?, self.as_f32(lse)?, self.as_f32(dout)?);
        Ok(ops::attention::backward(self, &q32, &k32, &v32, &o32, &l32, &do32, mask, scale, dims)?)
    }

    fn swiglu_backward(&self, gate: &CudaTensor, up: &CudaTensor, dy: &CudaTensor) -> Result<(CudaTensor, CudaTensor)> {
        self.op_mark(OpKind::Elementwise)?;
        shapes::check_swiglu_shapes("swiglu_backward", &gate.shape, &up.shape, Some(&dy.shape))?;
        let (g32, u32_, d32) = (self.as_f32(gate)?, self.as_f32(up)?, self.as_f32(dy)?);
        let dg = self.empty(&gate.shape, DType::F32, "swiglu dgate")?;
        let du = self.empty(&up.shape, DType::F32, "swiglu dup")?;
        ops::swiglu::backward(self, &g32, &u32_, &d32, &dg, &du, gate.numel())?;
        Ok((dg, du))
    }

    fn lm_head_cross_entropy(
        &self,
        hidden: &CudaTensor,
        w: &CudaTensor,
        targets: &[i32],
        grad: Option<CrossEntropyGrad<'_, CudaTensor>>,
    ) -> Result<CrossEntropyOutput<CudaTensor>> {
        self.op_mark(OpKind::Loss)?;
        let op = "lm_head_cross_entropy";
        let grad_w = grad.as_ref().and_then(|g| g.grad_w.as_deref());
        let (n, c, vocab) = shapes::check_cross_entropy_shapes(&hidden.shape, &w.shape, targets, grad_w.map(|g| g.shape()))?;
        require_f32_grad(op, "head", grad_w)?;
        let rows: Vec<u32> = (0..n).filter(|&i| targets[i] != -100).map(|i| i as u32).collect();
        let row_targets: Vec<i32> = rows.iter().map(|&i| targets[i as usize]).collect();
        let h32 = self.as_f32(hidden)?;
        Ok(ops::cross_entropy::forward(self, &h32, w, &rows, &row_targets, grad, (n, c, vocab))?)
    }

    fn sum_squares(&self, x: &CudaTensor) -> Result<f64> {
        let x32 = self.as_f32(x)?;
        Ok(ops::reduce::sum_squares(self, x32.ptr(), x.numel())?)
    }

    fn mul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.op_mark(OpKind::Elementwise)?;
        shapes::check_same_shape("mul", &a.shape, &b.shape)?;
        let (a32, b32) = (self.as_f32(a)?, self.as_f32(b)?);
        let out = self.empty(&a.shape, DType::F32, "mul output")?;
        ops::elementwise::mul(self, &a32, &b32, &out)?;
        Ok(out)
    }

    fn adamw_step(
        &self,
        param: &mut CudaTensor,
        grad: &CudaTensor,
        exp_avg: &mut CudaTensor,
        exp_avg_sq: &mut CudaTensor,
        scalars: &AdamWScalars,
    ) -> Result<()> {
        self.op_mark(OpKind::Optimizer)?;
        let n = shapes::check_adamw_shapes(&param.shape, &grad.shape, &exp_avg.shape, &exp_avg_sq.shape)?;
        require_f32("adamw_step", "exp_avg", exp_avg)?;
        require_f32("adamw_step", "exp_avg_sq", exp_avg_sq)?;
        if n == 0 {
            return Ok(());
        }
        let g32 = self.as_f32(grad)?;
        ops::adamw::step(self, param, &g32, exp_avg, exp_avg_sq, scalars, n)?;
        Ok(())
    }

    fn fill_zero(&self, x: &mut CudaTensor) -> Result<()> {
        self.op_mark(OpKind::Elementwise)?;
        self.memset_zero(&x.buf, x.size_in_bytes())?;
        Ok(())
    }

    fn device_peak_bytes(&self) -> Option<usize> {
        Some(self.peak_bytes())
    }

    fn reset_device_peak(&self) {
        self.reset_peak()
    }

    fn begin_phase(&self, name: &'static str) {
        // Timing is best effort: an event that cannot be recorded leaves a gap, never an error.
        let _ = self.phase_mark(name);
    }

    fn set_profiling(&self, on: bool) {
        self.set_profiler(on)
    }

    fn take_profile(&self) -> Result<Option<qtrain_core::Profile>> {
        Ok(self.finish_profile()?)
    }
}

impl CudaBackend {
    fn rope_common(
        &self,
        backward: bool,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        positions: &[u32],
        (n, h, d): (usize, usize, usize),
    ) -> Result<CudaTensor> {
        let out = self.empty(&x.shape, DType::F32, if backward { "rope dx" } else { "rope output" })?;
        if n * h * d == 0 {
            return Ok(out);
        }
        let (x32, c32, s32) = (self.as_f32(x)?, self.as_f32(cos)?, self.as_f32(sin)?);
        let dev = self.upload_slice(positions, "rope positions")?;
        ops::rope::run(self, backward, &x32, &c32, &s32, dev.ptr(), (n, h, d), &out)?;
        Ok(out)
    }
}
