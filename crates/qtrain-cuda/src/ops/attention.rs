//! Launchers for `kernels/attention.cu`: causal GQA attention as head-major copies, cuBLASLt
//! strided-batched f32 GEMMs and the masked softmax kernels (see the .cu for the layout).
//!
//! For z = b·KV + g the `group = H/KV` query heads of kv head g are stacked as `group·T` rows,
//! so per z: `S = scale·Q Kᵀ` `[group·T, S]`, `O = P V`, and in backward
//! `dP = dO Vᵀ`, `dV = Pᵀ dO`, `dK = dSᵀ Q`, `dQ = dS K`. The work is processed in [`Piece`]s
//! whose score matrices stay under [`ATTN_SCORE_BYTES`]: several whole z slices at once, or, when
//! one slice alone is larger (long sequences: `[group·T, S]` f32 is 1.9 GB at T = 8192 for
//! Qwen2.5-7B), blocks of its rows — `dK`/`dV` then accumulate over the blocks.

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;
use qtrain_core::{AttentionDims, AttentionMask, DType};

use super::lora::DropoutArgs;
use super::{grid_1d, int, long, BLOCK};
use crate::alloc::DevBuf;
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::gemm::{ElemType, GemmArgs, MatRef};
use crate::registry as k;
use crate::tensor::CudaTensor;

/// Budget for the f32 score matrices of one chunk (both of them in backward).
pub const ATTN_SCORE_BYTES: usize = 512 << 20;

/// Sizes of one attention call: the op set's checked [`AttentionDims`] (batch, query length,
/// heads, kv heads, head dim, k/v capacity) and the key/value positions in use.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub shape: AttentionDims,
    /// Used key/value positions (`mask.kv_len`, ≤ `shape.kv_capacity`).
    pub s: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.shape.heads / self.shape.kv_heads
    }

    fn rows_per_z(&self) -> usize {
        self.group() * self.shape.q_len
    }

    /// The pieces of work when `buffers` f32 score matrices of a piece must fit `budget` bytes:
    /// as many whole z slices as fit, or, when one does not, blocks of rows of each slice (at
    /// least one row each: a single row is never split).
    pub fn pieces(&self, buffers: usize, budget: usize) -> Vec<Piece> {
        let (rows, zs) = (self.rows_per_z(), self.shape.batch * self.shape.kv_heads);
        let row_bytes = (self.s * 4 * buffers).max(1);
        let fit_rows = (budget / row_bytes).max(1);
        if fit_rows >= rows {
            let zc = (fit_rows / rows.max(1)).clamp(1, zs.max(1));
            return (0..zs).step_by(zc).map(|z0| Piece { z0, nz: zc.min(zs - z0), r0: 0, nr: rows }).collect();
        }
        (0..zs).flat_map(|z0| (0..rows).step_by(fit_rows).map(move |r0| Piece { z0, nz: 1, r0, nr: fit_rows.min(rows - r0) })).collect()
    }
}

/// One piece of attention work: z slices `z0 … z0+nz`, rows `r0 … r0+nr` of each (all rows when
/// `nz > 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub z0: usize,
    pub nz: usize,
    pub r0: usize,
    pub nr: usize,
}

impl Piece {
    /// The global score row (z·group·T + row in slice) this piece starts at.
    fn row0(&self, rows_per_z: usize) -> usize {
        self.z0 * rows_per_z + self.r0
    }

    /// The piece's rows of a head-major `[Z, rows_per_z, d]` tensor, batched over its z slices.
    fn rows_of(&self, t: &CudaTensor, rows_per_z: usize, d: usize) -> MatRef {
        let ptr = t.ptr() + (self.row0(rows_per_z) * d * 4) as u64;
        MatRef::dense(ptr, ElemType::F32, self.nr, d).with_batch_stride(rows_per_z * d)
    }
}

