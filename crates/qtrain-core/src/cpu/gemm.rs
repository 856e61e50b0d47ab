//! Thin safe wrapper over the `gemm` crate's f32 kernel for row-major slices, and the choice of
//! how a product is spread over threads. It must not grow op logic: it only turns (transpose
//! flags, row-major slices) into strides and bands.

use gemm::Parallelism;
use rayon::prelude::*;

use super::gemm_bf16::{self, Operand, Product};

/// Products smaller than this many multiply-adds run single-threaded: spawning rayon tasks
/// costs more than it saves on tiny decode-step matrices.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// Skinny products — one side at most this small, as LoRA's rank-r factors `x·Aᵀ`, `(x·Aᵀ)·Bᵀ`,
/// `(dy·B)ᵀ·x` — are split across threads here, by whole rows (or columns) of `c`, each part a
/// single-threaded `gemm` call: the `gemm` crate's own split of them took twice as long on two
/// threads as on one (256 × 512 × 8: 55 µs vs 31 µs; 8 × 512 × 256: 46 µs vs 25 µs on the
/// 2-core developer machine).
const SKINNY_SIDE: usize = 16;

/// How a product is spread over rayon's threads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Split {
    Serial,
    /// The `gemm` crate's own parallel blocking (big, square-ish products).
    Crate,
    /// `c` cut into this many bands of rows.
    Rows(usize),
    /// `c` cut into this many bands of columns.
    Cols(usize),
}

fn choose_split(m: usize, n: usize, k: usize) -> Split {
    let threads = rayon::current_num_threads();
    if threads < 2 || m * n * k < PARALLEL_MIN_FLOPS {
        Split::Serial
    } else if m > SKINNY_SIDE && n > SKINNY_SIDE && k > SKINNY_SIDE {
        Split::Crate
    } else if m >= 4 * threads * SKINNY_SIDE {
        Split::Rows(threads)
    } else if n >= 4 * threads * SKINNY_SIDE {
        Split::Cols(threads)
    } else {
        Split::Serial
    }
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
    gemm_f32_with(&Operands::new(m, n, k, a, trans_a, b, trans_b), c, accumulate, alpha, choose_split(m, n, k))
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
    gemm_f32_with(&Operands::new(m, n, k, a, trans_a, b, trans_b), c, accumulate, alpha, Split::Serial)
}

/// `op(a) · op(b) · alpha` (`[m, n]`) in a new vector, split as [`gemm_f32`] splits it. The
/// vector is not zero-filled first — the product writes every element — which saves what
/// `vec![0.0; m·n]` costs: a memset of ~1 MB per projection output (≈ 2 % of a bench-small
/// training step in `perf`, under `calloc` on recycled heap memory).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_new(m: usize, n: usize, k: usize, a: &[f32], trans_a: bool, b: &[f32], trans_b: bool, alpha: f32) -> Vec<f32> {
    let ops = Operands::new(m, n, k, a, trans_a, b, trans_b);
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: `c` has room for the m·n elements the product writes; with `accumulate` false none
    // is read before it is written (the `gemm` crate's `read_dst = false`; a k = 0 product is
    // filled with zeros), so every element is initialised when the length is set.
    unsafe {
        gemm_f32_raw(&ops, c.as_mut_ptr(), false, alpha, choose_split(m, n, k));
        c.set_len(m * n);
    }
    c
}

/// How the CPU backend multiplies matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 × f32 with f32 sums (the `gemm` crate): the reference path, bit for bit as before.
    #[default]
    F32,
    /// Both operands rounded to bf16, exact products, f32 sums ([`super::gemm_bf16`]):
    /// `torch.autocast(bfloat16)`'s numerics and the hardware's bf16 rate.
    Bf16,
}

/// `op(a) · op(b) · alpha` in a new `[m, n]` vector, at `precision`, spread over rayon's threads.
/// A bf16 operand under [`Precision::F32`] is widened first (exact).
pub fn product_new(precision: Precision, p: &Product<'_>, alpha: f32) -> Vec<f32> {
    match precision {
        Precision::Bf16 => gemm_bf16::gemm_bf16_new(p, alpha, true),
        Precision::F32 => gemm_f32_new(p.m, p.n, p.k, &widen(p.a), p.trans_a, &widen(p.b), p.trans_b, alpha),
    }
}

/// `c = [c +] alpha · op(a) · op(b)` at `precision`; `serial` keeps it on the calling thread
/// (callers that already run one task per core, as attention).
pub fn product(precision: Precision, p: &Product<'_>, c: &mut [f32], accumulate: bool, alpha: f32, serial: bool) {
    if precision == Precision::Bf16 {
        return gemm_bf16::gemm_bf16(p, c, accumulate, alpha, !serial);
    }
    let (a, b) = (widen(p.a), widen(p.b));
    match serial {
        true => gemm_f32_serial(p.m, p.n, p.k, &a, p.trans_a, &b, p.trans_b, c, accumulate, alpha),
        false => gemm_f32(p.m, p.n, p.k, &a, p.trans_a, &b, p.trans_b, c, accumulate, alpha),
    }
}

/// An operand as f32: borrowed when it is f32, widened (exactly) when bf16.
fn widen<'a>(x: Operand<'a>) -> std::borrow::Cow<'a, [f32]> {
    match x {
        Operand::F32(d) => std::borrow::Cow::Borrowed(d),
        Operand::Bf16(d) => std::borrow::Cow::Owned(d.iter().map(|v| v.to_f32()).collect()),
    }
}

/// The operands of one product, size-checked: `op(a)` is `[m, k]`, `op(b)` is `[k, n]`, each as
/// a strided view (row stride, column stride) of its row-major slice.
struct Operands<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    _slices: std::marker::PhantomData<&'a [f32]>,
}

