//! [`TrainArgs`]: the configuration of a training run, with ms-swift's argument names and
//! defaults (`swift sft`), plus the step arithmetic of transformers' `Trainer`.
//!
//! Some defaults depend on other values (the learning rate on the tuner type, gradient
//! accumulation on the batch size, `max_length` on the model): those fields are `Option`s that
//! [`TrainArgs::resolve`] fills, so the `args.json` of a run records the values actually used.
//! This module must not read datasets or touch tensors; it only decides numbers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use qtrain_model::adapter::{linear_modules, ALL_LINEAR};
use qtrain_model::train::LoraInit;
use qtrain_model::{QwenConfig, TargetModules};
use qtrain_optim::{AdamWHyper, LrSchedule, ScheduleConfig, ScheduleKind, Warmup};

use crate::error::{Result, TrainError};

/// What a run trains (`--tuner_type`, formerly `--train_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunerType {
    /// LoRA adapters on a frozen base model.
    Lora,
    /// Every parameter of the model.
    Full,
}

impl FromStr for TunerType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lora" => Ok(TunerType::Lora),
            "full" => Ok(TunerType::Full),
            other => Err(format!("unknown tuner type {other:?}; valid: lora, full")),
        }
    }
}

impl fmt::Display for TunerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunerType::Lora => "lora",
            TunerType::Full => "full",
        })
    }
}

/// `--init_lora_weights`: `true` (PEFT's default, kaiming-uniform A) or `gaussian`.
/// Serialised as PEFT writes it in `adapter_config.json`: `true` or `"gaussian"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitLoraWeights {
    Kaiming,
    Gaussian,
}

impl InitLoraWeights {
    pub fn lora_init(self) -> LoraInit {
        match self {
            InitLoraWeights::Kaiming => LoraInit::Kaiming,
            InitLoraWeights::Gaussian => LoraInit::Gaussian,
        }
    }

    /// The `init_lora_weights` value of `adapter_config.json`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            InitLoraWeights::Kaiming => serde_json::Value::Bool(true),
            InitLoraWeights::Gaussian => serde_json::Value::String("gaussian".into()),
        }
    }
}

impl FromStr for InitLoraWeights {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "true" | "True" => Ok(InitLoraWeights::Kaiming),
            "gaussian" => Ok(InitLoraWeights::Gaussian),
            other => Err(format!("unsupported init_lora_weights {other:?}; valid: true (kaiming-uniform A), gaussian")),
        }
    }
}

impl Serialize for InitLoraWeights {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for InitLoraWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(InitLoraWeights::Kaiming),
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("unsupported init_lora_weights {other}; valid: true, \"gaussian\""))),
        }
    }
}

/// What to do with a sample longer than `max_length` (ms-swift's `--truncation_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncationStrategy {
    /// Drop the sample (ms-swift's default).
    Delete,
    /// Keep the last `max_length` tokens.
    Left,
    /// Keep the first `max_length` tokens.
    Right,
}

impl FromStr for TruncationStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "delete" => Ok(TruncationStrategy::Delete),
            "left" => Ok(TruncationStrategy::Left),
            "right" => Ok(TruncationStrategy::Right),
            other => Err(format!("unknown truncation strategy {other:?}; valid: delete, left, right")),
        }
    }
}

/// A training run's configuration. Field names are ms-swift's flags; `Default` gives ms-swift's
/// defaults (with the dependent ones unset until [`TrainArgs::resolve`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainArgs {
    /// Hugging Face model folder.
    pub model: PathBuf,
    /// Dataset files (JSONL, or a JSON array, of `{"messages": [...]}` records).
    pub dataset: Vec<PathBuf>,
    /// Runs are written to `output_dir/vN-YYYYMMDD-HHMMSS/`.
    pub output_dir: PathBuf,
    #[serde(alias = "train_type")]
    pub tuner_type: TunerType,
    /// Continue training an existing PEFT adapter: its r, alpha and targets win over the flags.
    pub adapters: Option<PathBuf>,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Module-name suffixes; `all-linear` is every linear layer except the LM head.
    pub target_modules: Vec<String>,
    /// A regular expression over full module names; overrides `target_modules`.
    pub target_regex: Option<String>,
    pub use_rslora: bool,
    pub init_lora_weights: InitLoraWeights,
    /// Peak learning rate; default 1e-4 for LoRA, 1e-5 for full fine-tuning.
    pub learning_rate: Option<f64>,
    pub num_train_epochs: f64,
    /// Optimizer steps of the run; `-1` derives them from `num_train_epochs`.
    pub max_steps: i64,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    /// Default `ceil(16 / per_device_train_batch_size)`.
    pub gradient_accumulation_steps: Option<usize>,
    pub lr_scheduler_type: String,
    pub warmup_ratio: f64,
    /// Wins over `warmup_ratio` when > 0.
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    pub max_grad_norm: f64,
    pub gradient_checkpointing: bool,
    pub logging_steps: u64,
    pub save_steps: u64,
    pub seed: u64,
    /// Shuffle the dataset once after loading.
    pub dataset_shuffle: bool,
    /// Reshuffle the sample order every epoch.
    pub train_dataloader_shuffle: bool,
    /// Longest sample in tokens; default the model's `max_position_embeddings`.
    pub max_length: Option<usize>,
    pub truncation_strategy: TruncationStrategy,
    /// Default system prompt for conversations without one (the dataset's own system message
    /// wins; without either the chat template's default applies).
    pub system: Option<String>,
}

