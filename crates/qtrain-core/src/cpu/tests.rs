//! Each CPU op against an independent f64 formula on random inputs.

use super::*;
use crate::rng::Rng;

fn rand_tensor(rng: &mut Rng, shape: &[usize]) -> CpuTensor {
    let n = shape.iter().product();
    CpuTensor::new((0..n).map(|_| rng.normal() as f32).collect(), shape).unwrap()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn linear_with_bias_and_lora_matches_formula() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(1);
    let (n, din, dout, r) = (5, 12, 7, 3);
    let x = rand_tensor(&mut rng, &[n, din]);
    let w = rand_tensor(&mut rng, &[dout, din]);
    let bias = rand_tensor(&mut rng, &[dout]);
    let a = rand_tensor(&mut rng, &[r, din]);
    let b = rand_tensor(&mut rng, &[dout, r]);
    let y = be.linear(&x, &w, Some(&bias), Some(LoraWeights { a: &a, b: &b, scale: 0.75, dropout: None })).unwrap();
    let mut want = vec![0.0f64; n * dout];
    for i in 0..n {
        for o in 0..dout {
            let mut s = bias.data[o] as f64;
            for p in 0..din {
                s += x.data[i * din + p] as f64 * w.data[o * din + p] as f64;
            }
            for q in 0..r {
                let mut xa = 0.0f64;
                for p in 0..din {
                    xa += x.data[i * din + p] as f64 * a.data[q * din + p] as f64;
                }
                s += 0.75 * xa * b.data[o * r + q] as f64;
            }
            want[i * dout + o] = s;
        }
    }
    assert_close(y.data(), &want, 1e-5, "linear");
    assert!(be.linear(&x, &a, None, None).is_ok());
    assert!(be.linear(&x, &b, None, None).is_err(), "mismatched weight must be refused");
}

#[test]
fn rms_norm_matches_formula() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(2);
    let x = rand_tensor(&mut rng, &[6, 10]);
    let w = rand_tensor(&mut rng, &[10]);
    let y = be.rms_norm(&x, &w, 1e-6).unwrap();
    let mut want = vec![];
    for row in x.data().chunks(10) {
        let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 10.0;
        for (v, g) in row.iter().zip(w.data()) {
            want.push(*g as f64 * *v as f64 / (ms + 1e-6).sqrt());
        }
    }
    assert_close(y.data(), &want, 1e-6, "rms_norm");
}

#[test]
fn rope_rotates_pairs_half_a_head_apart() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(3);
    let (n, h, d) = (4, 2, 8);
    let x = rand_tensor(&mut rng, &[n, h, d]);
    let cos = rand_tensor(&mut rng, &[16, d / 2]);
    let sin = rand_tensor(&mut rng, &[16, d / 2]);
    let pos = [0u32, 5, 15, 7];
    let y = be.rope(&x, &cos, &sin, &pos).unwrap();
    let mut want = vec![0.0f64; n * h * d];
    for (t, &p) in pos.iter().enumerate() {
        let p = p as usize;
        for hh in 0..h {
            for i in 0..d {
                let base = (t * h + hh) * d;
                let c = cos.data()[p * d / 2 + i % (d / 2)] as f64;
                let s = sin.data()[p * d / 2 + i % (d / 2)] as f64;
                let rot = if i < d / 2 { -(x.data()[base + i + d / 2] as f64) } else { x.data()[base + i - d / 2] as f64 };
                want[base + i] = x.data()[base + i] as f64 * c + rot * s;
            }
        }
    }
    assert_close(y.data(), &want, 1e-6, "rope");
    assert!(be.rope(&x, &cos, &sin, &[0, 1, 16, 2]).is_err(), "position past the table must be refused");
}

