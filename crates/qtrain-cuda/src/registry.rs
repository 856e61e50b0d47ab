//! The one list of every kernel module (`kernels/<name>.cu`) and every kernel the launchers use,
//! and their run-time compilation with NVRTC.
//!
//! Kernel names carry op, direction and dtype (`rms_norm_fwd_bf16`); the dtype suffix names the
//! storage type of the operand that varies (the weight, table or parameter; activations are f32).
//! Sources are embedded with `include_str!`, so a built binary needs no `kernels/` folder, only
//! `libnvrtc` at run time. `tools/check_kernels.py` compiles the same files with the same
//! options ([`nvrtc_options`]) through the pinned NVRTC wheel and assembles them with `ptxas`,
//! which is how kernels are checked on machines without a GPU.

use std::ffi::{c_char, CStr, CString};

use crate::error::{CudaError, Result};

/// A kernel: the module (file stem in `kernels/`) that defines it and its `extern "C"` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub module: &'static str,
    pub name: &'static str,
}

/// One `kernels/*.cu` file.
#[derive(Debug)]
pub struct KernelModule {
    pub name: &'static str,
    pub file: &'static str,
    pub source: &'static str,
    /// Every `extern "C" __global__` function the file defines.
    pub kernels: &'static [&'static str],
}

/// The header every kernel file includes (`#include "common.cuh"`), handed to NVRTC in memory.
pub const COMMON_HEADER: (&str, &str) = ("common.cuh", include_str!("../../../kernels/common.cuh"));

const NVRTC_OPTIONS_FILE: &str = include_str!("../../../kernels/nvrtc_options.txt");

/// NVRTC options shared with `tools/check_kernels.py` (from `kernels/nvrtc_options.txt`), without
/// the architecture, which is `--gpu-architecture=compute_XY` for the device at hand.
pub fn nvrtc_options() -> Vec<&'static str> {
    NVRTC_OPTIONS_FILE.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

macro_rules! kernel_registry {
    ($( $module:ident => $file:literal { $( $konst:ident = $kname:literal ),* $(,)? } )*) => {
        /// Every kernel module, in the order they are listed here.
        pub const MODULES: &[KernelModule] = &[
            $( KernelModule {
                name: stringify!($module),
                file: $file,
                source: include_str!(concat!("../../../kernels/", $file)),
                kernels: &[$($kname),*],
            }, )*
        ];
        $( $(
            pub const $konst: Kernel = Kernel { module: stringify!($module), name: $kname };
        )* )*
        /// Every kernel constant above.
        pub const ALL_KERNELS: &[Kernel] = &[$( $( $konst, )* )*];
    };
}

kernel_registry! {
    copy => "copy.cu" {
        CAST_F32_TO_BF16 = "cast_f32_to_bf16",
        CAST_BF16_TO_F32 = "cast_bf16_to_f32",
        GATHER_ROWS_F32 = "gather_rows_f32",
        SCATTER_ROWS_F32 = "scatter_rows_f32",
    }
    elementwise => "elementwise.cu" {
        ADD_F32 = "add_f32",
        AXPY_F32 = "axpy_f32",
        MUL_F32 = "mul_f32",
        BIAS_ADD_F32 = "bias_add_f32",
        BIAS_ADD_BF16 = "bias_add_bf16",
    }
    embedding => "embedding.cu" {
        EMBEDDING_FWD_F32 = "embedding_fwd_f32",
        EMBEDDING_FWD_BF16 = "embedding_fwd_bf16",
        EMBEDDING_BWD_F32 = "embedding_bwd_f32",
    }
    rms_norm => "rms_norm.cu" {
        RMS_NORM_FWD_F32 = "rms_norm_fwd_f32",
        RMS_NORM_FWD_BF16 = "rms_norm_fwd_bf16",
        RMS_NORM_BWD_F32 = "rms_norm_bwd_f32",
        RMS_NORM_BWD_BF16 = "rms_norm_bwd_bf16",
    }
    rope => "rope.cu" {
        ROPE_FWD_F32 = "rope_fwd_f32",
        ROPE_BWD_F32 = "rope_bwd_f32",
    }
    swiglu => "swiglu.cu" {
        SWIGLU_FWD_F32 = "swiglu_fwd_f32",
        SWIGLU_BWD_F32 = "swiglu_bwd_f32",
    }
    lora => "lora.cu" {
        LORA_DOWN_FWD_F32 = "lora_down_fwd_f32",
        LORA_UP_FWD_F32 = "lora_up_fwd_f32",
        LORA_DYB_BWD_F32 = "lora_dyb_bwd_f32",
        LORA_DX_BWD_F32 = "lora_dx_bwd_f32",
        DROPOUT_APPLY_F32 = "dropout_apply_f32",
    }
    attention => "attention.cu" {
        ATTN_TO_HEADS_F32 = "attn_to_heads_f32",
        ATTN_FROM_HEADS_F32 = "attn_from_heads_f32",
        ATTN_SOFTMAX_FWD_F32 = "attn_softmax_fwd_f32",
        ATTN_ROW_DOT_F32 = "attn_row_dot_f32",
        ATTN_SOFTMAX_BWD_F32 = "attn_softmax_bwd_f32",
    }
    cross_entropy => "cross_entropy.cu" {
        CROSS_ENTROPY_FWD_BWD_F32 = "cross_entropy_fwd_bwd_f32",
    }
    adamw => "adamw.cu" {
        ADAMW_STEP_F32 = "adamw_step_f32",
        ADAMW_STEP_BF16 = "adamw_step_bf16",
    }
    reduce => "reduce.cu" {
        SUM_SQUARES_F32 = "sum_squares_f32",
        COL_SUM_ADD_F32 = "col_sum_add_f32",
    }
}

