//! CPU attention, forward and backward, as per-head GEMMs (Q·Kᵀ, softmax, P·V; and the
//! FlashAttention-2 backward equations, Dao 2023, Alg. 2, without tiling). One rayon task per
//! (batch row, key/value head) owns that head's K/V and the query heads of its group, so dK/dV
//! accumulate without locks; inside a task the products run single-threaded. Scores of one head
//! (`[T, S]`) are the largest temporary. Must keep `AttentionMask` semantics exactly: a masked
//! score is −∞ and a query with no visible key gets a zero output and lse 0.

use rayon::prelude::*;

use super::gemm::gemm_f32_serial;
use super::CpuTensor;
use crate::backend::{check_attention_backward_shapes, check_attention_shapes, AttentionMask, TensorInfo};
use crate::error::Result;

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

/// Turns scaled scores `[T, S]` into probabilities in place (masked entries 0) and returns each
/// row's log-sum-exp (0 for a row with no visible key).
fn masked_softmax(scores: &mut [f32], s_len: usize, mask: &AttentionMask, bi: usize) -> Vec<f32> {
    scores
        .chunks_mut(s_len)
        .enumerate()
        .map(|(i, row)| {
            let mut max = f32::NEG_INFINITY;
            for (j, x) in row.iter_mut().enumerate() {
                if mask.allows(bi, i, j) {
                    max = max.max(*x);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
                return 0.0;
            }
            let mut denom = 0.0f32;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                denom += *x;
            }
            let inv = 1.0 / denom;
            row.iter_mut().for_each(|x| *x *= inv);
            max + denom.ln()
        })
        .collect()
}

pub fn attention(q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, mask: &AttentionMask, scale: f32) -> Result<(CpuTensor, CpuTensor)> {
    let dims = check_attention_shapes("attention", q.shape(), k.shape(), v.shape(), mask)?;
    let (b, t, h, d, cap, kvh) = (dims.batch, dims.q_len, dims.heads, dims.head_dim, dims.kv_capacity, dims.kv_heads);
    let (group, s_len) = (h / kvh, mask.kv_len);
    // Per task: (batch row, kv head, [(query head, out [T, D], lse [T])]).
    type Part = (usize, usize, Vec<(usize, Vec<f32>, Vec<f32>)>);
    let parts: Vec<Part> = (0..b * kvh)
        .into_par_iter()
        .map(|task| {
            let (bi, g) = (task / kvh, task % kvh);
            let kg = gather(k.data(), s_len, kvh * d, (bi * cap * kvh + g) * d, d);
            let vg = gather(v.data(), s_len, kvh * d, (bi * cap * kvh + g) * d, d);
            let mut heads = Vec::with_capacity(group);
            let mut scores = vec![0.0f32; t * s_len];
            for hh in g * group..(g + 1) * group {
                let qh = gather(q.data(), t, h * d, (bi * t * h + hh) * d, d);
                gemm_f32_serial(t, s_len, d, &qh, false, &kg, true, &mut scores, false, scale);
                let lse = masked_softmax(&mut scores, s_len, mask, bi);
                let mut oh = vec![0.0f32; t * d];
                gemm_f32_serial(t, d, s_len, &scores, false, &vg, false, &mut oh, false, 1.0);
                heads.push((hh, oh, lse));
            }
            (bi, g, heads)
        })
        .collect();
    let mut out = vec![0.0f32; q.data().len()];
    let mut lse = vec![0.0f32; b * t * h];
    for (bi, _, heads) in parts {
        for (hh, oh, l) in heads {
            scatter(&mut out, t, h * d, (bi * t * h + hh) * d, d, &oh);
            for (i, x) in l.into_iter().enumerate() {
                lse[(bi * t + i) * h + hh] = x;
            }
        }
    }
    Ok((CpuTensor::new(out, q.shape())?, CpuTensor::new(lse, &[b, t, h])?))
}

