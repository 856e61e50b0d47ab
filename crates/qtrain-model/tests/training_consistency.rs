//! Training-pass invariants that need no reference framework: gradient checkpointing does not
//! change gradients, gradient accumulation over micro-batches equals one big batch, and the
//! full-model gradient agrees with finite differences of the loss.

mod common;

use common::fixture;
use qtrain_core::{Backend, CpuBackend, TensorInfo};
use qtrain_model::train::{BackwardOptions, LoraInit, ModelGrads, TrainBatch, TrainMode};
use qtrain_model::{AdapterConfig, QwenModel};

fn samples(n: usize, seed: u32) -> Vec<(Vec<u32>, Vec<i32>)> {
    (0..n)
        .map(|s| {
            let len = 9 + (s * 5 + seed as usize) % 11;
            let ids: Vec<u32> = (0..len).map(|i| ((i as u32 * 131 + s as u32 * 71 + seed * 17) % 4000) + 5).collect();
            // Supervise the second half only, like an assistant reply after a prompt.
            let labels = ids.iter().enumerate().map(|(i, &t)| if i >= len / 2 { t as i32 } else { -100 }).collect();
            (ids, labels)
        })
        .collect()
}

fn lora_model(be: &CpuBackend, name: &str) -> QwenModel<CpuBackend> {
    let mut model = QwenModel::load(be, &fixture(name)).unwrap();
    let cfg = AdapterConfig::new_lora(4, 8.0, 0.0, qtrain_model::adapter::ALL_LINEAR.iter().map(|s| s.to_string()).collect(), false, None);
    model.init_lora(be, &cfg, LoraInit::Kaiming, 7).unwrap();
    // Give B non-zero values so every LoRA gradient is exercised.
    for layer in &mut model.layers {
        for (_, lin) in layer.linears_mut() {
            let p = lin.lora.as_mut().unwrap();
            let n = p.b.numel();
            let vals: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.05).collect();
            p.b = be.upload(qtrain_core::HostData::F32(&vals), p.b.shape()).unwrap();
        }
    }
    model
}

fn grads_of(model: &QwenModel<CpuBackend>, be: &CpuBackend, grads: &ModelGrads<CpuBackend>) -> Vec<(String, Vec<f32>)> {
    grads.named(model).into_iter().map(|(n, g)| (n, be.download(g).unwrap())).collect()
}

fn assert_same(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, ga), (nb, gb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let scale = ga.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
        let err = ga.iter().zip(gb).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= tol * scale, "{what}: {na} differs by {err:e} (scale {scale:e})");
        assert!(scale > 1e-9, "{what}: {na} has an all-zero gradient");
    }
}

fn run(
    model: &QwenModel<CpuBackend>,
    be: &CpuBackend,
    mode: TrainMode,
    micro: &[Vec<(Vec<u32>, Vec<i32>)>],
    checkpointing: bool,
) -> Vec<(String, Vec<f32>)> {
    let batches: Vec<TrainBatch> = micro.iter().map(|m| TrainBatch::from_samples(m, 4096).unwrap()).collect();
    let total: usize = batches.iter().map(TrainBatch::num_targets).sum();
    let mut grads = model.new_grads(be, mode).unwrap();
    let opts = BackwardOptions {
        loss_scale: 1.0 / total as f32,
        gradient_checkpointing: checkpointing,
        lora_dropout: None,
        attention_dropout: None,
        neftune: None,
    };
    for b in &batches {
        model.forward_backward(be, b, &mut grads, &opts).unwrap();
    }
    grads_of(model, be, &grads)
}

#[test]
fn checkpointing_and_accumulation_do_not_change_lora_gradients() {
    let be = CpuBackend::new();
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let model = lora_model(&be, name);
        let data = samples(4, 1);
        let one_batch = vec![data.clone()];
        let four_micro: Vec<_> = data.iter().map(|s| vec![s.clone()]).collect();
        let reference = run(&model, &be, TrainMode::Lora, &one_batch, false);
        assert_eq!(reference.len(), 2 * 7 * model.config.num_layers);
        assert_same(&reference, &run(&model, &be, TrainMode::Lora, &one_batch, true), 1e-6, &format!("{name} checkpointing"));
        assert_same(&reference, &run(&model, &be, TrainMode::Lora, &four_micro, true), 1e-5, &format!("{name} 4×1 vs 1×4"));
    }
}

#[test]
fn checkpointing_and_accumulation_do_not_change_full_gradients() {
    let be = CpuBackend::new();
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let model = QwenModel::load(&be, &fixture(name)).unwrap();
        let data = samples(2, 3);
        let reference = run(&model, &be, TrainMode::Full, std::slice::from_ref(&data), false);
        assert_same(
            &reference,
            &run(&model, &be, TrainMode::Full, std::slice::from_ref(&data), true),
            1e-6,
            &format!("{name} full checkpointing"),
        );
        let split: Vec<_> = data.iter().map(|s| vec![s.clone()]).collect();
        assert_same(&reference, &run(&model, &be, TrainMode::Full, &split, true), 1e-5, &format!("{name} full accumulation"));
    }
}