/// The module named `name`.
pub fn module(name: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// Compiles one module to PTX for `compute_{major}{minor}` with NVRTC. Needs only `libnvrtc`
/// (no driver, no GPU); errors if it cannot be opened.
pub fn compile_ptx(module: &KernelModule, compute_capability: (i32, i32)) -> Result<String> {
    if !crate::device::nvrtc_library_present() {
        return Err(CudaError::LibraryMissing {
            library: "NVRTC (libnvrtc)",
            searched: "see cudarc::get_lib_name_candidates(\"nvrtc\")".into(),
            hint: "put the CUDA toolkit's lib64 on LD_LIBRARY_PATH",
        });
    }
    let arch = format!("compute_{}{}", compute_capability.0, compute_capability.1);
    let mut options: Vec<String> = nvrtc_options().into_iter().map(String::from).collect();
    options.push(format!("--gpu-architecture={arch}"));

    let src = CString::new(module.source).expect("kernel sources contain no NUL");
    let name = CString::new(module.file).expect("file names contain no NUL");
    let header_src = CString::new(COMMON_HEADER.1).expect("header contains no NUL");
    let header_name = CString::new(COMMON_HEADER.0).expect("header name contains no NUL");
    let headers = [header_src.as_ptr()];
    let include_names = [header_name.as_ptr()];
    let mut prog = std::mem::MaybeUninit::uninit();
    // SAFETY: every pointer refers to a NUL-terminated CString that outlives the program (they
    // are dropped at the end of this function, after `destroy_program`); the arrays hold exactly
    // the one header announced.
    unsafe {
        cudarc::nvrtc::sys::nvrtcCreateProgram(prog.as_mut_ptr(), src.as_ptr(), name.as_ptr(), 1, headers.as_ptr(), include_names.as_ptr())
            .result()?;
    }
    // SAFETY: nvrtcCreateProgram succeeded, so `prog` is initialised.
    let prog = unsafe { prog.assume_init() };
    // SAFETY: `prog` is a live program until destroyed below.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &options) };
    // SAFETY: as above.
    let log = unsafe { cudarc::nvrtc::result::get_program_log(prog) }.map(|l| c_chars_to_string(&l)).unwrap_or_default();
    let ptx = match compiled {
        // SAFETY: as above; the program compiled.
        Ok(()) => unsafe { cudarc::nvrtc::result::get_ptx(prog) }.map(|p| c_chars_to_string(&p)),
        Err(_) => Err(cudarc::nvrtc::result::NvrtcError(cudarc::nvrtc::sys::nvrtcResult::NVRTC_ERROR_COMPILATION)),
    };
    // SAFETY: destroyed exactly once, after its last use.
    unsafe { cudarc::nvrtc::result::destroy_program(prog) }?;
    match ptx {
        Ok(p) => Ok(p),
        Err(e) if e.0 == cudarc::nvrtc::sys::nvrtcResult::NVRTC_ERROR_COMPILATION => {
            Err(CudaError::Compile { file: module.file, arch, log })
        }
        Err(e) => Err(e.into()),
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    // SAFETY: NVRTC returns NUL-terminated buffers; `from_ptr` stops at the first NUL, which lies
    // inside the buffer (its size came from the matching *Size call).
    unsafe { CStr::from_ptr(chars.as_ptr()) }.to_string_lossy().into_owned()
}

/// `extern "C" __global__ void NAME(` occurrences in a source, in order (used by tests and the
/// registry check).
pub fn declared_kernels(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(pos) = rest.find("extern \"C\" __global__ void ") {
        rest = &rest[pos + "extern \"C\" __global__ void ".len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        out.push(&rest[..end]);
    }
    out
}
