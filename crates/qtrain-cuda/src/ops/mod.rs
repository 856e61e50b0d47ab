//! Launchers, one module per `kernels/<name>.cu` (grid/block/shared-memory maths and argument
//! lists live next to nothing else), plus `linear.rs`, which composes cuBLASLt GEMMs with the
//! bias and LoRA kernels. Launchers trust their callers for shapes: `backend_impl.rs` validates
//! every op's operands first, as the CPU backend does.

pub mod adamw;
pub mod attention;
pub mod copy;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod linear;
pub mod lora;
pub mod reduce;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;

use cudarc::driver::LaunchConfig;

use crate::error::{CudaError, Result};

/// Threads per block of the 1-D element-wise kernels.
pub const BLOCK: u32 = 256;

/// Upper bound on the blocks of a grid-stride loop: enough to fill any current GPU many times.
const MAX_BLOCKS_1D: usize = 65535 * 4;

/// A 1-D grid-stride launch over `n` elements.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS_1D);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Threads for a one-block-per-row kernel over rows of `cols`: about four elements per thread,
/// a multiple of 32 between 32 and 1024.
pub fn row_block(cols: usize) -> u32 {
    (cols.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// A kernel's `int` argument; errors instead of truncating above `i32::MAX`.
pub fn int(x: usize, what: &'static str) -> Result<i32> {
    i32::try_from(x).map_err(|_| CudaError::Unsupported { op: what, detail: format!("{x} does not fit a 32-bit kernel argument") })
}

/// A kernel's `long long` argument.
pub fn long(x: usize) -> i64 {
    x as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes() {
        assert_eq!(grid_1d(0).grid_dim.0, 1);
        assert_eq!(grid_1d(257).grid_dim.0, 2);
        assert_eq!(grid_1d(1 << 40).grid_dim.0 as usize, MAX_BLOCKS_1D);
        assert_eq!(row_block(128), 32);
        assert_eq!(row_block(1024), 256);
        assert_eq!(row_block(3584), 896);
        assert_eq!(row_block(152_064), 1024);
        assert!(int(1 << 31, "x").is_err());
    }
}
