//! Thin safe wrapper over the `gemm` crate's f32 kernel for row-major slices.
//! It must not grow op logic: it only turns (transpose flags, row-major slices) into strides.

use gemm::Parallelism;

/// Products smaller than this many multiply-adds run single-threaded: spawning rayon tasks
/// costs more than it saves on tiny decode-step matrices.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// Products with an outer (`m`) or inner (`k`) dimension this small — LoRA's rank-r factors,
/// `(x·Aᵀ)·Bᵀ` and `(dy·B)ᵀ·x` — also run single-threaded: the `gemm` crate's split of them took
/// twice as long on two threads as on one (256 × 512 × 8: 55 µs vs 31 µs; 8 × 512 × 256: 46 µs
/// vs 25 µs on the 2-core developer machine).
const PARALLEL_MIN_SIDE: usize = 16;

/// Whether a product is worth splitting across rayon's threads.
fn worth_parallel(m: usize, n: usize, k: usize) -> bool {
    m * n * k >= PARALLEL_MIN_FLOPS && m > PARALLEL_MIN_SIDE && k > PARALLEL_MIN_SIDE
}

/// `c = beta_acc · c + alpha · op(a) · op(b)` where `op(a)` is `[m, k]`, `op(b)` is `[k, n]` and
/// `c` is `[m, n]`, all row-major and contiguous. With `accumulate == false`, `c` is overwritten
/// (its old contents are never read, so it may hold garbage).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
    alpha: f32,
) {
    let parallel = worth_parallel(m, n, k);
    gemm_f32_with(m, n, k, a, trans_a, b, trans_b, c, accumulate, alpha, parallel)
}

/// [`gemm_f32`] on the calling thread only — for callers that already run one task per core
/// (attention runs one task per batch row and key/value head).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_serial(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
    alpha: f32,
) {
    gemm_f32_with(m, n, k, a, trans_a, b, trans_b, c, accumulate, alpha, false)
}

#[allow(clippy::too_many_arguments)]
fn gemm_f32_with(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
    alpha: f32,
    parallel: bool,
) {
    assert_eq!(a.len(), m * k, "gemm_f32: a has the wrong size");
    assert_eq!(b.len(), k * n, "gemm_f32: b has the wrong size");
    assert_eq!(c.len(), m * n, "gemm_f32: c has the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // (column stride, row stride) of each operand as the logical matrix sees it.
    let (a_cs, a_rs) = if trans_a { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if trans_b { (k as isize, 1) } else { (1, n as isize) };
    let parallelism = if parallel { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: the asserts above guarantee every (row, col) address the strides produce lies
    // inside its slice; `c` is uniquely borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn all_transpose_combinations_match_naive_loops() {
        let mut rng = Rng::new(11);
        for &(m, n, k) in &[(3, 5, 7), (70, 33, 129), (1, 64, 64), (128, 96, 80)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            for ta in [false, true] {
                for tb in [false, true] {
                    let want = naive(m, n, k, &a, ta, &b, tb);
                    let mut c = vec![f32::NAN; m * n];
                    gemm_f32(m, n, k, &a, ta, &b, tb, &mut c, false, 1.0);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{n}x{k} ta={ta} tb={tb}: {x} vs {y}");
                    }
                    // accumulate: c += 0.5·ab
                    gemm_f32(m, n, k, &a, ta, &b, tb, &mut c, true, 0.5);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - 1.5 * y).abs() <= 1e-4 * (1.0 + y.abs()));
                    }
                }
            }
        }
    }
}
