//! The training recipe: named phases over one `Run` value (torchtune's single-device recipe
//! style): [`recipe`] is `Run::setup` (`resolve_args`, `setup_adapters`, `Data::prepare`,
//! `Steps::new`, `create_run_folder`, `Optimizer::new` / `Optimizer::restore`), `Run::train`
//! (the loop: `train_step`, `log`, `evaluate`, `save_checkpoint`) and `Run::summary`. Reading
//! this file tells everything a run does, in order:
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
//! Nothing is hidden behind callbacks: every feature is a visible phase called from the loop. The one
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
use qtrain_model::optimizer::clip_scale;
use qtrain_model::safetensors_io::SafetensorsStore;
use qtrain_model::train::ModelGrads;
use qtrain_model::train::{BackwardOptions, LossStats, TrainBatch, TrainMode};
use qtrain_model::{AdamW, AdapterConfig, LoraAdapter, QwenModel, TargetModules};
use qtrain_optim::LrSchedule;

use crate::args::{total_steps, update_steps_per_epoch, BestMetric, IntervalStrategy, OnResume, TrainArgs, TunerType, ARGS};
use crate::checkpoint::{
    self, CheckpointContent, CheckpointFiles, CheckpointState, DataState, EarlyStoppingArgs, EarlyStoppingAttributes, EarlyStoppingState,
    LoopSums, ParamState, RngState, SchedulerState, StatefulCallbacks, TotalSums, TrainerState, WindowSums,
};
use crate::cognition::CognitionProbe;
use crate::dataset::{self, per_target_scale, DatasetStats, PrepareOptions, PreparedData, TrainRow};
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
/// Mixed into a micro-batch's dropout seed to seed its NEFTune noise.
const NEFTUNE_STREAM: u64 = 0x4E45_4654_554E_4531;

pub fn dropout_rng(seed: u64) -> Rng {
    const DROPOUT_STREAM: u64 = 0xD809_D12A_0F7E_0001;
    Rng::new(seed ^ DROPOUT_STREAM)
}

/// Run a training job as `args` describe it (no external stop requests).
pub fn train<B: Backend>(be: &B, args: TrainArgs) -> Result<TrainSummary> {
    train_with(be, args, &RunControl::new())
}

/// Run a training job; `control` lets another thread stop it cleanly.
pub fn train_with<B: Backend>(be: &B, mut args: TrainArgs, control: &RunControl) -> Result<TrainSummary> {
    args.take_weights_only_resume();
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

/// The recipe, phase by phase (see the module docs).
fn recipe<B: Backend>(
    be: &B,
    folder: &mut LoadedFolder<B>,
    args: TrainArgs,
    control: &RunControl,
    mut on_eval: Option<OnEval<'_>>,
) -> Result<TrainSummary> {
    let mut run = Run::setup(be, folder, args, control)?;
    run.train(&mut on_eval)?;
    run.summary()
}

/// What setup decides before anything is written or allocated for training: the resolved
/// arguments, the adapter, the tokenized data (its first sample shown) and the step plan, with
/// a resume's checks passed. `--dry_run` stops here.
struct Plan {
    args: TrainArgs,
    resume: Option<Resumed>,
    mode: TrainMode,
    adapter_config: Option<AdapterConfig>,
    data: Data,
    steps: Steps,
    /// `args.json` of the run folder.
    args_json: Value,
}

impl Plan {
    fn prepare<B: Backend>(be: &B, folder: &mut LoadedFolder<B>, mut args: TrainArgs) -> Result<Self> {
        resolve_args(folder, &mut args)?;
        let resume = match &args.resume_from_checkpoint {
            Some(dir) => Some(Resumed::open(dir, args.tuner_type == TunerType::Lora)?),
            None => None,
        };
        if resume.is_some() && args.adapters.is_some() {
            eprintln!("[qtrain] note: --adapters is not loaded when resuming: the checkpoint holds the adapter being trained");
            args.adapters = None;
        }
        let (mode, adapter_config) = setup_adapters(be, &mut folder.model, &mut args, resume.as_ref().map(|r| r.dir.as_path()))?;
        let data = Data::prepare(&args, folder)?;
        let steps = Steps::new(&args, &data)?;
        let args_json = serde_json::to_value(&args).map_err(|e| TrainError::Invalid(e.to_string()))?;
        if let Some(resume) = &resume {
            // Before anything is written: a refused resume leaves no run folder behind.
            resume.check_same_run(&args_json, &data.fingerprint, &steps.schedule)?;
        }
        Ok(Plan { args, resume, mode, adapter_config, data, steps, args_json })
    }
}

/// `qtrain train --dry_run`: everything a run decides before it starts — arguments, adapter,
/// datasets with the first sample as trained, the step plan, a resume's checks — and nothing
/// written. Returns the number of optimizer steps the run would take.
pub fn dry_run<B: Backend>(be: &B, mut args: TrainArgs) -> Result<u64> {
    args.take_weights_only_resume();
    let mut folder = LoadedFolder::load(be, &args.model)?;
    let plan = Plan::prepare(be, &mut folder, args)?;
    let steps = &plan.steps;
    eprintln!(
        "[qtrain] dry run: {} ({} per epoch; batch {} × accumulation {}) would be written under {}; nothing was written",
        metrics::count(steps.max_steps, "step"),
        steps.steps_per_epoch,
        steps.batch_size,
        steps.accumulation,
        plan.args.output_dir.display()
    );
    folder.model.clear_lora();
    Ok(steps.max_steps)
}

/// A run between its phases: what setup decided, and the state the loop advances.
struct Run<'a, B: Backend> {
    be: &'a B,
    folder: &'a mut LoadedFolder<B>,
    control: &'a RunControl,
    /// The resolved arguments (an existing adapter's r, alpha and targets written in).
    args: TrainArgs,
    /// `args.json` of the run folder.
    args_json: Value,
    mode: TrainMode,
    /// What a checkpoint holds besides the state files: the adapter's PEFT config for LoRA
    /// (`None`: the full model, in the folder's dtype).
    adapter_config: Option<AdapterConfig>,
    data: Data,
    steps: Steps,
    run_dir: PathBuf,
    grads: ModelGrads<B>,
    optimizer: AdamW<B>,
    /// One LoRA-dropout seed per micro-batch.
    rng: Rng,
    state: LoopState,
    /// Where the next optimizer step starts: (epoch, first micro-batch).
    position: (u64, usize),
    /// The global step this process started from (0, or the resumed checkpoint's).
    start_step: u64,
    progress: Progress,
    report: RunReport,
    logging: LogFile,
    t_train: Instant,
    tokens_this_run: usize,
    last_checkpoint: Option<PathBuf>,
    last_eval: Option<EvalMetrics>,
    stop: StopReason,
}

