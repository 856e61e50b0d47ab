//! The training recipe: one explicit loop, top to bottom (torchtune's single-device recipe
//! style). Reading this file tells everything a run does, in order:
//!
//! 1. setup — load the model folder, resolve the arguments (and explain the compatibility
//!    flags), attach fresh or existing LoRA adapters (or train everything), restore a
//!    checkpoint's weights when resuming, load and tokenize the datasets (train/validation
//!    split, packing), create the run folder with `args.json` and `val_dataset.jsonl`, work
//!    out the step count and the lr schedule, allocate gradients and AdamW moments (restored
//!    when resuming), the dropout RNG and the data position;
//! 2. the loop — per epoch a row order (seeded by run seed and epoch, so a resumed run finds
//!    its place again; optionally length-grouped), micro-batches of
//!    `per_device_train_batch_size` rows, groups of `gradient_accumulation_steps` micro-batches
//!    per optimizer step. A step counts the supervised targets of all its micro-batches and
//!    scales each micro-batch's summed loss by `1 / that count` (transformers'
//!    `num_items_in_batch`), runs forward + backward on each (LoRA dropout seeded from the
//!    trainer's Rng, one draw per micro-batch), stops the run if the loss or the gradient norm
//!    is not finite (before the update, so nothing poisoned is applied or saved), clips through
//!    the AdamW step's gradient scale, steps AdamW with the scheduled lr of the 0-based step,
//!    and zeroes the gradients;
//! 3. after each step, in this order: log (first step, every `logging_steps`, last step) to
//!    `logging.jsonl`, TensorBoard and stderr; evaluate (every `eval_steps` and at the end)
//!    and track the best eval loss and early stopping (transformers' `EarlyStoppingCallback`:
//!    an evaluation that does not beat the best by more than the threshold counts towards the
//!    patience); a run that teaches an identity (`--model_name` / `--model_author`) also asks
//!    the held-out self-cognition questions at each evaluation ([`crate::cognition`]; without a
//!    validation set, once at the last step); the caller's `on_eval` observer (a sweep's
//!    pruner) sees each evaluation and may stop the run; save a checkpoint (every `save_steps`,
//!    at the last step, and when the run is stopped early or interrupted), then apply
//!    `save_total_limit`;
//! 4. the summary line, plots of the logged curves.
//!
//! Nothing is hidden behind callbacks: every feature is a visible block of this loop. The one
//! caller hook, `on_eval`, can only read an evaluation's numbers and answer stop or go on.
//!
//! [`train_on`] runs on a model folder the caller has loaded, so a sweep loads the base weights
//! once: a LoRA run leaves the folder's model as it found it (its adapters are removed when it
//! returns, whether it succeeded or not); a full fine-tuning run leaves the trained weights in
//! it, so the caller reloads the folder before another run.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use qtrain_core::rng::Rng;
use qtrain_core::{Backend, DType, TensorInfo};
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::train::{BackwardOptions, LossStats, TrainBatch, TrainMode};
use qtrain_model::{AdapterConfig, LoraAdapter, TargetModules};
use qtrain_optim::clip::norm_from_sum_of_squares;
use qtrain_optim::clip_coefficient;

use crate::args::{total_steps, update_steps_per_epoch, OnResume, TrainArgs, TunerType, ARGS};
use crate::checkpoint::{self, CheckpointContent, CheckpointState, ParamState};
use crate::cognition::CognitionProbe;
use crate::dataset::{self, loss_scale, DatasetStats, PrepareOptions, TrainRow};
use crate::error::{Result, TrainError};
use crate::eval::{evaluate_dataset, EvalMetrics};
use crate::folder::LoadedFolder;
use crate::metrics::{self, EvalLog, TrainLog, Window};
use crate::progress::Progress;
use crate::report::RunReport;

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// All `max_steps` steps ran.
    Completed,
    /// `early_stopping_patience` evaluations without improvement.
    EarlyStopping,
    /// Ctrl-C / SIGTERM ([`RunControl::request_stop`]): the step in flight finished and was saved.
    Interrupted,
    /// The `on_eval` observer asked to stop (a sweep's pruner): a final checkpoint was saved.
    Pruned,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::EarlyStopping => "early_stopping",
            StopReason::Interrupted => "interrupted",
            StopReason::Pruned => "pruned",
        }
    }
}

/// Lets another thread (the binary's Ctrl-C handler) ask the loop to stop after the current
/// optimizer step, with a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    stop: Arc<AtomicBool>,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the run to save and stop after the step in flight. Returns whether it had been
    /// asked before (a second Ctrl-C).
    pub fn request_stop(&self) -> bool {
        self.stop.swap(true, Ordering::SeqCst)
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub last_checkpoint: PathBuf,
    /// The checkpoint with the lowest eval loss (runs with a validation set).
    pub best_checkpoint: Option<PathBuf>,
    pub best_metric: Option<f64>,
    pub global_step: u64,
    pub max_steps: u64,
    pub stop: StopReason,
    /// Seconds spent in the training loop of this process (checkpoint writes included).
    pub train_runtime: f64,
    /// Mean loss over every supervised token of the run (resumed runs include the steps
    /// before the checkpoint).
    pub train_loss: f64,
    pub train_samples_per_second: f64,
    pub train_tokens_per_second: f64,
    pub dataset: DatasetStats,
    /// The last evaluation of this process (validation loss and/or self-cognition).
    pub last_eval: Option<EvalMetrics>,
}

/// The observer [`train_on`] calls after each evaluation: `Break` stops the run after a final
/// checkpoint ([`StopReason::Pruned`]).
pub type OnEval<'a> = &'a mut dyn FnMut(&EvalMetrics) -> ControlFlow<()>;

