//! `qtrain recommend`: starting hyper-parameters from the dataset's size and the method, with
//! the reasoning and the search space `qtrain sweep` would try (rules in README, "Choosing
//! hyper-parameters").

use anyhow::Result;
use clap::Args;

use qtrain_data::{load_datasets, load_text_dataset, Bilingual, DatasetOptions};
use qtrain_sweep::{recommend, recommend_pretrain, FinetuneMethod};

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct RecommendArgs {
    /// Dataset files or specs (as `qtrain train --dataset`).
    #[arg(long, num_args = 1.., required = true)]
    pub dataset: Vec<String>,
    /// lora | full [default: lora; with --pt: full]
    #[arg(long)]
    pub tuner_type: Option<String>,
    /// Continued pretraining on raw text (`qtrain pt`; .txt / {"text"} datasets): the
    /// pretraining regime (lr 3e-4, 2000 warm-up steps, cosine, weight decay 0.1).
    #[arg(long)]
    pub pt: bool,
    #[arg(long, default_value_t = 1)]
    pub per_device_train_batch_size: usize,
    /// The model to be fine-tuned (its config.json's hidden_size sets the learning rate).
    /// Default: the embedded tiny model, as `qtrain train` without --model.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Accepted for symmetry with `qtrain train`; rows are counted without it.
    #[arg(long, num_args = 1..=2)]
    pub model_name: Vec<String>,
    #[arg(long, num_args = 1..=2)]
    pub model_author: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RecommendArgs) -> Result<()> {
    let tuner_type = args.tuner_type.clone().unwrap_or_else(|| if args.pt { "full" } else { "lora" }.to_string());
    let method = match tuner_type.as_str() {
        "lora" => FinetuneMethod::Lora,
        "full" => FinetuneMethod::Full,
        other => anyhow::bail!("--tuner_type must be lora or full, got {other:?}"),
    };
    let mut opts = DatasetOptions::default();
    if !args.model_name.is_empty() {
        opts.model_name = Some(Bilingual::from_values("model_name", &args.model_name)?);
    }
    if !args.model_author.is_empty() {
        opts.model_author = Some(Bilingual::from_values("model_author", &args.model_author)?);
    }
    // Only rows are counted here: the self-cognition dataset's size does not depend on the
    // name and author it is filled with, so placeholders stand in for them when not given.
    for (slot, placeholder) in [(&mut opts.model_name, "NAME"), (&mut opts.model_author, "AUTHOR")] {
        if slot.is_none() {
            *slot = Some(Bilingual::from_values("model_name", &[placeholder.to_string()])?);
        }
    }
    let (n, rec) = if args.pt {
        let mut n = 0;
        for spec in &args.dataset {
            n += load_text_dataset(spec, &opts)?.rows.len();
        }
        (n, recommend_pretrain(n, method))
    } else {
        let n = load_datasets(&args.dataset, &opts)?.rows.len();
        (n, recommend(n, method, hidden_size(args.model.as_deref())?))
    };
    let accumulation = rec.gradient_accumulation_steps(args.per_device_train_batch_size);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "samples": n, "learning_rate": rec.learning_rate, "num_train_epochs": rec.num_train_epochs,
                "per_device_train_batch_size": args.per_device_train_batch_size, "gradient_accumulation_steps": accumulation,
                "effective_batch": rec.effective_batch, "warmup_ratio": rec.warmup_ratio, "warmup_steps": rec.warmup_steps,
                "reasoning": rec.reasoning, "search_space": rec.search_space,
            })
        );
        return Ok(());
    }
    let warmup =
        if rec.warmup_steps > 0 { format!("--warmup_steps {}", rec.warmup_steps) } else { format!("--warmup_ratio {}", rec.warmup_ratio) };
    if args.pt {
        println!("{n} documents, continued pretraining ({tuner_type}), qtrain pt:");
    } else {
        println!("{n} samples, {tuner_type} fine-tuning:");
    }
    println!(
        "  --learning_rate {:e} --num_train_epochs {} --per_device_train_batch_size {} --gradient_accumulation_steps {} {warmup}",
        rec.learning_rate, rec.num_train_epochs, args.per_device_train_batch_size, accumulation
    );
    println!("why:");
    for r in &rec.reasoning {
        println!("  - {r}");
    }
    println!("search space for qtrain sweep:");
    println!("  {}", rec.search_space.iter().map(|s| format!("--search {s}")).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// The hidden size of `--model` (or of the embedded model) from its config.json.
fn hidden_size(model: Option<&std::path::Path>) -> Result<usize> {
    let dir = match model {
        Some(dir) => dir.to_path_buf(),
        None => qtrain_chat::embedded::ensure_embedded_model(&qtrain_chat::embedded::default_location())?,
    };
    Ok(qtrain_model::QwenConfig::from_file(&dir.join("config.json"))?.hidden_size)
}
