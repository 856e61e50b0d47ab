//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` with `norm_type=2`.
//!
//! ```text
//! total_norm = sqrt(sum of g^2 over every element of every gradient)
//! clip_coef  = max_norm / (total_norm + 1e-6), clamped to at most 1.0 (NaN propagates)
//! g         *= clip_coef                       (always, even when the coefficient is 1)
//! ```
//!
//! The sums of squares are a backend op (`qtrain_core::Backend::sum_squares`, accumulated in
//! f64); this module turns their total into the norm and the coefficient. The coefficient is
//! computed in **f32** from the f32-rounded norm, as torch does with its f32 norm tensor
//! (`max_norm / t` being `t.reciprocal() * max_norm` in torch), and is passed as `grad_scale` to
//! the AdamW step ([`crate::AdamWHyper::scalars`]), which fuses the multiplication into the update.
//!
//! This module must not know about parameters, optimizers or devices: it sees plain numbers.

/// The constant torch adds to the norm before dividing.
pub const CLIP_EPS: f64 = 1e-6;

/// `sqrt(sum_of_squares)`.
pub fn norm_from_sum_of_squares(sum_sq: f64) -> f64 {
    sum_sq.sqrt()
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
