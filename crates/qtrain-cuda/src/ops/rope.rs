//! Launchers for `kernels/rope.cu`.

use super::{grid_1d, int};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;
use crate::tensor::CudaTensor;
use cudarc::driver::PushKernelArg;

/// Rotates `x` `[rows, heads, d]` by the table angles at `positions` (device u32, checked);
/// `backward` applies the transpose rotation. Tables are f32 `[P, d/2]`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    be: &CudaBackend,
    backward: bool,
    x: &CudaTensor,
    cos: &CudaTensor,
    sin: &CudaTensor,
    positions: u64,
    (rows, heads, d): (usize, usize, usize),
    out: &CudaTensor,
) -> Result<()> {
    let kernel = if backward { k::ROPE_BWD_F32 } else { k::ROPE_FWD_F32 };
    let (px, pc, ps, po) = (x.ptr(), cos.ptr(), sin.ptr(), out.ptr());
    let (r, h, dd) = (int(rows, "rope rows")?, int(heads, "rope heads")?, int(d, "rope head dim")?);
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&px).arg(&pc).arg(&ps).arg(&positions).arg(&po).arg(&r).arg(&h).arg(&dd);
    // SAFETY: (x, cos, sin, positions, out, int rows, int heads, int d) as in rope.cu; x/out hold
    // rows·heads·d f32, positions rows indices below the tables' P (checked on the host).
    unsafe { be.launch(kernel, l, grid_1d(rows * heads * (d / 2))) }
}
