//! CPU attention, forward and backward, as GEMMs (Q·Kᵀ, softmax, P·V; and the
//! FlashAttention-2 backward equations, Dao 2023, Alg. 2, without tiling). One rayon task per
//! (batch row, key/value head) owns that head's K/V and the query heads of its group, so dK/dV
//! accumulate without locks; inside a task the products run single-threaded. The group's query
//! heads (adjacent in `[B, T, H, D]`) are gathered as one `[T · group, D]` matrix, so each product
//! has `group` times the rows — fewer, larger GEMM calls that share one packing of K or V.
//! Queries go in blocks of [`QUERY_BLOCK`] positions and each block multiplies only the keys
//! causality lets it see, which skips ~44 % of the products at T = 256 (most of the masked upper
//! triangle). Scores of one block (`[QUERY_BLOCK · group, S]`) are the largest temporary. Must
//! keep `AttentionMask` semantics exactly: a masked score is −∞ and a query with no visible key
//! gets a zero output and lse 0.

use rayon::prelude::*;

use super::gemm::{self, Precision};
use super::gemm_bf16::{Operand, Product};
use super::math::{self, exp};
use super::CpuTensor;
use crate::backend::{AttentionMask, TensorInfo};
use crate::error::Result;
use crate::shapes::{check_attention_backward_shapes, check_attention_shapes};

/// Copy `rows` rows of `d` values, `stride` apart from `offset`, into a contiguous `[rows, d]`.
fn gather(src: &[f32], rows: usize, stride: usize, offset: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * d);
    for r in 0..rows {
        out.extend_from_slice(&src[offset + r * stride..][..d]);
    }
    out
}

/// The inverse of [`gather`].
fn scatter(dst: &mut [f32], rows: usize, stride: usize, offset: usize, d: usize, src: &[f32]) {
    for r in 0..rows {
        dst[offset + r * stride..][..d].copy_from_slice(&src[r * d..][..d]);
    }
}

/// One product of an attention block on the calling thread (attention already runs one task
/// per batch row and key/value head), at the backend's precision.
#[allow(clippy::too_many_arguments)]
fn mm(precision: Precision, m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], acc: bool, alpha: f32) {
    gemm::product(precision, &Product::new(m, n, k, Operand::F32(a), ta, Operand::F32(b), tb), c, acc, alpha, true)
}

/// Query positions per block: big enough for efficient products, small enough that the causal
/// triangle is skipped at a fine grain. At T = 256, D = 64 on two threads (min of 30), 32 rows
/// beat 16, 64 and 128: forward 0.99–1.04 ms vs 1.01–1.19 / 1.09–1.35 / 1.36–1.41 ms (one head
/// per product). With a GQA group of 2 stacked per product, 32 still beat 16 and 64 (backward
/// 1.24–1.26 ms vs 1.31 / 1.58 ms).
pub const QUERY_BLOCK: usize = 32;

/// Keys `0..end` that some query of the block `i0..i0 + rows` may see (causality only).
fn block_key_end(mask: &AttentionMask, i0: usize, rows: usize) -> usize {
    mask.causal_end(i0 + rows - 1)
}

