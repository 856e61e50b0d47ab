//! CPU kernels for the backward ops and the loss, as free functions over [`CpuTensor`]s so
//! `mod.rs` stays a readable list of ops. Each is the textbook derivative written as loops;
//! the equations are in the comments. Must not hide shortcuts (same rule as the forward).

use rayon::prelude::*;

use super::gemm::{self, gemm_f32, Precision};
use super::gemm_bf16::{Operand, Product};
use super::math::{self, exp};
use super::{inverse_rms, CpuTensor};
use crate::backend::{CrossEntropyGrad, CrossEntropyOutput, LinearGrads, LoraWeights, TensorInfo};
use crate::error::Result;
use crate::shapes::{self, rows_cols};
use crate::Dropout;

/// Rows of the LM head processed at once: `[CE_CHUNK_ROWS × V]` f32 logits is the largest
/// temporary the loss ever holds.
pub const CE_CHUNK_ROWS: usize = 256;

/// x ⊙ mask for the LoRA path (or x itself), the mask drawn row by row from its Philox key.
pub(super) fn lora_input(x: &CpuTensor, dropout: Option<Dropout>) -> Result<std::borrow::Cow<'_, [f32]>> {
    let Some(d) = dropout else {
        return Ok(std::borrow::Cow::Borrowed(x.data()));
    };
    let (rows, cols) = rows_cols(x.shape());
    shapes::check_dropout_rows("linear", rows, cols)?;
    let mut out = vec![0.0; x.data().len()];
    out.par_chunks_mut(cols.max(1)).zip(x.data().par_chunks(cols.max(1))).enumerate().for_each(|(row, (o, xr))| {
        d.fill_row(row as u32, o);
        o.iter_mut().zip(xr).for_each(|(m, v)| *m *= v);
    });
    Ok(std::borrow::Cow::Owned(out))
}

