//! Checkpoints that survive a crash and resume bit-exactly: a run killed halfway through
//! writing a checkpoint leaves no `checkpoint-N` that looks complete, and resuming from the
//! last complete one reproduces the uninterrupted run's per-step losses and final adapter
//! bytes exactly; Ctrl-C (SIGINT) saves a checkpoint and exits with 130; a NaN loss stops the
//! run naming the step and keeps the last good checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{fixture, qtrain_env as qtrain, read_json, read_jsonl, run_dirs, s, text, write_qa_jsonl, QA};
use serde_json::Value;

const STATE_FILES: [&str; 8] = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "optimizer.safetensors",
    "scheduler.json",
    "rng_state.json",
    "data_state.json",
    "args.json",
    "trainer_state.json",
];

fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    crate::common::succeeds(args).0
}

/// (step, loss, grad_norm, learning_rate) of every training log line.
fn step_logs(run: &Path) -> Vec<(u64, Value, Value, Value)> {
    read_jsonl(&run.join("logging.jsonl"))
        .into_iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| {
            let step = l["global_step/max_steps"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
            (step, l["loss"].clone(), l["grad_norm"].clone(), l["learning_rate"].clone())
        })
        .collect()
}

/// Every `checkpoint-N` folder of a run holds all its files (partial saves are `.tmp`).
fn assert_checkpoints_complete(run: &Path) {
    for entry in std::fs::read_dir(run).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("checkpoint-") && !name.ends_with(".tmp") {
            for f in STATE_FILES {
                assert!(path.join(f).is_file(), "{name} looks like a checkpoint but lacks {f}");
            }
        }
    }
}

#[test]
fn a_kill_mid_checkpoint_leaves_no_fake_checkpoint_and_resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    // 8 samples, batch 1 × accumulation 3: steps of 3, 3 and 2 micro-batches per epoch, so
    // checkpoint-2 sits mid-epoch and the resumed run crosses two epoch boundaries (with a
    // reshuffle each). LoRA dropout (0.05 by default) exercises the restored RNG.
    let base = |out: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(out),
            "--max_steps",
            "7",
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "3",
            "--save_steps",
            "2",
            "--logging_steps",
            "1",
            "--lora_rank",
            "4",
            "--learning_rate",
            "5e-3",
            "--warmup_steps",
            "1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };

    // The uninterrupted run.
    let out_a = tmp.path().join("a");
    let args_a = base(&out_a);
    ok(&args_a);
    let run_a = &run_dirs(&out_a)[0];
    let logs_a = step_logs(run_a);
    assert_eq!(logs_a.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());

    // The same run killed (abort(), no cleanup) halfway through writing checkpoint-4.
    let out_b = tmp.path().join("b");
    let args_b = base(&out_b);
    let killed = qtrain(&args_b, &[("QTRAIN_DEBUG_ABORT_DURING_SAVE", "4")]);
    assert!(!killed.status.success(), "the debug abort did not fire:\n{}", text(&killed.stderr));
    let run_b = &run_dirs(&out_b)[0];
    assert!(run_b.join("checkpoint-2").is_dir());
    assert!(run_b.join("checkpoint-4.tmp").is_dir(), "the partial save should be left as checkpoint-4.tmp");
    assert!(!run_b.join("checkpoint-4").exists(), "a partial checkpoint must never appear under its final name");
    assert!(!run_b.join("checkpoint-4.tmp/trainer_state.json").exists(), "the abort should hit halfway");
    assert_checkpoints_complete(run_b);
    // Resuming from the partial folder is refused with the reason.
    let partial = run_b.join("checkpoint-4.tmp");
    let mut bad = base(&out_b);
    bad.extend(["--resume_from_checkpoint".to_string(), s(&partial).to_string()]);
    let refused = qtrain(&bad, &[]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("incomplete checkpoint"), "{}", text(&refused.stderr));

    // Resume from the last complete checkpoint (a new run folder in the same output dir).
    let mut args_c = base(&out_b);
    args_c.extend(["--resume_from_checkpoint".to_string(), s(&run_b.join("checkpoint-2")).to_string()]);
    let resumed = qtrain(&args_c, &[]);
    let (stdout, stderr) = (text(&resumed.stdout), text(&resumed.stderr));
    assert!(resumed.status.success(), "resume failed:\n{stderr}");
    assert!(stderr.contains("resuming from") && !stderr.contains("WARNING"), "same arguments, no warning expected:\n{stderr}");
    let run_c = &run_dirs(&out_b)[1];
    let logs_c = step_logs(run_c);
    assert_eq!(logs_c.iter().map(|l| l.0).collect::<Vec<_>>(), (3..=7).collect::<Vec<_>>());
    for (c, a) in logs_c.iter().zip(&logs_a[2..]) {
        assert_eq!(c, a, "step {}: resumed (loss, grad_norm, lr) differ from the uninterrupted run", c.0);
    }
    let final_c = PathBuf::from(stdout.trim());
    assert!(final_c.ends_with("checkpoint-7"), "{final_c:?}");
    for f in ["adapter_model.safetensors", "optimizer.safetensors"] {
        assert!(
            std::fs::read(final_c.join(f)).unwrap() == std::fs::read(run_a.join("checkpoint-7").join(f)).unwrap(),
            "{f} of the resumed run differs from the uninterrupted run's"
        );
    }
    // The resumed checkpoint carries the whole history.
    let state = read_json(&final_c.join("trainer_state.json"));
    assert_eq!(state["global_step"], 7);
    let history_steps: Vec<u64> = state["log_history"].as_array().unwrap().iter().map(|h| h["step"].as_u64().unwrap()).collect();
    assert_eq!(history_steps, (1..=7).collect::<Vec<_>>());
    assert_eq!(read_json(&run_c.join("args.json"))["resume_from_checkpoint"], s(&run_b.join("checkpoint-2")));

    // From an epoch boundary (checkpoint-6 ends epoch 1) too.
    let out_d = tmp.path().join("d");
    let mut args_d = base(&out_d);
    args_d.extend(["--resume_from_checkpoint".to_string(), s(&run_a.join("checkpoint-6")).to_string()]);
    ok(&args_d);
    let logs_d = step_logs(&run_dirs(&out_d)[0]);
    assert_eq!(logs_d, logs_a[6..].to_vec());
}

