//! Models of a receiver for capacity planning: how long it takes to answer
//! ([`LatencyModel`]) and what it answers ([`StatusMix`]), drawn from a seeded generator
//! so that a run is repeatable.

use std::fmt;
use std::str::FromStr;

use crate::action::DELAY_MS_MAX;
use crate::SinkError;

/// Most entries in a [`StatusMix`]: a mix names a handful of statuses, not a table.
pub const STATUS_MIX_ENTRIES_MAX: usize = 64;

/// The standard normal quantile at 0.99: a log-normal's p99 is `exp(mu + Z_P99 * sigma)`.
const Z_P99: f64 = 2.326_347_874_040_841;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, so a seed gives
/// the same answers in every version of the sink (a library generator may change its
/// algorithm between releases).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (Lemire); the bias is below 2^-32
    /// for the weights a mix can hold.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `(0, 1]`: never 0, so its logarithm is finite.
    fn unit_open_low(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal variate (Box–Muller, one of the pair).
    pub(crate) fn standard_normal(&mut self) -> f64 {
        let u1 = self.unit_open_low();
        let u2 = self.unit_open_low();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// How long the sink waits before answering a request that no script or responder
/// handles. Parsed from `5` (always 5 ms) or `5,p99=50` (median 5 ms, p99 50 ms).
///
/// Delays are whole milliseconds (samples are rounded) and at most
/// [`DELAY_MS_MAX`](crate::DELAY_MS_MAX); a delayed answer holds no thread (the event
/// loop keeps a deadline for it).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LatencyModel {
    /// Every answer waits this long.
    Fixed {
        /// The delay, in milliseconds.
        ms: u64,
    },
    /// Log-normal through two points: half the answers wait less than `median_ms`, 99 %
    /// less than `p99_ms`. Real receivers' latencies are skewed like this: mostly fast,
    /// with a long tail.
    LogNormal {
        /// Median delay in milliseconds (> 0).
        median_ms: f64,
        /// 99th percentile in milliseconds (> `median_ms`).
        p99_ms: f64,
    },
}

impl LatencyModel {
    /// Every answer waits `ms` (at most [`DELAY_MS_MAX`]).
    pub fn fixed(ms: u64) -> Result<LatencyModel, SinkError> {
        if ms > DELAY_MS_MAX {
            return Err(SinkError::Config(format!(
                "latency {ms} ms exceeds DELAY_MS_MAX = {DELAY_MS_MAX}"
            )));
        }
        Ok(LatencyModel::Fixed { ms })
    }

    /// A log-normal with this median and p99 (both in milliseconds, `0 < median <= p99
    /// <= DELAY_MS_MAX`); equal values give [`LatencyModel::Fixed`].
    pub fn log_normal(median_ms: f64, p99_ms: f64) -> Result<LatencyModel, SinkError> {
        let in_range = |v: f64| v.is_finite() && v > 0.0 && v <= DELAY_MS_MAX as f64;
        if !in_range(median_ms) || !in_range(p99_ms) {
            return Err(SinkError::Config(format!(
                "latency median {median_ms} ms and p99 {p99_ms} ms must be in (0, {DELAY_MS_MAX}]"
            )));
        }
        if p99_ms < median_ms {
            return Err(SinkError::Config(format!(
                "latency p99 {p99_ms} ms is below the median {median_ms} ms"
            )));
        }
        if p99_ms == median_ms {
            return LatencyModel::fixed(median_ms.round() as u64);
        }
        Ok(LatencyModel::LogNormal { median_ms, p99_ms })
    }

    /// One delay in milliseconds.
    pub(crate) fn sample_ms(&self, rng: &mut Rng) -> u64 {
        match *self {
            LatencyModel::Fixed { ms } => ms,
            LatencyModel::LogNormal { median_ms, p99_ms } => {
                let mu = median_ms.ln();
                let sigma = (p99_ms / median_ms).ln() / Z_P99;
                let ms = (mu + sigma * rng.standard_normal()).exp();
                // exp() of a finite value is finite or +inf; the cap bounds both.
                ms.round().min(DELAY_MS_MAX as f64) as u64
            }
        }
    }
}

impl FromStr for LatencyModel {
    type Err = SinkError;

    /// `MS` (fixed) or `MEDIAN,p99=MS`; the median may also be written `p50=MS`.
    fn from_str(s: &str) -> Result<LatencyModel, SinkError> {
        let bad = |why: &str| {
            SinkError::Config(format!(
                "latency {s:?}: {why} (expected MS or MEDIAN_MS,p99=MS, e.g. 5,p99=50)"
            ))
        };
        let number = |v: &str| -> Result<f64, SinkError> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| bad(&format!("{v:?} is not a non-negative number")))
        };
        let mut median = None;
        let mut p99 = None;
        for (i, part) in s.split(',').enumerate() {
            let part = part.trim();
            let (slot, value) = match part.split_once('=') {
                Some((name, value)) => match name.trim() {
                    "p50" => (&mut median, value),
                    "p99" => (&mut p99, value),
                    other => return Err(bad(&format!("unknown percentile {other:?}"))),
                },
                None if i == 0 => (&mut median, part),
                None => return Err(bad(&format!("{part:?} needs a name such as p99="))),
            };
            if slot.is_some() {
                return Err(bad("a percentile is given twice"));
            }
            *slot = Some(number(value)?);
        }
        let median = median.ok_or_else(|| bad("no median"))?;
        match p99 {
            None if median.fract() != 0.0 => Err(bad("a fixed latency is whole milliseconds")),
            None => LatencyModel::fixed(median as u64),
            Some(p99) => LatencyModel::log_normal(median, p99),
        }
    }
}

