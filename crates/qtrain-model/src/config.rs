//! The Qwen model configuration, read from a Hugging Face `config.json`.
//!
//! Accepts `Qwen2ForCausalLM` (Qwen2, Qwen2.5) and `Qwen3ForCausalLM` (dense Qwen3), in both the
//! transformers 4 layout (`rope_theta`, `rope_scaling`) and the transformers 5 layout
//! (`rope_parameters`). Anything that would change the computation and that we do not
//! implement — sliding-window attention, rope scaling, another activation — is refused here,
//! so no later code runs a silently different model. It must not read weights.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{read_json, ModelError, Result};

/// Which Qwen generation a config describes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5: q/k/v have a bias, o has none, head_dim = hidden / heads.
    Qwen2,
    /// Qwen3: per-head q/k RMSNorm, explicit head_dim, one `attention_bias` flag for q/k/v/o.
    Qwen3,
}

impl Architecture {
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// Whether ms-swift's `--model_type` names this family: its model types are family names
    /// with variants (`qwen2_5`, `qwen2_5_instruct`, `qwen3`, `qwen3_thinking`, …; `-` and `.`
    /// read as `_`).
    pub fn accepts_model_type(self, model_type: &str) -> bool {
        let normalized = model_type.to_ascii_lowercase().replace(['-', '.'], "_");
        match self {
            Architecture::Qwen2 => normalized.starts_with("qwen2"),
            Architecture::Qwen3 => normalized.starts_with("qwen3"),
        }
    }
}

/// The resolved configuration the model code runs on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QwenConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias.
    pub qkv_bias: bool,
    /// The o projection carries a bias (Qwen3 with `attention_bias: true`).
    pub o_bias: bool,
    /// Per-head RMSNorm on q and k before rotary (Qwen3).
    pub qk_norm: bool,
    /// `torch_dtype` / `dtype` of the checkpoint, if stated.
    pub torch_dtype: Option<String>,
    /// `attention_dropout`: dropout on the attention probabilities in training (0 when absent;
    /// never applied in evaluation or inference).
    pub attention_dropout: f64,
}

/// The most decoder layers a config may declare: 100× the deepest released Qwen (94).
const MAX_LAYERS: usize = 10_000;

/// The most parameters a config may describe: 10 T, 20 TB in bf16 — beyond any machine.
const MAX_PARAMETERS: u64 = 10_000_000_000_000;

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    layer_types: Option<Vec<String>>,
    hidden_act: Option<String>,
    torch_dtype: Option<String>,
    attention_dropout: Option<f64>,
    dtype: Option<String>,
}

/// The seven linear projections of a decoder layer: the one table of their checkpoint
/// names, module paths, shapes and biases. Every per-layer list of linears (loading, random
/// init, expected tensors, gradients, trainable parameters, checkpoints, LoRA targets and
/// dropout streams) follows [`Proj::ALL`]'s order, and arrays of them are indexed by
/// [`Proj::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The checkpoint's (and PEFT's `target_modules`) name: `q_proj`.
    pub const fn name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }

    /// The module path inside a decoder layer: `self_attn.q_proj`, `mlp.gate_proj`.
    pub const fn module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }

    /// Position in [`Proj::ALL`] (and in every per-layer array of linears).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// `[out, in]` of the weight.
    pub fn shape(self, cfg: &QwenConfig) -> [usize; 2] {
        let (h, i, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
        match self {
            Proj::Q => [q, h],
            Proj::K | Proj::V => [kv, h],
            Proj::O => [h, q],
            Proj::Gate | Proj::Up => [i, h],
            Proj::Down => [h, i],
        }
    }

    /// [`shape`](Self::shape) in u64, `None` if a width overflows (config validation only).
    fn shape_checked(self, cfg: &QwenConfig) -> Option<[u64; 2]> {
        let (h, i) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
        let q = (cfg.num_heads as u64).checked_mul(cfg.head_dim as u64)?;
        let kv = (cfg.num_kv_heads as u64).checked_mul(cfg.head_dim as u64)?;
        Some(match self {
            Proj::Q => [q, h],
            Proj::K | Proj::V => [kv, h],
            Proj::O => [h, q],
            Proj::Gate | Proj::Up => [i, h],
            Proj::Down => [h, i],
        })
    }

    /// Whether the checkpoint holds a bias (`qkv_bias` for q/k/v, `o_bias` for o).
    pub fn has_bias(self, cfg: &QwenConfig) -> bool {
        match self {
            Proj::Q | Proj::K | Proj::V => cfg.qkv_bias,
            Proj::O => cfg.o_bias,
            Proj::Gate | Proj::Up | Proj::Down => false,
        }
    }

    /// `f` for each projection, in order; the first error stops.
    pub fn try_map<T, E>(mut f: impl FnMut(Proj) -> std::result::Result<T, E>) -> std::result::Result<[T; 7], E> {
        let mut out = Vec::with_capacity(7);
        for p in Proj::ALL {
            out.push(f(p)?);
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("seven projections")))
    }
}

