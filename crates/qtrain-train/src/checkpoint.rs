//! The on-disk layout of a run, as ms-swift writes it:
//!
//! ```text
//! output_dir/vN-YYYYMMDD-HHMMSS/     N = next free version number
//!   args.json                         the resolved TrainArgs
//!   logging.jsonl                     one object per log / eval, then a summary line
//!   val_dataset.jsonl                 the validation rows (when there is a validation set)
//!   runs/                             TensorBoard event files
//!   images/                           PNG plots of the logged curves
//!   checkpoint-N/                     every save_steps, at the last step, on stops
//!     adapter_config.json             LoRA: PEFT adapter (target_modules explicit)
//!     adapter_model.safetensors
//!     config.json, model.safetensors, tokenizer files …   full fine-tuning: an HF model folder
//!     optimizer.safetensors           AdamW: `<param>.exp_avg`, `<param>.exp_avg_sq` (f32),
//!                                     `<param>.step` (i64), `<param>.master` (f32 weights, full
//!                                     fine-tuning of a non-f32 model only)
//!     scheduler.json                  the schedule's config and the next step
//!     rng_state.json                  the trainer's Rng state words (LoRA dropout seeds)
//!     data_state.json                 epoch, position in that epoch's order, shuffle seed
//!     args.json, trainer_state.json   (trainer_state.json is written last)
//! ```
//!
//! Every file goes through a temporary name and a rename (`write_atomic`), and a checkpoint
//! folder is filled as `checkpoint-N.tmp` and renamed when complete (then the run folder is
//! synced), so an interrupted run never leaves a `checkpoint-N` that looks whole but is not.
//! The one exception is the append-only `logging.jsonl` (one whole-line write per record, see
//! the trainer). Deleting a checkpoint (`save_total_limit`) or replacing one renames it to
//! `checkpoint-N.old` first. `QTRAIN_DEBUG_ABORT_DURING_SAVE=N` aborts the process halfway
//! through the first save at or after step N (for the kill test);
//! `QTRAIN_DEBUG_DISK_FULL_DURING_SAVE` makes a save meet a full disk (the disk-full test). Timestamps are UTC (ms-swift uses local
//! time; we avoid a timezone dependency). This module must not decide when to save.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use qtrain_core::{Backend, DType, TensorInfo};
use qtrain_model::safetensors_io::{write_atomic, write_safetensors, HostTensor, HostTensorData, SafetensorsStore};
use qtrain_model::{AdapterConfig, QwenModel};
use qtrain_optim::LrSchedule;

use crate::error::{Result, TrainError};

/// The next free version number in `output_dir`: one more than the largest `vN…` entry, or 0
/// (ms-swift's `_get_version`).
pub fn next_version<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(|n| {
            let digits: String = n.strip_prefix('v')?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |v| v + 1)
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86400) as i64;
    let rem = unix_secs % 86400;
    let (year, month, day) = qtrain_data::calendar::civil_from_days(days);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Create `output_dir/vN-YYYYMMDD-HHMMSS/` with the next free version number.
pub fn create_run_dir(output_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).map_err(|e| TrainError::io(output_dir, e))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Another run may take the same name between our listing and our mkdir: then try the next.
    for _ in 0..100 {
        let names: Vec<String> = std::fs::read_dir(output_dir)
            .map_err(|e| TrainError::io(output_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        let version = next_version(names.iter().map(String::as_str));
        let dir = output_dir.join(format!("v{version}-{}", timestamp(now)));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TrainError::io(&dir, e)),
        }
    }
    Err(TrainError::Invalid(format!("{}: could not create a new version folder", output_dir.display())))
}

/// `--add_version false`: the run folder is `output_dir` itself, which must not already hold
/// a run (a `checkpoint-N` or a `logging.jsonl`): checkpoints of two runs must never mix.
pub fn use_output_dir(output_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(output_dir).map_err(|e| TrainError::io(output_dir, e))?;
    let holds_run = output_dir.join("logging.jsonl").exists() || !list_checkpoints(output_dir)?.is_empty();
    if holds_run {
        return Err(TrainError::Invalid(format!(
            "--output_dir {} already holds a run (logging.jsonl or checkpoint-N) and --add_version is false: choose another --output_dir, or leave --add_version at true",
            output_dir.display()
        )));
    }
    Ok(output_dir.to_path_buf())
}

/// Write pretty JSON atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Invalid(e.to_string()))?;
    Ok(write_atomic(path, text.as_bytes())?)
}

