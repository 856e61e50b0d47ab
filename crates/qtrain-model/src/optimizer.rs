//! [`AdamW`] over a model's trainable tensors, as transformers' `Trainer` steps it: the global
//! gradient norm, `clip_grad_norm_`'s coefficient, then torch's AdamW with two decay groups
//! (weight decay on matrices and embeddings, none on norms and biases). The trainer, `bench`
//! and the golden test against transformers all step this one value, so the golden comparison
//! covers the shipped update. Saving and restoring its state is the trainer's
//! (`optimizer.safetensors`); this module only holds and applies it.

use qtrain_core::{Backend, TensorInfo};
use qtrain_optim::clip::norm_from_sum_of_squares;
use qtrain_optim::{clip_coefficient, AdamWHyper};

use crate::error::Result;
use crate::model::QwenModel;
use crate::train::ModelGrads;

/// AdamW's state for the trainable tensors of one model, in
/// [`QwenModel::trainable_params`] order.
pub struct AdamW<B: Backend> {
    /// (name, shape) of each trainable tensor.
    pub params: Vec<(String, Vec<usize>)>,
    /// (exp_avg, exp_avg_sq) of each trainable tensor, zero at the start.
    pub moments: Vec<(B::Tensor, B::Tensor)>,
    /// Updates applied so far (torch's per-parameter `state["step"]`; all tensors share it).
    pub num_updates: u64,
    /// The decayed group's hyper-parameters; the other group has weight decay 0.
    pub hyper: AdamWHyper,
}

impl<B: Backend> AdamW<B> {
    /// Zero moments for every tensor that has a gradient buffer in `grads`.
    pub fn new(be: &B, model: &mut QwenModel<B>, grads: &ModelGrads<B>, hyper: AdamWHyper) -> Result<Self> {
        let (mut params, mut moments) = (Vec::new(), Vec::new());
        for p in model.trainable_params(grads) {
            params.push((p.name.clone(), p.param.shape().to_vec()));
            moments.push((be.zeros(p.param.shape())?, be.zeros(p.param.shape())?));
        }
        Ok(AdamW { params, moments, num_updates: 0, hyper })
    }

    /// Number of trainable values.
    pub fn num_values(&self) -> usize {
        self.params.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }

    /// The global L2 norm of every gradient (`torch.nn.utils.clip_grad_norm_`'s total norm).
    pub fn grad_norm(be: &B, model: &QwenModel<B>, grads: &ModelGrads<B>) -> Result<f64> {
        let mut sum_sq = 0.0;
        for (_, g) in grads.named(model) {
            sum_sq += be.sum_squares(g)?;
        }
        Ok(norm_from_sum_of_squares(sum_sq))
    }

    /// One AdamW update of every trainable tensor at learning rate `lr`, each gradient
    /// scaled by `clip` (see [`clip_scale`]).
    pub fn step(&mut self, be: &B, model: &mut QwenModel<B>, grads: &ModelGrads<B>, lr: f64, clip: f32) -> Result<()> {
        self.num_updates += 1;
        let no_decay = self.hyper.with_weight_decay(0.0);
        for (p, (exp_avg, exp_avg_sq)) in model.trainable_params(grads).into_iter().zip(self.moments.iter_mut()) {
            let h = if p.decay { &self.hyper } else { &no_decay };
            be.adamw_step(p.param, p.grad, exp_avg, exp_avg_sq, &h.scalars(self.num_updates, lr, clip))?;
        }
        Ok(())
    }
}

/// `clip_grad_norm_`'s gradient scale for a gradient of norm `grad_norm`; `max_grad_norm` 0
/// disables clipping.
pub fn clip_scale(grad_norm: f64, max_grad_norm: f64) -> f32 {
    if max_grad_norm > 0.0 {
        clip_coefficient(grad_norm, max_grad_norm)
    } else {
        1.0
    }
}
