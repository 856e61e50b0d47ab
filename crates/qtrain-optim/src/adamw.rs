//! AdamW's numbers, exactly as `torch.optim.AdamW` (single-tensor path, `amsgrad=False`,
//! `maximize=False`) computes them for f32 parameters: the hyper-parameters, their checks, and
//! the per-step f32 scalars the element-wise update runs with.
//!
//! One step for parameter `p` with gradient `g`, at 1-based step `t` and learning rate `lr`:
//!
//! ```text
//! g     = g * grad_scale                       (fused global-norm clipping, see crate::clip)
//! p     = p * (1 - lr * weight_decay)          (decoupled decay, before the moments; skipped if wd == 0)
//! m     = m + (1 - beta1) * (g - m)            (torch: exp_avg.lerp_(grad, 1 - beta1))
//! v     = v * beta2 + (1 - beta2) * g * g      (torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2))
//! denom = sqrt(v) / sqrt(1 - beta2^t) + eps    (eps after the bias correction, as torch)
//! p     = p + (-lr / (1 - beta1^t)) * m / denom
//! ```
//!
//! Like torch, the scalars (`1 - lr*wd`, bias corrections, step size) are computed in f64 and
//! rounded to f32 ([`AdamWHyper::scalars`]); the per-element arithmetic is f32 in the order
//! above and is a backend op (`qtrain_core::Backend::adamw_step`, CPU kernel in
//! `qtrain_core::adamw`), so every device runs the one update. `tests/golden.rs` pins the two
//! together against torch (`tests/fixtures/schedules/adamw.json`, from `tools/dump_schedules.py`).
//!
//! This module must not know about models, tensors or files, and must not hold a second
//! copy of the update: the optimizer state over a model's tensors is `qtrain_model::AdamW`.

use serde::{Deserialize, Serialize};

use qtrain_core::AdamWScalars;

use crate::error::{OptimError, Result};

/// torch's default AdamW learning rate. Schedules supply the lr actually used at each step.
pub const DEFAULT_LR: f64 = 1e-3;

/// AdamW hyper-parameters other than the learning rate. `Default` is torch's:
/// betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWHyper {
    fn default() -> Self {
        AdamWHyper { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

impl AdamWHyper {
    /// The same hyper-parameters with another weight decay (for a [`ParamGroup`]).
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        AdamWHyper { weight_decay, ..self }
    }

    /// The checks `torch.optim.Adam.__init__` makes: `0 <= eps`, `0 <= beta < 1`,
    /// `0 <= weight_decay`, all finite.
    pub fn validate(&self) -> Result<()> {
        let check = |param: &'static str, value: f64, ok: bool, expected: &str| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(OptimError::InvalidArgument { param, value: value.to_string(), expected: expected.to_string() })
            }
        };
        check("beta1", self.beta1, (0.0..1.0).contains(&self.beta1), "must be in [0, 1)")?;
        check("beta2", self.beta2, (0.0..1.0).contains(&self.beta2), "must be in [0, 1)")?;
        check("eps", self.eps, self.eps >= 0.0, "must be >= 0")?;
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0, "must be >= 0")
    }
}

impl AdamWHyper {
    /// The f32 scalars of 1-based step `step` (torch's `state["step"]` after its increment) at
    /// learning rate `lr`, every gradient multiplied by `grad_scale` (the clipping coefficient,
    /// or 1). Computed in f64 and rounded to f32 as torch does before its element-wise ops.
    ///
    /// # Panics
    /// If `step == 0` (an optimizer's step count, never user input).
    pub fn scalars(&self, step: u64, lr: f64, grad_scale: f32) -> AdamWScalars {
        assert!(step >= 1, "AdamW steps are 1-based (torch increments before use)");
        // torch: `step = _get_value(step_t)` is a Python float; `beta ** step` is f64 pow.
        let t = step as f64;
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2 = 1.0 - self.beta2.powf(t);
        let step_size = lr / bias_correction1;
        AdamWScalars {
            decay: (self.weight_decay != 0.0).then_some((1.0 - lr * self.weight_decay) as f32),
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps as f32,
            neg_step_size: (-step_size) as f32,
            grad_scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use qtrain_core::adamw::adamw_update;

    use super::*;
    use qtrain_core::rng::Rng;

    /// Textbook AdamW (Loshchilov & Hutter, Algorithm 2) in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference_f64(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], hp: &AdamWHyper, t: u64, lr: f64, scale: f64) {
        for i in 0..p.len() {
            let gi = g[i] * scale;
            p[i] *= 1.0 - lr * hp.weight_decay;
            m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * gi;
            v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * gi * gi;
            let mhat = m[i] / (1.0 - hp.beta1.powi(t as i32));
            let vhat = v[i] / (1.0 - hp.beta2.powi(t as i32));
            p[i] -= lr * mhat / (vhat.sqrt() + hp.eps);
        }
    }

    #[test]
    fn defaults_are_torch_defaults() {
        let hp = AdamWHyper::default();
        assert_eq!((hp.beta1, hp.beta2, hp.eps, hp.weight_decay), (0.9, 0.999, 1e-8, 1e-2));
        assert_eq!(DEFAULT_LR, 1e-3);
    }

    #[test]
    fn first_step_moves_each_param_by_about_lr() {
        // With m = v = 0, step 1 gives m_hat = g, v_hat = g^2: update = lr * sign(g) (up to eps).
        let hp = AdamWHyper::default().with_weight_decay(0.0);
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = vec![0.3f32, -4.0, 1e-2];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        adamw_update(&mut p, &g, &mut m, &mut v, &hp.scalars(1, 1e-3, 1.0));
        let expect = [1.0 - 1e-3, -2.0 + 1e-3, 0.5 - 1e-3];
        for (a, b) in p.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn matches_f64_textbook_over_many_steps() {
        let hp = AdamWHyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        let n = 257;
        let mut p = Rng::new(1).uniform_f32s(n, -1.0, 1.0);
        let mut p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
        for t in 1..=20u64 {
            let g = Rng::new(100 + t).uniform_f32s(n, -1.0, 1.0);
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let lr = 1e-3 * (1.0 - t as f64 / 40.0);
            adamw_update(&mut p, &g, &mut m, &mut v, &hp.scalars(t, lr, 0.5));
            reference_f64(&mut p64, &g64, &mut m64, &mut v64, &hp, t, lr, 0.5);
        }
        for i in 0..n {
            let err = (p[i] as f64 - p64[i]).abs();
            assert!(err <= 1e-6 * p64[i].abs().max(1e-2), "param {i}: {} vs {}", p[i], p64[i]);
        }
    }

    #[test]
    fn zero_weight_decay_skips_the_multiply() {
        let hp = AdamWHyper::default();
        assert_eq!(hp.with_weight_decay(0.1).scalars(1, 0.01, 1.0).decay, Some((1.0 - 0.01 * 0.1) as f32));
        assert_eq!(hp.with_weight_decay(0.0).scalars(1, 0.01, 1.0).decay, None);
        assert_eq!(hp.scalars(3, 0.01, 0.25).grad_scale, 0.25);
    }

    #[test]
    fn validate_names_the_bad_hyper_parameter() {
        let bad = AdamWHyper { beta2: 1.0, ..AdamWHyper::default() };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("beta2") && err.contains("[0, 1)"), "{err}");
        assert!(AdamWHyper::default().with_weight_decay(-0.1).validate().is_err());
        assert!(AdamWHyper { eps: f64::NAN, ..AdamWHyper::default() }.validate().is_err());
        AdamWHyper::default().validate().unwrap();
    }
}
