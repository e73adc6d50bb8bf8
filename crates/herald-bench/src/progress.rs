//! The live progress line: one line rewritten in place (`\r`) on a terminal, plain
//! lines once a second otherwise (logs, CI, pipes).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::report::Sample;

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    drawn: bool,
}

/// Plain lines come at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Progress on stderr, rewritten in place if stderr is a terminal.
    pub fn stderr() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
            last_line: None,
            drawn: false,
        }
    }

    /// No progress at all.
    pub fn quiet() -> Progress {
        Progress {
            tty: false,
            quiet: true,
            last_line: None,
            drawn: false,
        }
    }

    /// Formats one sample, with rates over the interval since `previous`.
    pub fn line(sample: &Sample, previous: &Sample) -> String {
        let dt = (sample.t_s - previous.t_s).max(1e-6);
        format!(
            "t={:.1}s accepted/s={:.0} delivered/s={:.0} accepted={} delivered={} pending={} p99_so_far={:.1}ms",
            sample.t_s,
            (sample.accepted - previous.accepted) as f64 / dt,
            (sample.delivered - previous.delivered) as f64 / dt,
            sample.accepted,
            sample.delivered,
            sample.pending,
            sample.p99_us as f64 / 1000.0
        )
    }

    /// Shows a sample (rate-limited to once a second on a non-terminal).
    pub fn show(&mut self, sample: &Sample, previous: &Sample) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            // \x1b[K clears what a longer previous line left.
            let _ = write!(err, "\r{}\x1b[K", Progress::line(sample, previous));
            let _ = err.flush();
            self.drawn = true;
        } else if self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            let _ = writeln!(err, "{}", Progress::line(sample, previous));
            self.last_line = Some(Instant::now());
        }
    }

    /// A message on its own line (ends a rewritten line first).
    pub fn note(&mut self, message: &str) {
        if self.quiet {
            return;
        }
        self.finish();
        eprintln!("{message}");
    }

    /// Ends the rewritten line, if any.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }

    /// Whether plain (non-terminal) lines are written: the sampler paces them.
    pub fn is_tty(&self) -> bool {
        self.tty
    }
}
