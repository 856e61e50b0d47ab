//! The fused, chunked LM head + cross-entropy: per chunk of supervised rows, gather the hidden
//! rows, `logits = H Wᵀ` (cuBLASLt; bf16 × bf16 → f32 against a bf16 head), the softmax/CE kernel
//! of `kernels/cross_entropy.cu` (loss, accuracy, and `dlogits` written over the logits), then
//! `dH = dlogits W` scattered back to the rows and, for full fine-tuning, `dW += dlogitsᵀ H` in
//! f32. Only one chunk's `[rows × V]` logits exist at a time (Liger-Kernel's fused linear
//! cross-entropy idea), never `[N × V]`.

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;
use qtrain_core::{CrossEntropyGrad, CrossEntropyOutput, DType};

use super::{copy, int};
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::gemm::{ElemType, GemmArgs, MatRef};
use crate::registry as k;
use crate::tensor::CudaTensor;

/// Budget for one chunk's f32 logits: 256 MiB is 441 rows of a 152k vocabulary.
pub const CE_LOGITS_BYTES: usize = 256 << 20;

/// Rows per chunk for a vocabulary of `vocab` (or the override).
pub fn chunk_rows(vocab: usize, forced: Option<usize>) -> usize {
    forced.unwrap_or(CE_LOGITS_BYTES / (vocab.max(1) * 4)).max(1)
}

