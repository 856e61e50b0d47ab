//! Training passes over a [`QwenModel`]: LoRA initialisation, gradient buffers, and one
//! forward + backward of a micro-batch with the chunked LM-head loss, optionally with gradient
//! checkpointing (keep only each layer's input, recompute the layer during backward).
//!
//! Loss convention (transformers' `num_items_in_batch`): the caller passes
//! `loss_scale = 1 / (supervised targets in the whole accumulated batch)`, so summing the
//! gradients of k micro-batches equals the gradient of one batch of all of them. This module
//! must not step optimizers, schedule learning rates or read data files.

use qtrain_core::rng::Rng;
use qtrain_core::{Backend, CrossEntropyGrad, HostData, TensorInfo};

use crate::adapter::{AdapterConfig, LoraAdapter};
use crate::config::Proj;
use crate::error::{ModelError, Result};
use crate::layer::{layer_backward, layer_forward, LayerDropout, LayerGrads, LayerPass, LinearGradBufs};
use crate::model::{Batch, LoraPair, QwenModel};
use crate::safetensors_io::{HostTensor, HostTensorData};

/// A micro-batch with its next-token targets.
#[derive(Clone, Debug)]
pub struct TrainBatch {
    pub batch: Batch,
    /// `[B·T]`: the token each position must predict, or -100.
    pub targets: Vec<i32>,
}

impl TrainBatch {
    /// Right-pad samples given as (input ids, labels) with HF's label convention (`labels[i]`
    /// belongs to token i, -100 = unsupervised): position i predicts `labels[i + 1]`.
    pub fn from_samples(samples: &[(Vec<u32>, Vec<i32>)], pad_id: u32) -> Result<Self> {
        let ids: Vec<Vec<u32>> = samples.iter().map(|(i, _)| i.clone()).collect();
        let batch = Batch::right_padded(&ids, pad_id)?;
        let t = batch.seq_len;
        let mut targets = vec![-100; batch.batch * t];
        for (b, (ids, labels)) in samples.iter().enumerate() {
            if ids.len() != labels.len() {
                return Err(ModelError::Invalid(format!("sample {b}: {} ids but {} labels", ids.len(), labels.len())));
            }
            for i in 0..ids.len().saturating_sub(1) {
                targets[b * t + i] = labels[i + 1];
            }
        }
        Ok(TrainBatch { batch, targets })
    }

    /// Number of supervised targets.
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t != -100).count()
    }
}

/// Loss statistics of a pass (sums, so micro-batches add up).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    pub loss_sum: f64,
    pub num_targets: usize,
    pub num_correct: usize,
}

impl LossStats {
    pub fn add(&mut self, o: LossStats) {
        self.loss_sum += o.loss_sum;
        self.num_targets += o.num_targets;
        self.num_correct += o.num_correct;
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.num_targets.max(1) as f64
    }
    pub fn token_accuracy(&self) -> f64 {
        self.num_correct as f64 / self.num_targets.max(1) as f64
    }
}

/// What a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TrainMode {
    /// Only attached LoRA adapters (the base model is frozen).
    Lora,
    /// Every parameter; tied embeddings are one tensor.
    Full,
}

/// Gradient buffers for every trainable tensor of a model.
pub struct ModelGrads<B: Backend> {
    pub mode: TrainMode,
    pub embed_tokens: Option<B::Tensor>,
    pub layers: Vec<LayerGrads<B>>,
    pub norm: Option<B::Tensor>,
    pub lm_head: Option<B::Tensor>,
}

/// Options of one forward + backward.
#[derive(Clone, Copy, Debug)]
pub struct BackwardOptions {
    /// Multiplies the summed token loss before differentiation (1 / accumulated targets).
    pub loss_scale: f32,
    /// Keep only each decoder layer's input and recompute it in backward.
    pub gradient_checkpointing: bool,
    /// LoRA dropout probability and the seed of this micro-batch's masks.
    pub lora_dropout: Option<(f32, u64)>,
    /// Attention dropout (config.json's `attention_dropout` or `--attention_dropout`)
    /// probability and the seed of this micro-batch's masks.
    pub attention_dropout: Option<(f32, u64)>,
    /// NEFTune noise on the input embeddings: (alpha, seed of this micro-batch's noise).
    pub neftune: Option<(f32, u64)>,
}

