//! Shared helpers for the integration tests: fixture paths and reference tensors.
#![allow(dead_code)]

use std::path::PathBuf;

use qtrain_model::safetensors_io::SafetensorsStore;

pub const REGENERATE: &str = "regenerate fixtures with `python3 tools/make_fixtures.py` (see tools/README.md)";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The reference tensors transformers dumped for a fixture model.
pub struct Reference {
    store: SafetensorsStore,
}

impl Reference {
    pub fn open(model: &str) -> Self {
        let path = fixture(model).join("reference.safetensors");
        Reference { store: SafetensorsStore::open_file(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}")) }
    }

    pub fn has(&self, name: &str) -> bool {
        self.store.contains(name)
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self.store.read(name).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
        (t.shape.clone(), t.to_f32())
    }

    pub fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        self.store.read_i64(name).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"))
    }

    pub fn u32s(&self, name: &str) -> Vec<u32> {
        self.ints(name).1.into_iter().map(|x| x as u32).collect()
    }
}

/// `max|got − want| / max|want|` over the selected elements: a scale-aware relative error
/// that does not blow up on logits near zero.
pub fn max_relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let err = got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    err / scale.max(1e-30)
}

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
