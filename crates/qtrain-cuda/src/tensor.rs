//! Device tensors: a shape, a storage type and one cached device block.
//!
//! Storage rule (see `kernels/README.md`): data uploaded as bf16 (model weights from
//! safetensors) stays bf16; data uploaded as f32 stays f32; f16 is widened to f32 on upload
//! (exact; Qwen checkpoints are bf16, so this path is rare). Every op output, `zeros`, every
//! gradient buffer and the AdamW moments are f32. Activations are therefore f32: twice the memory
//! of bf16 activations, chosen for the first version because every op then has one activation type
//! and matches the f32 CPU reference closely; GEMMs against bf16 weights round the activation to
//! bf16 just for the product (as torch's bf16 autocast does).

use qtrain_core::{DType, TensorInfo};

use crate::alloc::DevBuf;
use crate::gemm::ElemType;

/// A contiguous row-major tensor in device memory.
#[derive(Debug)]
pub struct CudaTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) buf: DevBuf,
}

impl CudaTensor {
    /// Storage type: [`DType::F32`] or [`DType::BF16`] (never f16).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device address of the first element.
    pub fn device_ptr(&self) -> u64 {
        self.buf.ptr()
    }

    /// Bytes the elements occupy (the block may be slightly larger, see the allocator).
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }

    pub(crate) fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    pub(crate) fn elem(&self) -> ElemType {
        match self.dtype {
            DType::BF16 => ElemType::BF16,
            _ => ElemType::F32,
        }
    }

    pub(crate) fn is_f32(&self) -> bool {
        self.dtype == DType::F32
    }
}

impl TensorInfo for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}