/// Naive attention over explicit score matrices, honouring `AttentionMask::allows`.
fn naive_attention(q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, mask: &AttentionMask, scale: f64) -> Vec<f64> {
    let (b, t, h, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (cap, kvh) = (k.shape[1], k.shape[2]);
    let mut out = vec![0.0f64; b * t * h * d];
    for bi in 0..b {
        for i in 0..t {
            for hh in 0..h {
                let kh = hh / (h / kvh);
                let qv = &q.data()[((bi * t + i) * h + hh) * d..][..d];
                let mut scores: Vec<(usize, f64)> = vec![];
                for j in 0..mask.kv_len {
                    if mask.allows(bi, i, j) {
                        let kv = &k.data()[((bi * cap + j) * kvh + kh) * d..][..d];
                        scores.push((j, qv.iter().zip(kv).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale));
                    }
                }
                if scores.is_empty() {
                    continue;
                }
                let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                for (j, s) in scores {
                    let keep = mask.dropout.map_or(1.0, |dp| f64::from(dp.factor(((bi * h + hh) * t + i) as u32, j as u32)));
                    let p = (s - m).exp() / z * keep;
                    let vv = &v.data()[((bi * cap + j) * kvh + kh) * d..][..d];
                    for e in 0..d {
                        out[((bi * t + i) * h + hh) * d + e] += p * vv[e] as f64;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_causal_padding_gqa_and_segments() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(4);
    let (b, t, h, kvh, d) = (2, 6, 4, 2, 8);
    let q = rand_tensor(&mut rng, &[b, t, h, d]);
    let k = rand_tensor(&mut rng, &[b, t, kvh, d]);
    let v = rand_tensor(&mut rng, &[b, t, kvh, d]);
    let scale = 1.0 / (d as f32).sqrt();
    let mut valid = vec![true; b * t];
    valid[t + 4] = false; // right padding in row 1
    valid[t + 5] = false;
    let masks = [
        AttentionMask::causal(b, t),
        AttentionMask { key_valid: Some(valid.clone()), ..AttentionMask::causal(b, t) },
        AttentionMask { segments: Some(vec![0, 0, 0, 1, 1, 2, 0, 0, 1, 1, 1, 1]), ..AttentionMask::causal(b, t) },
        AttentionMask { key_valid: Some(valid.clone()), dropout: Some(attention_dropout(0.3)), ..AttentionMask::causal(b, t) },
    ];
    for mask in &masks {
        let want = naive_attention(&q, &k, &v, mask, scale as f64);
        let (o, lse) = be.attention(&q, &k, &v, mask, scale).unwrap();
        assert_close(o.data(), &want, 1e-5, "attention");
        assert_eq!(lse.shape(), &[b, t, h]);
        // Query blocks of 1, 2 and 4 rows cross block boundaries inside every row.
        for block in [1, 2, 4] {
            let (ob, lse_b) = super::attention::attention(&q, &k, &v, mask, scale, block, super::Precision::F32).unwrap();
            assert_close(ob.data(), &want, 1e-5, "blocked attention");
            assert_close(lse_b.data(), &lse.data().iter().map(|&x| x as f64).collect::<Vec<_>>(), 1e-5, "blocked lse");
        }
    }
    // The first query sees only itself: its output is its own value row.
    let (o, _) = be.attention(&q, &k, &v, &masks[0], scale).unwrap();
    assert_eq!(&o.data()[..d], &v.data()[..d]);
}

fn attention_dropout(p: f32) -> crate::Dropout {
    crate::Dropout { key: crate::MaskKey { seed: 77, layer: 2, module: crate::philox::MODULE_ATTENTION }, p }
}

/// Attention dropout p = 0 changes nothing, bit for bit; p > 0 drops about p of the probabilities
/// (the outputs differ) and keeps the undropped softmax's log-sum-exp.
#[test]
fn attention_dropout_zero_is_exact_and_positive_drops() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(6);
    let (b, t, h, kvh, d) = (2, 40, 4, 2, 8);
    let q = rand_tensor(&mut rng, &[b, t, h, d]);
    let k = rand_tensor(&mut rng, &[b, t, kvh, d]);
    let v = rand_tensor(&mut rng, &[b, t, kvh, d]);
    let dy = rand_tensor(&mut rng, &[b, t, h, d]);
    let plain = AttentionMask::causal(b, t);
    let zero = AttentionMask { dropout: Some(attention_dropout(0.0)), ..plain.clone() };
    let (o, l) = be.attention(&q, &k, &v, &plain, 0.3).unwrap();
    let (o0, l0) = be.attention(&q, &k, &v, &zero, 0.3).unwrap();
    assert_eq!((o.data(), l.data()), (o0.data(), l0.data()));
    let g = be.attention_backward(&q, &k, &v, &o, &l, &dy, &plain, 0.3).unwrap();
    let g0 = be.attention_backward(&q, &k, &v, &o0, &l0, &dy, &zero, 0.3).unwrap();
    assert_eq!((g.0.data(), g.1.data(), g.2.data()), (g0.0.data(), g0.1.data(), g0.2.data()));
    let dropped = AttentionMask { dropout: Some(attention_dropout(0.2)), ..plain.clone() };
    let (od, ld) = be.attention(&q, &k, &v, &dropped, 0.3).unwrap();
    assert_eq!(ld.data(), l.data(), "lse is the undropped softmax's");
    assert_ne!(od.data(), o.data());
    // Over the causal triangle's (row, key) pairs the kept fraction is 1 − p within 5σ.
    let d = attention_dropout(0.2);
    let pairs: Vec<(u32, u32)> =
        (0..(b * h) as u32).flat_map(|bh| (0..t as u32).flat_map(move |i| (0..=i).map(move |j| (bh * t as u32 + i, j)))).collect();
    let kept = pairs.iter().filter(|&&(r, j)| d.keep(r, j)).count() as f64;
    let n = pairs.len() as f64;
    assert!((kept - 0.8 * n).abs() < 5.0 * (n * 0.2 * 0.8).sqrt(), "kept {kept} of {n}");
}

#[test]
fn attention_with_cache_offset_equals_full_attention_rows() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(5);
    let (t, h, kvh, d, cap) = (5, 2, 1, 4, 8);
    let q = rand_tensor(&mut rng, &[1, t, h, d]);
    let k = rand_tensor(&mut rng, &[1, t, kvh, d]);
    let v = rand_tensor(&mut rng, &[1, t, kvh, d]);
    let (full, _) = be.attention(&q, &k, &v, &AttentionMask::causal(1, t), 0.5).unwrap();
    // Fill a cache with all five keys, then attend with only the last query.
    let mut kc = be.zeros(&[1, cap, kvh, d]).unwrap();
    let mut vc = be.zeros(&[1, cap, kvh, d]).unwrap();
    be.write_seq(&mut kc, &k, 0).unwrap();
    be.write_seq(&mut vc, &v, 0).unwrap();
    let q_last = CpuTensor::new(q.data()[(t - 1) * h * d..].to_vec(), &[1, 1, h, d]).unwrap();
    let mask = AttentionMask { batch: 1, q_len: 1, kv_len: t, q_offset: t - 1, key_valid: None, segments: None, dropout: None };
    let (last, _) = be.attention(&q_last, &kc, &vc, &mask, 0.5).unwrap();
    let want: Vec<f64> = full.data()[(t - 1) * h * d..].iter().map(|&x| x as f64).collect();
    assert_close(last.data(), &want, 1e-6, "cached attention");
}

#[test]
fn swiglu_embedding_gather_and_add() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(6);
    let g = rand_tensor(&mut rng, &[3, 4]);
    let u = rand_tensor(&mut rng, &[3, 4]);
    let y = be.swiglu(&g, &u).unwrap();
    let want: Vec<f64> = g.data().iter().zip(u.data()).map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64).collect();
    assert_close(y.data(), &want, 1e-6, "swiglu");
    let table = rand_tensor(&mut rng, &[5, 3]);
    let e = be.embedding(&table, &[4, 0, 4]).unwrap();
    assert_eq!(&e.data()[..3], &table.data()[12..15]);
    assert_eq!(&e.data()[3..6], &table.data()[..3]);
    assert!(be.embedding(&table, &[5]).is_err());
    let rows = be.gather_rows(&table, &[2]).unwrap();
    assert_eq!(rows.data(), &table.data()[6..9]);
    let mut acc = g.clone();
    be.add_scaled_assign(&mut acc, &u, -2.0).unwrap();
    let s = be.add(&acc, &u).unwrap();
    let want: Vec<f64> = g.data().iter().zip(u.data()).map(|(&g, &u)| g as f64 - u as f64).collect();
    assert_close(s.data(), &want, 1e-6, "add");
}

// ---- backward: finite-difference checks ------------------------------------------------

/// Checks an analytic gradient against central differences of `loss` along random
/// directions (directional derivatives are far less noisy in f32 than single elements).
fn check_gradient(what: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
    let mut rng = Rng::new(99);
    let h = 1e-2f32;
    for trial in 0..3 {
        let dir: Vec<f32> = (0..x.len()).map(|_| rng.normal() as f32).collect();
        let plus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a + h * d).collect();
        let minus: Vec<f32> = x.iter().zip(&dir).map(|(a, d)| a - h * d).collect();
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
        let exact: f64 = analytic.iter().zip(&dir).map(|(g, d)| *g as f64 * *d as f64).sum();
        let tol = 2e-3 * (1.0 + numeric.abs().max(exact.abs()));
        assert!((numeric - exact).abs() <= tol, "{what} (direction {trial}): finite difference {numeric}, analytic {exact}");
    }
}

/// Σ dy ⊙ y in f64: the scalar whose gradient w.r.t. y is dy.
fn dot(y: &[f32], dy: &[f32]) -> f64 {
    y.iter().zip(dy).map(|(a, b)| *a as f64 * *b as f64).sum()
}

fn t(data: &[f32], shape: &[usize]) -> CpuTensor {
    CpuTensor::new(data.to_vec(), shape).unwrap()
}

#[test]
fn linear_backward_with_bias_lora_and_dropout_matches_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(21);
    let (n, din, dout, r, s) = (4, 6, 5, 2, 0.8f32);
    let x = rand_tensor(&mut rng, &[n, din]);
    let w = rand_tensor(&mut rng, &[dout, din]);
    let b = rand_tensor(&mut rng, &[dout]);
    let a = rand_tensor(&mut rng, &[r, din]);
    let bb = rand_tensor(&mut rng, &[dout, r]);
    let mask = crate::Dropout { key: crate::MaskKey { seed: 5, layer: 1, module: 2 }, p: 0.4 };
    let drop = Some(mask);
    let dropped = (0..n as u32).flat_map(|r| (0..din as u32).map(move |c| (r, c))).filter(|&(r, c)| !mask.keep(r, c)).count();
    assert!(dropped > 0 && dropped < n * din, "the mask must drop some elements and keep others ({dropped})");
    let dy = rand_tensor(&mut rng, &[n, dout]);
    let fwd = |x: &CpuTensor, w: &CpuTensor, b: &CpuTensor, a: &CpuTensor, bb: &CpuTensor| {
        let y = be.linear(x, w, Some(b), Some(LoraWeights { a, b: bb, scale: s, dropout: drop })).unwrap();
        dot(y.data(), dy.data())
    };
    let (mut gw, mut gb, mut ga, mut gbb) =
        (be.zeros(&[dout, din]).unwrap(), be.zeros(&[dout]).unwrap(), be.zeros(&[r, din]).unwrap(), be.zeros(&[dout, r]).unwrap());
    let dx = be
        .linear_backward(
            &x,
            &w,
            Some(LoraWeights { a: &a, b: &bb, scale: s, dropout: drop }),
            &dy,
            LinearGrads { weight: Some(&mut gw), bias: Some(&mut gb), lora_a: Some(&mut ga), lora_b: Some(&mut gbb) },
            true,
        )
        .unwrap()
        .unwrap();
    check_gradient("dx", x.data(), dx.data(), |v| fwd(&t(v, &[n, din]), &w, &b, &a, &bb));
    check_gradient("dW", w.data(), gw.data(), |v| fwd(&x, &t(v, &[dout, din]), &b, &a, &bb));
    check_gradient("db", b.data(), gb.data(), |v| fwd(&x, &w, &t(v, &[dout]), &a, &bb));
    check_gradient("dA", a.data(), ga.data(), |v| fwd(&x, &w, &b, &t(v, &[r, din]), &bb));
    check_gradient("dB", bb.data(), gbb.data(), |v| fwd(&x, &w, &b, &a, &t(v, &[dout, r])));
    // Gradients accumulate: a second backward doubles them.
    let before = gw.clone();
    be.linear_backward(&x, &w, None, &dy, LinearGrads { weight: Some(&mut gw), ..Default::default() }, false).unwrap();
    for (g, b0) in gw.data().iter().zip(before.data()) {
        assert!((g - 2.0 * b0).abs() < 1e-5 * (1.0 + b0.abs()));
    }
}

