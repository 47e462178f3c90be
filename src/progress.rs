//! The one place that builds the training progress bar and prints log lines.
//!
//! On a terminal: an indicatif bar (iteration, loss, iterations per second,
//! ETA) with log lines printed above it. Otherwise no bar, only the lines, so
//! piped output and CI logs stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    /// No bar and no log lines.
    quiet: bool,
}

impl Progress {
    /// Creates a bar over `total` iterations, or none when stdout is not a terminal.
    /// `quiet` hides the bar and the log lines.
    pub fn new(total: u64, start: u64, quiet: bool) -> Self {
        if quiet || !std::io::stdout().is_terminal() {
            return Self { bar: None, quiet };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos:>6}/{len:6} loss {msg} ETA {eta}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_position(start);
        Self { bar: Some(bar), quiet }
    }

    /// Advances to `iteration` and shows `loss`.
    pub fn update(&self, iteration: u64, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(iteration);
            bar.set_message(format!("{loss:.6}  {:>7.0} it/s", bar.per_sec()));
        }
    }

    /// Prints a line above the bar (or plainly without one).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => println!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Formats the notebook's log line `iteration loss`, fixed width.
pub fn loss_line(iteration: usize, loss: f64) -> String {
    format!("{iteration:>6}  {loss:.12}")
}