/// The tokenized training data in the order the loop reads it.
struct Data {
    prepared: PreparedData,
    /// The held-out identity questions of a run that teaches an identity.
    probe: Option<CognitionProbe>,
    /// Training rows (packed or one sample each), after the once-only `dataset_shuffle`.
    rows: Vec<TrainRow>,
    row_lengths: Vec<usize>,
    /// Identifies the tokenized rows, so a resume can tell that the data changed.
    fingerprint: String,
}

/// The step arithmetic of the run.
struct Steps {
    batch_size: usize,
    accumulation: usize,
    /// Micro-batches per epoch.
    num_micro: usize,
    steps_per_epoch: u64,
    max_steps: u64,
    schedule: LrSchedule,
    /// `None` without a validation set.
    eval_steps: Option<u64>,
    /// The metric that decides the best checkpoint and early stopping, and whether greater is
    /// better (resolved once from `--metric_for_best_model` / `--greater_is_better`).
    best_metric: (BestMetric, bool),
}

/// What one optimizer step did.
struct StepDone {
    step: u64,
    lr: f64,
    /// `None` for a step without a supervised token (no update).
    grad_norm: Option<f64>,
    /// Fractional epoch after the step.
    epoch: f64,
    last: bool,
    /// The step finished an epoch.
    epoch_end: bool,
    elapsed: f64,
    /// Micro-batches in this epoch.
    num_micro: usize,
}

impl<'a, B: Backend> Run<'a, B> {
    /// Set up model and adapters, data, step count and run folder, gradients and optimizer
    /// (restored from a checkpoint when resuming).
    fn setup(be: &'a B, folder: &'a mut LoadedFolder<B>, args: TrainArgs, control: &'a RunControl) -> Result<Self> {
        let Plan { args, resume, mode, adapter_config, data, steps, args_json } = Plan::prepare(be, folder, args)?;
        let grads = folder.model.new_grads(be, mode)?;
        let mut optimizer = AdamW::new(be, &mut folder.model, &grads, args.adamw_hyper())?;
        eprintln!("[qtrain] {} trainable parameters in {} tensors", optimizer.num_values(), optimizer.params.len());
        let mut rng = dropout_rng(args.seed);
        let mut state = LoopState::default();
        let mut position = (0, 0);
        if let Some(resume) = &resume {
            restore_optimizer(&mut optimizer, be, &mut folder.model, &grads, mode, resume)?;
            rng = Rng::from_state(resume.files.rng_state.dropout_rng_state);
            position = resume.data_position(steps.num_micro)?;
            state = LoopState::from_trainer_state(&resume.files.trainer_state);
            eprintln!(
                "[qtrain] resuming from {} at step {} (epoch {}, micro-batch {} of {}){}",
                resume.dir.display(),
                state.global_step,
                position.0,
                position.1,
                steps.num_micro,
                state.best_metric.map(|b| format!("; best eval_loss so far {b:.6}")).unwrap_or_default()
            );
        }
        let start_step = state.global_step;
        let run_dir = create_run_folder(&args, &args_json, &data, &steps)?;
        Ok(Run {
            be,
            control,
            mode,
            adapter_config,
            progress: Progress::new(steps.max_steps, start_step),
            report: RunReport::create(&run_dir, args.tensorboard())?,
            logging: LogFile::create(&run_dir.join("logging.jsonl"))?,
            t_train: Instant::now(),
            last_checkpoint: resume.map(|r| r.dir),
            folder,
            args,
            args_json,
            data,
            steps,
            run_dir,
            grads,
            optimizer,
            rng,
            state,
            position,
            start_step,
            tokens_this_run: 0,
            last_eval: None,
            stop: StopReason::Completed,
        })
    }

