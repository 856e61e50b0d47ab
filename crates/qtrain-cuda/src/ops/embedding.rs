//! Launchers for `kernels/embedding.cu`.

use cudarc::driver::PushKernelArg;
use qtrain_core::DType;

use super::{grid_1d, int};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::registry as k;
use crate::tensor::CudaTensor;

/// `out[n, :] = table[ids[n], :]`; `ids` is a device buffer of `num_ids` checked u32 ids.
pub fn forward(be: &CudaBackend, table: &CudaTensor, ids: u64, num_ids: usize, cols: usize, out: &CudaTensor) -> Result<()> {
    let kernel = if table.dtype == DType::BF16 { k::EMBEDDING_FWD_BF16 } else { k::EMBEDDING_FWD_F32 };
    let (pt, po, n, c) = (table.ptr(), out.ptr(), int(num_ids, "embedding ids")?, int(cols, "embedding cols")?);
    let f = be.func(kernel)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pt).arg(&ids).arg(&po).arg(&n).arg(&c);
    // SAFETY: (const T* table, const unsigned* ids, float* out, int, int) as in embedding.cu;
    // ids < V was checked on the host, out holds num_ids·cols f32.
    unsafe { be.launch(kernel, l, grid_1d(num_ids * cols)) }
}

/// `grad_table[ids[n], :] += dy[n, :]` (f32).
pub fn backward(be: &CudaBackend, grad_table: &CudaTensor, ids: u64, num_ids: usize, cols: usize, dy: &CudaTensor) -> Result<()> {
    let (pg, pd, n, c) = (grad_table.ptr(), dy.ptr(), int(num_ids, "embedding ids")?, int(cols, "embedding cols")?);
    let f = be.func(k::EMBEDDING_BWD_F32)?;
    let mut l = be.stream.launch_builder(&f);
    l.arg(&pg).arg(&ids).arg(&pd).arg(&n).arg(&c);
    // SAFETY: (float*, const unsigned*, const float*, int, int); shapes checked by the caller.
    unsafe { be.launch(k::EMBEDDING_BWD_F32, l, grid_1d(num_ids * cols)) }
}