impl<'a> Operands<'a> {
    fn new(m: usize, n: usize, k: usize, a: &'a [f32], trans_a: bool, b: &'a [f32], trans_b: bool) -> Self {
        assert_eq!(a.len(), m * k, "gemm_f32: a has the wrong size");
        assert_eq!(b.len(), k * n, "gemm_f32: b has the wrong size");
        let (a_ptr, b_ptr) = (a.as_ptr() as usize, b.as_ptr() as usize);
        let a = if trans_a { View { ptr: a_ptr, rs: 1, cs: m } } else { View { ptr: a_ptr, rs: k, cs: 1 } };
        let b = if trans_b { View { ptr: b_ptr, rs: 1, cs: k } } else { View { ptr: b_ptr, rs: n, cs: 1 } };
        Operands { m, n, k, a, b, _slices: std::marker::PhantomData }
    }
}

fn gemm_f32_with(ops: &Operands<'_>, c: &mut [f32], accumulate: bool, alpha: f32, split: Split) {
    assert_eq!(c.len(), ops.m * ops.n, "gemm_f32: c has the wrong size");
    // SAFETY: `c` is a uniquely borrowed, initialised `[m, n]`.
    unsafe { gemm_f32_raw(ops, c.as_mut_ptr(), accumulate, alpha, split) }
}

/// The product into `c`, which must point at `m · n` writable f32s that alias neither operand
/// (and be initialised when `accumulate`).
unsafe fn gemm_f32_raw(ops: &Operands<'_>, c: *mut f32, accumulate: bool, alpha: f32, split: Split) {
    let (m, n, k) = (ops.m, ops.n, ops.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: the caller's contract; all-zero bits are 0.0f32.
            unsafe { std::ptr::write_bytes(c, 0, m * n) };
        }
        return;
    }
    let (a_view, b_view) = (ops.a, ops.b);
    let c_ptr = c as usize;
    // SAFETY (every call below): `Operands::new`'s size checks guarantee that every (row, col)
    // address the views produce for the `[m, k]`, `[k, n]` blocks lies inside its slice, and the
    // caller that `c` holds `[m, n]`; the bands are disjoint blocks of `c`, which aliases neither
    // `a` nor `b`.
    let band = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, parallelism: Parallelism| unsafe {
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        gemm::gemm(
            rows.len(),
            cols.len(),
            k,
            (c_ptr as *mut f32).add(rows.start * n + cols.start),
            1,
            n as isize,
            accumulate,
            a_view.at(rows.start, 0),
            a_view.cs as isize,
            a_view.rs as isize,
            b_view.at(0, cols.start),
            b_view.cs as isize,
            b_view.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    };
    match split {
        Split::Serial => band(0..m, 0..n, Parallelism::None),
        Split::Crate => band(0..m, 0..n, Parallelism::Rayon(0)),
        Split::Rows(parts) => {
            let per = m.div_ceil(parts);
            (0..parts).into_par_iter().for_each(|p| band(p * per..((p + 1) * per).min(m), 0..n, Parallelism::None));
        }
        Split::Cols(parts) => {
            let per = n.div_ceil(parts);
            (0..parts).into_par_iter().for_each(|p| band(0..m, p * per..((p + 1) * per).min(n), Parallelism::None));
        }
    }
}

/// A strided read-only operand; the pointer is kept as an address so bands can be shared
/// between rayon tasks.
#[derive(Clone, Copy)]
struct View {
    ptr: usize,
    rs: usize,
    cs: usize,
}

impl View {
    fn at(&self, row: usize, col: usize) -> *const f32 {
        (self.ptr as *const f32).wrapping_add(row * self.rs + col * self.cs)
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
    fn skinny_products_are_banded_and_square_ones_use_the_crate_split() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        assert_eq!(choose_split(4, 4, 4), Split::Serial);
        assert_eq!(choose_split(256, 512, 512), Split::Crate);
        assert!(matches!(choose_split(256, 8, 512), Split::Rows(_)));
        assert!(matches!(choose_split(256, 512, 8), Split::Rows(_)));
        assert!(matches!(choose_split(8, 512, 256), Split::Cols(_)));
    }

    #[test]
    fn all_transpose_combinations_and_splits_match_naive_loops() {
        let mut rng = Rng::new(11);
        for &(m, n, k) in &[(3, 5, 7), (70, 33, 129), (1, 64, 64), (128, 96, 80), (256, 8, 70), (8, 150, 256), (200, 96, 8), (4, 3, 0)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            for ta in [false, true] {
                for tb in [false, true] {
                    let want = naive(m, n, k, &a, ta, &b, tb);
                    for split in [Split::Serial, Split::Crate, Split::Rows(3), Split::Cols(2), Split::Rows(200)] {
                        let mut c = vec![f32::NAN; m * n];
                        gemm_f32_with(&Operands::new(m, n, k, &a, ta, &b, tb), &mut c, false, 1.0, split);
                        for (x, y) in c.iter().zip(&want) {
                            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{n}x{k} ta={ta} tb={tb} {split:?}: {x} vs {y}");
                        }
                        if split == choose_split(m, n, k) {
                            assert_eq!(gemm_f32_new(m, n, k, &a, ta, &b, tb, 1.0), c, "gemm_f32_new");
                        }
                        // accumulate: c += 0.5·ab
                        gemm_f32_with(&Operands::new(m, n, k, &a, ta, &b, tb), &mut c, true, 0.5, split);
                        for (x, y) in c.iter().zip(&want) {
                            assert!((x - 1.5 * y).abs() <= 1e-4 * (1.0 + y.abs()), "accumulate {split:?}");
                        }
                    }
                }
            }
        }
    }
}