    /// The loop: per epoch a row order and its micro-batches; per group of
    /// `gradient_accumulation_steps` micro-batches one optimizer step, then log, evaluate and
    /// save when their intervals (or a stop) say so.
    fn train(&mut self, on_eval: &mut Option<OnEval<'_>>) -> Result<()> {
        let (batch_size, accumulation) = (self.steps.batch_size, self.steps.accumulation);
        'train: while self.state.global_step < self.steps.max_steps {
            let (epoch, first_micro) = self.position;
            let a = &self.args;
            let order =
                dataset::epoch_order(&self.data.row_lengths, epoch, a.seed, a.train_dataloader_shuffle, a.group_by_length, batch_size);
            let micro = dataset::micro_batches(&order, batch_size);
            let mut next_micro = first_micro;
            while next_micro < micro.len() {
                if self.control.stop_requested() && self.state.global_step == self.start_step {
                    self.progress.finish();
                    return Err(TrainError::Interrupted);
                }
                let group = &micro[next_micro..(next_micro + accumulation).min(micro.len())];
                let (step, lr, grad_norm, stats) = self.train_step(group)?;
                next_micro += group.len();
                // Where the next step starts: the data position a checkpoint of this step records.
                self.position = if next_micro == micro.len() { (epoch + 1, 0) } else { (epoch, next_micro) };
                let done = StepDone {
                    step,
                    lr,
                    grad_norm,
                    epoch: epoch as f64 + next_micro as f64 / micro.len() as f64,
                    last: step >= self.steps.max_steps,
                    epoch_end: next_micro == micro.len(),
                    elapsed: self.t_train.elapsed().as_secs_f64(),
                    num_micro: micro.len(),
                };
                let step_loss = (stats.num_targets > 0).then(|| stats.loss_sum / stats.num_targets as f64);
                self.progress.step(step, step_loss, lr, self.tokens_this_run as f64 / done.elapsed.max(1e-9));
                self.log(&done)?;
                if self.evaluate_now(&done) {
                    self.evaluate(&done, on_eval)?;
                }
                if self.control.stop_requested() && self.stop == StopReason::Completed {
                    self.stop = StopReason::Interrupted;
                    self.progress.println(&format!("interrupted: saving a checkpoint at step {step} and stopping"));
                }
                let stopping = self.stop != StopReason::Completed;
                if self.save_now(&done) || stopping {
                    self.save_checkpoint(&done)?;
                }
                if done.last || stopping {
                    break 'train;
                }
            }
            self.position = (epoch + 1, 0);
        }
        self.progress.finish();
        Ok(())
    }

    /// One optimizer step over a group of micro-batches: forward + backward on each with the
    /// loss scaled by `1 / (the step's supervised targets)`, the finite check, clipping, AdamW,
    /// zeroed gradients; the loop's counters advance. Returns (step, lr, grad norm, losses).
    fn train_step(&mut self, group: &[Vec<usize>]) -> Result<(u64, f64, Option<f64>, LossStats)> {
        let be = self.be;
        // Build the step's micro-batches and count its targets before any backward pass.
        let batches: Vec<TrainBatch> = group
            .iter()
            .map(|ids| dataset::make_batch(&ids.iter().map(|&i| &self.data.rows[i]).collect::<Vec<_>>(), self.folder.pad_id))
            .collect::<Result<_>>()?;
        let step_targets: usize = batches.iter().map(TrainBatch::num_targets).sum();
        let step = self.state.global_step + 1;
        let lr = self.steps.schedule.lr_at(self.state.global_step);
        let mut stats = LossStats::default();
        let grad_norm = match per_target_scale(step_targets) {
            None => {
                self.progress.println(&format!("WARNING: optimizer step {step} has no supervised token; its update is skipped"));
                for _ in &batches {
                    self.rng.next_u64();
                }
                None
            }
            Some(scale) => {
                let lora_dropout = (self.mode == TrainMode::Lora && self.args.lora_dropout > 0.0).then_some(self.args.lora_dropout as f32);
                // config.json's attention_dropout unless --attention_dropout overrides it.
                let attention_p = self.args.attention_dropout.unwrap_or(self.folder.model.config.attention_dropout);
                let attention_dropout = (attention_p > 0.0).then_some(attention_p as f32);
                for tb in &batches {
                    let dropout_seed = self.rng.next_u64();
                    let opts = BackwardOptions {
                        loss_scale: scale,
                        gradient_checkpointing: self.args.gradient_checkpointing,
                        lora_dropout: lora_dropout.map(|p| (p, dropout_seed)),
                        // The micro-batch's seed, in a stream of its own (no extra draw: resume stays exact).
                        neftune: self.args.neftune_noise_alpha.filter(|&a| a > 0.0).map(|a| (a as f32, dropout_seed ^ NEFTUNE_STREAM)),
                        attention_dropout: attention_dropout.map(|p| (p, dropout_seed)),
                    };
                    stats.add(self.folder.model.forward_backward(be, tb, &mut self.grads, &opts)?);
                }
                let loss = stats.loss_sum / stats.num_targets.max(1) as f64;
                let norm = AdamW::grad_norm(be, &self.folder.model, &self.grads)?;
                self.stop_if_not_finite(step, loss, norm)?;
                let clip = clip_scale(norm, self.args.max_grad_norm);
                self.optimizer.step(be, &mut self.folder.model, &self.grads, lr, clip)?;
                self.grads.zero(be)?;
                Some(norm)
            }
        };
        let state = &mut self.state;
        state.global_step = step;
        state.window.loss_sum += stats.loss_sum;
        state.window.targets += stats.num_targets;
        state.window.correct += stats.num_correct;
        state.window.steps += 1;
        state.total.add(stats);
        state.samples_seen += group.iter().flatten().map(|&i| self.data.rows[i].num_samples).sum::<usize>();
        let step_tokens: usize = batches.iter().map(|b| b.batch.valid.iter().filter(|&&v| v).count()).sum();
        state.tokens_seen += step_tokens;
        self.tokens_this_run += step_tokens;
        Ok((step, lr, grad_norm, stats))
    }

    /// A non-finite loss or gradient stops the run before the update: the last checkpoint
    /// stays the last good state.
    fn stop_if_not_finite(&mut self, step: u64, loss: f64, grad_norm: f64) -> Result<()> {
        for (what, value) in [("loss", loss), ("gradient norm", grad_norm)] {
            if !value.is_finite() {
                self.progress.finish();
                let hint = match &self.last_checkpoint {
                    Some(c) => format!(
                        "The last good checkpoint is {}: start again from its weights with --resume_from_checkpoint <it> --resume_only_model true and a lower --learning_rate, or check the data.",
                        c.display()
                    ),
                    None => "No checkpoint was saved before it: lower --learning_rate (or check the data) and start again.".into(),
                };
                let err = TrainError::Diverged { step, what, value, hint };
                self.logging.append(&json!({"error": err.to_string(), "global_step": step}))?;
                return Err(err);
            }
        }
        Ok(())
    }

    /// `--save_strategy`: every `save_steps`, at each epoch's end, or never — and always at
    /// the last step.
    fn save_now(&self, done: &StepDone) -> bool {
        done.last
            || match self.args.save_strategy {
                IntervalStrategy::Steps => done.step % self.args.save_steps == 0,
                IntervalStrategy::Epoch => done.epoch_end,
                IntervalStrategy::No => false,
            }
    }

    /// Log the window since the last log: the first step (`logging_first_step`), every
    /// `logging_steps`, the last step.
    fn log(&mut self, done: &StepDone) -> Result<()> {
        let (step, every) = (done.step, self.args.logging_steps);
        if !((step == 1 && self.args.logging_first_step) || step % every == 0 || done.last) {
            return Ok(());
        }
        let log = TrainLog {
            window: self.state.window,
            grad_norm: done.grad_norm,
            learning_rate: done.lr,
            epoch: done.epoch,
            global_step: step,
            max_steps: self.steps.max_steps,
            elapsed: done.elapsed,
            start_step: self.start_step,
        };
        let record = log.to_json();
        self.logging.append(&record)?;
        self.report.train_log(step, &log)?;
        self.state.push_history(&record, step);
        if !self.progress.is_bar() || step % every == 0 || done.last {
            self.progress.println(&log.progress_line());
        }
        self.state.window = Window::default();
        Ok(())
    }

    /// With a validation set (and `--eval_strategy` not `no`): every `eval_steps` or at each
    /// epoch's end, and at the last step. Without one, a run that teaches an identity still
    /// asks its questions once, at the last step.
    fn evaluate_now(&self, done: &StepDone) -> bool {
        match self.steps.eval_steps {
            Some(every) => {
                done.last || if self.args.eval_interval() == IntervalStrategy::Epoch { done.epoch_end } else { done.step % every == 0 }
            }
            None => done.last && self.data.probe.is_some(),
        }
    }

    /// Evaluate (validation loss and/or self-cognition), log it, track the best eval loss
    /// and early stopping, and let the caller's `on_eval` stop the run.
    fn evaluate(&mut self, done: &StepDone, on_eval: &mut Option<OnEval<'_>>) -> Result<()> {
        let (be, step) = (self.be, done.step);
        let t_eval = Instant::now();
        let eval_batch = self.args.per_device_eval_batch_size;
        let val = match self.steps.eval_steps {
            Some(_) => Some(evaluate_dataset(be, &self.folder.model, &self.data.prepared.val, eval_batch, self.folder.pad_id)?),
            None => None,
        };
        let cognition = match &self.data.probe {
            Some(p) => Some(p.evaluate(be, &self.folder.model, &self.folder.tokenizer)?),
            None => None,
        };
        let log = EvalLog {
            loss: val.map(|v| v.loss),
            token_acc: val.map(|v| v.token_acc),
            self_cognition_acc: cognition.as_ref().map(|c| c.accuracy),
            repetition_rate: cognition.as_ref().map(|c| c.repetition_rate),
            runtime: t_eval.elapsed().as_secs_f64(),
            samples: val.map_or(0, |v| v.samples),
            batches: val.map_or(0, |v| v.samples.div_ceil(eval_batch)),
            epoch: done.epoch,
            global_step: step,
            max_steps: self.steps.max_steps,
            elapsed: self.t_train.elapsed().as_secs_f64(),
            start_step: self.start_step,
        };
        let record = log.to_json();
        self.logging.append(&record)?;
        self.report.eval_log(step, &log)?;
        self.state.push_history(&record, step);
        self.progress.println(&log.progress_line());
        if let Some(c) = &cognition {
            self.progress.println(&c.progress_line());
        }
        let value = match self.steps.best_metric.0 {
            BestMetric::Loss => log.loss,
            BestMetric::TokenAcc => log.token_acc,
            BestMetric::SelfCognitionAcc => log.self_cognition_acc,
        };
        if let Some(value) = value {
            self.track_best(step, value);
        }
        let metrics = EvalMetrics {
            global_step: step,
            eval_loss: log.loss,
            eval_token_acc: log.token_acc,
            eval_self_cognition_acc: log.self_cognition_acc,
            eval_repetition_rate: log.repetition_rate,
        };
        if let Some(observer) = on_eval.as_mut() {
            if observer(&metrics).is_break() && self.stop == StopReason::Completed && !done.last {
                self.stop = StopReason::Pruned;
                self.progress.println(&format!("stopped at step {step} by the caller (pruned)"));
            }
        }
        self.last_eval = Some(metrics);
        Ok(())
    }

    /// Early stopping, then the best metric (transformers' `EarlyStoppingCallback.on_evaluate`
    /// runs before the best metric is updated; both compare with `greater_is_better`).
    fn track_best(&mut self, step: u64, value: f64) {
        let (metric, greater) = self.steps.best_metric;
        let better = |a: f64, b: f64| if greater { a > b } else { a < b };
        let state = &mut self.state;
        if let Some(patience) = self.args.early_stopping_patience {
            let threshold = self.args.early_stopping_threshold;
            let improved = state.best_metric.is_none_or(|best| better(value, best) && (value - best).abs() > threshold);
            state.patience_counter = if improved { 0 } else { state.patience_counter + 1 };
            if state.patience_counter >= patience {
                self.stop = StopReason::EarlyStopping;
                self.progress.println(&format!(
                    "early stopping at step {step}: {} {value:.6} has not improved on the best {:.6} by more than {threshold} for {} evaluations",
                    metric.eval_name(),
                    state.best_metric.unwrap_or(f64::NAN),
                    state.patience_counter
                ));
            }
        }
        if state.best_metric.is_none_or(|best| better(value, best)) {
            state.best_metric = Some(value);
            state.best_global_step = Some(step);
        }
    }

    /// Save `checkpoint-N` (weights or adapter, optimizer and the state files), then apply
    /// `save_total_limit`.
    fn save_checkpoint(&mut self, done: &StepDone) -> Result<()> {
        let (be, step, run_dir) = (self.be, done.step, &self.run_dir);
        let this_dir = run_dir.join(format!("checkpoint-{step}"));
        if self.state.best_global_step == Some(step) {
            self.state.best_model_checkpoint = Some(this_dir);
        } else if let Some(b) = self.state.best_global_step {
            let candidate = run_dir.join(format!("checkpoint-{b}"));
            if candidate.is_dir() {
                self.state.best_model_checkpoint = Some(candidate);
            }
        }
        let save_master = self.mode == TrainMode::Full && self.folder.dtype != DType::F32;
        let weights_only = self.args.save_only_model;
        let optimizer = if weights_only {
            Vec::new()
        } else {
            optimizer_states(&self.optimizer, be, &mut self.folder.model, &self.grads, save_master)?
        };
        let args = &self.args;
        let (schedule, batch_size) = (&self.steps.schedule, self.steps.batch_size);
        let trainer_state = self.state.trainer_state(args, self.steps.max_steps, done.epoch, batch_size);
        let scheduler = SchedulerState {
            lr_scheduler_type: args.lr_scheduler_type.to_string(),
            config: schedule.clone(),
            warmup_steps: schedule.warmup_steps(),
            last_step: step,
            next_lr: schedule.lr_at(step),
        };
        let rng_state = RngState { seed: args.seed, dropout_rng_state: self.rng.state(), lora_dropout: args.lora_dropout };
        let (epoch, micro_batch) = self.position;
        let data_state = DataState {
            epoch,
            micro_batch,
            sample_index: micro_batch * batch_size,
            num_micro_batches: done.num_micro,
            num_rows: self.data.rows.len(),
            shuffle_seed: args.seed,
            dataset_shuffle: args.dataset_shuffle,
            train_dataloader_shuffle: args.train_dataloader_shuffle,
            group_by_length: args.group_by_length,
            packing: args.packing,
            fingerprint: self.data.fingerprint.clone(),
        };
        let ckpt = CheckpointState {
            args_json: &self.args_json,
            trainer_state: &trainer_state,
            scheduler: &scheduler,
            rng_state: &rng_state,
            data_state: &data_state,
            optimizer: &optimizer,
            weights_only,
        };
        let content = match &self.adapter_config {
            Some(config) => CheckpointContent::Lora { config },
            None => CheckpointContent::Full { source: &self.folder.dir, dtype: self.folder.dtype },
        };
        let dir = checkpoint::save_checkpoint(be, &self.folder.model, run_dir, step, &content, &ckpt)?;
        self.progress.println(&format!("saved {}", dir.display()));
        self.last_checkpoint = Some(dir);
        if let Some(limit) = args.save_total_limit {
            let best_here = self
                .state
                .best_model_checkpoint
                .as_ref()
                .filter(|b| b.parent() == Some(run_dir.as_path()))
                .and(self.state.best_global_step);
            for gone in checkpoint::rotate_checkpoints(run_dir, limit, best_here)? {
                self.progress.println(&format!("deleted {} (save_total_limit {limit})", gone.display()));
            }
        }
        Ok(())
    }

    /// The summary: `logging.jsonl`'s last line, the plots, the closing log line.
    fn summary(mut self) -> Result<TrainSummary> {
        let state = &self.state;
        let max_steps = self.steps.max_steps;
        let train_runtime = self.t_train.elapsed().as_secs_f64();
        let last_checkpoint = self.last_checkpoint.ok_or_else(|| TrainError::Invalid("no optimizer step ran: nothing to save".into()))?;
        let session_samples = state.samples_seen; // includes the steps before a resume
        let summary = TrainSummary {
            run_dir: self.run_dir.clone(),
            last_checkpoint: last_checkpoint.clone(),
            best_checkpoint: state.best_model_checkpoint.clone(),
            best_metric: state.best_metric,
            global_step: state.global_step,
            max_steps,
            stop: self.stop,
            train_runtime,
            train_loss: state.total.mean_loss(),
            train_samples_per_second: session_samples as f64 / train_runtime.max(1e-9),
            train_tokens_per_second: self.tokens_this_run as f64 / train_runtime.max(1e-9),
            dataset: self.data.prepared.train_stats.clone(),
            last_eval: self.last_eval,
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
            "train_steps_per_second": metrics::round8((state.global_step - self.start_step) as f64 / train_runtime.max(1e-9)),
            "train_tokens_per_second": metrics::round8(summary.train_tokens_per_second),
            "memory(GiB)": metrics::peak_memory_gib().map(|m| (m * 100.0).round() / 100.0),
        });
        if self.stop != StopReason::Completed {
            line["stop_reason"] = json!(self.stop.as_str());
        }
        self.logging.append(&line)?;
        for note in self.report.finish(&state.log_history)? {
            eprintln!("[qtrain] {note}");
        }
        let how = match self.stop {
            StopReason::Completed => "done".to_string(),
            StopReason::EarlyStopping => "stopped early (early_stopping_patience)".to_string(),
            StopReason::Interrupted => format!("interrupted; continue with --resume_from_checkpoint {}", last_checkpoint.display()),
            StopReason::Pruned => "stopped by the caller (pruned)".to_string(),
        };
        eprintln!(
            "[qtrain] {how}: {} of {} in {} ({:.0} tokens/s), mean train loss {:.4}; last checkpoint {}{}",
            state.global_step,
            metrics::count(max_steps, "step"),
            metrics::format_time(train_runtime),
            summary.train_tokens_per_second,
            summary.train_loss,
            last_checkpoint.display(),
            match (&state.best_model_checkpoint, state.best_metric) {
                (Some(b), Some(m)) => {
                    let (metric, _) = self.steps.best_metric;
                    let result = if self.args.load_best_model_at_end { ", the run's result (--load_best_model_at_end)" } else { "" };
                    format!("; best checkpoint {} ({} {m:.6}){result}", b.display(), metric.eval_name())
                }
                _ => String::new(),
            }
        );
        Ok(summary)
    }
}