#[test]
fn sigint_finishes_the_step_saves_and_exits_130_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_qtrain"))
        .args([
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(&out),
            "--max_steps",
            "100000",
            "--save_steps",
            "100000",
            "--logging_steps",
            "1",
            "--gradient_accumulation_steps",
            "1",
            "--lr_scheduler_type",
            "constant",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a few logged steps, then Ctrl-C.
    let start = Instant::now();
    loop {
        let logged = run_dirs_if_any(&out)
            .first()
            .and_then(|r| std::fs::read_to_string(r.join("logging.jsonl")).ok())
            .map_or(0, |t| t.lines().count());
        if logged >= 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no training progress within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "expected exit status 130 after SIGINT:\n{stderr}");
    assert!(stderr.contains("interrupt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let ckpt = PathBuf::from(text(&output.stdout).trim());
    let run = &run_dirs(&out)[0];
    assert_checkpoints_complete(run);
    let state = read_json(&ckpt.join("trainer_state.json"));
    let step = state["global_step"].as_u64().unwrap();
    assert!(ckpt.ends_with(format!("checkpoint-{step}")), "{ckpt:?}");
    let logs = read_jsonl(&run.join("logging.jsonl"));
    let summary = logs.last().unwrap();
    assert_eq!(summary["stop_reason"], "interrupted");
    assert_eq!(summary["global_step"], step);
    assert_eq!(step_logs(run).last().unwrap().0, step, "the interrupted step is logged and saved");

    // It resumes and runs one more step.
    let stdout = ok(&[
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(&data),
        "--output_dir",
        s(&out),
        "--max_steps",
        &(step + 1).to_string(),
        "--logging_steps",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--lr_scheduler_type",
        "constant",
        "--resume_from_checkpoint",
        s(&ckpt),
    ]);
    assert!(stdout.trim().ends_with(&format!("checkpoint-{}", step + 1)), "{stdout}");
}

fn run_dirs_if_any(output: &Path) -> Vec<PathBuf> {
    if output.is_dir() {
        run_dirs(output)
    } else {
        vec![]
    }
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen2");
    let out = tmp.path().join("out");
    // lr 1e30: the first update makes the LoRA weights ~1e30, so the second forward overflows.
    let result = qtrain(
        &[
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(&out),
            "--max_steps",
            "5",
            "--save_steps",
            "1",
            "--gradient_accumulation_steps",
            "1",
            "--learning_rate",
            "1e30",
            "--max_grad_norm",
            "0",
        ],
        &[],
    );
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("training diverged at step 2"), "{stderr}");
    assert!(stderr.contains("NaN") || stderr.contains("inf"), "{stderr}");
    let run = &run_dirs(&out)[0];
    assert!(stderr.contains(s(&run.join("checkpoint-1"))), "the message names the last good checkpoint:\n{stderr}");
    assert!(run.join("checkpoint-1").is_dir() && !run.join("checkpoint-2").exists(), "the poisoned step must not be saved");
    assert_checkpoints_complete(run);
    let logs = read_jsonl(&run.join("logging.jsonl"));
    assert!(logs.last().unwrap()["error"].as_str().unwrap().contains("step 2"), "{:?}", logs.last());
}

#[test]
fn full_fine_tuning_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let model = fixture("tiny-qwen3");
    let args = |out: &Path, resume: Option<&Path>| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--model",
            s(&model),
            "--dataset",
            s(&data),
            "--output_dir",
            s(out),
            "--tuner_type",
            "full",
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--learning_rate",
            "1e-3",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if let Some(r) = resume {
            a.extend(["--resume_from_checkpoint".to_string(), s(r).to_string()]);
        }
        a
    };
    let out = tmp.path().join("out");
    let last = PathBuf::from(ok(&args(&out, None)).trim());
    let run = &run_dirs(&out)[0];
    let resumed = PathBuf::from(ok(&args(&out, Some(&run.join("checkpoint-2")))).trim());
    assert_eq!(step_logs(&run_dirs(&out)[1]), step_logs(run)[2..].to_vec());
    assert!(
        std::fs::read(resumed.join("model.safetensors")).unwrap() == std::fs::read(last.join("model.safetensors")).unwrap(),
        "full weights after resuming differ from the uninterrupted run's"
    );
}