/// The mask's optional arrays on the device (null pointers when absent).
struct MaskBufs {
    key_valid: Option<DevBuf>,
    segments: Option<DevBuf>,
}

impl MaskBufs {
    fn upload(be: &CudaBackend, mask: &AttentionMask) -> Result<Self> {
        let key_valid = match &mask.key_valid {
            Some(v) => Some(be.upload_slice(&v.iter().map(|&b| b as u8).collect::<Vec<u8>>(), "attention key_valid")?),
            None => None,
        };
        let segments = match &mask.segments {
            Some(s) => Some(be.upload_slice(s, "attention segments")?),
            None => None,
        };
        Ok(MaskBufs { key_valid, segments })
    }

    fn ptrs(&self) -> (u64, u64) {
        (self.key_valid.as_ref().map_or(0, DevBuf::ptr), self.segments.as_ref().map_or(0, DevBuf::ptr))
    }
}

/// `[B, cap, Hx, D]` (first `len` positions) → head-major `[B, Hx, len, D]`.
fn to_heads(
    be: &CudaBackend,
    src: &CudaTensor,
    (batch, len, cap, heads, d): (usize, usize, usize, usize, usize),
    what: &str,
) -> Result<CudaTensor> {
    let dst = be.empty(&[batch, heads, len, d], DType::F32, what)?;
    let (ps, pd) = (src.ptr(), dst.ptr());
    let (b, l, c, h, dd) =
        (int(batch, "attention batch")?, int(len, "attention len")?, int(cap, "attention cap")?, int(heads, "heads")?, int(d, "head dim")?);
    let f = be.func(k::ATTN_TO_HEADS_F32)?;
    let mut a = be.stream.launch_builder(&f);
    a.arg(&ps).arg(&pd).arg(&b).arg(&l).arg(&c).arg(&h).arg(&dd);
    // SAFETY: (src, dst, int batch, int len, int cap, int heads, int d) as in attention.cu; src
    // holds batch·cap·heads·d f32 (len ≤ cap), dst batch·heads·len·d.
    unsafe { be.launch(k::ATTN_TO_HEADS_F32, a, grid_1d(batch * heads * len * d)) }?;
    Ok(dst)
}

/// Head-major `[B, Hx, len, D]` → `[B, len, Hx, D]`.
fn from_heads(be: &CudaBackend, src: &CudaTensor, batch: usize, len: usize, heads: usize, d: usize, what: &str) -> Result<CudaTensor> {
    let dst = be.empty(&[batch, len, heads, d], DType::F32, what)?;
    let (ps, pd) = (src.ptr(), dst.ptr());
    let (b, l, h, dd) = (int(batch, "attention batch")?, int(len, "attention len")?, int(heads, "heads")?, int(d, "head dim")?);
    let f = be.func(k::ATTN_FROM_HEADS_F32)?;
    let mut a = be.stream.launch_builder(&f);
    a.arg(&ps).arg(&pd).arg(&b).arg(&l).arg(&h).arg(&dd);
    // SAFETY: (src, dst, int batch, int len, int heads, int d); both hold batch·len·heads·d f32.
    unsafe { be.launch(k::ATTN_FROM_HEADS_F32, a, grid_1d(batch * heads * len * d)) }?;
    Ok(dst)
}

/// A chunk's block of head-major rows: `nz` matrices of `rows × cols` starting at z = z0.
fn chunk(t: &CudaTensor, z0: usize, rows: usize, cols: usize) -> MatRef {
    MatRef::dense(t.ptr() + (z0 * rows * cols * 4) as u64, ElemType::F32, rows, cols)
}

fn scores_ref(buf: &DevBuf, rows: usize, s: usize) -> MatRef {
    MatRef::dense(buf.ptr(), ElemType::F32, rows, s)
}

fn gemm(be: &CudaBackend, (a, trans_a): (MatRef, bool), (b, trans_b): (MatRef, bool), c: MatRef, batch: usize, alpha: f32) -> Result<()> {
    gemm_acc(be, (a, trans_a), (b, trans_b), c, batch, alpha, 0.0)
}

