//! One decoder layer, forward and backward, written out by hand (no autograd, llm.c style).
//!
//! Forward (HF `Qwen2DecoderLayer` / `Qwen3DecoderLayer`), with N = B·T rows:
//! ```text
//! n₁ = rms_norm(x, input_layernorm)                                   [N, C]
//! q = rope(q_norm(q_proj(n₁))), k = rope(k_norm(k_proj(n₁))), v = v_proj(n₁)
//! a = attention(q, k, v)                                              [B, T, H, D]
//! m = x + o_proj(a)
//! n₂ = rms_norm(m, post_attention_layernorm)
//! y = m + down_proj(silu(gate_proj(n₂)) · up_proj(n₂))
//! ```
//! Backward walks the same lines in reverse, adding parameter gradients into [`LayerGrads`].
//! [`LayerPass`] says what a forward is for: the output alone (inference, or the first pass
//! under gradient checkpointing), the output and the activations, or — a recompute — the
//! activations alone, which skips `down_proj` and the last residual add.
//! This module must not know about losses, optimizers or data.

use qtrain_core::{AttentionMask, Backend, Dropout, LinearGrads, LoraWeights, MaskKey};

use crate::config::{Proj, QwenConfig};
use crate::error::Result;
use crate::model::{Batch, DecoderLayer, Linear};

/// Activations one layer's backward needs.
pub struct LayerActs<B: Backend> {
    x_in: B::Tensor,
    normed1: B::Tensor,
    /// q/k before the per-head norm `[N·H, D]` (Qwen3 only)
    q_pre_norm: Option<B::Tensor>,
    k_pre_norm: Option<B::Tensor>,
    /// after rope `[B, T, H|KV, D]`
    q: B::Tensor,
    k: B::Tensor,
    v: B::Tensor,
    /// attention output `[B, T, H, D]` and its log-sum-exp
    attn: B::Tensor,
    lse: B::Tensor,
    x_mid: B::Tensor,
    normed2: B::Tensor,
    gate: B::Tensor,
    up: B::Tensor,
    act: B::Tensor,
    /// LoRA dropout of the forward, so backward redraws the same masks from their keys
    dropout: Option<LayerDropout>,
}

/// Gradient buffers of one linear layer (`None`: frozen).
pub struct LinearGradBufs<B: Backend> {
    pub weight: Option<B::Tensor>,
    pub bias: Option<B::Tensor>,
    pub lora_a: Option<B::Tensor>,
    pub lora_b: Option<B::Tensor>,
}

impl<B: Backend> LinearGradBufs<B> {
    fn as_grads(&mut self) -> LinearGrads<'_, B::Tensor> {
        LinearGrads { weight: self.weight.as_mut(), bias: self.bias.as_mut(), lora_a: self.lora_a.as_mut(), lora_b: self.lora_b.as_mut() }
    }
}

/// Gradient buffers of one decoder layer.
pub struct LayerGrads<B: Backend> {
    pub input_layernorm: Option<B::Tensor>,
    pub post_attention_layernorm: Option<B::Tensor>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    /// q, k, v, o, gate, up, down: indexed by [`Proj::index`], as [`DecoderLayer::linears`].
    pub linears: [LinearGradBufs<B>; 7],
}

/// Training dropout of one layer: LoRA dropout (on the input of each adapter's A) and attention
/// dropout (on the attention probabilities), each a probability and the micro-batch seed, and the
/// layer index, which with the module (the linear's [`Proj::index`], or
/// [`qtrain_core::philox::MODULE_ATTENTION`]) key each Philox mask; a recompute under gradient
/// checkpointing and the backward draw the very same masks, and nothing is stored.
#[derive(Clone, Copy, Debug)]
pub struct LayerDropout {
    pub lora: Option<(f32, u64)>,
    pub attention: Option<(f32, u64)>,
    pub layer: u32,
}

impl LayerDropout {
    fn mask(self, what: Option<(f32, u64)>, module: u32) -> Option<Dropout> {
        what.filter(|&(p, _)| p > 0.0).map(|(p, seed)| Dropout { key: MaskKey { seed, layer: self.layer, module }, p })
    }

    /// The mask of linear `proj` (`None` without LoRA dropout).
    fn for_linear(self, proj: Proj) -> Option<Dropout> {
        self.mask(self.lora, proj.index() as u32)
    }

    /// The attention-probability mask (`None` without attention dropout).
    fn for_attention(self) -> Option<Dropout> {
        self.mask(self.attention, qtrain_core::philox::MODULE_ATTENTION)
    }
}

/// `mask` with this layer's attention dropout, borrowed unchanged when there is none.
fn with_attention_dropout(mask: &AttentionMask, dropout: Option<LayerDropout>) -> std::borrow::Cow<'_, AttentionMask> {
    match dropout.and_then(LayerDropout::for_attention) {
        Some(d) => std::borrow::Cow::Owned(AttentionMask { dropout: Some(d), ..mask.clone() }),
        None => std::borrow::Cow::Borrowed(mask),
    }
}

