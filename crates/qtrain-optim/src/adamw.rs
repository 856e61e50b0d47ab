//! AdamW, exactly as `torch.optim.AdamW` (single-tensor path, `amsgrad=False`,
//! `maximize=False`) computes it for f32 parameters.
//!
//! One step for parameter `p` with gradient `g`, at 1-based step `t` of its group and learning
//! rate `lr`:
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
//! rounded to f32; the per-element arithmetic is f32 in the order above. [`AdamWScalars`] exposes
//! those f32 scalars so device backends can run the same arithmetic in their own kernels.
//! `tests/fixtures/schedules/adamw.json` (from `tools/dump_schedules.py`) pins this against torch.
//!
//! This module must not know about models, tensors on devices or files: it works on host f32
//! slices and plain-data state. Which parameters go in which [`ParamGroup`] (e.g. biases and norm
//! weights without decay) is the caller's decision.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// torch's default AdamW learning rate. Schedules supply the lr actually used at each step.
pub const DEFAULT_LR: f64 = 1e-3;

/// Slices at least this long are updated in parallel with rayon.
const PAR_MIN_LEN: usize = 1 << 15;
/// Elements per rayon task.
const PAR_CHUNK: usize = 1 << 13;

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

/// The f32 scalars of one AdamW step, computed from f64 hyper-parameters exactly as torch's
/// single-tensor AdamW does before it launches its element-wise ops.
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
    /// Scalars for 1-based step `step` (torch's `state["step"]` after its increment).
    ///
    /// # Panics
    /// If `step == 0`.
    pub fn new(hp: &AdamWHyper, step: u64, lr: f64, grad_scale: f32) -> Self {
        assert!(step >= 1, "AdamW steps are 1-based (torch increments before use)");
        // torch: `step = _get_value(step_t)` is a Python float; `beta ** step` is f64 pow.
        let t = step as f64;
        let bias_correction1 = 1.0 - hp.beta1.powf(t);
        let bias_correction2 = 1.0 - hp.beta2.powf(t);
        let step_size = lr / bias_correction1;
        AdamWScalars {
            decay: (hp.weight_decay != 0.0).then_some((1.0 - lr * hp.weight_decay) as f32),
            one_minus_beta1: (1.0 - hp.beta1) as f32,
            beta2: hp.beta2 as f32,
            one_minus_beta2: (1.0 - hp.beta2) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: hp.eps as f32,
            neg_step_size: (-step_size) as f32,
            grad_scale,
        }
    }

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

/// One AdamW update of a single parameter on the CPU (the reference every backend must match).
///
/// `step` is the 1-based step number of the parameter's group including this update; `lr` is the
/// learning rate for this step (from [`crate::schedule::LrSchedule::lr_at`]); `grad_scale`
/// multiplies the gradients first, which fuses global-norm clipping (pass 1.0 for none).
/// `hp.weight_decay` is applied as is: pass the group's hyper-parameters (see
/// [`AdamWHyper::with_weight_decay`]). Long slices are processed in parallel; the result does
/// not depend on the number of threads.
///
/// # Panics
/// If the four slices differ in length or `step == 0`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamWHyper, step: u64, lr: f64, grad_scale: f32) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw_step: params {n}, grads {}, m {}, v {} must have equal lengths",
        grads.len(),
        m.len(),
        v.len()
    );
    let scalars = AdamWScalars::new(hp, step, lr, grad_scale);
    if n < PAR_MIN_LEN {
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

/// Per-group options, like a torch parameter group. Only weight decay varies between groups in
/// qtrain: put biases and norm weights in [`ParamGroup::no_decay`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    pub weight_decay: f64,
}

impl ParamGroup {
    pub fn new(weight_decay: f64) -> Self {
        ParamGroup { weight_decay }
    }

    /// A group without weight decay.
    pub fn no_decay() -> Self {
        ParamGroup { weight_decay: 0.0 }
    }
}

/// The state of one parameter group: its options, its step counter and the moments of each of
/// its parameters (in the order they were registered).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub group: ParamGroup,
    /// Steps completed so far; the next update uses bias corrections for `step + 1`.
    pub step: u64,
    /// First moments (`exp_avg`), one vector per parameter.
    pub exp_avg: Vec<Vec<f32>>,
    /// Second moments (`exp_avg_sq`), one vector per parameter.
    pub exp_avg_sq: Vec<Vec<f32>>,
}

impl GroupState {
    /// Lengths of the group's parameters.
    pub fn param_lens(&self) -> Vec<usize> {
        self.exp_avg.iter().map(Vec::len).collect()
    }
}

/// AdamW optimizer state for a set of parameter groups, serialisable for checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWState {
    pub hyper: AdamWHyper,
    pub groups: Vec<GroupState>,
}

impl AdamWState {
    /// An empty state; add groups with [`AdamWState::add_group`]. `hyper.weight_decay` is only
    /// the default for groups; each group carries its own.
    pub fn new(hyper: AdamWHyper) -> Result<Self> {
        hyper.validate()?;
        Ok(AdamWState { hyper, groups: Vec::new() })
    }