/// Resolve the arguments against the folder's model and explain the compatibility flags.
/// Any adapter attached to the folder's model is removed first.
fn resolve_args<B: Backend>(folder: &mut LoadedFolder<B>, args: &mut TrainArgs) -> Result<()> {
    let model = &mut folder.model;
    model.clear_lora();
    args.model = folder.dir.clone();
    let mut notes = args.resolve(model.config.max_position_embeddings)?;
    notes.extend(args.compatibility_notes(folder.dtype, model.config.architecture)?);
    // Record where the model is in a form that still works from another directory (export
    // reads it back from the checkpoint's args.json).
    if let Ok(abs) = std::fs::canonicalize(&args.model) {
        args.model = abs;
    }
    let cfg = &model.config;
    eprintln!(
        "[qtrain] {} from {}: {} layers, hidden {}, {:.1} M parameters ({})",
        cfg.architecture.hf_class(),
        folder.dir.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_parameters() as f64 / 1e6,
        folder.dtype.hf_name(),
    );
    for note in &notes {
        eprintln!("[qtrain] note: {note}");
    }
    Ok(())
}

/// What is trained: every parameter, or LoRA adapters — fresh ones, or the existing adapter
/// of `resume_dir` / `--adapters`, whose own r, alpha and targets win over the flags (and are
/// written into `args`).
fn setup_adapters<B: Backend>(
    be: &B,
    model: &mut QwenModel<B>,
    args: &mut TrainArgs,
    resume_dir: Option<&Path>,
) -> Result<(TrainMode, Option<AdapterConfig>)> {
    if args.tuner_type == TunerType::Full {
        return Ok((TrainMode::Full, None));
    }
    let model_name = args.model.to_string_lossy().into_owned();
    let cfg = model.config.clone();
    let existing = resume_dir.map(Path::to_path_buf).or_else(|| args.adapters.clone());
    let config = match existing {
        Some(dir) => {
            let adapter = LoraAdapter::load(&dir, &cfg).map_err(|e| e.for_model(&args.model))?;
            adapter.attach(be, model)?;
            let mut c = adapter.config.clone();
            c.lora_dropout = args.lora_dropout;
            c.inference_mode = true;
            c.base_model_name_or_path = Some(model_name);
            args.lora_rank = c.r;
            args.lora_alpha = c.lora_alpha;
            args.use_rslora = c.use_rslora;
            match &c.target_modules {
                TargetModules::Names(n) => (args.target_modules, args.target_regex) = (n.clone(), None),
                TargetModules::Regex(r) => args.target_regex = Some(r.clone()),
            }
            let what = if resume_dir.is_some() { "resuming adapter" } else { "continuing adapter" };
            eprintln!("[qtrain] {what} {} (r={}, alpha={}, {} modules)", dir.display(), c.r, c.lora_alpha, adapter.weights.len());
            c
        }
        None => {
            let targets = args.lora_targets(&cfg)?;
            let mut c =
                AdapterConfig::new_lora(args.lora_rank, args.lora_alpha, args.lora_dropout, Vec::new(), args.use_rslora, Some(model_name));
            c.target_modules = targets;
            c.init_lora_weights = args.init_lora_weights.to_json();
            let n = model.init_lora(be, &c, args.init_lora_weights, args.seed)?;
            eprintln!("[qtrain] LoRA r={} alpha={} dropout={} on {n} modules ({})", c.r, c.lora_alpha, c.lora_dropout, c.target_modules);
            c
        }
    };
    Ok((TrainMode::Lora, Some(config)))
}