#[test]
fn rms_norm_backward_matches_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(22);
    let x = rand_tensor(&mut rng, &[5, 8]);
    let w = rand_tensor(&mut rng, &[8]);
    let dy = rand_tensor(&mut rng, &[5, 8]);
    let mut gw = be.zeros(&[8]).unwrap();
    let dx = be.rms_norm_backward(&x, &w, 1e-6, &dy, Some(&mut gw)).unwrap();
    check_gradient("rms dx", x.data(), dx.data(), |v| dot(be.rms_norm(&t(v, &[5, 8]), &w, 1e-6).unwrap().data(), dy.data()));
    check_gradient("rms dw", w.data(), gw.data(), |v| dot(be.rms_norm(&x, &t(v, &[8]), 1e-6).unwrap().data(), dy.data()));
}

#[test]
fn rope_backward_matches_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(23);
    let x = rand_tensor(&mut rng, &[3, 2, 8]);
    let cos = rand_tensor(&mut rng, &[10, 4]);
    let sin = rand_tensor(&mut rng, &[10, 4]);
    let pos = [4u32, 0, 9];
    let dy = rand_tensor(&mut rng, &[3, 2, 8]);
    let dx = be.rope_backward(&dy, &cos, &sin, &pos).unwrap();
    check_gradient("rope dx", x.data(), dx.data(), |v| dot(be.rope(&t(v, &[3, 2, 8]), &cos, &sin, &pos).unwrap().data(), dy.data()));
}

