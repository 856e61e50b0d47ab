//! `qtrain export --merge_lora true`: merge a LoRA adapter into its base model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};

use qtrain_core::CpuBackend;
use qtrain_train::export::default_output_dir;
use qtrain_train::MergeOptions;

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct ExportCliArgs {
    /// Base model folder. Default: the `model` recorded in the adapter checkpoint's args.json.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// PEFT LoRA adapter folder (e.g. output/v0-…/checkpoint-N).
    #[arg(long)]
    pub adapters: PathBuf,
    /// Merge the adapter into the base weights (the only export implemented).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub merge_lora: bool,
    /// [default: <adapters>-merged]
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// auto | bfloat16 | float16 | float32: dtype of the merged weights (auto: the base model's).
    #[arg(long, default_value = "auto")]
    pub torch_dtype: String,
}

pub fn run(args: ExportCliArgs) -> Result<()> {
    if !args.merge_lora {
        bail!("nothing to do: only `--merge_lora true` is supported by qtrain export");
    }
    let model = match args.model {
        Some(m) => m,
        None => model_from_checkpoint(&args.adapters)?,
    };
    let output_dir = args.output_dir.unwrap_or_else(|| default_output_dir(&args.adapters));
    let dtype = super::device::parse_torch_dtype(&args.torch_dtype)?;
    let be = CpuBackend::new();
    let t0 = std::time::Instant::now();
    let report = qtrain_train::merge_lora(&be, &MergeOptions { model: model.clone(), adapters: args.adapters.clone(), output_dir, dtype })
        .with_context(|| format!("merging {} into {}", args.adapters.display(), model.display()))?;
    eprintln!(
        "[qtrain] merged {} modules into {} ({}); self-check relative logit error {:.2e} (tolerance {:.0e}); copied {}; {:.2}s",
        report.merged_modules,
        report.output_dir.display(),
        report.dtype.hf_name(),
        report.max_relative_error,
        report.tolerance,
        report.copied_files.join(", "),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", report.output_dir.display());
    Ok(())
}

/// The base model a qtrain (or ms-swift) checkpoint was trained from, from its args.json.
fn model_from_checkpoint(adapters: &std::path::Path) -> Result<PathBuf> {
    let path = adapters.join("args.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("--model not given and {} cannot be read", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))?;
    match v.get("model").and_then(|m| m.as_str()) {
        Some(m) => Ok(PathBuf::from(m)),
        None => bail!("--model not given and {} has no \"model\" entry", path.display()),
    }
}
