//! The binary's integration tests, one test binary with a module per area (one link instead
//! of twenty): CLI behaviour (`cli_*`), golden comparisons with transformers (`golden_*`),
//! interop with PEFT/transformers files (`interop`) and the presets (`presets`). Run one area
//! with a filter: `cargo test --test cli cli_workflow::`.

#[path = "../common/mod.rs"]
mod common;

mod cli_bad_inputs;
mod cli_cognition;
mod cli_infer;
mod cli_infer_batch;
mod cli_infer_chat;
mod cli_kill;
mod cli_messages;
mod cli_pt;
mod cli_recommend;
mod cli_sweep;
mod cli_train;
mod cli_train_config;
mod cli_train_eval;
mod cli_train_packing;
mod cli_train_resume;
mod cli_workflow;
mod golden_pretrain;
mod golden_training;
mod interop;
mod presets;