/// The first state words of the trainer's Rng, which draws one LoRA-dropout seed per
/// micro-batch: a stream of its own, derived from the run seed.
pub fn dropout_rng(seed: u64) -> Rng {
    const DROPOUT_STREAM: u64 = 0xD809_D12A_0F7E_0001;
    Rng::new(seed ^ DROPOUT_STREAM)
}

/// Run a training job as `args` describe it (no external stop requests).
pub fn train<B: Backend>(be: &B, args: TrainArgs) -> Result<TrainSummary> {
    train_with(be, args, &RunControl::new())
}

/// Run a training job; `control` lets another thread stop it cleanly.
pub fn train_with<B: Backend>(be: &B, args: TrainArgs, control: &RunControl) -> Result<TrainSummary> {
    let t_load = Instant::now();
    let mut folder = LoadedFolder::load(be, &args.model)?;
    eprintln!("[qtrain] loaded {} in {:.2}s", folder.dir.display(), t_load.elapsed().as_secs_f64());
    train_on(be, &mut folder, args, control, None)
}

/// Run a training job on a model folder the caller has loaded (`args.model` is replaced by
/// `folder.dir`; an adapter attached to the folder's model is removed first: `--adapters` and
/// `--resume_from_checkpoint` attach their own). `on_eval` sees every evaluation and may stop
/// the run. When it returns, the folder's model holds no LoRA adapter (those this run attached
/// are removed, also on error); after full fine-tuning its weights are the trained ones
/// (reload the folder for another run).
pub fn train_on<B: Backend>(
    be: &B,
    folder: &mut LoadedFolder<B>,
    args: TrainArgs,
    control: &RunControl,
    on_eval: Option<OnEval<'_>>,
) -> Result<TrainSummary> {
    let result = recipe(be, folder, args, control, on_eval);
    folder.model.clear_lora();
    result
}