    /// Registers a group of parameters with the given lengths (moments start at zero, step at
    /// 0) and returns its index.
    pub fn add_group(&mut self, group: ParamGroup, param_lens: &[usize]) -> Result<usize> {
        self.hyper.with_weight_decay(group.weight_decay).validate()?;
        self.groups.push(GroupState {
            group,
            step: 0,
            exp_avg: param_lens.iter().map(|&n| vec![0.0; n]).collect(),
            exp_avg_sq: param_lens.iter().map(|&n| vec![0.0; n]).collect(),
        });
        Ok(self.groups.len() - 1)
    }

    /// The hyper-parameters used for group `group`.
    pub fn group_hyper(&self, group: usize) -> Option<AdamWHyper> {
        self.groups.get(group).map(|g| self.hyper.with_weight_decay(g.group.weight_decay))
    }

    /// Checks that the state is usable (e.g. after loading a checkpoint): valid
    /// hyper-parameters, and moments of equal lengths per parameter.
    pub fn validate(&self) -> Result<()> {
        for (gi, g) in self.groups.iter().enumerate() {
            self.hyper.with_weight_decay(g.group.weight_decay).validate()?;
            if g.exp_avg.len() != g.exp_avg_sq.len() || g.exp_avg.iter().zip(&g.exp_avg_sq).any(|(m, v)| m.len() != v.len()) {
                return Err(OptimError::ShapeMismatch(format!("group {gi}: exp_avg and exp_avg_sq have different shapes")));
            }
        }
        Ok(())
    }

