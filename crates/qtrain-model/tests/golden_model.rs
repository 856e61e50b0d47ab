//! The model is the same function as transformers' Qwen2ForCausalLM / Qwen3ForCausalLM:
//! logits over a right-padded batch, with and without a PEFT adapter, and greedy generation
//! token for token, against references dumped by `tools/make_fixtures.py`.

mod common;

use common::{fixture, max_relative_error, Reference, REGENERATE};
use qtrain_core::{Backend, CpuBackend};
use qtrain_model::generate::{generate, generate_batch, GenerateOptions, StopReason};
use qtrain_model::{Batch, LoraAdapter, QwenModel, Sampler, SamplingParams};

/// Logits tolerance for an f32 model against transformers in f32.
const LOGITS_TOL: f64 = 1e-4;

fn reference_batch(r: &Reference) -> Batch {
    let (shape, ids) = r.ints("batch.input_ids");
    let (_, mask) = r.ints("batch.attention_mask");
    let (_, pos) = r.ints("batch.position_ids");
    Batch {
        ids: ids.iter().map(|&x| x as u32).collect(),
        batch: shape[0],
        seq_len: shape[1],
        positions: pos.iter().map(|&x| x as u32).collect(),
        valid: mask.iter().map(|&m| m != 0).collect(),
        segments: None,
    }
}

/// Compare logits at the valid (non-padding) positions only.
fn check_logits(model: &QwenModel<CpuBackend>, be: &CpuBackend, r: &Reference, key: &str, what: &str) {
    let batch = reference_batch(r);
    let logits = be.download(&model.forward_logits(be, &batch).unwrap()).unwrap();
    let (shape, want) = r.f32(key);
    let v = shape[2];
    let (mut got_valid, mut want_valid) = (vec![], vec![]);
    for (row, &valid) in batch.valid.iter().enumerate() {
        if valid {
            got_valid.extend_from_slice(&logits[row * v..(row + 1) * v]);
            want_valid.extend_from_slice(&want[row * v..(row + 1) * v]);
        }
    }
    let err = max_relative_error(&got_valid, &want_valid);
    eprintln!("{what}: max relative logits error {err:.2e} over {} positions", got_valid.len() / v);
    assert!(err <= LOGITS_TOL, "{what}: logits differ from transformers by {err:.3e} (> {LOGITS_TOL}); {REGENERATE}");
}

fn check_greedy(model: &QwenModel<CpuBackend>, be: &CpuBackend, r: &Reference, key: &str, repetition_penalty: f32, what: &str) {
    let prompt = r.u32s("greedy.prompt_ids");
    let want = r.u32s(key);
    assert!(want.len() >= 32, "reference generation too short; {REGENERATE}");
    let gen_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{}/generation_config.json", base_name(what)))).unwrap()).unwrap();
    let stop_ids: Vec<u32> = gen_cfg["eos_token_id"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let opts = GenerateOptions { max_new_tokens: want.len(), stop_ids };
    let mut sampler = Sampler::new(SamplingParams { repetition_penalty, ..SamplingParams::default() }, 0);
    let out = generate(model, be, &prompt, &opts, &mut sampler, |_| true).unwrap();
    assert_eq!(out.tokens, want, "{what}: greedy generation differs from transformers' generate; {REGENERATE}");
}

fn base_name(what: &str) -> &str {
    what.split_whitespace().next().unwrap()
}

fn run_model_checks(name: &str, lora: &str, lora_greedy: bool) {
    let be = CpuBackend::new();
    let dir = fixture(name);
    let r = Reference::open(name);
    let mut model = QwenModel::load(&be, &dir).unwrap();
    check_logits(&model, &be, &r, "batch.logits", name);
    check_greedy(&model, &be, &r, "greedy.output_ids", 1.0, name);
    if r.has("greedy.output_ids_reppen") {
        check_greedy(&model, &be, &r, "greedy.output_ids_reppen", 1.05, &format!("{name} repetition_penalty"));
    }
    let adapter = LoraAdapter::load(&fixture(lora), &model.config).unwrap();
    adapter.attach(&be, &mut model).unwrap();
    check_logits(&model, &be, &r, "batch.logits_lora", &format!("{name} + {lora}"));
    if lora_greedy {
        check_greedy(&model, &be, &r, "greedy.output_ids_lora", 1.0, &format!("{name} + {lora}"));
    }
}

#[test]
fn tiny_qwen2_matches_transformers() {
    run_model_checks("tiny-qwen2", "tiny-qwen2-lora", true);
}

#[test]
fn tiny_qwen3_sharded_tied_qk_norm_matches_transformers() {
    run_model_checks("tiny-qwen3", "tiny-qwen3-lora", true);
}

#[test]
fn bf16_checkpoint_is_widened_exactly() {
    let be = CpuBackend::new();
    let name = "tiny-qwen2-bf16";
    let model = QwenModel::load(&be, &fixture(name)).unwrap();
    check_logits(&model, &be, &Reference::open(name), "batch.logits", name);
}

#[test]
fn kv_cache_decoding_equals_a_full_forward() {
    let be = CpuBackend::new();
    let model = QwenModel::load(&be, &fixture("tiny-qwen3")).unwrap();
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 4000).collect();
    let full = be.download(&model.forward_logits(&be, &Batch::single(&ids, 0)).unwrap()).unwrap();
    let mut cache = qtrain_model::KvCache::new(&be, &model.config, 1, 16).unwrap();
    let v = model.config.vocab_size;
    let h = model.forward_hidden(&be, &Batch::single(&ids[..7], 0), Some(&mut cache)).unwrap();
    let first = be.download(&model.logits_for_rows(&be, &h, &[6]).unwrap()).unwrap();
    assert!(max_relative_error(&first, &full[6 * v..7 * v]) < 1e-5);
    for (p, &id) in ids.iter().enumerate().skip(7) {
        let h = model.forward_hidden(&be, &Batch::single(&[id], p as u32), Some(&mut cache)).unwrap();
        let step = be.download(&model.logits_for_rows(&be, &h, &[0]).unwrap()).unwrap();
        assert!(max_relative_error(&step, &full[p * v..(p + 1) * v]) < 1e-5, "position {p}");
    }
}

