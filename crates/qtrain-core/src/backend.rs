//! The backend interface: the op set the Qwen model is written against.
//!
//! Shapes use fixed letters: `N` rows (tokens, `B·T` flattened), `B` batch, `T` query length,
//! `S` key/value length, `H` query heads, `KV` key/value heads, `D` head dim, `V` vocab.
//! Ops take their operands by reference and return fresh tensors, so a layer's intermediate
//! activations are freed as soon as the layer drops them; a device backend makes that cheap with
//! a caching allocator. Ops that accumulate (gradients, KV caches) write into `&mut` tensors.
//!
//! This module must not contain model logic: an op is a mathematical function of its operands,
//! never "the Qwen attention block".

use crate::{AdamWScalars, Dropout, HostData, Result};

/// What every backend tensor can tell about itself without touching device memory.
pub trait TensorInfo {
    fn shape(&self) -> &[usize];
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// The low-rank path of a LoRA linear: `y += scale · (x Aᵀ) Bᵀ` (Hu et al. 2021, eq. 3).
pub struct LoraWeights<'a, T> {
    /// `[r, in]`
    pub a: &'a T,
    /// `[out, r]`
    pub b: &'a T,
    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scale: f32,
    /// LoRA dropout: the low-rank path sees `x ⊙ mask` (PEFT applies dropout before A), with
    /// element `(n, k)` of the mask — `0` or `1/(1−p)` — drawn by [`crate::philox`] from
    /// (key, row `n`, column `k`) inside the op, never stored. `None` means no dropout.
    pub dropout: Option<Dropout>,
}

/// Gradient buffers a linear layer's backward adds into; `None` skips that gradient.
pub struct LinearGrads<'a, T> {
    /// `[out, in]`
    pub weight: Option<&'a mut T>,
    /// `[out]`
    pub bias: Option<&'a mut T>,
    /// `[r, in]`
    pub lora_a: Option<&'a mut T>,
    /// `[out, r]`
    pub lora_b: Option<&'a mut T>,
}

impl<T> Default for LinearGrads<'_, T> {
    fn default() -> Self {
        LinearGrads { weight: None, bias: None, lora_a: None, lora_b: None }
    }
}

impl<T: TensorInfo> LinearGrads<'_, T> {
    /// The shapes of the buffers present, for [`crate::shapes::check_linear_backward_shapes`].
    pub fn shapes(&self) -> crate::shapes::GradShapes<'_> {
        crate::shapes::GradShapes {
            weight: self.weight.as_deref().map(|g| g.shape()),
            bias: self.bias.as_deref().map(|g| g.shape()),
            lora_a: self.lora_a.as_deref().map(|g| g.shape()),
            lora_b: self.lora_b.as_deref().map(|g| g.shape()),
        }
    }
}

/// Result of the fused LM head + cross-entropy.
pub struct CrossEntropyOutput<T> {
    /// Sum (not mean) of the token losses over targets ≠ -100.
    pub loss_sum: f64,
    /// Number of targets ≠ -100.
    pub num_targets: usize,
    /// Targets where the arg-max logit equals the target (token accuracy).
    pub num_correct: usize,
    /// `∂(scale · loss_sum)/∂hidden` `[N, C]` when gradients were requested.
    pub grad_hidden: Option<T>,
}

/// Gradient request for [`Backend::lm_head_cross_entropy`].
pub struct CrossEntropyGrad<'a, T> {
    /// Multiplies every gradient: `1 / (supervised tokens in the accumulated batch)` gives
    /// transformers' mean loss over the whole accumulated batch.
    pub scale: f32,
    /// Adds `∂(scale · loss_sum)/∂W` `[V, C]` here (full fine-tuning); `None` skips it.
    pub grad_w: Option<&'a mut T>,
}

/// Which keys each query may attend to.
///
/// Query `i` of batch row `b` sits at key index `q_offset + i` (so with a KV cache holding `p`
/// earlier tokens, `q_offset = p`). It sees key `j` when all hold:
/// `j < kv_len`, `j ≤ q_offset + i` (causal), `key_valid[b·kv_len + j]` (not padding), and,
/// when `segments` is given, `segments[b·kv_len + j] == segments[b·kv_len + q_offset + i]`
/// (packing: samples in one row never see each other). A query that sees no key gets a zero
/// output.
///
/// `dropout` (training only) drops attention probabilities after the softmax, as transformers'
/// eager attention (`dropout(softmax(S)) V`, kept values scaled by `1/(1−p)`): the probability of
/// query `i`, head `h`, batch row `b` for key `j` is multiplied by element (row `(b·H + h)·T + i`,
/// column `j`) of the [`crate::philox`] mask. The log-sum-exp is that of the undropped softmax,
/// and backward must be given the same mask.
#[derive(Clone, Debug)]
pub struct AttentionMask {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub q_offset: usize,
    /// `[B, kv_len]`, true for real tokens; `None` means all valid.
    pub key_valid: Option<Vec<bool>>,
    /// `[B, kv_len]` sample ids for packed rows; `None` means one sample per row.
    pub segments: Option<Vec<u32>>,
    /// Dropout on the attention probabilities (training); `None` means none.
    pub dropout: Option<Dropout>,
}

