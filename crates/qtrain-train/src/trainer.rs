//! The training recipe: one explicit loop, top to bottom (torchtune's single-device recipe
//! style). Reading this file tells everything a run does, in order:
//!
//! 1. setup — load the model folder, resolve the arguments, attach fresh or existing LoRA
//!    adapters (or train everything), tokenize the dataset, create the run folder and
//!    `args.json`, work out the step count and the lr schedule, allocate gradients and AdamW
//!    moments (f32 backend tensors, one pair per trainable tensor);
//! 2. the loop — per epoch an order (shuffled or not), micro-batches of
//!    `per_device_train_batch_size`, groups of `gradient_accumulation_steps` micro-batches per
//!    optimizer step. A step first counts the supervised targets of all its micro-batches and
//!    scales each micro-batch's summed loss by `1 / that count` (transformers'
//!    `num_items_in_batch`, so 1×4 equals 4×1), runs forward + backward on each, takes the
//!    global gradient norm (before clipping), clips through the AdamW step's gradient scale,
//!    steps AdamW with the scheduled lr of the 0-based step (weight decay only where `decay`),
//!    and zeroes the gradients;
//! 3. logging (first step, every `logging_steps`, last step) to `logging.jsonl` and stderr;
//!    checkpoints every `save_steps` and at the last step;
//! 4. a summary line.
//!
//! Nothing is hidden behind callbacks: eval steps, `save_total_limit`, resume and packing are
//! meant to be added as visible lines of this loop.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use qtrain_core::{Backend, TensorInfo};
use qtrain_model::train::{BackwardOptions, LossStats, TrainBatch, TrainMode};
use qtrain_model::{AdapterConfig, LoraAdapter, TargetModules};
use qtrain_optim::clip::norm_from_sum_of_squares;
use qtrain_optim::clip_coefficient;

use crate::args::{total_steps, update_steps_per_epoch, TrainArgs, TunerType};
use crate::checkpoint::{self, CheckpointContent};
use crate::dataset::{self, loss_scale, DatasetStats, PrepareOptions};
use crate::error::{Result, TrainError};
use crate::folder::LoadedFolder;
use crate::metrics::{self, TrainLog, Window};

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub last_checkpoint: PathBuf,
    pub global_step: u64,
    pub max_steps: u64,
    /// Seconds spent in the training loop (checkpoint writes included).
    pub train_runtime: f64,
    /// Mean loss over every supervised token of the run.
    pub train_loss: f64,
    pub train_samples_per_second: f64,
    pub train_tokens_per_second: f64,
    pub dataset: DatasetStats,
}

