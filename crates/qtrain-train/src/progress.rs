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
        Self::drawn_on(ProgressDrawTarget::stderr(), max_steps, start_step)
    }

    /// A bar drawn on `target`.
    fn drawn_on(target: ProgressDrawTarget, max_steps: u64, start_step: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(max_steps), target);
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

#[cfg(test)]
mod tests {
    use indicatif::{InMemoryTerm, TermLike};

    use super::*;

    /// The screen's rows, trailing blanks trimmed.
    fn rows(term: &InMemoryTerm) -> Vec<String> {
        term.contents().lines().map(|l| l.trim_end().to_string()).collect()
    }

    /// A log line of double-width characters (a Chinese self-cognition answer) must not push the
    /// redrawn bar to the right: indicatif pads each line to the terminal's width, and without
    /// its `unicode-width` feature it counts such characters as one column each, so the padding
    /// wraps onto the bar's row ("train" drawn indented by the excess).
    #[test]
    fn bar_stays_at_column_zero_after_a_wide_character_line() {
        let term = InMemoryTerm::new(10, 120);
        let progress = Progress::drawn_on(ProgressDrawTarget::term_like(Box::new(term.clone())), 10, 0);
        progress.step(1, Some(2.5), 1e-4, 100.0);
        // 9 + 2 × 14 = 37 columns in 23 characters: shorter than the terminal either way.
        progress.println("我是由示例作者开发的人工智能助手");
        progress.step(2, Some(2.25), 1e-4, 100.0);
        let screen = rows(&term);
        assert_eq!(screen[0], "[qtrain] 我是由示例作者开发的人工智能助手", "{screen:#?}");
        assert!(screen[1].starts_with("train ["), "the bar moved: {screen:#?}");
        assert!(screen[1].contains(" 2/10 loss 2.2500"), "{screen:#?}");
        assert!(screen[2..].iter().all(|r| r.is_empty()), "{screen:#?}");
        assert_eq!(term.width(), 120);
    }

    #[test]
    fn plain_lines_and_bar_lines_keep_their_order() {
        let term = InMemoryTerm::new(10, 120);
        let progress = Progress::drawn_on(ProgressDrawTarget::term_like(Box::new(term.clone())), 4, 1);
        progress.println("first");
        progress.println("second");
        progress.step(3, None, 2e-4, 50.0);
        let screen = rows(&term);
        assert_eq!(&screen[..2], ["[qtrain] first", "[qtrain] second"], "{screen:#?}");
        assert!(screen[2].starts_with("train [") && screen[2].contains(" 3/4 loss n/a | lr 2.00e-4"), "{screen:#?}");
        progress.finish();
        assert!(rows(&term).get(2).is_none_or(|r| r.is_empty()), "finish clears the bar: {:#?}", rows(&term));
    }
}