impl Data {
    /// Load and tokenize the datasets (validation split), set up the self-cognition probe,
    /// shuffle once (`dataset_shuffle`) and pack (or not) into rows.
    fn prepare<B: Backend>(args: &TrainArgs, folder: &LoadedFolder<B>) -> Result<Self> {
        let (template, tokenizer) = (&folder.template, &folder.tokenizer);
        let mut prep = PrepareOptions::from_args(args)?;
        prep.eos_token = folder.eos_token.clone();
        let max_length = prep.max_length;
        let data = dataset::prepare(&args.dataset, &args.val_dataset, args.split_dataset_ratio, template, tokenizer, &prep)?;
        report_datasets(args, &data, max_length);
        if let Some(first) = data.train.first() {
            eprintln!(
                "[qtrain] the first training sample as the model sees it ({} tokens, {} supervised):\n{}",
                first.input_ids.len(),
                first.labels.iter().filter(|&&l| l != -100).count(),
                first.render(tokenizer)?
            );
        }
        let (name, author) = args.self_cognition_names()?;
        let probe = CognitionProbe::for_run(&args.dataset, name.as_ref(), author.as_ref(), args.system.as_deref(), template, tokenizer)?;
        if let Some(p) = &probe {
            let when = if data.val.is_empty() { "at the last step" } else { "at every evaluation" };
            eprintln!(
                "[qtrain] self-cognition: {} held-out identity questions answered greedily {when} (eval_self_cognition_acc, eval_repetition_rate)",
                p.num_questions()
            );
        }
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
        Ok(Data { prepared: data, probe, rows, row_lengths, fingerprint })
    }
}

