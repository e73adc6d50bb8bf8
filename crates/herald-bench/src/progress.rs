//! The live progress line: one line rewritten in place (`\r`) on a terminal, plain
//! lines once a second otherwise (logs, CI, pipes).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::{p99_since, Sample};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    drawn: bool,
    /// The sample the last line showed, and the latencies recorded by then: the next
    /// line's rates and p99 cover the span since.
    shown: Sample,
    shown_latency: Option<Histogram<u64>>,
}

/// Plain lines come at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Progress on stderr, rewritten in place if stderr is a terminal.
    pub fn stderr() -> Progress {
        Progress::new(std::io::stderr().is_terminal(), false)
    }

    /// No progress at all.
    pub fn quiet() -> Progress {
        Progress::new(false, true)
    }

    fn new(tty: bool, quiet: bool) -> Progress {
        Progress {
            tty,
            quiet,
            last_line: None,
            drawn: false,
            shown: Sample::default(),
            shown_latency: None,
        }
    }

    /// Formats one sample, with rates over the span since `previous` and `p99_us`, the
    /// p99 of the latencies recorded in that span.
    pub fn line(sample: &Sample, previous: &Sample, p99_us: u64) -> String {
        let dt = (sample.t_s - previous.t_s).max(1e-6);
        format!(
            "t={:.1}s accepted/s={:.0} delivered/s={:.0} accepted={} delivered={} pending={} p99={:.1}ms p99_so_far={:.1}ms",
            sample.t_s,
            (sample.accepted - previous.accepted) as f64 / dt,
            (sample.delivered - previous.delivered) as f64 / dt,
            sample.accepted,
            sample.delivered,
            sample.pending,
            p99_us as f64 / 1000.0,
            sample.p99_us as f64 / 1000.0
        )
    }

    /// Shows a sample (rate-limited to once a second on a non-terminal); `latency` holds
    /// every latency recorded so far.
    pub fn show(&mut self, sample: &Sample, latency: Histogram<u64>) {
        if self.quiet {
            return;
        }
        let due = self.tty || self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if !due {
            return;
        }
        let p99_us = p99_since(&latency, self.shown_latency.as_ref());
        let line = Progress::line(sample, &self.shown, p99_us);
        let mut err = std::io::stderr().lock();
        if self.tty {
            // \x1b[K clears what a longer previous line left.
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
            self.last_line = Some(Instant::now());
        }
        self.shown = sample.clone();
        self.shown_latency = Some(latency);
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
