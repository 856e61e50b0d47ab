//! The on-disk layout of a run, as ms-swift writes it:
//!
//! ```text
//! output_dir/vN-YYYYMMDD-HHMMSS/     N = next free version number
//!   args.json                         the resolved TrainArgs
//!   logging.jsonl                     one object per log, then a summary line
//!   checkpoint-N/                     every save_steps and at the last step
//!     adapter_config.json             LoRA: PEFT adapter (target_modules explicit)
//!     adapter_model.safetensors
//!     config.json, model.safetensors, tokenizer files …   full fine-tuning: an HF model folder
//!     args.json, trainer_state.json
//! ```
//!
//! Every file goes through a temporary name and a rename (`write_atomic`), and a checkpoint
//! folder is filled as `checkpoint-N.tmp` and renamed when complete, so an interrupted run
//! never leaves a checkpoint that looks whole but is not. The one exception is the append-only
//! `logging.jsonl` (one whole-line write per record, see the trainer). Timestamps are UTC (ms-swift uses
//! local time; we avoid a timezone dependency). This module must not decide when to save.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use half::{bf16, f16};
use serde_json::Value;

use qtrain_core::{Backend, DType, TensorInfo};
use qtrain_model::safetensors_io::{write_atomic, write_safetensors, HostTensor, HostTensorData};
use qtrain_model::{AdapterConfig, QwenModel};

use crate::error::{Result, TrainError};

/// The next free version number in `output_dir`: one more than the largest `vN…` entry, or 0
/// (ms-swift's `_get_version`).
pub fn next_version<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(|n| {
            let digits: String = n.strip_prefix('v')?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |v| v + 1)
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86400) as i64;
    let rem = unix_secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Create `output_dir/vN-YYYYMMDD-HHMMSS/` with the next free version number.
pub fn create_run_dir(output_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).map_err(|e| TrainError::io(output_dir, e))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Another run may take the same name between our listing and our mkdir: then try the next.
    for _ in 0..100 {
        let names: Vec<String> = std::fs::read_dir(output_dir)
            .map_err(|e| TrainError::io(output_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        let version = next_version(names.iter().map(String::as_str));
        let dir = output_dir.join(format!("v{version}-{}", timestamp(now)));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TrainError::io(&dir, e)),
        }
    }
    Err(TrainError::Invalid(format!("{}: could not create a new version folder", output_dir.display())))
}

/// Write pretty JSON atomically.
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Invalid(e.to_string()))?;
    Ok(write_atomic(path, text.as_bytes())?)
}

/// Whether a model-folder file holds weights (not copied next to new weights) or run state.
fn is_weight_or_state_file(name: &str) -> bool {
    const WEIGHT_EXT: [&str; 7] = [".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack"];
    name.starts_with('.')
        || WEIGHT_EXT.iter().any(|e| name.ends_with(e))
        || name.ends_with(".index.json")
        || matches!(name, "args.json" | "trainer_state.json" | "logging.jsonl" | "adapter_config.json")
}

/// Copy every non-weight file of a model folder (config.json, generation_config.json,
/// tokenizer.json, tokenizer_config.json, chat_template.jinja, vocab/merges …) into `dst`.
/// Returns the names copied.
pub fn copy_model_assets(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut copied = vec![];
    let entries = std::fs::read_dir(src).map_err(|e| TrainError::io(src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(src, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_file() || is_weight_or_state_file(&name) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        write_atomic(&dst.join(&name), &bytes)?;
        copied.push(name);
    }
    copied.sort();
    Ok(copied)
}

/// f32 values cast to a stored dtype (round to nearest even).
pub fn cast(values: Vec<f32>, dtype: DType) -> HostTensorData {
    match dtype {
        DType::F32 => HostTensorData::F32(values),
        DType::BF16 => HostTensorData::BF16(values.into_iter().map(bf16::from_f32).collect()),
        DType::F16 => HostTensorData::F16(values.into_iter().map(f16::from_f32).collect()),
    }
}

/// Every base parameter of the model with its HF name (tied embeddings once, no LoRA).
pub fn model_tensors<B: Backend>(model: &QwenModel<B>) -> Vec<(String, &B::Tensor)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), &model.embed_tokens)];
    for (l, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), &layer.input_layernorm));
        out.push((format!("{p}.post_attention_layernorm.weight"), &layer.post_attention_layernorm));
        if let Some(t) = &layer.q_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), t));
        }
        if let Some(t) = &layer.k_norm {
            out.push((format!("{p}.self_attn.k_norm.weight"), t));
        }
        for (name, lin) in layer.linears() {
            out.push((format!("{p}.{name}.weight"), &lin.weight));
            if let Some(b) = &lin.bias {
                out.push((format!("{p}.{name}.bias"), b));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), &model.norm));
    if let Some(h) = &model.lm_head {
        out.push(("lm_head.weight".to_string(), h));
    }
    out
}

