//! A PEFT adapter folder with `adapter_config.json` (first byte even) or
//! `adapter_model.safetensors` (odd) replaced by the input, loaded and attached to the
//! micro model as `qtrain infer --adapters` does.
#![no_main]
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use qtrain_core::CpuBackend;
use qtrain_fuzz::{check_error, cpu, micro_folder, with_replaced_file};
use qtrain_model::{LoraAdapter, QwenModel};

thread_local! {
    /// The micro model, loaded once: `attach` replaces any adapter a previous input left.
    static MODEL: RefCell<QwenModel<CpuBackend>> = RefCell::new({
        let dir = micro_folder("base", &["config.json", "model.safetensors"]);
        QwenModel::load(cpu(), &dir).expect("the micro model loads")
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let dir = micro_folder("adapter", &["adapter_config.json", "adapter_model.safetensors"]);
    let file = if mode % 2 == 0 { "adapter_config.json" } else { "adapter_model.safetensors" };
    MODEL.with_borrow_mut(|model| {
        let config = model.config.clone();
        check_error(with_replaced_file(&dir, file, bytes, || LoraAdapter::load(&dir, &config).and_then(|a| a.attach(cpu(), model))));
    });
});
