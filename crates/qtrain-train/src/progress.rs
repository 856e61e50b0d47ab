//! What a person watching the run sees on stderr: an indicatif progress bar (step, loss, lr,
//! tokens/s, ETA) when stderr is a terminal, plain `[qtrain] …` lines otherwise (logs, CI,
//! redirected output). Log lines go through [`Progress::println`] so the bar is redrawn below
//! them instead of being torn.
//!
//! This module must not compute metrics or decide when to log; it only shows what it is given.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The run's progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `max_steps` optimizer steps starting at `start_step` when stderr is a
    /// terminal (and `QTRAIN_PROGRESS` is not `plain`), else plain lines.
    pub fn new(max_steps: u64, start_step: u64) -> Self {
        let wanted = std::io::stderr().is_terminal() && std::env::var("QTRAIN_PROGRESS").map_or(true, |v| v != "plain");
        if !wanted {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(max_steps), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix("train");
        bar.set_position(start_step);
        // ETA from the steps of this process only.
        bar.reset_eta();
        Progress { bar: Some(bar) }
    }

    /// Whether a bar is drawn (else every log line is printed plainly).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// After optimizer step `step`: loss (of that step), lr and throughput.
    pub fn step(&self, step: u64, loss: Option<f64>, lr: f64, tokens_per_second: f64) {
        if let Some(bar) = &self.bar {
            let loss = loss.map_or_else(|| "n/a".to_string(), |l| format!("{l:.4}"));
            bar.set_message(format!("loss {loss} | lr {lr:.2e} | {tokens_per_second:.0} tok/s"));
            bar.set_position(step);
        }
    }

    /// A log line, above the bar when there is one.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("[qtrain] {line}")),
            None => eprintln!("[qtrain] {line}"),
        }
    }

    /// Remove the bar (end of training, or before an error is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