/// Sets the masked scores of query row `i` to −∞; only padding and packed segments need the
/// per-key test, plain causality is a prefix.
fn apply_mask(row: &mut [f32], mask: &AttentionMask, bi: usize, i: usize) {
    let end = mask.causal_end(i).min(row.len());
    row[end..].fill(f32::NEG_INFINITY);
    if mask.key_valid.is_some() || mask.segments.is_some() {
        for (j, x) in row[..end].iter_mut().enumerate() {
            if !mask.allows(bi, i, j) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

/// Turns scaled scores `[rows · group, s_len]` — rows of query positions `i0..`, each position's
/// `group` heads adjacent — into probabilities in place (masked entries 0) and returns each
/// row's log-sum-exp (0 for a row with no visible key).
fn masked_softmax(scores: &mut [f32], s_len: usize, group: usize, mask: &AttentionMask, bi: usize, i0: usize) -> Vec<f32> {
    if s_len == 0 {
        return vec![0.0; scores.len()];
    }
    scores
        .chunks_mut(s_len)
        .enumerate()
        .map(|(r, row)| {
            apply_mask(row, mask, bi, i0 + r / group);
            math::vectorized!(|| {
                let max = math::max(row);
                if max == f32::NEG_INFINITY {
                    row.fill(0.0);
                    return 0.0;
                }
                row.iter_mut().for_each(|x| *x = exp(*x - max));
                let denom = math::sum(row);
                let inv = 1.0 / denom;
                row.iter_mut().for_each(|x| *x *= inv);
                max + denom.ln()
            })
        })
        .collect()
}

/// The attention-dropout factors of the first `keys` keys for the score rows of one block:
/// rows of query positions `i0..`, each position's `group` heads adjacent, of kv head `g` in
/// batch row `bi` — mask row `(bi·H + h)·T + i` as [`AttentionMask::dropout`] defines it.
#[allow(clippy::too_many_arguments)]
fn dropout_rows(
    d: crate::Dropout,
    rows: usize,
    keys: usize,
    (bi, g, group, heads, t): (usize, usize, usize, usize, usize),
    i0: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * keys];
    for (r, row) in out.chunks_mut(keys.max(1)).enumerate() {
        let (i, h) = (i0 + r / group, g * group + r % group);
        d.fill_row(((bi * heads + h) * t + i) as u32, row);
    }
    out
}

/// Causal/padded/packed attention, `block` query positions at a time ([`QUERY_BLOCK`] in the
/// backend; tests use tiny blocks to cross block boundaries). Returns the output and each row's lse.
pub fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    mask: &AttentionMask,
    scale: f32,
    block: usize,
    precision: Precision,
) -> Result<(CpuTensor, CpuTensor)> {
    let dims = check_attention_shapes("attention", q.shape(), k.shape(), v.shape(), mask)?;
    let (b, t, h, d, cap, kvh) = (dims.batch, dims.q_len, dims.heads, dims.head_dim, dims.kv_capacity, dims.kv_heads);
    let (group, s_len) = (h / kvh, mask.kv_len);
    let gd = group * d;
    // Per task: (batch row, kv head, out [T, group, D], lse [T, group]).
    let parts: Vec<(usize, usize, Vec<f32>, Vec<f32>)> = (0..b * kvh)
        .into_par_iter()
        .map(|task| {
            let (bi, g) = (task / kvh, task % kvh);
            let kg = gather(k.data(), s_len, kvh * d, (bi * cap * kvh + g) * d, d);
            let vg = gather(v.data(), s_len, kvh * d, (bi * cap * kvh + g) * d, d);
            // The group's query heads are adjacent in q's [B, T, H, D]: gathered as [T · group, D].
            let qg = gather(q.data(), t, h * d, (bi * t * h + g * group) * d, gd);
            let mut og = vec![0.0f32; t * gd];
            let mut lse = Vec::with_capacity(t * group);
            let mut scores = vec![0.0f32; block.min(t) * group * s_len];
            for i0 in (0..t).step_by(block) {
                let rows = block.min(t - i0);
                let (m, keys) = (rows * group, block_key_end(mask, i0, rows).min(s_len));
                let blk = i0 * gd..(i0 + rows) * gd;
                let sb = &mut scores[..m * keys];
                mm(precision, m, keys, d, &qg[blk.clone()], false, &kg[..keys * d], true, sb, false, scale);
                lse.extend(masked_softmax(sb, keys, group, mask, bi, i0));
                if let Some(dp) = mask.dropout {
                    let f = dropout_rows(dp, m, keys, (bi, g, group, h, t), i0);
                    sb.iter_mut().zip(&f).for_each(|(p, f)| *p *= f);
                }
                mm(precision, m, d, keys, sb, false, &vg[..keys * d], false, &mut og[blk], false, 1.0);
            }
            (bi, g, og, lse)
        })
        .collect();
    let mut out = vec![0.0f32; q.data().len()];
    let mut lse_all = vec![0.0f32; b * t * h];
    for (bi, g, og, lse) in parts {
        scatter(&mut out, t, h * d, (bi * t * h + g * group) * d, gd, &og);
        scatter(&mut lse_all, t, h, bi * t * h + g * group, group, &lse);
    }
    Ok((CpuTensor::new(out, q.shape())?, CpuTensor::new(lse_all, &[b, t, h])?))
}

/// pᵢⱼ = exp(sᵢⱼ − lseᵢ), Dᵢ = dOᵢ·Oᵢ, dS = P ⊙ (dO Vᵀ − D)·scale,
/// dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dO (summed over the query heads sharing a key/value head).
/// With attention dropout (mask M, kept values 1/(1−p)): O = (P ⊙ M) V, so dV = (P ⊙ M)ᵀ dO and
/// dS = P ⊙ ((dO Vᵀ) ⊙ M − D)·scale, where still Dᵢ = dOᵢ·Oᵢ = Σⱼ (dO Vᵀ)ᵢⱼ Mᵢⱼ Pᵢⱼ.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    out: &CpuTensor,
    lse: &CpuTensor,
    dout: &CpuTensor,
    mask: &AttentionMask,
    scale: f32,
    block: usize,
    precision: Precision,
) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
    let dims = check_attention_backward_shapes(q.shape(), k.shape(), v.shape(), out.shape(), lse.shape(), dout.shape(), mask)?;
    let (b, t, h, d, s_len, kvh) = (dims.batch, dims.q_len, dims.heads, dims.head_dim, dims.kv_capacity, dims.kv_heads);
    let group = h / kvh;
    let gd = group * d;
    // Per task: (batch row, kv head, dq [T, group, D], dk [S, D], dv [S, D]).
    type Part = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>);
    let parts: Vec<Part> = (0..b * kvh)
        .into_par_iter()
        .map(|task| {
            let (bi, g) = (task / kvh, task % kvh);
            let kv_off = (bi * s_len * kvh + g) * d;
            let kg = gather(k.data(), s_len, kvh * d, kv_off, d);
            let vg = gather(v.data(), s_len, kvh * d, kv_off, d);
            // Query-side tensors of the group as [T · group, D] (see `attention`).
            let q_off = (bi * t * h + g * group) * d;
            let qg = gather(q.data(), t, h * d, q_off, gd);
            let og = gather(out.data(), t, h * d, q_off, gd);
            let dog = gather(dout.data(), t, h * d, q_off, gd);
            let lse_g = gather(lse.data(), t, h, bi * t * h + g * group, group);
            let (mut dk, mut dv) = (vec![0.0f32; s_len * d], vec![0.0f32; s_len * d]);
            let (mut p_buf, mut ds_buf) = (vec![0.0f32; block.min(t) * group * s_len], vec![0.0f32; block.min(t) * group * s_len]);
            let mut dq = vec![0.0f32; t * gd];
            for i0 in (0..t).step_by(block) {
                let rows = block.min(t - i0);
                let (m, keys) = (rows * group, block_key_end(mask, i0, rows).min(s_len));
                let blk = i0 * gd..(i0 + rows) * gd;
                let (q_blk, do_blk, o_blk) = (&qg[blk.clone()], &dog[blk.clone()], &og[blk.clone()]);
                let (p, ds) = (&mut p_buf[..m * keys], &mut ds_buf[..m * keys]);
                let (kb, vb) = (&kg[..keys * d], &vg[..keys * d]);
                mm(precision, m, keys, d, q_blk, false, kb, true, p, false, scale);
                for (r, row) in p.chunks_mut(keys.max(1)).enumerate() {
                    let l = lse_g[i0 * group + r];
                    apply_mask(row, mask, bi, i0 + r / group);
                    math::vectorized!(|| row.iter_mut().for_each(|x| *x = exp(*x - l)));
                }
                mm(precision, m, keys, d, do_blk, false, vb, true, ds, false, 1.0);
                let drop = mask.dropout.map(|dp| dropout_rows(dp, m, keys, (bi, g, group, h, t), i0));
                if let Some(f) = &drop {
                    ds.iter_mut().zip(f).for_each(|(x, f)| *x *= f);
                }
                for r in 0..m {
                    let di = math::dot(&do_blk[r * d..][..d], &o_blk[r * d..][..d]);
                    let (ds_row, p_row) = (&mut ds[r * keys..][..keys], &p[r * keys..][..keys]);
                    math::vectorized!(|| {
                        for (x, pij) in ds_row.iter_mut().zip(p_row) {
                            *x = pij * (*x - di) * scale;
                        }
                    });
                }
                mm(precision, m, d, keys, ds, false, kb, false, &mut dq[blk], false, 1.0);
                mm(precision, keys, d, m, ds, true, q_blk, false, &mut dk[..keys * d], true, 1.0);
                if let Some(f) = &drop {
                    p.iter_mut().zip(f).for_each(|(p, f)| *p *= f);
                }
                mm(precision, keys, d, m, p, true, do_blk, false, &mut dv[..keys * d], true, 1.0);
            }
            (bi, g, dq, dk, dv)
        })
        .collect();
    let mut dq_all = vec![0.0f32; q.data().len()];
    let mut dk_all = vec![0.0f32; k.data().len()];
    let mut dv_all = vec![0.0f32; v.data().len()];
    for (bi, g, dq, dk, dv) in parts {
        scatter(&mut dq_all, t, h * d, (bi * t * h + g * group) * d, gd, &dq);
        let kv_off = (bi * s_len * kvh + g) * d;
        scatter(&mut dk_all, s_len, kvh * d, kv_off, d, &dk);
        scatter(&mut dv_all, s_len, kvh * d, kv_off, d, &dv);
    }
    Ok((CpuTensor::new(dq_all, q.shape())?, CpuTensor::new(dk_all, k.shape())?, CpuTensor::new(dv_all, v.shape())?))
}
