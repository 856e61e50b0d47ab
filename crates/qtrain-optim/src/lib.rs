//! qtrain-optim: optimizer math and learning-rate schedules, matching PyTorch/transformers.
//!
//! - [`schedule`]: learning-rate schedules as pure functions of the optimizer step, value for
//!   value equal to transformers' `get_scheduler` (plus a qtrain-specific `exponential`).
//! - [`adamw`]: `torch.optim.AdamW` as a CPU reference step over f32 slices, parameter groups
//!   (decay / no decay) and a serialisable optimizer state for checkpoints.
//! - [`clip`]: global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`, returning the
//!   scale so it can be fused into the AdamW step.
//!
//! The crate must not know about models, model files, tensors on devices or backends: it works
//! on host f32 slices and plain numbers. Device backends either call into it (host state) or
//! mirror its arithmetic (see [`adamw::AdamWScalars`]); either way this crate is the reference.
//! Golden values from torch/transformers live in `tests/fixtures/schedules/`, produced by
//! `tools/dump_schedules.py`.

pub mod adamw;
pub mod clip;
pub mod error;
pub mod schedule;

pub use adamw::{adamw_step, AdamWHyper, AdamWScalars, AdamWState, GroupState, ParamGroup};
pub use clip::{clip_coefficient, clip_grad_norm_, clip_grad_norm_scale, global_grad_norm};
pub use error::{OptimError, Result};
pub use schedule::{LrSchedule, ScheduleConfig, ScheduleKind, Warmup};
