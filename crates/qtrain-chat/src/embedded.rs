//! The embedded default model: a tiny Qwen2.5-architecture model that `qtrain train` and
//! `qtrain infer` use when no `--model` is given, so the whole pipeline runs on a fresh machine
//! in minutes with nothing to download.
//!
//! It is built deterministically (fixed seed, transformers' initialisation: normal std 0.02,
//! norm weights 1) and written as an ordinary Hugging Face folder, so every other code path is
//! the one real models take. Its tokenizer is the *reduced* Qwen tokenizer: the real Qwen
//! byte-level BPE truncated to its first 4096 merges ranks (every string stays encodable — the
//! first 256 ranks are the bytes), with Qwen's 26 added tokens renumbered from 4096
//! (`tools/build_qwen_tokenizer.py --reduced 4096`). The chat template is Qwen2.5's, with its
//! default system prompt replaced by the neutral "You are a helpful assistant." (a model that is
//! about to learn a new identity should not be told it is Qwen). The weights are random: the
//! model only knows what fine-tuning teaches it. This module must not train.

use std::path::{Path, PathBuf};

use qtrain_core::{CpuBackend, TensorInfo};
use qtrain_model::safetensors_io::{write_atomic, write_safetensors, HostTensor, HostTensorData};
use qtrain_model::{QwenConfig, QwenModel};

use crate::{ChatError, Result};

/// Folder name under the cache directory; bump the suffix whenever the model changes.
pub const EMBEDDED_MODEL_NAME: &str = "qwen2.5-tiny-random-v1";
const SEED: u64 = 20_251_123;

const CONFIG_JSON: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 256,
  "intermediate_size": 768,
  "num_hidden_layers": 4,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "vocab_size": 4160,
  "max_position_embeddings": 2048,
  "rope_theta": 1000000.0,
  "rms_norm_eps": 1e-06,
  "tie_word_embeddings": true,
  "use_sliding_window": false,
  "hidden_act": "silu",
  "bos_token_id": 4096,
  "eos_token_id": 4098,
  "pad_token_id": 4096,
  "torch_dtype": "float32"
}
"#;

const GENERATION_CONFIG_JSON: &str = r#"{
  "bos_token_id": 4096,
  "eos_token_id": [4098, 4096],
  "pad_token_id": 4096,
  "do_sample": false
}
"#;

const TOKENIZER_JSON: &[u8] = include_bytes!("../assets/qwen-reduced/tokenizer.json");
const TOKENIZER_CONFIG_JSON: &[u8] = include_bytes!("../assets/qwen-reduced/tokenizer_config.json");

/// Where the embedded model lives: `$QTRAIN_HOME`, else `$XDG_CACHE_HOME/qtrain`, else
/// `~/.cache/qtrain`, else `./.qtrain` — followed by [`EMBEDDED_MODEL_NAME`].
pub fn default_location() -> PathBuf {
    let base = std::env::var_os("QTRAIN_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("qtrain")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("qtrain")))
        .unwrap_or_else(|| PathBuf::from(".qtrain"));
    base.join(EMBEDDED_MODEL_NAME)
}

/// Make sure the embedded model folder exists at `dir` (building it if not) and return `dir`.
/// The folder is assembled under a temporary name and renamed into place, so an interrupted
/// build never leaves a half-written model behind.
pub fn ensure_embedded_model(dir: &Path) -> Result<PathBuf> {
    if dir.join("model.safetensors").is_file() && dir.join("config.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |e: std::io::Error, p: &Path| ChatError::Invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
    let tmp = parent.join(format!(".{}.tmp-{}", dir.file_name().and_then(|s| s.to_str()).unwrap_or("model"), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    let build = || -> Result<()> {
        let config = QwenConfig::from_json_str(CONFIG_JSON, Path::new("embedded config.json"))?;
        let be = CpuBackend::new();
        let model = QwenModel::random(&be, config.clone(), SEED)?;
        let mut tensors = Vec::new();
        let mut push = |name: String, t: &qtrain_core::CpuTensor| {
            tensors.push((name, HostTensor { shape: t.shape().to_vec(), data: HostTensorData::F32(t.data().to_vec()) }));
        };
        push("model.embed_tokens.weight".into(), &model.embed_tokens);
        push("model.norm.weight".into(), &model.norm);
        for (l, layer) in model.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            push(format!("{p}.input_layernorm.weight"), &layer.input_layernorm);
            push(format!("{p}.post_attention_layernorm.weight"), &layer.post_attention_layernorm);
            for (name, lin) in layer.linears() {
                push(format!("{p}.{name}.weight"), &lin.weight);
                if let Some(b) = &lin.bias {
                    push(format!("{p}.{name}.bias"), b);
                }
            }
        }
        write_safetensors(&tmp.join("model.safetensors"), &tensors, None)?;
        write_atomic(&tmp.join("config.json"), CONFIG_JSON.as_bytes())?;
        write_atomic(&tmp.join("generation_config.json"), GENERATION_CONFIG_JSON.as_bytes())?;
        write_atomic(&tmp.join("tokenizer.json"), TOKENIZER_JSON)?;
        write_atomic(&tmp.join("tokenizer_config.json"), TOKENIZER_CONFIG_JSON)?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(dir.to_path_buf()),
        // Another process finished the same build first: its folder is identical.
        Err(_) if dir.join("model.safetensors").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir.to_path_buf())
        }
        Err(e) => Err(io(e, dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelFolder;

    #[test]
    fn embedded_model_is_a_loadable_deterministic_hf_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let a = ensure_embedded_model(&tmp.path().join("a")).unwrap();
        let b = ensure_embedded_model(&tmp.path().join("b")).unwrap();
        let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert_eq!(bytes(&a), bytes(&b), "the embedded model must be bit-for-bit deterministic");
        let be = CpuBackend::new();
        let folder = ModelFolder::load(&be, &a).unwrap();
        assert_eq!(folder.model.config.num_layers, 4);
        assert_eq!(folder.tokenizer.token_to_id("<|im_end|>"), Some(4098));
        assert!(folder.stop_ids().contains(&4098));
        let prompt = folder
            .template
            .render(&qtrain_data::RenderRequest {
                add_generation_prompt: true,
                ..qtrain_data::RenderRequest::new(&serde_json::json!([{"role": "user", "content": "hi"}]))
            })
            .unwrap();
        assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"), "{prompt}");
        // Calling again re-uses the folder.
        assert_eq!(ensure_embedded_model(&a).unwrap(), a);
    }
}