/// NEFTune (Jain et al., "NEFTune: Noisy Embeddings Improve Instruction Finetuning", 2023,
/// Algorithm 1), as transformers' `neftune_post_forward_hook`: in training only, add
/// `U(−m, m)` noise with `m = alpha / sqrt(T · d)` to the `[B·T, d]` input embeddings (T the
/// padded row length, d the hidden size; padding positions get noise too, as in transformers).
/// The noise is a constant of the pass, so backward is unchanged. Drawn on the host from
/// `seed` (one micro-batch's worth, once per pass).
pub fn add_neftune_noise<B: Backend>(be: &B, x: B::Tensor, seq_len: usize, alpha: f32, seed: u64) -> Result<B::Tensor> {
    let shape = x.shape().to_vec();
    let (n, d) = (shape[0], shape[1]);
    let magnitude = alpha as f64 / ((seq_len * d) as f64).sqrt();
    let mut rng = Rng::new(seed);
    let noise: Vec<f32> = (0..n * d).map(|_| rng.uniform(-magnitude, magnitude) as f32).collect();
    let noise = be.upload(HostData::F32(&noise), &shape)?;
    Ok(be.add(&x, &noise)?)
}

/// How LoRA A is initialised (B is always zero, so training starts from the base model): the
/// `--init_lora_weights` option. Serialised as PEFT writes it in `adapter_config.json`: `true`
/// or `"gaussian"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraInit {
    /// PEFT's default (`true`): `kaiming_uniform_(a=√5)`, i.e. U(−1/√in, 1/√in).
    Kaiming,
    /// PEFT's `init_lora_weights="gaussian"`: N(0, (1/r)²).
    Gaussian,
}

impl LoraInit {
    /// The `init_lora_weights` value of `adapter_config.json`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            LoraInit::Kaiming => serde_json::Value::Bool(true),
            LoraInit::Gaussian => serde_json::Value::String("gaussian".into()),
        }
    }
}

impl std::str::FromStr for LoraInit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "true" | "True" => Ok(LoraInit::Kaiming),
            "gaussian" => Ok(LoraInit::Gaussian),
            other => Err(format!("unsupported init_lora_weights {other:?}; valid: true (kaiming-uniform A), gaussian")),
        }
    }
}

impl serde::Serialize for LoraInit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for LoraInit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(LoraInit::Kaiming),
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("unsupported init_lora_weights {other}; valid: true, \"gaussian\""))),
        }
    }
}

/// One trainable tensor paired with its gradient, for the optimizer.
pub struct TrainableParam<'a, B: Backend> {
    /// HF parameter name, or PEFT key for LoRA tensors.
    pub name: String,
    pub param: &'a mut B::Tensor,
    pub grad: &'a B::Tensor,
    /// Weight decay applies (not to biases and norm weights, as transformers' Trainer).
    pub decay: bool,
}

