//! [`TrainArgs`]: the configuration of a training run, with ms-swift's argument names and
//! defaults (`swift sft`), plus the step arithmetic of transformers' `Trainer`.
//!
//! Some defaults depend on other values (the learning rate on the tuner type, gradient
//! accumulation on the batch size, `max_length` on the model): those fields are `Option`s that
//! [`TrainArgs::resolve`] fills, so the `args.json` of a run records the values actually used.
//! A run can also be described by a TOML file (`--config`) whose keys are the flag names
//! ([`TrainArgs::from_toml_file`]); the binary lays command-line values over it.
//! This module must not read datasets or touch tensors; it only decides numbers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ArgAction;
use serde::{Deserialize, Deserializer, Serialize};

use qtrain_core::DType;
use qtrain_data::{Bilingual, LossScale};
use qtrain_model::adapter::{linear_modules, ALL_LINEAR};
use qtrain_model::config::Architecture;
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
    /// Split into consecutive `max_length` blocks, each a sample (raw text only: ms-swift's
    /// `split`, for `swift pt`).
    Split,
}

impl FromStr for TruncationStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            // ms-swift spells its default `delete`, older versions `raise`.
            "delete" | "raise" => Ok(TruncationStrategy::Delete),
            "left" => Ok(TruncationStrategy::Left),
            "right" => Ok(TruncationStrategy::Right),
            "split" => Ok(TruncationStrategy::Split),
            other => Err(format!("unknown truncation strategy {other:?}; valid: delete, left, right, split")),
        }
    }
}

/// `--loss_scale`, ms-swift's names for which tokens are trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScaleArg {
    /// Every assistant turn (ms-swift's `default`).
    Default,
    /// The last assistant turn only.
    LastRound,
    /// Every token: raw text only (`qtrain pt`, `--use_chat_template false`).
    All,
}

impl FromStr for LossScaleArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "default" => Ok(LossScaleArg::Default),
            "last_round" => Ok(LossScaleArg::LastRound),
            "all" => Ok(LossScaleArg::All),
            other => Err(format!("unknown loss scale {other:?}; valid: default (every assistant turn), last_round, all (raw text only)")),
        }
    }
}

impl fmt::Display for LossScaleArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossScaleArg::Default => "default",
            LossScaleArg::LastRound => "last_round",
            LossScaleArg::All => "all",
        })
    }
}

/// When to save or evaluate (transformers' `IntervalStrategy`, ms-swift's `--save_strategy` /
/// `--eval_strategy`): every N steps, at each epoch's end, or not at all. The last step is
/// always saved (ms-swift's habit), whatever the strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    Steps,
    Epoch,
    No,
}

impl FromStr for IntervalStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "steps" => Ok(IntervalStrategy::Steps),
            "epoch" => Ok(IntervalStrategy::Epoch),
            "no" => Ok(IntervalStrategy::No),
            other => Err(format!("unknown strategy {other:?}; valid: steps, epoch, no")),
        }
    }
}

impl fmt::Display for IntervalStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IntervalStrategy::Steps => "steps",
            IntervalStrategy::Epoch => "epoch",
            IntervalStrategy::No => "no",
        })
    }
}

/// The evaluation metric that decides the best checkpoint and early stopping
/// (`--metric_for_best_model`, with or without transformers' `eval_` prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BestMetric {
    Loss,
    TokenAcc,
    SelfCognitionAcc,
}

impl BestMetric {
    pub const NAMES: [&'static str; 3] = ["loss", "token_acc", "self_cognition_acc"];

    pub fn parse(name: &str) -> Option<Self> {
        match name.strip_prefix("eval_").unwrap_or(name) {
            "loss" => Some(BestMetric::Loss),
            "token_acc" | "acc" => Some(BestMetric::TokenAcc),
            "self_cognition_acc" => Some(BestMetric::SelfCognitionAcc),
            _ => None,
        }
    }

    /// The name in logs and `trainer_state.json` (`eval_loss`, …).
    pub fn eval_name(self) -> &'static str {
        match self {
            BestMetric::Loss => "eval_loss",
            BestMetric::TokenAcc => "eval_token_acc",
            BestMetric::SelfCognitionAcc => "eval_self_cognition_acc",
        }
    }
}

/// `--lr_scheduler_kwargs`: the extra arguments of a schedule, as transformers'
/// `lr_scheduler_kwargs` (a JSON object on the command line, a table or a JSON string in a
/// TOML config). Each key applies to some schedules only; a key the chosen schedule does not
/// use is an error (qtrain-optim checks), as is a key that no schedule knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SchedulerKwargs {
    /// `cosine_with_min_lr`: the final learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// `cosine_with_min_lr`: the final learning rate as a fraction of the peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr_rate: Option<f64>,
    /// `polynomial`: the final learning rate (default 1e-7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_end: Option<f64>,
    /// `polynomial`: the power (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
    /// `cosine`, `cosine_with_min_lr`: number of cosine waves (default 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_cycles: Option<f64>,
    /// `exponential` (qtrain's own): decay factor per optimizer step after warmup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
}

/// The keys [`SchedulerKwargs`] accepts.
pub const SCHEDULER_KWARGS: [&str; 6] = ["min_lr", "min_lr_rate", "lr_end", "power", "num_cycles", "gamma"];

impl SchedulerKwargs {
    /// From a JSON object; unknown keys and non-numeric values are errors naming the key.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let serde_json::Value::Object(map) = value else {
            return Err(format!("expected a JSON object such as '{{\"min_lr\": 1e-6}}', got {value}"));
        };
        let mut k = SchedulerKwargs::default();
        for (key, v) in map {
            let slot = match key.as_str() {
                "min_lr" => &mut k.min_lr,
                "min_lr_rate" => &mut k.min_lr_rate,
                "lr_end" => &mut k.lr_end,
                "power" => &mut k.power,
                "num_cycles" => &mut k.num_cycles,
                "gamma" => &mut k.gamma,
                other => return Err(format!("unknown key {other:?}; valid: {}", SCHEDULER_KWARGS.join(", "))),
            };
            *slot = Some(v.as_f64().ok_or_else(|| format!("{key}: expected a number, got {v}"))?);
        }
        Ok(k)
    }

    pub fn is_empty(&self) -> bool {
        *self == SchedulerKwargs::default()
    }
}

impl FromStr for SchedulerKwargs {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not valid JSON ({e}): {s}"))?;
        SchedulerKwargs::from_json(&value)
    }
}

impl<'de> Deserialize<'de> for SchedulerKwargs {
    /// A table / object, or a string holding a JSON object (how ms-swift's YAML configs write it).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => SchedulerKwargs::from_json(&other).map_err(serde::de::Error::custom),
        }
    }
}

/// A list that a config may also write as a single string (`dataset = "a.jsonl"`).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Whether a resumed run may change an argument without leaving the checkpoint's trajectory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnResume {
    /// Changing it changes what is trained (data, order, optimisation): a resume with a
    /// different value goes on, but says it will not continue bit-exactly.
    Trajectory,
    /// Free to change (output, logging, checkpoints, compatibility flags), or read from the
    /// checkpoint itself (LoRA r, alpha and targets come from its adapter).
    Free,
}

/// The commands that share these arguments; each may give some of them another default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainCommand {
    /// `qtrain train` (ms-swift's `swift sft`): conversations through the chat template.
    Train,
    /// `qtrain pt` (ms-swift's `swift pt`): continued pretraining on raw text. Its defaults
    /// are the `pt = …` values of the table below.
    Pt,
}

