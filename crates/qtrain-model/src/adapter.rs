//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`, named exactly as
//! PEFT names them (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`), so
//! adapters move freely between qtrain, transformers + PEFT and vLLM.
//!
//! Loading reports every missing or unexpected key at once. This module must not train or
//! initialise adapters (fresh adapters are drawn by `QwenModel::init_lora` in `train.rs`); it
//! only reads, writes and attaches them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use qtrain_core::Backend;

use crate::config::{Proj, QwenConfig};
use crate::error::{read_json, ModelError, Result};
use crate::model::{LoraPair, QwenModel};
use crate::safetensors_io::{write_atomic, write_safetensors, HostTensor, SafetensorsStore};

/// Prefix PEFT puts before the base model's own module path.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The seven linear layers of a Qwen decoder layer, as `target_modules` names them.
pub const ALL_LINEAR: [&str; 7] = {
    let mut names = [""; 7];
    let mut i = 0;
    while i < 7 {
        names[i] = Proj::ALL[i].name();
        i += 1;
    }
    names
};

/// `target_modules`: a list of module-name suffixes, or one regular expression that must match
/// the whole module name (PEFT's rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Names(Vec<String>),
    Regex(String),
}

impl std::fmt::Display for TargetModules {
    /// `q_proj, v_proj` or `regex "…"`, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetModules::Names(names) => f.write_str(&names.join(", ")),
            TargetModules::Regex(re) => write!(f, "regex {re:?}"),
        }
    }
}

impl TargetModules {
    /// Whether the module `name` (e.g. `model.layers.3.mlp.up_proj`) is targeted.
    pub fn matches(&self, name: &str) -> Result<bool> {
        Ok(match self {
            TargetModules::Names(names) => names.iter().any(|t| name == t || name.ends_with(&format!(".{t}"))),
            TargetModules::Regex(re) => {
                let anchored = format!("^(?:{re})$");
                regex::Regex::new(&anchored).map_err(|e| ModelError::Invalid(format!("target_modules regex {re:?}: {e}")))?.is_match(name)
            }
        })
    }
}

/// `adapter_config.json` as PEFT writes it. Fields we do not interpret are kept and written
/// back unchanged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub layers_to_transform: Option<Value>,
    #[serde(default)]
    pub init_lora_weights: Value,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_peft_type() -> String {
    "LORA".into()
}
fn default_bias() -> String {
    "none".into()
}

