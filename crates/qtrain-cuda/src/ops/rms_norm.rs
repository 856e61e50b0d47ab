//! Launchers for `kernels/rms_norm.cu` (also the per-head q/k norm: rows = N·H, cols = D).

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;
use qtrain_core::DType;

use super::{int, row_block};
use crate::backend::CudaBackend;
use crate::error::{CudaError, Result};
use crate::registry as k;
use crate::tensor::CudaTensor;

/// Blocks of the backward grid (rows are strided over them); each adds its dw partial once.
const BWD_MAX_BLOCKS: usize = 1024;
/// Default dynamic shared memory limit per block (no opt-in attribute is set).
const SHARED_LIMIT: usize = 48 * 1024;

/// `y = w ⊙ x / sqrt(mean(x²) + eps)` over rows of `cols` (x, y f32; w f32 or bf16).
pub fn forward(be: &CudaBackend, x: &CudaTensor, w: &CudaTensor, eps: f32, rows: usize, cols: usize, y: &CudaTensor) -> Result<()> {
    let kernel = if w.dtype == DType::BF16 { k::RMS_NORM_FWD_BF16 } else { k::RMS_NORM_FWD_F32 };
    let (px, pw, py, c) = (x.ptr(), w.ptr(), y.ptr(), int(cols, "rms_norm cols")?);
    let cfg =
        LaunchConfig { grid_dim: (int(rows, "rms_norm rows")? as u32, 1, 1), block_dim: (row_block(cols), 1, 1), shared_mem_bytes: 0 };
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&px).arg(&pw).arg(&py).arg(&c).arg(&eps);
    // SAFETY: (const float* x, const W* w, float* y, int cols, float eps) as in rms_norm.cu;
    // one block per row of x and y (rows·cols f32), w holds cols elements.
    unsafe { be.launch(kernel, l, cfg) }
}

/// Writes `dx`; adds the weight gradient into `dw` (f32 `[cols]`) when given.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    be: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    eps: f32,
    dy: &CudaTensor,
    rows: usize,
    cols: usize,
    dx: &CudaTensor,
    dw: Option<&CudaTensor>,
) -> Result<()> {
    let kernel = if w.dtype == DType::BF16 { k::RMS_NORM_BWD_BF16 } else { k::RMS_NORM_BWD_F32 };
    let shared = if dw.is_some() { cols * 4 } else { 0 };
    if shared > SHARED_LIMIT {
        return Err(CudaError::Unsupported {
            op: "rms_norm_backward",
            detail: format!("rows of {cols} need {shared} B of shared memory for the weight gradient (limit {SHARED_LIMIT})"),
        });
    }
    let (px, pw, pdy, pdx, pdw) = (x.ptr(), w.ptr(), dy.ptr(), dx.ptr(), dw.map_or(0u64, |t| t.ptr()));
    let (r, c) = (int(rows, "rms_norm rows")?, int(cols, "rms_norm cols")?);
    let cfg = LaunchConfig {
        grid_dim: (rows.clamp(1, BWD_MAX_BLOCKS) as u32, 1, 1),
        block_dim: (row_block(cols), 1, 1),
        shared_mem_bytes: shared as u32,
    };
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&px).arg(&pw).arg(&pdy).arg(&pdx).arg(&pdw).arg(&r).arg(&c).arg(&eps);
    // SAFETY: (x, w, dy, dx, dw-or-null, int rows, int cols, float eps) as in rms_norm.cu; x, dy,
    // dx hold rows·cols f32, w and dw cols elements; shared memory is cols floats when dw is set.
    unsafe { be.launch(kernel, l, cfg) }
}
