//! One optimizer step is the same computation transformers + PEFT performs: loss, every LoRA
//! gradient, full-fine-tuning gradients, three AdamW steps with clipping, dataset evaluation and
//! the assistant-only label masks — against `tools/make_training_fixtures.py`'s references.

use std::collections::HashMap;

use crate::common::{fixture, max_relative_error, REGENERATE};
use qtrain_core::{Backend, CpuBackend};
use qtrain_data::{ConversationOptions, ConversationTokenizer, QwenTokenizer, TokenizerConfig};
use qtrain_model::optimizer::clip_scale;
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::train::{BackwardOptions, LossStats, TrainBatch, TrainMode};
use qtrain_model::{AdamW, Batch, LoraAdapter, QwenModel};
use qtrain_optim::AdamWHyper;

const GRAD_TOL: f64 = 1e-4;

struct Fixture {
    store: SafetensorsStore,
    model_dir: &'static str,
    prefix: &'static str,
}

impl Fixture {
    fn open(prefix: &'static str, model_dir: &'static str) -> Self {
        let path = fixture(&format!("training/{prefix}-train.safetensors"));
        Fixture { store: SafetensorsStore::open_file(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}")), model_dir, prefix }
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        self.store.read(name).unwrap_or_else(|e| panic!("{name}: {e}; {REGENERATE}")).to_f32()
    }
    fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        self.store.read_i64(name).unwrap_or_else(|e| panic!("{name}: {e}; {REGENERATE}"))
    }
    /// The AdamW settings `part` ("lora" / "full") was stepped with: (lr, weight decay of the
    /// decayed parameters, eps), from the fixture's meta file so test and script cannot drift.
    fn optimizer(&self, part: &str) -> (f64, f64, f64) {
        let path = fixture(&format!("training/{}-meta.json", self.prefix));
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"))).unwrap();
        let opt = &meta[part]["optimizer"];
        let wd = &opt["weight_decay"];
        let wd = wd.as_f64().or_else(|| wd["default"].as_f64());
        match (opt["lr"].as_f64(), wd, opt["eps"].as_f64()) {
            (Some(lr), Some(wd), Some(eps)) => (lr, wd, eps),
            _ => panic!("{}: {part}.optimizer lacks lr / weight_decay / eps; {REGENERATE}", path.display()),
        }
    }
    fn names_with(&self, prefix: &str) -> Vec<String> {
        self.store.names().filter(|n| n.starts_with(prefix)).map(str::to_string).collect()
    }
    fn batch(&self) -> TrainBatch {
        let (shape, ids) = self.ints("batch.input_ids");
        let (_, mask) = self.ints("batch.attention_mask");
        let (_, pos) = self.ints("batch.position_ids");
        let (_, labels) = self.ints("batch.labels");
        let (b, t) = (shape[0], shape[1]);
        // transformers shifts labels by one inside each row: position i predicts labels[i + 1].
        let mut targets = vec![-100i32; b * t];
        for row in 0..b {
            for i in 0..t - 1 {
                targets[row * t + i] = labels[row * t + i + 1] as i32;
            }
        }
        let batch = Batch {
            ids: ids.iter().map(|&x| x as u32).collect(),
            batch: b,
            seq_len: t,
            positions: pos.iter().map(|&x| x as u32).collect(),
            valid: mask.iter().map(|&m| m != 0).collect(),
            segments: None,
        };
        TrainBatch { batch, targets }
    }
    fn model(&self, be: &CpuBackend, lora: bool) -> QwenModel<CpuBackend> {
        let mut model = QwenModel::load(be, &fixture(self.model_dir)).unwrap();
        if lora {
            let adapter = LoraAdapter::load(&fixture(&format!("training/{}-lora-init", self.prefix)), &model.config).unwrap();
            adapter.attach(be, &mut model).unwrap();
        }
        model
    }
}

fn check(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let err = max_relative_error(got, want);
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:e}; {REGENERATE}");
}

/// Gradients of one pass, by parameter name.
fn gradients(model: &QwenModel<CpuBackend>, be: &CpuBackend, tb: &TrainBatch, mode: TrainMode) -> (LossStats, HashMap<String, Vec<f32>>) {
    let mut grads = model.new_grads(be, mode).unwrap();
    let opts = BackwardOptions {
        loss_scale: 1.0 / tb.num_targets() as f32,
        gradient_checkpointing: true,
        lora_dropout: None,
        attention_dropout: None,
        neftune: None,
    };
    let stats = model.forward_backward(be, tb, &mut grads, &opts).unwrap();
    (stats, grads.named(model).into_iter().map(|(n, g)| (n, be.download(g).unwrap())).collect())
}

