//! Launchers for `kernels/lora.cu`: the low-rank path of a LoRA linear with the dropout mask and
//! the scale folded in. All operands f32; `mask` is 0 (null) when there is no dropout.

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;

use super::{int, BLOCK};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;

/// grid.y limit: row-per-y kernels are launched in slices of at most this many rows.
const MAX_GRID_Y: usize = 65535;

/// One block per row (no launch at all for zero rows).
fn rows_per_block_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// `xa[n, :] = (x[n, :] ⊙ mask[n, :]) Aᵀ` for x `[rows, d_in]`, A `[r, d_in]`, xa `[rows, r]`.
#[allow(clippy::too_many_arguments)]
pub fn down(be: &CudaBackend, x: u64, mask: u64, a: u64, xa: u64, rows: usize, d_in: usize, r: usize) -> Result<()> {
    let (di, rr) = (int(d_in, "lora in")?, int(r, "lora rank")?);
    int(rows, "lora rows")?;
    let f = be.func(k::LORA_DOWN_FWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&x).arg(&mask).arg(&a).arg(&xa).arg(&di).arg(&rr);
    // SAFETY: (x, mask-or-null, A, xa, int d_in, int r) as in lora.cu; one block per row; the
    // buffers hold rows·d_in, rows·d_in, r·d_in and rows·r f32.
    unsafe { be.launch(k::LORA_DOWN_FWD_F32, l, rows_per_block_cfg(rows)) }
}

/// `g[n, :] = scale · dy[n, :] B` for dy `[rows, d_out]`, B `[d_out, r]`, g `[rows, r]`.
#[allow(clippy::too_many_arguments)]
pub fn dy_b(be: &CudaBackend, dy: u64, b: u64, g: u64, rows: usize, d_out: usize, r: usize, scale: f32) -> Result<()> {
    let (dout, rr) = (int(d_out, "lora out")?, int(r, "lora rank")?);
    int(rows, "lora rows")?;
    let f = be.func(k::LORA_DYB_BWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&dy).arg(&b).arg(&g).arg(&dout).arg(&rr).arg(&scale);
    // SAFETY: (dy, B, g, int d_out, int r, float scale) as in lora.cu; one block per row.
    unsafe { be.launch(k::LORA_DYB_BWD_F32, l, rows_per_block_cfg(rows)) }
}

/// `y[n, :] += scale · xa[n, :] Bᵀ` for xa `[rows, r]`, B `[d_out, r]`, y `[rows, d_out]`.
#[allow(clippy::too_many_arguments)]
pub fn up(be: &CudaBackend, xa: u64, b: u64, y: u64, rows: usize, d_out: usize, r: usize, scale: f32) -> Result<()> {
    let (dout, rr) = (int(d_out, "lora out")?, int(r, "lora rank")?);
    for row0 in (0..rows).step_by(MAX_GRID_Y) {
        let n = (rows - row0).min(MAX_GRID_Y);
        let (pxa, py) = (xa + (row0 * r * 4) as u64, y + (row0 * d_out * 4) as u64);
        let cfg = LaunchConfig {
            grid_dim: (d_out.div_ceil(BLOCK as usize) as u32, n as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: (r * 4) as u32,
        };
        let f = be.func(k::LORA_UP_FWD_F32)?;
        let mut l = be.stream.launch_builder(&f);
        l.arg(&pxa).arg(&b).arg(&py).arg(&dout).arg(&rr).arg(&scale);
        // SAFETY: (xa, B, y, int d_out, int r, float scale) as in lora.cu; this slice covers rows
        // row0..row0+n of xa and y; shared memory holds r floats.
        unsafe { be.launch(k::LORA_UP_FWD_F32, l, cfg) }?;
    }
    Ok(())
}

/// `dx[n, :] += (g[n, :] A) ⊙ mask[n, :]` for g `[rows, r]`, A `[r, d_in]`, dx `[rows, d_in]`.
#[allow(clippy::too_many_arguments)]
pub fn dx(be: &CudaBackend, g: u64, a: u64, mask: u64, dx: u64, rows: usize, d_in: usize, r: usize) -> Result<()> {
    let (di, rr) = (int(d_in, "lora in")?, int(r, "lora rank")?);
    for row0 in (0..rows).step_by(MAX_GRID_Y) {
        let n = (rows - row0).min(MAX_GRID_Y);
        let pg = g + (row0 * r * 4) as u64;
        let pm = if mask == 0 { 0 } else { mask + (row0 * d_in * 4) as u64 };
        let pdx = dx + (row0 * d_in * 4) as u64;
        let cfg = LaunchConfig {
            grid_dim: (d_in.div_ceil(BLOCK as usize) as u32, n as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: (r * 4) as u32,
        };
        let f = be.func(k::LORA_DX_BWD_F32)?;
        let mut l = be.stream.launch_builder(&f);
        l.arg(&pg).arg(&a).arg(&pm).arg(&pdx).arg(&di).arg(&rr);
        // SAFETY: (g, A, mask-or-null, dx, int d_in, int r) as in lora.cu; this slice covers
        // rows row0..row0+n; shared memory holds r floats.
        unsafe { be.launch(k::LORA_DX_BWD_F32, l, cfg) }?;
    }
    Ok(())
}
