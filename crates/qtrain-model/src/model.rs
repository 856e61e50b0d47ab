//! The Qwen2 / Qwen3 decoder written once over [`Backend`].
//!
//! Forward of one decoder layer (HF `Qwen2DecoderLayer` / `Qwen3DecoderLayer`):
//! `x += o_proj(attn(rope(qk_norm(q_proj(n₁))), rope(qk_norm(k_proj(n₁))), v_proj(n₁)))` with
//! `n₁ = rms_norm(x)`, then `x += down_proj(silu(gate_proj(n₂)) · up_proj(n₂))` with
//! `n₂ = rms_norm(x)`. Parameter names are the checkpoint's (`q_proj`, `gate_proj`, …).
//!
//! This module owns the weights on a backend and the forward pass (with an optional KV cache).
//! It must not parse tokenizers, datasets or CLI flags, and must not do arithmetic itself:
//! every number is produced by a backend op.

use std::path::Path;

use qtrain_core::{AttentionMask, Backend, HostData};

use crate::config::{Proj, QwenConfig};
use crate::error::{ModelError, Result};
use crate::layer::{layer_forward, LayerPass};
use crate::safetensors_io::{HostTensorData, SafetensorsStore};

/// A low-rank adapter on one linear layer: `ΔW = scale · B A`.
pub struct LoraPair<B: Backend> {
    /// `[r, in]`
    pub a: B::Tensor,
    /// `[out, r]`
    pub b: B::Tensor,
    pub scale: f32,
}

/// A linear layer `y = x Wᵀ + b`, optionally with a LoRA adapter.
pub struct Linear<B: Backend> {
    /// `[out, in]`
    pub weight: B::Tensor,
    /// `[out]`
    pub bias: Option<B::Tensor>,
    pub lora: Option<LoraPair<B>>,
}

/// One decoder layer's parameters.
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: B::Tensor,
    /// q, k, v, o, gate, up, down: indexed by [`Proj::index`].
    pub linears: [Linear<B>; 7],
    /// Qwen3 per-head norms, `[D]`.
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub post_attention_layernorm: B::Tensor,
}

impl<B: Backend> DecoderLayer<B> {
    /// One projection's linear layer.
    pub fn linear(&self, proj: Proj) -> &Linear<B> {
        &self.linears[proj.index()]
    }

    /// The linear layers with their PEFT module names (`self_attn.q_proj`, …).
    pub fn linears_mut(&mut self) -> [(&'static str, &mut Linear<B>); 7] {
        let mut linears = self.linears.each_mut().into_iter();
        Proj::ALL.map(|p| (p.module(), linears.next().expect("seven linears")))
    }

    pub fn linears(&self) -> [(&'static str, &Linear<B>); 7] {
        Proj::ALL.map(|p| (p.module(), self.linear(p)))
    }
}

/// Token ids of a batch with their positions and attention mask.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B·T]`
    pub ids: Vec<u32>,
    pub batch: usize,
    pub seq_len: usize,
    /// `[B·T]` rotary positions
    pub positions: Vec<u32>,
    /// `[B·T]`, false for padding
    pub valid: Vec<bool>,
    /// `[B·T]` sample ids when several samples are packed into one row.
    pub segments: Option<Vec<u32>>,
}

impl Batch {
    /// Right-pad `seqs` to the longest with `pad_id`. Positions count real tokens from 0,
    /// as transformers' `cumsum(attention_mask) - 1`.
    pub fn right_padded(seqs: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if seqs.is_empty() || t == 0 {
            return Err(ModelError::Invalid("empty batch".into()));
        }
        let mut ids = Vec::with_capacity(seqs.len() * t);
        let mut positions = Vec::with_capacity(seqs.len() * t);
        let mut valid = Vec::with_capacity(seqs.len() * t);
        for s in seqs {
            for j in 0..t {
                ids.push(s.get(j).copied().unwrap_or(pad_id));
                positions.push(j.min(s.len().saturating_sub(1)) as u32);
                valid.push(j < s.len());
            }
        }
        Ok(Batch { ids, batch: seqs.len(), seq_len: t, positions, valid, segments: None })
    }

