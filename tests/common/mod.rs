//! Shared helpers for the binary's integration tests: the fixture helpers of the model crate's
//! tests (one file, included here) and the CLI helpers below.
#![allow(dead_code)]

#[path = "../../crates/qtrain-model/tests/common/mod.rs"]
mod fixtures;

use std::path::PathBuf;

#[allow(unused_imports)] // each test binary uses some of them
pub use fixtures::{fixture, max_relative_error, Reference, REGENERATE};

// ---- helpers of the CLI integration tests ---------------------------------------------------

/// A path as `&str` for argument lists.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run the qtrain binary with extra environment variables.
pub fn qtrain_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qtrain"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run qtrain")
}

/// Run the qtrain binary.
pub fn qtrain<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    qtrain_env(args, &[])
}

/// Run and require success; returns (stdout, stderr).
pub fn succeeds<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> (String, String) {
    let out = qtrain_env(args, &[]);
    assert!(out.status.success(), "qtrain {args:?} failed ({:?}):\n{}", out.status, text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

/// Run and require a clean failure (non-zero exit, no panic); returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = qtrain_env(args, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "qtrain {args:?} should fail; stderr:\n{err}");
    assert!(!err.contains("panicked"), "qtrain {args:?} panicked:\n{err}");
    err
}

/// The step of a `logging.jsonl` record (`"global_step/max_steps": "5/94"`).
pub fn step_of(log: &serde_json::Value) -> u64 {
    log["global_step/max_steps"].as_str().unwrap().split('/').next().unwrap().parse().unwrap()
}

/// The steps of a run folder's `checkpoint-N` folders, sorted.
pub fn checkpoint_steps(run: &std::path::Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("checkpoint-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    steps
}

/// The run folders `vN-…` of an output folder, sorted.
pub fn run_dirs(output: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(output).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Eight short question/answer pairs: the training data of the CLI tests.
pub const QA: [(&str, &str); 8] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Name a primary color.", "Red is a primary color."),
    ("What is 2 plus 2?", "2 plus 2 is 4."),
    ("Who wrote Hamlet?", "Shakespeare wrote Hamlet."),
    ("What color is the sky?", "The sky is blue."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("What do bees make?", "Bees make honey."),
    ("What is ice made of?", "Ice is frozen water."),
];

/// One `messages` conversation of a user question and an assistant answer.
pub fn qa_record(q: &str, a: &str) -> serde_json::Value {
    serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
}

/// Write `pairs` as a messages-format JSONL file at `path` and return the path.
pub fn write_qa_jsonl(path: &std::path::Path, pairs: &[(&str, &str)]) -> PathBuf {
    let text: String = pairs.iter().map(|(q, a)| format!("{}\n", qa_record(q, a))).collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}
