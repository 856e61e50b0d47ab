//! Adapters written by qtrain are PEFT adapters: `tools/verify_interop.py` trained these with
//! qtrain, loaded them with `PeftModel.from_pretrained` (and the merged export with
//! transformers) and recorded PEFT's dataset loss. Here qtrain must reproduce that number from
//! the committed adapter, and the adapter config must carry PEFT's fields.

use crate::common::{fixture, REGENERATE};
use qtrain_core::CpuBackend;
use qtrain_data::{ConversationOptions, ConversationTokenizer, QwenTokenizer, TokenizerConfig};
use qtrain_model::train::{LossStats, TrainBatch};
use qtrain_model::{LoraAdapter, QwenModel};

#[test]
fn qtrain_written_adapters_evaluate_exactly_as_peft_loaded_them() {
    let be = CpuBackend::new();
    let dataset = std::fs::read_to_string(fixture("training/dataset.jsonl")).unwrap();
    for (short, name) in [("qwen2", "tiny-qwen2"), ("qwen3", "tiny-qwen3")] {
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("interop/{short}.json"))).unwrap()).unwrap();
        let adapter_dir = fixture(&format!("interop/{short}-qtrain-adapter"));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(adapter_dir.join("adapter_config.json")).unwrap()).unwrap();
        for key in ["peft_type", "task_type", "r", "lora_alpha", "target_modules", "bias", "use_rslora", "use_dora", "fan_in_fan_out"] {
            assert!(config.get(key).is_some(), "{short}: adapter_config.json lacks {key}");
        }
        assert_eq!(config["target_modules"].as_array().unwrap().len(), 7, "all-linear must be expanded to module names");
        let dir = fixture(name);
        let mut model = QwenModel::load(&be, &dir).unwrap();
        LoraAdapter::load(&adapter_dir, &model.config).unwrap().attach(&be, &mut model).unwrap();
        let tokenizer = QwenTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let template = TokenizerConfig::from_dir(&dir).unwrap().chat_template().unwrap();
        let options = ConversationOptions::default();
        let conv = ConversationTokenizer::new(&template, &tokenizer, &options);
        let mut total = LossStats::default();
        for line in dataset.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = conv.tokenize(&row["messages"], None).unwrap();
            total.add(model.evaluate(&be, &TrainBatch::from_samples(&[(t.input_ids, t.labels)], 0).unwrap()).unwrap());
        }
        let peft_loss = record["peft"]["loss"].as_f64().unwrap();
        let rel = (total.mean_loss() - peft_loss).abs() / peft_loss;
        assert!(
            rel < 1e-5,
            "{short}: qtrain {} vs PEFT {peft_loss} (relative {rel:.2e}); regenerate with `python3 tools/verify_interop.py` ({REGENERATE})",
            total.mean_loss()
        );
        assert_eq!(total.num_targets as u64, record["peft"]["tokens"].as_u64().unwrap());
        assert!((total.token_accuracy() - record["peft"]["token_acc"].as_f64().unwrap()).abs() < 1e-9);
        // transformers loaded qtrain's merged export and matched PEFT's logits.
        assert!(record["peft_vs_merged_logits_max_relative"].as_f64().unwrap() < 1e-4);
    }
}