    /// One unpadded sequence.
    pub fn single(ids: &[u32], first_position: u32) -> Self {
        Batch {
            ids: ids.to_vec(),
            batch: 1,
            seq_len: ids.len(),
            positions: (0..ids.len() as u32).map(|p| p + first_position).collect(),
            valid: vec![true; ids.len()],
            segments: None,
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    /// The attention mask of this batch on its own (no KV cache).
    pub fn attention_mask(&self) -> AttentionMask {
        AttentionMask {
            batch: self.batch,
            q_len: self.seq_len,
            kv_len: self.seq_len,
            q_offset: 0,
            key_valid: if self.valid.iter().all(|&v| v) { None } else { Some(self.valid.clone()) },
            segments: self.segments.clone(),
            dropout: None,
        }
    }
}

/// Keys and values of earlier positions, per layer, for incremental decoding.
pub struct KvCache<B: Backend> {
    /// per layer `[B, capacity, KV, D]`
    pub k: Vec<B::Tensor>,
    pub v: Vec<B::Tensor>,
    /// `[B, capacity]` validity of cached positions
    valid: Vec<bool>,
    batch: usize,
    capacity: usize,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(be: &B, cfg: &QwenConfig, batch: usize, capacity: usize) -> Result<Self> {
        let shape = [batch, capacity, cfg.num_kv_heads, cfg.head_dim];
        let mut k = Vec::with_capacity(cfg.num_layers);
        let mut v = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            k.push(be.zeros(&shape)?);
            v.push(be.zeros(&shape)?);
        }
        Ok(KvCache { k, v, valid: vec![false; batch * capacity], batch, capacity, len: 0 })
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget positions from `len` on (e.g. to re-use a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A Qwen causal LM on a backend.
pub struct QwenModel<B: Backend> {
    pub config: QwenConfig,
    /// `[V, hidden]`
    pub embed_tokens: B::Tensor,
    pub layers: Vec<DecoderLayer<B>>,
    /// `[hidden]`
    pub norm: B::Tensor,
    /// `[V, hidden]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<B::Tensor>,
    /// Rotary tables for the positions in use.
    pub rope: RopeTables<B>,
}

/// Positions the rotary tables cover when a model is built; most runs never need more.
pub const INITIAL_ROPE_POSITIONS: usize = 4096;

/// Rotary tables `[len, D/2]` (f32 cos and sin) for positions `0..len`: built for the
/// positions in use and grown (doubling) when a longer sequence arrives, never for all of
/// `max_position_embeddings` up front — Qwen2.5 declares 131,072 positions and a hostile
/// config 2^32, which would be gigabytes of tables nobody reads.
pub struct RopeTables<B: Backend> {
    rows: std::sync::RwLock<RopeRows<B>>,
}

/// The tables as built: `cos`, `sin` are `[len, D/2]`.
pub struct RopeRows<B: Backend> {
    pub len: usize,
    pub cos: B::Tensor,
    pub sin: B::Tensor,
}

impl<B: Backend> RopeTables<B> {
    fn new(be: &B, cfg: &QwenConfig) -> Result<Self> {
        let rows = Self::build(be, cfg, cfg.max_position_embeddings.min(INITIAL_ROPE_POSITIONS))?;
        Ok(RopeTables { rows: std::sync::RwLock::new(rows) })
    }

    fn build(be: &B, cfg: &QwenConfig, len: usize) -> Result<RopeRows<B>> {
        let (cos, sin) = rope_tables(cfg.rope_theta, cfg.head_dim, len)?;
        let shape = [len, cfg.head_dim / 2];
        Ok(RopeRows { len, cos: be.upload(HostData::F32(&cos), &shape)?, sin: be.upload(HostData::F32(&sin), &shape)? })
    }

    /// Tables covering every position in `positions`, grown first if needed; a position at
    /// or past `max_position_embeddings` is an error.
    pub fn covering(&self, be: &B, cfg: &QwenConfig, positions: &[u32]) -> Result<std::sync::RwLockReadGuard<'_, RopeRows<B>>> {
        let Some(&last) = positions.iter().max() else {
            return Ok(self.rows.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        };
        let needed = last as usize + 1;
        if needed > cfg.max_position_embeddings {
            return Err(ModelError::Invalid(format!("position {last} exceeds max_position_embeddings {}", cfg.max_position_embeddings)));
        }
        loop {
            let rows = self.rows.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if rows.len >= needed {
                return Ok(rows);
            }
            drop(rows);
            let mut rows = self.rows.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if rows.len < needed {
                let len = needed.max(rows.len.saturating_mul(2)).min(cfg.max_position_embeddings);
                *rows = Self::build(be, cfg, len)?;
            }
        }
    }
}

/// Rotary tables as HF builds them: `inv_freq = 1 / θ^(2i/D)` and `freq = pos · inv_freq` in
/// f32, then cos/sin (accurately, here in f64 before rounding). Kept in f32: bf16 tables lose
/// positions above 256. Memory is reserved first, so a length beyond what the machine holds
/// is an error naming the size rather than an abort.
pub fn rope_tables(theta: f64, head_dim: usize, max_pos: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
    let too_big = || ModelError::Invalid(format!("rotary tables for {max_pos} positions × {half} frequencies do not fit in memory"));
    let elements = max_pos.checked_mul(half).ok_or_else(too_big)?;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    cos.try_reserve_exact(elements).map_err(|_| too_big())?;
    sin.try_reserve_exact(elements).map_err(|_| too_big())?;
    for p in 0..max_pos {
        for &f in &inv_freq {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((cos, sin))
}

impl<B: Backend> QwenModel<B> {
    /// Load `config.json` and the weights of a Hugging Face model folder onto `be`.
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        let config = QwenConfig::from_file(&dir.join("config.json"))?;
        let store = SafetensorsStore::open_model_folder(dir)?;
        Self::from_store(be, config, &store)
    }

    /// Build the model from an opened checkpoint, reporting every missing, unexpected or
    /// mis-shaped tensor at once.
    pub fn from_store(be: &B, config: QwenConfig, store: &SafetensorsStore) -> Result<Self> {
        let tied = config.tie_word_embeddings;
        // A tied checkpoint may still carry a copy of lm_head.weight; transformers ignores it.
        store.check(&config.expected_tensors(), |name| tied && name == "lm_head.weight")?;
        let load = |name: &str| -> Result<B::Tensor> {
            let t = store.read(name)?;
            Ok(be.upload(t.as_host_data(), &t.shape)?)
        };
        // Frozen-weight matrices: the backend may keep them narrower (bf16 on the CPU in bf16 mode).
        let load_weight = |name: &str| -> Result<B::Tensor> {
            let t = store.read(name)?;
            Ok(match t.data {
                // Handed over, not copied: the backend may keep this very vector.
                HostTensorData::BF16(data) => be.upload_weight_bf16(data, &t.shape)?,
                _ => be.upload_weight(t.as_host_data(), &t.shape)?,
            })
        };
        let linear = |prefix: &str, proj: Proj| -> Result<Linear<B>> {
            let prefix = format!("{prefix}.{}", proj.module());
            Ok(Linear {
                weight: load_weight(&format!("{prefix}.weight"))?,
                bias: if proj.has_bias(&config) { Some(load(&format!("{prefix}.bias"))?) } else { None },
                lora: None,
            })
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("model.layers.{l}");
            layers.push(DecoderLayer {
                input_layernorm: load(&format!("{p}.input_layernorm.weight"))?,
                linears: Proj::try_map(|proj| linear(&p, proj))?,
                q_norm: if config.qk_norm { Some(load(&format!("{p}.self_attn.q_norm.weight"))?) } else { None },
                k_norm: if config.qk_norm { Some(load(&format!("{p}.self_attn.k_norm.weight"))?) } else { None },
                post_attention_layernorm: load(&format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        Ok(QwenModel {
            embed_tokens: load_weight("model.embed_tokens.weight")?,
            layers,
            norm: load("model.norm.weight")?,
            lm_head: if tied { None } else { Some(load_weight("lm_head.weight")?) },
            rope: RopeTables::new(be, &config)?,
            config,
        })
    }

    /// A model with random weights drawn as transformers initialises Qwen (normal, std 0.02;
    /// norm weights 1; biases 0) — for benchmarks and memory checks at real shapes without a
    /// checkpoint. Deterministic for a seed.
    pub fn random(be: &B, config: QwenConfig, seed: u64) -> Result<Self> {
        let mut rng = qtrain_core::rng::Rng::new(seed);
        let mut normal = |shape: &[usize]| -> Result<B::Tensor> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.02) as f32).collect();
            Ok(be.upload_weight(HostData::F32(&data), shape)?)
        };
        Self::random_with(be, config, &mut normal)
    }

    /// Random weights for benchmarks at published shapes (`--shape`): drawn directly in bf16
    /// (the dtype of the released checkpoints), in parallel, about 0.2 s per billion parameters
    /// on 2 cores — the 7.6 B values of Qwen2.5-7B took minutes drawn one by one in f32. Each
    /// value is a sum of four uniforms (Irwin–Hall, close to normal) scaled to std 0.02; every
    /// tensor has its own stream, so the result is deterministic for a seed and thread count.
    pub fn random_bf16(be: &B, config: QwenConfig, seed: u64) -> Result<Self> {
        let mut index = 0u64;
        let mut draw = |shape: &[usize]| -> Result<B::Tensor> {
            index += 1;
            let data = crate::random::bf16_normalish(shape.iter().product(), 0.02, seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            Ok(be.upload_weight_bf16(data, shape)?)
        };
        Self::random_with(be, config, &mut draw)
    }

    /// The model with norm weights 1, biases 0 and every matrix from `weight(shape)`.
    fn random_with(be: &B, config: QwenConfig, weight: &mut dyn FnMut(&[usize]) -> Result<B::Tensor>) -> Result<Self> {
        let ones = |n: usize| -> Result<B::Tensor> { Ok(be.upload(HostData::F32(&vec![1.0; n]), &[n])?) };
        let (h, d) = (config.hidden_size, config.head_dim);
        let mut layers = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            let mut linear = |proj: Proj| -> Result<Linear<B>> {
                let [o, i] = proj.shape(&config);
                let bias = proj.has_bias(&config);
                Ok(Linear { weight: weight(&[o, i])?, bias: if bias { Some(be.zeros(&[o])?) } else { None }, lora: None })
            };
            layers.push(DecoderLayer {
                input_layernorm: ones(h)?,
                linears: Proj::try_map(&mut linear)?,
                q_norm: if config.qk_norm { Some(ones(d)?) } else { None },
                k_norm: if config.qk_norm { Some(ones(d)?) } else { None },
                post_attention_layernorm: ones(h)?,
            });
        }
        Ok(QwenModel {
            embed_tokens: weight(&[config.vocab_size, h])?,
            layers,
            norm: ones(h)?,
            lm_head: if config.tie_word_embeddings { None } else { Some(weight(&[config.vocab_size, h])?) },
            rope: RopeTables::new(be, &config)?,
            config,
        })
    }

    /// The LM head matrix `[V, hidden]` (the embedding table when tied).
    pub fn lm_head_weight(&self) -> &B::Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Run the decoder over `batch` and return the final-normed hidden states `[B·T, hidden]`.
    /// With a cache, the batch continues the cached sequence (its positions must follow on) and
    /// its keys/values are appended.
    pub fn forward_hidden(&self, be: &B, batch: &Batch, mut cache: Option<&mut KvCache<B>>) -> Result<B::Tensor> {
        let cfg = &self.config;
        let (b, t) = (batch.batch, batch.seq_len);
        if batch.ids.len() != b * t || batch.positions.len() != b * t || batch.valid.len() != b * t {
            return Err(ModelError::Invalid(format!("batch arrays do not all have B·T = {} entries", b * t)));
        }
        let rope = self.rope.covering(be, cfg, &batch.positions)?;
        let mask = match cache.as_deref_mut() {
            None => batch.attention_mask(),
            Some(c) => {
                if c.batch != b || c.len + t > c.capacity {
                    return Err(ModelError::Invalid(format!(
                        "KV cache (batch {}, {} of {} used) cannot take {t} more positions for batch {b}",
                        c.batch, c.len, c.capacity
                    )));
                }
                if batch.segments.is_some() {
                    return Err(ModelError::Invalid("packed batches cannot use a KV cache".into()));
                }
                for bi in 0..b {
                    for j in 0..t {
                        c.valid[bi * c.capacity + c.len + j] = batch.valid[bi * t + j];
                    }
                }
                let kv_len = c.len + t;
                let mut kv_valid = Vec::with_capacity(b * kv_len);
                for bi in 0..b {
                    kv_valid.extend_from_slice(&c.valid[bi * c.capacity..bi * c.capacity + kv_len]);
                }
                AttentionMask { batch: b, q_len: t, kv_len, q_offset: c.len, key_valid: Some(kv_valid), segments: None, dropout: None }
            }
        };
        let mut x = be.embedding(&self.embed_tokens, &batch.ids)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| (&mut c.k[l], &mut c.v[l], c.len));
            x = layer_forward(be, cfg, layer, (&rope.cos, &rope.sin), x, batch, &mask, kv, LayerPass::Output, None)?
                .0
                .expect("output requested");
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(be.rms_norm(&x, &self.norm, cfg.rms_norm_eps as f32)?)
    }

    /// Logits `[rows.len(), V]` for selected rows of the hidden states.
    pub fn logits_for_rows(&self, be: &B, hidden: &B::Tensor, rows: &[usize]) -> Result<B::Tensor> {
        let selected = be.gather_rows(hidden, rows)?;
        Ok(be.linear(&selected, self.lm_head_weight(), None, None)?)
    }

    /// Logits for every position `[B·T, V]` — for tests and short probes only: training and
    /// generation never materialise all of them.
    pub fn forward_logits(&self, be: &B, batch: &Batch) -> Result<B::Tensor> {
        let hidden = self.forward_hidden(be, batch, None)?;
        Ok(be.linear(&hidden, self.lm_head_weight(), None, None)?)
    }

    /// Number of elements in all base parameters (tied embeddings once).
    pub fn num_parameters(&self) -> usize {
        self.config.num_parameters()
    }

    /// Remove every LoRA adapter.
    pub fn clear_lora(&mut self) {
        for layer in &mut self.layers {
            for (_, lin) in layer.linears_mut() {
                lin.lora = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtrain_core::{CpuBackend, DType};

    fn tiny_config(max_position_embeddings: u64) -> QwenConfig {
        let json = format!(
            r#"{{"architectures":["Qwen3ForCausalLM"],"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"vocab_size":16,"max_position_embeddings":{max_position_embeddings}}}"#
        );
        QwenConfig::from_json_str(&json, Path::new("config.json")).unwrap()
    }

    #[test]
    fn rotary_tables_cover_the_positions_in_use_not_the_declared_maximum() {
        // Issue 16 D: 10^8 declared positions built 6.4 GB of tables at load.
        let be = CpuBackend::new();
        let cfg = tiny_config(100_000_000);
        let model = QwenModel::random(&be, cfg.clone(), 1).unwrap();
        assert_eq!(model.rope.covering(&be, &cfg, &[3, 0]).unwrap().len, INITIAL_ROPE_POSITIONS);
        let grown = model.rope.covering(&be, &cfg, &[8_999]).unwrap();
        assert_eq!(grown.len, 9_000);
        let (cos, sin) = rope_tables(cfg.rope_theta, cfg.head_dim, 9_000).unwrap();
        assert_eq!((be.download(&grown.cos).unwrap(), be.download(&grown.sin).unwrap()), (cos, sin));
        drop(grown);
        assert_eq!(model.rope.covering(&be, &cfg, &[9_000]).unwrap().len, 18_000, "grows by doubling");
        let err = model.rope.covering(&be, &cfg, &[u32::MAX]).err().expect("refused").to_string();
        assert!(err.contains("position 4294967295 exceeds max_position_embeddings 100000000"), "{err}");
        let small = tiny_config(10);
        let model = QwenModel::random(&be, small.clone(), 1).unwrap();
        assert_eq!(model.rope.covering(&be, &small, &[9]).unwrap().len, 10);
        assert!(model.rope.covering(&be, &small, &[10]).is_err());
    }

    /// `qtrain bench --shape` (issue 12 item 2): the matrices come in bf16, the dtype of the
    /// released checkpoints (f32 weights ran FP32 GEMMs and doubled the memory), at std ≈ 0.02.
    #[test]
    fn random_bf16_models_have_bf16_matrices() {
        let mut cfg = crate::shapes::shape("qwen2.5-7b").unwrap();
        (cfg.num_layers, cfg.vocab_size) = (1, 512);
        let be = CpuBackend::bf16(true);
        let model = QwenModel::random_bf16(&be, cfg, 3).unwrap();
        let layer = &model.layers[0];
        for (name, lin) in layer.linears() {
            assert_eq!(lin.weight.dtype(), DType::BF16, "{name}");
        }
        assert_eq!(model.embed_tokens.dtype(), DType::BF16);
        let w = be.download(&layer.linear(Proj::Down).weight).unwrap();
        let std = (w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - 0.02).abs() < 5e-4, "std {std}");
    }
}
