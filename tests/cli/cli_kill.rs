//! `kill -9` and a full disk (issue 16). A LoRA run of the tiny model is SIGKILLed at random
//! moments: every `checkpoint-N` left behind must be complete, loadable and byte-identical
//! to the uninterrupted run's, and resuming from the newest must end byte-identical too. A
//! save that meets a full disk (a real tmpfs when this process may mount one, else an
//! injected ENOSPC) must fail with a clear error and leave the previous checkpoint intact.
//!
//! CI kills 20 times; `QTRAIN_KILLS=200 cargo test --test cli cli_kill::` kills more, and
//! `QTRAIN_KILL_SEED=S` repeats the moments of an earlier run (each run prints its seed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{fixture, qtrain_env, run_dirs, s, text, write_qa_jsonl, QA};
use qtrain_model::{LoraAdapter, QwenConfig};
use qtrain_train::checkpoint::{list_checkpoints, missing_files, read_optimizer_state, CheckpointFiles};

const MAX_STEPS: u64 = 6;

fn train_args(data: &Path, out: &Path, max_steps: u64, extra: &[&str]) -> Vec<String> {
    let model = fixture("tiny-qwen2");
    let mut args: Vec<String> = [
        "train",
        "--model",
        s(&model),
        "--dataset",
        s(data),
        "--output_dir",
        s(out),
        "--max_steps",
        &max_steps.to_string(),
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "2",
        "--save_steps",
        "1",
        "--logging_steps",
        "1",
        "--lora_rank",
        "4",
        "--learning_rate",
        "5e-3",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The uninterrupted run every killed run is compared with, and how long it took.
struct Reference {
    run: PathBuf,
    seconds: f64,
}

fn reference_run(data: &Path, out: &Path) -> Reference {
    let start = Instant::now();
    let done = qtrain_env(&train_args(data, out, MAX_STEPS, &[]), &[]);
    assert!(done.status.success(), "the reference run failed:\n{}", text(&done.stderr));
    Reference { run: run_dirs(out)[0].clone(), seconds: start.elapsed().as_secs_f64() }
}

/// Files whose bytes must equal the reference run's at the same step.
const DETERMINISTIC: [&str; 2] = ["adapter_model.safetensors", "optimizer.safetensors"];

/// Every `checkpoint-N` of `run` is complete, loads through the resume code and holds the
/// reference run's bytes; returns the newest step.
fn check_checkpoints(run: &Path, reference: &Reference) -> Option<u64> {
    let model_cfg = QwenConfig::from_file(&fixture("tiny-qwen2").join("config.json")).unwrap();
    let checkpoints = list_checkpoints(run).unwrap();
    for (step, dir) in &checkpoints {
        let missing = missing_files(dir, true);
        assert!(missing.is_empty(), "{} looks finished but lacks {missing:?}", dir.display());
        let files = CheckpointFiles::read(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(files.trainer_state.global_step, *step);
        read_optimizer_state(&dir.join("optimizer.safetensors")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        LoraAdapter::load(dir, &model_cfg).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let same = reference.run.join(format!("checkpoint-{step}"));
        for f in DETERMINISTIC {
            assert!(std::fs::read(dir.join(f)).unwrap() == std::fs::read(same.join(f)).unwrap(), "{}/{f} differs", dir.display());
        }
    }
    checkpoints.last().map(|(step, _)| *step)
}

/// A small deterministic generator for the kill moments (SplitMix64).
fn next_random(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn sigkill_at_random_moments_leaves_only_whole_checkpoints_that_resume_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let reference = reference_run(&data, &tmp.path().join("reference"));
    let kills: usize = std::env::var("QTRAIN_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("QTRAIN_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("kill moments: QTRAIN_KILL_SEED={seed}, {kills} kills within {:.2} s", reference.seconds);
    let mut state = seed;
    let (mut resumed, mut with_checkpoints) = (0, 0);
    for i in 0..kills {
        let out = tmp.path().join(format!("killed-{i}"));
        // save_total_limit deletes old checkpoints, so kills also land in deletions.
        let args = train_args(&data, &out, MAX_STEPS, &["--save_total_limit", "2"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_qtrain")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let moment = Duration::from_secs_f64(next_random(&mut state) * reference.seconds);
        std::thread::sleep(moment);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        if !out.exists() {
            continue; // killed before it made its output folder
        }
        let Some(run) = run_dirs(&out).into_iter().next() else { continue };
        let Some(newest) = check_checkpoints(&run, &reference) else { continue };
        with_checkpoints += 1;
        // Resume from the newest checkpoint for the first few kills that left one mid-run.
        if newest < MAX_STEPS && resumed < 3 {
            resumed += 1;
            let newest_dir = run.join(format!("checkpoint-{newest}"));
            let args = train_args(&data, &out, MAX_STEPS, &["--save_total_limit", "2", "--resume_from_checkpoint", s(&newest_dir)]);
            let done = qtrain_env(&args, &[]);
            assert!(done.status.success(), "resume from {} failed:\n{}", newest_dir.display(), text(&done.stderr));
            let last = PathBuf::from(text(&done.stdout).trim());
            for f in DETERMINISTIC {
                let want = reference.run.join(format!("checkpoint-{MAX_STEPS}")).join(f);
                assert!(std::fs::read(last.join(f)).unwrap() == std::fs::read(want).unwrap(), "resumed {f} differs (seed {seed})");
            }
        }
    }
    eprintln!("{kills} kills: {with_checkpoints} left checkpoints, {resumed} resumed bit-exactly");
}

/// A tmpfs mounted for the life of the value (only where this process may mount one).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let size = format!("size={megabytes}m");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs", s(dir)]).stderr(Stdio::null()).status().ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Train 3 steps with a save each step, the second save meeting a full disk.
fn assert_disk_full_fails_cleanly(out: &Path, data: &Path, env_value: &str, reference: &Reference) {
    let args = train_args(data, out, 3, &[]);
    let failed = qtrain_env(&args, &[("QTRAIN_DEBUG_DISK_FULL_DURING_SAVE", env_value)]);
    let err = text(&failed.stderr);
    assert!(!failed.status.success(), "the save into a full disk succeeded:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    let run = run_dirs(out).into_iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with('v')).unwrap();
    assert!(err.contains(s(&run.join("checkpoint-2.tmp"))), "the error names the checkpoint being written:\n{err}");
    assert!(!run.join("checkpoint-2.tmp").exists(), "the partial checkpoint-2.tmp is removed");
    assert!(!run.join("checkpoint-2").exists());
    assert_eq!(check_checkpoints(&run, reference), Some(1), "checkpoint-1 stays whole");
}

#[test]
fn a_save_into_a_full_disk_fails_clearly_and_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_qa_jsonl(&tmp.path().join("train.jsonl"), &QA);
    let reference = reference_run(&data, &tmp.path().join("reference"));
    // Injected: the save of step 2 gets ENOSPC halfway.
    assert_disk_full_fails_cleanly(&tmp.path().join("injected"), &data, "2", &reference);
    // Real: on a 64 MB tmpfs that the save of step 2 fills up (root only; skipped otherwise).
    match Tmpfs::mount(&tmp.path().join("tmpfs"), 64) {
        Some(fs) => assert_disk_full_fails_cleanly(&fs.0.join("out"), &data, "2,fill", &reference),
        None => eprintln!("cannot mount a tmpfs here: the injected ENOSPC case stands for it"),
    }
}
