//! Launchers for `kernels/attention.cu`: causal GQA attention as head-major copies, cuBLASLt
//! strided-batched f32 GEMMs and the masked softmax kernels (see the .cu for the layout).
//!
//! For z = b·KV + g the `group = H/KV` query heads of kv head g are stacked as `group·T` rows,
//! so per z: `S = scale·Q Kᵀ` `[group·T, S]`, `O = P V`, and in backward
//! `dP = dO Vᵀ`, `dV = Pᵀ dO`, `dK = dSᵀ Q`, `dQ = dS K`. The z range is processed in chunks
//! whose score matrices stay under [`ATTN_SCORE_BYTES`].

use cudarc::driver::LaunchConfig;
use cudarc::driver::PushKernelArg;
use qtrain_core::{AttentionMask, DType};

use super::{grid_1d, int, long, BLOCK};
use crate::alloc::DevBuf;
use crate::backend::CudaBackend;
use crate::error::Result;
use crate::gemm::{ElemType, GemmArgs, MatRef};
use crate::registry as k;
use crate::tensor::CudaTensor;

/// Budget for the f32 score matrices of one chunk (both of them in backward).
pub const ATTN_SCORE_BYTES: usize = 512 << 20;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
    /// Used key/value positions (`mask.kv_len`).
    pub s: usize,
    /// Capacity of the k/v tensors (`k.shape[1]`, ≥ s).
    pub cap: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn rows_per_z(&self) -> usize {
        self.group() * self.t
    }

    /// z values per chunk when `buffers` score matrices of `[group·T, S]` f32 must fit `budget` bytes.
    pub fn z_chunk(&self, buffers: usize, budget: usize) -> usize {
        let per_z = self.rows_per_z() * self.s * 4 * buffers;
        (budget / per_z.max(1)).clamp(1, (self.batch * self.kv_heads).max(1))
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
    be.gemm(&GemmArgs { a, trans_a, b, trans_b, c, batch, alpha, beta: 0.0 })
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
    let Dims { batch, t, heads, kv_heads, d, s, cap } = dm;
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
    let zs = batch * kv_heads;
    let zc = dm.z_chunk(1, be.attention_budget());
    let scores = be.alloc_buf(zc * rows * s, DType::F32, &|| format!("attention scores [{zc}·{rows}, {s}] f32"))?;
    let (group, tl, sl, hh, kvh, qo) = (
        int(dm.group(), "group")?,
        int(t, "T")?,
        int(s, "kv_len")?,
        int(heads, "heads")?,
        int(kv_heads, "kv heads")?,
        int(mask.q_offset, "q_offset")?,
    );
    for z0 in (0..zs).step_by(zc) {
        let nz = zc.min(zs - z0);
        let sc = scores_ref(&scores, rows, s);
        gemm(be, (chunk(&qh, z0, rows, d), false), (chunk(&kh, z0, s, d), true), sc, nz, scale)?;
        let (ps, pl, z0i) = (scores.ptr(), lse.ptr(), int(z0, "z0")?);
        let f = be.func(k::ATTN_SOFTMAX_FWD_F32)?;
        let mut a = be.stream.launch_builder(&f);
        a.arg(&ps).arg(&pl).arg(&kv_ptr).arg(&seg_ptr).arg(&z0i).arg(&group).arg(&tl).arg(&sl).arg(&hh).arg(&kvh).arg(&qo);
        let cfg = LaunchConfig { grid_dim: ((nz * rows) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument list of attn_softmax_fwd_f32; scores hold nz·rows rows of s f32, lse
        // B·T·H f32, the mask arrays B·s entries or are null.
        unsafe { be.launch(k::ATTN_SOFTMAX_FWD_F32, a, cfg) }?;
        gemm(be, (sc, false), (chunk(&vh, z0, s, d), false), chunk(&oh, z0, rows, d), nz, 1.0)?;
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
    let Dims { batch, t, heads, kv_heads, d, s, .. } = dm;
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
    let zs = batch * kv_heads;
    if rows * s > 0 {
        let zc = dm.z_chunk(2, be.attention_budget());
        let scores = be.alloc_buf(zc * rows * s, DType::F32, &|| format!("attention scores [{zc}·{rows}, {s}] f32 (backward)"))?;
        let dp = be.alloc_buf(zc * rows * s, DType::F32, &|| format!("attention dP [{zc}·{rows}, {s}] f32"))?;
        let (group, tl, sl, hh, kvh, qo) = (
            int(dm.group(), "group")?,
            int(t, "T")?,
            int(s, "kv_len")?,
            int(heads, "heads")?,
            int(kv_heads, "kv heads")?,
            int(mask.q_offset, "q_offset")?,
        );
        for z0 in (0..zs).step_by(zc) {
            let nz = zc.min(zs - z0);
            let (sc, dpr) = (scores_ref(&scores, rows, s), scores_ref(&dp, rows, s));
            gemm(be, (chunk(&qh, z0, rows, d), false), (chunk(&kh, z0, s, d), true), sc, nz, scale)?;
            gemm(be, (chunk(&doh, z0, rows, d), false), (chunk(&vh, z0, s, d), true), dpr, nz, 1.0)?;
            let (ps, pdp, pl, pdl, z0i) = (scores.ptr(), dp.ptr(), lse.ptr(), delta.ptr(), int(z0, "z0")?);
            let f = be.func(k::ATTN_SOFTMAX_BWD_F32)?;
            let mut a = be.stream.launch_builder(&f);
            a.arg(&ps)
                .arg(&pdp)
                .arg(&pl)
                .arg(&pdl)
                .arg(&kv_ptr)
                .arg(&seg_ptr)
                .arg(&z0i)
                .arg(&group)
                .arg(&tl)
                .arg(&sl)
                .arg(&hh)
                .arg(&kvh)
                .arg(&qo)
                .arg(&scale);
            let cfg = LaunchConfig { grid_dim: ((nz * rows) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: argument list of attn_softmax_bwd_f32; scores and dp hold nz·rows rows of
            // s f32, lse B·T·H and delta B·H·T f32, the mask arrays B·s entries or are null.
            unsafe { be.launch(k::ATTN_SOFTMAX_BWD_F32, a, cfg) }?;
            gemm(be, (sc, true), (chunk(&doh, z0, rows, d), false), chunk(&dvh, z0, s, d), nz, 1.0)?;
            gemm(be, (dpr, true), (chunk(&qh, z0, rows, d), false), chunk(&dkh, z0, s, d), nz, 1.0)?;
            gemm(be, (dpr, false), (chunk(&kh, z0, s, d), false), chunk(&dqh, z0, rows, d), nz, 1.0)?;
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