/// Whether a model-folder file belongs next to new weights: the configuration, tokenizer and
/// chat-template files transformers' `save_pretrained` writes (plus licence and model card).
/// Anything else (weights, run state, evaluation results, a user's notes) is not copied.
fn is_model_asset(name: &str) -> bool {
    const ASSETS: [&str; 12] = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
        "README.md",
        "LICENSE",
    ];
    ASSETS.contains(&name)
}

/// Copy the configuration and tokenizer files of a model folder (see [`is_model_asset`]) into
/// `dst`. Returns the names copied.
pub fn copy_model_assets(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut copied = vec![];
    let entries = std::fs::read_dir(src).map_err(|e| TrainError::io(src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(src, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_file() || !is_model_asset(&name) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        write_atomic(&dst.join(&name), &bytes)?;
        copied.push(name);
    }
    copied.sort();
    Ok(copied)
}

/// f32 values cast to a stored dtype (round to nearest even).
pub fn cast(values: Vec<f32>, dtype: DType) -> HostTensorData {
    match dtype {
        DType::F32 => HostTensorData::F32(values),
        DType::BF16 => HostTensorData::BF16(values.into_iter().map(bf16::from_f32).collect()),
        DType::F16 => HostTensorData::F16(values.into_iter().map(f16::from_f32).collect()),
    }
}

/// Every base parameter of the model with its HF name (tied embeddings once, no LoRA).
pub fn model_tensors<B: Backend>(model: &QwenModel<B>) -> Vec<(String, &B::Tensor)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), &model.embed_tokens)];
    for (l, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), &layer.input_layernorm));
        out.push((format!("{p}.post_attention_layernorm.weight"), &layer.post_attention_layernorm));
        if let Some(t) = &layer.q_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), t));
        }
        if let Some(t) = &layer.k_norm {
            out.push((format!("{p}.self_attn.k_norm.weight"), t));
        }
        for (name, lin) in layer.linears() {
            out.push((format!("{p}.{name}.weight"), &lin.weight));
            if let Some(b) = &lin.bias {
                out.push((format!("{p}.{name}.bias"), b));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), &model.norm));
    if let Some(h) = &model.lm_head {
        out.push(("lm_head.weight".to_string(), h));
    }
    out
}

/// What a checkpoint holds besides `args.json` and `trainer_state.json`.
pub enum CheckpointContent<'a> {
    /// The attached LoRA adapters as a PEFT adapter folder.
    Lora { config: &'a AdapterConfig },
    /// The whole model as an HF folder: weights in `dtype`, other files copied from `source`.
    Full { source: &'a Path, dtype: DType },
}

/// The optimizer state of one trainable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState {
    /// HF parameter name, or PEFT key for LoRA tensors.
    pub name: String,
    pub shape: Vec<usize>,
    /// AdamW first moment.
    pub exp_avg: Vec<f32>,
    /// AdamW second moment.
    pub exp_avg_sq: Vec<f32>,
    /// Optimizer steps this tensor has taken (torch's per-parameter `state["step"]`).
    pub step: u64,
    /// The f32 weights, when the checkpoint's weight files round them (full fine-tuning of a
    /// bf16 / f16 model): resuming from rounded weights would not be bit-exact.
    pub master: Option<Vec<f32>>,
}

/// `trainer_state.json`: transformers' `TrainerState` keys plus a `qtrain` section with the
/// sums the loop needs to continue exactly. Written last, so its presence marks a complete save.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub best_global_step: Option<u64>,
    pub best_metric: Option<f64>,
    pub best_model_checkpoint: Option<String>,
    pub epoch: f64,
    pub eval_steps: Option<u64>,
    pub global_step: u64,
    pub is_local_process_zero: bool,
    pub is_world_process_zero: bool,
    /// Every logged and evaluated record, each with its `step`.
    pub log_history: Vec<Value>,
    pub logging_steps: u64,
    pub max_steps: u64,
    pub num_input_tokens_seen: usize,
    pub num_train_epochs: f64,
    pub save_steps: u64,
    pub stateful_callbacks: StatefulCallbacks,
    pub train_batch_size: usize,
    pub qtrain: LoopSums,
}

