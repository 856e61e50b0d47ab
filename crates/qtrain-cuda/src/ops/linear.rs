//! `matmul`, `linear` and `linear_backward`: cuBLASLt GEMMs for the dense part (bf16 × bf16 with
//! f32 accumulation against bf16 weights, true f32 when both operands are f32), the bias kernels
//! of `elementwise.cu`, and the LoRA kernels of `lora.cu`. No kernel file of its own.
//!
//! Equations (x̃ = x ⊙ mask, s = LoRA scale), as the CPU twin:
//!   y  = x Wᵀ + b + s·(x̃ Aᵀ) Bᵀ
//!   dx = dy W + s·((dy B) A) ⊙ mask,  dW += dyᵀ x,  db += Σₙ dy,  dB += s·dyᵀ (x̃ Aᵀ),  dA += s·(dy B)ᵀ x̃

use qtrain_core::{DType, Dropout, LinearGrads, TensorInfo};

use crate::backend::CudaBackend;
use crate::error::Result;
use crate::gemm::{ElemType, GemmArgs, MatRef};
use crate::ops::{elementwise, lora as lk, reduce};
use crate::profile::OpKind;
use crate::tensor::CudaTensor;

/// LoRA operands already checked and converted to f32.
pub struct LoraArgs<'a> {
    /// `[r, in]`
    pub a: &'a CudaTensor,
    /// `[out, r]`
    pub b: &'a CudaTensor,
    pub scale: f32,
    /// LoRA dropout, drawn inside the kernels (`None`: no dropout).
    pub dropout: Option<Dropout>,
    pub rank: usize,
}

fn dense(t: &CudaTensor, rows: usize, cols: usize) -> MatRef {
    MatRef::dense(t.ptr(), t.elem(), rows, cols)
}

/// `C = op(A)·op(B)` for 2-D tensors; a fresh f32 `[m, n]`.
pub fn matmul(be: &CudaBackend, a: &CudaTensor, b: &CudaTensor, trans_a: bool, trans_b: bool, m: usize, n: usize) -> Result<CudaTensor> {
    let c = be.empty(&[m, n], DType::F32, "matmul output")?;
    let (aa, bb) = be.gemm_pair(a, b)?;
    be.gemm(&GemmArgs {
        a: dense(&aa, a.shape()[0], a.shape()[1]),
        trans_a,
        b: dense(&bb, b.shape()[0], b.shape()[1]),
        trans_b,
        c: MatRef::dense(c.ptr(), ElemType::F32, m, n),
        batch: 1,
        alpha: 1.0,
        beta: 0.0,
    })?;
    Ok(c)
}

/// `y = x Wᵀ + bias + s·(x̃ Aᵀ) Bᵀ`: x `[n, d_in]`, w `[d_out, d_in]` → f32 `out_shape`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    be: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    bias: Option<&CudaTensor>,
    lora: Option<LoraArgs<'_>>,
    (n, d_in, d_out): (usize, usize, usize),
    out_shape: &[usize],
) -> Result<CudaTensor> {
    let y = be.empty(out_shape, DType::F32, "linear output")?;
    {
        let (xx, ww) = be.gemm_pair(x, w)?;
        be.gemm(&GemmArgs {
            a: dense(&xx, n, d_in),
            trans_a: false,
            b: dense(&ww, d_out, d_in),
            trans_b: true,
            c: MatRef::dense(y.ptr(), ElemType::F32, n, d_out),
            batch: 1,
            alpha: 1.0,
            beta: 0.0,
        })?;
    }
    if let Some(b) = bias {
        elementwise::bias_add(be, y.ptr(), b, n, d_out)?;
    }
    if let Some(l) = lora {
        be.op_mark(OpKind::Lora)?;
        let x32 = be.as_f32(x)?;
        let xa = be.empty(&[n, l.rank], DType::F32, "LoRA x·Aᵀ")?;
        lk::down(be, x32.ptr(), &lk::DropoutArgs::new(l.dropout), l.a.ptr(), xa.ptr(), n, d_in, l.rank)?;
        lk::up(be, xa.ptr(), l.b.ptr(), y.ptr(), n, d_out, l.rank, l.scale)?;
    }
    Ok(y)
}

