//! Where a checkpoint comes from — one rule for every command that takes `--adapters` or
//! `--resume_from_checkpoint` (`infer`, `eval`, `export`, `train`), as ms-swift's habits expect
//! (`swift infer --adapters output/vN-…/checkpoint-N` with no `--model`):
//!
//! 1. the path names a `checkpoint-N` folder, or a run folder `vN-…` (then its best checkpoint,
//!    per the last `trainer_state.json`'s `best_model_checkpoint`, else its newest; said in the log);
//! 2. the base model is `--model` when given, else the `model` of the checkpoint's `args.json`
//!    (qtrain's and ms-swift's), else `adapter_config.json`'s `base_model_name_or_path`;
//! 3. a base that names a hub id rather than a local folder is an error that says how to get
//!    the folder (qtrain does not download).
//!
//! For `train --resume_from_checkpoint`, [`run_args`] reads the run's own [`TrainArgs`] from the
//! checkpoint, so the checkpoint alone is enough to continue. This module reads small JSON files
//! only; it must not load weights or decide what a resume may change (the trainer does).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::args::TrainArgs;
use crate::checkpoint::{checkpoint_step, list_checkpoints, read_json};
use crate::error::{Result, TrainError};

/// A checkpoint folder found from a path the user gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    /// The `checkpoint-N` (or plain adapter / model) folder to use.
    pub dir: PathBuf,
    /// Set when the path was a run folder: which checkpoint was picked and why (for the log).
    pub note: Option<String>,
}

/// Resolve `path` (given as `--{flag}`) to a checkpoint folder: a folder holding
/// `adapter_config.json` or `config.json` is used as it is; a run folder gives its best (else
/// newest) `checkpoint-N`. Anything else is an error naming the path and what was expected.
pub fn locate(path: &Path, flag: &str) -> Result<Located> {
    if !path.is_dir() {
        let what = if path.exists() { "is not a folder" } else { "does not exist" };
        return Err(TrainError::Invalid(format!("--{flag} {}: {what}", path.display())));
    }
    if is_checkpoint_like(path) {
        return Ok(Located { dir: path.to_path_buf(), note: None });
    }
    if let Some(found) = run_folder_checkpoint(path)? {
        return Ok(found);
    }
    let hint = if has_run_folders(path) { " (it holds run folders: pass one of them, or one of their checkpoint-N folders)" } else { "" };
    Err(TrainError::Invalid(format!(
        "--{flag} {}: neither a checkpoint (no adapter_config.json or config.json) nor a run folder with checkpoint-N folders{hint}",
        path.display()
    )))
}

/// The checkpoint a run folder stands for — its best (per the newest `trainer_state.json`),
/// else its newest — with the log note; `None` when `dir` holds no `checkpoint-N`.
pub fn run_folder_checkpoint(dir: &Path) -> Result<Option<Located>> {
    let checkpoints = list_checkpoints(dir)?;
    let Some((last_step, last)) = checkpoints.last() else { return Ok(None) };
    if let Some(best) = best_checkpoint(last, &checkpoints) {
        let note = format!("{} is a run folder: using its best checkpoint {}", dir.display(), best.display());
        return Ok(Some(Located { dir: best, note: Some(note) }));
    }
    let note = format!("{} is a run folder: using its last checkpoint, checkpoint-{last_step}", dir.display());
    Ok(Some(Located { dir: last.clone(), note: Some(note) }))
}

fn is_checkpoint_like(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file() || dir.join("config.json").is_file()
}

fn has_run_folders(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|entries| entries.flatten().any(|e| is_run_folder_name(&e.file_name().to_string_lossy()))).unwrap_or(false)
}