/// Directional finite difference of the mean loss through the whole model, for a few
/// parameter tensors of every kind (embedding, norms, q/k norm, biases, LoRA A and B).
#[test]
fn model_gradients_match_finite_differences() {
    let be = CpuBackend::new();
    let data = samples(2, 5);
    let tb = TrainBatch::from_samples(&data, 4096).unwrap();
    let n = tb.num_targets() as f64;
    for (name, mode, picks) in [
        (
            "tiny-qwen2",
            TrainMode::Full,
            vec![
                "model.layers.0.self_attn.q_proj.bias",
                "model.layers.1.input_layernorm.weight",
                "model.embed_tokens.weight",
                "lm_head.weight",
                "model.norm.weight",
            ],
        ),
        (
            "tiny-qwen3",
            TrainMode::Full,
            vec![
                "model.layers.0.self_attn.q_norm.weight",
                "model.layers.1.self_attn.k_norm.weight",
                "model.layers.0.mlp.down_proj.weight",
                "model.embed_tokens.weight",
            ],
        ),
        (
            "tiny-qwen3",
            TrainMode::Lora,
            vec![
                "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
                "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight",
            ],
        ),
    ] {
        let mut model = if mode == TrainMode::Lora { lora_model(&be, name) } else { QwenModel::load(&be, &fixture(name)).unwrap() };
        let mut grads = model.new_grads(&be, mode).unwrap();
        let opts = BackwardOptions {
            loss_scale: (1.0 / n) as f32,
            gradient_checkpointing: true,
            lora_dropout: None,
            attention_dropout: None,
            neftune: None,
        };
        model.forward_backward(&be, &tb, &mut grads, &opts).unwrap();
        let analytic: std::collections::HashMap<String, Vec<f32>> = grads_of(&model, &be, &grads).into_iter().collect();
        for pick in picks {
            let g = &analytic[pick];
            let mut rng = qtrain_core::rng::Rng::new(3);
            let dir: Vec<f32> = (0..g.len()).map(|_| rng.normal() as f32).collect();
            let exact: f64 = g.iter().zip(&dir).map(|(a, b)| *a as f64 * *b as f64).sum();
            let h = 1e-3f32;
            let mut loss_at = |sign: f32| -> f64 {
                let mut params = model.trainable_params(&grads);
                let p = params.iter_mut().find(|p| p.name == pick).unwrap();
                let orig = be.download(p.param).unwrap();
                let moved: Vec<f32> = orig.iter().zip(&dir).map(|(x, d)| x + sign * h * d).collect();
                *p.param = be.upload(qtrain_core::HostData::F32(&moved), p.param.shape()).unwrap();
                drop(params);
                let l = model.evaluate(&be, &tb).unwrap().loss_sum / n;
                let mut params = model.trainable_params(&grads);
                let p = params.iter_mut().find(|p| p.name == pick).unwrap();
                *p.param = be.upload(qtrain_core::HostData::F32(&orig), p.param.shape()).unwrap();
                l
            };
            let numeric = (loss_at(1.0) - loss_at(-1.0)) / (2.0 * h as f64);
            let tol = 2e-2 * exact.abs().max(numeric.abs()) + 1e-4;
            assert!((numeric - exact).abs() <= tol, "{name} {pick}: finite difference {numeric}, analytic {exact}");
        }
    }
}

/// Attention dropout (issue 15): p = 0 changes nothing bit for bit; p > 0 changes the training
/// loss, the same seed gives the same result with and without checkpointing (the recompute and
/// the backward redraw the forward's masks), and evaluation never drops anything.
#[test]
fn attention_dropout_is_exact_at_zero_repeatable_and_training_only() {
    let be = CpuBackend::new();
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let mut model = lora_model(&be, name);
        let tb = TrainBatch::from_samples(&samples(3, 2), 4096).unwrap();
        let pass = |model: &QwenModel<CpuBackend>, attention_dropout: Option<(f32, u64)>, checkpointing: bool| {
            let mut grads = model.new_grads(&be, TrainMode::Lora).unwrap();
            let opts = BackwardOptions {
                loss_scale: 1.0 / tb.num_targets() as f32,
                gradient_checkpointing: checkpointing,
                lora_dropout: None,
                attention_dropout,
                neftune: None,
            };
            let stats = model.forward_backward(&be, &tb, &mut grads, &opts).unwrap();
            (stats.loss_sum, grads_of(model, &be, &grads))
        };
        let (loss, grads) = pass(&model, None, true);
        let (loss0, grads0) = pass(&model, Some((0.0, 11)), true);
        assert_eq!(loss.to_bits(), loss0.to_bits(), "{name}: p = 0 changed the loss");
        assert_eq!(grads, grads0, "{name}: p = 0 changed a gradient");
        let (loss_d, grads_d) = pass(&model, Some((0.3, 11)), true);
        assert_ne!(loss_d, loss, "{name}: p = 0.3 dropped nothing");
        let (loss_d2, grads_d2) = pass(&model, Some((0.3, 11)), false);
        assert!((loss_d2 - loss_d).abs() <= 1e-6 * loss_d.abs(), "{name}: checkpointing changed the dropped loss");
        assert_same(&grads_d, &grads_d2, 1e-4, "attention dropout with and without checkpointing");
        // Evaluation ignores config.json's attention_dropout.
        let before = model.evaluate(&be, &tb).unwrap().loss_sum;
        model.config.attention_dropout = 0.5;
        assert_eq!(model.evaluate(&be, &tb).unwrap().loss_sum.to_bits(), before.to_bits(), "{name}: eval dropped");
    }
}