#[test]
fn attention_backward_matches_finite_differences_with_padding_gqa_and_segments() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(24);
    let (b, tt, h, kvh, d) = (2, 5, 4, 2, 4);
    let q = rand_tensor(&mut rng, &[b, tt, h, d]);
    let k = rand_tensor(&mut rng, &[b, tt, kvh, d]);
    let v = rand_tensor(&mut rng, &[b, tt, kvh, d]);
    let dy = rand_tensor(&mut rng, &[b, tt, h, d]);
    let mut valid = vec![true; b * tt];
    valid[b * tt - 1] = false;
    let masks = [
        AttentionMask { key_valid: Some(valid), ..AttentionMask::causal(b, tt) },
        AttentionMask { segments: Some(vec![0, 0, 1, 1, 1, 0, 0, 0, 2, 2]), ..AttentionMask::causal(b, tt) },
        // A fixed dropout mask: the function stays differentiable and backward must use the mask.
        AttentionMask { dropout: Some(attention_dropout(0.3)), ..AttentionMask::causal(b, tt) },
    ];
    for mask in &masks {
        let (out, lse) = be.attention(&q, &k, &v, mask, 0.5).unwrap();
        let (dq, dk, dv) = be.attention_backward(&q, &k, &v, &out, &lse, &dy, mask, 0.5).unwrap();
        let f = |q: &CpuTensor, k: &CpuTensor, v: &CpuTensor| dot(be.attention(q, k, v, mask, 0.5).unwrap().0.data(), dy.data());
        check_gradient("dq", q.data(), dq.data(), |x| f(&t(x, q.shape()), &k, &v));
        check_gradient("dk", k.data(), dk.data(), |x| f(&q, &t(x, k.shape()), &v));
        check_gradient("dv", v.data(), dv.data(), |x| f(&q, &k, &t(x, v.shape())));
        // Blocked backward (blocks of 2 rows: dK/dV accumulate over blocks) gives the same.
        let (dqb, dkb, dvb) =
            super::attention::attention_backward(&q, &k, &v, &out, &lse, &dy, mask, 0.5, 2, super::Precision::F32).unwrap();
        for (got, want, what) in [(&dqb, &dq, "dq"), (&dkb, &dk, "dk"), (&dvb, &dv, "dv")] {
            assert_close(got.data(), &want.data().iter().map(|&x| x as f64).collect::<Vec<_>>(), 1e-5, what);
        }
    }
}