impl QwenConfig {
    /// Read `config.json` from a model folder (or the file itself).
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawConfig = read_json(path)?;
        Self::from_raw(raw, path)
    }

    /// Parse config JSON text; `path` is only used to name the source in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })?;
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Self> {
        let unsupported = |detail: String| ModelError::Unsupported { path: path.to_path_buf(), detail };
        let invalid = |detail: String| ModelError::Config { path: path.to_path_buf(), detail };
        let arch_name = raw.architectures.as_ref().and_then(|a| a.first().cloned());
        let architecture = match (arch_name.as_deref(), raw.model_type.as_deref()) {
            (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Architecture::Qwen2,
            (Some("Qwen3ForCausalLM"), _) | (None, Some("qwen3")) => Architecture::Qwen3,
            (a, m) => {
                return Err(unsupported(format!(
                    "architecture {:?} (model_type {:?}); qtrain runs Qwen2ForCausalLM (Qwen2, Qwen2.5) and Qwen3ForCausalLM (dense Qwen3)",
                    a.unwrap_or("<none>"),
                    m.unwrap_or("<none>")
                )))
            }
        };
        let need = |v: Option<usize>, name: &str| v.filter(|&x| x > 0).ok_or_else(|| invalid(format!("`{name}` is missing or zero")));
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(invalid(format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}")));
        }
        let head_dim = match (architecture, raw.head_dim) {
            (Architecture::Qwen3, Some(d)) if d > 0 => d,
            (_, Some(d)) if d > 0 && d == hidden_size / num_heads => d,
            (Architecture::Qwen2, Some(d)) => {
                return Err(unsupported(format!(
                    "head_dim {d} differs from hidden_size / num_attention_heads = {} in a Qwen2 model",
                    hidden_size / num_heads
                )))
            }
            _ => {
                if hidden_size % num_heads != 0 {
                    return Err(invalid(format!("hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(invalid(format!("head_dim {head_dim} must be even for rotary embeddings")));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(unsupported("use_sliding_window is true; sliding-window attention is not implemented (set it to false to use full attention, as Qwen2.5 releases do)".into()));
        }
        if let Some(types) = &raw.layer_types {
            if let Some(t) = types.iter().find(|t| t.as_str() != "full_attention") {
                return Err(unsupported(format!("layer_types contains {t:?}; only full_attention is implemented")));
            }
        }
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(unsupported(format!("hidden_act {act:?}; Qwen MLPs use silu")));
            }
        }
        // transformers 5 moved rope_theta / rope_scaling into `rope_parameters`.
        let mut rope_theta = raw.rope_theta;
        for (field, params) in [("rope_scaling", &raw.rope_scaling), ("rope_parameters", &raw.rope_parameters)] {
            match params {
                None | Some(Value::Null) => {}
                Some(Value::Object(map)) => {
                    let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(Value::as_str).unwrap_or("default");
                    if kind != "default" {
                        return Err(unsupported(format!("{field} type {kind:?}; only the default rotary embedding is implemented")));
                    }
                    if let Some(t) = map.get("rope_theta").and_then(Value::as_f64) {
                        rope_theta = Some(t);
                    }
                }
                Some(other) => return Err(invalid(format!("`{field}` must be an object, got {other}"))),
            }
        }
        let qkv_bias = match architecture {
            Architecture::Qwen2 => true,
            Architecture::Qwen3 => raw.attention_bias.unwrap_or(false),
        };
        let o_bias = architecture == Architecture::Qwen3 && raw.attention_bias.unwrap_or(false);
        let cfg = QwenConfig {
            architecture,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta: rope_theta.unwrap_or(match architecture {
                Architecture::Qwen2 => 10_000.0,
                Architecture::Qwen3 => 1_000_000.0,
            }),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(32_768),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm: architecture == Architecture::Qwen3,
            torch_dtype: raw.torch_dtype.or(raw.dtype),
            attention_dropout: raw.attention_dropout.unwrap_or(0.0),
        };
        if !(0.0..1.0).contains(&cfg.attention_dropout) {
            return Err(invalid(format!("attention_dropout ({}) must be in [0, 1)", cfg.attention_dropout)));
        }
        // NaN fails these comparisons too.
        if cfg.rope_theta.is_nan() || cfg.rope_theta <= 0.0 || cfg.rms_norm_eps.is_nan() || cfg.rms_norm_eps <= 0.0 {
            return Err(invalid(format!("rope_theta ({}) and rms_norm_eps ({}) must be positive", cfg.rope_theta, cfg.rms_norm_eps)));
        }
        cfg.check_sizes().map_err(invalid)?;
        Ok(cfg)
    }

    /// Refuse sizes no model can have before anything is built from them: every later
    /// size (`expected_tensors`, weights, rotary tables, memory estimates) is computed
    /// from these, so they must not overflow or describe more than any machine holds.
    fn check_sizes(&self) -> std::result::Result<(), String> {
        if self.num_layers > MAX_LAYERS {
            return Err(format!("num_hidden_layers {} is more than {MAX_LAYERS} (the largest Qwen has 94)", self.num_layers));
        }
        // Positions travel as u32 (`Batch::positions`), so no longer context is addressable.
        if self.max_position_embeddings > u32::MAX as usize {
            return Err(format!(
                "max_position_embeddings {} is more than {} (positions are 32-bit)",
                self.max_position_embeddings,
                u32::MAX
            ));
        }
        match self.parameter_count() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            Some(n) => Err(format!("the sizes describe {n} parameters, more than {MAX_PARAMETERS} (no machine qtrain runs on holds them)")),
            None => Err("the sizes describe more parameters than a 64-bit count holds".to_string()),
        }
    }

    /// Parameter count in closed form with overflow checks (tied embeddings counted once).
    fn parameter_count(&self) -> Option<u64> {
        let (v, h, d) = (self.vocab_size as u64, self.hidden_size as u64, self.head_dim as u64);
        let mut per_layer = 2 * h + if self.qk_norm { 2 * d } else { 0 };
        for proj in Proj::ALL {
            let [o, i] = proj.shape_checked(self)?;
            let bias = if proj.has_bias(self) { o } else { 0 };
            per_layer = per_layer.checked_add(o.checked_mul(i)?)?.checked_add(bias)?;
        }
        let embeddings = v.checked_mul(h)?.checked_mul(if self.tie_word_embeddings { 1 } else { 2 })?;
        per_layer.checked_mul(self.num_layers as u64)?.checked_add(embeddings)?.checked_add(h)
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// `(module, [out, in])` of every linear layer in one decoder layer, in PEFT's module
    /// names ([`Proj::module`]), in [`Proj::ALL`] order.
    pub fn layer_linears(&self) -> [(&'static str, [usize; 2]); 7] {
        Proj::ALL.map(|p| (p.module(), p.shape(self)))
    }

    /// Every parameter tensor the checkpoint must hold, with its shape, in HF names.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab_size, self.hidden_size])];
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![self.hidden_size]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![self.hidden_size]));
            for proj in Proj::ALL {
                let (name, [o, i]) = (proj.module(), proj.shape(self));
                out.push((format!("{p}.{name}.weight"), vec![o, i]));
                if proj.has_bias(self) {
                    out.push((format!("{p}.{name}.bias"), vec![o]));
                }
            }
            if self.qk_norm {
                out.push((format!("{p}.self_attn.q_norm.weight"), vec![self.head_dim]));
                out.push((format!("{p}.self_attn.k_norm.weight"), vec![self.head_dim]));
            }
        }
        out.push(("model.norm.weight".to_string(), vec![self.hidden_size]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, self.hidden_size]));
        }
        out
    }

    /// Total parameter count (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        // `check_sizes` bounded the count when the config was read.
        self.parameter_count().unwrap_or(u64::MAX) as usize
    }

    /// Parameters in the matrices of all linear layers (including the LM head), the `N` of the
    /// `2·N` FLOPs-per-token rule.
    pub fn num_matmul_parameters(&self) -> usize {
        let per_layer: usize = self.layer_linears().iter().map(|(_, [o, i])| o * i).sum();
        per_layer * self.num_layers + self.vocab_size * self.hidden_size
    }
}