    /// One AdamW update of every parameter of group `group`: increments the group's step, then
    /// applies [`adamw_step`] to each `(param, grad)` pair with the group's weight decay.
    /// Returns the step number used. Nothing is modified if the shapes do not match.
    pub fn step_group(&mut self, group: usize, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f64, grad_scale: f32) -> Result<u64> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(OptimError::InvalidArgument { param: "lr", value: lr.to_string(), expected: "must be finite and >= 0".into() });
        }
        let n_groups = self.groups.len();
        let hp = self
            .group_hyper(group)
            .ok_or_else(|| OptimError::ShapeMismatch(format!("group index {group} out of range ({n_groups} groups)")))?;
        let state = &mut self.groups[group];
        let n = state.exp_avg.len();
        if params.len() != n || grads.len() != n {
            return Err(OptimError::ShapeMismatch(format!(
                "group {group} has {n} parameters, got {} params and {} grads",
                params.len(),
                grads.len()
            )));
        }
        for (i, ((p, g), (m, v))) in params.iter().zip(grads).zip(state.exp_avg.iter().zip(&state.exp_avg_sq)).enumerate() {
            if p.len() != m.len() || g.len() != m.len() || v.len() != m.len() {
                return Err(OptimError::ShapeMismatch(format!(
                    "group {group} parameter {i}: state has {} elements, param {}, grad {}",
                    m.len(),
                    p.len(),
                    g.len()
                )));
            }
        }
        state.step += 1;
        let step = state.step;
        for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(state.exp_avg.iter_mut().zip(state.exp_avg_sq.iter_mut())) {
            adamw_step(p, g, m, v, &hp, step, lr, grad_scale);
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook AdamW in f64, for comparison with the f32 kernel.
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

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
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
        adamw_step(&mut p, &g, &mut m, &mut v, &hp, 1, 1e-3, 1.0);
        let expect = [1.0 - 1e-3, -2.0 + 1e-3, 0.5 - 1e-3];
        for (a, b) in p.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn matches_f64_textbook_over_many_steps() {
        let hp = AdamWHyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        let n = 257;
        let mut p = pseudo_random(n, 1);
        let mut p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
        for t in 1..=20u64 {
            let g = pseudo_random(n, 100 + t as u32);
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let lr = 1e-3 * (1.0 - t as f64 / 40.0);
            adamw_step(&mut p, &g, &mut m, &mut v, &hp, t, lr, 0.5);
            reference_f64(&mut p64, &g64, &mut m64, &mut v64, &hp, t, lr, 0.5);
        }
        for i in 0..n {
            let err = (p[i] as f64 - p64[i]).abs();
            assert!(err <= 1e-6 * p64[i].abs().max(1e-2), "param {i}: {} vs {}", p[i], p64[i]);
        }
    }

    #[test]
    fn weight_decay_is_decoupled_and_skipped_for_no_decay_group() {
        // Zero gradient: the moments stay 0, so only decay acts: p *= 1 - lr*wd.
        let hp = AdamWHyper::default().with_weight_decay(0.1);
        let mut p = vec![2.0f32];
        let (mut m, mut v) = (vec![0.0f32], vec![0.0f32]);
        adamw_step(&mut p, &[0.0], &mut m, &mut v, &hp, 1, 0.01, 1.0);
        assert_eq!(p[0], 2.0 * (1.0 - 0.01 * 0.1) as f32);
        let mut q = vec![2.0f32];
        adamw_step(&mut q, &[0.0], &mut m, &mut v, &hp.with_weight_decay(0.0), 1, 0.01, 1.0);
        assert_eq!(q[0], 2.0);
    }

    #[test]
    fn grad_scale_equals_prescaled_gradients() {
        let hp = AdamWHyper::default();
        let g = pseudo_random(64, 7);
        let scaled: Vec<f32> = g.iter().map(|x| x * 0.25).collect();
        let (mut p1, mut p2) = (pseudo_random(64, 3), pseudo_random(64, 3));
        let (mut m1, mut v1, mut m2, mut v2) = (vec![0.0; 64], vec![0.0; 64], vec![0.0; 64], vec![0.0; 64]);
        adamw_step(&mut p1, &g, &mut m1, &mut v1, &hp, 1, 1e-3, 0.25);
        adamw_step(&mut p2, &scaled, &mut m2, &mut v2, &hp, 1, 1e-3, 1.0);
        assert_eq!(p1, p2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn parallel_path_is_bitwise_equal_to_sequential() {
        let n = PAR_MIN_LEN * 2 + 123;
        let hp = AdamWHyper::default();
        let g = pseudo_random(n, 11);
        let p0 = pseudo_random(n, 12);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
        adamw_step(&mut p, &g, &mut m, &mut v, &hp, 1, 1e-3, 0.7);
        adamw_step(&mut p, &g, &mut m, &mut v, &hp, 2, 1e-3, 0.7);
        let (mut ps, mut ms, mut vs) = (p0, vec![0.0; n], vec![0.0; n]);
        for t in 1..=2 {
            AdamWScalars::new(&hp, t, 1e-3, 0.7).apply(&mut ps, &g, &mut ms, &mut vs);
        }
        assert_eq!(p, ps);
        assert_eq!(m, ms);
        assert_eq!(v, vs);
    }

    #[test]
    #[should_panic(expected = "equal lengths")]
    fn adamw_step_rejects_length_mismatch() {
        let hp = AdamWHyper::default();
        adamw_step(&mut [0.0; 3], &[0.0; 2], &mut [0.0; 3], &mut [0.0; 3], &hp, 1, 1e-3, 1.0);
    }

    #[test]
    fn state_steps_groups_and_round_trips_through_serde() {
        let mut state = AdamWState::new(AdamWHyper::default()).unwrap();
        let decay = state.add_group(ParamGroup::new(0.1), &[3, 2]).unwrap();
        let no_decay = state.add_group(ParamGroup::no_decay(), &[2]).unwrap();
        let (mut a, mut b, mut c) = (vec![1.0f32; 3], vec![2.0f32; 2], vec![3.0f32; 2]);
        let ga = [0.1f32; 3];
        let gb = [0.2f32; 2];
        let gc = [0.3f32; 2];
        let t = state.step_group(decay, &mut [&mut a, &mut b], &[&ga, &gb], 1e-3, 1.0).unwrap();
        assert_eq!(t, 1);
        assert_eq!(state.step_group(no_decay, &mut [&mut c], &[&gc], 1e-3, 1.0).unwrap(), 1);
        assert_eq!(state.step_group(decay, &mut [&mut a, &mut b], &[&ga, &gb], 1e-3, 1.0).unwrap(), 2);
        assert_eq!(state.groups[decay].step, 2);
        assert_eq!(state.groups[no_decay].step, 1);
        assert_eq!(state.group_hyper(no_decay).unwrap().weight_decay, 0.0);

        let json = serde_json::to_string(&state).unwrap();
        let back: AdamWState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        back.validate().unwrap();

        // Continuing from the restored state equals continuing from the original.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        let mut restored = back;
        state.step_group(decay, &mut [&mut a, &mut b], &[&ga, &gb], 1e-3, 1.0).unwrap();
        restored.step_group(decay, &mut [&mut a2, &mut b2], &[&ga, &gb], 1e-3, 1.0).unwrap();
        assert_eq!((a, b), (a2, b2));
    }

    #[test]
    fn state_rejects_bad_shapes_and_arguments_without_stepping() {
        let mut state = AdamWState::new(AdamWHyper::default()).unwrap();
        let g0 = state.add_group(ParamGroup::new(0.1), &[3]).unwrap();
        let mut p = vec![0.0f32; 2];
        let err = state.step_group(g0, &mut [&mut p], &[&[0.0; 2]], 1e-3, 1.0).unwrap_err();
        assert!(matches!(err, OptimError::ShapeMismatch(_)), "{err}");
        assert!(state.step_group(1, &mut [], &[], 1e-3, 1.0).is_err());
        let mut p = vec![0.0f32; 3];
        assert!(state.step_group(g0, &mut [&mut p], &[&[0.0; 3]], -1.0, 1.0).is_err());
        assert_eq!(state.groups[g0].step, 0);

        assert!(state.add_group(ParamGroup::new(-0.1), &[1]).is_err());
        let bad = AdamWHyper { beta2: 1.0, ..AdamWHyper::default() };
        let err = AdamWState::new(bad).unwrap_err();
        assert!(err.to_string().contains("beta2") && err.to_string().contains("[0, 1)"));

        let mut broken = state.clone();
        broken.groups[0].exp_avg_sq[0].pop();
        assert!(broken.validate().is_err());
    }
}
