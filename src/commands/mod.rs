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

/// Format a byte count in GiB for logs.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