/// Backward of [`forward`]; gradient buffers are f32 and checked by the caller.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    be: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    lora: Option<LoraArgs<'_>>,
    dy: &CudaTensor,
    grads: LinearGrads<'_, CudaTensor>,
    need_dx: bool,
    (n, d_in, d_out): (usize, usize, usize),
) -> Result<Option<CudaTensor>> {
    let dy32 = be.as_f32(dy)?;
    let dx = if need_dx {
        let dx = be.empty(x.shape(), DType::F32, "linear dx")?;
        let (dd, ww) = be.gemm_pair(dy, w)?;
        be.gemm(&GemmArgs {
            a: dense(&dd, n, d_out),
            trans_a: false,
            b: dense(&ww, d_out, d_in),
            trans_b: false,
            c: MatRef::dense(dx.ptr(), ElemType::F32, n, d_in),
            batch: 1,
            alpha: 1.0,
            beta: 0.0,
        })?;
        Some(dx)
    } else {
        None
    };
    let x32 = be.as_f32(x)?;
    if let Some(gw) = grads.weight {
        // dW [d_out, d_in] += dyᵀ x, in f32.
        be.gemm(&GemmArgs {
            a: dense(&dy32, n, d_out),
            trans_a: true,
            b: dense(&x32, n, d_in),
            trans_b: false,
            c: MatRef::dense(gw.ptr(), ElemType::F32, d_out, d_in),
            batch: 1,
            alpha: 1.0,
            beta: 1.0,
        })?;
    }
    if let Some(gb) = grads.bias {
        reduce::col_sum_add(be, dy32.ptr(), n, d_out, gb.ptr())?;
    }
    if let Some(l) = lora {
        be.op_mark(OpKind::Lora)?;
        let r = l.rank;
        let drop = lk::DropoutArgs::new(l.dropout);
        if let Some(gb) = grads.lora_b {
            // dB [d_out, r] += s · dyᵀ (x̃ Aᵀ)
            let xa = be.empty(&[n, r], DType::F32, "LoRA x·Aᵀ (backward)")?;
            lk::down(be, x32.ptr(), &drop, l.a.ptr(), xa.ptr(), n, d_in, r)?;
            be.gemm(&GemmArgs {
                a: dense(&dy32, n, d_out),
                trans_a: true,
                b: MatRef::dense(xa.ptr(), ElemType::F32, n, r),
                trans_b: false,
                c: MatRef::dense(gb.ptr(), ElemType::F32, d_out, r),
                batch: 1,
                alpha: l.scale,
                beta: 1.0,
            })?;
        }
        if grads.lora_a.is_some() || dx.is_some() {
            // g = s · dy B  [n, r]
            let g = be.empty(&[n, r], DType::F32, "LoRA s·dy·B")?;
            lk::dy_b(be, dy32.ptr(), l.b.ptr(), g.ptr(), n, d_out, r, l.scale)?;
            if let Some(ga) = grads.lora_a {
                // dA [r, d_in] += gᵀ x̃
                let masked;
                let xl = match l.dropout {
                    Some(_) => {
                        masked = be.empty(x.shape(), DType::F32, "LoRA x ⊙ dropout mask")?;
                        lk::dropout_apply(be, x32.ptr(), masked.ptr(), n, d_in, &drop)?;
                        masked.ptr()
                    }
                    None => x32.ptr(),
                };
                be.gemm(&GemmArgs {
                    a: MatRef::dense(g.ptr(), ElemType::F32, n, r),
                    trans_a: true,
                    b: MatRef::dense(xl, ElemType::F32, n, d_in),
                    trans_b: false,
                    c: MatRef::dense(ga.ptr(), ElemType::F32, r, d_in),
                    batch: 1,
                    alpha: 1.0,
                    beta: 1.0,
                })?;
            }
            if let Some(dx) = dx.as_ref() {
                lk::dx(be, g.ptr(), l.a.ptr(), &drop, dx.ptr(), n, d_in, r)?;
            }
        }
    }
    Ok(dx)
}
