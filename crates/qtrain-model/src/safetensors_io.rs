//! Reading and writing safetensors files: a single `model.safetensors`, a sharded folder with
//! `model.safetensors.index.json`, or an adapter file. Files are memory-mapped (memmap2) so a
//! large checkpoint is paged in tensor by tensor rather than read whole, and each tensor's pages
//! are released once it is copied out.
//!
//! Writing goes to a temporary name in the same folder and is renamed into place, so a crash
//! never leaves a file that looks complete but is not. This module must not know which tensors
//! a model needs; callers ask for names and shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use qtrain_core::DType;
use safetensors::SafeTensors;

use crate::error::{read_json, ModelError, Result};

/// One tensor read from disk, widened or kept in its file dtype.
#[derive(Clone, Debug)]
pub enum HostTensorData {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostTensorData,
}

impl HostTensor {
    pub fn dtype(&self) -> DType {
        match self.data {
            HostTensorData::F32(_) => DType::F32,
            HostTensorData::BF16(_) => DType::BF16,
            HostTensorData::F16(_) => DType::F16,
        }
    }

    pub fn as_host_data(&self) -> qtrain_core::HostData<'_> {
        match &self.data {
            HostTensorData::F32(d) => qtrain_core::HostData::F32(d),
            HostTensorData::BF16(d) => qtrain_core::HostData::BF16(d),
            HostTensorData::F16(d) => qtrain_core::HostData::F16(d),
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.as_host_data().to_f32_vec()
    }
}

/// A memory-mapped safetensors file with its parsed header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the mapping is read-only; we never mutate it, and a concurrent truncation of
        // a model file by another process is outside what any loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let mapped = MappedFile { path: path.to_path_buf(), mmap };
        mapped.parse()?; // validate header and offsets once, up front
        Ok(mapped)
    }

    /// Drop the pages of `bytes` (a slice of this mapping) from the process's memory.
    fn release(&self, bytes: &[u8]) {
        #[cfg(unix)]
        {
            let offset = bytes.as_ptr() as usize - self.mmap.as_ptr() as usize;
            // SAFETY: the mapping is read-only and backed by the file: a dropped page reads back
            // the same bytes at its next access, so slices borrowed from the mapping stay valid.
            // The advice is a hint; if it fails the pages simply stay.
            let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len()) };
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.mmap).map_err(|e| ModelError::Safetensors { path: self.path.clone(), detail: e.to_string() })
    }
}

/// All tensors of a checkpoint, possibly spread over several files.
pub struct SafetensorsStore {
    files: Vec<MappedFile>,
    /// tensor name → index into `files`
    index: BTreeMap<String, usize>,
    /// what to call this store in errors (the folder or file)
    origin: PathBuf,
}