/// `steps` optimizer steps as transformers' Trainer takes them: clip_grad_norm_ then AdamW.
#[allow(clippy::too_many_arguments)]
fn adamw_steps(
    model: &mut QwenModel<CpuBackend>,
    be: &CpuBackend,
    tb: &TrainBatch,
    mode: TrainMode,
    (lr, wd, eps): (f64, f64, f64),
    max_norm: f64,
    steps: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut grads = model.new_grads(be, mode).unwrap();
    let opts = BackwardOptions {
        loss_scale: 1.0 / tb.num_targets() as f32,
        gradient_checkpointing: true,
        lora_dropout: None,
        attention_dropout: None,
        neftune: None,
    };
    // The trainer's own optimizer: decay groups, global norm, clipping and the update.
    let hyper = AdamWHyper { beta1: 0.9, beta2: 0.95, eps, weight_decay: wd };
    let mut optimizer = AdamW::new(be, model, &grads, hyper).unwrap();
    let (mut losses, mut norms) = (vec![], vec![]);
    for _ in 0..steps {
        grads.zero(be).unwrap();
        losses.push(model.forward_backward(be, tb, &mut grads, &opts).unwrap().mean_loss());
        let norm = AdamW::grad_norm(be, model, &grads).unwrap();
        norms.push(norm);
        optimizer.step(be, model, &grads, lr, clip_scale(norm, max_norm)).unwrap();
    }
    (losses, norms)
}

fn check_losses(what: &str, got: &[f64], want: &[f32], tol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let rel = (g - *w as f64).abs() / (*w as f64).abs();
        assert!(rel <= tol, "{what} step {i}: {g} vs {w} (relative {rel:.2e}); {REGENERATE}");
    }
}

fn run_golden(prefix: &'static str, model_dir: &'static str) {
    let be = CpuBackend::new();
    let fx = Fixture::open(prefix, model_dir);
    let tb = fx.batch();
    // LoRA: loss and every gradient.
    let model = fx.model(&be, true);
    let (stats, grads) = gradients(&model, &be, &tb, TrainMode::Lora);
    check_losses(&format!("{prefix} LoRA loss"), &[stats.mean_loss()], &fx.f32("lora.loss"), 1e-5);
    let want = fx.names_with("lora.grad.");
    assert_eq!(want.len(), grads.len(), "{prefix}: number of LoRA gradients");
    for name in want {
        let key = name.trim_start_matches("lora.grad.");
        check(&format!("{prefix} {key}"), &grads[key], &fx.f32(&name), GRAD_TOL);
    }
    // LoRA: three AdamW steps with clipping.
    let mut model = fx.model(&be, true);
    let max_norm = fx.f32("lora.max_grad_norm")[0] as f64;
    let (losses, norms) = adamw_steps(&mut model, &be, &tb, TrainMode::Lora, fx.optimizer("lora"), max_norm, 3);
    check_losses(&format!("{prefix} LoRA step losses"), &losses, &fx.f32("lora.step_losses"), 1e-4);
    check_losses(&format!("{prefix} LoRA grad norms"), &norms, &fx.f32("lora.step_grad_norms"), 1e-4);
    assert!(norms.iter().any(|&n| n > max_norm), "{prefix}: the fixture must exercise clipping");
    let finals: HashMap<String, Vec<f32>> = model
        .trainable_params(&model.new_grads(&be, TrainMode::Lora).unwrap())
        .iter()
        .map(|p| (p.name.clone(), be.download(p.param).unwrap()))
        .collect();
    for name in fx.names_with("lora.final.") {
        let key = name.trim_start_matches("lora.final.");
        check(&format!("{prefix} after 3 steps {key}"), &finals[key], &fx.f32(&name), GRAD_TOL);
    }
    // Full fine-tuning: every gradient, then three steps with no decay on biases and norms.
    let model = fx.model(&be, false);
    let (stats, grads) = gradients(&model, &be, &tb, TrainMode::Full);
    check_losses(&format!("{prefix} full loss"), &[stats.mean_loss()], &fx.f32("full.loss"), 1e-5);
    let want = fx.names_with("full.grad.");
    assert_eq!(want.len(), grads.len(), "{prefix}: number of full gradients");
    for name in want {
        let key = name.trim_start_matches("full.grad.");
        check(&format!("{prefix} full {key}"), &grads[key], &fx.f32(&name), GRAD_TOL);
    }
    let mut model = fx.model(&be, false);
    let max_norm = fx.f32("full.max_grad_norm")[0] as f64;
    let (losses, norms) = adamw_steps(&mut model, &be, &tb, TrainMode::Full, fx.optimizer("full"), max_norm, 3);
    check_losses(&format!("{prefix} full step losses"), &losses, &fx.f32("full.step_losses"), 1e-4);
    check_losses(&format!("{prefix} full grad norms"), &norms, &fx.f32("full.step_grad_norms"), 1e-4);
    let grads = model.new_grads(&be, TrainMode::Full).unwrap();
    let finals: HashMap<String, Vec<f32>> =
        model.trainable_params(&grads).iter().map(|p| (p.name.clone(), be.download(p.param).unwrap())).collect();
    for name in fx.names_with("full.final.") {
        let key = name.trim_start_matches("full.final.");
        check(&format!("{prefix} full after 3 steps {key}"), &finals[key], &fx.f32(&name), GRAD_TOL);
    }
}

