//! Launchers for `kernels/swiglu.cu`.

use super::{grid_1d, long};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;
use crate::tensor::CudaTensor;
use cudarc::driver::PushKernelArg;

/// `out = silu(gate) · up` (f32, n elements each).
pub fn forward(be: &CudaBackend, gate: &CudaTensor, up: &CudaTensor, out: &CudaTensor, n: usize) -> Result<()> {
    let (pg, pu, po, n64) = (gate.ptr(), up.ptr(), out.ptr(), long(n));
    let f = be.func(k::SWIGLU_FWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pg).arg(&pu).arg(&po).arg(&n64);
    // SAFETY: (const float*, const float*, float*, long long) as in swiglu.cu; n f32 each.
    unsafe { be.launch(k::SWIGLU_FWD_F32, l, grid_1d(n)) }
}

/// Writes `dgate` and `dup` from `dy`.
pub fn backward(
    be: &CudaBackend,
    gate: &CudaTensor,
    up: &CudaTensor,
    dy: &CudaTensor,
    dgate: &CudaTensor,
    dup: &CudaTensor,
    n: usize,
) -> Result<()> {
    let (pg, pu, pd, pdg, pdu, n64) = (gate.ptr(), up.ptr(), dy.ptr(), dgate.ptr(), dup.ptr(), long(n));
    let f = be.func(k::SWIGLU_BWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pg).arg(&pu).arg(&pd).arg(&pdg).arg(&pdu).arg(&n64);
    // SAFETY: (gate, up, dy, dgate, dup, long long n) as in swiglu.cu; n f32 each.
    unsafe { be.launch(k::SWIGLU_BWD_F32, l, grid_1d(n)) }
}