impl SafetensorsStore {
    /// Open a model folder's weights: `model.safetensors`, or the shards listed by
    /// `model.safetensors.index.json`.
    pub fn open_model_folder(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: HashMap<String, String>,
            }
            let idx: Index = read_json(&index)?;
            let mut shard_names: Vec<&String> = idx.weight_map.values().collect();
            shard_names.sort();
            shard_names.dedup();
            let mut files = Vec::new();
            let mut file_of_shard = HashMap::new();
            for shard in shard_names {
                if shard.contains('/') || shard.contains("..") {
                    return Err(ModelError::Config {
                        path: index.clone(),
                        detail: format!("shard name {shard:?} must be a file in the same folder"),
                    });
                }
                file_of_shard.insert(shard.clone(), files.len());
                files.push(MappedFile::open(&dir.join(shard))?);
            }
            let mut store = SafetensorsStore { files, index: BTreeMap::new(), origin: index.clone() };
            // Index every tensor actually present, and check the map points at the right shard.
            for (i, f) in store.files.iter().enumerate() {
                for name in f.parse()?.names() {
                    store.index.insert(name.to_string(), i);
                }
            }
            let mut problems = vec![];
            for (name, shard) in &idx.weight_map {
                match store.index.get(name) {
                    Some(&i) if i == file_of_shard[shard] => {}
                    Some(&i) => problems.push(format!("  {name}: index says {shard}, found in {}", store.files[i].path.display())),
                    None => problems.push(format!("  {name}: listed in the index but missing from {shard}")),
                }
            }
            if !problems.is_empty() {
                return Err(ModelError::Weights { path: index, problems });
            }
            Ok(store)
        } else if single.is_file() {
            Self::open_file(&single)
        } else {
            Err(ModelError::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the model folder",
                ),
            ))
        }
    }

    /// Open one safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let file = MappedFile::open(path)?;
        let index = file.parse()?.names().into_iter().map(|n| (n.to_string(), 0)).collect();
        Ok(SafetensorsStore { files: vec![file], index, origin: path.to_path_buf() })
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of a tensor without reading its data.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let file = &self.files[*self.index.get(name).ok_or_else(|| self.missing(name))?];
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: file.path.clone(), detail: e.to_string() })?;
        Ok(view.shape().to_vec())
    }

    /// dtype of a tensor without reading its data.
    pub fn dtype(&self, name: &str) -> Result<DType> {
        let file = &self.files[*self.index.get(name).ok_or_else(|| self.missing(name))?];
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: file.path.clone(), detail: e.to_string() })?;
        map_dtype(view.dtype(), &file.path, name)
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::Weights { path: self.origin.clone(), problems: vec![format!("  missing tensor {name}")] }
    }

    /// Read one tensor, keeping its file dtype.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let file = &self.files[*self.index.get(name).ok_or_else(|| self.missing(name))?];
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: file.path.clone(), detail: e.to_string() })?;
        let bytes = view.data();
        let data = match map_dtype(view.dtype(), &file.path, name)? {
            DType::F32 => HostTensorData::F32(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            DType::BF16 => HostTensorData::BF16(bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect()),
            DType::F16 => HostTensorData::F16(bytes.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect()),
        };
        // The tensor is copied out, so its pages leave this process (they stay in the page
        // cache): loading a checkpoint then holds each tensor once, not the whole mapped file
        // beside the copies (`qtrain bench --model` of a Qwen2.5-0.5B bf16 checkpoint: peak RSS
        // 2.11 → 1.19 GiB for inference, 2.12 → 1.45 GiB for a LoRA step).
        file.release(bytes);
        Ok(HostTensor { shape: view.shape().to_vec(), data })
    }

    /// Read an integer tensor (I64 or I32) as i64 — used by reference fixtures.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let file = &self.files[*self.index.get(name).ok_or_else(|| self.missing(name))?];
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: file.path.clone(), detail: e.to_string() })?;
        let bytes = view.data();
        let data = match view.dtype() {
            safetensors::Dtype::I64 => bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
            safetensors::Dtype::I32 => bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
            other => {
                return Err(ModelError::DType {
                    path: file.path.clone(),
                    name: name.into(),
                    dtype: format!("{other:?} (an integer tensor was expected)"),
                })
            }
        };
        Ok((view.shape().to_vec(), data))
    }

    /// Check the store against `expected` (name, shape) pairs and report every missing tensor,
    /// wrong shape, bad dtype and — unless `allow_extra` says otherwise — unexpected tensor at
    /// once.
    pub fn check(&self, expected: &[(String, Vec<usize>)], allow_extra: impl Fn(&str) -> bool) -> Result<()> {
        let mut problems = vec![];
        let wanted: HashMap<&str, &Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for (name, shape) in expected {
            if !self.contains(name) {
                problems.push(format!("  missing tensor {name} (expected shape {shape:?})"));
                continue;
            }
            match self.shape(name) {
                Ok(s) if &s == shape => {}
                Ok(s) => problems.push(format!("  tensor {name} has shape {s:?}, expected {shape:?}")),
                Err(e) => problems.push(format!("  tensor {name}: {e}")),
            }
            if let Err(e) = self.dtype(name) {
                problems.push(format!("  {e}"));
            }
        }
        for name in self.names() {
            if !wanted.contains_key(name) && !allow_extra(name) {
                problems.push(format!("  unexpected tensor {name}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights { path: self.origin.clone(), problems })
        }
    }
}

fn map_dtype(d: safetensors::Dtype, path: &Path, name: &str) -> Result<DType> {
    match d {
        safetensors::Dtype::F32 => Ok(DType::F32),
        safetensors::Dtype::BF16 => Ok(DType::BF16),
        safetensors::Dtype::F16 => Ok(DType::F16),
        other => Err(ModelError::DType { path: path.to_path_buf(), name: name.to_string(), dtype: format!("{other:?}") }),
    }
}

/// Write tensors to `path` atomically (temporary file in the same folder, then rename).
/// Tensors are written in name order with the given metadata (`{"format": "pt"}` as PyTorch
/// writers do, so transformers and PEFT accept the file).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let mut sorted: Vec<&(String, HostTensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = sorted
        .iter()
        .map(|(name, t)| {
            let (dtype, raw) = match &t.data {
                HostTensorData::F32(d) => (safetensors::Dtype::F32, d.iter().flat_map(|x| x.to_le_bytes()).collect()),
                HostTensorData::BF16(d) => (safetensors::Dtype::BF16, d.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()),
                HostTensorData::F16(d) => (safetensors::Dtype::F16, d.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()),
            };
            (name.clone(), raw, t.shape.clone(), dtype)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, raw, shape, dt)| {
            let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), raw)
                .map_err(|e| ModelError::Invalid(format!("tensor {n}: {e}")))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    let metadata = metadata.unwrap_or_else(|| HashMap::from([("format".to_string(), "pt".to_string())]));
    let buf =
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Invalid(format!("serialising {}: {e}", path.display())))?;
    write_atomic(path, &buf)
}

/// Write `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|s| s.to_str()).unwrap_or("out"), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: f32) -> HostTensor {
        HostTensor { shape: shape.to_vec(), data: HostTensorData::F32(vec![v; shape.iter().product()]) }
    }

    #[test]
    fn round_trip_and_collective_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let bf = HostTensor { shape: vec![3], data: HostTensorData::BF16(vec![bf16::from_f32(1.5); 3]) };
        write_safetensors(&path, &[("a".into(), t(&[2, 3], 0.25)), ("b".into(), bf)], None).unwrap();
        let store = SafetensorsStore::open_model_folder(dir.path()).unwrap();
        assert_eq!(store.read("a").unwrap().to_f32(), vec![0.25; 6]);
        assert_eq!(store.read("b").unwrap().dtype(), DType::BF16);
        let err = store.check(&[("a".into(), vec![3, 2]), ("c".into(), vec![1])], |_| false).unwrap_err().to_string();
        assert!(err.contains("tensor a has shape [2, 3], expected [3, 2]"), "{err}");
        assert!(err.contains("missing tensor c"), "{err}");
        assert!(err.contains("unexpected tensor b"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a".into(), t(&[64, 64], 1.0))], None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = SafetensorsStore::open_model_folder(dir.path()).err().unwrap().to_string();
        assert!(err.contains("model.safetensors") && err.contains("truncated or corrupt"), "{err}");
        std::fs::write(&path, b"definitely not safetensors").unwrap();
        assert!(SafetensorsStore::open_model_folder(dir.path()).is_err());
        std::fs::remove_file(&path).unwrap();
        let err = SafetensorsStore::open_model_folder(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
    }
}
