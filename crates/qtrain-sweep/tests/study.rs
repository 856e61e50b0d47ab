//! End-to-end behaviour of a `Study` on disk: resume, grid coverage, failures, pruning inside a
//! study, result tables and the best-config TOML.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use qtrain_sweep::sampler::grid_values;
use qtrain_sweep::{
    Metric, ParamValue, Params, PrunerConfig, SamplerConfig, SearchSpace, StopReason, Study, StudyConfig, SweepError, TpeConfig, Trial,
    TrialOutcome, TrialRecord, TrialStatus, TRIALS_FILE,
};

fn space() -> SearchSpace {
    SearchSpace::parse(&["learning_rate=loguniform:1e-5:1e-3", "num_train_epochs=int:1:8", "lr_scheduler_type=choice:cosine,linear"])
        .unwrap()
}

fn config(sampler: SamplerConfig, pruner: PrunerConfig) -> StudyConfig {
    StudyConfig { space: space(), metric: Metric::new("eval_loss", None).unwrap(), sampler, pruner, seed: 42 }
}

fn tpe(n_startup_trials: Option<usize>) -> SamplerConfig {
    SamplerConfig::Tpe(TpeConfig { n_startup_trials, ..TpeConfig::default() })
}

fn float(p: &Params, name: &str) -> f64 {
    p.get(name).and_then(ParamValue::as_f64).unwrap()
}

/// A fake training run: eval loss over 10 evaluations (every 10 steps) decays towards a floor
/// set by the parameters (best near lr = 1e-4, more epochs, cosine).
fn fake_run(trial: &Trial) -> Result<TrialOutcome, String> {
    let p = trial.params();
    let floor = (float(p, "learning_rate").log10() + 4.0).powi(2)
        + 0.5 / float(p, "num_train_epochs")
        + if p.get("lr_scheduler_type").and_then(ParamValue::as_str) == Some("linear") { 0.1 } else { 0.0 };
    for eval in 1..=10u64 {
        if trial.report(eval * 10, floor + 1.0 / eval as f64).is_prune() {
            return Ok(TrialOutcome::Pruned);
        }
    }
    Ok(TrialOutcome::Complete { metric: floor + 0.1 })
}

/// A record less its run directory.
type Outcome = (usize, Params, TrialStatus, Option<f64>, Vec<(u64, f64)>);

/// Everything but the run directory, which names the study folder.
fn outcomes(trials: &[TrialRecord]) -> Vec<Outcome> {
    trials.iter().map(|r| (r.trial, r.params.clone(), r.status, r.metric, r.intermediate.clone())).collect()
}

fn append_torn_line(dir: &Path) {
    let path = dir.join(TRIALS_FILE);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(r#"{"trial": 99, "params": {"learning_rate": 0.0001, "num_tr"#);
    fs::write(&path, text).unwrap();
}

#[test]
fn an_interrupted_study_resumes_with_exactly_the_same_trials() {
    let cfg = config(tpe(Some(5)), PrunerConfig::median());
    let tmp = tempfile::tempdir().unwrap();
    let mut full = Study::create_or_resume(tmp.path().join("full"), cfg.clone()).unwrap();
    full.run(20, fake_run).unwrap();
    let statuses: Vec<TrialStatus> = full.trials().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&TrialStatus::Pruned) && statuses.contains(&TrialStatus::Complete), "{statuses:?}");

    // The same study stopped after 8 trials, with a torn 9th line (a crash mid-write).
    let dir = tmp.path().join("split");
    let mut first = Study::create_or_resume(&dir, cfg.clone()).unwrap();
    assert_eq!(first.run(8, fake_run).unwrap().ran, 8);
    drop(first);
    append_torn_line(&dir);
    let mut resumed = Study::create_or_resume(&dir, cfg).unwrap();
    assert_eq!(resumed.warnings().len(), 1, "{:?}", resumed.warnings());
    assert!(resumed.warnings()[0].contains("line 9"), "{}", resumed.warnings()[0]);
    assert_eq!(resumed.trials().len(), 8);
    let mut called = Vec::new();
    let summary = resumed
        .run(20, |t| {
            called.push(t.number());
            fake_run(t)
        })
        .unwrap();
    assert_eq!((summary.resumed_from, summary.ran), (8, 12));
    assert_eq!(called, (8..20).collect::<Vec<_>>(), "finished trials are not run again");
    assert_eq!(outcomes(resumed.trials()), outcomes(full.trials()));
    // The file was repaired: 20 valid lines, and reopening it warns no more.
    let text = fs::read_to_string(dir.join(TRIALS_FILE)).unwrap();
    assert_eq!(text.lines().count(), 20);
    assert!(text.lines().all(|l| serde_json::from_str::<TrialRecord>(l).is_ok()));
    let reopened = Study::create_or_resume(&dir, resumed.config().clone()).unwrap();
    assert!(reopened.warnings().is_empty());
    assert_eq!(outcomes(reopened.trials()), outcomes(full.trials()));
}

