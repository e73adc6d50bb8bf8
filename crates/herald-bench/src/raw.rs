//! The raw ceiling: the same sink, connections and body size as an engine run, with
//! requests whose signature headers were made before the run (no journal, scheduling or
//! signing in between): what a sender that spent nothing of its own could reach.

use std::time::Duration;

use herald::Scheme;
use herald_sink::{run_load_spread, LoadConfig, Sink};

use crate::report::{HostCpuShares, Latency, RawReport};
use crate::sysstat;
use crate::{BenchError, LATENCY_FIELD, SINK_THREAD_PREFIX};

/// Body bytes run_load adds around its padding: `{"<field>":<19 digits>,"pad":""}`.
fn body_overhead() -> usize {
    format!("{{\"{LATENCY_FIELD}\":{},\"pad\":\"\"}}", u64::MAX / 10).len()
}

/// Headers of the size `scheme` puts on a request, signed once before the run.
pub fn signed_headers(scheme: &Scheme) -> Vec<(String, String)> {
    let id = format!("evt_{}", "0".repeat(32));
    let secret = herald_sign::generate_secret(scheme, &[7; 32]);
    let mut headers = vec![("User-Agent".to_owned(), "herald/0.1.0".to_owned())];
    match herald_sign::Signer::new(scheme.clone(), &[&secret]) {
        Ok(signer) => {
            let mut signed = herald_sign::SignedHeaders::new();
            signer.sign_into(
                &herald_sign::Message {
                    id: &id,
                    timestamp_s: 1_795_334_400,
                    url: "http://127.0.0.1/raw",
                    body: b"{}",
                },
                &mut signed,
            );
            headers.extend(signed.iter().map(|(n, v)| (n.to_owned(), v.to_owned())));
        }
        // A generated secret that its own scheme refuses is a herald-sign bug; keep the
        // Standard Webhooks header sizes then.
        Err(_) => {
            headers.push(("webhook-id".to_owned(), id));
            headers.push(("webhook-timestamp".to_owned(), "1795334400".to_owned()));
            headers.push((
                "webhook-signature".to_owned(),
                format!("v1,{}=", "A".repeat(43)),
            ));
        }
    }
    headers
}

/// Sends `requests` requests of `body_bytes` bytes over `connections` keep-alive
/// connections to `sink` (spread over its listeners, as the engine's pools spread over
/// the origins) and measures them; the sink's latency histogram is reset. An https sink
/// is trusted through `tls_ca_pem` (its generated CA, or the chain it was given).
pub fn measure(
    sink: &Sink,
    connections: usize,
    requests: u64,
    body_bytes: usize,
    scheme: &Scheme,
    tls_ca_pem: Option<&str>,
) -> Result<RawReport, BenchError> {
    sink.reset_latency();
    let cpu_before = sysstat::process_cpu_us();
    let sink_before = sysstat::threads_cpu_us(SINK_THREAD_PREFIX);
    let host_before = sysstat::host_cpu();
    let payload_bytes = body_bytes
        .saturating_sub(body_overhead())
        .min(herald_sink::LOAD_PAYLOAD_BYTES_MAX);
    let report = run_load_spread(
        sink.addrs(),
        &LoadConfig {
            connections,
            requests,
            target: "/raw".into(),
            payload_bytes,
            latency_field: Some(LATENCY_FIELD.into()),
            headers: signed_headers(scheme),
            tls_ca_pem: match (sink.scheme(), tls_ca_pem) {
                ("https", Some(pem)) => Some(pem.to_owned()),
                ("https", None) => {
                    return Err(BenchError::Config(
                        "the raw ceiling of an https sink needs the CA that issued its \
                         certificate (put it at the end of --sink-cert's chain)"
                            .into(),
                    ))
                }
                _ => None,
            },
        },
    )
    .map_err(|e| BenchError::Sink(format!("raw load: {e}")))?;
    let cpu = sysstat::process_cpu_us()
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    // Saturating: a sink thread that ended between the readings takes its time with it.
    let sink_cpu = sysstat::threads_cpu_us(SINK_THREAD_PREFIX)
        .zip(sink_before)
        .map(|(a, b)| a.saturating_sub(b));
    Ok(RawReport {
        requests: report.requests,
        non_success: report.non_success,
        connections,
        origins: sink.addrs().len(),
        body_bytes: payload_bytes + body_overhead(),
        tls: sink.scheme() == "https",
        elapsed_s: report.elapsed.as_secs_f64(),
        raw_per_s: report.per_s,
        latency: Latency::of(&sink.latency()),
        cpu_us_per_request: crate::report::per(cpu, report.requests),
        sink_cpu_us_per_request: crate::report::per(sink_cpu, report.requests),
        host_cpu: HostCpuShares::between(host_before, sysstat::host_cpu()),
    })
}