/// The recipe itself, top to bottom (see the module docs).
fn recipe<B: Backend>(
    be: &B,
    folder: &mut LoadedFolder<B>,
    mut args: TrainArgs,
    control: &RunControl,
    mut on_eval: Option<OnEval<'_>>,
) -> Result<TrainSummary> {
    // ---- setup: model and arguments ---------------------------------------------------------
    let model_dir = folder.dir.clone();
    let (tokenizer, template, pad_id, dtype) = (&folder.tokenizer, &folder.template, folder.pad_id, folder.dtype);
    let model = &mut folder.model;
    model.clear_lora();
    args.model = model_dir.clone();
    let mut notes = args.resolve(model.config.max_position_embeddings)?;
    notes.extend(args.compatibility_notes(dtype, model.config.architecture)?);
    // Record where the model is in a form that still works from another directory (export
    // reads it back from the checkpoint's args.json).
    if let Ok(abs) = std::fs::canonicalize(&args.model) {
        args.model = abs;
    }
    let cfg = model.config.clone();
    eprintln!(
        "[qtrain] {} from {}: {} layers, hidden {}, {:.1} M parameters ({})",
        cfg.architecture.hf_class(),
        model_dir.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_parameters() as f64 / 1e6,
        dtype.hf_name(),
    );
    for note in &notes {
        eprintln!("[qtrain] note: {note}");
    }

    // ---- setup: the checkpoint to resume from -----------------------------------------------
    let resume = match &args.resume_from_checkpoint {
        Some(dir) => Some(Resumed::open(dir, args.tuner_type == TunerType::Lora)?),
        None => None,
    };
    if resume.is_some() && args.adapters.is_some() {
        eprintln!("[qtrain] note: --adapters is not loaded when resuming: the checkpoint holds the adapter being trained");
        args.adapters = None;
    }

    // ---- setup: what is trained -------------------------------------------------------------
    let model_name = args.model.to_string_lossy().into_owned();
    let (mode, adapter_config) = match args.tuner_type {
        TunerType::Full => (TrainMode::Full, None),
        TunerType::Lora => {
            let existing = resume.as_ref().map(|r| r.dir.clone()).or_else(|| args.adapters.clone());
            let config = match existing {
                Some(dir) => {
                    // An existing adapter's own r / alpha / targets win over the flags.
                    let adapter = LoraAdapter::load(&dir, &cfg)?;
                    adapter.attach(be, model)?;
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
                    let what = if resume.is_some() { "resuming adapter" } else { "continuing adapter" };
                    eprintln!("[qtrain] {what} {} (r={}, alpha={}, {} modules)", dir.display(), c.r, c.lora_alpha, adapter.weights.len());
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
                    let targets = match &c.target_modules {
                        TargetModules::Names(names) => names.join(", "),
                        TargetModules::Regex(re) => format!("regex {re:?}"),
                    };
                    eprintln!("[qtrain] LoRA r={} alpha={} dropout={} on {n} modules ({targets})", c.r, c.lora_alpha, c.lora_dropout);
                    c
                }
            };
            (TrainMode::Lora, Some(config))
        }
    };

    // ---- setup: data --------------------------------------------------------------------------
    let prep = PrepareOptions::from_args(&args)?;
    let max_length = prep.max_length;
    let data = dataset::prepare(&args.dataset, &args.val_dataset, args.split_dataset_ratio, template, tokenizer, &prep)?;
    let formats: Vec<String> = data.formats.iter().map(|(f, n)| format!("{} {n}", f.name())).collect();
    let st = &data.train_stats;
    eprintln!(
        "[qtrain] dataset: {} rows ({}) → {} samples ({} tokens, {} supervised, longest {})",
        st.records,
        formats.join(", "),
        st.samples,
        st.tokens,
        st.targets,
        st.longest
    );
    report_dropped("training", st, max_length, args.truncation_strategy);
    if data.num_skipped > 0 {
        eprintln!(
            "[qtrain] WARNING: {} malformed dataset rows were skipped (--strict false); the first: {}",
            data.num_skipped,
            data.skipped.iter().take(3).map(ToString::to_string).collect::<Vec<_>>().join("; ")
        );
    }
    if !data.val.is_empty() {
        let vs = &data.val_stats;
        let source = if args.val_dataset.is_empty() {
            format!("--split_dataset_ratio {} of the training rows", args.split_dataset_ratio)
        } else {
            args.val_dataset.join(" ")
        };
        eprintln!("[qtrain] validation: {} samples ({} supervised tokens) from {source}", vs.samples, vs.targets);
        report_dropped("validation", vs, max_length, args.truncation_strategy);
    }
    // The held-out identity questions of a run that teaches an identity.
    let (name, author) = args.self_cognition_names()?;
    let probe = CognitionProbe::for_run(&args.dataset, name.as_ref(), author.as_ref(), args.system.as_deref(), template, tokenizer)?;
    if let Some(p) = &probe {
        let when = if data.val.is_empty() { "at the last step" } else { "at every evaluation" };
        eprintln!(
            "[qtrain] self-cognition: {} held-out identity questions answered greedily {when} (eval_self_cognition_acc, eval_repetition_rate)",
            p.num_questions()
        );
    }
    // Shuffle once after loading (`dataset_shuffle`), then pack (or not) into rows.
    let order = dataset::dataset_order(data.train.len(), args.dataset_shuffle, args.seed);
    let samples: Vec<_> = order.iter().map(|&i| data.train[i].clone()).collect();
    let rows: Vec<TrainRow> = if args.packing {
        let rows = dataset::packed_rows(&samples, max_length)?;
        let tokens: usize = rows.iter().map(TrainRow::len).sum();
        eprintln!(
            "[qtrain] packing: {} samples into {} rows of up to {max_length} tokens ({:.1}% filled)",
            samples.len(),
            rows.len(),
            100.0 * tokens as f64 / (rows.len() * max_length).max(1) as f64
        );
        rows
    } else {
        dataset::unpacked_rows(samples)
    };
    let row_lengths: Vec<usize> = rows.iter().map(TrainRow::len).collect();
    let fingerprint = dataset::fingerprint(&rows);

    // ---- setup: step count, schedule, run folder ------------------------------------------
    let batch_size = args.per_device_train_batch_size;
    let accumulation = args.accumulation();
    let num_micro = rows.len().div_ceil(batch_size);
    let steps_per_epoch = update_steps_per_epoch(num_micro as u64, accumulation as u64);
    let max_steps = total_steps(args.max_steps, args.num_train_epochs, steps_per_epoch);
    let schedule = args.schedule(max_steps)?;
    let eval_steps = args.eval_steps.filter(|_| !data.val.is_empty());
    let run_dir = checkpoint::create_run_dir(&args.output_dir)?;
    let args_json = serde_json::to_value(&args).map_err(|e| TrainError::Invalid(e.to_string()))?;
    checkpoint::write_json(&run_dir.join("args.json"), &args_json)?;
    if !data.val_rows.is_empty() {
        let text: String = data.val_rows.iter().map(|r| format!("{}\n", r.to_json())).collect();
        qtrain_model::safetensors_io::write_atomic(&run_dir.join("val_dataset.jsonl"), text.as_bytes())?;
    }
    eprintln!(
        "[qtrain] run folder {}: {max_steps} steps ({steps_per_epoch} per epoch; batch {batch_size} × accumulation {accumulation}), lr {:e} {} with {} warmup steps{}",
        run_dir.display(),
        args.lr(),
        args.lr_scheduler_type,
        schedule.warmup_steps(),
        eval_steps.map(|n| format!(", eval every {n} steps")).unwrap_or_default()
    );

    // ---- setup: gradients, optimizer state, RNG, data position ---------------------------------
    let mut grads = model.new_grads(be, mode)?;
    let mut moments = Vec::new();
    let mut param_names = Vec::new();
    let mut trainable = 0usize;
    for p in model.trainable_params(&grads) {
        trainable += p.param.numel();
        param_names.push((p.name.clone(), p.param.shape().to_vec()));
        moments.push((be.zeros(p.param.shape())?, be.zeros(p.param.shape())?));
    }
    eprintln!("[qtrain] {trainable} trainable parameters in {} tensors", moments.len());
    let mut rng = dropout_rng(args.seed);
    let mut adam_steps = 0u64;
    let mut state = LoopState::default();
    let (mut epoch, mut micro_start) = (0u64, 0usize);
    let mut resumed_from = None;
    if let Some(r) = &resume {
        // Weights (full fine-tuning; LoRA adapters were attached above), moments, RNG, position.
        let opt = checkpoint::read_optimizer_state(&r.dir.join("optimizer.safetensors"))?;
        if mode == TrainMode::Full {
            let store = SafetensorsStore::open_model_folder(&r.dir)?;
            for p in model.trainable_params(&grads) {
                let values = match opt.get(&p.name).and_then(|s| s.master.clone()) {
                    Some(master) => master,
                    None => store.read(&p.name)?.to_f32(),
                };
                if values.len() != p.param.numel() {
                    return Err(r.error(format!("{} has {} values, the model needs {}", p.name, values.len(), p.param.numel())));
                }
                *p.param = be.upload(qtrain_core::HostData::F32(&values), p.param.shape())?;
            }
        }
        for ((name, shape), (m, v)) in param_names.iter().zip(moments.iter_mut()) {
            let s = opt.get(name).ok_or_else(|| r.error(format!("optimizer.safetensors has no state for {name}")))?;
            if &s.shape != shape {
                return Err(r.error(format!("optimizer state of {name} is {:?}, the parameter is {shape:?}", s.shape)));
            }
            *m = be.upload(qtrain_core::HostData::F32(&s.exp_avg), shape)?;
            *v = be.upload(qtrain_core::HostData::F32(&s.exp_avg_sq), shape)?;
            adam_steps = adam_steps.max(s.step);
        }
        if opt.len() != param_names.len() {
            return Err(r.error(format!("optimizer.safetensors holds {} tensors, this run trains {}", opt.len(), param_names.len())));
        }
        rng = Rng::from_state(r.rng_state()?);
        (epoch, micro_start) = r.data_position(num_micro)?;
        state = LoopState::from_trainer_state(&r.trainer_state);
        for w in r.differences(&args_json, &fingerprint, &schedule) {
            eprintln!("[qtrain] WARNING: {w}");
        }
        eprintln!(
            "[qtrain] resuming from {} at step {} (epoch {epoch}, micro-batch {micro_start} of {num_micro}){}",
            r.dir.display(),
            state.global_step,
            state.best_metric.map(|b| format!("; best eval_loss so far {b:.6}")).unwrap_or_default()
        );
        resumed_from = Some(r.dir.clone());
    }
    let hyper = args.adamw_hyper();
    let hyper_no_decay = hyper.with_weight_decay(0.0);
    let lora_dropout = (mode == TrainMode::Lora && args.lora_dropout > 0.0).then_some(args.lora_dropout as f32);
    let checkpoint_content = match &adapter_config {
        Some(config) => CheckpointContent::Lora { config },
        None => CheckpointContent::Full { source: &model_dir, dtype },
    };
    let save_master = mode == TrainMode::Full && dtype != DType::F32;

    // ---- the loop ---------------------------------------------------------------------------
    let start_step = state.global_step;
    let progress = Progress::new(max_steps, start_step);
    let mut report = RunReport::create(&run_dir, args.tensorboard())?;
    let mut logging = LogFile::create(&run_dir.join("logging.jsonl"))?;
    let t_train = Instant::now();
    let mut tokens_this_run = 0usize;
    let mut last_checkpoint: Option<PathBuf> = resumed_from.clone();
    let mut last_eval: Option<EvalMetrics> = None;
    let mut stop = StopReason::Completed;
    'train: while state.global_step < max_steps {
        let order = dataset::epoch_order(&row_lengths, epoch, args.seed, args.train_dataloader_shuffle, args.group_by_length, batch_size);
        let micro = dataset::micro_batches(&order, batch_size);
        let mut m = std::mem::take(&mut micro_start);
        while m < micro.len() {
            if control.stop_requested() && state.global_step == start_step {
                progress.finish();
                return Err(TrainError::Interrupted);
            }
            let group = &micro[m..(m + accumulation).min(micro.len())];
            // Build the step's micro-batches and count its targets before any backward pass.
            let batches: Vec<TrainBatch> = group
                .iter()
                .map(|ids| dataset::make_batch(&ids.iter().map(|&i| &rows[i]).collect::<Vec<_>>(), pad_id))
                .collect::<Result<_>>()?;
            let step_targets: usize = batches.iter().map(TrainBatch::num_targets).sum();
            let step = state.global_step + 1;
            let lr = schedule.lr_at(state.global_step);
            let mut step_stats = LossStats::default();
            let grad_norm = match loss_scale(step_targets) {
                None => {
                    progress.println(&format!("WARNING: optimizer step {step} has no supervised token; its update is skipped"));
                    for _ in &batches {
                        rng.next_u64();
                    }
                    None
                }
                Some(scale) => {
                    for tb in &batches {
                        let dropout_seed = rng.next_u64();
                        let opts = BackwardOptions {
                            loss_scale: scale,
                            gradient_checkpointing: args.gradient_checkpointing,
                            lora_dropout: lora_dropout.map(|p| (p, dropout_seed)),
                        };
                        step_stats.add(model.forward_backward(be, tb, &mut grads, &opts)?);
                    }
                    // A non-finite loss or gradient stops the run before the update: the last
                    // checkpoint stays the last good state.
                    let loss = step_stats.loss_sum / step_stats.num_targets.max(1) as f64;
                    let mut sum_sq = 0.0;
                    for (_, g) in grads.named(model) {
                        sum_sq += be.sum_squares(g)?;
                    }
                    let norm = norm_from_sum_of_squares(sum_sq);
                    for (what, value) in [("loss", loss), ("gradient norm", norm)] {
                        if !value.is_finite() {
                            progress.finish();
                            let hint = match &last_checkpoint {
                                Some(c) => format!(
                                    "The last good checkpoint is {}: resume from it with --resume_from_checkpoint and a lower --learning_rate, or check the data.",
                                    c.display()
                                ),
                                None => "No checkpoint was saved before it: lower --learning_rate (or check the data) and start again.".into(),
                            };
                            let err = TrainError::Diverged { step, what, value, hint };
                            logging.append(&json!({"error": err.to_string(), "global_step": step}))?;
                            return Err(err);
                        }
                    }
                    let clip = if args.max_grad_norm > 0.0 { clip_coefficient(norm, args.max_grad_norm) } else { 1.0 };
                    adam_steps += 1;
                    for (p, (m1, v1)) in model.trainable_params(&grads).into_iter().zip(moments.iter_mut()) {
                        let h = if p.decay { &hyper } else { &hyper_no_decay };
                        be.adamw_step(p.param, p.grad, m1, v1, h, adam_steps, lr, clip)?;
                    }
                    grads.zero(be)?;
                    Some(norm)
                }
            };
            state.global_step = step;
            state.window.loss_sum += step_stats.loss_sum;
            state.window.targets += step_stats.num_targets;
            state.window.correct += step_stats.num_correct;
            state.window.steps += 1;
            state.total.add(step_stats);
            state.samples_seen += group.iter().flatten().map(|&i| rows[i].num_samples).sum::<usize>();
            let step_tokens: usize = batches.iter().map(|b| b.batch.valid.iter().filter(|&&v| v).count()).sum();
            state.tokens_seen += step_tokens;
            tokens_this_run += step_tokens;
            m += group.len();
            let epoch_f = epoch as f64 + m as f64 / micro.len() as f64;
            // Where the next step starts: the data position a checkpoint of this step records.
            let next_position = if m == micro.len() { (epoch + 1, 0) } else { (epoch, m) };
            let last = step >= max_steps;
            let elapsed = t_train.elapsed().as_secs_f64();
            let step_loss = (step_stats.num_targets > 0).then(|| step_stats.loss_sum / step_stats.num_targets as f64);
            progress.step(step, step_loss, lr, tokens_this_run as f64 / elapsed.max(1e-9));

            // ---- log ------------------------------------------------------------------------
            if step == 1 || step % args.logging_steps == 0 || last {
                let log = TrainLog {
                    window: state.window,
                    grad_norm,
                    learning_rate: lr,
                    epoch: epoch_f,
                    global_step: step,
                    max_steps,
                    elapsed,
                    start_step,
                };
                let record = log.to_json();
                logging.append(&record)?;
                report.train_log(step, &log)?;
                state.push_history(&record, step);
                if !progress.is_bar() || step % args.logging_steps == 0 || last {
                    progress.println(&log.progress_line());
                }
                state.window = Window::default();
            }

            // ---- evaluate, best checkpoint, early stopping, self-cognition, on_eval ----------
            // With a validation set: every `eval_steps` and at the last step. Without one, a
            // run that teaches an identity still asks its questions once, at the last step.
            let evaluate_now = match eval_steps {
                Some(every) => step % every == 0 || last,
                None => last && probe.is_some(),
            };
            if evaluate_now {
                let t_eval = Instant::now();
                let r = match eval_steps {
                    Some(_) => Some(evaluate_dataset(be, model, &data.val, args.per_device_eval_batch_size, pad_id)?),
                    None => None,
                };
                let cognition = match &probe {
                    Some(p) => Some(p.evaluate(be, model, tokenizer)?),
                    None => None,
                };
                let log = EvalLog {
                    loss: r.map(|r| r.loss),
                    token_acc: r.map(|r| r.token_acc),
                    self_cognition_acc: cognition.as_ref().map(|c| c.accuracy),
                    repetition_rate: cognition.as_ref().map(|c| c.repetition_rate),
                    runtime: t_eval.elapsed().as_secs_f64(),
                    samples: r.map_or(0, |r| r.samples),
                    batches: r.map_or(0, |r| r.samples.div_ceil(args.per_device_eval_batch_size)),
                    epoch: epoch_f,
                    global_step: step,
                    max_steps,
                    elapsed: t_train.elapsed().as_secs_f64(),
                    start_step,
                };
                let record = log.to_json();
                logging.append(&record)?;
                report.eval_log(step, &log)?;
                state.push_history(&record, step);
                progress.println(&log.progress_line());
                if let Some(c) = &cognition {
                    progress.println(&c.progress_line());
                }
                if let Some(r) = r {
                    // EarlyStoppingCallback.on_evaluate runs before the best metric is updated.
                    if let Some(patience) = args.early_stopping_patience {
                        let improved =
                            state.best_metric.is_none_or(|best| r.loss < best && (r.loss - best).abs() > args.early_stopping_threshold);
                        state.patience_counter = if improved { 0 } else { state.patience_counter + 1 };
                        if state.patience_counter >= patience {
                            stop = StopReason::EarlyStopping;
                            progress.println(&format!(
                                "early stopping at step {step}: eval_loss {:.6} has not improved on the best {:.6} by more than {} for {} evaluations",
                                r.loss,
                                state.best_metric.unwrap_or(f64::NAN),
                                args.early_stopping_threshold,
                                state.patience_counter
                            ));
                        }
                    }
                    if state.best_metric.is_none_or(|best| r.loss < best) {
                        state.best_metric = Some(r.loss);
                        state.best_global_step = Some(step);
                    }
                }
                let metrics = EvalMetrics {
                    global_step: step,
                    eval_loss: log.loss,
                    eval_token_acc: log.token_acc,
                    eval_self_cognition_acc: log.self_cognition_acc,
                    eval_repetition_rate: log.repetition_rate,
                };
                if let Some(observer) = on_eval.as_mut() {
                    if observer(&metrics).is_break() && stop == StopReason::Completed && !last {
                        stop = StopReason::Pruned;
                        progress.println(&format!("stopped at step {step} by the caller (pruned)"));
                    }
                }
                last_eval = Some(metrics);
            }
            if control.stop_requested() && stop == StopReason::Completed {
                stop = StopReason::Interrupted;
                progress.println(&format!("interrupted: saving a checkpoint at step {step} and stopping"));
            }
            let stopping = stop != StopReason::Completed;

            // ---- checkpoint ------------------------------------------------------------------
            if step % args.save_steps == 0 || last || stopping {
                let this_dir = run_dir.join(format!("checkpoint-{step}"));
                if state.best_global_step == Some(step) {
                    state.best_model_checkpoint = Some(this_dir.clone());
                } else if let Some(b) = state.best_global_step {
                    let candidate = run_dir.join(format!("checkpoint-{b}"));
                    if candidate.is_dir() {
                        state.best_model_checkpoint = Some(candidate);
                    }
                }
                let mut optimizer = Vec::with_capacity(param_names.len());
                let masters: Vec<Option<Vec<f32>>> = if save_master {
                    model.trainable_params(&grads).iter().map(|p| be.download(p.param).map(Some)).collect::<std::result::Result<_, _>>()?
                } else {
                    vec![None; param_names.len()]
                };
                for (((name, shape), (m1, v1)), master) in param_names.iter().zip(&moments).zip(masters) {
                    optimizer.push(ParamState {
                        name: name.clone(),
                        shape: shape.clone(),
                        exp_avg: be.download(m1)?,
                        exp_avg_sq: be.download(v1)?,
                        step: adam_steps,
                        master,
                    });
                }
                let trainer_state = state.trainer_state(&args, max_steps, epoch_f, batch_size);
                let scheduler = json!({
                    "lr_scheduler_type": args.lr_scheduler_type,
                    "config": schedule,
                    "warmup_steps": schedule.warmup_steps(),
                    "last_step": step,
                    "next_lr": schedule.lr_at(step),
                });
                let rng_state = json!({
                    "seed": args.seed,
                    "dropout_rng_state": rng.state(),
                    "lora_dropout": args.lora_dropout,
                });
                let data_state = json!({
                    "epoch": next_position.0,
                    "micro_batch": next_position.1,
                    "sample_index": next_position.1 * batch_size,
                    "num_micro_batches": micro.len(),
                    "num_rows": rows.len(),
                    "shuffle_seed": args.seed,
                    "dataset_shuffle": args.dataset_shuffle,
                    "train_dataloader_shuffle": args.train_dataloader_shuffle,
                    "group_by_length": args.group_by_length,
                    "packing": args.packing,
                    "fingerprint": fingerprint,
                });
                let ckpt = CheckpointState {
                    args_json: &args_json,
                    trainer_state: &trainer_state,
                    scheduler: &scheduler,
                    rng_state: &rng_state,
                    data_state: &data_state,
                    optimizer: &optimizer,
                };
                let dir = checkpoint::save_checkpoint(be, model, &run_dir, step, &checkpoint_content, &ckpt)?;
                progress.println(&format!("saved {}", dir.display()));
                last_checkpoint = Some(dir);
                if let Some(limit) = args.save_total_limit {
                    let best_here =
                        state.best_model_checkpoint.as_ref().filter(|b| b.parent() == Some(run_dir.as_path())).and(state.best_global_step);
                    for gone in checkpoint::rotate_checkpoints(&run_dir, limit, best_here)? {
                        progress.println(&format!("deleted {} (save_total_limit {limit})", gone.display()));
                    }
                }
            }
            if last || stopping {
                break 'train;
            }
        }
        epoch += 1;
    }
    progress.finish();

    // ---- summary ------------------------------------------------------------------------------
    let train_runtime = t_train.elapsed().as_secs_f64();
    let last_checkpoint = last_checkpoint.ok_or_else(|| TrainError::Invalid("no optimizer step ran: nothing to save".into()))?;
    let session_samples = state.samples_seen; // includes the steps before a resume
    let summary = TrainSummary {
        run_dir: run_dir.clone(),
        last_checkpoint: last_checkpoint.clone(),
        best_checkpoint: state.best_model_checkpoint.clone(),
        best_metric: state.best_metric,
        global_step: state.global_step,
        max_steps,
        stop,
        train_runtime,
        train_loss: state.total.mean_loss(),
        train_samples_per_second: session_samples as f64 / train_runtime.max(1e-9),
        train_tokens_per_second: tokens_this_run as f64 / train_runtime.max(1e-9),
        dataset: data.train_stats.clone(),
        last_eval,
    };
    let mut line = json!({
        "last_model_checkpoint": last_checkpoint.to_string_lossy(),
        "best_model_checkpoint": state.best_model_checkpoint.as_ref().map(|p| p.to_string_lossy()),
        "best_metric": state.best_metric.map(metrics::round8),
        "global_step": state.global_step,
        "max_steps": max_steps,
        "train_loss": metrics::round8(summary.train_loss),
        "train_runtime": metrics::round8(train_runtime),
        "train_samples_per_second": metrics::round8(summary.train_samples_per_second),
        "train_steps_per_second": metrics::round8((state.global_step - start_step) as f64 / train_runtime.max(1e-9)),
        "train_tokens_per_second": metrics::round8(summary.train_tokens_per_second),
        "memory(GiB)": metrics::peak_memory_gib().map(|m| (m * 100.0).round() / 100.0),
    });
    if stop != StopReason::Completed {
        line["stop_reason"] = json!(stop.as_str());
    }
    logging.append(&line)?;
    for note in report.finish(&state.log_history)? {
        eprintln!("[qtrain] {note}");
    }
    let how = match stop {
        StopReason::Completed => "done".to_string(),
        StopReason::EarlyStopping => "stopped early (early_stopping_patience)".to_string(),
        StopReason::Interrupted => format!("interrupted; continue with --resume_from_checkpoint {}", last_checkpoint.display()),
        StopReason::Pruned => "stopped by the caller (pruned)".to_string(),
    };
    eprintln!(
        "[qtrain] {how}: {} of {max_steps} steps in {} ({:.0} tokens/s), mean train loss {:.4}; last checkpoint {}{}",
        state.global_step,
        metrics::format_time(train_runtime),
        summary.train_tokens_per_second,
        summary.train_loss,
        last_checkpoint.display(),
        match (&state.best_model_checkpoint, state.best_metric) {
            (Some(b), Some(m)) => format!("; best checkpoint {} (eval_loss {m:.6})", b.display()),
            _ => String::new(),
        }
    );
    Ok(summary)
}