/// Log what the datasets held and what was dropped, truncated or skipped.
fn report_datasets(args: &TrainArgs, data: &PreparedData, max_length: usize) {
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
}

impl Steps {
    fn new(args: &TrainArgs, data: &Data) -> Result<Self> {
        let batch_size = args.per_device_train_batch_size;
        let accumulation = args.accumulation();
        let num_micro = data.rows.len().div_ceil(batch_size);
        let steps_per_epoch = update_steps_per_epoch(num_micro as u64, accumulation as u64);
        let max_steps = total_steps(args.max_steps, args.num_train_epochs, steps_per_epoch);
        let schedule = args.schedule(max_steps)?;
        let evaluates = !data.prepared.val.is_empty() && args.eval_interval() != IntervalStrategy::No;
        let eval_steps = args.eval_steps.filter(|_| evaluates);
        let best_metric = args.best_metric()?;
        Ok(Steps { batch_size, accumulation, num_micro, steps_per_epoch, max_steps, schedule, eval_steps, best_metric })
    }
}

/// Create the run folder with `args.json` and `val_dataset.jsonl`.
fn create_run_folder(args: &TrainArgs, args_json: &Value, data: &Data, steps: &Steps) -> Result<PathBuf> {
    let run_dir =
        if args.add_version { checkpoint::create_run_dir(&args.output_dir)? } else { checkpoint::use_output_dir(&args.output_dir)? };
    checkpoint::write_json(&run_dir.join("args.json"), args_json)?;
    if !data.prepared.val_rows.is_empty() {
        let text: String = data.prepared.val_rows.iter().map(|r| format!("{}\n", r.to_json())).collect();
        qtrain_model::safetensors_io::write_atomic(&run_dir.join("val_dataset.jsonl"), text.as_bytes())?;
    }
    eprintln!(
        "[qtrain] run folder {}: {} ({} per epoch; batch {} × accumulation {}), lr {:e} {} with {}{}",
        run_dir.display(),
        metrics::count(steps.max_steps, "step"),
        steps.steps_per_epoch,
        steps.batch_size,
        steps.accumulation,
        args.lr(),
        args.lr_scheduler_type,
        metrics::count(steps.schedule.warmup_steps(), "warmup step"),
        match (steps.eval_steps, args.eval_interval()) {
            (Some(_), IntervalStrategy::Epoch) => ", eval at each epoch's end".to_string(),
            (Some(n), _) => format!(", eval every {}", metrics::count(n, "step")),
            (None, _) => String::new(),
        }
    );
    Ok(run_dir)
}