/// Each `train` argument is declared once, here: its doc comment is its `--help` text, the
/// `#[arg]` attribute its command-line spelling, the `#[serde]` attributes its config-file
/// spelling, `= value` its default (none: an `Option` that is unset, or filled by
/// [`TrainArgs::resolve`]), an optional `pt = value` its default under `qtrain pt`
/// ([`TrainCommand::Pt`]), and the last word its [`OnResume`] property. From this one table
/// the macro generates [`TrainArgs`] with its `Default`, the command-line overlay
/// [`TrainArgsFlags`] (every flag optional, so an unset flag keeps the config file's value)
/// with [`TrainArgsFlags::apply`], and [`ARGS`], the names with their resume property.
macro_rules! train_args {
    // Normalise each entry to `{ [docs] [arg] [serde] field, type, flag type, default, (wrap), resume }`:
    // an `Option` argument is unset by default and its flag has the same type; any other
    // argument has a `= default` and an optional flag. `wrap` turns a flag's value into the field's.
    (@entries [$($done:tt)*]) => { train_args!(@emit $($done)*); };
    (@entries [$($done:tt)*]
        $(#[doc = $doc:literal])* #[arg($($arg:tt)*)] $(#[serde($($serde:tt)*)])*
        $field:ident: Option<$inner:ty>, $resume:ident; $($rest:tt)*) => {
        train_args!(@entries [$($done)* {
            [$($doc)*] [$($arg)*] [$([$($serde)*])*] $field, Option<$inner>, Option<$inner>, None, [], (Some), $resume
        }] $($rest)*);
    };
    (@entries [$($done:tt)*]
        $(#[doc = $doc:literal])* #[arg($($arg:tt)*)] $(#[serde($($serde:tt)*)])*
        $field:ident: $ty:ty = $default:expr, pt = $pt:expr, $resume:ident; $($rest:tt)*) => {
        train_args!(@entries [$($done)* {
            [$($doc)*] [$($arg)*] [$([$($serde)*])*] $field, $ty, Option<$ty>, $default, [$pt], (), $resume
        }] $($rest)*);
    };
    (@entries [$($done:tt)*]
        $(#[doc = $doc:literal])* #[arg($($arg:tt)*)] $(#[serde($($serde:tt)*)])*
        $field:ident: $ty:ty = $default:expr, $resume:ident; $($rest:tt)*) => {
        train_args!(@entries [$($done)* {
            [$($doc)*] [$($arg)*] [$([$($serde)*])*] $field, $ty, Option<$ty>, $default, [], (), $resume
        }] $($rest)*);
    };
    (@emit $({
        [$($doc:literal)*] [$($arg:tt)*] [$([$($serde:tt)*])*] $field:ident, $ty:ty, $flag:ty, $default:expr, [$($pt:expr)?], ($($wrap:tt)*), $resume:ident
    })*) => {
        /// A training run's configuration. Field names are ms-swift's flags (and the keys of a
        /// `--config` TOML file); `Default` gives ms-swift's defaults (with the dependent ones
        /// unset until [`TrainArgs::resolve`]).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct TrainArgs {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])*
                pub $field: $ty,
            )*
        }

        impl Default for TrainArgs {
            fn default() -> Self {
                TrainArgs { $($field: $default,)* }
            }
        }

        /// `qtrain train`'s flags over a [`TrainArgs`]: every flag is optional; an unset flag
        /// keeps the config file's value, else ms-swift's default.
        #[derive(clap::Args, Debug, Default)]
        #[command(rename_all = "snake_case")]
        pub struct TrainArgsFlags {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: $flag,
            )*
        }

        impl TrainArgsFlags {
            /// Lay the flags given on the command line over `args`.
            pub fn apply(self, args: &mut TrainArgs) {
                $(
                    if let Some(v) = self.$field {
                        args.$field = $($wrap)*(v);
                    }
                )*
            }
        }

        /// Every argument's name (its flag, its config key) with its resume property, in
        /// declaration order.
        pub const ARGS: &[(&str, OnResume)] = &[$((stringify!($field), OnResume::$resume),)*];

        /// The arguments `qtrain pt` gives another default (the table's `pt = …`).
        pub const PT_DEFAULTS: &[&str] = &[$($({ let _ = stringify!($pt); stringify!($field) },)?)*];

        impl TrainArgs {
            /// `command`'s default for every argument that `is_set` (a command-line flag or a
            /// config key) does not name.
            pub fn apply_command_defaults(&mut self, command: TrainCommand, is_set: &dyn Fn(&str) -> bool) {
                if command == TrainCommand::Pt {
                    $($(if !is_set(stringify!($field)) {
                        self.$field = $pt;
                    })?)*
                }
            }

            /// Every default of `command`.
            pub fn defaults_for(command: TrainCommand) -> Self {
                let mut args = TrainArgs::default();
                args.apply_command_defaults(command, &|_| false);
                args
            }
        }
    };
    ($($entries:tt)*) => { train_args!(@entries [] $($entries)*); };
}

const MODEL: &str = "Model and output";
const DATA: &str = "Data";
const LORA: &str = "LoRA";
const OPTIM: &str = "Optimisation";
const LOGGING: &str = "Logging, evaluation and checkpoints";
const COMPAT: &str = "Accepted for ms-swift compatibility (each explained in the log)";