fn lora_of<B: Backend>(lin: &Linear<B>, proj: Proj, dropout: Option<LayerDropout>) -> Option<LoraWeights<'_, B::Tensor>> {
    lin.lora.as_ref().map(|l| LoraWeights { a: &l.a, b: &l.b, scale: l.scale, dropout: dropout.and_then(|d| d.for_linear(proj)) })
}

/// What one layer's forward pass must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPass {
    /// The output only (inference; the first pass under gradient checkpointing).
    Output,
    /// The output and the activations [`layer_backward`] needs.
    OutputAndActs,
    /// The activations only: a recompute under checkpointing, where the output is already known
    /// (it is the next layer's saved input). Backward needs `down_proj`'s input, not its output,
    /// so that product — a fifth of the layer's multiply-adds — and the residual add are skipped.
    ActsOnly,
}

/// What [`layer_forward`] returns: the output (unless [`LayerPass::ActsOnly`]) and the saved
/// activations (unless [`LayerPass::Output`]).
pub type LayerOutput<B> = (Option<<B as Backend>::Tensor>, Option<LayerActs<B>>);

/// Forward of one layer. `kv_cache` (inference) appends this step's keys/values at the given
/// offset and attends over the cache; `pass` says whether the output, the activations for
/// [`layer_backward`], or both come back.
#[allow(clippy::too_many_arguments)]
pub fn layer_forward<B: Backend>(
    be: &B,
    cfg: &QwenConfig,
    layer: &DecoderLayer<B>,
    rope: (&B::Tensor, &B::Tensor),
    x: B::Tensor,
    batch: &Batch,
    mask: &AttentionMask,
    kv_cache: Option<(&mut B::Tensor, &mut B::Tensor, usize)>,
    pass: LayerPass,
    dropout: Option<LayerDropout>,
) -> Result<LayerOutput<B>> {
    let save = pass != LayerPass::Output;
    let eps = cfg.rms_norm_eps as f32;
    let (b, t, n) = (batch.batch, batch.seq_len, batch.num_tokens());
    let (h, kvh, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let normed1 = be.rms_norm(&x, &layer.input_layernorm, eps)?;
    let apply = |proj: Proj, input: &B::Tensor| -> Result<B::Tensor> {
        let lin = layer.linear(proj);
        Ok(be.linear(input, &lin.weight, lin.bias.as_ref(), lora_of(lin, proj, dropout))?)
    };
    // q/k: project, per-head norm (Qwen3), rotary. Returns (pre-norm copy if saved, roped).
    let project_rotate = |proj: Proj, heads: usize, norm: Option<&B::Tensor>| -> Result<(Option<B::Tensor>, B::Tensor)> {
        let y = be.reshape(apply(proj, &normed1)?, &[n * heads, d])?;
        let (pre, y) = match norm {
            Some(w) => {
                let normed = be.rms_norm(&y, w, eps)?;
                (if save { Some(y) } else { None }, normed)
            }
            None => (None, y),
        };
        let y = be.reshape(y, &[n, heads, d])?;
        Ok((pre, be.reshape(be.rope(&y, rope.0, rope.1, &batch.positions)?, &[b, t, heads, d])?))
    };
    let (q_pre_norm, q) = project_rotate(Proj::Q, h, layer.q_norm.as_ref())?;
    let (k_pre_norm, k) = project_rotate(Proj::K, kvh, layer.k_norm.as_ref())?;
    let v = be.reshape(apply(Proj::V, &normed1)?, &[b, t, kvh, d])?;
    let scale = 1.0 / (d as f32).sqrt();
    let mask = with_attention_dropout(mask, dropout);
    let mask = mask.as_ref();
    let (attn, lse) = match kv_cache {
        None => be.attention(&q, &k, &v, mask, scale)?,
        Some((kc, vc, at)) => {
            be.write_seq(kc, &k, at)?;
            be.write_seq(vc, &v, at)?;
            be.attention(&q, kc, vc, mask, scale)?
        }
    };
    let attn = be.reshape(attn, &[n, h * d])?;
    let x_mid = be.add(&x, &apply(Proj::O, &attn)?)?;
    let normed2 = be.rms_norm(&x_mid, &layer.post_attention_layernorm, eps)?;
    let gate = apply(Proj::Gate, &normed2)?;
    let up = apply(Proj::Up, &normed2)?;
    let act = be.swiglu(&gate, &up)?;
    let y = match pass {
        LayerPass::ActsOnly => None,
        _ => Some(be.add(&x_mid, &apply(Proj::Down, &act)?)?),
    };
    let acts =
        save.then(|| LayerActs { x_in: x, normed1, q_pre_norm, k_pre_norm, q, k, v, attn, lse, x_mid, normed2, gate, up, act, dropout });
    Ok((y, acts))
}

/// Backward of one layer: given `dy = ∂L/∂y` `[N, C]`, adds parameter gradients into `grads`
/// and returns `∂L/∂x` (skipped — `None` — when `need_dx` is false, e.g. the first layer of a
/// LoRA run whose embeddings are frozen).
#[allow(clippy::too_many_arguments)]
pub fn layer_backward<B: Backend>(
    be: &B,
    cfg: &QwenConfig,
    layer: &DecoderLayer<B>,
    rope: (&B::Tensor, &B::Tensor),
    acts: LayerActs<B>,
    dy: B::Tensor,
    batch: &Batch,
    mask: &AttentionMask,
    grads: &mut LayerGrads<B>,
    need_dx: bool,
) -> Result<Option<B::Tensor>> {
    let eps = cfg.rms_norm_eps as f32;
    let (b, t, n) = (batch.batch, batch.seq_len, batch.num_tokens());
    let (h, kvh, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let back = |proj: Proj, x: &B::Tensor, dy: &B::Tensor, g: &mut [LinearGradBufs<B>; 7], need: bool| -> Result<Option<B::Tensor>> {
        let lin = layer.linear(proj);
        Ok(be.linear_backward(x, &lin.weight, lora_of(lin, proj, acts.dropout), dy, g[proj.index()].as_grads(), need)?)
    };
    // MLP: y = m + down(swiglu(gate(n₂), up(n₂))).
    let d_act = back(Proj::Down, &acts.act, &dy, &mut grads.linears, true)?.expect("dx requested");
    let (d_gate, d_up) = be.swiglu_backward(&acts.gate, &acts.up, &d_act)?;
    let mut d_n2 = back(Proj::Gate, &acts.normed2, &d_gate, &mut grads.linears, true)?.expect("dx requested");
    be.add_scaled_assign(&mut d_n2, &back(Proj::Up, &acts.normed2, &d_up, &mut grads.linears, true)?.expect("dx requested"), 1.0)?;
    let mut d_mid = dy;
    let d_from_norm2 =
        be.rms_norm_backward(&acts.x_mid, &layer.post_attention_layernorm, eps, &d_n2, grads.post_attention_layernorm.as_mut())?;
    be.add_scaled_assign(&mut d_mid, &d_from_norm2, 1.0)?;
    // Attention: m = x + o(attn).
    let d_attn = back(Proj::O, &acts.attn, &d_mid, &mut grads.linears, true)?.expect("dx requested");
    let d_attn = be.reshape(d_attn, &[b, t, h, d])?;
    let attn = be.reshape(acts.attn, &[b, t, h, d])?;
    let scale = 1.0 / (d as f32).sqrt();
    let attn_mask = with_attention_dropout(mask, acts.dropout);
    let (dq, dk, dv) = be.attention_backward(&acts.q, &acts.k, &acts.v, &attn, &acts.lse, &d_attn, &attn_mask, scale)?;
    let unrotate =
        |dz: B::Tensor, heads: usize, pre: Option<&B::Tensor>, norm: Option<&B::Tensor>, g: Option<&mut B::Tensor>| -> Result<B::Tensor> {
            let dz = be.rope_backward(&be.reshape(dz, &[n, heads, d])?, rope.0, rope.1, &batch.positions)?;
            let dz = be.reshape(dz, &[n * heads, d])?;
            let dz = match (pre, norm) {
                (Some(pre), Some(w)) => be.rms_norm_backward(pre, w, eps, &dz, g)?,
                _ => dz,
            };
            Ok(be.reshape(dz, &[n, heads * d])?)
        };
    let dq = unrotate(dq, h, acts.q_pre_norm.as_ref(), layer.q_norm.as_ref(), grads.q_norm.as_mut())?;
    let dk = unrotate(dk, kvh, acts.k_pre_norm.as_ref(), layer.k_norm.as_ref(), grads.k_norm.as_mut())?;
    let dv = be.reshape(dv, &[n, kvh * d])?;
    // The input norm's weight needs ∂L/∂n₁ even when ∂L/∂x itself is not wanted.
    let need_n1 = need_dx || grads.input_layernorm.is_some();
    let d_n1_q = back(Proj::Q, &acts.normed1, &dq, &mut grads.linears, need_n1)?;
    let d_n1_k = back(Proj::K, &acts.normed1, &dk, &mut grads.linears, need_n1)?;
    let d_n1_v = back(Proj::V, &acts.normed1, &dv, &mut grads.linears, need_n1)?;
    let (Some(mut d_n1), Some(d_n1_k), Some(d_n1_v)) = (d_n1_q, d_n1_k, d_n1_v) else {
        return Ok(None);
    };
    be.add_scaled_assign(&mut d_n1, &d_n1_k, 1.0)?;
    be.add_scaled_assign(&mut d_n1, &d_n1_v, 1.0)?;
    let d_from_norm1 = be.rms_norm_backward(&acts.x_in, &layer.input_layernorm, eps, &d_n1, grads.input_layernorm.as_mut())?;
    if !need_dx {
        return Ok(None);
    }
    be.add_scaled_assign(&mut d_mid, &d_from_norm1, 1.0)?;
    Ok(Some(d_mid))
}