/// The state `optimizer.safetensors` holds; `save_master` adds the f32 weights (full
/// fine-tuning of a model stored in a narrower dtype).
fn optimizer_states<B: Backend>(
    opt: &AdamW<B>,
    be: &B,
    model: &mut QwenModel<B>,
    grads: &ModelGrads<B>,
    save_master: bool,
) -> Result<Vec<ParamState>> {
    let masters: Vec<Option<Vec<f32>>> = if save_master {
        model.trainable_params(grads).iter().map(|p| be.download(p.param).map(Some)).collect::<std::result::Result<_, _>>()?
    } else {
        vec![None; opt.params.len()]
    };
    let mut out = Vec::with_capacity(opt.params.len());
    for (((name, shape), (exp_avg, exp_avg_sq)), master) in opt.params.iter().zip(&opt.moments).zip(masters) {
        out.push(ParamState {
            name: name.clone(),
            shape: shape.clone(),
            exp_avg: be.download(exp_avg)?,
            exp_avg_sq: be.download(exp_avg_sq)?,
            step: opt.num_updates,
            master,
        });
    }
    Ok(out)
}

/// Restore moments and step count from a checkpoint (and, for full fine-tuning, the
/// weights; LoRA adapters were attached by [`setup_adapters`]).
fn restore_optimizer<B: Backend>(
    opt: &mut AdamW<B>,
    be: &B,
    model: &mut QwenModel<B>,
    grads: &ModelGrads<B>,
    mode: TrainMode,
    resume: &Resumed,
) -> Result<()> {
    let saved = checkpoint::read_optimizer_state(&resume.dir.join("optimizer.safetensors"))?;
    if mode == TrainMode::Full {
        let store = SafetensorsStore::open_model_folder(&resume.dir)?;
        for p in model.trainable_params(grads) {
            let values = match saved.get(&p.name).and_then(|s| s.master.clone()) {
                Some(master) => master,
                None => store.read(&p.name)?.to_f32(),
            };
            if values.len() != p.param.numel() {
                return Err(resume.error(format!("{} has {} values, the model needs {}", p.name, values.len(), p.param.numel())));
            }
            *p.param = be.upload(qtrain_core::HostData::F32(&values), p.param.shape())?;
        }
    }
    for ((name, shape), (exp_avg, exp_avg_sq)) in opt.params.iter().zip(opt.moments.iter_mut()) {
        let s = saved.get(name).ok_or_else(|| resume.error(format!("optimizer.safetensors has no state for {name}")))?;
        if &s.shape != shape {
            return Err(resume.error(format!("optimizer state of {name} is {:?}, the parameter is {shape:?}", s.shape)));
        }
        *exp_avg = be.upload(qtrain_core::HostData::F32(&s.exp_avg), shape)?;
        *exp_avg_sq = be.upload(qtrain_core::HostData::F32(&s.exp_avg_sq), shape)?;
        opt.num_updates = opt.num_updates.max(s.step);
    }
    if saved.len() != opt.params.len() {
        return Err(resume.error(format!("optimizer.safetensors holds {} tensors, this run trains {}", saved.len(), opt.params.len())));
    }
    Ok(())
}

