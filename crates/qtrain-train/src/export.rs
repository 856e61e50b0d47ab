//! Merging a LoRA adapter into its base model (`swift export --merge_lora true`), with a
//! self-check of the result.
//!
//! For every adapted linear layer `W ← W + scale · B A` (scale `alpha/r`, or `alpha/√r` with
//! rsLoRA, per module with `alpha_pattern`): `B A` is a backend matmul in f32, the sum is done
//! in f32 on the host from the checkpoint's own weights, and the result is rounded once to the
//! checkpoint's dtype. Every other tensor is copied bit for bit. The output is a complete HF
//! model folder (one `model.safetensors`; sharded output for very large models is not written
//! yet) plus every non-weight file of the base folder (config, generation config, tokenizer,
//! chat template).
//!
//! Self-check: before the folder is moved into place, it is loaded back and its logits on a
//! probe batch are compared with the base model + adapter. The relative error
//! `max|merged − reference| / max|reference|` must stay under [`tolerance`] for the stored
//! dtype; otherwise the output is deleted and an error returned. This module must not train.

use std::path::{Path, PathBuf};

use qtrain_core::rng::Rng;
use qtrain_core::{Backend, DType, HostData};
use qtrain_model::safetensors_io::{write_safetensors, HostTensor, SafetensorsStore};
use qtrain_model::{Batch, LoraAdapter, QwenConfig, QwenModel};

use crate::checkpoint::{cast, copy_model_assets};
use crate::error::{Result, TrainError};

/// Largest accepted relative logit error of a merged model, by stored dtype. f32 merges are
/// exact up to summation order. A bf16 (f16) merge rounds `W + ΔW` to 8 (11) significant bits,
/// while base + adapter adds ΔW in f32 on top of the rounded W: each weight moves by up to half
/// an ulp (2⁻⁹ / 2⁻¹² relative). Measured on the tiny Qwen2 fixture with its r=4 adapter:
/// 6.1e-3 (bf16), 7.6e-4 (f16), 7e-7 (f32); the limits leave about 5× that.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-4,
        DType::F16 => 4e-3,
        DType::BF16 => 3e-2,
    }
}

/// What to merge and where.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub model: PathBuf,
    pub adapters: PathBuf,
    pub output_dir: PathBuf,
    /// dtype of the merged folder's weights (`--torch_dtype`); `None` keeps the base model's.
    pub dtype: Option<DType>,
}

/// The default output folder: `<adapters>-merged` (ms-swift's naming).
pub fn default_output_dir(adapters: &Path) -> PathBuf {
    let name = adapters.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "adapter".into());
    adapters.with_file_name(format!("{name}-merged"))
}

/// What a merge did.
#[derive(Clone, Debug)]
pub struct MergeReport {
    pub output_dir: PathBuf,
    pub dtype: DType,
    pub merged_modules: usize,
    pub copied_files: Vec<String>,
    pub max_relative_error: f64,
    pub tolerance: f64,
}