/// pᵢⱼ = exp(sᵢⱼ − lseᵢ), Dᵢ = dOᵢ·Oᵢ, dS = P ⊙ (dO Vᵀ − D)·scale,
/// dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dO (summed over the query heads sharing a key/value head).
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
) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
    let dims = check_attention_backward_shapes(q.shape(), k.shape(), v.shape(), out.shape(), lse.shape(), dout.shape(), mask)?;
    let (b, t, h, d, s_len, kvh) = (dims.batch, dims.q_len, dims.heads, dims.head_dim, dims.kv_capacity, dims.kv_heads);
    let group = h / kvh;
    // Per task: (batch row, kv head, [(query head, dq [T, D])], dk [S, D], dv [S, D]).
    type Part = (usize, usize, Vec<(usize, Vec<f32>)>, Vec<f32>, Vec<f32>);
    let parts: Vec<Part> = (0..b * kvh)
        .into_par_iter()
        .map(|task| {
            let (bi, g) = (task / kvh, task % kvh);
            let kv_off = (bi * s_len * kvh + g) * d;
            let kg = gather(k.data(), s_len, kvh * d, kv_off, d);
            let vg = gather(v.data(), s_len, kvh * d, kv_off, d);
            let (mut dk, mut dv) = (vec![0.0f32; s_len * d], vec![0.0f32; s_len * d]);
            let mut p = vec![0.0f32; t * s_len];
            let mut ds = vec![0.0f32; t * s_len];
            let mut dqs = Vec::with_capacity(group);
            for hh in g * group..(g + 1) * group {
                let q_off = (bi * t * h + hh) * d;
                let qh = gather(q.data(), t, h * d, q_off, d);
                let oh = gather(out.data(), t, h * d, q_off, d);
                let doh = gather(dout.data(), t, h * d, q_off, d);
                gemm_f32_serial(t, s_len, d, &qh, false, &kg, true, &mut p, false, scale);
                for (i, row) in p.chunks_mut(s_len).enumerate() {
                    let l = lse.data()[(bi * t + i) * h + hh];
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = if mask.allows(bi, i, j) { (*x - l).exp() } else { 0.0 };
                    }
                }
                gemm_f32_serial(t, s_len, d, &doh, false, &vg, true, &mut ds, false, 1.0);
                for i in 0..t {
                    let di: f32 = doh[i * d..][..d].iter().zip(&oh[i * d..][..d]).map(|(a, b)| a * b).sum();
                    for (x, pij) in ds[i * s_len..][..s_len].iter_mut().zip(&p[i * s_len..][..s_len]) {
                        *x = pij * (*x - di) * scale;
                    }
                }
                let mut dq = vec![0.0f32; t * d];
                gemm_f32_serial(t, d, s_len, &ds, false, &kg, false, &mut dq, false, 1.0);
                gemm_f32_serial(s_len, d, t, &ds, true, &qh, false, &mut dk, true, 1.0);
                gemm_f32_serial(s_len, d, t, &p, true, &doh, false, &mut dv, true, 1.0);
                dqs.push((hh, dq));
            }
            (bi, g, dqs, dk, dv)
        })
        .collect();
    let mut dq_all = vec![0.0f32; q.data().len()];
    let mut dk_all = vec![0.0f32; k.data().len()];
    let mut dv_all = vec![0.0f32; v.data().len()];
    for (bi, g, dqs, dk, dv) in parts {
        for (hh, dq) in dqs {
            scatter(&mut dq_all, t, h * d, (bi * t * h + hh) * d, d, &dq);
        }
        let kv_off = (bi * s_len * kvh + g) * d;
        scatter(&mut dk_all, s_len, kvh * d, kv_off, d, &dk);
        scatter(&mut dv_all, s_len, kvh * d, kv_off, d, &dv);
    }
    Ok((CpuTensor::new(dq_all, q.shape())?, CpuTensor::new(dk_all, k.shape())?, CpuTensor::new(dv_all, v.shape())?))
}
