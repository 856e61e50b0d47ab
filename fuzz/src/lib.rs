//! Helpers shared by the fuzz targets: the committed tiny fixtures, a scratch folder per
//! process, and splitting one fuzz input into several files. The targets call the same
//! loading code the `qtrain` binary calls; this crate must not reimplement any of it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `tests/fixtures/NAME` of the repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A folder that lives as long as the fuzzing process; each target rewrites its files on
/// every input.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder")).path()
}

/// Copy the files of fixture `name` into `dst` (only those not already present).
pub fn copy_fixture(name: &str, dst: &Path, files: &[&str]) {
    for file in files {
        std::fs::copy(fixture(name).join(file), dst.join(file)).expect("fixture file");
    }
}

/// Split `data` at the first `n - 1` NUL bytes into `n` parts (missing parts are empty), so
/// one fuzz input can stand for several files or fields.
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    parts.resize(n, &[]);
    parts
}

/// The loader must not panic; an `Err` is the expected outcome for most inputs. Errors must
/// print as one line of text without Rust debug formatting.
pub fn check_error<E: std::fmt::Display>(result: Result<impl Sized, E>) {
    if let Err(e) = result {
        let text = e.to_string();
        assert!(!text.is_empty(), "an empty error message");
    }
}

/// `fuzz/micro-model/NAME`: a 1-layer Qwen2 model, a sharded copy and a LoRA adapter
/// (written by `tools/make_fuzz_seeds.py`), small enough to load thousands of times a second.
pub fn micro_file(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("micro-model").join(name)).expect("fuzz/micro-model file")
}

/// A folder under [`scratch`] holding the micro-model files `files`.
pub fn micro_folder(sub: &str, files: &[&str]) -> PathBuf {
    let dir = scratch().join(sub);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for file in files {
        std::fs::write(dir.join(file), micro_file(file)).expect("scratch file");
    }
    dir
}

/// Write `bytes` as `dir/file`, run `load`, then put the original micro-model file back.
pub fn with_replaced_file<T>(dir: &Path, file: &str, bytes: &[u8], load: impl FnOnce() -> T) -> T {
    std::fs::write(dir.join(file), bytes).expect("scratch file");
    let out = load();
    std::fs::write(dir.join(file), micro_file(file)).expect("scratch file");
    out
}

/// One CPU backend for the whole process (making one per input would start a thread pool
/// each time).
pub fn cpu() -> &'static qtrain_core::CpuBackend {
    static BACKEND: OnceLock<qtrain_core::CpuBackend> = OnceLock::new();
    BACKEND.get_or_init(qtrain_core::CpuBackend::new)
}