impl Default for TrainArgs {
    fn default() -> Self {
        TrainArgs {
            model: PathBuf::new(),
            dataset: Vec::new(),
            output_dir: PathBuf::from("output"),
            tuner_type: TunerType::Lora,
            adapters: None,
            lora_rank: 8,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            target_modules: vec!["all-linear".into()],
            target_regex: None,
            use_rslora: false,
            init_lora_weights: InitLoraWeights::Kaiming,
            learning_rate: None,
            num_train_epochs: 3.0,
            max_steps: -1,
            per_device_train_batch_size: 1,
            per_device_eval_batch_size: 1,
            gradient_accumulation_steps: None,
            lr_scheduler_type: "cosine".into(),
            warmup_ratio: 0.0,
            warmup_steps: 0,
            weight_decay: 0.1,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            gradient_checkpointing: true,
            logging_steps: 5,
            save_steps: 500,
            seed: 42,
            dataset_shuffle: true,
            train_dataloader_shuffle: true,
            max_length: None,
            truncation_strategy: TruncationStrategy::Delete,
            system: None,
        }
    }
}

/// ms-swift's default accumulation: `ceil(16 / batch / world_size)` (one process here).
pub fn default_gradient_accumulation(per_device_batch: usize) -> usize {
    16usize.div_ceil(per_device_batch.max(1)).max(1)
}

/// Optimizer steps per epoch, as transformers' `Trainer.set_initial_training_values`:
/// `max(len(dataloader) // accum + int(len(dataloader) % accum > 0), 1)` — the last, partial
/// accumulation group of an epoch is a step of its own.
pub fn update_steps_per_epoch(num_micro_batches: u64, accumulation: u64) -> u64 {
    let accumulation = accumulation.max(1);
    (num_micro_batches / accumulation + u64::from(num_micro_batches % accumulation > 0)).max(1)
}

/// Total optimizer steps: `max_steps` when positive, else `ceil(epochs · steps_per_epoch)`.
pub fn total_steps(max_steps: i64, num_train_epochs: f64, steps_per_epoch: u64) -> u64 {
    if max_steps > 0 {
        max_steps as u64
    } else {
        (num_train_epochs * steps_per_epoch as f64).ceil() as u64
    }
}

