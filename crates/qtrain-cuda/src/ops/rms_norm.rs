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
/// Default shared memory limit per block, static and dynamic together (no opt-in attribute is set).
const SHARED_LIMIT: usize = 48 * 1024;
/// Static shared memory of the backward kernels: `block_sum`'s scratch in `common.cuh`, 32 floats.
const BWD_STATIC_SHARED: usize = 32 * 4;

/// Dynamic shared memory of the backward for rows of `cols` (a partial dw when `with_dw`), or an
/// error when it and the static scratch would pass the per-block limit (cols > 12256).
fn backward_shared_bytes(cols: usize, with_dw: bool) -> Result<usize> {
    let dynamic = if with_dw { cols * 4 } else { 0 };
    if dynamic + BWD_STATIC_SHARED > SHARED_LIMIT {
        return Err(CudaError::Unsupported {
            op: "rms_norm_backward",
            detail: format!(
                "rows of {cols} need {dynamic} B of shared memory for the weight gradient plus {BWD_STATIC_SHARED} B of reduction \
                 scratch (limit {SHARED_LIMIT} B per block)"
            ),
        });
    }
    Ok(dynamic)
}

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
    let shared = backward_shared_bytes(cols, dw.is_some())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_shared_memory_counts_the_static_scratch() {
        assert_eq!(backward_shared_bytes(3584, true).unwrap(), 3584 * 4);
        assert_eq!(backward_shared_bytes(12_256, true).unwrap(), 12_256 * 4);
        // 12257..=12288 columns fit the dynamic part alone but not with block_sum's 128 bytes.
        for cols in [12_257, 12_288] {
            let msg = backward_shared_bytes(cols, true).unwrap_err().to_string();
            assert!(msg.contains(&format!("rows of {cols}")) && msg.contains("128 B"), "{msg}");
        }
        assert_eq!(backward_shared_bytes(1 << 20, false).unwrap(), 0);
    }
}