/// [`gemm`] adding `beta · C` (dK/dV accumulate over the row blocks of one slice).
fn gemm_acc(
    be: &CudaBackend,
    (a, trans_a): (MatRef, bool),
    (b, trans_b): (MatRef, bool),
    c: MatRef,
    batch: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    be.gemm(&GemmArgs { a, trans_a, b, trans_b, c, batch, alpha, beta })
}

/// Forward: returns `out` `[B, T, H, D]` and `lse` `[B, T, H]` (f32). Inputs must be f32.
pub fn forward(
    be: &CudaBackend,
    q: &CudaTensor,
    kk: &CudaTensor,
    v: &CudaTensor,
    mask: &AttentionMask,
    scale: f32,
    dm: Dims,
) -> Result<(CudaTensor, CudaTensor)> {
    let Dims { shape: AttentionDims { batch, q_len: t, heads, kv_heads, head_dim: d, kv_capacity: cap }, s } = dm;
    let lse = be.empty(&[batch, t, heads], DType::F32, "attention log-sum-exp")?;
    if batch * t * heads == 0 {
        return Ok((be.empty(&[batch, t, heads, d], DType::F32, "attention output")?, lse));
    }
    let qh = to_heads(be, q, (batch, t, t, heads, d), "attention q (head-major)")?;
    let kh = to_heads(be, kk, (batch, s, cap, kv_heads, d), "attention k (head-major)")?;
    let vh = to_heads(be, v, (batch, s, cap, kv_heads, d), "attention v (head-major)")?;
    let oh = be.empty(&[batch, heads, t, d], DType::F32, "attention output (head-major)")?;
    let masks = MaskBufs::upload(be, mask)?;
    let (kv_ptr, seg_ptr) = masks.ptrs();
    let rows = dm.rows_per_z();
    let drop = DropoutArgs::new(mask.dropout);
    let pieces = dm.pieces(1, be.attention_budget());
    let most = pieces.iter().map(|p| p.nz * p.nr).max().unwrap_or(0);
    let scores = be.alloc_buf(most * s, DType::F32, &|| format!("attention scores [{most}, {s}] f32"))?;
    let (group, tl, sl, hh, kvh, qo) = (
        int(dm.group(), "group")?,
        int(t, "T")?,
        int(s, "kv_len")?,
        int(heads, "heads")?,
        int(kv_heads, "kv heads")?,
        int(mask.q_offset, "q_offset")?,
    );
    for p in pieces {
        let sc = scores_ref(&scores, p.nr, s);
        gemm(be, (p.rows_of(&qh, rows, d), false), (chunk(&kh, p.z0, s, d), true), sc, p.nz, scale)?;
        let (ps, pl, row0) = (scores.ptr(), lse.ptr(), long(p.row0(rows)));
        let f = be.func(k::ATTN_SOFTMAX_FWD_F32)?;
        let mut a = be.stream.launch_builder(&f);
        a.arg(&ps).arg(&pl).arg(&kv_ptr).arg(&seg_ptr).arg(&row0).arg(&group).arg(&tl).arg(&sl).arg(&hh).arg(&kvh).arg(&qo).arg(&drop);
        let cfg = LaunchConfig { grid_dim: ((p.nz * p.nr) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument list of attn_softmax_fwd_f32; scores hold nz·nr rows of s f32, lse
        // B·T·H f32, the mask arrays B·s entries or are null.
        unsafe { be.launch(k::ATTN_SOFTMAX_FWD_F32, a, cfg) }?;
        gemm(be, (sc, false), (chunk(&vh, p.z0, s, d), false), p.rows_of(&oh, rows, d), p.nz, 1.0)?;
    }
    let out = from_heads(be, &oh, batch, t, heads, d, "attention output")?;
    Ok((out, lse))
}

/// Backward (k/v without cache: `cap == s`): returns `(dq, dk, dv)` in the input layouts.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    be: &CudaBackend,
    q: &CudaTensor,
    kk: &CudaTensor,
    v: &CudaTensor,
    out: &CudaTensor,
    lse: &CudaTensor,
    dout: &CudaTensor,
    mask: &AttentionMask,
    scale: f32,
    dm: Dims,
) -> Result<(CudaTensor, CudaTensor, CudaTensor)> {
    let Dims { shape: AttentionDims { batch, q_len: t, heads, kv_heads, head_dim: d, .. }, s } = dm;
    let qh = to_heads(be, q, (batch, t, t, heads, d), "attention q (head-major)")?;
    let kh = to_heads(be, kk, (batch, s, s, kv_heads, d), "attention k (head-major)")?;
    let vh = to_heads(be, v, (batch, s, s, kv_heads, d), "attention v (head-major)")?;
    let oh = to_heads(be, out, (batch, t, t, heads, d), "attention out (head-major)")?;
    let doh = to_heads(be, dout, (batch, t, t, heads, d), "attention dout (head-major)")?;
    let delta = be.empty(&[batch, heads, t], DType::F32, "attention dO·O")?;
    {
        let (pa, pb, pd, nrows, dd) = (doh.ptr(), oh.ptr(), delta.ptr(), long(batch * heads * t), int(d, "head dim")?);
        let f = be.func(k::ATTN_ROW_DOT_F32)?;
        let mut a = be.stream.launch_builder(&f);
        a.arg(&pa).arg(&pb).arg(&pd).arg(&nrows).arg(&dd);
        let cfg = LaunchConfig {
            grid_dim: ((batch * heads * t * 32).div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (a, b, out, long long rows, int d); a and b hold rows·d f32, out rows.
        unsafe { be.launch(k::ATTN_ROW_DOT_F32, a, cfg) }?;
    }
    drop(oh);
    let dqh = be.empty(&[batch, heads, t, d], DType::F32, "attention dq (head-major)")?;
    let dkh = be.empty(&[batch, kv_heads, s, d], DType::F32, "attention dk (head-major)")?;
    let dvh = be.empty(&[batch, kv_heads, s, d], DType::F32, "attention dv (head-major)")?;
    let masks = MaskBufs::upload(be, mask)?;
    let (kv_ptr, seg_ptr) = masks.ptrs();
    let rows = dm.rows_per_z();
    if rows * s * batch * kv_heads > 0 {
        let drop = DropoutArgs::new(mask.dropout);
        let pieces = dm.pieces(2, be.attention_budget());
        let most = pieces.iter().map(|p| p.nz * p.nr).max().unwrap_or(0);
        let scores = be.alloc_buf(most * s, DType::F32, &|| format!("attention scores [{most}, {s}] f32 (backward)"))?;
        let dp = be.alloc_buf(most * s, DType::F32, &|| format!("attention dP [{most}, {s}] f32"))?;
        let (group, tl, sl, hh, kvh, qo) = (
            int(dm.group(), "group")?,
            int(t, "T")?,
            int(s, "kv_len")?,
            int(heads, "heads")?,
            int(kv_heads, "kv heads")?,
            int(mask.q_offset, "q_offset")?,
        );
        for p in pieces {
            let (sc, dpr) = (scores_ref(&scores, p.nr, s), scores_ref(&dp, p.nr, s));
            let (q_rows, do_rows) = (p.rows_of(&qh, rows, d), p.rows_of(&doh, rows, d));
            gemm(be, (q_rows, false), (chunk(&kh, p.z0, s, d), true), sc, p.nz, scale)?;
            gemm(be, (do_rows, false), (chunk(&vh, p.z0, s, d), true), dpr, p.nz, 1.0)?;
            let (ps, pdp, pl, pdl, row0) = (scores.ptr(), dp.ptr(), lse.ptr(), delta.ptr(), long(p.row0(rows)));
            let f = be.func(k::ATTN_SOFTMAX_BWD_F32)?;
            let mut a = be.stream.launch_builder(&f);
            a.arg(&ps)
                .arg(&pdp)
                .arg(&pl)
                .arg(&pdl)
                .arg(&kv_ptr)
                .arg(&seg_ptr)
                .arg(&row0)
                .arg(&group)
                .arg(&tl)
                .arg(&sl)
                .arg(&hh)
                .arg(&kvh)
                .arg(&qo)
                .arg(&scale)
                .arg(&drop);
            let cfg = LaunchConfig { grid_dim: ((p.nz * p.nr) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: argument list of attn_softmax_bwd_f32; scores and dp hold nz·nr rows of
            // s f32, lse B·T·H and delta B·H·T f32, the mask arrays B·s entries or are null.
            unsafe { be.launch(k::ATTN_SOFTMAX_BWD_F32, a, cfg) }?;
            // dV and dK sum over all rows of a slice: the first block of rows writes, later add.
            let beta = if p.r0 == 0 { 0.0 } else { 1.0 };
            gemm_acc(be, (sc, true), (do_rows, false), chunk(&dvh, p.z0, s, d), p.nz, 1.0, beta)?;
            gemm_acc(be, (dpr, true), (q_rows, false), chunk(&dkh, p.z0, s, d), p.nz, 1.0, beta)?;
            gemm(be, (dpr, false), (chunk(&kh, p.z0, s, d), false), p.rows_of(&dqh, rows, d), p.nz, 1.0)?;
        }
    } else {
        for g in [&dqh, &dkh, &dvh] {
            be.memset_zero(&g.buf, g.size_in_bytes())?;
        }
    }
    let dq = from_heads(be, &dqh, batch, t, heads, d, "attention dq")?;
    let dk = from_heads(be, &dkh, batch, s, kv_heads, d, "attention dk")?;
    let dv = from_heads(be, &dvh, batch, s, kv_heads, d, "attention dv")?;
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(t: usize, heads: usize, kv_heads: usize, batch: usize) -> Dims {
        Dims { shape: AttentionDims { batch, q_len: t, heads, kv_heads, head_dim: 128, kv_capacity: t }, s: t }
    }

    #[test]
    fn pieces_cover_every_row_once_within_the_budget() {
        let budget = 512 << 20;
        // Qwen2.5-7B (28 heads over 4 kv heads) at T = 2048: whole slices, several per piece.
        let short = dims(2048, 28, 4, 1);
        let p = short.pieces(2, budget);
        assert!(p.iter().all(|p| p.r0 == 0 && p.nr == 7 * 2048 && p.nz * p.nr * 2048 * 4 * 2 <= budget), "{p:?}");
        assert_eq!(p.iter().map(|p| p.nz).sum::<usize>(), 4);
        // T = 8192: one slice's scores are 1.9 GB forward, 3.8 GB backward: blocks of rows.
        for buffers in [1, 2] {
            let long_t = dims(8192, 28, 4, 2);
            let pieces = long_t.pieces(buffers, budget);
            let rows = long_t.rows_per_z();
            assert!(pieces.iter().all(|p| p.nz == 1 && p.nr * 8192 * 4 * buffers <= budget), "{pieces:?}");
            for z in 0..8 {
                let mut covered: Vec<(usize, usize)> = pieces.iter().filter(|p| p.z0 == z).map(|p| (p.r0, p.nr)).collect();
                covered.sort();
                let mut next = 0;
                for (r0, nr) in covered {
                    assert_eq!(r0, next);
                    next += nr;
                }
                assert_eq!(next, rows, "slice {z}");
            }
        }
        // A budget below one row still makes progress one row at a time.
        assert!(dims(64, 2, 1, 1).pieces(2, 1).iter().all(|p| p.nr == 1));
    }
}