impl AdapterConfig {
    /// A fresh config for a LoRA run, with `target_modules` as explicit names.
    pub fn new_lora(
        r: usize,
        lora_alpha: f64,
        lora_dropout: f64,
        targets: Vec<String>,
        use_rslora: bool,
        base_model: Option<String>,
    ) -> Self {
        AdapterConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: base_model,
            r,
            lora_alpha,
            lora_dropout,
            target_modules: TargetModules::Names(targets),
            bias: "none".into(),
            use_rslora,
            use_dora: false,
            fan_in_fan_out: false,
            modules_to_save: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            layers_to_transform: None,
            init_lora_weights: Value::Bool(true),
            inference_mode: true,
            extra: serde_json::Map::new(),
        }
    }

    /// Read and validate `adapter_config.json`; refuses adapter kinds we cannot apply.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: AdapterConfig = read_json(path)?;
        let unsupported = |detail: String| Err(ModelError::Unsupported { path: path.to_path_buf(), detail });
        if cfg.peft_type != "LORA" {
            return unsupported(format!("peft_type {:?}; only LORA adapters are supported", cfg.peft_type));
        }
        if cfg.use_dora {
            return unsupported("use_dora is true; DoRA adapters are not supported".into());
        }
        if cfg.bias != "none" {
            return unsupported(format!("bias {:?}; only bias \"none\" adapters are supported", cfg.bias));
        }
        if cfg.fan_in_fan_out {
            return unsupported("fan_in_fan_out is true (Conv1D-style weights); Qwen linears are not stored that way".into());
        }
        if cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return unsupported(format!(
                "modules_to_save {:?}; adapters that replace whole modules are not supported",
                cfg.modules_to_save.as_ref().unwrap()
            ));
        }
        if cfg.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()) {
            return unsupported("layers_to_transform is set; only adapters over all layers are supported".into());
        }
        if cfg.r == 0 {
            return Err(ModelError::Config { path: path.to_path_buf(), detail: "r must be positive".into() });
        }
        Ok(cfg)
    }

    /// `lora_alpha` for `module`, honouring `alpha_pattern` (plain module-name suffixes).
    pub fn alpha_for(&self, module: &str) -> f64 {
        self.alpha_pattern
            .iter()
            .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .map(|(_, &a)| a)
            .unwrap_or(self.lora_alpha)
    }

    /// The LoRA scale for `module` of rank `r`: α/r, or α/√r with rsLoRA (Kalajdzievski 2023).
    pub fn scale_for(&self, module: &str, r: usize) -> f64 {
        let alpha = self.alpha_for(module);
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

/// An adapter read from disk, keyed by module name (`model.layers.0.self_attn.q_proj`).
pub struct LoraAdapter {
    pub config: AdapterConfig,
    /// module → (A `[r, in]`, B `[out, r]`)
    pub weights: BTreeMap<String, (HostTensor, HostTensor)>,
}

/// Every linear module of the model, with `[out, in]`.
pub fn linear_modules(cfg: &QwenConfig) -> Vec<(String, [usize; 2])> {
    let mut out = vec![];
    for l in 0..cfg.num_layers {
        for (name, shape) in cfg.layer_linears() {
            out.push((format!("model.layers.{l}.{name}"), shape));
        }
    }
    out
}

impl LoraAdapter {
    /// Load a PEFT adapter folder and check it against the model's shapes.
    pub fn load(dir: &Path, model_cfg: &QwenConfig) -> Result<Self> {
        let config = AdapterConfig::from_file(&dir.join("adapter_config.json"))?;
        let weights_path = dir.join("adapter_model.safetensors");
        if !weights_path.is_file() {
            let hint = if dir.join("adapter_model.bin").is_file() { " (adapter_model.bin found: convert it to safetensors)" } else { "" };
            return Err(ModelError::io(
                &weights_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("adapter weights not found{hint}")),
            ));
        }
        let store = SafetensorsStore::open_file(&weights_path)?;
        let modules = linear_modules(model_cfg);
        let mut problems = vec![];
        // Shape misfits mean another base model: reported as one line, not one per module.
        let mut misfits: Vec<String> = vec![];
        let mut weights = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        // Map each stored key to (module, A|B); PEFT may keep the adapter name (".default").
        let mut by_module: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        for key in store.names() {
            let parsed = key.strip_prefix(PEFT_PREFIX).and_then(|rest| {
                for (suffix, slot) in
                    [(".lora_A.weight", 0), (".lora_B.weight", 1), (".lora_A.default.weight", 0), (".lora_B.default.weight", 1)]
                {
                    if let Some(m) = rest.strip_suffix(suffix) {
                        return Some((m.to_string(), slot));
                    }
                }
                None
            });
            match parsed {
                Some((module, slot)) if modules.iter().any(|(m, _)| *m == module) => {
                    by_module.entry(module).or_default()[slot] = Some(key.to_string());
                }
                _ => problems.push(format!("  unexpected tensor {key}")),
            }
        }
        let mut any_targeted = false;
        for (module, [out_dim, in_dim]) in &modules {
            let targeted = config.target_modules.matches(module)?;
            any_targeted |= targeted;
            let Some([a_key, b_key]) = by_module.get(module) else {
                if targeted {
                    problems.push(format!(
                        "  missing tensors {PEFT_PREFIX}{module}.lora_A.weight / lora_B.weight (module is in target_modules)"
                    ));
                }
                continue;
            };
            seen.insert(module.clone());
            if !targeted {
                problems.push(format!("  {module}: has LoRA tensors but is not in target_modules"));
                continue;
            }
            let (Some(a_key), Some(b_key)) = (a_key, b_key) else {
                problems.push(format!("  {module}: only one of lora_A / lora_B is present"));
                continue;
            };
            let (a, b) = (store.read(a_key)?, store.read(b_key)?);
            let r = a.shape.first().copied().unwrap_or(0);
            if a.shape != [r, *in_dim] || b.shape != [*out_dim, r] || r == 0 {
                misfits.push(format!("{module}: lora_A {:?} / lora_B {:?} do not fit its [{out_dim}, {in_dim}] weight", a.shape, b.shape));
                continue;
            }
            weights.insert(module.clone(), (a, b));
        }
        if !any_targeted {
            // PEFT refuses this too ("Target modules … not found in the base model").
            let path = dir.join("adapter_config.json");
            let detail = format!("target_modules ({}) match no linear layer of the model", config.target_modules);
            return Err(ModelError::Config { path, detail });
        }
        if let Some(example) = misfits.first() {
            let (base, more) = (config.base_model_name_or_path.clone(), misfits.len() - 1);
            return Err(ModelError::AdapterMismatch { path: dir.to_path_buf(), base, model: None, example: example.clone(), more });
        }
        if !problems.is_empty() {
            return Err(ModelError::Weights { path: weights_path, problems });
        }
        if weights.is_empty() {
            return Err(ModelError::Weights { path: weights_path, problems: vec!["  no LoRA tensors found".into()] });
        }
        Ok(LoraAdapter { config, weights })
    }

    /// Attach (replacing any existing adapter) to the model's linear layers.
    pub fn attach<B: Backend>(&self, be: &B, model: &mut QwenModel<B>) -> Result<()> {
        model.clear_lora();
        for (l, layer) in model.layers.iter_mut().enumerate() {
            for (name, lin) in layer.linears_mut() {
                let module = format!("model.layers.{l}.{name}");
                if let Some((a, b)) = self.weights.get(&module) {
                    let scale = self.config.scale_for(&module, a.shape[0]) as f32;
                    lin.lora =
                        Some(LoraPair { a: be.upload(a.as_host_data(), &a.shape)?, b: be.upload(b.as_host_data(), &b.shape)?, scale });
                }
            }
        }
        Ok(())
    }

    /// Write `adapter_config.json` and `adapter_model.safetensors` (atomically) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut tensors = Vec::with_capacity(self.weights.len() * 2);
        for (module, (a, b)) in &self.weights {
            tensors.push((format!("{PEFT_PREFIX}{module}.lora_A.weight"), a.clone()));
            tensors.push((format!("{PEFT_PREFIX}{module}.lora_B.weight"), b.clone()));
        }
        write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, None)?;
        let json = serde_json::to_string_pretty(&self.config).map_err(|e| ModelError::Invalid(e.to_string()))?;
        write_atomic(&dir.join("adapter_config.json"), json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_modules_follow_peft_matching_rules() {
        let names = TargetModules::Names(vec!["q_proj".into(), "mlp.up_proj".into()]);
        assert!(names.matches("model.layers.0.self_attn.q_proj").unwrap());
        assert!(names.matches("model.layers.0.mlp.up_proj").unwrap());
        assert!(!names.matches("model.layers.0.self_attn.k_proj").unwrap());
        assert!(!names.matches("model.layers.0.self_attn.xq_proj").unwrap());
        let re = TargetModules::Regex(r".*\.(q|v)_proj".into());
        assert!(re.matches("model.layers.1.self_attn.v_proj").unwrap());
        assert!(!re.matches("model.layers.1.self_attn.o_proj").unwrap());
        assert!(TargetModules::Regex("(".into()).matches("x").is_err());
    }

    #[test]
    fn scale_honours_rslora_and_alpha_pattern() {
        let mut c = AdapterConfig::new_lora(16, 32.0, 0.0, vec!["q_proj".into()], false, None);
        assert_eq!(c.scale_for("model.layers.0.self_attn.q_proj", 16), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scale_for("model.layers.0.self_attn.q_proj", 16), 8.0);
        c.alpha_pattern.insert("q_proj".into(), 4.0);
        assert_eq!(c.scale_for("model.layers.0.self_attn.q_proj", 16), 1.0);
    }
}
