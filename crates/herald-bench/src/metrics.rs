//! A remote server's own figures: `GET /metrics` (Prometheus text, herald-api's
//! `metrics.rs`) read before and after a run, and the differences that become the
//! report's engine figures. A series the server does not export stays `None`, so the
//! report shows `null` rather than a made-up 0.

use std::collections::BTreeMap;

use crate::remote::{self, Client};
use crate::BenchError;

/// Most series kept from one scrape: a server exports a few dozen, plus one per API
/// route and status; past this the answer is not a Herald server's.
const SERIES_MAX: usize = 10_000;

/// One scrape: every sample, keyed by its series as written (`name{labels}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    series: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses the text exposition format (comments and blank lines skipped; a sample
    /// line is `series value [timestamp]`).
    pub fn parse(text: &str) -> Result<Scrape, BenchError> {
        let mut series = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Label values may hold spaces: the value follows the closing brace.
            let (name, rest) = match line.rfind('}') {
                Some(end) => line.split_at(end + 1),
                None => line.split_at(line.find(char::is_whitespace).unwrap_or(line.len())),
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                return Err(BenchError::Remote(format!(
                    "GET /metrics: cannot read the sample {line:?}"
                )));
            };
            if series.len() >= SERIES_MAX {
                return Err(BenchError::Remote(format!(
                    "GET /metrics: more than {SERIES_MAX} series"
                )));
            }
            series.insert(name.trim().to_owned(), value);
        }
        Ok(Scrape { series })
    }

    /// The sample of `series` (`name` or `name{label="value"}`), if exported.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied()
    }

    /// An integer sample (counters and gauges of counts and bytes).
    fn count(&self, series: &str) -> Option<u64> {
        self.get(series)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
    }
}

/// Reads `GET /metrics` with the admin key.
pub fn scrape(client: &mut Client) -> Result<Scrape, BenchError> {
    let response = remote::expect(
        client.call("GET", "/metrics", None, b"")?,
        200,
        "GET /metrics",
    )?;
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| BenchError::Remote("GET /metrics: the answer is not UTF-8".into()))?;
    Scrape::parse(text)
}

/// What the server did between two scrapes. Counters are differences; gauges are the
/// later reading; `None` where the server does not export the series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerFigures {
    /// Shards answering.
    pub shards: Option<usize>,
    /// Process CPU, µs (`process_cpu_seconds_total`).
    pub cpu_us: Option<u64>,
    /// Resident memory at the end, bytes.
    pub rss_bytes: Option<u64>,
    /// Peak resident memory since the server started, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes the server process asked the storage layer to write.
    pub disk_write_bytes: Option<u64>,
    /// Journal bytes appended.
    pub journal_bytes: Option<u64>,
    /// Journal records appended.
    pub journal_records: Option<u64>,
    /// Journal syncs.
    pub journal_syncs: Option<u64>,
    /// Shard turns whose records were committed urgently (synced within the group
    /// delay: someone waited for one of them).
    pub journal_commits_urgent: Option<u64>,
    /// Shard turns whose records were committed lazily (attempt outcomes alone, synced
    /// within the lazy delay).
    pub journal_commits_lazy: Option<u64>,
    /// Attempts answered 2xx.
    pub attempts_succeeded: Option<u64>,
    /// Attempts that failed retryably.
    pub attempts_retryable: Option<u64>,
    /// Attempts that failed finally.
    pub attempts_final: Option<u64>,
    /// Deliveries ended by a final failure.
    pub deliveries_failed: Option<u64>,
    /// Deliveries whose every attempt failed.
    pub deliveries_exhausted: Option<u64>,
    /// Deliveries not finished at the end (gauge).
    pub deliveries_pending: Option<u64>,
    /// Deliveries waiting for a retry at the end (gauge).
    pub retries_pending: Option<u64>,
    /// Finished deliveries the delivery log evicted (`None`: a server without the
    /// series).
    pub deliveries_evicted: Option<u64>,
}