/// Merge `opts.adapters` into `opts.model`, write `opts.output_dir`, and self-check it.
pub fn merge_lora<B: Backend>(be: &B, opts: &MergeOptions) -> Result<MergeReport> {
    let out = &opts.output_dir;
    if out.exists() {
        return Err(TrainError::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "output folder already exists; choose another --output_dir or remove it",
            ),
        ));
    }
    let cfg = QwenConfig::from_file(&opts.model.join("config.json"))?;
    let adapter = LoraAdapter::load(&opts.adapters, &cfg).map_err(|e| e.for_model(&opts.model))?;
    let store = SafetensorsStore::open_model_folder(&opts.model)?;
    let tied = cfg.tie_word_embeddings;
    store.check(&cfg.expected_tensors(), |n| tied && n == "lm_head.weight")?;
    let stored = store.dtype("model.embed_tokens.weight")?;
    let dtype = opts.dtype.unwrap_or(stored);

    let mut tensors = Vec::new();
    let mut merged_modules = 0;
    for (name, _) in cfg.expected_tensors() {
        let t = store.read(&name)?;
        let module = name.strip_suffix(".weight").unwrap_or(&name);
        match adapter.weights.get(module) {
            Some((a, b)) => {
                let (r, out_dim, in_dim) = (a.shape[0], b.shape[0], a.shape[1]);
                let scale = adapter.config.scale_for(module, r) as f32;
                let a_t = be.upload(HostData::F32(&a.to_f32()), &[r, in_dim])?;
                let b_t = be.upload(HostData::F32(&b.to_f32()), &[out_dim, r])?;
                let delta = be.download(&be.matmul(&b_t, &a_t, false, false)?)?; // [out, in]
                let mut w = t.to_f32();
                for (w, d) in w.iter_mut().zip(&delta) {
                    *w += scale * d;
                }
                tensors.push((name, HostTensor { shape: t.shape, data: cast(w, dtype) }));
                merged_modules += 1;
            }
            None if t.dtype() != dtype => tensors.push((name, HostTensor { data: cast(t.to_f32(), dtype), shape: t.shape })),
            None => tensors.push((name, t)),
        }
    }
    if merged_modules != adapter.weights.len() {
        return Err(TrainError::Invalid(format!("merged {merged_modules} of the adapter's {} modules", adapter.weights.len())));
    }

    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    if let Some(parent) = tmp.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    let cleanup = |e: TrainError| {
        let _ = std::fs::remove_dir_all(&tmp);
        e
    };
    std::fs::create_dir(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    write_safetensors(&tmp.join("model.safetensors"), &tensors, None).map_err(|e| cleanup(e.into()))?;
    drop(tensors);
    let copied_files = copy_model_assets(&opts.model, &tmp).map_err(cleanup)?;
    if dtype != stored {
        set_config_dtype(&tmp.join("config.json"), dtype).map_err(cleanup)?;
    }

    let max_relative_error = self_check(be, &opts.model, &adapter, &tmp).map_err(cleanup)?;
    // A cast to a narrower dtype than the base rounds every weight too: the looser limit applies.
    let tol = tolerance(dtype).max(tolerance(stored));
    if max_relative_error.is_nan() || max_relative_error > tol {
        return Err(cleanup(TrainError::MergeCheck { error: max_relative_error, tolerance: tol, dtype: dtype.hf_name() }));
    }
    std::fs::rename(&tmp, out).map_err(|e| cleanup(TrainError::io(out, e)))?;
    Ok(MergeReport { output_dir: out.clone(), dtype, merged_modules, copied_files, max_relative_error, tolerance: tol })
}

/// Rewrites `config.json`'s `torch_dtype` (and transformers 5's `dtype`, where present) to the
/// dtype the merged weights were written in.
fn set_config_dtype(path: &Path, dtype: DType) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: malformed JSON: {e}", path.display())))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("torch_dtype".into(), dtype.hf_name().into());
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), dtype.hf_name().into());
        }
    }
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(qtrain_model::safetensors_io::write_atomic(path, &bytes)?)
}

/// Relative logit error of the merged folder against base + adapter on a fixed probe batch
/// (two rows of pseudo-random token ids, one right-padded).
fn self_check<B: Backend>(be: &B, base_dir: &Path, adapter: &LoraAdapter, merged_dir: &Path) -> Result<f64> {
    let mut reference = QwenModel::load(be, base_dir)?;
    adapter.attach(be, &mut reference)?;
    let vocab = reference.config.vocab_size as u64;
    let mut rng = Rng::new(0x5E1F_C4EC);
    let rows: Vec<Vec<u32>> = [24usize, 17].iter().map(|&n| (0..n).map(|_| rng.below(vocab) as u32).collect()).collect();
    let batch = Batch::right_padded(&rows, 0)?;
    let want = be.download(&reference.forward_logits(be, &batch)?)?;
    drop(reference);
    let merged = QwenModel::load(be, merged_dir)?;
    let got = be.download(&merged.forward_logits(be, &batch)?)?;
    // Compare real (non-padding) positions only.
    let v = vocab as usize;
    let (mut err, mut scale) = (0.0f64, 0.0f64);
    for (pos, &valid) in batch.valid.iter().enumerate() {
        if !valid {
            continue;
        }
        for i in pos * v..(pos + 1) * v {
            err = err.max((got[i] as f64 - want[i] as f64).abs());
            scale = scale.max((want[i] as f64).abs());
        }
    }
    Ok(err / scale.max(1e-30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_is_adapters_merged() {
        assert_eq!(default_output_dir(Path::new("out/v0-x/checkpoint-30")), PathBuf::from("out/v0-x/checkpoint-30-merged"));
        assert_eq!(default_output_dir(Path::new("ckpt/")), PathBuf::from("ckpt-merged"));
    }
}