/// The message for a `--model` folder that does not exist; a hub id (`Qwen/Qwen2.5-7B-Instruct`)
/// gets the command that fetches it, since qtrain reads local folders only.
pub fn model_folder_not_found(dir: &std::path::Path) -> String {
    let name = dir.to_string_lossy();
    if looks_like_hub_id(&name) {
        format!(
            "{name}: no such model folder; it looks like a Hugging Face hub id and qtrain does not download: fetch it (`huggingface-cli download {name} --local-dir DIR`) and pass the folder"
        )
    } else {
        format!("{name}: no such model folder")
    }
}

/// `owner/name` with exactly one slash and no path-like parts (`.`, `..`, `~`, a leading `/`).
pub fn looks_like_hub_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..") && !name.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_name_their_family() {
        assert!(Architecture::Qwen2.accepts_model_type("qwen2_5") && Architecture::Qwen2.accepts_model_type("Qwen2.5-instruct"));
        assert!(Architecture::Qwen3.accepts_model_type("qwen3_thinking"));
        assert!(!Architecture::Qwen2.accepts_model_type("qwen3") && !Architecture::Qwen3.accepts_model_type("qwen2_5"));
        assert!(!Architecture::Qwen2.accepts_model_type("llama"));
    }

    #[test]
    fn the_projection_table_is_in_order_and_names_its_modules() {
        for (i, p) in Proj::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
            assert!(p.module().ends_with(p.name()), "{p:?}");
        }
        assert_eq!(crate::adapter::ALL_LINEAR, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
    }

    fn parse(json: &str) -> Result<QwenConfig> {
        QwenConfig::from_json_str(json, Path::new("config.json"))
    }

    const QWEN25_7B: &str = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":3584,"intermediate_size":18944,
        "num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,"vocab_size":152064,"rope_theta":1000000.0,
        "rms_norm_eps":1e-06,"max_position_embeddings":32768,"tie_word_embeddings":false,"use_sliding_window":false,
        "sliding_window":131072,"hidden_act":"silu","torch_dtype":"bfloat16","rope_scaling":null}"#;

    #[test]
    fn attention_dropout_is_read_and_checked() {
        assert_eq!(parse(QWEN25_7B).unwrap().attention_dropout, 0.0);
        let with =
            |p: &str| parse(&QWEN25_7B.replace(r#""rope_scaling":null"#, &format!(r#""rope_scaling":null,"attention_dropout":{p}"#)));
        assert_eq!(with("0.1").unwrap().attention_dropout, 0.1);
        let msg = with("1.5").unwrap_err().to_string();
        assert!(msg.contains("attention_dropout (1.5) must be in [0, 1)") && msg.contains("config.json"), "{msg}");
    }

    #[test]
    fn qwen25_7b_counts_match_the_published_size() {
        let c = parse(QWEN25_7B).unwrap();
        assert_eq!((c.architecture, c.head_dim, c.qkv_bias, c.o_bias, c.qk_norm), (Architecture::Qwen2, 128, true, false, false));
        // Qwen2.5-7B is published as 7.61 B parameters.
        let n = c.num_parameters() as f64 / 1e9;
        assert!((n - 7.615).abs() < 0.01, "{n}");
        // ≈ 7.07e9 matmul parameters incl. lm_head (REFERENCE.md).
        assert!((c.num_matmul_parameters() as f64 / 1e9 - 7.07).abs() < 0.01);
    }

    #[test]
    fn qwen3_reads_head_dim_and_transformers5_rope_parameters() {
        let c = parse(
            r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":28,
            "num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"tie_word_embeddings":true,
            "attention_bias":false,"rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"},"layer_types":["full_attention"]}"#,
        )
        .unwrap();
        assert_eq!((c.head_dim, c.q_dim(), c.kv_dim(), c.qk_norm, c.rope_theta), (128, 2048, 1024, true, 1e6));
        // Qwen3-0.6B is published as 0.6 B (0.44 B without embeddings).
        let n = c.num_parameters() as f64 / 1e9;
        assert!((n - 0.596).abs() < 0.01, "{n}");
        assert!(!c.expected_tensors().iter().any(|(n, _)| n == "lm_head.weight"));
    }

    #[test]
    fn refuses_what_it_cannot_run_with_a_clear_reason() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        let base = QWEN25_7B;
        assert!(err(&QWEN25_7B.replace("Qwen2ForCausalLM", "LlamaForCausalLM")).contains("LlamaForCausalLM"));
        assert!(err(&base.replace("\"use_sliding_window\":false", "\"use_sliding_window\":true").replace('\n', "")).contains("sliding"));
        assert!(err(&base.replace("\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}")).contains("yarn"));
        assert!(err(&base.replace("\"num_key_value_heads\":4", "\"num_key_value_heads\":5")).contains("multiple"));
        assert!(err(&base.replace("\"hidden_size\":3584,", "")).contains("hidden_size"));
        assert!(err("{\"architectures\": [\"Qwen2ForCausalLM\"], ").contains("malformed JSON"));
    }

    #[test]
    fn closed_form_parameter_count_matches_the_tensor_list() {
        for c in [parse(QWEN25_7B).unwrap(), crate::shapes::shape("qwen3-0.6b").unwrap()] {
            let listed: usize = c.expected_tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(c.num_parameters(), listed);
        }
    }

    #[test]
    fn impossible_sizes_are_refused_before_anything_is_built() {
        // Issue 16 C and D: a billion layers grew `expected_tensors` without bound; huge
        // widths overflowed; 2^60 positions could not be addressed.
        let err = |from: &str, to: &str| {
            let json = QWEN25_7B.replace(from, to);
            assert_ne!(json, QWEN25_7B);
            parse(&json).unwrap_err().to_string()
        };
        let e = err("\"num_hidden_layers\":28", "\"num_hidden_layers\":1000000000");
        assert_eq!(e, "config.json: invalid config: num_hidden_layers 1000000000 is more than 10000 (the largest Qwen has 94)");
        let e = err("\"max_position_embeddings\":32768", "\"max_position_embeddings\":1152921504606846976");
        assert!(e.contains("max_position_embeddings 1152921504606846976 is more than 4294967295"), "{e}");
        let e = err("\"vocab_size\":152064", "\"vocab_size\":100000000000");
        assert!(e.contains("parameters, more than 10000000000000"), "{e}");
        let e = err("\"intermediate_size\":18944", "\"intermediate_size\":18446744073709551615");
        assert!(e.contains("more parameters than a 64-bit count holds"), "{e}");
    }
}