impl TrainArgs {
    /// Fill the defaults that depend on other values and check every value. `model_max_length`
    /// is the model's `max_position_embeddings`.
    pub fn resolve(&mut self, model_max_length: usize) -> Result<()> {
        if self.dataset.is_empty() {
            return Err(TrainError::arg("dataset", "at least one dataset file is required"));
        }
        if self.per_device_train_batch_size == 0 {
            return Err(TrainError::arg("per_device_train_batch_size", "must be at least 1"));
        }
        if self.per_device_eval_batch_size == 0 {
            return Err(TrainError::arg("per_device_eval_batch_size", "must be at least 1"));
        }
        let accumulation = *self.gradient_accumulation_steps.get_or_insert(default_gradient_accumulation(self.per_device_train_batch_size));
        if accumulation == 0 {
            return Err(TrainError::arg("gradient_accumulation_steps", "must be at least 1"));
        }
        let lr = *self.learning_rate.get_or_insert(match self.tuner_type {
            TunerType::Lora => 1e-4,
            TunerType::Full => 1e-5,
        });
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::arg("learning_rate", format!("{lr} must be finite and > 0")));
        }
        let max_length = *self.max_length.get_or_insert(model_max_length);
        if max_length < 2 {
            return Err(TrainError::arg("max_length", format!("{max_length} is too short: a sample needs at least 2 tokens")));
        }
        if max_length > model_max_length {
            return Err(TrainError::arg(
                "max_length",
                format!("{max_length} exceeds the model's max_position_embeddings {model_max_length}"),
            ));
        }
        if self.max_steps <= 0 && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0) {
            return Err(TrainError::arg("num_train_epochs", format!("{} must be > 0 (or set --max_steps)", self.num_train_epochs)));
        }
        if self.logging_steps == 0 {
            return Err(TrainError::arg("logging_steps", "must be at least 1"));
        }
        if self.save_steps == 0 {
            return Err(TrainError::arg("save_steps", "must be at least 1"));
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm < 0.0 {
            return Err(TrainError::arg("max_grad_norm", format!("{} must be >= 0 (0 disables clipping)", self.max_grad_norm)));
        }
        if self.tuner_type == TunerType::Lora {
            if self.lora_rank == 0 {
                return Err(TrainError::arg("lora_rank", "must be at least 1"));
            }
            if !(0.0..1.0).contains(&self.lora_dropout) {
                return Err(TrainError::arg("lora_dropout", format!("{} must be in [0, 1)", self.lora_dropout)));
            }
            if self.target_regex.is_none() && self.target_modules.is_empty() {
                return Err(TrainError::arg("target_modules", "needs at least one module name (or all-linear)"));
            }
        } else if self.adapters.is_some() {
            return Err(TrainError::arg("adapters", "continuing an adapter needs --tuner_type lora"));
        }
        self.adamw_hyper().validate()?;
        // Build the schedule once so a bad name or warmup ratio fails before any work.
        self.schedule(1)?;
        Ok(())
    }

    /// The resolved gradient accumulation (call after [`TrainArgs::resolve`]).
    pub fn accumulation(&self) -> usize {
        self.gradient_accumulation_steps.unwrap_or_else(|| default_gradient_accumulation(self.per_device_train_batch_size))
    }

    /// The resolved peak learning rate.
    pub fn lr(&self) -> f64 {
        self.learning_rate.unwrap_or(match self.tuner_type {
            TunerType::Lora => 1e-4,
            TunerType::Full => 1e-5,
        })
    }

    /// AdamW hyper-parameters of the decayed parameter group.
    pub fn adamw_hyper(&self) -> AdamWHyper {
        AdamWHyper { beta1: self.adam_beta1, beta2: self.adam_beta2, eps: self.adam_epsilon, weight_decay: self.weight_decay }
    }

    /// The learning-rate schedule of a run of `total_steps` optimizer steps. Warmup: an exact
    /// `warmup_steps` when > 0, else `ceil(warmup_ratio · total_steps)`.
    pub fn schedule(&self, total_steps: u64) -> Result<LrSchedule> {
        let kind: ScheduleKind = self.lr_scheduler_type.parse()?;
        let warmup = if self.warmup_steps > 0 { Warmup::Steps(self.warmup_steps) } else { Warmup::Ratio(self.warmup_ratio) };
        Ok(LrSchedule::new(ScheduleConfig::new(kind, self.lr(), total_steps).with_warmup(warmup))?)
    }

    /// The LoRA targets for `cfg`: `target_regex` if given, else `target_modules` with
    /// `all-linear` expanded, as a sorted list of explicit names (how PEFT saves them). Every
    /// name must select at least one linear layer of the model.
    pub fn lora_targets(&self, cfg: &QwenConfig) -> Result<TargetModules> {
        if let Some(re) = &self.target_regex {
            let targets = TargetModules::Regex(re.clone());
            let modules = linear_modules(cfg);
            let mut any = false;
            for (m, _) in &modules {
                any |= targets.matches(m).map_err(|e| TrainError::arg("target_regex", e.to_string()))?;
            }
            if !any {
                return Err(TrainError::arg("target_regex", format!("{re:?} matches no linear layer (names look like {})", modules[0].0)));
            }
            return Ok(targets);
        }
        let mut names: Vec<String> = Vec::new();
        for t in &self.target_modules {
            if t == "all-linear" {
                names.extend(ALL_LINEAR.iter().map(|s| s.to_string()));
            } else {
                let one = TargetModules::Names(vec![t.clone()]);
                let modules = linear_modules(cfg);
                if !modules.iter().any(|(m, _)| one.matches(m).unwrap_or(false)) {
                    return Err(TrainError::arg(
                        "target_modules",
                        format!("{t:?} matches no linear layer; valid names: all-linear, {}", ALL_LINEAR.join(", ")),
                    ));
                }
                names.push(t.clone());
            }
        }
        names.sort();
        names.dedup();
        Ok(TargetModules::Names(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ms_swift_and_resolve_fills_dependents() {
        let mut a = TrainArgs { dataset: vec!["d.jsonl".into()], ..Default::default() };
        assert_eq!((a.lora_rank, a.lora_alpha, a.lora_dropout), (8, 32.0, 0.05));
        assert_eq!((a.weight_decay, a.adam_beta2, a.max_grad_norm), (0.1, 0.95, 1.0));
        assert_eq!((a.logging_steps, a.save_steps, a.seed), (5, 500, 42));
        a.resolve(512).unwrap();
        assert_eq!(a.gradient_accumulation_steps, Some(16));
        assert_eq!(a.learning_rate, Some(1e-4));
        assert_eq!(a.max_length, Some(512));
        let mut full =
            TrainArgs { dataset: vec!["d".into()], tuner_type: TunerType::Full, per_device_train_batch_size: 3, ..Default::default() };
        full.resolve(64).unwrap();
        assert_eq!(full.learning_rate, Some(1e-5));
        assert_eq!(full.gradient_accumulation_steps, Some(6)); // ceil(16 / 3)
        assert_eq!(default_gradient_accumulation(32), 1);
    }

    #[test]
    fn bad_values_name_the_argument() {
        let bad = |f: &dyn Fn(&mut TrainArgs)| {
            let mut a = TrainArgs { dataset: vec!["d".into()], ..Default::default() };
            f(&mut a);
            a.resolve(512).unwrap_err().to_string()
        };
        assert!(bad(&|a| a.dataset.clear()).contains("--dataset"));
        assert!(bad(&|a| a.lora_dropout = 1.0).contains("--lora_dropout"));
        assert!(bad(&|a| a.max_length = Some(1024)).contains("--max_length"));
        assert!(bad(&|a| a.learning_rate = Some(0.0)).contains("--learning_rate"));
        assert!(bad(&|a| a.lr_scheduler_type = "bogus".into()).contains("bogus"));
        assert!(bad(&|a| a.warmup_ratio = 2.0).contains("warmup"));
    }

    #[test]
    fn step_arithmetic_matches_transformers() {
        // 10 micro-batches, accumulation 4: two full groups and a partial one → 3 steps/epoch.
        assert_eq!(update_steps_per_epoch(10, 4), 3);
        assert_eq!(update_steps_per_epoch(8, 4), 2);
        assert_eq!(update_steps_per_epoch(3, 16), 1);
        assert_eq!(update_steps_per_epoch(0, 16), 1);
        assert_eq!(total_steps(-1, 3.0, 3), 9);
        assert_eq!(total_steps(-1, 1.5, 3), 5); // ceil(4.5)
        assert_eq!(total_steps(7, 3.0, 3), 7);
    }

    #[test]
    fn warmup_steps_win_and_first_warmup_step_has_lr_zero() {
        let mut a = TrainArgs { dataset: vec!["d".into()], warmup_ratio: 0.5, ..Default::default() };
        a.resolve(512).unwrap();
        assert_eq!(a.schedule(10).unwrap().warmup_steps(), 5);
        a.warmup_steps = 2;
        let s = a.schedule(10).unwrap();
        assert_eq!(s.warmup_steps(), 2);
        assert_eq!(s.lr_at(0), 0.0);
        assert_eq!(s.lr_at(1), 0.5e-4);
        assert_eq!(s.lr_at(2), 1e-4);
    }

    #[test]
    fn args_round_trip_through_json_with_ms_swift_names() {
        let json = r#"{"model": "m", "dataset": ["a.jsonl"], "train_type": "full", "init_lora_weights": "gaussian"}"#;
        let a: TrainArgs = serde_json::from_str(json).unwrap();
        assert_eq!(a.tuner_type, TunerType::Full);
        assert_eq!(a.init_lora_weights, InitLoraWeights::Gaussian);
        let back: TrainArgs = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
        assert!(serde_json::from_str::<TrainArgs>(r#"{"lora_rnk": 4}"#).is_err());
        assert_eq!(serde_json::to_value(InitLoraWeights::Kaiming).unwrap(), serde_json::json!(true));
    }
}
