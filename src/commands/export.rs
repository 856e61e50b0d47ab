//! `qtrain export --merge_lora true`: merge a LoRA adapter into its base model.

use std::path::PathBuf;

use anyhow::{bail, Result};
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
    /// PEFT LoRA adapter folder: a checkpoint-N of a run (e.g. output/v0-…/checkpoint-N), or a run
    /// folder (its best or last checkpoint).
    #[arg(long)]
    pub adapters: PathBuf,
    /// Merge the adapter into the base weights (the only export implemented; `qtrain merge` implies it).
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
        bail!("nothing to do: add --merge_lora true (merging the adapter into its base model is the export qtrain implements), or use `qtrain merge`");
    }
    let (model, adapters) = super::checkpoint_model(args.model, Some(args.adapters))?;
    let (Some(model), Some(adapters)) = (model, adapters) else {
        bail!("--adapters names a full model checkpoint: there is no LoRA adapter to merge");
    };
    let output_dir = args.output_dir.unwrap_or_else(|| default_output_dir(&adapters));
    let dtype = super::device::parse_torch_dtype(&args.torch_dtype)?;
    let be = CpuBackend::new();
    let t0 = std::time::Instant::now();
    let report = qtrain_train::merge_lora(&be, &MergeOptions { model: model.clone(), adapters: adapters.clone(), output_dir, dtype })?;
    eprintln!(
        "[qtrain] wrote the merged model {} ({}): base {} + adapter {} ({} modules merged; the base folder is unchanged); self-check relative logit error {:.2e} (tolerance {:.0e}); copied {}; {:.2}s",
        report.output_dir.display(),
        report.dtype.hf_name(),
        model.display(),
        adapters.display(),
        report.merged_modules,
        report.max_relative_error,
        report.tolerance,
        report.copied_files.join(", "),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", report.output_dir.display());
    Ok(())
}