/// Warn about samples that `max_length` cut or dropped and samples without supervised tokens.
fn report_dropped(which: &str, st: &DatasetStats, max_length: usize, strategy: crate::args::TruncationStrategy) {
    let strategy = match strategy {
        crate::args::TruncationStrategy::Delete => "delete",
        crate::args::TruncationStrategy::Left => "left",
        crate::args::TruncationStrategy::Right => "right",
    };
    if st.dropped_too_long > 0 {
        eprintln!(
            "[qtrain] WARNING: {} {which} samples longer than max_length {max_length} were dropped (--truncation_strategy {strategy}; left/right cut them instead)",
            st.dropped_too_long
        );
    }
    if st.truncated > 0 {
        eprintln!(
            "[qtrain] WARNING: {} {which} samples longer than max_length {max_length} were truncated ({} tokens cut, --truncation_strategy {strategy})",
            st.truncated, st.truncated_tokens
        );
    }
    if st.dropped_no_targets > 0 {
        eprintln!(
            "[qtrain] WARNING: {} {which} samples have no supervised token (after truncation) and were dropped",
            st.dropped_no_targets
        );
    }
}

/// The loop's counters that a checkpoint carries in `trainer_state.json`.
#[derive(Clone, Debug, Default)]
struct LoopState {
    global_step: u64,
    /// Loss sums since the last log (kept across a resume so the next log is the same).
    window: Window,
    /// Loss sums of the whole run.
    total: LossStats,
    samples_seen: usize,
    tokens_seen: usize,
    log_history: Vec<Value>,
    best_metric: Option<f64>,
    best_global_step: Option<u64>,
    best_model_checkpoint: Option<PathBuf>,
    /// Evaluations since the last improvement (EarlyStoppingCallback's counter).
    patience_counter: u64,
}