/// With the default number of TPE startup trials (which depends on `n_trials`), a crash
/// during a `run(n)` resumed by the same `run(n)` also reproduces the sequence; the crash is
/// simulated by cutting the finished study's files back to 11 trials plus a torn line.
#[test]
fn a_crashed_study_with_default_settings_resumes_identically() {
    let cfg = config(tpe(None), PrunerConfig::asha());
    let tmp = tempfile::tempdir().unwrap();
    let mut full = Study::create_or_resume(tmp.path().join("full"), cfg.clone()).unwrap();
    full.run(16, fake_run).unwrap();

    let dir = tmp.path().join("crashed");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(tmp.path().join("full/study.json"), dir.join("study.json")).unwrap();
    let lines: Vec<String> = fs::read_to_string(tmp.path().join("full").join(TRIALS_FILE)).unwrap().lines().map(String::from).collect();
    fs::write(dir.join(TRIALS_FILE), lines[..11].join("\n") + "\n" + &lines[11][..40]).unwrap();

    let mut resumed = Study::create_or_resume(&dir, cfg).unwrap();
    assert_eq!((resumed.trials().len(), resumed.warnings().len()), (11, 1));
    resumed.run(16, fake_run).unwrap();
    assert_eq!(outcomes(resumed.trials()), outcomes(full.trials()));
}

#[test]
fn grid_search_visits_every_point_exactly_once_then_stops() {
    let space = SearchSpace::parse(&[
        "warmup_ratio=uniform:0.05:0.2",
        "num_train_epochs=int:2:3",
        "lr_scheduler_type=choice:cosine,linear,constant",
    ])
    .unwrap();
    let cfg = StudyConfig {
        space: space.clone(),
        metric: Metric::new("eval_loss", None).unwrap(),
        sampler: SamplerConfig::Grid { grid_points: 3 },
        pruner: PrunerConfig::None,
        seed: 1,
    };
    let key = |p: &Params| serde_json::to_string(p).unwrap();
    let mut expected = HashSet::new();
    let axes: Vec<Vec<ParamValue>> = space.params().iter().map(|p| grid_values(&p.distribution, 3)).collect();
    for a in &axes[0] {
        for b in &axes[1] {
            for c in &axes[2] {
                let mut p = Params::new();
                p.insert("warmup_ratio", a.clone());
                p.insert("num_train_epochs", b.clone());
                p.insert("lr_scheduler_type", c.clone());
                expected.insert(key(&p));
            }
        }
    }
    assert_eq!(expected.len(), 18);

    let tmp = tempfile::tempdir().unwrap();
    let mut study = Study::create_or_resume(tmp.path().join("grid"), cfg.clone()).unwrap();
    let summary = study.run(100, |t| Ok(TrialOutcome::Complete { metric: float(t.params(), "warmup_ratio") })).unwrap();
    assert_eq!(summary.ran, 18);
    assert_eq!(summary.stopped, Some(StopReason::GridExhausted { grid_size: 18 }));
    let seen: Vec<String> = study.trials().iter().map(|r| key(&r.params)).collect();
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected, "every point, none twice");
    assert_eq!(seen.len(), 18);
    // Running again proposes nothing more.
    let again = study.run(100, |_| panic!("no point is left")).unwrap();
    assert_eq!((again.ran, again.stopped), (0, Some(StopReason::GridExhausted { grid_size: 18 })));

    // Interrupted after 7 points, the grid continues in the same order.
    let dir = tmp.path().join("grid-split");
    Study::create_or_resume(&dir, cfg.clone()).unwrap().run(7, |_| Ok(TrialOutcome::Complete { metric: 0.0 })).unwrap();
    let mut resumed = Study::create_or_resume(&dir, cfg).unwrap();
    resumed.run(100, |_| Ok(TrialOutcome::Complete { metric: 0.0 })).unwrap();
    assert_eq!(resumed.trials().iter().map(|r| key(&r.params)).collect::<Vec<_>>(), seen);
}

