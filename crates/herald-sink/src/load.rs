//! A minimal keep-alive HTTP/1.1 load client: the raw loopback ceiling that engine
//! figures are compared with, measured in the same run on the same sink.
//!
//! Each connection runs on its own thread and sends one request at a time (no
//! pipelining, like Herald's pools), so the figure is what a sender with that many
//! connections could reach if it spent nothing on journaling, scheduling or signing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_http::{encode_request, Limits, ResponseParser};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::SinkError;

/// Most connections a load run opens (one thread each).
pub const LOAD_CONNECTIONS_MAX: usize = 256;
/// Largest padding per request body.
pub const LOAD_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// Socket read/write timeout of the load client: a stuck sink fails the run instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Connections, each on its own thread (1..=[`LOAD_CONNECTIONS_MAX`]).
    pub connections: usize,
    /// Requests in total, spread evenly over the connections.
    pub requests: u64,
    /// Request target.
    pub target: String,
    /// Padding bytes in each body (at most [`LOAD_PAYLOAD_BYTES_MAX`]).
    pub payload_bytes: usize,
    /// When set, each body starts `{"<field>":<Unix ns now>,` so the sink measures
    /// latency as it does for the engine.
    pub latency_field: Option<String>,
    /// Extra headers on every request (e.g. a signature of the same size as Herald's).
    pub headers: Vec<(String, String)>,
    /// Connect with TLS, trusting this CA PEM (the sink's [`crate::Sink::ca_pem`]).
    pub tls_ca_pem: Option<String>,
}

/// What a load run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Requests answered.
    pub requests: u64,
    /// Answers that were not 2xx.
    pub non_success: u64,
    /// Wall time from the first connect to the last answer.
    pub elapsed: Duration,
    /// `requests / elapsed`.
    pub per_s: f64,
}

/// Sends `config.requests` requests to `addr` and waits for every answer.
pub fn run_load(addr: SocketAddr, config: &LoadConfig) -> Result<LoadReport, SinkError> {
    if !(1..=LOAD_CONNECTIONS_MAX).contains(&config.connections) {
        return Err(SinkError::Config(format!(
            "connections = {} is outside 1..={LOAD_CONNECTIONS_MAX}",
            config.connections
        )));
    }
    if config.payload_bytes > LOAD_PAYLOAD_BYTES_MAX {
        return Err(SinkError::Config(format!(
            "payload_bytes = {} exceeds {LOAD_PAYLOAD_BYTES_MAX}",
            config.payload_bytes
        )));
    }
    let tls = match &config.tls_ca_pem {
        Some(pem) => Some(client_config(pem)?),
        None => None,
    };
    let started = Instant::now();
    let per_connection = config.requests / config.connections as u64;
    let remainder = config.requests % config.connections as u64;
    let results: Vec<Result<(u64, u64), SinkError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.connections)
            .map(|i| {
                let count = per_connection + u64::from((i as u64) < remainder);
                let tls = tls.clone();
                scope.spawn(move || connection(addr, config, tls, count))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(SinkError::Config("a load thread panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut requests = 0;
    let mut non_success = 0;
    for result in results {
        let (answered, failed) = result?;
        requests += answered;
        non_success += failed;
    }
    Ok(LoadReport {
        requests,
        non_success,
        elapsed,
        per_s: requests as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| SinkError::Tls(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| SinkError::Tls(format!("CA certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        what: what.to_owned(),
        source,
    }
}

/// One connection's loop; returns (answered, non-2xx).
fn connection(
    addr: SocketAddr,
    config: &LoadConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    count: u64,
) -> Result<(u64, u64), SinkError> {
    let tcp = TcpStream::connect(addr).map_err(io_error("load: connect"))?;
    tcp.set_nodelay(true).map_err(io_error("load: nodelay"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(io_error("load: timeout"))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(io_error("load: timeout"))?;
    match tls {
        Some(tls) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(tls, name)
                .map_err(|e| SinkError::Tls(e.to_string()))?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            exchange(&mut stream, addr, config, count)
        }
        None => {
            let mut stream = tcp;
            exchange(&mut stream, addr, config, count)
        }
    }
}

fn exchange<S: Read + Write>(
    stream: &mut S,
    addr: SocketAddr,
    config: &LoadConfig,
    count: u64,
) -> Result<(u64, u64), SinkError> {
    let host = addr.to_string();
    let pad = "x".repeat(config.payload_bytes);
    let headers: Vec<(&str, &[u8])> = std::iter::once(("Content-Type", &b"application/json"[..]))
        .chain(
            config
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        )
        .collect();
    let mut parser = ResponseParser::new(Limits::default());
    let mut body = Vec::with_capacity(config.payload_bytes + 64);
    let mut out = Vec::with_capacity(config.payload_bytes + 512);
    let mut buf = vec![0u8; 16 * 1024];
    let mut non_success = 0;
    for _ in 0..count {
        body.clear();
        body.push(b'{');
        if let Some(field) = &config.latency_field {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            body.extend_from_slice(format!("\"{field}\":{now_ns},").as_bytes());
        }
        body.extend_from_slice(b"\"pad\":\"");
        body.extend_from_slice(pad.as_bytes());
        body.extend_from_slice(b"\"}");
        out.clear();
        encode_request(&mut out, "POST", &config.target, &host, &headers, &body)
            .map_err(|e| SinkError::Config(format!("load request: {e}")))?;
        stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .map_err(io_error("load: write"))?;
        let response = loop {
            let n = stream.read(&mut buf).map_err(io_error("load: read"))?;
            if n == 0 {
                return Err(SinkError::Io {
                    what: "load: the sink closed the connection".into(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            let (_, response) = parser
                .feed(&buf[..n])
                .map_err(|e| SinkError::Config(format!("load: bad response: {e}")))?;
            if let Some(response) = response {
                break response;
            }
        };
        if !(200..300).contains(&response.status) {
            non_success += 1;
        }
        if !response.keep_alive {
            return Err(SinkError::Config(format!(
                "load: the sink ended keep-alive (status {})",
                response.status
            )));
        }
    }
    Ok((count, non_success))
}