/// Warn about samples that `max_length` cut or dropped and samples without supervised tokens.
fn report_dropped(which: &str, st: &DatasetStats, max_length: usize, strategy: crate::args::TruncationStrategy) {
    let strategy = match strategy {
        crate::args::TruncationStrategy::Delete => "delete",
        crate::args::TruncationStrategy::Left => "left",
        crate::args::TruncationStrategy::Right => "right",
        crate::args::TruncationStrategy::Split => "split",
    };
    if st.split_documents > 0 {
        eprintln!(
            "[qtrain] {} {which} documents longer than max_length {max_length} were split into consecutive blocks",
            st.split_documents
        );
    }
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
    fn trainer_state(&self, args: &TrainArgs, max_steps: u64, epoch: f64, batch_size: usize) -> TrainerState {
        TrainerState {
            best_global_step: self.best_global_step,
            best_metric: self.best_metric,
            best_model_checkpoint: self.best_model_checkpoint.as_ref().map(|p| p.to_string_lossy().into_owned()),
            epoch: metrics::round8(epoch),
            eval_steps: args.eval_steps,
            global_step: self.global_step,
            is_local_process_zero: true,
            is_world_process_zero: true,
            log_history: self.log_history.clone(),
            logging_steps: args.logging_steps,
            max_steps,
            num_input_tokens_seen: self.tokens_seen,
            num_train_epochs: args.num_train_epochs,
            save_steps: args.save_steps,
            stateful_callbacks: StatefulCallbacks {
                early_stopping: EarlyStoppingState {
                    args: EarlyStoppingArgs {
                        early_stopping_patience: args.early_stopping_patience,
                        early_stopping_threshold: args.early_stopping_threshold,
                    },
                    attributes: EarlyStoppingAttributes { early_stopping_patience_counter: self.patience_counter },
                },
            },
            train_batch_size: batch_size,
            qtrain: LoopSums {
                window: WindowSums {
                    loss_sum: self.window.loss_sum,
                    targets: self.window.targets,
                    correct: self.window.correct,
                    steps: self.window.steps,
                },
                total: TotalSums { loss_sum: self.total.loss_sum, targets: self.total.num_targets, correct: self.total.num_correct },
                samples_seen: self.samples_seen,
            },
        }
    }

    fn from_trainer_state(t: &TrainerState) -> Self {
        let q = &t.qtrain;
        LoopState {
            global_step: t.global_step,
            window: Window { loss_sum: q.window.loss_sum, targets: q.window.targets, correct: q.window.correct, steps: q.window.steps },
            total: LossStats { loss_sum: q.total.loss_sum, num_targets: q.total.targets, num_correct: q.total.correct },
            samples_seen: q.samples_seen,
            tokens_seen: t.num_input_tokens_seen,
            log_history: t.log_history.clone(),
            best_metric: t.best_metric,
            best_global_step: t.best_global_step,
            best_model_checkpoint: t.best_model_checkpoint.as_ref().map(PathBuf::from),
            patience_counter: t.stateful_callbacks.early_stopping.attributes.early_stopping_patience_counter,
        }
    }
}

/// A checkpoint opened for `--resume_from_checkpoint`, its JSON state files read.
struct Resumed {
    dir: PathBuf,
    files: CheckpointFiles,
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
            } else if dir.join("trainer_state.json").is_file() {
                " (it was saved with --save_only_model: add --resume_only_model true to start a new run from its weights)"
            } else {
                " (an interrupted save leaves checkpoint-N.tmp, never checkpoint-N: pick an earlier checkpoint)"
            };
            return Err(err(format!("incomplete checkpoint, missing {}{hint}", missing.join(", "))));
        }
        Ok(Resumed { dir: dir.to_path_buf(), files: CheckpointFiles::read(dir)? })
    }

    fn error(&self, message: String) -> TrainError {
        TrainError::Resume { path: self.dir.clone(), message }
    }

    /// (epoch, first micro-batch) of the next step.
    fn data_position(&self, num_micro: usize) -> Result<(u64, usize)> {
        let (epoch, micro) = (self.files.data_state.epoch, self.files.data_state.micro_batch);
        if micro >= num_micro.max(1) {
            return Err(self.error(format!(
                "data_state.json points at micro-batch {micro} but an epoch of this dataset has only {num_micro}: the dataset or batch size changed"
            )));
        }
        Ok((epoch, micro))
    }

    /// Refuse a resume that would not continue the checkpoint's trajectory bit-exactly: an
    /// argument whose [`OnResume`] property is `Trajectory` changed, or the tokenized data did.
    /// A schedule stretched by `max_steps` / `num_train_epochs` (free to change) is a note.
    fn check_same_run(&self, args: &Value, fingerprint: &str, schedule: &qtrain_optim::LrSchedule) -> Result<()> {
        // Through TrainArgs, so keys an older qtrain did not write compare as their defaults.
        let saved = serde_json::from_value::<TrainArgs>(self.files.args.clone())
            .ok()
            .and_then(|a| serde_json::to_value(a).ok())
            .unwrap_or_else(|| self.files.args.clone());
        let changed: Vec<String> = ARGS
            .iter()
            .filter(|(_, on_resume)| *on_resume == OnResume::Trajectory)
            .map(|(k, _)| k)
            .filter(|k| saved.get(**k) != args.get(**k))
            .map(|k| format!("--{k} {} (the checkpoint's run: {})", show(args.get(*k)), show(saved.get(*k))))
            .collect();
        let fix = "leave those flags out to continue the run as it was, or add --resume_only_model true to start a new run from the checkpoint's weights";
        if !changed.is_empty() {
            return Err(self.error(format!("changed arguments would not continue the run bit-exactly: {}; {fix}", changed.join(", "))));
        }
        if self.files.data_state.fingerprint != fingerprint {
            return Err(self.error(format!(
                "the tokenized dataset differs from the one the checkpoint was trained on (a dataset file or the tokenizer changed); {fix}"
            )));
        }
        if &self.files.scheduler.config != schedule {
            eprintln!("[qtrain] note: the learning-rate schedule is stretched to the new step count (max_steps or num_train_epochs changed), so the learning rates differ from the checkpoint's run from here on");
        }
        Ok(())
    }
}

/// A JSON value as a flag value: strings without quotes, `null` as "unset".
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "unset".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
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