#[test]
fn failing_trials_are_recorded_and_the_study_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut study = Study::create_or_resume(tmp.path(), config(SamplerConfig::Random, PrunerConfig::None)).unwrap();
    let summary = study
        .run(7, |t| match t.number() {
            1 => panic!("CUDA out of memory"),
            3 => Err("loss diverged to inf at step 12".to_string()),
            4 => Ok(TrialOutcome::Complete { metric: f64::NAN }),
            5 => {
                let _ = t.report(10, 0.9);
                panic!("{}", format!("dataloader worker {} died", 2));
            }
            _ => fake_run(t),
        })
        .unwrap();
    assert_eq!(summary.ran, 7);
    let t = study.trials();
    let status: Vec<TrialStatus> = t.iter().map(|r| r.status).collect();
    use TrialStatus::{Complete, Failed};
    assert_eq!(status, [Complete, Failed, Complete, Failed, Failed, Failed, Complete]);
    assert_eq!(t[1].reason.as_deref(), Some("objective panicked: CUDA out of memory"));
    assert_eq!(t[3].reason.as_deref(), Some("objective error: loss diverged to inf at step 12"));
    assert!(t[4].reason.as_deref().unwrap().contains("non-finite metric"));
    assert_eq!(t[5].reason.as_deref(), Some("objective panicked: dataloader worker 2 died"));
    assert_eq!(t[5].intermediate, [(10, 0.9)], "reports before the failure are kept");
    assert!(t.iter().filter(|r| r.status == Failed).all(|r| r.metric.is_none()));
    // All seven are on disk, and a resumed study sees them.
    let lines = fs::read_to_string(tmp.path().join(TRIALS_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 7);
    let resumed = Study::create_or_resume(tmp.path(), study.config().clone()).unwrap();
    assert_eq!(resumed.trials(), study.trials());
}

#[test]
fn trials_jsonl_lines_have_the_documented_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let mut study = Study::create_or_resume(tmp.path(), config(SamplerConfig::Random, PrunerConfig::None)).unwrap();
    study.run(1, fake_run).unwrap();
    let line = fs::read_to_string(tmp.path().join(TRIALS_FILE)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["trial", "params", "status", "reason", "metric", "intermediate", "run_dir"]);
    assert_eq!(v["trial"], 0);
    assert_eq!(v["status"], "complete");
    assert!(v["reason"].is_null() && v["metric"].is_f64());
    assert!(v["params"]["learning_rate"].is_f64());
    assert!(v["params"]["num_train_epochs"].is_i64());
    assert!(v["params"]["lr_scheduler_type"].is_string());
    assert_eq!(v["intermediate"][0][0], 10);
    assert!(v["intermediate"][0][1].is_f64());
    assert!(v["run_dir"].as_str().unwrap().ends_with("trial_0000"));
}

/// Curves `q·(1 + 10/step)` reported at steps 1..=10, with `q` chosen by trial number.
fn curve_run(qs: &'static [f64]) -> impl FnMut(&Trial) -> Result<TrialOutcome, String> {
    move |t: &Trial| {
        let q = qs[t.number()];
        for s in 1..=10u64 {
            if t.report(s, q * (1.0 + 10.0 / s as f64)).is_prune() {
                return Ok(TrialOutcome::Pruned);
            }
        }
        Ok(TrialOutcome::Complete { metric: q * 2.0 })
    }
}

#[test]
fn median_pruner_in_a_study_prunes_below_median_curves_and_keeps_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut study = Study::create_or_resume(tmp.path(), config(SamplerConfig::Random, PrunerConfig::median())).unwrap();
    // Five startup trials q = 1..5 complete; then q = 4 (worse than the median q = 3) is pruned
    // at the first report, q = 2 and q = 0.5 run to the end, q = 3.5 is pruned.
    study.run(9, curve_run(&[1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 2.0, 0.5, 3.5])).unwrap();
    let status: Vec<TrialStatus> = study.trials().iter().map(|r| r.status).collect();
    use TrialStatus::{Complete, Pruned};
    assert_eq!(status, [Complete, Complete, Complete, Complete, Complete, Pruned, Complete, Complete, Pruned]);
    let pruned = &study.trials()[5];
    assert_eq!(pruned.intermediate.len(), 1, "stopped at its first report");
    assert_eq!(pruned.reason.as_deref(), Some("pruned by the median pruner at step 1 (value 44)"));
    assert_eq!(study.best().unwrap().trial, 7);
}

#[test]
fn asha_in_a_study_keeps_the_top_third_at_each_rung() {
    let tmp = tempfile::tempdir().unwrap();
    let mut study = Study::create_or_resume(tmp.path(), config(SamplerConfig::Random, PrunerConfig::asha())).unwrap();
    // Rungs at steps 1, 3, 9. See `pruner::tests::asha_keeps_the_top_fraction_of_each_rung`
    // for the same order worked by hand: q = 4 and 6 fall at rung 0, q = 2 at rung 1.
    study.run(6, curve_run(&[5.0, 3.0, 4.0, 1.0, 6.0, 2.0])).unwrap();
    let got: Vec<(TrialStatus, usize)> = study.trials().iter().map(|r| (r.status, r.intermediate.len())).collect();
    use TrialStatus::{Complete, Pruned};
    assert_eq!(got, [(Complete, 10), (Complete, 10), (Pruned, 1), (Complete, 10), (Pruned, 1), (Pruned, 3)]);
    assert!(study.trials()[5].reason.as_deref().unwrap().contains("asha pruner at step 3"));
    assert_eq!(study.best().unwrap().trial, 3, "the best curve survives every rung");
}

