//! `qtrain`: the command-line entry point. It parses flags (ms-swift's names) and wires the
//! crates together; any logic beyond that belongs in a crate. Errors surface here through
//! `anyhow` with their full cause chain and a non-zero exit code.

mod allocator;
mod commands;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    let cli = parse_command_line();
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
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parse the command line as ms-swift's argparse would: `--flag-name` is `--flag_name`,
/// a flag given twice keeps its last value, negative numbers are values (`--learning_rate -1e-4` reaches the range check that explains
/// it), and an unknown flag is suggested the closest known one of that command (clap's own
/// suggestion weighs prefixes and often picks an unrelated flag).
fn parse_command_line() -> Cli {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().map(underscore_flag_name).collect();
    let command = Cli::command().mut_subcommands(|sub| sub.mut_args(single_value_may_start_with_hyphen));
    let matches = match command.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::UnknownArgument => unknown_flag(&command, &argv, e),
        Err(e) => e.exit(),
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A flag taking one value takes it even when it starts with `-` (`-1e-4`, which clap's
/// negative-number rule does not recognise). Flags taking several values keep clap's rule, so a
/// following flag still ends their list.
fn single_value_may_start_with_hyphen(arg: clap::Arg) -> clap::Arg {
    let single = arg.get_action().takes_values() && arg.get_num_args().is_none_or(|n| n.max_values() == 1);
    if single {
        arg.allow_hyphen_values(true)
    } else {
        arg
    }
}

/// `--lora-rank=8` → `--lora_rank=8` (HfArgumentParser accepts both spellings; values are untouched).
fn underscore_flag_name(arg: std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some(a) if a.starts_with("--") && a.len() > 2 => {
            let (name, value) = a.split_once('=').map_or((a, None), |(n, v)| (n, Some(v)));
            let name = format!("--{}", name[2..].replace('-', "_"));
            value.map_or(name.clone(), |v| format!("{name}={v}")).into()
        }
        _ => arg,
    }
}

/// An unknown flag: one line naming it, the command, and the closest known flag if any.
fn unknown_flag(command: &clap::Command, argv: &[std::ffi::OsString], e: clap::Error) -> ! {
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split('=').next().unwrap_or(s).to_string(),
        _ => e.exit(),
    };
    let sub = argv.get(1).and_then(|a| a.to_str()).and_then(|name| command.find_subcommand(name));
    let Some(sub) = sub else { e.exit() };
    let known: Vec<String> = sub.get_arguments().filter_map(|a| a.get_long()).map(str::to_string).collect();
    let hint =
        qtrain_train::args::suggest_key(flag.trim_start_matches('-'), &known).map(|k| format!("; did you mean --{k}?")).unwrap_or_default();
    eprintln!("error: unknown flag {flag} for `qtrain {}`{hint} (see `qtrain {} --help`)", sub.get_name(), sub.get_name());
    std::process::exit(2);
}

/// An error and its causes on one line, each stated once: a cause whose text the line already
/// holds (error types that format their source into their own message) is not repeated, and
/// the OS error number is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = match text.find(" (os error ") {
            Some(i) if text.ends_with(')') => text[..i].to_string(),
            _ => text,
        };
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
        assert_eq!(super::one_line(&e), "loading: model.safetensors: no weights");
    }
}