train_args! {
    // ---- model and output ----------------------------------------------------------------
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    /// Without --model: the embedded tiny model (a bare `qtrain train`: with presets/embedded-self-cognition.toml).
    #[arg(long, help_heading = MODEL)]
    model: PathBuf = PathBuf::new(), Trajectory;
    /// Runs go to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS/ [default: output].
    #[arg(long, help_heading = MODEL)]
    output_dir: PathBuf = PathBuf::from("output"), Free;
    /// lora | full [default: lora; pt: full].
    #[arg(long, alias = "train_type", help_heading = MODEL)]
    #[serde(alias = "train_type")]
    tuner_type: TunerType = TunerType::Lora, pt = TunerType::Full, Trajectory;
    /// Continue training this PEFT adapter (its r, alpha and targets win).
    #[arg(long, help_heading = MODEL)]
    adapters: Option<PathBuf>, Free;
    /// A checkpoint-N folder (or a run folder: its last checkpoint) of an earlier run: continue
    /// bit-exactly from its step (weights, optimizer, scheduler, RNG and data position are
    /// restored) in a new run folder. The run's own arguments are read from the checkpoint;
    /// flags that would change its course are refused (see --resume_only_model).
    #[arg(long, help_heading = MODEL)]
    resume_from_checkpoint: Option<PathBuf>, Free;
    /// With --resume_from_checkpoint: take only the checkpoint's weights (its adapter, or its
    /// full model) and start a new run from step 0 — any argument may change [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = MODEL)]
    resume_only_model: bool = false, Free;

    // ---- data ------------------------------------------------------------------------------
    /// Datasets: JSON/JSONL files (messages, ShareGPT conversations, Alpaca, query/response rows;
    /// detected per row), FILE#N for N rows, self-cognition[#N] (uses --model_name/--model_author).
    #[arg(long, num_args = 1.., help_heading = DATA)]
    #[serde(deserialize_with = "one_or_many")]
    dataset: Vec<String> = Vec::new(), Trajectory;
    /// Validation datasets (same syntax), evaluated every --eval_steps and at the end.
    #[arg(long, num_args = 1.., help_heading = DATA)]
    #[serde(deserialize_with = "one_or_many")]
    val_dataset: Vec<String> = Vec::new(), Trajectory;
    /// Fraction of each training dataset held out (seeded) for validation [default: 0].
    #[arg(long, help_heading = DATA)]
    split_dataset_ratio: f64 = 0.0, Trajectory;
    /// [default: the model's max_position_embeddings, which is also the upper limit]
    #[arg(long, help_heading = DATA)]
    max_length: Option<usize>, Trajectory;
    /// Samples longer than --max_length: delete | left (keep the end) | right (keep the start) |
    /// split (consecutive blocks; raw text only) [default: delete; pt: split].
    #[arg(long, help_heading = DATA)]
    truncation_strategy: TruncationStrategy = TruncationStrategy::Delete, pt = TruncationStrategy::Split, Trajectory;
    /// true: conversations through the chat template; false: raw text ({"text"} rows, one
    /// assistant message, .txt lines) + eos, every token trained [default: true; pt: false].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    use_chat_template: bool = true, pt = false, Trajectory;
    /// System prompt for conversations without one (a dataset's own system message wins).
    #[arg(long, help_heading = DATA)]
    system: Option<String>, Trajectory;
    /// Which tokens are trained on: default (every assistant turn) | last_round | all (raw text
    /// only: every token) [default: default; pt: all].
    #[arg(long, help_heading = DATA)]
    loss_scale: LossScaleArg = LossScaleArg::Default, pt = LossScaleArg::All, Trajectory;
    /// true: a malformed dataset row is an error naming file and line; false: skipped and counted [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    strict: bool = true, Free;
    /// Name for the self-cognition dataset's {{NAME}}: one value, or two (zh, en).
    #[arg(long, num_args = 1..=2, help_heading = DATA)]
    #[serde(deserialize_with = "one_or_many")]
    model_name: Vec<String> = Vec::new(), Trajectory;
    /// Author for the self-cognition dataset's {{AUTHOR}}: one value, or two (zh, en).
    #[arg(long, num_args = 1..=2, help_heading = DATA)]
    #[serde(deserialize_with = "one_or_many")]
    model_author: Vec<String> = Vec::new(), Trajectory;
    /// Pack several samples into each row of up to --max_length tokens (attention, positions and
    /// targets stay within each sample) [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    packing: bool = false, Trajectory;
    /// Batches of similar-length samples (seeded mega-batches, as transformers) [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    group_by_length: bool = false, Trajectory;
    /// Seed of shuffling, sampling, the validation split, LoRA init and dropout [default: 42].
    #[arg(long, help_heading = DATA)]
    seed: u64 = 42, Trajectory;
    /// Shuffle the dataset once after loading (and draw FILE#N subsets at random) [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    dataset_shuffle: bool = true, Trajectory;
    /// Reshuffle the order every epoch [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = DATA)]
    train_dataloader_shuffle: bool = true, Trajectory;

    // ---- LoRA ------------------------------------------------------------------------------
    // r, alpha and targets are read from a resumed checkpoint's adapter, so they cannot differ.
    /// [default: 8]
    #[arg(long, help_heading = LORA)]
    lora_rank: usize = 8, Free;
    /// [default: 32]
    #[arg(long, help_heading = LORA)]
    lora_alpha: f64 = 32.0, Free;
    /// [default: 0.05]
    #[arg(long, help_heading = LORA)]
    lora_dropout: f64 = 0.05, Trajectory;
    /// Dropout on the attention probabilities in training, as transformers' eager attention
    /// (never in evaluation or inference) [default: the model's config.json attention_dropout].
    #[arg(long, help_heading = OPTIM)]
    attention_dropout: Option<f64>, Trajectory;
    /// Module names, or all-linear [default: all-linear].
    #[arg(long, num_args = 1.., help_heading = LORA)]
    #[serde(deserialize_with = "one_or_many")]
    target_modules: Vec<String> = vec!["all-linear".into()], Free;
    /// Regular expression over full module names (overrides --target_modules).
    #[arg(long, help_heading = LORA)]
    target_regex: Option<String>, Free;
    /// alpha / sqrt(r) scaling [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = LORA)]
    use_rslora: bool = false, Free;
    /// true (kaiming-uniform A) | gaussian [default: true].
    #[arg(long, help_heading = LORA)]
    init_lora_weights: LoraInit = LoraInit::Kaiming, Free;

    // ---- optimisation --------------------------------------------------------------------------
    /// [default: 1e-4 for LoRA, 1e-5 for full]
    #[arg(long, help_heading = OPTIM)]
    learning_rate: Option<f64>, Trajectory;
    /// [default: 3]
    #[arg(long, help_heading = OPTIM)]
    num_train_epochs: f64 = 3.0, Free;
    /// Optimizer steps; -1 derives them from the epochs [default: -1].
    #[arg(long, allow_hyphen_values = true, help_heading = OPTIM)]
    max_steps: i64 = -1, Free;
    /// [default: 1]
    #[arg(long, help_heading = OPTIM)]
    per_device_train_batch_size: usize = 1, Trajectory;
    /// [default: 1]
    #[arg(long, help_heading = OPTIM)]
    per_device_eval_batch_size: usize = 1, Free;
    /// [default: ceil(16 / per_device_train_batch_size)]
    #[arg(long, help_heading = OPTIM)]
    gradient_accumulation_steps: Option<usize>, Trajectory;
    /// constant | constant_with_warmup | linear | cosine | cosine_with_min_lr (needs min_lr or
    /// min_lr_rate) | polynomial (lr_end, power) | exponential (gamma per step, qtrain's own) [default: cosine].
    #[arg(long, help_heading = OPTIM)]
    lr_scheduler_type: ScheduleKind = ScheduleKind::Cosine, Trajectory;
    /// JSON object of schedule arguments, as transformers: '{"min_lr": 1e-6}', '{"min_lr_rate": 0.1}',
    /// '{"lr_end": 1e-7, "power": 1.0}', '{"num_cycles": 0.5}', '{"gamma": 0.99}'.
    #[arg(long, help_heading = OPTIM)]
    lr_scheduler_kwargs: SchedulerKwargs = SchedulerKwargs::default(), Trajectory;
    /// [default: 0]
    #[arg(long, help_heading = OPTIM)]
    warmup_ratio: f64 = 0.0, Trajectory;
    /// Wins over --warmup_ratio when > 0 [default: 0].
    #[arg(long, help_heading = OPTIM)]
    warmup_steps: u64 = 0, Trajectory;
    /// [default: 0.1]
    #[arg(long, help_heading = OPTIM)]
    weight_decay: f64 = 0.1, Trajectory;
    /// [default: 0.9]
    #[arg(long, help_heading = OPTIM)]
    adam_beta1: f64 = 0.9, Trajectory;
    /// [default: 0.95]
    #[arg(long, help_heading = OPTIM)]
    adam_beta2: f64 = 0.95, Trajectory;
    /// [default: 1e-8]
    #[arg(long, help_heading = OPTIM)]
    adam_epsilon: f64 = 1e-8, Free;
    /// 0 disables clipping [default: 1].
    #[arg(long, help_heading = OPTIM)]
    max_grad_norm: f64 = 1.0, Trajectory;
    /// [default: true]
    #[arg(long, action = ArgAction::Set, help_heading = OPTIM)]
    gradient_checkpointing: bool = true, Free;
    /// adamw_torch | adamw_torch_fused | adamw_hf (all the same decoupled AdamW) [default: adamw_torch].
    #[arg(long, help_heading = OPTIM)]
    optim: String = "adamw_torch".into(), Trajectory;
    /// NEFTune (Jain et al. 2023): uniform noise of magnitude alpha / sqrt(tokens × hidden) added
    /// to the input embeddings in training, as transformers' `neftune_noise_alpha` (e.g. 5) [default: off].
    #[arg(long, help_heading = OPTIM)]
    neftune_noise_alpha: Option<f64>, Trajectory;

    // ---- logging, evaluation, checkpoints --------------------------------------------------------
    /// [default: 5]
    #[arg(long, help_heading = LOGGING)]
    logging_steps: u64 = 5, Free;
    /// [default: 500]
    #[arg(long, help_heading = LOGGING)]
    save_steps: u64 = 500, Free;
    /// Evaluate the validation set every N steps and at the end [default: --save_steps].
    #[arg(long, help_heading = LOGGING)]
    eval_steps: Option<u64>, Free;
    /// Keep at most N checkpoints: the best by eval loss and the newest (2 = best + last) [default: all].
    #[arg(long, help_heading = LOGGING)]
    save_total_limit: Option<usize>, Free;
    /// Stop after N evaluations without improvement of the eval loss (saves a final checkpoint).
    #[arg(long, help_heading = LOGGING)]
    early_stopping_patience: Option<u64>, Free;
    /// An improvement must better the best metric by more than this [default: 0].
    #[arg(long, help_heading = LOGGING)]
    early_stopping_threshold: f64 = 0.0, Free;
    /// steps (every --save_steps) | epoch (each epoch's end) | no; the last step is always saved [default: steps].
    #[arg(long, help_heading = LOGGING)]
    save_strategy: IntervalStrategy = IntervalStrategy::Steps, Free;
    /// steps (every --eval_steps) | epoch | no [default: --save_strategy].
    #[arg(long, alias = "evaluation_strategy", help_heading = LOGGING)]
    #[serde(alias = "evaluation_strategy")]
    eval_strategy: Option<IntervalStrategy>, Free;
    /// Name the best checkpoint (by --metric_for_best_model) as the run's result: the last log
    /// line and stdout give it, and --save_total_limit keeps it [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = LOGGING)]
    load_best_model_at_end: bool = false, Free;
    /// loss | token_acc | self_cognition_acc (with or without eval_) [default: loss].
    #[arg(long, help_heading = LOGGING)]
    metric_for_best_model: String = "loss".into(), Free;
    /// [default: false for loss, true for the accuracies]
    #[arg(long, action = ArgAction::Set, help_heading = LOGGING)]
    greater_is_better: Option<bool>, Free;
    /// Checkpoints hold the weights only (no optimizer, scheduler, RNG or data state): smaller,
    /// but a resume from them needs --resume_only_model true [default: false].
    #[arg(long, action = ArgAction::Set, help_heading = LOGGING)]
    save_only_model: bool = false, Free;
    /// Write into OUTPUT_DIR/vN-YYYYMMDD-HHMMSS/; false: into OUTPUT_DIR itself [default: true].
    #[arg(long, action = ArgAction::Set, help_heading = MODEL)]
    add_version: bool = true, Free;
    /// Log the first step as well as every --logging_steps [default: true, as ms-swift].
    #[arg(long, action = ArgAction::Set, help_heading = LOGGING)]
    logging_first_step: bool = true, Free;

    // ---- accepted for ms-swift compatibility ---------------------------------------------------------
    /// auto | bfloat16 | float16 | float32 [default: auto, config.json's torch_dtype]. On the CPU,
    /// bfloat16 keeps frozen weights in bf16 and runs bf16 × bf16 → f32 products (full
    /// fine-tuning: f32 master weights); float32 is the reference path. Checkpoints keep the
    /// model's stored dtype.
    #[arg(long, help_heading = MODEL)]
    torch_dtype: Option<String>, Free;
    /// Checked against config.json's architecture.
    #[arg(long, help_heading = COMPAT)]
    model_type: Option<String>, Free;
    /// No effect: the dataset is tokenized once before training.
    #[arg(long, help_heading = COMPAT)]
    dataloader_num_workers: Option<usize>, Free;
    /// No effect: tokenization runs in this process.
    #[arg(long, help_heading = COMPAT)]
    dataset_num_proc: Option<usize>, Free;
    /// tensorboard (runs/) | none; other integrations are not available [default: tensorboard].
    #[arg(long, num_args = 1.., help_heading = LOGGING)]
    #[serde(deserialize_with = "one_or_many")]
    report_to: Vec<String> = vec!["tensorboard".into()], Free;
    /// No effect: one exact attention implementation.
    #[arg(long, help_heading = COMPAT)]
    attn_impl: Option<String>, Free;
    /// true: --torch_dtype bfloat16 (ms-swift's mixed-precision switch).
    #[arg(long, action = ArgAction::Set, help_heading = COMPAT)]
    bf16: Option<bool>, Free;
    /// true: --torch_dtype float16.
    #[arg(long, action = ArgAction::Set, help_heading = COMPAT)]
    fp16: Option<bool>, Free;
    /// No effect: one process, one device (no DeepSpeed).
    #[arg(long, help_heading = COMPAT)]
    deepspeed: Option<String>, Free;
    /// No effect: the dataset is tokenized once before training.
    #[arg(long, action = ArgAction::Set, help_heading = COMPAT)]
    lazy_tokenize: Option<bool>, Free;
    /// Not available: datasets are local files read whole.
    #[arg(long, action = ArgAction::Set, help_heading = COMPAT)]
    streaming: Option<bool>, Free;
    /// No effect: qtrain reads local folders only (no hub downloads).
    #[arg(long, action = ArgAction::Set, help_heading = COMPAT)]
    use_hf: Option<bool>, Free;
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

/// Every key a config file may hold: the fields of [`TrainArgs`] plus the `train_type` alias.
pub fn config_keys() -> Vec<String> {
    let serde_json::Value::Object(map) = serde_json::to_value(TrainArgs::default()).expect("TrainArgs serialises") else {
        unreachable!("TrainArgs is a struct")
    };
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.push("train_type".into());
    keys
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest known key to `key`, if it is close enough to be a typo.
pub fn suggest_key<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known.iter().map(|k| (edit_distance(key, k), k)).filter(|(d, _)| *d <= 3).min_by_key(|(d, _)| *d).map(|(_, k)| k.as_str())
}

impl TrainArgs {
    /// Read a `--config` TOML file: the keys are the flag names (`learning_rate = 1e-4`,
    /// `dataset = ["a.jsonl", "self-cognition#100"]`, `lr_scheduler_kwargs = {min_lr = 1e-6}`),
    /// absent keys keep the defaults. Unknown keys are errors naming the key and the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        Self::from_toml_file_for(TrainCommand::Train, path)
    }

    /// [`TrainArgs::from_toml_file`] with `command`'s defaults for the absent keys.
    pub fn from_toml_file_for(command: TrainCommand, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml_str_for(command, &text, path)
    }

    /// [`TrainArgs::from_toml_file`] on text; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        Self::from_toml_str_for(TrainCommand::Train, text, path)
    }

    /// [`TrainArgs::from_toml_str`] with `command`'s defaults for the absent keys.
    pub fn from_toml_str_for(command: TrainCommand, text: &str, path: &Path) -> Result<Self> {
        let mut args = Self::parse_toml(text, path)?;
        let table: toml::Table = toml::from_str(text).expect("parsed above");
        args.apply_command_defaults(command, &|key| table.contains_key(key) || (key == "tuner_type" && table.contains_key("train_type")));
        Ok(args)
    }

    fn parse_toml(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| TrainError::Config { path: path.to_path_buf(), message };
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
        let known = config_keys();
        let unknown: Vec<String> = table
            .keys()
            .filter(|k| !known.contains(k))
            .map(|k| match suggest_key(k, &known) {
                Some(s) => format!("unknown key `{k}` (did you mean `{s}`?)"),
                None => format!("unknown key `{k}`"),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(bad(format!("{}; the keys are the `qtrain train` flag names (see `qtrain train --help`)", unknown.join(", "))));
        }
        toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))
    }

    /// Fill the defaults that depend on other values and check every value. `model_max_length`
    /// is the model's `max_position_embeddings`. Returns notes for the log (values that were
    /// adjusted, options that have nothing to act on).
    pub fn resolve(&mut self, model_max_length: usize) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if self.dataset.is_empty() {
            return Err(TrainError::arg("dataset", "at least one dataset is required (a JSON/JSONL file, FILE#N or self-cognition)"));
        }
        if self.per_device_train_batch_size == 0 {
            return Err(TrainError::arg("per_device_train_batch_size", "must be at least 1"));
        }
        if self.per_device_eval_batch_size == 0 {
            return Err(TrainError::arg("per_device_eval_batch_size", "must be at least 1"));
        }
        let accumulation = self.accumulation();
        self.gradient_accumulation_steps = Some(accumulation);
        if accumulation == 0 {
            return Err(TrainError::arg("gradient_accumulation_steps", "must be at least 1"));
        }
        let lr = self.lr();
        self.learning_rate = Some(lr);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::arg("learning_rate", format!("{lr} must be finite and > 0")));
        }
        let max_length = *self.max_length.get_or_insert(model_max_length);
        if max_length < 2 {
            return Err(TrainError::arg("max_length", format!("{max_length} is too short: a sample needs at least 2 tokens")));
        }
        if max_length > model_max_length {
            notes.push(format!(
                "--max_length {max_length} exceeds the model's max_position_embeddings {model_max_length}: samples are limited to {model_max_length} tokens"
            ));
            self.max_length = Some(model_max_length);
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
        if self.eval_steps == Some(0) {
            return Err(TrainError::arg("eval_steps", "must be at least 1"));
        }
        if self.save_total_limit == Some(0) {
            return Err(TrainError::arg("save_total_limit", "must be at least 1 (leave it unset to keep every checkpoint)"));
        }
        if !(0.0..1.0).contains(&self.split_dataset_ratio) {
            return Err(TrainError::arg("split_dataset_ratio", format!("{} must be in [0, 1)", self.split_dataset_ratio)));
        }
        let has_validation = self.has_validation();
        if self.early_stopping_patience.is_some() && !has_validation {
            return Err(TrainError::arg("early_stopping_patience", "needs a validation set: add --val_dataset or --split_dataset_ratio"));
        }
        if self.early_stopping_patience == Some(0) {
            return Err(TrainError::arg("early_stopping_patience", "must be at least 1"));
        }
        if !(self.early_stopping_threshold.is_finite() && self.early_stopping_threshold >= 0.0) {
            return Err(TrainError::arg("early_stopping_threshold", format!("{} must be >= 0", self.early_stopping_threshold)));
        }
        match (has_validation, self.eval_steps) {
            (true, None) => self.eval_steps = Some(self.save_steps),
            (false, Some(n)) => notes.push(format!(
                "--eval_steps {n}: there is no validation set (add --val_dataset or --split_dataset_ratio), so nothing is evaluated"
            )),
            _ => {}
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm < 0.0 {
            return Err(TrainError::arg("max_grad_norm", format!("{} must be >= 0 (0 disables clipping)", self.max_grad_norm)));
        }
        if self.use_chat_template {
            self.loss_scale_kind()?;
            if self.truncation_strategy == TruncationStrategy::Split {
                return Err(TrainError::arg(
                    "truncation_strategy",
                    "split is for raw text (`qtrain pt`, or --use_chat_template false); conversations: delete, left or right",
                ));
            }
        } else {
            self.check_raw_text()?;
        }
        self.self_cognition_names()?;
        self.torch_dtype = self.dtype_flag()?;
        notes.extend(self.resolve_strategies(has_validation)?);
        self.check_optimizer_flags()?;
        if let Some(p) = self.attention_dropout.filter(|p| !(0.0..1.0).contains(p)) {
            return Err(TrainError::arg("attention_dropout", format!("{p} must be in [0, 1)")));
        }
        if self.tuner_type == TunerType::Lora {
            if self.lora_rank == 0 {
                return Err(TrainError::arg("lora_rank", "must be at least 1"));
            }
            if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
                return Err(TrainError::arg("lora_alpha", format!("{} must be > 0 (the adapter's scale is alpha / r)", self.lora_alpha)));
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
        // Build the schedule once so a bad name, warmup ratio or kwarg fails before any work.
        self.schedule(1)?;
        Ok(notes)
    }

    /// Raw text (`--use_chat_template false`) has no turns and no system prompt: every token
    /// is trained on.
    fn check_raw_text(&self) -> Result<()> {
        if self.loss_scale != LossScaleArg::All {
            return Err(TrainError::arg(
                "loss_scale",
                format!("{}: raw text (--use_chat_template false) trains on every token; use all", self.loss_scale),
            ));
        }
        if self.system.is_some() {
            return Err(TrainError::arg("system", "raw text (--use_chat_template false) has no system prompt"));
        }
        if !self.model_name.is_empty() || !self.model_author.is_empty() {
            return Err(TrainError::arg(
                "model_name",
                "--model_name/--model_author fill the self-cognition conversations; raw text (--use_chat_template false) has none",
            ));
        }
        Ok(())
    }

    /// `--torch_dtype`, with ms-swift's `--bf16 true` / `--fp16 true` as its aliases.
    pub fn dtype_flag(&self) -> Result<Option<String>> {
        let alias = match (self.bf16, self.fp16) {
            (Some(true), Some(true)) => return Err(TrainError::arg("bf16", "--bf16 true and --fp16 true contradict each other")),
            (Some(true), _) => Some("bfloat16"),
            (_, Some(true)) => Some("float16"),
            _ => None,
        };
        match (&self.torch_dtype, alias) {
            (Some(d), Some(a)) if d != a && d != "auto" => {
                let flag = if a == "bfloat16" { "bf16" } else { "fp16" };
                Err(TrainError::arg(flag, format!("--{flag} true means --torch_dtype {a}, but --torch_dtype {d} was given")))
            }
            (_, Some(a)) => Ok(Some(a.to_string())),
            (d, None) => Ok(d.clone()),
        }
    }

    /// `--eval_strategy` (default: `--save_strategy`), the best-model metric and
    /// `--load_best_model_at_end`'s conditions (transformers' `TrainingArguments.__post_init__`).
    fn resolve_strategies(&mut self, has_validation: bool) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let eval = *self.eval_strategy.get_or_insert(self.save_strategy);
        let (metric, _) = self.best_metric()?;
        if self.load_best_model_at_end {
            if !has_validation && metric != BestMetric::SelfCognitionAcc {
                return Err(TrainError::arg(
                    "load_best_model_at_end",
                    "needs a validation set: add --val_dataset or --split_dataset_ratio",
                ));
            }
            if eval != self.save_strategy {
                return Err(TrainError::arg(
                    "load_best_model_at_end",
                    format!("needs the same --save_strategy and --eval_strategy (they are {} and {eval})", self.save_strategy),
                ));
            }
            let every = self.eval_steps.unwrap_or(self.save_steps);
            if eval == IntervalStrategy::Steps && self.save_steps % every != 0 {
                return Err(TrainError::arg(
                    "load_best_model_at_end",
                    format!(
                        "needs --save_steps ({}) to be a multiple of --eval_steps ({every}), so every best model is saved",
                        self.save_steps
                    ),
                ));
            }
        }
        if eval == IntervalStrategy::No && self.early_stopping_patience.is_some() {
            return Err(TrainError::arg("early_stopping_patience", "needs evaluations: --eval_strategy is no"));
        }
        if has_validation && eval == IntervalStrategy::No {
            notes.push("--eval_strategy no: the validation set is not evaluated".into());
        }
        Ok(notes)
    }

    /// `--metric_for_best_model` and whether greater is better (default: false for loss).
    pub fn best_metric(&self) -> Result<(BestMetric, bool)> {
        let metric = BestMetric::parse(&self.metric_for_best_model).ok_or_else(|| {
            TrainError::arg(
                "metric_for_best_model",
                format!("unknown metric {:?}; valid: {} (with or without eval_)", self.metric_for_best_model, BestMetric::NAMES.join(", ")),
            )
        })?;
        Ok((metric, self.greater_is_better.unwrap_or(metric != BestMetric::Loss)))
    }

    /// `--optim`, `--neftune_noise_alpha` and `--streaming`: what qtrain can do.
    fn check_optimizer_flags(&self) -> Result<()> {
        const OPTIMIZERS: [&str; 4] = ["adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw"];
        if !OPTIMIZERS.contains(&self.optim.as_str()) {
            return Err(TrainError::arg(
                "optim",
                format!("{:?} is not available; valid: {} (one decoupled AdamW)", self.optim, OPTIMIZERS.join(", ")),
            ));
        }
        if let Some(alpha) = self.neftune_noise_alpha {
            if !(alpha.is_finite() && alpha >= 0.0) {
                return Err(TrainError::arg("neftune_noise_alpha", format!("{alpha} must be >= 0")));
            }
        }
        if self.streaming == Some(true) {
            return Err(TrainError::arg("streaming", "not available: qtrain reads local dataset files whole (leave --streaming out)"));
        }
        Ok(())
    }

    /// `--resume_only_model true`: the checkpoint's weights start a new run — its adapter as
    /// `--adapters` (LoRA), the checkpoint folder as `--model` (full) — and nothing else of it
    /// is restored. Logs what it did; no effect without `--resume_from_checkpoint`.
    pub fn take_weights_only_resume(&mut self) {
        if !self.resume_only_model {
            return;
        }
        let Some(ckpt) = self.resume_from_checkpoint.take() else {
            eprintln!("[qtrain] note: --resume_only_model true has no effect without --resume_from_checkpoint");
            return;
        };
        match self.tuner_type {
            TunerType::Lora => self.adapters = Some(ckpt.clone()),
            TunerType::Full => self.model = ckpt.clone(),
        }
        eprintln!(
            "[qtrain] --resume_only_model: a new run from the weights of {} (optimizer, schedule and data order start afresh)",
            ckpt.display()
        );
    }

    /// The resolved evaluation strategy (call after [`TrainArgs::resolve`]).
    pub fn eval_interval(&self) -> IntervalStrategy {
        self.eval_strategy.unwrap_or(self.save_strategy)
    }

    /// Whether the run evaluates: a validation dataset or a split ratio.
    pub fn has_validation(&self) -> bool {
        !self.val_dataset.is_empty() || self.split_dataset_ratio > 0.0
    }

    /// `--loss_scale` of a conversation dataset as qtrain-data's [`LossScale`] (`all` is for
    /// raw text only).
    pub fn loss_scale_kind(&self) -> Result<LossScale> {
        match self.loss_scale {
            LossScaleArg::Default => Ok(LossScale::All),
            LossScaleArg::LastRound => Ok(LossScale::LastRound),
            LossScaleArg::All => Err(TrainError::arg(
                "loss_scale",
                "all trains every token of raw text; conversations take default (every assistant turn) or last_round (all: raw text only)",
            )),
        }
    }

    /// `--model_name` / `--model_author` for the self-cognition dataset (`None` when unset).
    pub fn self_cognition_names(&self) -> Result<(Option<Bilingual>, Option<Bilingual>)> {
        let one = |name: &'static str, values: &[String]| -> Result<Option<Bilingual>> {
            if values.is_empty() {
                return Ok(None);
            }
            Bilingual::from_values(name, values).map(Some).map_err(|e| TrainError::arg(name, e.to_string()))
        };
        Ok((one("model_name", &self.model_name)?, one("model_author", &self.model_author)?))
    }

    /// Log lines explaining the options accepted for ms-swift compatibility that change
    /// nothing (or are checked against the model), so none is silently ignored.
    /// `stored_dtype` is the checkpoint's weight dtype, `architecture` its config's class.
    pub fn compatibility_notes(&self, stored_dtype: DType, architecture: Architecture) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if let Some(d) = &self.torch_dtype {
            let wanted = match d.as_str() {
                "auto" => None,
                other => Some(DType::from_hf_name(other).ok_or_else(|| {
                    TrainError::arg("torch_dtype", format!("unknown dtype {other:?}; valid: auto, bfloat16, float16, float32"))
                })?),
            };
            let stored = stored_dtype.hf_name();
            if self.tuner_type == TunerType::Full && wanted.is_some_and(|w| w != stored_dtype) {
                notes.push(format!("--torch_dtype {d}: full checkpoints are written in the model's stored dtype, {stored}"));
            }
        }
        if let Some(t) = &self.model_type {
            if !architecture.accepts_model_type(t) {
                return Err(TrainError::arg(
                    "model_type",
                    format!("{t:?} does not match the model folder ({} in config.json)", architecture.hf_class()),
                ));
            }
            notes.push(format!("--model_type {t}: the architecture is read from config.json ({})", architecture.hf_class()));
        }
        if let Some(n) = self.dataloader_num_workers {
            notes.push(format!(
                "--dataloader_num_workers {n}: no effect; the dataset is tokenized once before training, so batches need no loader workers"
            ));
        }
        if let Some(n) = self.dataset_num_proc {
            notes.push(format!("--dataset_num_proc {n}: no effect; datasets are tokenized in this process"));
        }
        if let Some(d) = &self.deepspeed {
            notes.push(format!("--deepspeed {d}: no effect; qtrain trains in one process on one device"));
        }
        if let Some(l) = self.lazy_tokenize {
            notes.push(format!("--lazy_tokenize {l}: no effect; the dataset is tokenized once before training"));
        }
        if let Some(u) = self.use_hf {
            notes.push(format!("--use_hf {u}: no effect; --model and --dataset are local paths (qtrain does not download)"));
        }
        if self.optim == "adamw_torch_fused" {
            notes
                .push("--optim adamw_torch_fused: the same AdamW as adamw_torch (qtrain's update is one fused op on every backend)".into());
        }
        if let Some(a) = &self.attn_impl {
            notes.push(format!("--attn_impl {a}: no effect; the backend has one attention implementation (exact, with packing masks)"));
        }
        let other: Vec<&str> =
            self.report_to.iter().map(String::as_str).filter(|r| !matches!(*r, "tensorboard" | "none" | "all")).collect();
        if !other.is_empty() {
            notes.push(format!(
                "--report_to {}: not available in qtrain; metrics go to logging.jsonl and TensorBoard events under runs/",
                other.join(" ")
            ));
        }
        Ok(notes)
    }

    /// Whether TensorBoard event files are written (`--report_to` not `none`).
    pub fn tensorboard(&self) -> bool {
        !self.report_to.iter().any(|r| r == "none")
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
        let kind = self.lr_scheduler_type;
        let warmup = if self.warmup_steps > 0 { Warmup::Steps(self.warmup_steps) } else { Warmup::Ratio(self.warmup_ratio) };
        let k = &self.lr_scheduler_kwargs;
        let config = ScheduleConfig {
            num_cycles: k.num_cycles,
            min_lr: k.min_lr,
            min_lr_rate: k.min_lr_rate,
            lr_end: k.lr_end,
            power: k.power,
            gamma: k.gamma,
            ..ScheduleConfig::new(kind, self.lr(), total_steps).with_warmup(warmup)
        };
        Ok(LrSchedule::new(config)?)
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

    use serde_json::Value;

    #[test]
    fn pt_changes_only_its_declared_defaults() {
        let (train, pt) = (TrainArgs::default(), TrainArgs::defaults_for(TrainCommand::Pt));
        assert_eq!(TrainArgs::defaults_for(TrainCommand::Train), train);
        assert_eq!((pt.tuner_type, pt.truncation_strategy, pt.use_chat_template), (TunerType::Full, TruncationStrategy::Split, false));
        assert_eq!(pt.loss_scale, LossScaleArg::All);
        let (Value::Object(a), Value::Object(b)) = (serde_json::to_value(&train).unwrap(), serde_json::to_value(&pt).unwrap()) else {
            unreachable!()
        };
        let mut differ: Vec<&str> = a.keys().filter(|k| a[*k] != b[*k]).map(String::as_str).collect();
        differ.sort_unstable();
        let mut declared = PT_DEFAULTS.to_vec();
        declared.sort_unstable();
        assert_eq!(differ, declared);
        // A config key (or its alias) or a flag keeps its value; absent keys take pt's default.
        let cfg =
            TrainArgs::from_toml_str_for(TrainCommand::Pt, "train_type = \"lora\"\nloss_scale = \"all\"", Path::new("p.toml")).unwrap();
        assert_eq!((cfg.tuner_type, cfg.truncation_strategy, cfg.use_chat_template), (TunerType::Lora, TruncationStrategy::Split, false));
        let mut resolved = TrainArgs { dataset: vec!["d.txt".into()], ..pt.clone() };
        resolved.resolve(64).unwrap();
        assert_eq!(resolved.learning_rate, Some(1e-5), "full's learning rate");
        let bad = |f: &dyn Fn(&mut TrainArgs)| {
            let mut a = TrainArgs { dataset: vec!["d.txt".into()], ..pt.clone() };
            f(&mut a);
            a.resolve(64).unwrap_err().to_string()
        };
        assert!(bad(&|a| a.loss_scale = LossScaleArg::Default).contains("--loss_scale"));
        assert!(bad(&|a| a.system = Some("s".into())).contains("--system"));
        assert!(bad(&|a| a.use_chat_template = true).contains("all: raw text only"), "conversations have no loss_scale all");
        let split_chat = bad(&|a| {
            a.use_chat_template = true;
            a.loss_scale = LossScaleArg::Default;
        });
        assert!(split_chat.contains("--truncation_strategy"), "{split_chat}");
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
        assert!(bad(&|a| a.attention_dropout = Some(1.0)).contains("--attention_dropout"));
        assert!(bad(&|a| a.max_length = Some(1)).contains("--max_length"));
        assert!(bad(&|a| a.split_dataset_ratio = 1.0).contains("--split_dataset_ratio"));
        assert!(bad(&|a| a.early_stopping_patience = Some(2)).contains("validation set"));
        assert!(bad(&|a| a.save_total_limit = Some(0)).contains("--save_total_limit"));
        assert!(bad(&|a| a.loss_scale = LossScaleArg::All).contains("--loss_scale"));
        assert!(bad(&|a| a.model_name = vec!["a".into(), "b".into(), "c".into()]).contains("--model_name"));
        assert!(bad(&|a| a.lr_scheduler_kwargs.gamma = Some(0.9)).contains("gamma"), "gamma does not apply to cosine");
        assert!(bad(&|a| a.learning_rate = Some(0.0)).contains("--learning_rate"));
        assert!(bad(&|a| a.warmup_ratio = 2.0).contains("warmup"));
    }

    #[test]
    fn resolve_clamps_max_length_and_defaults_eval_steps_to_save_steps() {
        let mut a = TrainArgs { dataset: vec!["d".into()], max_length: Some(2048), eval_steps: Some(50), ..Default::default() };
        let notes = a.resolve(512).unwrap();
        assert_eq!(a.max_length, Some(512));
        assert!(notes[0].contains("max_position_embeddings 512"), "{notes:?}");
        assert!(notes[1].contains("no validation set"), "{notes:?}");
        let mut v = TrainArgs { dataset: vec!["d".into()], split_dataset_ratio: 0.1, save_steps: 7, ..Default::default() };
        assert!(v.resolve(512).unwrap().is_empty());
        assert_eq!(v.eval_steps, Some(7));
    }

    #[test]
    fn scheduler_names_are_checked_where_they_are_read() {
        let err = TrainArgs::from_toml_str("lr_scheduler_type = \"cosine_with_restarts\"", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("exists in transformers but is not implemented by qtrain"), "{err}");
        let a = TrainArgs::from_toml_str("lr_scheduler_type = \"linear\"", Path::new("c.toml")).unwrap();
        assert_eq!(a.lr_scheduler_type, ScheduleKind::Linear);
        assert_eq!(serde_json::to_value(&a).unwrap()["lr_scheduler_type"], "linear", "args.json keeps transformers' spelling");
    }

    #[test]
    fn scheduler_kwargs_reach_the_schedule() {
        let k: SchedulerKwargs = r#"{"min_lr": 1e-6}"#.parse().unwrap();
        let mut a = TrainArgs {
            dataset: vec!["d".into()],
            lr_scheduler_type: ScheduleKind::CosineWithMinLr,
            lr_scheduler_kwargs: k,
            ..Default::default()
        };
        a.resolve(512).unwrap();
        let s = a.schedule(10).unwrap();
        assert!((s.lr_at(10) - 1e-6).abs() < 1e-15, "{}", s.lr_at(10));
        a.lr_scheduler_type = ScheduleKind::Exponential;
        a.lr_scheduler_kwargs = r#"{"gamma": 0.5}"#.parse().unwrap();
        assert_eq!(a.schedule(10).unwrap().lr_at(2), 0.25e-4);
        a.lr_scheduler_type = ScheduleKind::Polynomial;
        a.lr_scheduler_kwargs = r#"{"lr_end": 1e-5, "power": 2}"#.parse().unwrap();
        assert!((a.schedule(10).unwrap().lr_at(5) - (0.9e-4 * 0.25 + 1e-5)).abs() < 1e-15);
        let err = "{\"min_lrr\": 1}".parse::<SchedulerKwargs>().unwrap_err();
        assert!(err.contains("min_lrr") && err.contains("min_lr_rate"), "{err}");
        assert!("[1]".parse::<SchedulerKwargs>().is_err());
        assert!(r#"{"power": "two"}"#.parse::<SchedulerKwargs>().unwrap_err().contains("power"));
    }

    #[test]
    fn toml_configs_use_the_flag_names() {
        let text = r#"
            model = "models/m"
            dataset = "a.jsonl"
            val_dataset = ["v.jsonl", "self-cognition#5"]
            train_type = "full"
            lora_alpha = 16
            target_modules = ["q_proj", "v_proj"]
            lr_scheduler_kwargs = { min_lr_rate = 0.1 }
            early_stopping_patience = 3
            model_name = ["小黄", "Xiao Huang"]
            torch_dtype = "bfloat16"
        "#;
        let a = TrainArgs::from_toml_str(text, Path::new("run.toml")).unwrap();
        assert_eq!(a.dataset, ["a.jsonl"]);
        assert_eq!(a.val_dataset.len(), 2);
        assert_eq!(a.tuner_type, TunerType::Full);
        assert_eq!(a.lora_alpha, 16.0);
        assert_eq!(a.lr_scheduler_kwargs.min_lr_rate, Some(0.1));
        assert_eq!(a.early_stopping_patience, Some(3));
        assert_eq!(a.lora_rank, 8, "absent keys keep the defaults");
        // A JSON string is accepted for the kwargs too (ms-swift's YAML style).
        let b = TrainArgs::from_toml_str("lr_scheduler_kwargs = '{\"gamma\": 0.9}'", Path::new("x.toml")).unwrap();
        assert_eq!(b.lr_scheduler_kwargs.gamma, Some(0.9));

        let err = TrainArgs::from_toml_str("lora_rnk = 4\nfoo = 1\n", Path::new("cfg/run.toml")).unwrap_err().to_string();
        assert!(err.contains("cfg/run.toml") && err.contains("unknown key `lora_rnk` (did you mean `lora_rank`?)"), "{err}");
        assert!(err.contains("unknown key `foo`"), "{err}");
        let err = TrainArgs::from_toml_str("lora_rank = \"eight\"", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("lora_rank"), "{err}");
        let err = TrainArgs::from_toml_str("lr_scheduler_kwargs = { gama = 0.9 }", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("gama"), "{err}");
        let err = TrainArgs::from_toml_str("model = [", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn compatibility_flags_are_explained_or_rejected() {
        let a = TrainArgs {
            torch_dtype: Some("bfloat16".into()),
            model_type: Some("qwen2_5".into()),
            dataloader_num_workers: Some(4),
            report_to: vec!["wandb".into()],
            ..Default::default()
        };
        let notes = a.compatibility_notes(DType::F32, Architecture::Qwen2).unwrap();
        // --torch_dtype is real (the binary picks the numeric path and logs it): no note for LoRA.
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[1].contains("dataloader_num_workers 4"));
        assert!(notes[2].contains("wandb"));
        let full = TrainArgs { torch_dtype: Some("bfloat16".into()), tuner_type: TunerType::Full, ..Default::default() };
        let notes = full.compatibility_notes(DType::F32, Architecture::Qwen2).unwrap();
        assert!(notes.len() == 1 && notes[0].contains("written in the model's stored dtype, float32"), "{notes:?}");
        assert!(a.tensorboard());
        let bad = TrainArgs { model_type: Some("qwen3".into()), ..Default::default() };
        assert!(bad.compatibility_notes(DType::F32, Architecture::Qwen2).unwrap_err().to_string().contains("--model_type"));
        let bad = TrainArgs { torch_dtype: Some("int8".into()), ..Default::default() };
        assert!(bad.compatibility_notes(DType::F32, Architecture::Qwen2).is_err());
        assert!(!TrainArgs { report_to: vec!["none".into()], ..Default::default() }.tensorboard());
        assert!(TrainArgs::default().compatibility_notes(DType::BF16, Architecture::Qwen3).unwrap().is_empty());
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
        let json = r#"{"model": "m", "dataset": ["a.jsonl"], "train_type": "full", "init_lora_weights": "gaussian", "lr_scheduler_kwargs": {"min_lr": 1e-6}}"#;
        let a: TrainArgs = serde_json::from_str(json).unwrap();
        assert_eq!(a.tuner_type, TunerType::Full);
        assert_eq!(a.init_lora_weights, LoraInit::Gaussian);
        let back: TrainArgs = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
        assert!(serde_json::from_str::<TrainArgs>(r#"{"lora_rnk": 4}"#).is_err());
        assert_eq!(serde_json::to_value(LoraInit::Kaiming).unwrap(), serde_json::json!(true));
    }

    /// Every field at a value other than its default. Written without `..Default::default()`,
    /// so a new field does not compile until it is added here, and then the test below checks
    /// that it can be set.
    fn every_field_changed() -> TrainArgs {
        TrainArgs {
            model: "m".into(),
            output_dir: "out".into(),
            tuner_type: TunerType::Full,
            adapters: Some("adapter".into()),
            resume_from_checkpoint: Some("checkpoint-3".into()),
            dataset: vec!["a.jsonl".into(), "self-cognition#3".into()],
            val_dataset: vec!["v.jsonl".into()],
            split_dataset_ratio: 0.25,
            max_length: Some(64),
            truncation_strategy: TruncationStrategy::Left,
            use_chat_template: false,
            system: Some("Be brief.".into()),
            loss_scale: LossScaleArg::LastRound,
            strict: false,
            model_name: vec!["小黄".into(), "Xiao Huang".into()],
            model_author: vec!["me".into()],
            packing: true,
            group_by_length: true,
            seed: 7,
            dataset_shuffle: false,
            train_dataloader_shuffle: false,
            lora_rank: 4,
            lora_alpha: 16.0,
            lora_dropout: 0.1,
            attention_dropout: Some(0.1),
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            target_regex: Some(".*proj".into()),
            use_rslora: true,
            init_lora_weights: LoraInit::Gaussian,
            learning_rate: Some(3e-4),
            num_train_epochs: 2.0,
            max_steps: 9,
            per_device_train_batch_size: 2,
            per_device_eval_batch_size: 3,
            gradient_accumulation_steps: Some(4),
            lr_scheduler_type: ScheduleKind::Linear,
            lr_scheduler_kwargs: SchedulerKwargs { min_lr: Some(1e-6), ..Default::default() },
            warmup_ratio: 0.1,
            warmup_steps: 2,
            weight_decay: 0.0,
            adam_beta1: 0.8,
            adam_beta2: 0.99,
            adam_epsilon: 1e-6,
            max_grad_norm: 0.5,
            gradient_checkpointing: false,
            logging_steps: 1,
            save_steps: 10,
            eval_steps: Some(5),
            save_total_limit: Some(2),
            early_stopping_patience: Some(3),
            early_stopping_threshold: 0.01,
            torch_dtype: Some("bfloat16".into()),
            model_type: Some("qwen2_5".into()),
            dataloader_num_workers: Some(2),
            dataset_num_proc: Some(2),
            report_to: vec!["none".into()],
            attn_impl: Some("sdpa".into()),
            resume_only_model: true,
            save_strategy: IntervalStrategy::Epoch,
            eval_strategy: Some(IntervalStrategy::No),
            load_best_model_at_end: true,
            metric_for_best_model: "token_acc".into(),
            greater_is_better: Some(true),
            save_only_model: true,
            add_version: false,
            logging_first_step: false,
            optim: "adamw_torch_fused".into(),
            neftune_noise_alpha: Some(5.0),
            bf16: Some(true),
            fp16: Some(false),
            deepspeed: Some("zero2".into()),
            lazy_tokenize: Some(true),
            streaming: Some(false),
            use_hf: Some(true),
        }
    }

    #[test]
    fn every_field_can_be_set_from_the_command_line_and_a_config_file() {
        use clap::Parser;
        use serde_json::Value;

        let want = every_field_changed();
        let Value::Object(fields) = serde_json::to_value(&want).unwrap() else { unreachable!() };
        let defaults = serde_json::to_value(TrainArgs::default()).unwrap();
        for (key, value) in &fields {
            assert_ne!(Some(value), defaults.get(key), "every_field_changed leaves {key} at its default");
        }
        assert_eq!(fields.len(), ARGS.len());

        let text = toml::Table::try_from(&want).unwrap().to_string();
        assert_eq!(TrainArgs::from_toml_str(&text, Path::new("all.toml")).unwrap(), want, "through TOML:\n{text}");

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            flags: TrainArgsFlags,
        }
        let mut argv = vec!["train".to_string()];
        for (key, value) in &fields {
            argv.push(format!("--{key}"));
            match value {
                Value::Array(items) => argv.extend(items.iter().map(|v| v.as_str().unwrap().to_string())),
                Value::String(s) => argv.push(s.clone()),
                other => argv.push(other.to_string()),
            }
        }
        let mut got = TrainArgs::default();
        Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}")).flags.apply(&mut got);
        assert_eq!(got, want, "through the command line {argv:?}");
    }

    #[test]
    fn only_arguments_that_shape_the_trajectory_are_compared_on_resume() {
        let trajectory: Vec<&str> = ARGS.iter().filter(|(_, r)| *r == OnResume::Trajectory).map(|(k, _)| *k).collect();
        assert_eq!(trajectory.len(), 32, "{trajectory:?}");
        for free in ["output_dir", "resume_from_checkpoint", "lora_rank", "lora_alpha", "target_modules", "logging_steps", "save_steps"] {
            assert!(!trajectory.contains(&free), "{free}");
        }
    }
}