impl AttentionMask {
    /// Plain causal mask over `len` tokens per row, no padding.
    pub fn causal(batch: usize, len: usize) -> Self {
        AttentionMask { batch, q_len: len, kv_len: len, q_offset: 0, key_valid: None, segments: None, dropout: None }
    }

    /// One past the last key that query `i` may see under causality alone (padding and packed
    /// segments can hide more keys below this bound, never above it).
    #[inline]
    pub fn causal_end(&self, i: usize) -> usize {
        (self.q_offset + i + 1).min(self.kv_len)
    }

    /// Whether query `i` of row `b` may attend to key `j`.
    #[inline]
    pub fn allows(&self, b: usize, i: usize, j: usize) -> bool {
        let qpos = self.q_offset + i;
        if j >= self.kv_len || j > qpos {
            return false;
        }
        if let Some(valid) = &self.key_valid {
            if !valid[b * self.kv_len + j] {
                return false;
            }
        }
        if let Some(seg) = &self.segments {
            if seg[b * self.kv_len + j] != seg[b * self.kv_len + qpos] {
                return false;
            }
        }
        true
    }
}

/// The op set. Every op validates its shapes with the rule of [`crate::shapes`] and returns
/// [`crate::CoreError`] on misuse; none panics on bad input.
pub trait Backend: Send + Sync {
    type Tensor: TensorInfo + Send + Sync;

    /// Human-readable name for logs ("cpu", "cuda:0").
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------

