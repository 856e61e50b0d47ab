//! Launchers for `kernels/lora.cu`: the low-rank path of a LoRA linear with the dropout mask
//! (drawn inside the kernels from its Philox key, [`DropoutArgs`]) and the scale folded in.
//! All operands f32.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use qtrain_core::Dropout;

use super::{grid_1d, int, long, BLOCK};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;

/// grid.y limit: row-per-y kernels are launched in slices of at most this many rows.
const MAX_GRID_Y: usize = 65535;

/// `struct DropoutArgs` of `kernels/common.cuh`, passed by value: the Philox key of one mask, its
/// threshold `⌊p·2³²⌋` and keep scale `1/(1−p)`, computed by [`qtrain_core::philox`] so host
/// and device agree bit for bit. All zero but `scale = 1` means no dropout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutArgs {
    seed_lo: u32,
    seed_hi: u32,
    layer: u32,
    module: u32,
    threshold: u32,
    scale: f32,
}

// SAFETY: `#[repr(C)]`, five u32 and one f32, no padding: the layout of `struct DropoutArgs` in
// kernels/common.cuh (4-byte aligned, 24 bytes).
unsafe impl DeviceRepr for DropoutArgs {}

impl DropoutArgs {
    pub fn new(d: Option<Dropout>) -> DropoutArgs {
        match d {
            None => DropoutArgs { seed_lo: 0, seed_hi: 0, layer: 0, module: 0, threshold: 0, scale: 1.0 },
            Some(d) => {
                let [seed_lo, seed_hi] = d.key_words();
                DropoutArgs { seed_lo, seed_hi, layer: d.key.layer, module: d.key.module, threshold: d.threshold(), scale: d.scale() }
            }
        }
    }
}

/// One block per row (no launch at all for zero rows).
fn rows_per_block_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// `xa[n, :] = (x[n, :] ⊙ mask[n, :]) Aᵀ` for x `[rows, d_in]`, A `[r, d_in]`, xa `[rows, r]`.
#[allow(clippy::too_many_arguments)]
pub fn down(be: &CudaBackend, x: u64, drop: &DropoutArgs, a: u64, xa: u64, rows: usize, d_in: usize, r: usize) -> Result<()> {
    let (di, rr) = (int(d_in, "lora in")?, int(r, "lora rank")?);
    int(rows, "lora rows")?;
    let f = be.func(k::LORA_DOWN_FWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&x).arg(&a).arg(&xa).arg(&di).arg(&rr).arg(drop);
    // SAFETY: (x, A, xa, int d_in, int r, DropoutArgs) as in lora.cu; one block per row; the
    // buffers hold rows·d_in, r·d_in and rows·r f32.
    unsafe { be.launch(k::LORA_DOWN_FWD_F32, l, rows_per_block_cfg(rows)) }
}

/// `out = x ⊙ mask` for x, out `[rows, cols]` f32 (the dA operand of the LoRA backward).
pub fn dropout_apply(be: &CudaBackend, x: u64, out: u64, rows: usize, cols: usize, drop: &DropoutArgs) -> Result<()> {
    let (rows64, c) = (long(rows), int(cols, "dropout columns")?);
    int(rows, "dropout rows")?;
    let f = be.func(k::DROPOUT_APPLY_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&x).arg(&out).arg(&rows64).arg(&c).arg(drop);
    // SAFETY: (const float*, float*, long long rows, int cols, DropoutArgs) as in lora.cu; both
    // buffers hold rows·cols f32.
    unsafe { be.launch(k::DROPOUT_APPLY_F32, l, grid_1d(rows * cols.div_ceil(4))) }
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
pub fn dx(be: &CudaBackend, g: u64, a: u64, drop: &DropoutArgs, dx: u64, rows: usize, d_in: usize, r: usize) -> Result<()> {
    let (di, rr) = (int(d_in, "lora in")?, int(r, "lora rank")?);
    int(rows, "lora rows")?;
    for row0 in (0..rows).step_by(MAX_GRID_Y) {
        let n = (rows - row0).min(MAX_GRID_Y);
        let (pg, pdx, first) = (g + (row0 * r * 4) as u64, dx + (row0 * d_in * 4) as u64, long(row0));
        let cfg = LaunchConfig {
            grid_dim: (d_in.div_ceil(4).div_ceil(BLOCK as usize) as u32, n as u32, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: (r * 4) as u32,
        };
        let f = be.func(k::LORA_DX_BWD_F32)?;
        let mut l = be.stream.launch_builder(&f);
        l.arg(&pg).arg(&a).arg(&pdx).arg(&di).arg(&rr).arg(&first).arg(drop);
        // SAFETY: (g, A, dx, int d_in, int r, long long row0, DropoutArgs) as in lora.cu; this
        // slice covers rows row0..row0+n of g and dx; shared memory holds r floats.
        unsafe { be.launch(k::LORA_DX_BWD_F32, l, cfg) }?;
    }
    Ok(())
}