impl LoopState {
    fn push_history(&mut self, record: &Value, step: u64) {
        let mut entry = record.clone();
        entry["step"] = json!(step);
        self.log_history.push(entry);
    }

    /// `trainer_state.json`: transformers' keys plus a `qtrain` section with the sums the
    /// loop needs to continue exactly.
    fn trainer_state(&self, args: &TrainArgs, max_steps: u64, epoch: f64, batch_size: usize) -> Value {
        json!({
            "best_global_step": self.best_global_step,
            "best_metric": self.best_metric,
            "best_model_checkpoint": self.best_model_checkpoint.as_ref().map(|p| p.to_string_lossy()),
            "epoch": metrics::round8(epoch),
            "eval_steps": args.eval_steps,
            "global_step": self.global_step,
            "is_local_process_zero": true,
            "is_world_process_zero": true,
            "log_history": self.log_history,
            "logging_steps": args.logging_steps,
            "max_steps": max_steps,
            "num_input_tokens_seen": self.tokens_seen,
            "num_train_epochs": args.num_train_epochs,
            "save_steps": args.save_steps,
            "stateful_callbacks": {
                "EarlyStoppingCallback": {
                    "args": {
                        "early_stopping_patience": args.early_stopping_patience,
                        "early_stopping_threshold": args.early_stopping_threshold,
                    },
                    "attributes": {"early_stopping_patience_counter": self.patience_counter},
                },
            },
            "train_batch_size": batch_size,
            "qtrain": {
                "window": {"loss_sum": self.window.loss_sum, "targets": self.window.targets, "correct": self.window.correct, "steps": self.window.steps},
                "total": {"loss_sum": self.total.loss_sum, "targets": self.total.num_targets, "correct": self.total.num_correct},
                "samples_seen": self.samples_seen,
            },
        })
    }