/// Settings of `herald bench raw`.
#[derive(Clone, Debug)]
pub struct RawPlan {
    /// Keep-alive connections.
    pub connections: usize,
    /// Requests in total, or until this long has passed (rounds of `requests`).
    pub requests: u64,
    /// Keep sending rounds until this long has passed.
    pub duration: Option<Duration>,
    /// Body bytes of each request (the engine's envelope: data + about 200 bytes).
    pub body_bytes: usize,
    /// Over TLS.
    pub tls: bool,
    /// Signature headers of this scheme's size.
    pub scheme: Scheme,
    /// Sink threads.
    pub sink_threads: usize,
    /// Sink listeners (origins) the connections are spread over.
    pub origins: usize,
}

/// `herald bench raw`: a sink of its own and the load client, no engine.
pub fn run_raw(plan: &RawPlan) -> Result<RawReport, BenchError> {
    let temp =
        tempfile::tempdir().map_err(|e| BenchError::Io(format!("temporary directory: {e}")))?;
    let mut builder = Sink::builder()
        .requests_max(0)
        .latency_field(LATENCY_FIELD)
        .threads(plan.sink_threads)
        .listeners(plan.origins);
    if plan.tls {
        builder = builder.ca_pem_out(temp.path().join("ca.pem"));
    }
    let sink = builder
        .start()
        .map_err(|e| BenchError::Sink(e.to_string()))?;
    let Some(duration) = plan.duration else {
        let report = measure(
            &sink,
            plan.connections,
            plan.requests,
            plan.body_bytes,
            &plan.scheme,
            sink.ca_pem(),
        );
        sink.shutdown();
        return report;
    };
    // Rounds until the duration is spent; the figures are the sum of the rounds.
    let started = std::time::Instant::now();
    let cpu_before = sysstat::process_cpu_us();
    let sink_before = sysstat::threads_cpu_us(SINK_THREAD_PREFIX);
    let host_before = sysstat::host_cpu();
    let mut total = RawReport::default();
    let mut histogram = None::<hdrhistogram::Histogram<u64>>;
    while started.elapsed() < duration {
        let round = measure(
            &sink,
            plan.connections,
            plan.requests,
            plan.body_bytes,
            &plan.scheme,
            sink.ca_pem(),
        )?;
        let latest = sink.latency();
        match &mut histogram {
            Some(h) => {
                // Same bounds (the sink's): adding cannot fail.
                let _ = h.add(&latest);
            }
            None => histogram = Some(latest),
        }
        total.requests += round.requests;
        total.non_success += round.non_success;
        total.elapsed_s += round.elapsed_s;
        total.connections = round.connections;
        total.origins = round.origins;
        total.body_bytes = round.body_bytes;
        total.tls = round.tls;
    }
    sink.shutdown();
    total.raw_per_s = total.requests as f64 / total.elapsed_s.max(1e-9);
    if let Some(h) = &histogram {
        total.latency = Latency::of(h);
    }
    let cpu = sysstat::process_cpu_us()
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    total.cpu_us_per_request = crate::report::per(cpu, total.requests);
    let sink_cpu = sysstat::threads_cpu_us(SINK_THREAD_PREFIX)
        .zip(sink_before)
        .map(|(a, b)| a.saturating_sub(b));
    total.sink_cpu_us_per_request = crate::report::per(sink_cpu, total.requests);
    total.host_cpu = HostCpuShares::between(host_before, sysstat::host_cpu());
    Ok(total)
}