impl fmt::Display for LatencyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatencyModel::Fixed { ms } => write!(f, "{ms}"),
            LatencyModel::LogNormal { median_ms, p99_ms } => write!(f, "{median_ms},p99={p99_ms}"),
        }
    }
}

/// Statuses answered in proportion to weights, e.g. `200:97,500:2,429:1`: the answer to
/// each request that no script or responder handles is drawn from the mix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusMix {
    entries: Vec<(u16, u32)>,
    total: u64,
}

impl StatusMix {
    /// `(status, weight)` pairs: statuses 200..=599, each once, weights at least 1, at
    /// most [`STATUS_MIX_ENTRIES_MAX`] entries.
    pub fn new(entries: &[(u16, u32)]) -> Result<StatusMix, SinkError> {
        if entries.is_empty() || entries.len() > STATUS_MIX_ENTRIES_MAX {
            return Err(SinkError::Config(format!(
                "a status mix needs 1..={STATUS_MIX_ENTRIES_MAX} entries, got {}",
                entries.len()
            )));
        }
        for (i, &(status, weight)) in entries.iter().enumerate() {
            if !(200..=599).contains(&status) {
                return Err(SinkError::Config(format!(
                    "status {status} in the mix is outside 200..=599"
                )));
            }
            if weight == 0 {
                return Err(SinkError::Config(format!(
                    "status {status} in the mix has weight 0"
                )));
            }
            if entries[..i].iter().any(|&(s, _)| s == status) {
                return Err(SinkError::Config(format!(
                    "status {status} appears twice in the mix"
                )));
            }
        }
        Ok(StatusMix {
            entries: entries.to_vec(),
            total: entries.iter().map(|&(_, w)| u64::from(w)).sum(),
        })
    }

    /// The `(status, weight)` pairs as given.
    pub fn entries(&self) -> &[(u16, u32)] {
        &self.entries
    }

    /// The share of answers that get `status`, between 0 and 1.
    pub fn share(&self, status: u16) -> f64 {
        let weight: u64 = self
            .entries
            .iter()
            .filter(|&&(s, _)| s == status)
            .map(|&(_, w)| u64::from(w))
            .sum();
        weight as f64 / self.total as f64
    }

    pub(crate) fn draw(&self, rng: &mut Rng) -> u16 {
        let mut ticket = rng.below(self.total);
        for &(status, weight) in &self.entries {
            if ticket < u64::from(weight) {
                return status;
            }
            ticket -= u64::from(weight);
        }
        // Tickets are below the total, the sum of the weights: the loop returned.
        self.entries[self.entries.len() - 1].0
    }
}

impl FromStr for StatusMix {
    type Err = SinkError;

