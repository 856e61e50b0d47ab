//! AdamW's element-wise update: the op every backend implements ([`crate::Backend::adamw_step`])
//! and its CPU reference over f32 slices.
//!
//! Per element, with the per-step scalars of [`AdamWScalars`] (torch's single-tensor
//! `torch.optim.AdamW`, f32 arithmetic in this order):
//!
//! ```text
//! g     = g * grad_scale                       (fused global-norm clipping)
//! p     = p * decay                            (decoupled weight decay; skipped when None)
//! m     = m + one_minus_beta1 * (g - m)        (torch: exp_avg.lerp_(grad, 1 - beta1))
//! v     = v * beta2 + one_minus_beta2 * g * g  (torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2))
//! denom = sqrt(v) / bias_correction2_sqrt + eps
//! p     = p + neg_step_size * m / denom
//! ```
//!
//! This module must not know hyper-parameters, learning-rate schedules or step counting: the
//! scalars arrive computed (`qtrain_optim::AdamWHyper::scalars` derives them from torch's f64
//! arithmetic), so the optimizer's numbers live in `qtrain-optim` and only the element-wise
//! kernel lives here, next to the other ops.

use rayon::prelude::*;

/// Slices at least this long are updated in parallel with rayon.
const PAR_MIN_LEN: usize = 1 << 15;
/// Elements per rayon task.
const PAR_CHUNK: usize = 1 << 13;

/// The f32 scalars of one AdamW step of one parameter group, as torch's single-tensor AdamW
/// computes them before it launches its element-wise ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// `1 - lr * weight_decay`, or `None` when `weight_decay == 0` (torch skips the multiply).
    pub decay: Option<f32>,
    /// `1 - beta1` (the lerp weight).
    pub one_minus_beta1: f32,
    pub beta2: f32,
    /// `1 - beta2`.
    pub one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `-lr / (1 - beta1^t)`.
    pub neg_step_size: f32,
    /// Multiplies every gradient before use (the clipping coefficient, or 1).
    pub grad_scale: f32,
}

impl AdamWScalars {
    /// The element-wise update over equally long slices, sequentially.
    fn apply(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * self.grad_scale;
            let mut pv = *p;
            if let Some(decay) = self.decay {
                pv *= decay;
            }
            let mv = *m + self.one_minus_beta1 * (g - *m);
            let vv = *v * self.beta2 + self.one_minus_beta2 * g * g;
            let denom = vv.sqrt() / self.bias_correction2_sqrt + self.eps;
            *p = pv + self.neg_step_size * mv / denom;
            *m = mv;
            *v = vv;
        }
    }
}

/// One AdamW update of a parameter held in host f32 slices (the CPU backend's kernel and the
/// reference the device kernels match). Long slices are processed in parallel; the result does
/// not depend on the number of threads. The caller checks that the four lengths agree (the
/// backend op does, with the tensors' shapes in its error).
pub fn adamw_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], scalars: &AdamWScalars) {
    debug_assert!(grads.len() == params.len() && m.len() == params.len() && v.len() == params.len());
    if params.len() < PAR_MIN_LEN {
        scalars.apply(params, grads, m, v);
    } else {
        params
            .par_chunks_mut(PAR_CHUNK)
            .zip(grads.par_chunks(PAR_CHUNK))
            .zip(m.par_chunks_mut(PAR_CHUNK))
            .zip(v.par_chunks_mut(PAR_CHUNK))
            .for_each(|(((p, g), m), v)| scalars.apply(p, g, m, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Scalars of a step with torch's default betas/eps at step `t`, lr 1e-3, decay 0.1.
    fn scalars(t: i32, grad_scale: f32, decay: bool) -> AdamWScalars {
        let (beta1, beta2, lr, wd) = (0.9f64, 0.999f64, 1e-3f64, 0.1f64);
        AdamWScalars {
            decay: decay.then_some((1.0 - lr * wd) as f32),
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias_correction2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            eps: 1e-8,
            neg_step_size: (-lr / (1.0 - beta1.powi(t))) as f32,
            grad_scale,
        }
    }

    #[test]
    fn decay_is_decoupled_and_skipped_when_none() {
        // Zero gradient: the moments stay 0, so only decay acts: p *= 1 - lr*wd.
        let (mut m, mut v) = (vec![0.0f32], vec![0.0f32]);
        let mut p = vec![2.0f32];
        adamw_update(&mut p, &[0.0], &mut m, &mut v, &scalars(1, 1.0, true));
        assert_eq!(p[0], 2.0 * (1.0 - 1e-3 * 0.1) as f32);
        let mut q = vec![2.0f32];
        adamw_update(&mut q, &[0.0], &mut m, &mut v, &scalars(1, 1.0, false));
        assert_eq!(q[0], 2.0);
    }

    #[test]
    fn grad_scale_equals_prescaled_gradients() {
        let g = Rng::new(7).uniform_f32s(64, -1.0, 1.0);
        let scaled: Vec<f32> = g.iter().map(|x| x * 0.25).collect();
        let (mut p1, mut p2) = (Rng::new(3).uniform_f32s(64, -1.0, 1.0), Rng::new(3).uniform_f32s(64, -1.0, 1.0));
        let (mut m1, mut v1, mut m2, mut v2) = (vec![0.0; 64], vec![0.0; 64], vec![0.0; 64], vec![0.0; 64]);
        adamw_update(&mut p1, &g, &mut m1, &mut v1, &scalars(1, 0.25, true));
        adamw_update(&mut p2, &scaled, &mut m2, &mut v2, &scalars(1, 1.0, true));
        assert_eq!(p1, p2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn parallel_path_is_bitwise_equal_to_sequential() {
        let n = PAR_MIN_LEN * 2 + 123;
        let g = Rng::new(11).uniform_f32s(n, -1.0, 1.0);
        let p0 = Rng::new(12).uniform_f32s(n, -1.0, 1.0);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
        let (mut ps, mut ms, mut vs) = (p0, vec![0.0; n], vec![0.0; n]);
        for t in 1..=2 {
            adamw_update(&mut p, &g, &mut m, &mut v, &scalars(t, 0.7, true));
            scalars(t, 0.7, true).apply(&mut ps, &g, &mut ms, &mut vs);
        }
        assert_eq!(p, ps);
        assert_eq!(m, ms);
        assert_eq!(v, vs);
    }
}