/// `hidden` f32 `[n, c]`, `w` `[vocab, c]` (f32 or bf16), `rows` the supervised row indices and
/// `row_targets` their targets (all checked by the caller).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    be: &CudaBackend,
    hidden: &CudaTensor,
    w: &CudaTensor,
    rows: &[u32],
    row_targets: &[i32],
    grad: Option<CrossEntropyGrad<'_, CudaTensor>>,
    (n, c, vocab): (usize, usize, usize),
) -> Result<CrossEntropyOutput<CudaTensor>> {
    let (scale, grad_w) = match grad {
        Some(g) => (Some(g.scale), g.grad_w),
        None => (None, None),
    };
    let grad_hidden = match scale {
        Some(_) => Some(be.zeros_f32(&[n, c], "LM-head grad_hidden")?),
        None => None,
    };
    let total = rows.len();
    if total == 0 {
        return Ok(CrossEntropyOutput { loss_sum: 0.0, num_targets: 0, num_correct: 0, grad_hidden });
    }
    let chunk = chunk_rows(vocab, *be.ce_chunk_rows.lock().unwrap_or_else(|e| e.into_inner())).min(total);
    let rows_dev = be.upload_slice(rows, "LM-head row indices")?;
    let targets_dev = be.upload_slice(row_targets, "LM-head targets")?;
    let loss_dev = be.alloc_buf(total, DType::F32, &|| format!("per-token losses ({total})"))?;
    let correct_dev = be.alloc_buf(total, DType::F32, &|| format!("per-token accuracy flags ({total})"))?;
    let logits = be.alloc_buf(chunk * vocab, DType::F32, &|| format!("LM-head logits chunk [{chunk}, {vocab}] f32"))?;
    let h = be.alloc_buf(chunk * c, DType::F32, &|| format!("LM-head hidden chunk [{chunk}, {c}] f32"))?;
    let bf16_head = w.dtype == DType::BF16;
    let h16 =
        if bf16_head { Some(be.alloc_buf(chunk * c, DType::BF16, &|| format!("LM-head hidden chunk [{chunk}, {c}] bf16"))?) } else { None };
    let dl16 = if bf16_head && scale.is_some() {
        Some(be.alloc_buf(chunk * vocab, DType::BF16, &|| format!("LM-head dlogits chunk [{chunk}, {vocab}] bf16"))?)
    } else {
        None
    };
    let dh = if scale.is_some() {
        Some(be.alloc_buf(chunk * c, DType::F32, &|| format!("LM-head dhidden chunk [{chunk}, {c}] f32"))?)
    } else {
        None
    };
    let (vocab_i, write_grad, s) = (int(vocab, "vocab")?, scale.is_some() as i32, scale.unwrap_or(0.0));
    let wty = w.elem();
    for start in (0..total).step_by(chunk) {
        let m = chunk.min(total - start);
        let rows_ptr = rows_dev.ptr() + (start * 4) as u64;
        copy::gather_rows(be, hidden.ptr(), rows_ptr, m, c, h.ptr())?;
        let h_gemm = match &h16 {
            Some(b) => {
                copy::cast_raw(be, k::CAST_F32_TO_BF16, h.ptr(), b.ptr(), m * c)?;
                b.ptr()
            }
            None => h.ptr(),
        };
        be.gemm(&GemmArgs {
            a: MatRef::dense(h_gemm, wty, m, c),
            trans_a: false,
            b: MatRef::dense(w.ptr(), wty, vocab, c),
            trans_b: true,
            c: MatRef::dense(logits.ptr(), ElemType::F32, m, vocab),
            batch: 1,
            alpha: 1.0,
            beta: 0.0,
        })?;
        let (pl, pt, ploss, pc) = (
            logits.ptr(),
            targets_dev.ptr() + (start * 4) as u64,
            loss_dev.ptr() + (start * 4) as u64,
            correct_dev.ptr() + (start * 4) as u64,
        );
        let f = be.func(k::CROSS_ENTROPY_FWD_BWD_F32)?;
        let mut a = be.stream.launch_builder(&f);
        a.arg(&pl).arg(&pt).arg(&ploss).arg(&pc).arg(&vocab_i).arg(&s).arg(&write_grad);
        let cfg = LaunchConfig { grid_dim: (m as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: (float* logits, const int* targets, float* loss, int* correct, int vocab, float
        // scale, int write_grad) as in cross_entropy.cu; logits hold m·vocab f32, the other three
        // buffers m entries from `start`; targets are valid class ids (checked on the host).
        unsafe { be.launch(k::CROSS_ENTROPY_FWD_BWD_F32, a, cfg) }?;
        if let (Some(gh), Some(dh)) = (grad_hidden.as_ref(), dh.as_ref()) {
            let dl_gemm = match &dl16 {
                Some(b) => {
                    copy::cast_raw(be, k::CAST_F32_TO_BF16, logits.ptr(), b.ptr(), m * vocab)?;
                    b.ptr()
                }
                None => logits.ptr(),
            };
            be.gemm(&GemmArgs {
                a: MatRef::dense(dl_gemm, wty, m, vocab),
                trans_a: false,
                b: MatRef::dense(w.ptr(), wty, vocab, c),
                trans_b: false,
                c: MatRef::dense(dh.ptr(), ElemType::F32, m, c),
                batch: 1,
                alpha: 1.0,
                beta: 0.0,
            })?;
            copy::scatter_rows(be, dh.ptr(), rows_ptr, m, c, gh.ptr())?;
            if let Some(gw) = grad_w.as_deref() {
                be.gemm(&GemmArgs {
                    a: MatRef::dense(logits.ptr(), ElemType::F32, m, vocab),
                    trans_a: true,
                    b: MatRef::dense(h.ptr(), ElemType::F32, m, c),
                    trans_b: false,
                    c: MatRef::dense(gw.ptr(), ElemType::F32, vocab, c),
                    batch: 1,
                    alpha: 1.0,
                    beta: 1.0,
                })?;
            }
        }
    }
    let losses: Vec<f32> = be.download_slice(loss_dev.ptr(), total)?;
    let correct: Vec<i32> = be.download_slice(correct_dev.ptr(), total)?;
    Ok(CrossEntropyOutput {
        loss_sum: losses.iter().map(|&l| l as f64).sum(),
        num_targets: total,
        num_correct: correct.iter().filter(|&&x| x != 0).count(),
        grad_hidden,
    })
}
