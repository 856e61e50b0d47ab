//! Shared helpers of every test that reads the committed fixtures: fixture paths, the
//! reference tensors transformers dumped, and the relative error they are compared with.
//! The model crate's tests use it as `mod common;`; the binary's tests include this same file
//! (`tests/common/mod.rs`), so there is one `fixture()`.
#![allow(dead_code)]

use std::path::PathBuf;

use qtrain_model::safetensors_io::SafetensorsStore;

pub const REGENERATE: &str = "regenerate fixtures with `python3 tools/make_fixtures.py` (see tools/README.md)";

pub fn fixture(name: &str) -> PathBuf {
    // The fixtures live at the workspace root (`tests/fixtures`). This file is compiled into
    // the model crate's tests and the binary's, so look upwards from either manifest.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().find(|d| d.join("tests/fixtures").is_dir()).expect("tests/fixtures above CARGO_MANIFEST_DIR");
    root.join("tests/fixtures").join(name)
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