#[test]
fn qwen2_lora_and_full_steps_match_transformers_and_peft() {
    run_golden("qwen2", "tiny-qwen2");
}

#[test]
fn qwen3_lora_and_full_steps_match_transformers_and_peft() {
    run_golden("qwen3", "tiny-qwen3");
}

/// The dataset's tokenisation and assistant-only labels equal the Python reference, and the
/// whole-dataset loss / token accuracy equal transformers', with and without adapters.
#[test]
fn dataset_tokenisation_and_evaluation_match_transformers() {
    let be = CpuBackend::new();
    let dataset = std::fs::read_to_string(fixture("training/dataset.jsonl")).unwrap();
    for (prefix, model_dir) in [("qwen2", "tiny-qwen2"), ("qwen3", "tiny-qwen3")] {
        let dir = fixture(model_dir);
        let tokenizer = QwenTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let template = TokenizerConfig::from_dir(&dir).unwrap().chat_template().unwrap();
        let options = ConversationOptions::default();
        let conv = ConversationTokenizer::new(&template, &tokenizer, &options);
        let reference: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("training/{prefix}-tokenized.json"))).unwrap()).unwrap();
        let mut samples = vec![];
        for (i, (line, want)) in dataset.lines().zip(&reference).enumerate() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let got = conv.tokenize(&row["messages"], None).unwrap();
            let want_ids: Vec<u32> = want["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let want_labels: Vec<i32> = want["labels"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
            assert_eq!(got.input_ids, want_ids, "{prefix} sample {i}: token ids; {REGENERATE}");
            assert_eq!(got.labels, want_labels, "{prefix} sample {i}: supervised positions; {REGENERATE}");
            samples.push((got.input_ids, got.labels));
        }
        let eval: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("training/{prefix}-eval.json"))).unwrap()).unwrap();
        let mut model = QwenModel::load(&be, &dir).unwrap();
        for (key, adapter) in [
            ("eval", None),
            ("eval_lora", Some(format!("training/{prefix}-lora-init"))),
            ("eval_lora_trained", Some(format!("training/{prefix}-lora-trained"))),
        ] {
            model.clear_lora();
            if let Some(a) = adapter {
                LoraAdapter::load(&fixture(&a), &model.config).unwrap().attach(&be, &mut model).unwrap();
            }
            let mut total = LossStats::default();
            for s in &samples {
                total.add(model.evaluate(&be, &TrainBatch::from_samples(std::slice::from_ref(s), 0).unwrap()).unwrap());
            }
            let want_loss = eval[format!("{key}.loss")].as_f64().unwrap();
            let want_acc = eval[format!("{key}.token_acc")].as_f64().unwrap();
            assert_eq!(total.num_targets as u64, eval[format!("{key}.tokens")].as_u64().unwrap(), "{prefix} {key} tokens");
            assert!((total.mean_loss() - want_loss).abs() <= 1e-5 * want_loss, "{prefix} {key}: loss {} vs {want_loss}", total.mean_loss());
            assert!((total.token_accuracy() - want_acc).abs() < 1e-9, "{prefix} {key}: token_acc {} vs {want_acc}", total.token_accuracy());
        }
    }
}
