//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` with `norm_type=2`.
//!
//! ```text
//! total_norm = sqrt(sum of g^2 over every element of every gradient)
//! clip_coef  = max_norm / (total_norm + 1e-6), clamped to at most 1.0 (NaN propagates)
//! g         *= clip_coef                       (always, even when the coefficient is 1)
//! ```
//!
//! Precision: the sum of squares is accumulated in **f64** (per fixed-size chunk, chunks summed
//! in order, so the result does not depend on the thread count), which is at least as accurate
//! as torch's f32 per-tensor norms followed by a norm of norms; the two agree to f32 rounding.
//! The coefficient itself is then computed in **f32** from the f32-rounded norm, as torch does
//! with its f32 norm tensor (`max_norm / t` being `t.reciprocal() * max_norm` in torch).
//!
//! The coefficient is meant to be passed as `grad_scale` to [`crate::adamw::adamw_step`], which
//! fuses the multiplication into the update; [`clip_grad_norm_`] applies it in place for callers
//! that need clipped gradients. Backends that reduce on a device can combine their partial sums
//! of squares with [`norm_from_sum_of_squares`] and [`clip_coefficient`].
//!
//! This module must not know about parameters, optimizers or devices: it sees gradient slices.

use rayon::prelude::*;

/// The constant torch adds to the norm before dividing.
pub const CLIP_EPS: f64 = 1e-6;

/// Elements per summation chunk (also the rayon task size).
const CHUNK: usize = 1 << 14;

/// Sum of squares of `x`, accumulated in f64 (deterministic, parallel for long slices).
pub fn sum_of_squares(x: &[f32]) -> f64 {
    fn chunk_sum(c: &[f32]) -> f64 {
        c.iter().map(|&v| (v as f64) * (v as f64)).sum()
    }
    if x.len() <= CHUNK {
        chunk_sum(x)
    } else {
        let partial: Vec<f64> = x.par_chunks(CHUNK).map(chunk_sum).collect();
        partial.iter().sum()
    }
}

/// `sqrt(sum_of_squares)`.
pub fn norm_from_sum_of_squares(sum_sq: f64) -> f64 {
    sum_sq.sqrt()
}

/// The global L2 norm of all gradients together (as if concatenated into one vector).
pub fn global_grad_norm(grads: &[&[f32]]) -> f64 {
    norm_from_sum_of_squares(grads.iter().map(|g| sum_of_squares(g)).sum())
}

/// torch's clamped clipping coefficient for a given total norm: `min(1, max_norm / (norm +
/// 1e-6))` in f32, NaN if the norm is NaN. An infinite norm gives 0 (torch does not check
/// finiteness by default, and neither does this). `max_norm` should be positive; like torch, it
/// is not checked.
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> f32 {
    let denom = total_norm as f32 + CLIP_EPS as f32;
    let coef = denom.recip() * max_norm as f32;
    // torch.clamp(coef, max=1.0): NaN stays NaN (f32::min would turn it into 1).
    if coef > 1.0 {
        1.0
    } else {
        coef
    }
}

/// The global norm of `grads` and the scale to apply to them: `(total_norm, clip_coef)`.
/// Pass the scale to the AdamW step as `grad_scale`.
pub fn clip_grad_norm_scale(grads: &[&[f32]], max_norm: f64) -> (f64, f32) {
    let total_norm = global_grad_norm(grads);
    (total_norm, clip_coefficient(total_norm, max_norm))
}

/// Clips `grads` in place like `torch.nn.utils.clip_grad_norm_` and returns
/// `(total_norm, clip_coef)` (the norm before clipping, as torch returns it).
pub fn clip_grad_norm_(grads: &mut [&mut [f32]], max_norm: f64) -> (f64, f32) {
    let total_norm = norm_from_sum_of_squares(grads.iter().map(|g| sum_of_squares(g)).sum());
    let coef = clip_coefficient(total_norm, max_norm);
    for g in grads.iter_mut() {
        if g.len() <= CHUNK {
            g.iter_mut().for_each(|x| *x *= coef);
        } else {
            g.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= coef));
        }
    }
    (total_norm, coef)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_spans_all_slices() {
        let a = [3.0f32];
        let b = [4.0f32, 0.0];
        assert_eq!(global_grad_norm(&[&a, &b]), 5.0);
        assert_eq!(global_grad_norm(&[]), 0.0);
    }

    #[test]
    fn coefficient_clamps_to_one_below_max_norm() {
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
        assert_eq!(clip_coefficient(0.0, 1.0), 1.0);
        let c = clip_coefficient(4.0, 1.0);
        assert!((c as f64 - 1.0 / (4.0 + 1e-6)).abs() < 1e-7, "{c}");
        // Exactly at max_norm the epsilon keeps the coefficient just below 1.
        assert!(clip_coefficient(1.0, 1.0) < 1.0);
        assert_eq!(clip_coefficient(f64::INFINITY, 1.0), 0.0);
        assert!(clip_coefficient(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn clip_in_place_scales_to_max_norm() {
        let mut a = vec![3.0f32, 0.0];
        let mut b = vec![0.0f32, 4.0];
        let (norm, coef) = clip_grad_norm_(&mut [&mut a, &mut b], 2.0);
        assert_eq!(norm, 5.0);
        assert!((coef - 0.4).abs() < 1e-6);
        let after = global_grad_norm(&[&a, &b]);
        assert!((after - 2.0).abs() < 1e-5, "{after}");
        // Below the threshold nothing changes.
        let (a0, b0) = (a.clone(), b.clone());
        let (_, coef) = clip_grad_norm_(&mut [&mut a, &mut b], 10.0);
        assert_eq!(coef, 1.0);
        assert_eq!((a, b), (a0, b0));
    }

    #[test]
    fn long_slices_sum_deterministically_and_accurately() {
        let n = CHUNK * 5 + 17;
        let x: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
        let exact: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        let s = sum_of_squares(&x);
        assert!((s - exact).abs() <= 1e-12 * exact);
        assert_eq!(s, sum_of_squares(&x));
    }
}
