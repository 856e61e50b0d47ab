//! Golden tests against torch/transformers: the fixtures in `tests/fixtures/schedules/` are
//! produced by `tools/dump_schedules.py` and committed; these tests need neither Python nor
//! network. The AdamW case steps the shipped pieces: the CPU backend's `sum_squares` and
//! `adamw_step` ops with this crate's clip coefficient and step scalars, decay groups as
//! `qtrain_model::AdamW` forms them (the golden training test checks that type end to end).

use std::collections::BTreeMap;
use std::path::PathBuf;

use qtrain_core::{Backend, CpuBackend, CpuTensor, HostData};
use qtrain_optim::{clip_coefficient, norm_from_sum_of_squares, AdamWHyper, LrSchedule, ScheduleConfig, ScheduleKind};
use serde::Deserialize;

const REGENERATE: &str = "regenerate with `python3 tools/dump_schedules.py` (needs torch + transformers)";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/schedules").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()))
}

#[derive(Deserialize)]
struct ScheduleFixture {
    transformers_version: String,
    cases: Vec<ScheduleCase>,
}

#[derive(Deserialize)]
struct ScheduleCase {
    reference: String,
    config: ScheduleConfig,
    num_warmup_steps: u64,
    lrs: Vec<f64>,
}

#[test]
fn schedules_match_transformers_get_scheduler() {
    let fixture: ScheduleFixture =
        serde_json::from_str(&fixture("schedules.json")).unwrap_or_else(|e| panic!("schedules.json does not parse: {e}; {REGENERATE}"));
    assert!(fixture.cases.len() >= 20, "too few cases; {REGENERATE}");
    let mut kinds_seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let label = format!("{} ({})", serde_json::to_string(&case.config).unwrap(), case.reference);
        let schedule = LrSchedule::new(case.config.clone()).unwrap_or_else(|e| panic!("{label}: rejected: {e}"));
        kinds_seen.insert(schedule.kind().as_str());
        // Our ratio -> steps conversion equals TrainingArguments.get_warmup_steps ...
        assert_eq!(
            case.config.warmup.steps(case.config.total_steps),
            case.num_warmup_steps,
            "{label}: warmup steps differ from transformers; {REGENERATE}"
        );
        // ... and `constant` ignores it, as get_scheduler does.
        let expected_warmup = if schedule.kind() == ScheduleKind::Constant { 0 } else { case.num_warmup_steps };
        assert_eq!(schedule.warmup_steps(), expected_warmup, "{label}");
        assert!(case.lrs.len() > case.config.total_steps as usize, "{label}: short fixture");
        for (step, &want) in case.lrs.iter().enumerate() {
            let got = schedule.lr_at(step as u64);
            let err = (got - want).abs();
            if !(err <= 1e-15 || err <= 1e-9 * want.abs()) {
                failures.push(format!("{label}: step {step}: qtrain {got:e}, transformers {want:e}"));
            }
        }
    }
    for kind in ScheduleKind::ALL {
        assert!(kinds_seen.contains(kind.as_str()), "no fixture case for {kind}; {REGENERATE}");
    }
    assert!(
        failures.is_empty(),
        "{} lr values differ from transformers {} (rel 1e-9 / abs 1e-15); {REGENERATE}\n{}",
        failures.len(),
        fixture.transformers_version,
        failures[..failures.len().min(20)].join("\n")
    );
}

type Tensors = BTreeMap<String, Vec<f64>>;

#[derive(Deserialize)]
struct AdamWFixture {
    torch_version: String,
    cases: Vec<AdamWCase>,
}

#[derive(Deserialize)]
struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
}

#[derive(Deserialize)]
struct Group {
    weight_decay: f64,
    params: Vec<String>,
}

#[derive(Deserialize)]
struct AdamWCase {
    name: String,
    hyper: Hyper,
    max_norm: f64,
    groups: Vec<Group>,
    initial: Tensors,
    steps: Vec<AdamWStepRecord>,
}

#[derive(Deserialize)]
struct AdamWStepRecord {
    lr: f64,
    grads: Tensors,
    total_norm: f64,
    clipped_grads: Tensors,
    params: Tensors,
    exp_avg: Tensors,
    exp_avg_sq: Tensors,
    step: f64,
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Relative error <= 1e-6, relative to the tensor's largest magnitude (an absolute floor of
/// 1e-30 for all-zero tensors). Per-tensor rather than per-element because torch's f32 grad norm
/// can be 1 ulp off the correctly rounded one we compute, and the moments' running averages can
/// cancel down to small elements that amplify that difference (seen: 1.2e-6 on one exp_avg
/// element whose tensor agrees to 1e-7).
fn check_close(what: &str, got: &[f32], want: &[f64], failures: &mut Vec<String>) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        if !(err <= 1e-6 * scale.max(w.abs()) || err <= 1e-30) {
            failures.push(format!("{what}[{i}]: qtrain {g:e}, torch {w:e}"));
        }
    }
}