impl ServerFigures {
    /// The figures between `before` and `after`.
    pub fn between(before: &Scrape, after: &Scrape) -> ServerFigures {
        let delta = |series: &str| Some(after.count(series)?.saturating_sub(before.count(series)?));
        ServerFigures {
            shards: after.count("herald_shards").map(|s| s as usize),
            cpu_us: after
                .get("process_cpu_seconds_total")
                .zip(before.get("process_cpu_seconds_total"))
                .map(|(a, b)| ((a - b).max(0.0) * 1e6).round() as u64),
            rss_bytes: after.count("process_resident_memory_bytes"),
            peak_rss_bytes: after.count("herald_process_resident_memory_peak_bytes"),
            disk_write_bytes: delta("herald_process_disk_write_bytes_total"),
            journal_bytes: delta("herald_journal_appended_bytes_total"),
            journal_records: delta("herald_journal_records_total"),
            journal_syncs: delta("herald_journal_sync_duration_seconds_count"),
            journal_commits_urgent: delta("herald_journal_commits_total{kind=\"urgent\"}"),
            journal_commits_lazy: delta("herald_journal_commits_total{kind=\"lazy\"}"),
            attempts_succeeded: delta("herald_attempts_total{outcome=\"success\"}"),
            attempts_retryable: delta("herald_attempts_total{outcome=\"retryable\"}"),
            attempts_final: delta("herald_attempts_total{outcome=\"final\"}"),
            deliveries_failed: delta("herald_deliveries_total{outcome=\"failed\"}"),
            deliveries_exhausted: delta("herald_deliveries_total{outcome=\"exhausted\"}"),
            deliveries_pending: after.count("herald_pending_deliveries"),
            retries_pending: after.count("herald_pending_retries"),
            deliveries_evicted: delta("herald_deliveries_evicted_total"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP herald_shards Shards answering.\n\
        # TYPE herald_shards gauge\n\
        herald_shards 2\n\
        herald_attempts_total{outcome=\"success\"} 10\n\
        herald_attempts_total{outcome=\"retryable\"} 1\n\
        herald_journal_appended_bytes_total 1000\n\
        herald_journal_commits_total{kind=\"urgent\"} 7\n\
        herald_journal_commits_total{kind=\"lazy\"} 3\n\
        herald_api_requests_total{route=\"/v1/events\",status=\"202\"} 5\n\
        process_cpu_seconds_total 1.25\n\
        # EOF\n";

    #[test]
    fn differences_of_counters_and_later_gauges() {
        let before = Scrape::parse(BEFORE).unwrap();
        let after = Scrape::parse(
            &BEFORE
                .replace("success\"} 10", "success\"} 110")
                .replace("bytes_total 1000", "bytes_total 51000")
                .replace("urgent\"} 7", "urgent\"} 27")
                .replace("lazy\"} 3", "lazy\"} 43")
                .replace("seconds_total 1.25", "seconds_total 1.75")
                .replace(
                    "herald_shards 2",
                    "herald_shards 2\nherald_pending_deliveries 3",
                ),
        )
        .unwrap();
        let f = ServerFigures::between(&before, &after);
        assert_eq!(f.shards, Some(2));
        assert_eq!(f.attempts_succeeded, Some(100));
        assert_eq!(f.attempts_retryable, Some(0));
        assert_eq!(f.journal_bytes, Some(50_000));
        assert_eq!(f.journal_commits_urgent, Some(20));
        assert_eq!(f.journal_commits_lazy, Some(40));
        assert_eq!(f.cpu_us, Some(500_000));
        assert_eq!(f.deliveries_pending, Some(3));
        // Not exported: unknown, not zero.
        assert_eq!(f.journal_records, None);
        assert_eq!(f.disk_write_bytes, None);
        assert_eq!(f.peak_rss_bytes, None);
        assert_eq!(
            after.get("herald_api_requests_total{route=\"/v1/events\",status=\"202\"}"),
            Some(5.0)
        );
    }

    #[test]
    fn a_line_without_a_number_is_refused() {
        let err = Scrape::parse("herald_shards two\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("herald_shards two"), "{err}");
    }
}