#[test]
fn swiglu_and_embedding_backward() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(25);
    let g = rand_tensor(&mut rng, &[3, 5]);
    let u = rand_tensor(&mut rng, &[3, 5]);
    let dy = rand_tensor(&mut rng, &[3, 5]);
    let (dg, du) = be.swiglu_backward(&g, &u, &dy).unwrap();
    check_gradient("dgate", g.data(), dg.data(), |x| dot(be.swiglu(&t(x, &[3, 5]), &u).unwrap().data(), dy.data()));
    check_gradient("dup", u.data(), du.data(), |x| dot(be.swiglu(&g, &t(x, &[3, 5])).unwrap().data(), dy.data()));
    let table = rand_tensor(&mut rng, &[6, 3]);
    let ids = [2u32, 5, 2, 0];
    let dy = rand_tensor(&mut rng, &[4, 3]);
    let mut gt = be.zeros(&[6, 3]).unwrap();
    be.embedding_backward(&mut gt, &ids, &dy).unwrap();
    check_gradient("dtable", table.data(), gt.data(), |x| dot(be.embedding(&t(x, &[6, 3]), &ids).unwrap().data(), dy.data()));
}

#[test]
fn chunked_cross_entropy_matches_naive_loss_and_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(26);
    // 300 rows crosses the 256-row chunk boundary.
    let (n, c, vocab) = (300, 6, 11);
    let hidden = rand_tensor(&mut rng, &[n, c]);
    let w = rand_tensor(&mut rng, &[vocab, c]);
    let targets: Vec<i32> = (0..n).map(|i| if i % 7 == 3 { -100 } else { (i * 5 % vocab) as i32 }).collect();
    let mut naive = 0.0f64;
    let mut correct = 0;
    for i in 0..n {
        if targets[i] == -100 {
            continue;
        }
        let logits: Vec<f64> =
            (0..vocab).map(|v| (0..c).map(|e| hidden.data()[i * c + e] as f64 * w.data()[v * c + e] as f64).sum()).collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        naive += lse - logits[targets[i] as usize];
        let arg = (0..vocab).fold(0, |b, v| if logits[v] > logits[b] { v } else { b });
        correct += (arg == targets[i] as usize) as usize;
    }
    let scale = 1.0 / 257.0;
    let mut gw = be.zeros(&[vocab, c]).unwrap();
    let out = be.lm_head_cross_entropy(&hidden, &w, &targets, Some(CrossEntropyGrad { scale, grad_w: Some(&mut gw) })).unwrap();
    assert_eq!(out.num_targets, targets.iter().filter(|&&t| t != -100).count());
    assert_eq!(out.num_correct, correct);
    assert!((out.loss_sum - naive).abs() < 1e-4 * naive, "{} vs {naive}", out.loss_sum);
    let loss = |h: &CpuTensor, w: &CpuTensor| be.lm_head_cross_entropy(h, w, &targets, None).unwrap().loss_sum * scale as f64;
    let gh = out.grad_hidden.unwrap();
    check_gradient("dhidden", hidden.data(), gh.data(), |x| loss(&t(x, &[n, c]), &w));
    check_gradient("dW head", w.data(), gw.data(), |x| loss(&hidden, &t(x, &[vocab, c])));
    // Ignored rows get no gradient.
    assert!(gh.data()[3 * c..4 * c].iter().all(|&g| g == 0.0));
    assert!(be.lm_head_cross_entropy(&hidden, &w, &vec![vocab as i32; n], None).is_err());
}

