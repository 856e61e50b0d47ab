//! `qtrain pt`: continued pretraining on raw text (ms-swift's `swift pt`). It is `qtrain train`
//! — the same flags, `--config` keys and run — under [`TrainCommand::Pt`]'s defaults, which
//! are declared beside each flag in `qtrain_train::args` (`pt = …`): full fine-tuning, no chat
//! template, every token trained, long documents split into `--max_length` blocks. Wiring only:
//! no flag or default is declared here.

use anyhow::Result;

use super::train::{run_command, TrainCliArgs};
use qtrain_train::TrainCommand;

pub fn run(args: TrainCliArgs) -> Result<()> {
    run_command(args, TrainCommand::Pt)
}