    fn from_trainer_state(v: &Value) -> Self {
        let u = |x: &Value| x.as_u64().unwrap_or(0);
        let q = &v["qtrain"];
        LoopState {
            global_step: u(&v["global_step"]),
            window: Window {
                loss_sum: q["window"]["loss_sum"].as_f64().unwrap_or(0.0),
                targets: u(&q["window"]["targets"]) as usize,
                correct: u(&q["window"]["correct"]) as usize,
                steps: u(&q["window"]["steps"]),
            },
            total: LossStats {
                loss_sum: q["total"]["loss_sum"].as_f64().unwrap_or(0.0),
                num_targets: u(&q["total"]["targets"]) as usize,
                num_correct: u(&q["total"]["correct"]) as usize,
            },
            samples_seen: u(&q["samples_seen"]) as usize,
            tokens_seen: u(&v["num_input_tokens_seen"]) as usize,
            log_history: v["log_history"].as_array().cloned().unwrap_or_default(),
            best_metric: v["best_metric"].as_f64(),
            best_global_step: v["best_global_step"].as_u64(),
            best_model_checkpoint: v["best_model_checkpoint"].as_str().map(PathBuf::from),
            patience_counter: u(&v["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"]),
        }
    }
}

/// A checkpoint opened for `--resume_from_checkpoint`, its JSON state files read.
struct Resumed {
    dir: PathBuf,
    trainer_state: Value,
    rng_state: Value,
    data_state: Value,
    scheduler: Value,
    args: Value,
}