/// Norm-wise relative error `‖got − want‖₂ / ‖want‖₂`: bf16 rounding errors scale with the
/// operands, not with each output element (a near-zero output may carry a large relative error).
fn rms_relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff: f64 = got.iter().zip(want).map(|(g, w)| ((g - w) as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    (diff.sqrt() / norm.sqrt().max(1e-30)) as f32
}

/// Every op that multiplies matrices, in bf16 mode (bf16 weights, bf16 × bf16 → f32 products)
/// against its f32 twin on fresh random inputs: the error is bf16 rounding of the operands
/// (8 significant bits, ≤ 1e-2 relative), and it is not zero (the bf16 path really ran).
#[test]
fn bf16_mode_ops_track_their_f32_twins() {
    let (f32_be, bf16_be) = (CpuBackend::new(), CpuBackend::bf16(true));
    let mut rng = Rng::new(41);
    let (n, din, dout, r) = (37, 96, 80, 4);
    let x = rand_tensor(&mut rng, &[n, din]);
    let w_host: Vec<f32> = (0..dout * din).map(|_| rng.normal() as f32 * 0.1).collect();
    let w32 = f32_be.upload_weight(HostData::F32(&w_host), &[dout, din]).unwrap();
    let w16 = bf16_be.upload_weight(HostData::F32(&w_host), &[dout, din]).unwrap();
    assert_eq!((w32.dtype(), w16.dtype()), (DType::F32, DType::BF16));
    assert_eq!(w16.storage_bytes(), 2 * dout * din, "bf16 weights take 2 bytes per parameter");
    // The bf16 backend keeps LoRA weights (plain `upload`) and 1-D weights in f32.
    assert_eq!(bf16_be.upload(HostData::F32(&w_host), &[dout, din]).unwrap().dtype(), DType::F32);
    assert_eq!(bf16_be.upload_weight(HostData::F32(&w_host[..din]), &[din]).unwrap().dtype(), DType::F32);
    let a = rand_tensor(&mut rng, &[r, din]);
    let b = rand_tensor(&mut rng, &[dout, r]);
    let check = |what: &str, got: &[f32], want: &[f32]| {
        let err = rms_relative_error(got, want);
        assert!(err <= 1e-2, "{what}: relative error {err}");
        assert!(err > 0.0, "{what}: identical to f32, the bf16 path did not run");
    };
    let y32 = f32_be.linear(&x, &w32, None, Some(LoraWeights { a: &a, b: &b, scale: 0.5, dropout: None })).unwrap();
    let y16 = bf16_be.linear(&x, &w16, None, Some(LoraWeights { a: &a, b: &b, scale: 0.5, dropout: None })).unwrap();
    check("linear", y16.data(), y32.data());

    let dy = rand_tensor(&mut rng, &[n, dout]);
    let grads_of = |be: &CpuBackend, w: &CpuTensor| {
        let (mut ga, mut gb) = (be.zeros(&[r, din]).unwrap(), be.zeros(&[dout, r]).unwrap());
        let lw = LoraWeights { a: &a, b: &b, scale: 0.5, dropout: None };
        let grads = LinearGrads { lora_a: Some(&mut ga), lora_b: Some(&mut gb), ..Default::default() };
        let dx = be.linear_backward(&x, w, Some(lw), &dy, grads, true).unwrap().unwrap();
        (dx, ga, gb)
    };
    let (dx32, ga32, gb32) = grads_of(&f32_be, &w32);
    let (dx16, ga16, gb16) = grads_of(&bf16_be, &w16);
    check("linear_backward dx", dx16.data(), dx32.data());
    // LoRA factors stay f32 products: their gradients see bf16 only through nothing at all.
    assert!(rms_relative_error(ga16.data(), ga32.data()) < 1e-5 && rms_relative_error(gb16.data(), gb32.data()) < 1e-5);

    // Full fine-tuning: f32 master weights, products rounded to bf16, weight gradient in f32.
    let f32_master = CpuBackend::bf16(false);
    let wm = f32_master.upload_weight(HostData::F32(&w_host), &[dout, din]).unwrap();
    assert_eq!(wm.dtype(), DType::F32);
    let (mut gw32, mut gw16) = (f32_be.zeros(&[dout, din]).unwrap(), f32_master.zeros(&[dout, din]).unwrap());
    f32_be.linear_backward(&x, &w32, None, &dy, LinearGrads { weight: Some(&mut gw32), ..Default::default() }, false).unwrap();
    f32_master.linear_backward(&x, &wm, None, &dy, LinearGrads { weight: Some(&mut gw16), ..Default::default() }, false).unwrap();
    check("linear_backward dW", gw16.data(), gw32.data());

    // Attention (q·kᵀ, p·v and the four backward products), GQA 4 query heads on 2 kv heads.
    let (bsz, t, h, kvh, d) = (2, 19, 4, 2, 16);
    let q = rand_tensor(&mut rng, &[bsz, t, h, d]);
    let k = rand_tensor(&mut rng, &[bsz, t, kvh, d]);
    let v = rand_tensor(&mut rng, &[bsz, t, kvh, d]);
    let mask = AttentionMask::causal(bsz, t);
    let (o32, lse32) = f32_be.attention(&q, &k, &v, &mask, 0.25).unwrap();
    let (o16, lse16) = bf16_be.attention(&q, &k, &v, &mask, 0.25).unwrap();
    check("attention out", o16.data(), o32.data());
    check("attention lse", lse16.data(), lse32.data());
    let dout = rand_tensor(&mut rng, &[bsz, t, h, d]);
    let g32 = f32_be.attention_backward(&q, &k, &v, &o32, &lse32, &dout, &mask, 0.25).unwrap();
    let g16 = bf16_be.attention_backward(&q, &k, &v, &o16, &lse16, &dout, &mask, 0.25).unwrap();
    check("attention dq", g16.0.data(), g32.0.data());
    check("attention dk", g16.1.data(), g32.1.data());
    check("attention dv", g16.2.data(), g32.2.data());

    // Chunked LM head + cross-entropy over a bf16 head.
    let (rows, vocab, c) = (300, 257, 48);
    let hidden = rand_tensor(&mut rng, &[rows, c]);
    let head: Vec<f32> = (0..vocab * c).map(|_| rng.normal() as f32 * 0.2).collect();
    let (h32, h16) = (
        f32_be.upload_weight(HostData::F32(&head), &[vocab, c]).unwrap(),
        bf16_be.upload_weight(HostData::F32(&head), &[vocab, c]).unwrap(),
    );
    let targets: Vec<i32> = (0..rows).map(|i| if i % 7 == 3 { -100 } else { (i * 31 % vocab) as i32 }).collect();
    let grad = || Some(CrossEntropyGrad { scale: 0.01, grad_w: None });
    let ce32 = f32_be.lm_head_cross_entropy(&hidden, &h32, &targets, grad()).unwrap();
    let ce16 = bf16_be.lm_head_cross_entropy(&hidden, &h16, &targets, grad()).unwrap();
    let rel = ((ce16.loss_sum - ce32.loss_sum) / ce32.loss_sum).abs();
    assert!(rel < 1e-2 && rel > 0.0, "loss relative error {rel}");
    check("lm head dhidden", ce16.grad_hidden.unwrap().data(), ce32.grad_hidden.unwrap().data());

    // Embedding rows of a bf16 table are the bf16 values, widened exactly.
    let e16 = bf16_be.embedding(&h16, &[3, 0, 256]).unwrap();
    let e32 = f32_be.embedding(&h32, &[3, 0, 256]).unwrap();
    assert_eq!(e16.data(), &super::gemm_bf16::round_to_bf16(e32.data())[..]);
    assert_eq!(bf16_be.download(&h16).unwrap(), super::gemm_bf16::round_to_bf16(&head));
    // Element-wise ops refuse a bf16 weight with the op's name instead of reading nothing.
    let err = bf16_be.add(&h16, &h16).unwrap_err().to_string();
    assert!(err.contains("add") && err.contains("bf16"), "{err}");
}

#[test]
fn copy_keeps_values_and_storage_and_is_independent() {
    let mut rng = Rng::new(5);
    let be = CpuBackend::new();
    let x = rand_tensor(&mut rng, &[3, 7]);
    let mut y = be.copy(&x).unwrap();
    assert_eq!((y.shape(), be.download(&y).unwrap()), (x.shape(), be.download(&x).unwrap()));
    be.fill_zero(&mut y).unwrap();
    assert!(be.download(&x).unwrap().iter().any(|&v| v != 0.0), "the source is untouched");
    let values: Vec<f32> = (0..12).map(|_| rng.normal() as f32).collect();
    let bf = CpuBackend::bf16(true);
    let w = bf.upload_weight(HostData::F32(&values), &[3, 4]).unwrap();
    let c = bf.copy(&w).unwrap();
    assert_eq!(c.dtype(), w.dtype());
    assert_eq!(bf.download(&c).unwrap(), bf.download(&w).unwrap());
}

/// A bf16 weight given away is kept as it is in bf16 mode (no second copy of the largest
/// tensor), and widened to the same values as `upload_weight` where the backend keeps f32.
#[test]
fn upload_weight_bf16_keeps_the_given_vector() {
    let mut rng = Rng::new(9);
    let values: Vec<half::bf16> = (0..12).map(|_| half::bf16::from_f32(rng.normal() as f32)).collect();
    let bf = CpuBackend::bf16(true);
    let given = values.clone();
    let address = given.as_ptr();
    let w = bf.upload_weight_bf16(given, &[3, 4]).unwrap();
    match w.operand() {
        Operand::Bf16(kept) => assert_eq!(kept.as_ptr(), address, "the vector was copied"),
        Operand::F32(_) => panic!("bf16 mode stored the weight in f32"),
    }
    for be in [CpuBackend::new(), CpuBackend::bf16(false), bf] {
        let by_slice = be.upload_weight(HostData::BF16(&values), &[3, 4]).unwrap();
        let given = be.upload_weight_bf16(values.clone(), &[3, 4]).unwrap();
        assert_eq!((given.dtype(), be.download(&given).unwrap()), (by_slice.dtype(), be.download(&by_slice).unwrap()));
    }
}