/// `vN-…` as [`crate::checkpoint::create_run_dir`] names run folders.
fn is_run_folder_name(name: &str) -> bool {
    name.strip_prefix('v').is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// The best checkpoint recorded in the newest checkpoint's `trainer_state.json`, if it still exists.
fn best_checkpoint(newest: &Path, checkpoints: &[(u64, PathBuf)]) -> Option<PathBuf> {
    let state = read_json(&newest.join("trainer_state.json")).ok()?;
    let best = state.get("best_model_checkpoint")?.as_str()?;
    let step = checkpoint_step(Path::new(best).file_name()?.to_str()?)?;
    checkpoints.iter().find(|(s, _)| *s == step).map(|(_, dir)| dir.clone())
}

/// The base model of a checkpoint: `args.json`'s `model`, else `adapter_config.json`'s
/// `base_model_name_or_path`. Returns the folder and where the name came from; an entry that
/// is not a local folder is an error that says what to do.
pub fn base_model(checkpoint: &Path) -> Result<(PathBuf, &'static str)> {
    let args = optional_json(&checkpoint.join("args.json"))?;
    let adapter = optional_json(&checkpoint.join("adapter_config.json"))?;
    let from_args = args.as_ref().and_then(|v| v.get("model")).and_then(Value::as_str).filter(|s| !s.is_empty());
    let from_adapter = adapter.as_ref().and_then(|v| v.get("base_model_name_or_path")).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (name, source) = match (from_args, from_adapter) {
        (Some(m), _) => (m, "args.json"),
        (None, Some(m)) => (m, "adapter_config.json's base_model_name_or_path"),
        (None, None) => {
            return Err(TrainError::Invalid(format!(
                "--model is needed: {} names no base model (no args.json \"model\", no adapter_config.json base_model_name_or_path)",
                checkpoint.display()
            )))
        }
    };
    let dir = PathBuf::from(name);
    if dir.is_dir() {
        return Ok((dir, source));
    }
    let hint = if qtrain_model::config::looks_like_hub_id(name) {
        format!(
            "{name:?} is a Hugging Face hub id and qtrain does not download: fetch it (`huggingface-cli download {name} --local-dir DIR`) and pass --model DIR"
        )
    } else {
        format!("the folder {name} does not exist here: pass --model with the base model's folder")
    };
    Err(TrainError::Invalid(format!("{}: the base model in {source} cannot be used: {hint}", checkpoint.display())))
}

fn optional_json(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The model folder a command should load: `--model` when given, else the base model of the
/// checkpoint (see [`base_model`]). Returns the folder and a log line saying where it came from.
pub fn model_for(model: Option<&Path>, checkpoint: &Path) -> Result<(PathBuf, Option<String>)> {
    match model {
        Some(m) => Ok((m.to_path_buf(), None)),
        None => {
            let (dir, source) = base_model(checkpoint)?;
            let note = format!("no --model: using the base model {} named by the checkpoint's {source}", dir.display());
            Ok((dir, Some(note)))
        }
    }
}

/// The training arguments a checkpoint was made with (`args.json` of a qtrain run), ready to
/// continue: `adapters` is cleared (the checkpoint holds the adapter being trained) and
/// `resume_from_checkpoint` points at `checkpoint`. An `args.json` that is not qtrain's
/// (ms-swift's has keys qtrain does not know) gives only the base model.
pub fn run_args(checkpoint: &Path) -> Result<TrainArgs> {
    let path = checkpoint.join("args.json");
    if !path.is_file() {
        // Said as the resume itself would say it: a partial save lacks more than args.json.
        let lora = checkpoint.join("adapter_config.json").is_file() || !checkpoint.join("config.json").is_file();
        let missing = crate::checkpoint::missing_files(checkpoint, lora);
        let hint = " (an interrupted save leaves checkpoint-N.tmp, never checkpoint-N: pick an earlier checkpoint)";
        return Err(TrainError::Resume {
            path: checkpoint.to_path_buf(),
            message: format!("incomplete checkpoint, missing {}{hint}", missing.join(", ")),
        });
    }
    let value = read_json(&path)?;
    let mut args = match serde_json::from_value::<TrainArgs>(value) {
        Ok(args) => args,
        Err(_) => TrainArgs { model: base_model(checkpoint)?.0, ..TrainArgs::default() },
    };
    args.adapters = None;
    args.resume_from_checkpoint = Some(checkpoint.to_path_buf());
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_run_folder_resolves_to_its_best_else_its_newest_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("v0-20261206-000000");
        for step in [2, 4, 6] {
            write(&run.join(format!("checkpoint-{step}/adapter_config.json")), "{}");
        }
        let found = locate(&run, "adapters").unwrap();
        assert_eq!(found.dir, run.join("checkpoint-6"));
        assert!(found.note.unwrap().contains("last checkpoint, checkpoint-6"));
        let best = run.join("checkpoint-4");
        write(&run.join("checkpoint-6/trainer_state.json"), &format!("{{\"best_model_checkpoint\": {:?}}}", best.to_str().unwrap()));
        let found = locate(&run, "adapters").unwrap();
        assert_eq!(found.dir, best);
        assert!(found.note.unwrap().contains("best checkpoint"));
        // A checkpoint is used as it is.
        assert_eq!(locate(&best, "adapters").unwrap(), Located { dir: best.clone(), note: None });
    }

    #[test]
    fn paths_that_are_neither_say_so_once() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let e = locate(&missing, "adapters").unwrap_err().to_string();
        assert_eq!(e.matches("does not exist").count(), 1, "{e}");
        assert!(e.starts_with("--adapters "), "{e}");
        std::fs::create_dir_all(tmp.path().join("out/v0-20261206-000000")).unwrap();
        let e = locate(&tmp.path().join("out"), "adapters").unwrap_err().to_string();
        assert!(e.contains("it holds run folders"), "{e}");
    }

    #[test]
    fn the_base_model_comes_from_args_json_then_the_adapter_config() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let ckpt = tmp.path().join("ckpt");
        write(&ckpt.join("adapter_config.json"), &format!("{{\"base_model_name_or_path\": {:?}}}", base.to_str().unwrap()));
        assert_eq!(base_model(&ckpt).unwrap(), (base.clone(), "adapter_config.json's base_model_name_or_path"));
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        write(&ckpt.join("args.json"), &format!("{{\"model\": {:?}}}", other.to_str().unwrap()));
        assert_eq!(base_model(&ckpt).unwrap(), (other, "args.json"));
        // --model wins and needs no files.
        assert_eq!(model_for(Some(&base), &tmp.path().join("none")).unwrap(), (base, None));
    }

    #[test]
    fn a_hub_id_base_says_how_to_get_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("ckpt");
        write(&ckpt.join("adapter_config.json"), "{\"base_model_name_or_path\": \"Qwen/Qwen2.5-7B-Instruct\"}");
        let e = base_model(&ckpt).unwrap_err().to_string();
        assert!(e.contains("hub id") && e.contains("--local-dir"), "{e}");
        write(&ckpt.join("args.json"), "{\"model\": \"/no/such/folder\"}");
        let e = base_model(&ckpt).unwrap_err().to_string();
        assert!(e.contains("does not exist here") && e.contains("args.json"), "{e}");
    }

    #[test]
    fn a_checkpoint_without_args_json_is_incomplete() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("checkpoint-4.tmp");
        write(&ckpt.join("adapter_config.json"), "{}");
        let e = run_args(&ckpt).unwrap_err().to_string();
        assert!(e.contains("incomplete checkpoint, missing") && e.contains("args.json"), "{e}");
    }

    #[test]
    fn run_args_are_read_back_ready_to_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("checkpoint-2");
        let saved = TrainArgs {
            model: tmp.path().to_path_buf(),
            dataset: vec!["a.jsonl".into()],
            learning_rate: Some(3e-3),
            adapters: Some("old".into()),
            ..TrainArgs::default()
        };
        write(&ckpt.join("args.json"), &serde_json::to_string(&saved).unwrap());
        let args = run_args(&ckpt).unwrap();
        assert_eq!(args.learning_rate, Some(3e-3));
        assert_eq!(args.dataset, saved.dataset);
        assert_eq!(args.adapters, None);
        assert_eq!(args.resume_from_checkpoint.as_deref(), Some(ckpt.as_path()));
    }
}