/// transformers' `stateful_callbacks` of `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatefulCallbacks {
    #[serde(rename = "EarlyStoppingCallback")]
    pub early_stopping: EarlyStoppingState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingState {
    pub args: EarlyStoppingArgs,
    pub attributes: EarlyStoppingAttributes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingArgs {
    pub early_stopping_patience: Option<u64>,
    pub early_stopping_threshold: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingAttributes {
    /// Evaluations since the last improvement.
    pub early_stopping_patience_counter: u64,
}

/// The loss sums and counters of `trainer_state.json`'s `qtrain` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopSums {
    /// Since the last log (kept across a resume so the next log is the same).
    pub window: WindowSums,
    /// Of the whole run.
    pub total: TotalSums,
    pub samples_seen: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowSums {
    pub loss_sum: f64,
    pub targets: usize,
    pub correct: usize,
    pub steps: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotalSums {
    pub loss_sum: f64,
    pub targets: usize,
    pub correct: usize,
}

/// `scheduler.json`: the schedule and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerState {
    pub lr_scheduler_type: String,
    pub config: LrSchedule,
    pub warmup_steps: u64,
    /// The optimizer steps taken.
    pub last_step: u64,
    /// The learning rate of the next step.
    pub next_lr: f64,
}

/// `rng_state.json`: the trainer's Rng, which draws one LoRA-dropout seed per micro-batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub dropout_rng_state: [u64; 4],
    pub lora_dropout: f64,
}

/// `data_state.json`: where the next step starts, and what the order depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataState {
    pub epoch: u64,
    /// First micro-batch of the next step in that epoch's order.
    pub micro_batch: usize,
    pub sample_index: usize,
    pub num_micro_batches: usize,
    pub num_rows: usize,
    pub shuffle_seed: u64,
    pub dataset_shuffle: bool,
    pub train_dataloader_shuffle: bool,
    pub group_by_length: bool,
    pub packing: bool,
    /// [`crate::dataset::fingerprint`] of the training rows.
    pub fingerprint: String,
}

/// Everything of the training state a checkpoint holds besides the weights.
pub struct CheckpointState<'a> {
    pub args_json: &'a Value,
    pub trainer_state: &'a TrainerState,
    pub scheduler: &'a SchedulerState,
    pub rng_state: &'a RngState,
    pub data_state: &'a DataState,
    pub optimizer: &'a [ParamState],
    /// `--save_only_model`: the weights, `args.json` and `trainer_state.json` only.
    pub weights_only: bool,
}

/// The JSON state files of a checkpoint, read back for `--resume_from_checkpoint`.
pub struct CheckpointFiles {
    pub args: Value,
    pub trainer_state: TrainerState,
    pub scheduler: SchedulerState,
    pub rng_state: RngState,
    pub data_state: DataState,
}

impl CheckpointFiles {
    /// Read the state files that [`save_checkpoint`] writes; a file that does not parse is an
    /// error naming it.
    pub fn read(dir: &Path) -> Result<Self> {
        fn typed<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
            let path = dir.join(name);
            serde_json::from_value(read_json(&path)?).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))
        }
        Ok(CheckpointFiles {
            trainer_state: typed(dir, "trainer_state.json")?,
            rng_state: typed(dir, "rng_state.json")?,
            data_state: typed(dir, "data_state.json")?,
            scheduler: typed(dir, "scheduler.json")?,
            args: read_json(&dir.join("args.json"))?,
        })
    }
}

/// Files every complete checkpoint holds besides its weights.
pub const STATE_FILES: [&str; 6] =
    ["optimizer.safetensors", "scheduler.json", "rng_state.json", "data_state.json", "args.json", "trainer_state.json"];

/// The environment variable of the kill test (see the module docs).
pub const DEBUG_ABORT_ENV: &str = "QTRAIN_DEBUG_ABORT_DURING_SAVE";

/// The environment variable of the disk-full test: `N` makes the first save at or after step
/// N fail halfway with ENOSPC; `N,fill` instead fills the file system under the run folder's
/// parent with a ballast file there, so the save meets a real ENOSPC (use it on a tmpfs only).
pub const DEBUG_DISK_FULL_ENV: &str = "QTRAIN_DEBUG_DISK_FULL_DURING_SAVE";

