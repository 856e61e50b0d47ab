//! `qtrain`: the command-line entry point. It parses flags (ms-swift's names) and wires the
//! crates together; any logic beyond that belongs in a crate. Errors surface here through
//! `anyhow` with their full cause chain and a non-zero exit code.

mod allocator;
mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qtrain", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QTRAIN_GIT_HASH"), ")"), about = "Fine-tune and run Qwen2 / Qwen2.5 / Qwen3 models (LoRA, full fine-tuning, PEFT adapters).")]
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
    /// Loss and token accuracy of a model (optionally with an adapter) on a dataset.
    Eval(commands::eval::EvalCliArgs),
    /// Hyper-parameter search over `qtrain train` runs (grid/random/TPE, median/ASHA pruning); writes OUTPUT_DIR/trials.jsonl, best.toml, images/.
    Sweep(commands::sweep::SweepCliArgs),
    /// Merge a LoRA adapter into its base model (--merge_lora true).
    #[command(alias = "merge")]
    Export(commands::export::ExportCliArgs),
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
        Command::Eval(args) => commands::eval::run(args),
        Command::Sweep(args) => commands::sweep::run(args),
        Command::Export(args) => commands::export::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: a library error that displays its
/// source (`path: No such file…`) and also returns it from `source()` would otherwise state
/// the same cause twice.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_stated_once() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "model.safetensors: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no weights");
        let e = anyhow::Error::new(Wrapped(io)).context("loading");
        assert_eq!(super::error_text(&e), "loading: model.safetensors: no weights");
    }
}
