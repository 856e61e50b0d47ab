//! A model folder with one file replaced by the input (the first byte picks which):
//! `config.json`, `model.safetensors`, `model.safetensors.index.json` or a shard — loaded
//! with `QwenModel::load`, as `qtrain infer/train/export` load a model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qtrain_fuzz::{check_error, cpu, micro_folder, with_replaced_file};
use qtrain_model::QwenModel;

const SINGLE: [&str; 2] = ["config.json", "model.safetensors"];
const SHARDED: [&str; 4] =
    ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let (dir, file) = match mode % 4 {
        0 => (micro_folder("single", &SINGLE), "config.json"),
        1 => (micro_folder("single", &SINGLE), "model.safetensors"),
        2 => (micro_folder("sharded", &SHARDED), "model.safetensors.index.json"),
        _ => (micro_folder("sharded", &SHARDED), "model-00001-of-00002.safetensors"),
    };
    check_error(with_replaced_file(&dir, file, bytes, || QwenModel::load(cpu(), &dir)));
});
