//! qtrain-report: the artefacts a run leaves for people to look at.
//!
//! * [`plot`] draws PNG line and scatter plots ([`plot_lines`], [`plot_scatter`]): loss and
//!   learning-rate curves (ms-swift's `images/train_loss.png` etc.), sweep metrics against a
//!   parameter, intermediate eval curves per trial with pruned trials marked.
//! * [`tensorboard`] writes TensorBoard scalar event files ([`EventWriter`]) by hand.
//! * [`crc32c`] is the CRC-32C (Castagnoli) checksum that TFRecord framing needs.
//!
//! Invariant: this crate knows nothing about models, tensors, backends or training; it receives
//! plain numbers and names. Invariant: it links no system libraries (no fontconfig, freetype,
//! TensorFlow): text is drawn with a font embedded in the binary, see `assets/fonts/README.md`.

pub mod crc32c;
pub mod error;
mod fs;
pub mod plot;
pub mod tensorboard;

pub use error::{ReportError, Result};
pub use plot::{image_file_name, plot_lines, plot_scatter, tensorboard_smoothing, Plot, Series, SeriesStyle};
pub use tensorboard::{unix_time_now, EventWriter};