#[test]
fn results_table_and_best_toml_are_direction_aware() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(SamplerConfig::Random, PrunerConfig::None);
    cfg.metric = Metric::new("eval_token_acc", None).unwrap();
    let mut study = Study::create_or_resume(tmp.path().join("acc"), cfg).unwrap();
    // Accuracy grows with the number of epochs; trial 2 fails.
    study
        .run(6, |t| {
            if t.number() == 2 {
                return Err("boom".into());
            }
            Ok(TrialOutcome::Complete { metric: float(t.params(), "num_train_epochs") / 10.0 + t.number() as f64 * 1e-3 })
        })
        .unwrap();
    let complete: Vec<&TrialRecord> = study.trials().iter().filter(|r| r.status == TrialStatus::Complete).collect();
    let max = complete.iter().map(|r| r.metric.unwrap()).fold(f64::MIN, f64::max);
    let best = study.best().unwrap();
    assert_eq!(best.metric, Some(max));
    assert_eq!(study.best_params(), Some(&best.params));

    let table = study.results_table();
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("trial") && rows[0].contains("eval_token_acc") && rows[0].contains("learning_rate"), "{table}");
    assert!(rows[1].starts_with(&best.trial.to_string()), "best first:\n{table}");
    assert!(rows.last().unwrap().contains("failed") && rows.last().unwrap().contains("objective error: boom"), "{table}");
    let metrics: Vec<f64> = study.ranked().iter().filter_map(|r| r.metric).collect();
    assert!(metrics.windows(2).all(|w| w[0] >= w[1]), "sorted by accuracy, descending: {metrics:?}");

    let base: toml::Table =
        toml::from_str("model = \"Qwen/Qwen2.5-0.5B-Instruct\"\nnum_train_epochs = 3.0\nlearning_rate = 1e-4\n").unwrap();
    let path = tmp.path().join("best.toml");
    study.write_best_toml(&path, &base).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("# Best trial {} of the sweep", best.trial)), "{text}");
    assert!(text.contains("qtrain train --config"));
    let back: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(back["model"].as_str(), Some("Qwen/Qwen2.5-0.5B-Instruct"));
    assert_eq!(back["learning_rate"].as_float(), best.params.get("learning_rate").unwrap().as_f64());
    let epochs = best.params.get("num_train_epochs").unwrap().as_i64().unwrap();
    assert_eq!(back["num_train_epochs"].as_float(), Some(epochs as f64), "float where the base had a float");
    assert_eq!(back["lr_scheduler_type"].as_str(), best.params.get("lr_scheduler_type").unwrap().as_str());

    let empty = Study::create_or_resume(tmp.path().join("empty"), config(SamplerConfig::Random, PrunerConfig::None)).unwrap();
    assert!(matches!(empty.best_toml(&base), Err(SweepError::NoCompletedTrial { .. })));
}

#[test]
fn resuming_checks_the_config_and_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(SamplerConfig::Random, PrunerConfig::None);
    Study::create_or_resume(tmp.path(), cfg.clone()).unwrap().run(3, fake_run).unwrap();

    let mut other_seed = cfg.clone();
    other_seed.seed = 43;
    let err = Study::create_or_resume(tmp.path(), other_seed).unwrap_err().to_string();
    assert!(err.contains("seed = 42") && err.contains("43") && err.contains("another directory"), "{err}");
    let mut other_pruner = cfg.clone();
    other_pruner.pruner = PrunerConfig::asha();
    assert!(Study::create_or_resume(tmp.path(), other_pruner).unwrap_err().to_string().contains("pruner"));
    // The same space written differently is the same space.
    let mut respelled = cfg.clone();
    respelled.space = SearchSpace::parse(&[
        "learning_rate=loguniform:0.00001:0.001",
        "num_train_epochs=int:1:8",
        "lr_scheduler_type=choice:cosine,linear",
    ])
    .unwrap();
    assert_eq!(Study::create_or_resume(tmp.path(), respelled).unwrap().trials().len(), 3);

    // A bad line before the last one is an error naming it, not a warning.
    let path = tmp.path().join(TRIALS_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"trial\": 1, \"params\": ";
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = Study::create_or_resume(tmp.path(), cfg.clone()).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    // So is a record whose params are outside the space.
    fs::write(&path, text.replace("\"trial\":1,", "\"trial\":7,")).unwrap();
    let err = Study::create_or_resume(tmp.path(), cfg).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("expected trial 1"), "{err}");
}
