//! A `--config run.toml` file parsed into training arguments and resolved against a model
//! length, as `qtrain train --config` does before any flag is laid over it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_fuzz::check_error;
use qtrain_train::args::TrainArgs;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(mut args) = TrainArgs::from_toml_str(text, Path::new("run.toml")) {
        check_error(args.resolve(512));
    }
});
