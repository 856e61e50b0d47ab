//! `qtrain`: the command-line entry point. It parses flags (ms-swift's names) and wires the
//! crates together; any logic beyond that belongs in a crate. Errors surface here through
//! `anyhow` with their full cause chain and a non-zero exit code.

mod allocator;
mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qtrain", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QTRAIN_GIT_HASH"), ")"), about = "Fine-tune and run Qwen2 / Qwen2.5 / Qwen3 models (LoRA, full fine-tuning, PEFT adapters).")]
// A flag given twice keeps its last value, as ms-swift's argparse does (a pasted command that
// repeats a flag must work).
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model (optionally with a LoRA adapter): one reply with --prompt, else interactive.
    Infer(commands::infer::InferArgs),
    /// Starting hyper-parameters for a dataset, with the reasoning and a search space.
    Recommend(commands::recommend::RecommendArgs),
    /// Measure prefill, decode and LoRA training-step throughput on a model or a published shape.
    Bench(commands::bench::BenchArgs),
    /// Print a model folder's architecture, parameter count and predicted training memory.
    Info(commands::info::InfoArgs),
    /// Fine-tune a model (LoRA or full) on a conversation dataset; writes OUTPUT_DIR/vN-…/.
    Train(commands::train::TrainCliArgs),
    /// Continued pretraining on raw text ({"text"} rows, .txt lines): `train`'s flags with full
    /// fine-tuning, no chat template and long documents split into --max_length blocks by default.
    Pt(commands::train::TrainCliArgs),
    /// Loss and token accuracy of a model (optionally with an adapter) on a dataset.
    Eval(commands::eval::EvalCliArgs),
    /// Hyper-parameter search over `qtrain train` runs (grid/random/TPE, median/ASHA pruning); writes OUTPUT_DIR/trials.jsonl, best.toml, images/.
    Sweep(commands::sweep::SweepCliArgs),
    /// Export a LoRA adapter: `--merge_lora true` merges it into its base model (a full HF folder).
    Export(commands::export::ExportCliArgs),
    /// Merge a LoRA adapter into its base model: `qtrain export --merge_lora true`.
    Merge(commands::export::ExportCliArgs),
}

fn main() -> std::process::ExitCode {
    allocator::keep_large_blocks();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Infer(args) => commands::infer::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Recommend(args) => commands::recommend::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Pt(args) => commands::pt::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Sweep(args) => commands::sweep::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Merge(args) => commands::export::run(commands::export::ExportCliArgs { merge_lora: true, ..args }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
