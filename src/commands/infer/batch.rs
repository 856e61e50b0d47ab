//! Batch inference of `qtrain infer` (`swift infer --val_dataset … --result_path …`): every
//! row of the datasets answered, rows grouped `--max_batch_size` at a time, and one JSON object
//! per row written as ms-swift writes it — `response` (generated), `labels` (the reference:
//! the row's last assistant turn, removed from the prompt), `logprobs` (null: not computed),
//! then the row itself with the generated reply appended to `messages`. The file is written
//! under a temporary name and renamed, so a failed run leaves none behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use qtrain_chat::batch::{encode_request, generate_replies};
use qtrain_chat::{ChatOptions, ModelFolder};
use qtrain_core::Backend;
use qtrain_data::{apply_default_system, load_datasets, DatasetOptions, DatasetRow};

use super::InferArgs;

/// The run folder's validation split, written by `qtrain train` next to its checkpoints.
const RUN_VAL_DATASET: &str = "val_dataset.jsonl";

const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn run<B: Backend>(be: &B, folder: &ModelFolder<B>, args: &InferArgs, options: &ChatOptions) -> Result<()> {
    let specs = dataset_specs(args)?;
    let mut rows = load_datasets(&specs, &DatasetOptions { seed: args.seed, allow_prompt_only: true, ..DatasetOptions::default() })?.rows;
    if let Some(system) = &args.system {
        apply_default_system(&mut rows, system);
    }
    let result_path = args.result_path.clone().unwrap_or_else(|| default_result_path(args, folder));
    let mut requests = rows.into_iter().map(|row| Request::new(row, folder, options)).collect::<Result<Vec<_>>>()?;
    let total = requests.len();
    eprintln!("[qtrain] batch inference: {total} rows from {}, up to {} generated together", specs.join(", "), args.max_batch_size);
    // Similar lengths together waste less on padding; results keep the dataset's order.
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&i| requests[i].prompt.len());
    let (start, mut last_progress) = (Instant::now(), Instant::now());
    let (mut done, mut new_tokens, mut stops) = (0, 0, BTreeMap::<String, usize>::new());
    for group in order.chunks(args.max_batch_size) {
        let prompts: Vec<Vec<u32>> = group.iter().map(|&i| requests[i].prompt.clone()).collect();
        for (&i, reply) in group.iter().zip(generate_replies(folder, be, &prompts, options)?) {
            new_tokens += reply.generation.tokens.len();
            *stops.entry(reply.generation.stop.to_string()).or_default() += 1;
            requests[i].response = Some(reply.text);
        }
        done += group.len();
        // A progress line at most every PROGRESS_EVERY, and at the end.
        if done == total || last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!("[qtrain] {done}/{total} rows, {:.1} new tokens/s", new_tokens as f64 / start.elapsed().as_secs_f64().max(1e-9));
        }
    }
    let text: String = requests.into_iter().map(|r| format!("{}\n", r.into_result())).collect();
    write_result(&result_path, &text)?;
    let ends: Vec<String> = stops.iter().map(|(why, n)| format!("{n} {why}")).collect();
    eprintln!(
        "[qtrain] {total} rows answered in {:.1}s ({new_tokens} new tokens; {}); results in {}",
        start.elapsed().as_secs_f64(),
        ends.join(", "),
        result_path.display()
    );
    println!("{}", result_path.display());
    Ok(())
}

/// One dataset row: the prompt messages, the reference reply and, once generated, the reply.
struct Request {
    row: DatasetRow,
    labels: Option<String>,
    prompt: Vec<u32>,
    response: Option<String>,
}

impl Request {
    /// Split off the reference reply (ms-swift's `InferRequest.remove_response`: the last
    /// message when it is the assistant's) and tokenize the prompt.
    fn new<B: Backend>(mut row: DatasetRow, folder: &ModelFolder<B>, options: &ChatOptions) -> Result<Self> {
        let labels = match row.messages.as_array_mut() {
            Some(list) if list.last().is_some_and(|m| m["role"] == "assistant") => {
                list.pop().and_then(|m| m.get("content").and_then(Value::as_str).map(str::to_string))
            }
            _ => None,
        };
        let prompt = encode_request(folder, &row.messages, row.tools.as_ref(), options).map_err(|e| row.error(e))?;
        Ok(Request { row, labels, prompt, response: None })
    }

    /// The result line, keys in ms-swift's order.
    fn into_result(self) -> Value {
        let response = self.response.unwrap_or_default();
        let mut row = self.row.to_json();
        if let Some(list) = row.get_mut("messages").and_then(Value::as_array_mut) {
            list.push(json!({"role": "assistant", "content": response}));
        }
        let mut out = Map::new();
        out.insert("response".into(), response.into());
        out.insert("labels".into(), self.labels.map_or(Value::Null, Value::from));
        out.insert("logprobs".into(), Value::Null);
        if let Value::Object(fields) = row {
            out.extend(fields);
        }
        Value::Object(out)
    }
}

/// `--val_dataset`, or with `--load_data_args` the run's own validation split.
fn dataset_specs(args: &InferArgs) -> Result<Vec<String>> {
    if !args.load_data_args {
        return Ok(args.val_dataset.clone());
    }
    if !args.val_dataset.is_empty() {
        bail!("--load_data_args true answers the run's own validation split; --val_dataset names other data: give one or the other");
    }
    let Some(checkpoint) = &args.adapters else {
        bail!("--load_data_args true reads the validation split of the run an adapter comes from: give --adapters <run>/checkpoint-N");
    };
    let run_dir = checkpoint.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = run_dir.join(RUN_VAL_DATASET);
    if !path.is_file() {
        bail!(
            "{}: not found; --load_data_args reads the {RUN_VAL_DATASET} that `qtrain train` writes in the run folder \
             when it holds out a validation split (--split_dataset_ratio above 0 or --val_dataset)",
            path.display()
        );
    }
    Ok(vec![path.to_string_lossy().into_owned()])
}

/// ms-swift's default: `<adapters or result/<model folder name>>/infer_result/<time>.jsonl`.
fn default_result_path<B: Backend>(args: &InferArgs, folder: &ModelFolder<B>) -> PathBuf {
    let base = args.adapters.clone().unwrap_or_else(|| {
        let name = folder.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        Path::new("result").join(name)
    });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    base.join("infer_result").join(format!("{}.jsonl", qtrain_train::checkpoint::timestamp(now)))
}

fn write_result(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    qtrain_model::safetensors_io::write_atomic(path, text.as_bytes())?;
    Ok(())
}
