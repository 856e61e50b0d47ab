//! An adapter whose `adapter_config.json` disagrees with its weights is refused with the
//! reason, as PEFT refuses it (issue 16's bad-input catalog found both loaded silently).

mod common;

use common::fixture;
use qtrain_model::{LoraAdapter, QwenConfig};

/// The tiny Qwen2 LoRA adapter with `target_modules` replaced; returns the load error.
fn load_with_targets(targets: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny-qwen2-lora");
    std::fs::copy(src.join("adapter_model.safetensors"), dir.path().join("adapter_model.safetensors")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    config["target_modules"] = targets;
    std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
    let model_cfg = QwenConfig::from_file(&fixture("tiny-qwen2").join("config.json")).unwrap();
    LoraAdapter::load(dir.path(), &model_cfg).err().expect("the adapter must be refused").to_string()
}

#[test]
fn target_modules_that_match_nothing_are_refused() {
    let err = load_with_targets(serde_json::json!(["frobnicator"]));
    assert!(err.ends_with("invalid config: target_modules (frobnicator) match no linear layer of the model"), "{err}");
}

#[test]
fn weights_of_modules_outside_target_modules_are_refused() {
    let err = load_with_targets(serde_json::json!(["q_proj"]));
    assert!(err.contains("model.layers.0.mlp.down_proj: has LoRA tensors but is not in target_modules"), "{err}");
    assert!(!err.contains("q_proj: has LoRA tensors"), "{err}");
}