impl Resumed {
    fn open(dir: &Path, lora: bool) -> Result<Self> {
        let err = |m: String| TrainError::Resume { path: dir.to_path_buf(), message: m };
        if !dir.is_dir() {
            return Err(err("no such checkpoint folder".into()));
        }
        let missing = checkpoint::missing_files(dir, lora);
        if !missing.is_empty() {
            let other = checkpoint::missing_files(dir, !lora);
            let hint = if other.is_empty() {
                if lora {
                    " (it is a full fine-tuning checkpoint: add --tuner_type full)"
                } else {
                    " (it is a LoRA checkpoint: use --tuner_type lora)"
                }
            } else {
                " (an interrupted save leaves checkpoint-N.tmp, never checkpoint-N: pick an earlier checkpoint)"
            };
            return Err(err(format!("incomplete checkpoint, missing {}{hint}", missing.join(", "))));
        }
        Ok(Resumed {
            dir: dir.to_path_buf(),
            trainer_state: checkpoint::read_json(&dir.join("trainer_state.json"))?,
            rng_state: checkpoint::read_json(&dir.join("rng_state.json"))?,
            data_state: checkpoint::read_json(&dir.join("data_state.json"))?,
            scheduler: checkpoint::read_json(&dir.join("scheduler.json"))?,
            args: checkpoint::read_json(&dir.join("args.json"))?,
        })
    }

