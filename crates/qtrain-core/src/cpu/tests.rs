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
    let y = be.linear(&x, &w, Some(&bias), Some(LoraWeights { a: &a, b: &b, scale: 0.75 })).unwrap();
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
    for t in 0..n {
        let p = pos[t] as usize;
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
                    let p = (s - m).exp() / z;
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
        AttentionMask { key_valid: Some(valid), ..AttentionMask::causal(b, t) },
        AttentionMask { segments: Some(vec![0, 0, 0, 1, 1, 2, 0, 0, 1, 1, 1, 1]), ..AttentionMask::causal(b, t) },
    ];
    for mask in &masks {
        let (o, lse) = be.attention(&q, &k, &v, mask, scale).unwrap();
        assert_close(o.data(), &naive_attention(&q, &k, &v, mask, scale as f64), 1e-5, "attention");
        assert_eq!(lse.shape(), &[b, t, h]);
    }
    // The first query sees only itself: its output is its own value row.
    let (o, _) = be.attention(&q, &k, &v, &masks[0], scale).unwrap();
    assert_eq!(&o.data()[..d], &v.data()[..d]);
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
    let mask = AttentionMask { batch: 1, q_len: 1, kv_len: t, q_offset: t - 1, key_valid: None, segments: None };
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