    /// Copy host data to the backend, converting to the backend's storage type.
    fn upload(&self, data: HostData<'_>, shape: &[usize]) -> Result<Self::Tensor>;
    /// Copy a frozen weight (a matrix the optimizer never updates: base linear weights, the
    /// embedding table, the LM head) to the backend. A backend may store it in a narrower type
    /// than [`Backend::upload`] would — the CPU backend's bf16 mode keeps it in bf16, 2 bytes
    /// per parameter — and every op that reads weights accepts that storage.
    fn upload_weight(&self, data: HostData<'_>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(data, shape)
    }
    /// [`Backend::upload_weight`] of bf16 values the caller gives away. A backend that keeps the
    /// weight as bf16 in host memory takes this vector as it is: copying it would hold the largest
    /// tensor twice for a moment (+1.1 GB at Qwen2.5-7B's embedding table, the peak of a
    /// `--shape` run).
    fn upload_weight_bf16(&self, data: Vec<half::bf16>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload_weight(HostData::BF16(&data), shape)
    }
    /// Copy a tensor back to the host as f32.
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// A zero-filled tensor in the backend's compute type.
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;
    /// An independent copy of `x`, in its own storage type (one memory copy, not a zero-fill
    /// and an add).
    fn copy(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// Same data, new shape (element count must match).
    fn reshape(&self, t: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Rows `rows` of a `[N, C]` tensor, as `[rows.len(), C]`.
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// Write `src` `[B, T, …]` into `dst` `[B, S_cap, …]` at sequence offset `at` (KV caches).
    fn write_seq(&self, dst: &mut Self::Tensor, src: &Self::Tensor, at: usize) -> Result<()>;

    // ---- element-wise -------------------------------------------------------------------

    /// `a + b`, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `acc += alpha · x`, same element counts.
    fn add_scaled_assign(&self, acc: &mut Self::Tensor, x: &Self::Tensor, alpha: f32) -> Result<()>;

    // ---- products -----------------------------------------------------------------------

    /// `op(a) · op(b)` for 2-D tensors, `op` transposing when the flag is set.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor, trans_a: bool, trans_b: bool) -> Result<Self::Tensor>;
    /// `y = x Wᵀ + bias (+ LoRA)`: x `[N, in]`, w `[out, in]`, bias `[out]` → `[N, out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        lora: Option<LoraWeights<'_, Self::Tensor>>,
    ) -> Result<Self::Tensor>;

    // ---- transformer ops ----------------------------------------------------------------

    /// Rows of `table` `[V, C]` selected by `ids` → `[ids.len(), C]`.
    fn embedding(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;
    /// RMSNorm over the last dimension (Zhang & Sennrich 2019): `w · x / √(mean(x²) + eps)`,
    /// with `w` of that dimension's size. Per-head q/k norm is this op on `[N·H, D]`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// Rotary embedding, rotate-half layout (Su et al. 2021; HF `apply_rotary_pos_emb`):
    /// x `[N, H, D]`, `cos`/`sin` tables `[P, D/2]`, `positions` `[N]` indexing the tables.
    fn rope(&self, x: &Self::Tensor, cos: &Self::Tensor, sin: &Self::Tensor, positions: &[u32]) -> Result<Self::Tensor>;
    /// Scaled dot-product attention with grouped-query heads (H a multiple of KV):
    /// q `[B, T, H, D]`, k/v `[B, S_cap, KV, D]` of which the first `mask.kv_len` are used.
    /// Returns the output `[B, T, H, D]` and the softmax log-sum-exp `[B, T, H]` (for backward).
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        mask: &AttentionMask,
        scale: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// `silu(gate) · up`, same shapes (SwiGLU, Shazeer 2020).
    fn swiglu(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;

    // ---- backward -----------------------------------------------------------------------
    // Each takes the forward's inputs (and saved outputs where cheaper) plus the output
    // gradient; parameter gradients are *added* into caller-owned buffers so micro-batches
    // accumulate without extra copies.

    /// Backward of [`Backend::linear`]: adds into the requested `grads` and returns `dx`
    /// `[N, in]` when `need_dx`.
    fn linear_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        lora: Option<LoraWeights<'_, Self::Tensor>>,
        dy: &Self::Tensor,
        grads: LinearGrads<'_, Self::Tensor>,
        need_dx: bool,
    ) -> Result<Option<Self::Tensor>>;
    /// Backward of [`Backend::embedding`]: scatter-adds `dy` rows into `grad_table`.
    fn embedding_backward(&self, grad_table: &mut Self::Tensor, ids: &[u32], dy: &Self::Tensor) -> Result<()>;
    /// Backward of [`Backend::rms_norm`]: returns `dx`, adds `dw` into `grad_w` if given.
    fn rms_norm_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        dy: &Self::Tensor,
        grad_w: Option<&mut Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// Backward of [`Backend::rope`] (the transpose rotation).
    fn rope_backward(&self, dy: &Self::Tensor, cos: &Self::Tensor, sin: &Self::Tensor, positions: &[u32]) -> Result<Self::Tensor>;
    /// Backward of [`Backend::attention`] without a cache (k/v `[B, S, KV, D]`, `S = kv_len`),
    /// recomputing probabilities from the saved log-sum-exp. Returns `(dq, dk, dv)`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        out: &Self::Tensor,
        lse: &Self::Tensor,
        dout: &Self::Tensor,
        mask: &AttentionMask,
        scale: f32,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;
    /// Backward of [`Backend::swiglu`]: returns `(dgate, dup)`.
    fn swiglu_backward(&self, gate: &Self::Tensor, up: &Self::Tensor, dy: &Self::Tensor) -> Result<(Self::Tensor, Self::Tensor)>;

    // ---- loss and optimizer -------------------------------------------------------------

    /// Fused LM head + cross-entropy over rows of `hidden` `[N, C]` against `w` `[V, C]`:
    /// `loss_n = logsumexp(h_n Wᵀ) − (h_n Wᵀ)[target_n]` for targets ≠ -100. Works through
    /// the rows in chunks so `[N × V]` logits never exist at once (Liger-Kernel's fused linear
    /// cross-entropy idea); gradients only when `grad` is given.
    fn lm_head_cross_entropy(
        &self,
        hidden: &Self::Tensor,
        w: &Self::Tensor,
        targets: &[i32],
        grad: Option<CrossEntropyGrad<'_, Self::Tensor>>,
    ) -> Result<CrossEntropyOutput<Self::Tensor>>;
    /// `Σ x²` in f64 (for the global gradient norm).
    fn sum_squares(&self, x: &Self::Tensor) -> Result<f64>;
    /// `a ⊙ b`, same shapes.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// One AdamW update (`torch.optim.AdamW`, see [`crate::adamw`]) of `param` with this
    /// step's `scalars` (the clipping factor included). Moments are f32; `param` f32, or bf16
    /// on backends that keep bf16 master weights.
    fn adamw_step(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        exp_avg: &mut Self::Tensor,
        exp_avg_sq: &mut Self::Tensor,
        scalars: &AdamWScalars,
    ) -> Result<()>;
    /// Set every element to zero (gradient buffers between optimizer steps).
    fn fill_zero(&self, x: &mut Self::Tensor) -> Result<()>;

    // ---- measurement (benchmarks; defaults do nothing) ---------------------------------

    /// Peak bytes of device memory held since creation or the last [`Backend::reset_device_peak`];
    /// `None` for a backend without memory of its own (the CPU: the process's resident memory
    /// says it).
    fn device_peak_bytes(&self) -> Option<usize> {
        None
    }
    /// Restarts [`Backend::device_peak_bytes`] from the current use.
    fn reset_device_peak(&self) {}
    /// Starts a named phase of work ("forward", "recompute", "backward", …); the previous phase
    /// ends here. Timed only while profiling is on ([`Backend::set_profiling`]).
    fn begin_phase(&self, _name: &'static str) {}
    /// Turns device-side timing of phases and op kinds on or off (a backend without it ignores this).
    fn set_profiling(&self, _on: bool) {}
    /// Waits for queued work and returns the milliseconds spent per phase and per op kind since
    /// profiling was turned on, then starts over; `None` when the backend does not profile.
    fn take_profile(&self) -> Result<Option<Profile>> {
        Ok(None)
    }
}

/// Device time of one profiled stretch of work, in milliseconds, from a backend's own timers
/// (CUDA events): per phase of the model's step and per kind of op. A stretch of device time
/// belongs to the phase or op kind that started it, until the next one starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub phases_ms: Vec<(String, f64)>,
    pub ops_ms: Vec<(String, f64)>,
}