    fn error(&self, message: String) -> TrainError {
        TrainError::Resume { path: self.dir.clone(), message }
    }

    fn rng_state(&self) -> Result<[u64; 4]> {
        let words: Vec<u64> = self.rng_state["dropout_rng_state"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        words.try_into().map_err(|_| self.error("rng_state.json: dropout_rng_state must be 4 unsigned integers".into()))
    }

    /// (epoch, first micro-batch) of the next step.
    fn data_position(&self, num_micro: usize) -> Result<(u64, usize)> {
        let (Some(epoch), Some(micro)) = (self.data_state["epoch"].as_u64(), self.data_state["micro_batch"].as_u64()) else {
            return Err(self.error("data_state.json lacks epoch / micro_batch".into()));
        };
        if micro as usize >= num_micro.max(1) {
            return Err(self.error(format!(
                "data_state.json points at micro-batch {micro} but an epoch of this dataset has only {num_micro}: the dataset or batch size changed"
            )));
        }
        Ok((epoch, micro as usize))
    }

    /// What differs between the checkpoint's run and this one in ways that change the
    /// trajectory (the run goes on, but not bit-exactly).
    fn differences(&self, args: &Value, fingerprint: &str, schedule: &qtrain_optim::LrSchedule) -> Vec<String> {
        let mut out = Vec::new();
        // Each argument's `OnResume` property (declared with it in `args.rs`) says which matter.
        let changed: Vec<String> = ARGS
            .iter()
            .filter(|(_, on_resume)| *on_resume == OnResume::Trajectory)
            .map(|(k, _)| k)
            .filter(|k| self.args.get(**k) != args.get(**k))
            .map(|k| format!("{k}: {} → {}", self.args.get(*k).unwrap_or(&Value::Null), args.get(*k).unwrap_or(&Value::Null)))
            .collect();
        if !changed.is_empty() {
            out.push(format!("arguments differ from the checkpoint's, so the run will not continue bit-exactly: {}", changed.join("; ")));
        }
        if self.data_state["fingerprint"].as_str() != Some(fingerprint) {
            out.push("the tokenized dataset differs from the one the checkpoint was trained on".into());
        }
        if let Ok(saved) = serde_json::from_value::<qtrain_optim::LrSchedule>(self.scheduler["config"].clone()) {
            if &saved != schedule {
                out.push(
                    "the learning-rate schedule differs from the checkpoint's (max_steps, warmup or schedule arguments changed)".into(),
                );
            }
        }
        out
    }
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
    fn create(path: &Path) -> Result<Self> {
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
    fn dropout_rng_is_a_stream_of_its_own() {
        let mut a = dropout_rng(42);
        let mut b = dropout_rng(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(dropout_rng(43).next_u64(), dropout_rng(42).next_u64());
        // Not the LoRA-init stream of the same seed.
        assert_ne!(dropout_rng(42).next_u64(), Rng::new(42).next_u64());
    }

    #[test]
    fn loop_state_round_trips_through_trainer_state() {
        let mut s = LoopState {
            global_step: 7,
            window: Window { loss_sum: 1.0 / 3.0, targets: 5, correct: 2, steps: 1 },
            total: LossStats { loss_sum: std::f64::consts::PI, num_targets: 40, num_correct: 9 },
            samples_seen: 14,
            tokens_seen: 321,
            best_metric: Some(0.123456789012345),
            best_global_step: Some(6),
            best_model_checkpoint: Some(PathBuf::from("/x/checkpoint-6")),
            patience_counter: 1,
            ..Default::default()
        };
        s.push_history(&json!({"loss": 1.5}), 7);
        let args = TrainArgs::default();
        let v = s.trainer_state(&args, 10, 1.5, 2);
        let text = serde_json::to_string(&v).unwrap();
        let back = LoopState::from_trainer_state(&serde_json::from_str(&text).unwrap());
        assert_eq!(back.window, s.window);
        assert_eq!(back.total, s.total);
        assert_eq!(back.best_metric.unwrap().to_bits(), s.best_metric.unwrap().to_bits());
        assert_eq!(
            (back.global_step, back.samples_seen, back.tokens_seen, back.best_global_step, back.patience_counter),
            (7, 14, 321, Some(6), 1)
        );
        assert_eq!(back.best_model_checkpoint, s.best_model_checkpoint);
        assert_eq!(back.log_history, vec![json!({"loss": 1.5, "step": 7})]);
    }
}
