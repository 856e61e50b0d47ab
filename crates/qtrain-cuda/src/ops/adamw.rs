//! Launchers for `kernels/adamw.cu`.

use cudarc::driver::PushKernelArg;
use qtrain_core::{AdamWScalars, DType};

use super::{grid_1d, long};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;
use crate::tensor::CudaTensor;

/// One AdamW step over `n` elements with torch's f32 scalars (param f32 or bf16; grad and moments f32).
pub fn step(
    be: &CudaBackend,
    param: &CudaTensor,
    grad: &CudaTensor,
    m: &CudaTensor,
    v: &CudaTensor,
    s: &AdamWScalars,
    n: usize,
) -> Result<()> {
    let kernel = if param.dtype == DType::BF16 { k::ADAMW_STEP_BF16 } else { k::ADAMW_STEP_F32 };
    let (pp, pg, pm, pv, n64) = (param.ptr(), grad.ptr(), m.ptr(), v.ptr(), long(n));
    let has_decay: i32 = s.decay.is_some() as i32;
    let decay = s.decay.unwrap_or(1.0);
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pp)
        .arg(&pg)
        .arg(&pm)
        .arg(&pv)
        .arg(&n64)
        .arg(&has_decay)
        .arg(&decay)
        .arg(&s.one_minus_beta1)
        .arg(&s.beta2)
        .arg(&s.one_minus_beta2)
        .arg(&s.bias_correction2_sqrt)
        .arg(&s.eps)
        .arg(&s.neg_step_size)
        .arg(&s.grad_scale);
    // SAFETY: (P* param, const float* grad, float* m, float* v, long long n, int has_decay,
    // float × 8) in the order of adamw.cu; the four buffers hold n elements each.
    unsafe { be.launch(kernel, l, grid_1d(n)) }
}