/// y = x Wᵀ + b + s·(x̃ Aᵀ) Bᵀ with x̃ = x ⊙ mask. Then
/// dx = dy W + s·((dy B) A) ⊙ mask, dW += dyᵀ x, db += Σₙ dy, dB += s·dyᵀ (x̃ Aᵀ), dA += s·(dy B)ᵀ x̃.
pub fn linear_backward(
    precision: Precision,
    x: &CpuTensor,
    w: &CpuTensor,
    lora: Option<LoraWeights<'_, CpuTensor>>,
    dy: &CpuTensor,
    grads: LinearGrads<'_, CpuTensor>,
    need_dx: bool,
) -> Result<Option<CpuTensor>> {
    let grad_shapes = grads.shapes();
    let lora_shapes = lora.as_ref().map(|l| (l.a.shape(), l.b.shape()));
    let shapes::LinearDims { rows: n, d_in, d_out } =
        shapes::check_linear_backward_shapes(x.shape(), w.shape(), lora_shapes, dy.shape(), grad_shapes)?;
    let (x_op, dy_op) = (Operand::F32(x.f32s("linear_backward")?), Operand::F32(dy.f32s("linear_backward")?));
    let mut dx = need_dx.then(|| gemm::product_new(precision, &Product::new(n, d_in, d_out, dy_op, false, w.operand(), false), 1.0));
    if let Some(gw) = grads.weight {
        gemm::product(
            precision,
            &Product::new(d_out, d_in, n, dy_op, true, x_op, false),
            gw.f32s_mut("linear_backward")?,
            true,
            1.0,
            false,
        );
    }
    if let Some(gb) = grads.bias {
        for row in dy.data().chunks(d_out) {
            gb.data_mut().iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
    }
    if let Some(l) = lora {
        let r = l.a.shape()[0];
        let xl = lora_input(x, l.dropout)?;
        if let Some(gb) = grads.lora_b {
            let mut xa = vec![0.0; n * r];
            gemm_f32(n, r, d_in, &xl, false, l.a.data(), true, &mut xa, false, 1.0);
            gemm_f32(d_out, r, n, dy.data(), true, &xa, false, gb.data_mut(), true, l.scale);
        }
        // g = s · dy B  [N, r]
        let mut g = vec![0.0; n * r];
        gemm_f32(n, r, d_out, dy.data(), false, l.b.data(), false, &mut g, false, l.scale);
        if let Some(ga) = grads.lora_a {
            gemm_f32(r, d_in, n, &g, true, &xl, false, ga.data_mut(), true, 1.0);
        }
        if let Some(dx) = dx.as_mut() {
            match l.dropout {
                // No dropout: accumulate (dy B) A straight into dx, no temporary.
                None => gemm_f32(n, d_in, r, &g, false, l.a.data(), false, dx, true, 1.0),
                Some(d) => {
                    let mut dxl = vec![0.0; n * d_in];
                    gemm_f32(n, d_in, r, &g, false, l.a.data(), false, &mut dxl, false, 1.0);
                    // dx += (g A) ⊙ mask, the mask redrawn from its key (lora_input checked the sizes).
                    dx.par_chunks_mut(d_in).zip(dxl.par_chunks(d_in)).enumerate().for_each(|(row, (a, b))| {
                        let mut mask = vec![0.0; d_in];
                        d.fill_row(row as u32, &mut mask);
                        a.iter_mut().zip(b).zip(&mask).for_each(|((a, b), m)| *a += b * m);
                    });
                }
            }
        }
    }
    dx.map(|d| CpuTensor::new(d, x.shape())).transpose()
}

pub fn embedding_backward(grad_table: &mut CpuTensor, ids: &[u32], dy: &CpuTensor) -> Result<()> {
    let (_, c) = shapes::check_embedding_backward_shapes(grad_table.shape(), ids, dy.shape())?;
    for (row, &id) in dy.data().chunks(c).zip(ids) {
        let id = id as usize;
        grad_table.data_mut()[id * c..(id + 1) * c].iter_mut().zip(row).for_each(|(g, d)| *g += d);
    }
    Ok(())
}

/// y = w ⊙ x·r with r = (mean(x²) + eps)^(-1/2). With u = w ⊙ dy:
/// dx = r·u − x · r³ · (Σ u·x) / C,   dw += Σ_rows dy ⊙ x·r.
pub fn rms_norm_backward(x: &CpuTensor, w: &CpuTensor, eps: f32, dy: &CpuTensor, grad_w: Option<&mut CpuTensor>) -> Result<CpuTensor> {
    let (_, c) = shapes::check_rms_norm_backward_shapes(x.shape(), w.shape(), dy.shape(), grad_w.as_deref().map(|g| g.shape()))?;
    let mut dx = vec![0.0; x.data().len()];
    dx.par_chunks_mut(c).zip(x.data().par_chunks(c)).zip(dy.data().par_chunks(c)).for_each(|((o, xr), dyr)| {
        math::vectorized!(|| {
            let r = inverse_rms(xr, eps);
            // Σ u·x with u = w ⊙ dy, written into `o` first so the dot product runs on slices.
            o.iter_mut().zip(dyr).zip(w.data()).for_each(|((u, d), g)| *u = g * d);
            let k = r * r * r * math::dot(o, xr) / c as f32;
            for (o, x) in o.iter_mut().zip(xr) {
                *o = r * *o - x * k;
            }
        })
    });
    if let Some(gw) = grad_w {
        let partial = x
            .data()
            .par_chunks(c)
            .zip(dy.data().par_chunks(c))
            .fold(
                || vec![0.0f32; c],
                |mut acc, (xr, dyr)| {
                    math::vectorized!(|| {
                        let r = inverse_rms(xr, eps);
                        acc.iter_mut().zip(xr).zip(dyr).for_each(|((a, x), d)| *a += d * x * r);
                    });
                    acc
                },
            )
            .reduce(
                || vec![0.0f32; c],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        gw.data_mut().iter_mut().zip(&partial).for_each(|(g, p)| *g += p);
    }
    CpuTensor::new(dx, x.shape())
}

/// The forward rotates each (x₁, x₂) pair by +θ; its transpose rotates dy by −θ:
/// dx₁ = dy₁·cos + dy₂·sin, dx₂ = dy₂·cos − dy₁·sin.
pub fn rope_backward(dy: &CpuTensor, cos: &CpuTensor, sin: &CpuTensor, positions: &[u32]) -> Result<CpuTensor> {
    let (_, h, d) = shapes::check_rope_shapes("rope_backward", dy.shape(), cos.shape(), sin.shape(), positions)?;
    let half = d / 2;
    let mut out = vec![0.0; dy.data().len()];
    out.par_chunks_mut(h * d).zip(dy.data().par_chunks(h * d)).zip(positions.par_iter()).for_each(|((o, row), &p)| {
        let c = &cos.data()[p as usize * half..][..half];
        let s = &sin.data()[p as usize * half..][..half];
        for head in 0..h {
            let g = &row[head * d..(head + 1) * d];
            let oh = &mut o[head * d..(head + 1) * d];
            for i in 0..half {
                oh[i] = g[i] * c[i] + g[i + half] * s[i];
                oh[i + half] = g[i + half] * c[i] - g[i] * s[i];
            }
        }
    });
    CpuTensor::new(out, dy.shape())
}

/// y = silu(g)·u with silu(g) = g·σ(g): du = dy·silu(g), dg = dy·u·σ(g)·(1 + g·(1 − σ(g))).
pub fn swiglu_backward(gate: &CpuTensor, up: &CpuTensor, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
    shapes::check_swiglu_shapes("swiglu_backward", gate.shape(), up.shape(), Some(dy.shape()))?;
    const CHUNK: usize = super::ELEMENTWISE_CHUNK;
    let (mut dg, mut du) = (vec![0.0f32; gate.data().len()], vec![0.0f32; gate.data().len()]);
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(gate.data().par_chunks(CHUNK).zip(up.data().par_chunks(CHUNK)).zip(dy.data().par_chunks(CHUNK)))
        .for_each(|((dg, du), ((g, u), d))| {
            // Equal-length slices and an index loop: no bounds checks, so the loop vectorises.
            let len = dg.len();
            let (du, g, u, d) = (&mut du[..len], &g[..len], &u[..len], &d[..len]);
            math::vectorized!(|| {
                for i in 0..len {
                    let s = math::sigmoid(g[i]);
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = d[i] * g[i] * s;
                }
            })
        });
    Ok((CpuTensor::new(dg, gate.shape())?, CpuTensor::new(du, up.shape())?))
}

/// Chunked LM head + cross-entropy. Only rows with a target take part; per chunk of
/// [`CE_CHUNK_ROWS`] rows: logits = H Wᵀ, softmax, loss, dlogits = scale·(softmax − onehot),
/// dH = dlogits W, dW += dlogitsᵀ H.
pub fn lm_head_cross_entropy(
    precision: Precision,
    hidden: &CpuTensor,
    w: &CpuTensor,
    targets: &[i32],
    grad: Option<CrossEntropyGrad<'_, CpuTensor>>,
) -> Result<CrossEntropyOutput<CpuTensor>> {
    let grad_w_shape = grad.as_ref().and_then(|g| g.grad_w.as_deref()).map(|g| g.shape());
    let (n, c, vocab) = shapes::check_cross_entropy_shapes(hidden.shape(), w.shape(), targets, grad_w_shape)?;
    let rows: Vec<usize> = (0..n).filter(|&i| targets[i] != -100).collect();
    let (scale, mut grad_w) = match grad {
        Some(g) => (Some(g.scale), g.grad_w),
        None => (None, None),
    };
    let mut grad_hidden = scale.map(|_| vec![0.0f32; n * c]);
    let (mut loss_sum, mut num_correct) = (0.0f64, 0usize);
    for chunk in rows.chunks(CE_CHUNK_ROWS) {
        let m = chunk.len();
        let mut h = Vec::with_capacity(m * c);
        for &i in chunk {
            h.extend_from_slice(&hidden.data()[i * c..(i + 1) * c]);
        }
        let mut logits = gemm::product_new(precision, &Product::new(m, vocab, c, Operand::F32(&h), false, w.operand(), true), 1.0);
        let stats: Vec<(f64, bool)> = logits
            .par_chunks_mut(vocab)
            .zip(chunk.par_iter())
            .map(|(row, &i)| {
                math::vectorized!(|| {
                    let target = targets[i] as usize;
                    let max = math::max(row);
                    // Predicted token: the first index of the maximum (argmax), found in a second,
                    // vectorisable pass rather than a branchy running comparison.
                    let best = row.iter().position(|&x| x == max).unwrap_or(0);
                    let target_logit = row[target];
                    // One exp per logit, written over the logits (a pass apart from the sum, so
                    // that it vectorises).
                    row.iter_mut().for_each(|x| *x = exp(*x - max));
                    let sum = math::sum(row);
                    if let Some(s) = scale {
                        // dlogits = s · (softmax − onehot): scale exp(x − max) by s / Σ.
                        let k = s / sum;
                        row.iter_mut().for_each(|x| *x *= k);
                        row[target] -= s;
                    }
                    ((max + sum.ln() - target_logit) as f64, best == target)
                })
            })
            .collect();
        for (l, ok) in stats {
            loss_sum += l;
            num_correct += ok as usize;
        }
        if let Some(gh) = grad_hidden.as_mut() {
            let dh = gemm::product_new(precision, &Product::new(m, c, vocab, Operand::F32(&logits), false, w.operand(), false), 1.0);
            for (r, &i) in chunk.iter().enumerate() {
                gh[i * c..(i + 1) * c].copy_from_slice(&dh[r * c..(r + 1) * c]);
            }
            if let Some(gw) = grad_w.as_deref_mut() {
                let gw = gw.f32s_mut("lm_head_cross_entropy")?;
                gemm::product(
                    precision,
                    &Product::new(vocab, c, m, Operand::F32(&logits), true, Operand::F32(&h), false),
                    gw,
                    true,
                    1.0,
                    false,
                );
            }
        }
    }
    Ok(CrossEntropyOutput {
        loss_sum,
        num_targets: rows.len(),
        num_correct,
        grad_hidden: grad_hidden.map(|g| CpuTensor::new(g, &[n, c])).transpose()?,
    })
}