/// What a checkpoint holds besides `args.json` and `trainer_state.json`.
pub enum CheckpointContent<'a> {
    /// The attached LoRA adapters as a PEFT adapter folder.
    Lora { config: &'a AdapterConfig },
    /// The whole model as an HF folder: weights in `dtype`, other files copied from `source`.
    Full { source: &'a Path, dtype: DType },
}

/// Write `run_dir/checkpoint-{step}` through `checkpoint-{step}.tmp` and return its path.
pub fn save_checkpoint<B: Backend>(
    be: &B,
    model: &QwenModel<B>,
    run_dir: &Path,
    step: u64,
    content: &CheckpointContent<'_>,
    args_json: &Value,
    trainer_state: &Value,
) -> Result<PathBuf> {
    let final_dir = run_dir.join(format!("checkpoint-{step}"));
    let tmp = run_dir.join(format!("checkpoint-{step}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    match content {
        CheckpointContent::Lora { config } => model.export_lora(be, config)?.save(&tmp)?,
        CheckpointContent::Full { source, dtype } => {
            let mut tensors = Vec::new();
            for (name, t) in model_tensors(model) {
                tensors.push((name, HostTensor { shape: t.shape().to_vec(), data: cast(be.download(t)?, *dtype) }));
            }
            write_safetensors(&tmp.join("model.safetensors"), &tensors, None)?;
            copy_model_assets(source, &tmp)?;
        }
    }
    write_json(&tmp.join("args.json"), args_json)?;
    write_json(&tmp.join("trainer_state.json"), trainer_state)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    Ok(final_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_follow_ms_swift() {
        assert_eq!(next_version([]), 0);
        assert_eq!(next_version(["v0-20250101-000000", "v3-20250101-000000", "notes", "vx"]), 4);
        assert_eq!(next_version(["v12"]), 13);
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000"); // leap day
        assert_eq!(timestamp(1_735_689_599), "20241231-235959");
        assert_eq!(timestamp(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn run_dirs_get_increasing_versions() {
        let out = tempfile::tempdir().unwrap();
        let a = create_run_dir(out.path()).unwrap();
        let b = create_run_dir(out.path()).unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&a).starts_with("v0-") && name(&b).starts_with("v1-"), "{a:?} {b:?}");
        assert_eq!(name(&a).len(), "v0-20250101-000000".len());
    }

    #[test]
    fn assets_copy_skips_weights_and_run_state() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json", "args.json", "chat_template.jinja"]
        {
            std::fs::write(src.path().join(f), "x").unwrap();
        }
        let copied = copy_model_assets(src.path(), dst.path()).unwrap();
        assert_eq!(copied, ["chat_template.jinja", "config.json", "tokenizer.json"]);
    }

    #[test]
    fn cast_rounds_to_the_stored_dtype() {
        match cast(vec![1.0, 1.0 + 1.0 / 256.0], DType::BF16) {
            HostTensorData::BF16(v) => assert_eq!(v[1].to_f32(), 1.0), // ties to even
            _ => panic!(),
        }
    }
}
