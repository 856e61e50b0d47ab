//! The state files of a checkpoint — trainer_state, scheduler, rng_state, data_state,
//! args (JSON) and optimizer.safetensors, split at NUL bytes — read by the functions
//! `--resume_from_checkpoint` uses (`CheckpointFiles::read`, `read_optimizer_state`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_fuzz::{check_error, scratch, split_parts};
use qtrain_train::checkpoint::{missing_files, read_optimizer_state, CheckpointFiles};

const FILES: [&str; 6] =
    ["trainer_state.json", "scheduler.json", "rng_state.json", "data_state.json", "args.json", "optimizer.safetensors"];

fuzz_target!(|data: &[u8]| {
    let dir = scratch().join("checkpoint-1");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for (file, bytes) in FILES.iter().zip(split_parts(data, FILES.len())) {
        std::fs::write(dir.join(file), bytes).expect("scratch file");
    }
    let _ = missing_files(&dir, true);
    check_error(CheckpointFiles::read(&dir));
    check_error(read_optimizer_state(&dir.join("optimizer.safetensors")));
});
