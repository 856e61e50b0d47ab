//! The run's artefacts for people: TensorBoard scalars under `runs/` while training, and PNG
//! plots of the logged curves under `images/` at the end (ms-swift's `plot_images`: one image
//! per tag, `train/loss` also smoothed as TensorBoard shows it), both through `qtrain-report`.
//!
//! Nothing here may fail a run: a write error is reported once as a warning and the artefact
//! is given up (the metrics are in `logging.jsonl` either way). This module must not decide
//! when to log.

use std::path::{Path, PathBuf};

use serde_json::Value;

use qtrain_report::{image_file_name, plot_lines, tensorboard_smoothing, unix_time_now, EventWriter, Plot, Series};

use crate::error::Result;
use crate::metrics::{EvalLog, TrainLog};

/// TensorBoard tag ← `log_history` key, for the plots.
const PLOTTED: [(&str, &str); 9] = [
    ("train/loss", "loss"),
    ("train/learning_rate", "learning_rate"),
    ("train/grad_norm", "grad_norm"),
    ("train/token_acc", "token_acc"),
    ("train/epoch", "epoch"),
    ("eval/loss", "eval_loss"),
    ("eval/token_acc", "eval_token_acc"),
    ("eval/self_cognition_acc", "eval_self_cognition_acc"),
    ("eval/repetition_rate", "eval_repetition_rate"),
];

/// `runs/` and `images/` of one run folder.
pub struct RunReport {
    run_dir: PathBuf,
    events: Option<EventWriter>,
}

impl RunReport {
    /// Start the TensorBoard event file (unless `tensorboard` is false).
    pub fn create(run_dir: &Path, tensorboard: bool) -> Result<Self> {
        let events = if tensorboard {
            match EventWriter::create(run_dir.join("runs")) {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("[qtrain] WARNING: no TensorBoard events for this run: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(RunReport { run_dir: run_dir.to_path_buf(), events })
    }

    fn scalars(&mut self, step: u64, values: &[(&str, Option<f64>)]) {
        let Some(w) = self.events.as_mut() else { return };
        let now = unix_time_now();
        let result = values
            .iter()
            .filter_map(|(tag, v)| v.map(|v| (tag, v)))
            .try_for_each(|(tag, v)| w.add_scalar(tag, step as i64, v, now))
            .and_then(|()| w.flush());
        if let Err(e) = result {
            eprintln!("[qtrain] WARNING: TensorBoard events stopped: {e}");
            self.events = None;
        }
    }

    /// The scalars of a training log.
    pub fn train_log(&mut self, step: u64, log: &TrainLog) -> Result<()> {
        self.scalars(
            step,
            &[
                ("train/loss", log.window.loss()),
                ("train/learning_rate", Some(log.learning_rate)),
                ("train/grad_norm", log.grad_norm),
                ("train/token_acc", log.window.token_acc()),
                ("train/epoch", Some(log.epoch)),
            ],
        );
        Ok(())
    }

    /// The scalars of an evaluation.
    pub fn eval_log(&mut self, step: u64, log: &EvalLog) -> Result<()> {
        self.scalars(
            step,
            &[
                ("eval/loss", log.loss),
                ("eval/token_acc", log.token_acc),
                ("eval/self_cognition_acc", log.self_cognition_acc),
                ("eval/repetition_rate", log.repetition_rate),
            ],
        );
        Ok(())
    }

    /// Close the event file and draw `images/<tag>.png` for every curve of `history` (the
    /// whole run's `log_history`, including the steps before a resume). Returns lines for the
    /// log.
    pub fn finish(&mut self, history: &[Value]) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if let Some(mut w) = self.events.take() {
            let _ = w.flush();
            notes.push(format!("TensorBoard events: {}", w.path().display()));
        }
        let images = self.run_dir.join("images");
        let mut drawn = Vec::new();
        for (tag, key) in PLOTTED {
            let points: Vec<(f64, f64)> = history.iter().filter_map(|h| Some((h.get("step")?.as_f64()?, h.get(key)?.as_f64()?))).collect();
            if points.is_empty() || (key == "epoch") {
                continue;
            }
            let mut series = vec![Series::line(tag, points.clone())];
            if tag == "train/loss" {
                let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
                let smooth = tensorboard_smoothing(&ys, 0.9);
                series = vec![
                    Series::line("raw", points.clone()).with_color((0x9c, 0xc3, 0xe6)),
                    Series::line("smoothed (0.9)", points.iter().zip(smooth).map(|(p, s)| (p.0, s)).collect())
                        .with_color((0x1f, 0x77, 0xb4)),
                ];
            }
            let plot = Plot { title: tag.to_string(), x_label: "step".into(), y_label: key.into(), series, ..Plot::default() };
            let file = images.join(image_file_name(tag));
            match plot_lines(&file, &plot) {
                Ok(()) => drawn.push(image_file_name(tag)),
                Err(e) => notes.push(format!("WARNING: plot {} not written: {e}", file.display())),
            }
        }
        if !drawn.is_empty() {
            notes.push(format!("plots in {}: {}", images.display(), drawn.join(", ")));
        }
        Ok(notes)
    }
}