/// Prompts of different lengths generated together (right-padded, one decode step for all
/// rows) give each row the greedy tokens it gets alone, rows stop independently, and a row
/// that reaches the context limit stops there instead of failing.
#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let be = CpuBackend::new();
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let mut model = QwenModel::load(&be, &fixture(name)).unwrap();
        let r = Reference::open(name);
        let full = r.u32s("greedy.prompt_ids");
        let prompts: Vec<Vec<u32>> =
            vec![full.clone(), full[..full.len() / 2].to_vec(), full[3..].to_vec(), (0..5).map(|i| (i * 97 + 11) % 4000).collect()];
        for with_lora in [false, true] {
            if with_lora {
                LoraAdapter::load(&fixture(&format!("{name}-lora")), &model.config).unwrap().attach(&be, &mut model).unwrap();
            }
            // The first row stops at an id of its own single-prompt reply, so rows finish at different steps.
            let alone = |p: &[u32], opts: &GenerateOptions| {
                let mut sampler = Sampler::new(SamplingParams::default(), 0);
                generate(&model, &be, p, opts, &mut sampler, |_| true).unwrap()
            };
            let probe = alone(&prompts[0], &GenerateOptions { max_new_tokens: 20, stop_ids: vec![] });
            let first_new = (5..20).find(|&j| !probe.tokens[..j].contains(&probe.tokens[j])).expect("a reply of 20 distinct-enough tokens");
            let opts = GenerateOptions { max_new_tokens: 20, stop_ids: vec![probe.tokens[first_new]] };
            let mut samplers = vec![Sampler::new(SamplingParams::default(), 0); prompts.len()];
            let mut seen = vec![0usize; prompts.len()];
            let batch = generate_batch(&model, &be, &prompts, &opts, usize::MAX, &mut samplers, |row, _| {
                seen[row] += 1;
                true
            })
            .unwrap();
            for (i, (p, got)) in prompts.iter().zip(&batch).enumerate() {
                let want = alone(p, &opts);
                assert_eq!(got.tokens, want.tokens, "{name} (LoRA {with_lora}) row {i}: batched greedy tokens differ");
                assert_eq!((got.stop, seen[i]), (want.stop, want.tokens.len()), "{name} row {i}");
            }
            assert_eq!((batch[0].stop, batch[0].tokens.len()), (StopReason::StopToken, first_new + 1));
            // A limit of prompt + 4 tokens: the longest row fills it, the others do not.
            let limit = full.len() + 4;
            let limited = generate_batch(&model, &be, &prompts, &opts, limit, &mut samplers, |_, _| true).unwrap();
            assert_eq!((limited[0].stop, limited[0].tokens.len()), (StopReason::ContextFull, 4), "{name}");
            for (i, (got, unlimited)) in limited.iter().zip(&batch).enumerate() {
                assert_eq!(got.tokens[..], unlimited.tokens[..got.tokens.len()], "{name} row {i}");
                let full_context = prompts[i].len() + got.tokens.len() == limit;
                assert_eq!(got.stop == StopReason::ContextFull, full_context && got.stop != StopReason::StopToken, "{name} row {i}");
            }
        }
    }
}
