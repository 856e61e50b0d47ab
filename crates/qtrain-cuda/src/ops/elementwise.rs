//! Launchers for `kernels/elementwise.cu`.

use cudarc::driver::PushKernelArg;
use qtrain_core::{DType, TensorInfo};

use super::{grid_1d, int, long};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;
use crate::tensor::CudaTensor;

fn binary(be: &CudaBackend, kernel: k::Kernel, a: &CudaTensor, b: &CudaTensor, out: &CudaTensor) -> Result<()> {
    let n = a.numel();
    let (pa, pb, po, n64) = (a.ptr(), b.ptr(), out.ptr(), long(n));
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pa).arg(&pb).arg(&po).arg(&n64);
    // SAFETY: (const float*, const float*, float*, long long) as in elementwise.cu; all three
    // are f32 with n elements (checked by the caller).
    unsafe { be.launch(kernel, l, grid_1d(n)) }
}

/// `out = a + b` (f32, same element counts).
pub fn add(be: &CudaBackend, a: &CudaTensor, b: &CudaTensor, out: &CudaTensor) -> Result<()> {
    binary(be, k::ADD_F32, a, b, out)
}

/// `out = a ⊙ b` (f32, same element counts).
pub fn mul(be: &CudaBackend, a: &CudaTensor, b: &CudaTensor, out: &CudaTensor) -> Result<()> {
    binary(be, k::MUL_F32, a, b, out)
}

/// `acc += alpha · x` on raw f32 buffers of `n` elements.
pub fn axpy(be: &CudaBackend, acc: u64, x: u64, alpha: f32, n: usize) -> Result<()> {
    let n64 = long(n);
    let f = be.func(k::AXPY_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&acc).arg(&x).arg(&alpha).arg(&n64);
    // SAFETY: (float*, const float*, float, long long); both buffers hold n f32.
    unsafe { be.launch(k::AXPY_F32, l, grid_1d(n)) }
}

/// `y[r, :] += bias` for an f32 `y` of `rows × cols` and a bias of `cols` (f32 or bf16).
pub fn bias_add(be: &CudaBackend, y: u64, bias: &CudaTensor, rows: usize, cols: usize) -> Result<()> {
    let kernel = if bias.dtype == DType::BF16 { k::BIAS_ADD_BF16 } else { k::BIAS_ADD_F32 };
    let (pb, r, c) = (bias.ptr(), int(rows, "bias_add rows")?, int(cols, "bias_add cols")?);
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&y).arg(&pb).arg(&r).arg(&c);
    // SAFETY: (float* y, const T* bias, int rows, int cols); y holds rows·cols f32, bias cols.
    unsafe { be.launch(kernel, l, grid_1d(rows * cols)) }
}