impl<B: Backend> QwenModel<B> {
    /// Attach fresh LoRA adapters to the linear modules `config.target_modules` selects,
    /// initialised as PEFT does. Returns how many modules were adapted.
    pub fn init_lora(&mut self, be: &B, config: &AdapterConfig, init: LoraInit, seed: u64) -> Result<usize> {
        self.clear_lora();
        let mut rng = Rng::new(seed);
        let mut count = 0;
        let r = config.r;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for (name, lin) in layer.linears_mut() {
                let module = format!("model.layers.{l}.{name}");
                if !config.target_modules.matches(&module)? {
                    continue;
                }
                let (out_dim, in_dim) = (lin.weight.shape()[0], lin.weight.shape()[1]);
                let a: Vec<f32> = match init {
                    LoraInit::Kaiming => {
                        let bound = 1.0 / (in_dim as f64).sqrt();
                        (0..r * in_dim).map(|_| rng.uniform(-bound, bound) as f32).collect()
                    }
                    LoraInit::Gaussian => (0..r * in_dim).map(|_| (rng.normal() / r as f64) as f32).collect(),
                };
                lin.lora = Some(LoraPair {
                    a: be.upload(HostData::F32(&a), &[r, in_dim])?,
                    b: be.zeros(&[out_dim, r])?,
                    scale: config.scale_for(&module, r) as f32,
                });
                count += 1;
            }
        }
        if count == 0 {
            return Err(ModelError::Invalid(format!("target_modules ({}) match no linear layer of the model", config.target_modules)));
        }
        Ok(count)
    }

    /// Download the attached adapters as a PEFT adapter (f32).
    pub fn export_lora(&self, be: &B, config: &AdapterConfig) -> Result<LoraAdapter> {
        let mut weights = std::collections::BTreeMap::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, lin) in layer.linears() {
                if let Some(p) = &lin.lora {
                    let host = |t: &B::Tensor| -> Result<HostTensor> {
                        Ok(HostTensor { shape: t.shape().to_vec(), data: HostTensorData::F32(be.download(t)?) })
                    };
                    weights.insert(format!("model.layers.{l}.{name}"), (host(&p.a)?, host(&p.b)?));
                }
            }
        }
        Ok(LoraAdapter { config: config.clone(), weights })
    }

    /// Zeroed gradient buffers for `mode`.
    pub fn new_grads(&self, be: &B, mode: TrainMode) -> Result<ModelGrads<B>> {
        let full = mode == TrainMode::Full;
        let like = |t: &B::Tensor| be.zeros(t.shape());
        let opt = |cond: bool, t: Option<&B::Tensor>| -> Result<Option<B::Tensor>> {
            match (cond, t) {
                (true, Some(t)) => Ok(Some(like(t)?)),
                _ => Ok(None),
            }
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let mk = |lin: &crate::model::Linear<B>| -> Result<LinearGradBufs<B>> {
                Ok(LinearGradBufs {
                    weight: opt(full, Some(&lin.weight))?,
                    bias: opt(full, lin.bias.as_ref())?,
                    lora_a: opt(!full, lin.lora.as_ref().map(|p| &p.a))?,
                    lora_b: opt(!full, lin.lora.as_ref().map(|p| &p.b))?,
                })
            };
            layers.push(LayerGrads {
                input_layernorm: opt(full, Some(&layer.input_layernorm))?,
                post_attention_layernorm: opt(full, Some(&layer.post_attention_layernorm))?,
                q_norm: opt(full, layer.q_norm.as_ref())?,
                k_norm: opt(full, layer.k_norm.as_ref())?,
                linears: Proj::try_map(|proj| mk(layer.linear(proj)))?,
            });
        }
        if mode == TrainMode::Lora && !self.layers.iter().any(|l| l.linears().iter().any(|(_, lin)| lin.lora.is_some())) {
            return Err(ModelError::Invalid("LoRA training needs adapters attached (init_lora or an adapter folder)".into()));
        }
        Ok(ModelGrads {
            mode,
            embed_tokens: opt(full, Some(&self.embed_tokens))?,
            layers,
            norm: opt(full, Some(&self.norm))?,
            lm_head: opt(full, self.lm_head.as_ref())?,
        })
    }

    /// Forward and backward of one micro-batch: adds `loss_scale · ∂(Σ token losses)` into
    /// `grads` and returns the loss sums.
    pub fn forward_backward(&self, be: &B, tb: &TrainBatch, grads: &mut ModelGrads<B>, opts: &BackwardOptions) -> Result<LossStats> {
        let cfg = &self.config;
        let batch = &tb.batch;
        let mask = batch.attention_mask();
        let rope_rows = self.rope.covering(be, cfg, &batch.positions)?;
        let rope = (&rope_rows.cos, &rope_rows.sin);
        let dropout_for = |l: usize| Some(LayerDropout { lora: opts.lora_dropout, attention: opts.attention_dropout, layer: l as u32 });
        be.begin_phase("forward");
        let mut x = be.embedding(&self.embed_tokens, &batch.ids)?;
        if let Some((alpha, seed)) = opts.neftune {
            x = add_neftune_noise(be, x, batch.seq_len, alpha, seed)?;
        }
        // Under checkpointing only layer inputs are kept; otherwise each layer's activations.
        let mut saved_inputs = Vec::new();
        let mut saved_acts = Vec::new();
        // Under checkpointing the last layer keeps its activations anyway: its backward comes
        // right after the loss, so recomputing it would only repeat the forward (peak memory is
        // unchanged — a recomputed layer holds the same activations).
        let keeps_acts = |l: usize| !opts.gradient_checkpointing || l + 1 == self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            if !keeps_acts(l) {
                // The layer input is both consumed by the forward and kept for the recompute.
                let (y, _) = layer_forward(be, cfg, layer, rope, be.copy(&x)?, batch, &mask, None, LayerPass::Output, dropout_for(l))?;
                saved_inputs.push(std::mem::replace(&mut x, y.expect("output requested")));
            } else {
                let (y, acts) = layer_forward(be, cfg, layer, rope, x, batch, &mask, None, LayerPass::OutputAndActs, dropout_for(l))?;
                saved_acts.push(acts.expect("saved"));
                x = y.expect("output requested");
            }
        }
        be.begin_phase("loss");
        let eps = cfg.rms_norm_eps as f32;
        let hidden = be.rms_norm(&x, &self.norm, eps)?;
        // The LM head gradient goes to lm_head, or to the embeddings when they are tied.
        let head_grad = if cfg.tie_word_embeddings { grads.embed_tokens.as_mut() } else { grads.lm_head.as_mut() };
        let ce = be.lm_head_cross_entropy(
            &hidden,
            self.lm_head_weight(),
            &tb.targets,
            Some(CrossEntropyGrad { scale: opts.loss_scale, grad_w: head_grad }),
        )?;
        drop(hidden);
        let stats = LossStats { loss_sum: ce.loss_sum, num_targets: ce.num_targets, num_correct: ce.num_correct };
        let d_hidden = ce.grad_hidden.expect("gradient requested");
        let mut dx = be.rms_norm_backward(&x, &self.norm, eps, &d_hidden, grads.norm.as_mut())?;
        drop(x);
        let need_embed_grad = grads.embed_tokens.is_some();
        for l in (0..self.layers.len()).rev() {
            let layer = &self.layers[l];
            let acts = if keeps_acts(l) {
                saved_acts.pop().expect("one set per kept layer")
            } else {
                be.begin_phase("recompute");
                let x_in = saved_inputs.pop().expect("one input per checkpointed layer");
                layer_forward(be, cfg, layer, rope, x_in, batch, &mask, None, LayerPass::ActsOnly, dropout_for(l))?.1.expect("saved")
            };
            be.begin_phase("backward");
            let need_dx = l > 0 || need_embed_grad;
            match layer_backward(be, cfg, layer, rope, acts, dx, batch, &mask, &mut grads.layers[l], need_dx)? {
                Some(d) => dx = d,
                None => return Ok(stats),
            }
        }
        if let Some(g) = grads.embed_tokens.as_mut() {
            be.embedding_backward(g, &batch.ids, &dx)?;
        }
        Ok(stats)
    }

    /// Loss and token accuracy of a batch without gradients (evaluation).
    pub fn evaluate(&self, be: &B, tb: &TrainBatch) -> Result<LossStats> {
        let hidden = self.forward_hidden(be, &tb.batch, None)?;
        let ce = be.lm_head_cross_entropy(&hidden, self.lm_head_weight(), &tb.targets, None)?;
        Ok(LossStats { loss_sum: ce.loss_sum, num_targets: ce.num_targets, num_correct: ce.num_correct })
    }

    /// Every trainable tensor with its gradient, in a fixed order (the optimizer's state
    /// follows this order).
    pub fn trainable_params<'a>(&'a mut self, grads: &'a ModelGrads<B>) -> Vec<TrainableParam<'a, B>> {
        let mut out = Vec::new();
        let QwenModel { embed_tokens, layers, norm, lm_head, .. } = self;
        let mut push = |name: String, param: &'a mut B::Tensor, grad: Option<&'a B::Tensor>, decay: bool| {
            if let Some(grad) = grad {
                out.push(TrainableParam { name, param, grad, decay });
            }
        };
        push("model.embed_tokens.weight".into(), embed_tokens, grads.embed_tokens.as_ref(), true);
        for (l, (layer, lg)) in layers.iter_mut().zip(&grads.layers).enumerate() {
            let p = format!("model.layers.{l}");
            let crate::model::DecoderLayer { input_layernorm, linears, q_norm, k_norm, post_attention_layernorm } = layer;
            push(format!("{p}.input_layernorm.weight"), input_layernorm, lg.input_layernorm.as_ref(), false);
            push(format!("{p}.post_attention_layernorm.weight"), post_attention_layernorm, lg.post_attention_layernorm.as_ref(), false);
            if let (Some(w), Some(g)) = (q_norm.as_mut(), lg.q_norm.as_ref()) {
                push(format!("{p}.self_attn.q_norm.weight"), w, Some(g), false);
            }
            if let (Some(w), Some(g)) = (k_norm.as_mut(), lg.k_norm.as_ref()) {
                push(format!("{p}.self_attn.k_norm.weight"), w, Some(g), false);
            }
            for ((proj, lin), g) in Proj::ALL.into_iter().zip(linears.iter_mut()).zip(&lg.linears) {
                let name = proj.module();
                push(format!("{p}.{name}.weight"), &mut lin.weight, g.weight.as_ref(), true);
                if let (Some(b), Some(gb)) = (lin.bias.as_mut(), g.bias.as_ref()) {
                    push(format!("{p}.{name}.bias"), b, Some(gb), false);
                }
                if let Some(pair) = lin.lora.as_mut() {
                    let key = format!("{}{p}.{name}", crate::adapter::PEFT_PREFIX);
                    push(format!("{key}.lora_A.weight"), &mut pair.a, g.lora_a.as_ref(), true);
                    push(format!("{key}.lora_B.weight"), &mut pair.b, g.lora_b.as_ref(), true);
                }
            }
        }
        push("model.norm.weight".into(), norm, grads.norm.as_ref(), false);
        if let Some(h) = lm_head.as_mut() {
            push("lm_head.weight".into(), h, grads.lm_head.as_ref(), true);
        }
        out
    }
}

