//! One module per subcommand: its clap arguments and a `run` that wires crates together.

pub mod bench;
pub mod device;
pub mod eval;
pub mod export;
pub mod infer;
pub mod info;
pub mod pt;
pub mod recommend;
pub mod sweep;
pub mod train;

use std::path::PathBuf;

use anyhow::Result;
use qtrain_train::origin;

/// `--model` and `--adapters` as `infer`, `eval` and `export` resolve them (one rule, in
/// [`qtrain_train::origin`]): either path may be a run folder (its best or last checkpoint);
/// without `--model` the adapter's checkpoint names its base model; a full fine-tuning
/// checkpoint given as `--adapters` is the model itself. Logs each decision once.
pub fn checkpoint_model(model: Option<PathBuf>, adapters: Option<PathBuf>) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let logged = |found: origin::Located| -> PathBuf {
        if let Some(note) = &found.note {
            eprintln!("[qtrain] {note}");
        }
        found.dir
    };
    let model = match model {
        // A run folder given as --model (full fine-tuning): its best or last checkpoint. A folder
        // without checkpoints is left to the model loader, which names what it lacks.
        Some(m) if m.is_dir() && !m.join("config.json").is_file() => match origin::run_folder_checkpoint(&m)? {
            Some(found) => Some(logged(found)),
            None => Some(m),
        },
        other => other,
    };
    let Some(adapters) = adapters else { return Ok((model, None)) };
    let checkpoint = logged(origin::locate(&adapters, "adapters")?);
    if !checkpoint.join("adapter_config.json").is_file() && model.is_none() {
        eprintln!("[qtrain] {} is a full model checkpoint (no adapter_config.json): using it as --model", checkpoint.display());
        return Ok((Some(checkpoint), None));
    }
    let (model, note) = origin::model_for(model.as_deref(), &checkpoint)?;
    if let Some(note) = note {
        eprintln!("[qtrain] {note}");
    }
    Ok((Some(model), Some(checkpoint)))
}

/// Format a byte count in GiB for logs.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