/// The LoRA dropout seed of micro-batch `micro` of optimizer step `step`: a different mask
/// stream for every (step, micro-batch), reproducible from the run seed.
pub fn dropout_seed(seed: u64, step: u64, micro: usize) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (micro as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run a training job as `args` describe it.
pub fn train<B: Backend>(be: &B, mut args: TrainArgs) -> Result<TrainSummary> {
    // ---- setup: model ---------------------------------------------------------------------
    let t_load = Instant::now();
    let LoadedFolder { dir: model_dir, mut model, tokenizer, template, pad_id, dtype } = LoadedFolder::load(be, &args.model)?;
    args.resolve(model.config.max_position_embeddings)?;
    // Record where the model is in a form that still works from another directory (export
    // reads it back from the checkpoint's args.json).
    if let Ok(abs) = std::fs::canonicalize(&args.model) {
        args.model = abs;
    }
    let cfg = model.config.clone();
    eprintln!(
        "[qtrain] {} from {}: {} layers, hidden {}, {:.1} M parameters ({}), loaded in {:.2}s",
        cfg.architecture.hf_class(),
        model_dir.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_parameters() as f64 / 1e6,
        dtype.hf_name(),
        t_load.elapsed().as_secs_f64()
    );

    // ---- setup: what is trained -----------------------------------------------------------
    let model_name = args.model.to_string_lossy().into_owned();
    let (mode, adapter_config) = match args.tuner_type {
        TunerType::Full => (TrainMode::Full, None),
        TunerType::Lora => {
            let config = match &args.adapters {
                Some(dir) => {
                    // An existing adapter's own r / alpha / targets win over the flags.
                    let adapter = LoraAdapter::load(dir, &cfg)?;
                    adapter.attach(be, &mut model)?;
                    let mut c = adapter.config.clone();
                    c.lora_dropout = args.lora_dropout;
                    c.inference_mode = true;
                    c.base_model_name_or_path = Some(model_name.clone());
                    args.lora_rank = c.r;
                    args.lora_alpha = c.lora_alpha;
                    args.use_rslora = c.use_rslora;
                    match &c.target_modules {
                        TargetModules::Names(n) => (args.target_modules, args.target_regex) = (n.clone(), None),
                        TargetModules::Regex(r) => args.target_regex = Some(r.clone()),
                    }
                    eprintln!(
                        "[qtrain] continuing adapter {} (r={}, alpha={}, {} modules)",
                        dir.display(),
                        c.r,
                        c.lora_alpha,
                        adapter.weights.len()
                    );
                    c
                }
                None => {
                    let targets = args.lora_targets(&cfg)?;
                    let mut c = AdapterConfig::new_lora(
                        args.lora_rank,
                        args.lora_alpha,
                        args.lora_dropout,
                        Vec::new(),
                        args.use_rslora,
                        Some(model_name.clone()),
                    );
                    c.target_modules = targets;
                    c.init_lora_weights = args.init_lora_weights.to_json();
                    let n = model.init_lora(be, &c, args.init_lora_weights.lora_init(), args.seed)?;
                    eprintln!(
                        "[qtrain] LoRA r={} alpha={} dropout={} on {n} modules ({:?})",
                        c.r, c.lora_alpha, c.lora_dropout, c.target_modules
                    );
                    c
                }
            };
            (TrainMode::Lora, Some(config))
        }
    };

    // ---- setup: data ----------------------------------------------------------------------
    let max_length = args.max_length.expect("resolved");
    let prep = PrepareOptions { max_length, truncation: args.truncation_strategy, system: args.system.clone() };
    let data = dataset::prepare(&args.dataset, &template, &tokenizer, &prep)?;
    let st = &data.stats;
    eprintln!(
        "[qtrain] dataset: {} records → {} samples ({} tokens, {} supervised, longest {}); {} longer than max_length {} {}, {} without supervised tokens dropped",
        st.records,
        st.samples,
        st.tokens,
        st.targets,
        st.longest,
        st.dropped_too_long + st.truncated,
        max_length,
        if st.truncated > 0 { "truncated" } else { "dropped" },
        st.dropped_no_targets
    );
    let samples = &data.samples;

    // ---- setup: run folder, step count, schedule ------------------------------------------
    let batch_size = args.per_device_train_batch_size;
    let accumulation = args.accumulation();
    let num_micro = samples.len().div_ceil(batch_size);
    let steps_per_epoch = update_steps_per_epoch(num_micro as u64, accumulation as u64);
    let max_steps = total_steps(args.max_steps, args.num_train_epochs, steps_per_epoch);
    let schedule = args.schedule(max_steps)?;
    let run_dir = checkpoint::create_run_dir(&args.output_dir)?;
    let args_json = serde_json::to_value(&args).map_err(|e| TrainError::Invalid(e.to_string()))?;
    checkpoint::write_json(&run_dir.join("args.json"), &args_json)?;
    eprintln!(
        "[qtrain] run folder {}: {max_steps} steps ({steps_per_epoch} per epoch; batch {batch_size} × accumulation {accumulation}), lr {:e} {} with {} warmup steps",
        run_dir.display(),
        args.lr(),
        args.lr_scheduler_type,
        schedule.warmup_steps()
    );

    // ---- setup: gradients and optimizer state ---------------------------------------------
    let mut grads = model.new_grads(be, mode)?;
    let mut moments = Vec::new();
    let mut trainable = 0usize;
    for p in model.trainable_params(&grads) {
        trainable += p.param.numel();
        moments.push((be.zeros(p.param.shape())?, be.zeros(p.param.shape())?));
    }
    eprintln!("[qtrain] {trainable} trainable parameters in {} tensors", moments.len());
    let hyper = args.adamw_hyper();
    let hyper_no_decay = hyper.with_weight_decay(0.0);
    let lora_dropout = (mode == TrainMode::Lora && args.lora_dropout > 0.0).then_some(args.lora_dropout as f32);
    let checkpoint_content = match &adapter_config {
        Some(config) => CheckpointContent::Lora { config },
        None => CheckpointContent::Full { source: &model_dir, dtype },
    };

    // ---- the loop -------------------------------------------------------------------------
    let base_order = dataset::dataset_order(samples.len(), args.dataset_shuffle, args.seed);
    let t_train = Instant::now();
    let mut global_step = 0u64;
    let mut epoch = 0u64;
    let mut window = Window::default();
    let mut total = LossStats::default();
    let mut samples_seen = 0usize;
    let mut tokens_seen = 0usize;
    let logging_path = run_dir.join("logging.jsonl");
    let mut logging = LogFile::create(&logging_path)?;
    let mut log_history: Vec<Value> = Vec::new();
    let mut last_checkpoint = None;
    'train: while global_step < max_steps {
        let order = dataset::epoch_order(&base_order, epoch, args.train_dataloader_shuffle, args.seed);
        let micro = dataset::micro_batches(&order, batch_size);
        for (group_index, group) in micro.chunks(accumulation).enumerate() {
            // Build the step's micro-batches and count its targets before any backward pass.
            let batches: Vec<TrainBatch> = group
                .iter()
                .map(|ids| {
                    let pairs: Vec<(Vec<u32>, Vec<i32>)> =
                        ids.iter().map(|&i| (samples[i].input_ids.clone(), samples[i].labels.clone())).collect();
                    TrainBatch::from_samples(&pairs, pad_id)
                })
                .collect::<std::result::Result<_, _>>()?;
            let step_targets: usize = batches.iter().map(TrainBatch::num_targets).sum();
            let lr = schedule.lr_at(global_step);
            let mut step_stats = LossStats::default();
            let grad_norm = match loss_scale(step_targets) {
                None => {
                    eprintln!("[qtrain] ERROR: optimizer step {} has no supervised tokens; its update is skipped", global_step + 1);
                    None
                }
                Some(scale) => {
                    for (m, tb) in batches.iter().enumerate() {
                        let opts = BackwardOptions {
                            loss_scale: scale,
                            gradient_checkpointing: args.gradient_checkpointing,
                            lora_dropout: lora_dropout.map(|p| (p, dropout_seed(args.seed, global_step, m))),
                        };
                        step_stats.add(model.forward_backward(be, tb, &mut grads, &opts)?);
                    }
                    let mut sum_sq = 0.0;
                    for (_, g) in grads.named(&model) {
                        sum_sq += be.sum_squares(g)?;
                    }
                    let norm = norm_from_sum_of_squares(sum_sq);
                    if !norm.is_finite() {
                        return Err(TrainError::Invalid(format!(
                            "the gradient norm is {norm} at step {}: training diverged (lower --learning_rate, or check the data)",
                            global_step + 1
                        )));
                    }
                    let clip = if args.max_grad_norm > 0.0 { clip_coefficient(norm, args.max_grad_norm) } else { 1.0 };
                    for (p, (m, v)) in model.trainable_params(&grads).into_iter().zip(moments.iter_mut()) {
                        let h = if p.decay { &hyper } else { &hyper_no_decay };
                        be.adamw_step(p.param, p.grad, m, v, h, global_step + 1, lr, clip)?;
                    }
                    grads.zero(be)?;
                    Some(norm)
                }
            };
            global_step += 1;
            window.loss_sum += step_stats.loss_sum;
            window.targets += step_stats.num_targets;
            window.correct += step_stats.num_correct;
            window.steps += 1;
            total.add(step_stats);
            samples_seen += group.iter().map(Vec::len).sum::<usize>();
            tokens_seen += batches.iter().map(|b| b.batch.valid.iter().filter(|&&v| v).count()).sum::<usize>();
            let micro_done = ((group_index + 1) * accumulation).min(micro.len());
            let epoch_f = epoch as f64 + micro_done as f64 / micro.len() as f64;
            let last = global_step >= max_steps;

            if global_step == 1 || global_step % args.logging_steps == 0 || last {
                let log = TrainLog {
                    window,
                    grad_norm,
                    learning_rate: lr,
                    epoch: epoch_f,
                    global_step,
                    max_steps,
                    elapsed: t_train.elapsed().as_secs_f64(),
                };
                let record = log.to_json();
                logging.append(&record)?;
                let mut entry = record.clone();
                entry["step"] = json!(global_step);
                log_history.push(entry);
                eprintln!("[qtrain] {}", log.progress_line());
                window = Window::default();
            }
            if global_step % args.save_steps == 0 || last {
                let state = json!({
                    "best_metric": null,
                    "best_model_checkpoint": null,
                    "epoch": metrics::round8(epoch_f),
                    "global_step": global_step,
                    "max_steps": max_steps,
                    "num_train_epochs": args.num_train_epochs,
                    "logging_steps": args.logging_steps,
                    "save_steps": args.save_steps,
                    "train_batch_size": batch_size,
                    "num_input_tokens_seen": tokens_seen,
                    "log_history": log_history,
                });
                let dir = checkpoint::save_checkpoint(be, &model, &run_dir, global_step, &checkpoint_content, &args_json, &state)?;
                eprintln!("[qtrain] saved {}", dir.display());
                last_checkpoint = Some(dir);
            }
            if last {
                break 'train;
            }
        }
        epoch += 1;
    }

    // ---- summary --------------------------------------------------------------------------
    let train_runtime = t_train.elapsed().as_secs_f64();
    let last_checkpoint = last_checkpoint.expect("the last step always saves");
    let summary = TrainSummary {
        run_dir: run_dir.clone(),
        last_checkpoint: last_checkpoint.clone(),
        global_step,
        max_steps,
        train_runtime,
        train_loss: total.mean_loss(),
        train_samples_per_second: samples_seen as f64 / train_runtime.max(1e-9),
        train_tokens_per_second: tokens_seen as f64 / train_runtime.max(1e-9),
        dataset: data.stats.clone(),
    };
    let line = json!({
        "last_model_checkpoint": last_checkpoint.to_string_lossy(),
        "best_model_checkpoint": null,
        "best_metric": null,
        "global_step": global_step,
        "max_steps": max_steps,
        "train_loss": metrics::round8(summary.train_loss),
        "train_runtime": metrics::round8(train_runtime),
        "train_samples_per_second": metrics::round8(summary.train_samples_per_second),
        "train_steps_per_second": metrics::round8(global_step as f64 / train_runtime.max(1e-9)),
        "train_tokens_per_second": metrics::round8(summary.train_tokens_per_second),
        "memory(GiB)": metrics::peak_memory_gib().map(|m| (m * 100.0).round() / 100.0),
    });
    logging.append(&line)?;
    eprintln!(
        "[qtrain] done: {global_step} steps in {} ({:.2} samples/s, {:.0} tokens/s), mean train loss {:.4}; last checkpoint {}",
        metrics::format_time(train_runtime),
        summary.train_samples_per_second,
        summary.train_tokens_per_second,
        summary.train_loss,
        last_checkpoint.display()
    );
    Ok(summary)
}

/// `logging.jsonl`, append-only: each record is one `write` of a whole line to a file opened
/// with `O_APPEND`, so readers (and a crash) can only ever see complete earlier lines plus at
/// most a cut last one. (Rewriting the file through a temporary name on every log would cost
/// time quadratic in the run length.)
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
}

impl LogFile {
    fn create(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(LogFile { path: path.to_path_buf(), file })
    }

    fn append(&mut self, record: &Value) -> Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_string(record).map_err(|e| TrainError::Invalid(e.to_string()))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).and_then(|()| self.file.flush()).map_err(|e| TrainError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_seeds_differ_per_step_and_micro_batch() {
        let mut seen = std::collections::HashSet::new();
        for step in 0..50 {
            for micro in 0..8 {
                assert!(seen.insert(dropout_seed(42, step, micro)));
            }
        }
        assert_eq!(dropout_seed(42, 3, 1), dropout_seed(42, 3, 1));
        assert_ne!(dropout_seed(42, 3, 1), dropout_seed(43, 3, 1));
    }
}
