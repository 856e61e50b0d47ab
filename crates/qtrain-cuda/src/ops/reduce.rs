//! Launchers for `kernels/reduce.cu`.

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;

use super::{int, long, BLOCK};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;

/// Blocks (and f64 partials) of the sum of squares.
const SUMSQ_MAX_BLOCKS: usize = 1024;

/// `Σ x²` over `n` f32 at `x`, accumulated in f64: per-block partials summed on the host in
/// block order (deterministic for a given device).
pub fn sum_squares(be: &CudaBackend, x: u64, n: usize) -> Result<f64> {
    if n == 0 {
        return Ok(0.0);
    }
    let blocks = n.div_ceil(BLOCK as usize * 4).clamp(1, SUMSQ_MAX_BLOCKS);
    let partials = be.alloc.alloc(blocks * 8, &|| format!("sum_squares partials ({blocks} f64)"))?;
    let (pp, n64) = (partials.ptr(), long(n));
    let f = be.func(k::SUM_SQUARES_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&x).arg(&n64).arg(&pp);
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (const float* x, long long n, double* partials) as in reduce.cu; x holds n f32 and
    // partials one f64 per block.
    unsafe { be.launch(k::SUM_SQUARES_F32, l, cfg) }?;
    let host: Vec<f64> = be.download_slice(pp, blocks)?;
    Ok(host.iter().sum())
}

/// `out[c] += Σ_r x[r, c]` for f32 `x` `[rows, cols]` (bias gradients).
pub fn col_sum_add(be: &CudaBackend, x: u64, rows: usize, cols: usize, out: u64) -> Result<()> {
    let (r, c) = (int(rows, "col_sum rows")?, int(cols, "col_sum cols")?);
    let f = be.func(k::COL_SUM_ADD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&x).arg(&out).arg(&r).arg(&c);
    let cfg = LaunchConfig { grid_dim: (cols.div_ceil(BLOCK as usize).max(1) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (const float* x, float* out, int rows, int cols); x holds rows·cols f32, out cols.
    unsafe { be.launch(k::COL_SUM_ADD_F32, l, cfg) }
}