impl<B: Backend> ModelGrads<B> {
    /// Every gradient buffer with the name of its parameter (same order as
    /// [`QwenModel::trainable_params`]).
    pub fn named(&self, model: &QwenModel<B>) -> Vec<(String, &B::Tensor)> {
        let mut out = Vec::new();
        if let Some(g) = &self.embed_tokens {
            out.push(("model.embed_tokens.weight".to_string(), g));
        }
        for (l, lg) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            for (name, g) in [
                ("input_layernorm.weight", &lg.input_layernorm),
                ("post_attention_layernorm.weight", &lg.post_attention_layernorm),
                ("self_attn.q_norm.weight", &lg.q_norm),
                ("self_attn.k_norm.weight", &lg.k_norm),
            ] {
                if let Some(g) = g {
                    out.push((format!("{p}.{name}"), g));
                }
            }
            for ((name, _), g) in model.layers[l].linears().into_iter().zip(&lg.linears) {
                let key = format!("{}{p}.{name}", crate::adapter::PEFT_PREFIX);
                for (n, t) in [
                    (format!("{p}.{name}.weight"), &g.weight),
                    (format!("{p}.{name}.bias"), &g.bias),
                    (format!("{key}.lora_A.weight"), &g.lora_a),
                    (format!("{key}.lora_B.weight"), &g.lora_b),
                ] {
                    if let Some(t) = t {
                        out.push((n, t));
                    }
                }
            }
        }
        if let Some(g) = &self.norm {
            out.push(("model.norm.weight".to_string(), g));
        }
        if let Some(g) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), g));
        }
        out
    }

    /// Zero every buffer (after an optimizer step).
    pub fn zero(&mut self, be: &B) -> Result<()> {
        let mut all: Vec<&mut B::Tensor> = vec![];
        all.extend(self.embed_tokens.as_mut());
        all.extend(self.norm.as_mut());
        all.extend(self.lm_head.as_mut());
        for lg in &mut self.layers {
            all.extend(lg.input_layernorm.as_mut());
            all.extend(lg.post_attention_layernorm.as_mut());
            all.extend(lg.q_norm.as_mut());
            all.extend(lg.k_norm.as_mut());
            for g in &mut lg.linears {
                all.extend(g.weight.as_mut());
                all.extend(g.bias.as_mut());
                all.extend(g.lora_a.as_mut());
                all.extend(g.lora_b.as_mut());
            }
        }
        for t in all {
            be.fill_zero(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtrain_core::CpuBackend;

    #[test]
    fn neftune_noise_is_uniform_in_alpha_over_sqrt_tokens_times_hidden() {
        let be = CpuBackend::new();
        let (n, d, seq_len, alpha) = (64, 96, 32, 5.0f32);
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let xt = be.upload(HostData::F32(&x), &[n, d]).unwrap();
        let noisy = be.download(&add_neftune_noise(&be, xt, seq_len, alpha, 11).unwrap()).unwrap();
        let m = alpha as f64 / ((seq_len * d) as f64).sqrt();
        let noise: Vec<f64> = noisy.iter().zip(&x).map(|(a, b)| (*a - *b) as f64).collect();
        assert!(noise.iter().all(|e| e.abs() <= m * (1.0 + 1e-5)), "noise beyond ±{m}");
        // U(−m, m): mean 0, variance m²/3 (n·d = 6144 draws: 5 standard errors).
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let var = noise.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / noise.len() as f64;
        let se_mean = (m * m / 3.0 / noise.len() as f64).sqrt();
        assert!(mean.abs() < 5.0 * se_mean, "mean {mean}");
        assert!((var / (m * m / 3.0) - 1.0).abs() < 0.1, "variance {var} vs {}", m * m / 3.0);
        // Another seed, other noise; the same seed, the same noise.
        let xt = be.upload(HostData::F32(&x), &[n, d]).unwrap();
        let again = be.download(&add_neftune_noise(&be, xt, seq_len, alpha, 11).unwrap()).unwrap();
        assert_eq!(again, noisy);
        let xt = be.upload(HostData::F32(&x), &[n, d]).unwrap();
        let other = be.download(&add_neftune_noise(&be, xt, seq_len, alpha, 12).unwrap()).unwrap();
        assert_ne!(other, noisy);
    }
}