/// Write `run_dir/checkpoint-{step}` through `checkpoint-{step}.tmp` and return its path.
/// `trainer_state.json` is the last file written, then the folder is renamed into place.
pub fn save_checkpoint<B: Backend>(
    be: &B,
    model: &QwenModel<B>,
    run_dir: &Path,
    step: u64,
    content: &CheckpointContent<'_>,
    state: &CheckpointState<'_>,
) -> Result<PathBuf> {
    let final_dir = run_dir.join(format!("checkpoint-{step}"));
    let tmp = run_dir.join(format!("checkpoint-{step}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let written = write_checkpoint_files(be, model, &tmp, step, content, state);
    if let Err(e) = written {
        // A failed save (a full disk, most likely) leaves no partial folder taking space; the
        // previous checkpoints are untouched.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        // Saving a step that already has a checkpoint (a resumed run): move the old one aside
        // first, so a kill in between leaves the complete old copy under a name, never nothing.
        let old = run_dir.join(format!("checkpoint-{step}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
        }
        std::fs::rename(&final_dir, &old).map_err(|e| TrainError::io(&final_dir, e))?;
        std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    // Make the rename itself durable.
    if let Ok(dir) = std::fs::File::open(run_dir) {
        let _ = dir.sync_all();
    }
    Ok(final_dir)
}

/// What a test may ask of a save through [`DEBUG_DISK_FULL_ENV`] (`N` or `N,fill`).
fn debug_disk_full(step: u64) -> Option<bool> {
    let value = std::env::var(DEBUG_DISK_FULL_ENV).ok()?;
    let (n, mode) = value.split_once(',').unwrap_or((&value, ""));
    let n: u64 = n.trim().parse().ok()?;
    (step >= n).then_some(mode.trim() == "fill")
}

/// Fill the file system holding `dir` with a ballast file until writing fails (for the
/// disk-full test on a small tmpfs: the save then meets a real ENOSPC).
fn fill_file_system(dir: &Path) {
    use std::io::Write;
    let ballast = dir.join("disk-full-ballast");
    if let Ok(mut f) = std::fs::File::create(&ballast) {
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

/// The files of a checkpoint into `tmp`, `trainer_state.json` last.
fn write_checkpoint_files<B: Backend>(
    be: &B,
    model: &QwenModel<B>,
    tmp: &Path,
    step: u64,
    content: &CheckpointContent<'_>,
    state: &CheckpointState<'_>,
) -> Result<()> {
    match content {
        CheckpointContent::Lora { config } => model.export_lora(be, config)?.save(tmp)?,
        CheckpointContent::Full { source, dtype } => {
            let mut tensors = Vec::new();
            for (name, t) in model_tensors(model) {
                tensors.push((name, HostTensor { shape: t.shape().to_vec(), data: cast(be.download(t)?, *dtype) }));
            }
            write_safetensors(&tmp.join("model.safetensors"), &tensors, None)?;
            copy_model_assets(source, tmp)?;
        }
    }
    if !state.weights_only {
        write_optimizer_state(&tmp.join("optimizer.safetensors"), state.optimizer)?;
    }
    if std::env::var(DEBUG_ABORT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| step >= n) {
        eprintln!("[qtrain] {DEBUG_ABORT_ENV}: aborting halfway through saving checkpoint-{step}");
        std::process::abort();
    }
    match debug_disk_full(step) {
        Some(true) => fill_file_system(tmp.parent().and_then(Path::parent).unwrap_or(tmp)),
        Some(false) => {
            let enospc = std::io::Error::from_raw_os_error(28);
            return Err(TrainError::io(tmp.join("scheduler.json"), enospc));
        }
        None => {}
    }
    if !state.weights_only {
        write_json(&tmp.join("scheduler.json"), state.scheduler)?;
        write_json(&tmp.join("rng_state.json"), state.rng_state)?;
        write_json(&tmp.join("data_state.json"), state.data_state)?;
    }
    write_json(&tmp.join("args.json"), state.args_json)?;
    write_json(&tmp.join("trainer_state.json"), state.trainer_state)
}

/// `optimizer.safetensors`: per parameter `<name>.exp_avg`, `<name>.exp_avg_sq` (f32, the
/// parameter's shape), `<name>.step` (i64 `[1]`) and optionally `<name>.master` (f32).
pub fn write_optimizer_state(path: &Path, params: &[ParamState]) -> Result<()> {
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for p in params {
        owned.push((format!("{}.exp_avg", p.name), safetensors::Dtype::F32, p.shape.clone(), f32_bytes(&p.exp_avg)));
        owned.push((format!("{}.exp_avg_sq", p.name), safetensors::Dtype::F32, p.shape.clone(), f32_bytes(&p.exp_avg_sq)));
        owned.push((format!("{}.step", p.name), safetensors::Dtype::I64, vec![1], (p.step as i64).to_le_bytes().to_vec()));
        if let Some(m) = &p.master {
            owned.push((format!("{}.master", p.name), safetensors::Dtype::F32, p.shape.clone(), f32_bytes(m)));
        }
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views = owned
        .iter()
        .map(|(n, dt, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Invalid(format!("optimizer state {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata key: safetensors writes the metadata map in hash order, and a checkpoint's
    // bytes must not depend on the process that wrote them.
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(write_atomic(path, &bytes)?)
}

/// Read `optimizer.safetensors` back, keyed by parameter name.
pub fn read_optimizer_state(path: &Path) -> Result<BTreeMap<String, ParamState>> {
    let store = SafetensorsStore::open_file(path)?;
    let names: Vec<String> = store.names().filter_map(|n| n.strip_suffix(".step")).map(str::to_string).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let f32s = |suffix: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = store.read(&format!("{name}.{suffix}"))?;
            Ok((t.shape.clone(), t.to_f32()))
        };
        let (shape, exp_avg) = f32s("exp_avg")?;
        let (_, exp_avg_sq) = f32s("exp_avg_sq")?;
        let (_, step) = store.read_i64(&format!("{name}.step"))?;
        let master = if store.contains(&format!("{name}.master")) { Some(f32s("master")?.1) } else { None };
        let step = step.first().copied().unwrap_or(0).max(0) as u64;
        out.insert(name.clone(), ParamState { name, shape, exp_avg, exp_avg_sq, step, master });
    }
    Ok(out)
}

/// Read a JSON file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))
}

/// The files a complete checkpoint folder lacks (empty: complete). `lora` selects the adapter
/// files, else the full model's.
pub fn missing_files(dir: &Path, lora: bool) -> Vec<&'static str> {
    let weights: &[&'static str] = if lora { &["adapter_config.json", "adapter_model.safetensors"] } else { &["config.json"] };
    let mut missing: Vec<&'static str> = weights.iter().chain(STATE_FILES.iter()).copied().filter(|f| !dir.join(f).is_file()).collect();
    if !lora && !dir.join("model.safetensors").is_file() && !dir.join("model.safetensors.index.json").is_file() {
        missing.push("model.safetensors");
    }
    missing
}

/// The step of a `checkpoint-N` folder name.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The `checkpoint-N` folders of a run (complete by construction: partial ones are `.tmp`),
/// sorted by step.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(run_dir).map_err(|e| TrainError::io(run_dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(run_dir, e))?;
        if let Some(step) = checkpoint_step(&entry.file_name().to_string_lossy()) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// transformers' `_rotate_checkpoints`: of the checkpoints (sorted by step), the best one is
/// moved to the second-to-last place so it is deleted last; with a limit of 1 and a best that
/// is not the newest, two are kept (best and newest). Returns the steps to delete, oldest first.
pub fn checkpoints_to_delete(steps: &[u64], best: Option<u64>, limit: usize) -> Vec<u64> {
    let mut order = steps.to_vec();
    order.sort_unstable();
    if let Some(pos) = best.and_then(|b| order.iter().position(|&s| s == b)) {
        for i in pos..order.len().saturating_sub(2) {
            order.swap(i, i + 1);
        }
    }
    let mut limit = limit;
    if limit == 1 && best.is_some_and(|b| order.last() != Some(&b)) {
        limit = 2;
    }
    let n_delete = order.len().saturating_sub(limit);
    order[..n_delete].to_vec()
}

/// Apply `save_total_limit` to the checkpoints of `run_dir`; returns the deleted folders.
/// Called only after the newest checkpoint is complete.
pub fn rotate_checkpoints(run_dir: &Path, limit: usize, best: Option<u64>) -> Result<Vec<PathBuf>> {
    let all = list_checkpoints(run_dir)?;
    let steps: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    let mut deleted = Vec::new();
    for step in checkpoints_to_delete(&steps, best, limit) {
        let dir = run_dir.join(format!("checkpoint-{step}"));
        // Renamed first: a kill during the deletion leaves `checkpoint-N.old` with some files
        // gone, never a `checkpoint-N` that looks whole but is not.
        let doomed = run_dir.join(format!("checkpoint-{step}.old"));
        if doomed.exists() {
            std::fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))?;
        }
        std::fs::rename(&dir, &doomed).map_err(|e| TrainError::io(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))?;
        deleted.push(dir);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_follow_ms_swift() {
        assert_eq!(next_version([]), 0);
        assert_eq!(next_version(["v0-20250101-000000", "v3-20250101-000000", "notes", "vx"]), 4);
        assert_eq!(next_version(["v12"]), 13);
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000"); // leap day
        assert_eq!(timestamp(1_735_689_599), "20241231-235959");
        assert_eq!(timestamp(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn run_dirs_get_increasing_versions() {
        let out = tempfile::tempdir().unwrap();
        let a = create_run_dir(out.path()).unwrap();
        let b = create_run_dir(out.path()).unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&a).starts_with("v0-") && name(&b).starts_with("v1-"), "{a:?} {b:?}");
        assert_eq!(name(&a).len(), "v0-20250101-000000".len());
    }

    #[test]
    fn assets_copy_skips_weights_and_run_state() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json", "args.json", "chat_template.jinja"]
        {
            std::fs::write(src.path().join(f), "x").unwrap();
        }
        let copied = copy_model_assets(src.path(), dst.path()).unwrap();
        assert_eq!(copied, ["chat_template.jinja", "config.json", "tokenizer.json"]);
    }

    #[test]
    fn rotation_keeps_the_best_and_the_newest_as_transformers() {
        // No best: the newest `limit`.
        assert_eq!(checkpoints_to_delete(&[10, 20, 30, 40], None, 2), vec![10, 20]);
        // Best in the middle survives with the newest; limit 2 = best + last.
        assert_eq!(checkpoints_to_delete(&[10, 20, 30, 40], Some(20), 2), vec![10, 30]);
        assert_eq!(checkpoints_to_delete(&[10, 20, 30, 40], Some(10), 2), vec![20, 30]);
        // Best is the newest: the two newest stay.
        assert_eq!(checkpoints_to_delete(&[10, 20, 30, 40], Some(40), 2), vec![10, 20]);
        // Limit 1 with an older best keeps two.
        assert_eq!(checkpoints_to_delete(&[10, 20, 30], Some(10), 1), vec![20]);
        assert_eq!(checkpoints_to_delete(&[10, 20, 30], Some(30), 1), vec![10, 20]);
        assert_eq!(checkpoints_to_delete(&[10, 20, 30], Some(20), 3), Vec::<u64>::new());
        // Unsorted input, limit 3.
        assert_eq!(checkpoints_to_delete(&[40, 10, 30, 20, 50], Some(20), 3), vec![10, 30]);
    }

    #[test]
    fn checkpoint_names_and_listing() {
        assert_eq!(checkpoint_step("checkpoint-12"), Some(12));
        for bad in ["checkpoint-12.tmp", "checkpoint-", "checkpoint-1x", "ckpt-3", "checkpoint-12-merged"] {
            assert_eq!(checkpoint_step(bad), None, "{bad}");
        }
        let run = tempfile::tempdir().unwrap();
        for d in ["checkpoint-10", "checkpoint-2", "checkpoint-30.tmp", "checkpoint-2-merged"] {
            std::fs::create_dir(run.path().join(d)).unwrap();
        }
        let steps: Vec<u64> = list_checkpoints(run.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![2, 10]);
        let deleted = rotate_checkpoints(run.path(), 1, None).unwrap();
        assert_eq!(deleted, vec![run.path().join("checkpoint-2")]);
        assert!(run.path().join("checkpoint-30.tmp").exists() && run.path().join("checkpoint-10").exists());
    }

    #[test]
    fn optimizer_state_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let params = vec![
            ParamState {
                name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into(),
                shape: vec![2, 3],
                exp_avg: vec![1e-30, -2.5, 3.0, f32::MIN_POSITIVE, 0.0, -0.0],
                exp_avg_sq: vec![1.0; 6],
                step: 1234,
                master: None,
            },
            ParamState {
                name: "model.norm.weight".into(),
                shape: vec![2],
                exp_avg: vec![0.5, 0.25],
                exp_avg_sq: vec![0.1, 0.2],
                step: 7,
                master: Some(vec![1.0, 1.0 + f32::EPSILON]),
            },
        ];
        write_optimizer_state(&path, &params).unwrap();
        let back = read_optimizer_state(&path).unwrap();
        assert_eq!(back.len(), 2);
        for p in &params {
            let b = &back[&p.name];
            assert_eq!(b, p);
            assert_eq!(
                b.exp_avg.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                p.exp_avg.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn cast_rounds_to_the_stored_dtype() {
        match cast(vec![1.0, 1.0 + 1.0 / 256.0], DType::BF16) {
            HostTensorData::BF16(v) => assert_eq!(v[1].to_f32(), 1.0), // ties to even
            _ => panic!(),
        }
    }
}