/// One parameter's tensors on the CPU backend: value and torch's two moments.
struct ParamState {
    param: CpuTensor,
    exp_avg: CpuTensor,
    exp_avg_sq: CpuTensor,
}

impl ParamState {
    fn new(be: &CpuBackend, initial: &[f64]) -> Self {
        let n = initial.len();
        ParamState {
            param: be.upload(HostData::F32(&to_f32(initial)), &[n]).unwrap(),
            exp_avg: be.zeros(&[n]).unwrap(),
            exp_avg_sq: be.zeros(&[n]).unwrap(),
        }
    }
}

#[test]
fn adamw_with_clipping_matches_torch() {
    let fixture: AdamWFixture =
        serde_json::from_str(&fixture("adamw.json")).unwrap_or_else(|e| panic!("adamw.json does not parse: {e}; {REGENERATE}"));
    assert!(!fixture.cases.is_empty(), "no cases; {REGENERATE}");
    let be = CpuBackend::new();
    let mut failures = Vec::new();
    let (mut clipped_steps, mut unclipped_steps) = (0, 0);
    for case in &fixture.cases {
        let hyper = AdamWHyper { beta1: case.hyper.beta1, beta2: case.hyper.beta2, eps: case.hyper.eps, weight_decay: 0.0 };
        let mut state: BTreeMap<&str, ParamState> = case.initial.iter().map(|(n, v)| (n.as_str(), ParamState::new(&be, v))).collect();
        assert!(
            case.groups.iter().any(|g| g.weight_decay == 0.0) && case.groups.iter().any(|g| g.weight_decay > 0.0),
            "{}: expected a decay and a no-decay group",
            case.name
        );

        for (si, rec) in case.steps.iter().enumerate() {
            let step = si as u64 + 1;
            assert_eq!(step as f64, rec.step, "{}: step counter", case.name);
            let label = format!("{} step {step}", case.name);
            let grads: BTreeMap<&str, CpuTensor> =
                rec.grads.iter().map(|(n, v)| (n.as_str(), be.upload(HostData::F32(&to_f32(v)), &[v.len()]).unwrap())).collect();
            let sum_sq: f64 = grads.values().map(|g| be.sum_squares(g).unwrap()).sum();
            let norm = norm_from_sum_of_squares(sum_sq);
            let scale = clip_coefficient(norm, case.max_norm);
            if (norm - rec.total_norm).abs() > 1e-6 * rec.total_norm {
                failures.push(format!("{label}: total norm qtrain {norm}, torch {}", rec.total_norm));
            }
            if scale < 1.0 {
                clipped_steps += 1;
            } else {
                unclipped_steps += 1;
            }
            for (n, g) in &grads {
                let clipped: Vec<f32> = g.data().iter().map(|x| x * scale).collect();
                check_close(&format!("{label} clipped grad {n}"), &clipped, &rec.clipped_grads[*n], &mut failures);
            }
            for group in &case.groups {
                let scalars = hyper.with_weight_decay(group.weight_decay).scalars(step, rec.lr, scale);
                for n in &group.params {
                    let p = state.get_mut(n.as_str()).unwrap();
                    be.adamw_step(&mut p.param, &grads[n.as_str()], &mut p.exp_avg, &mut p.exp_avg_sq, &scalars).unwrap();
                    check_close(&format!("{label} param {n}"), p.param.data(), &rec.params[n], &mut failures);
                    check_close(&format!("{label} exp_avg {n}"), p.exp_avg.data(), &rec.exp_avg[n], &mut failures);
                    check_close(&format!("{label} exp_avg_sq {n}"), p.exp_avg_sq.data(), &rec.exp_avg_sq[n], &mut failures);
                }
            }
        }
    }
    assert!(clipped_steps > 0 && unclipped_steps > 0, "fixture must exercise both clipped and unclipped steps; {REGENERATE}");
    assert!(
        failures.is_empty(),
        "{} values differ from torch {} (rel 1e-6); {REGENERATE}\n{}",
        failures.len(),
        fixture.torch_version,
        failures[..failures.len().min(20)].join("\n")
    );
}
