//! Element types of weights as they arrive from files, and borrowed host data on its way to a
//! backend. Backends decide their storage type: the CPU backend widens everything to f32, the
//! CUDA backend keeps frozen weights in bf16. Nothing here allocates device memory.

use half::{bf16, f16};

/// Element type of a stored tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// A `--torch_dtype` value or a config's `torch_dtype` (`bfloat16`/`bf16`,
    /// `float16`/`fp16`/`half`, `float32`/`fp32`/`float`); `None` for anything else.
    pub fn from_hf_name(name: &str) -> Option<DType> {
        match name {
            "bfloat16" | "bf16" => Some(DType::BF16),
            "float16" | "fp16" | "half" => Some(DType::F16),
            "float32" | "fp32" | "float" => Some(DType::F32),
            _ => None,
        }
    }

    /// The name used by safetensors headers and Hugging Face configs.
    pub fn hf_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }
}

/// Host-side tensor data of any supported element type.
#[derive(Clone, Copy, Debug)]
pub enum HostData<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

impl HostData<'_> {
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(d) => d.len(),
            HostData::BF16(d) => d.len(),
            HostData::F16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::BF16(_) => DType::BF16,
            HostData::F16(_) => DType::F16,
        }
    }

    /// As bf16: exact for bf16, rounded to nearest even from f32 and f16 (in parallel: a 7B
    /// checkpoint's weights pass through here).
    pub fn to_bf16_vec(&self) -> Vec<bf16> {
        use rayon::prelude::*;
        match self {
            HostData::F32(d) => d.par_iter().map(|&x| bf16::from_f32(x)).collect(),
            HostData::BF16(d) => d.to_vec(),
            HostData::F16(d) => d.par_iter().map(|x| bf16::from_f32(x.to_f32())).collect(),
        }
    }

    /// Widen to f32 (exact for bf16 and f16).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            HostData::F32(d) => d.to_vec(),
            HostData::BF16(d) => d.iter().map(|x| x.to_f32()).collect(),
            HostData::F16(d) => d.iter().map(|x| x.to_f32()).collect(),
        }
    }
}
