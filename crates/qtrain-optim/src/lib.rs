//! qtrain-optim: optimizer math and learning-rate schedules, matching PyTorch/transformers.
//!
//! - [`schedule`]: learning-rate schedules as pure functions of the optimizer step, value for
//!   value equal to transformers' `get_scheduler` (plus a qtrain-specific `exponential`).
//! - [`adamw`]: `torch.optim.AdamW`'s hyper-parameters, their checks, and the per-step f32
//!   scalars of the element-wise update (which is a backend op in `qtrain-core`).
//! - [`clip`]: `torch.nn.utils.clip_grad_norm_`'s norm and coefficient, fused into the AdamW
//!   step as its gradient scale.
//!
//! The crate must not know about models, model files or devices, and holds no tensors: it
//! works on plain numbers and sits on `qtrain-core` only for the scalar type the backend op
//! takes. The optimizer state over a model's tensors is `qtrain_model::AdamW`.
//! Golden values from torch/transformers live in `tests/fixtures/schedules/`, produced by
//! `tools/dump_schedules.py`.

pub mod adamw;
pub mod clip;
pub mod error;
pub mod schedule;

pub use adamw::AdamWHyper;
pub use clip::{clip_coefficient, norm_from_sum_of_squares};
pub use error::{OptimError, Result};
pub use schedule::{LrSchedule, ScheduleConfig, ScheduleKind, Warmup};
