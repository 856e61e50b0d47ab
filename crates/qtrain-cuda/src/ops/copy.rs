//! Launchers for `kernels/copy.cu`: dtype casts and row gather/scatter.

use cudarc::driver::PushKernelArg;
use qtrain_core::DType;

use super::{grid_1d, int, long};
use crate::backend::CudaBackend;
use crate::error::{CudaError, Result};
use crate::registry as k;
use crate::tensor::CudaTensor;

/// `dst = src` converted between f32 and bf16 (same element count, different types).
pub fn cast(be: &CudaBackend, src: &CudaTensor, dst: &CudaTensor) -> Result<()> {
    let n = src.numel_checked(dst)?;
    let kernel = match (src.dtype, dst.dtype) {
        (DType::F32, DType::BF16) => k::CAST_F32_TO_BF16,
        (DType::BF16, DType::F32) => k::CAST_BF16_TO_F32,
        (a, b) => return Err(CudaError::Unsupported { op: "cast", detail: format!("{a:?} → {b:?}") }),
    };
    cast_raw(be, kernel, src.ptr(), dst.ptr(), n)
}

/// `n` elements from `src` to `dst` with a cast kernel ([`k::CAST_F32_TO_BF16`] or
/// [`k::CAST_BF16_TO_F32`]); the buffers must hold `n` elements of the kernel's types.
pub fn cast_raw(be: &CudaBackend, kernel: k::Kernel, src: u64, dst: u64, n: usize) -> Result<()> {
    let n64 = long(n);
    let f = be.func(kernel)?;
    let mut a = be.stream.launch_builder(&f);
    a.arg(&src).arg(&dst).arg(&n64);
    // SAFETY: (const T* x, U* y, long long n) as in copy.cu; both buffers hold n elements.
    unsafe { be.launch(kernel, a, grid_1d(n)) }
}

/// `out[r, :] = x[rows[r], :]` for an f32 `x` with rows of `cols`; `rows` is a device buffer of
/// `num_rows` u32 indices already checked against the row count of `x`.
pub fn gather_rows(be: &CudaBackend, x: u64, rows: u64, num_rows: usize, cols: usize, out: u64) -> Result<()> {
    rows_kernel(be, k::GATHER_ROWS_F32, x, rows, num_rows, cols, out)
}

/// `out[rows[r], :] = src[r, :]` (rows distinct).
pub fn scatter_rows(be: &CudaBackend, src: u64, rows: u64, num_rows: usize, cols: usize, out: u64) -> Result<()> {
    rows_kernel(be, k::SCATTER_ROWS_F32, src, rows, num_rows, cols, out)
}

fn rows_kernel(be: &CudaBackend, kernel: k::Kernel, src: u64, rows: u64, num_rows: usize, cols: usize, out: u64) -> Result<()> {
    let (nr, c) = (int(num_rows, "rows")?, int(cols, "cols")?);
    let f = be.func(kernel)?;
    let mut a = be.stream.launch_builder(&f);
    a.arg(&src).arg(&rows).arg(&out).arg(&nr).arg(&c);
    // SAFETY: (const float*, const unsigned*, float*, int, int) as in copy.cu; the callers size
    // src/out for the rows they index and `rows` holds num_rows indices.
    unsafe { be.launch(kernel, a, grid_1d(num_rows * cols)) }
}

impl CudaTensor {
    /// The element count shared with `other`, or an error.
    pub(crate) fn numel_checked(&self, other: &CudaTensor) -> Result<usize> {
        use qtrain_core::TensorInfo;
        if self.numel() != other.numel() {
            return Err(CudaError::Unsupported { op: "copy", detail: format!("{:?} vs {:?}", self.shape, other.shape) });
        }
        Ok(self.numel())
    }
}