    /// `STATUS:WEIGHT[,STATUS:WEIGHT…]`.
    fn from_str(s: &str) -> Result<StatusMix, SinkError> {
        let mut entries = Vec::new();
        for part in s.split(',') {
            let parsed = part.split_once(':').and_then(|(status, weight)| {
                Some((status.trim().parse().ok()?, weight.trim().parse().ok()?))
            });
            match parsed {
                Some(entry) if entries.len() < STATUS_MIX_ENTRIES_MAX => entries.push(entry),
                Some(_) => {
                    return Err(SinkError::Config(format!(
                        "a status mix has at most {STATUS_MIX_ENTRIES_MAX} entries"
                    )))
                }
                None => {
                    return Err(SinkError::Config(format!(
                        "status mix {s:?}: {part:?} is not STATUS:WEIGHT (e.g. 200:97,500:2,429:1)"
                    )))
                }
            }
        }
        StatusMix::new(&entries)
    }
}

impl fmt::Display for StatusMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (status, weight)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{status}:{weight}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_fixed_for_a_seed() {
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut rng = Rng::new(1);
        assert!((0..10_000).all(|_| rng.below(3) < 3));
    }

    #[test]
    fn latency_parses_and_refuses() {
        let ok: &[(&str, LatencyModel)] = &[
            ("5", LatencyModel::Fixed { ms: 5 }),
            ("0", LatencyModel::Fixed { ms: 0 }),
            (
                "5,p99=50",
                LatencyModel::LogNormal {
                    median_ms: 5.0,
                    p99_ms: 50.0,
                },
            ),
            (
                "p50=0.5, p99=20",
                LatencyModel::LogNormal {
                    median_ms: 0.5,
                    p99_ms: 20.0,
                },
            ),
            ("7,p99=7", LatencyModel::Fixed { ms: 7 }),
        ];
        for (text, want) in ok {
            assert_eq!(&text.parse::<LatencyModel>().unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "x",
            "-1",
            "5,50",
            "5,p90=50",
            "50,p99=5",
            "0,p99=5",
            "5,p99=60001",
            "60001",
            "1.5",
            "5,p99=50,p99=60",
        ] {
            assert!(bad.parse::<LatencyModel>().is_err(), "{bad:?}");
        }
        let model: LatencyModel = "5,p99=50".parse().unwrap();
        assert_eq!(model.to_string().parse::<LatencyModel>().unwrap(), model);
    }

    #[test]
    fn log_normal_samples_fit_the_two_points() {
        let model = LatencyModel::log_normal(5.0, 50.0).unwrap();
        let mut rng = Rng::new(42);
        let mut samples: Vec<u64> = (0..20_000).map(|_| model.sample_ms(&mut rng)).collect();
        samples.sort_unstable();
        let median = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        assert_eq!(median, 5, "median of the rounded samples");
        assert!((44..=57).contains(&p99), "p99 {p99}");
        assert!(samples.iter().all(|&ms| ms <= DELAY_MS_MAX));
    }

    #[test]
    fn status_mix_parses_and_draws_in_proportion() {
        let mix: StatusMix = "200:97, 500:2,429:1".parse().unwrap();
        assert_eq!(mix.entries(), [(200, 97), (500, 2), (429, 1)]);
        assert_eq!(mix.to_string(), "200:97,500:2,429:1");
        assert!((mix.share(500) - 0.02).abs() < 1e-12);
        assert_eq!(mix.share(404), 0.0);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            match mix.draw(&mut rng) {
                200 => counts[0] += 1,
                500 => counts[1] += 1,
                429 => counts[2] += 1,
                other => panic!("drew {other}"),
            }
        }
        // Expected 97,000 / 2,000 / 1,000; binomial sd about 54 / 44 / 31.
        assert!((96_700..=97_300).contains(&counts[0]), "{counts:?}");
        assert!((1_800..=2_200).contains(&counts[1]), "{counts:?}");
        assert!((850..=1_150).contains(&counts[2]), "{counts:?}");
        for bad in [
            "",
            "200",
            "200:0",
            "199:1",
            "600:1",
            "200:1,200:2",
            "200:x",
            "ok:1",
        ] {
            assert!(bad.parse::<StatusMix>().is_err(), "{bad:?}");
        }
        let too_many: Vec<String> = (200..265).map(|s| format!("{s}:1")).collect();
        assert!(too_many.join(",").parse::<StatusMix>().is_err());
    }
}
