//! Remote mode: a minimal keep-alive client of `herald serve`'s REST API (http or https
//! through rustls, herald-http's encoder and parser), enough to create tenants and
//! webhooks, to publish events singly or in batches, and to read `GET /metrics`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use herald_http::{encode_request, Limits, Response, ResponseParser};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::scenario::Target;
use crate::BenchError;

/// Socket timeout: a stuck server fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a batch answer of 1,000 envelopes with their data).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A connection to the server: plain, or TLS (boxed: rustls's state is large).
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The system's trusted roots, read once per process (reading them takes milliseconds
/// and every publisher opens a client).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    // Certificates the loader could not read are skipped: the CA file, when given,
    // still applies, and a server nobody trusts fails the handshake with its reason.
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The TLS settings for `target`: the system's roots plus its CA file.
fn tls_config(target: &Target) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = &target.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            BenchError::Config(format!("reading the CA file {}: {e}", path.display()))
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| BenchError::Config(format!("CA file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| BenchError::Config(format!("CA file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(BenchError::Config(format!(
                "CA file {} holds no CERTIFICATE block",
                path.display()
            )));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(herald_sink::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One keep-alive connection to the server, reconnecting when the server closes it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    /// https: the settings and the name the certificate must cover.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    admin_key: String,
    stream: Option<Stream>,
    parser: ResponseParser,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn remote_error(what: impl Into<String>) -> BenchError {
    BenchError::Remote(what.into())
}

impl Client {
    /// A client of `target` (connects on first use).
    pub fn new(target: &Target) -> Result<Client, BenchError> {
        let url = &target.url;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| remote_error(format!("resolving {}: {e}", url.host)))?
            .next()
            .ok_or_else(|| remote_error(format!("{} has no address", url.host)))?;
        let tls = if url.is_tls() {
            let name = ServerName::try_from(url.host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| remote_error(format!("{} as a TLS name: {e}", url.host)))?;
            Some((tls_config(target)?, name))
        } else {
            None
        };
        Ok(Client {
            addr,
            host: url.host_header(),
            tls,
            admin_key: target.api_key.clone(),
            stream: None,
            parser: ResponseParser::new(Limits {
                body_captured_bytes_max: RESPONSE_BYTES_MAX,
                body_bytes_max: RESPONSE_BYTES_MAX as u64,
                ..Limits::default()
            }),
            buf: vec![0; 64 * 1024],
            out: Vec::with_capacity(64 * 1024),
        })
    }

    fn connect(&mut self) -> Result<&mut Stream, BenchError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .map_err(|e| remote_error(format!("connecting to {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            self.parser.reset();
            self.stream = Some(match &self.tls {
                // The handshake runs on the first write; its failure names the reason
                // (an unknown issuer: give the server's CA with --ca-file).
                Some((config, name)) => {
                    let connection = rustls::ClientConnection::new(config.clone(), name.clone())
                        .map_err(|e| remote_error(format!("TLS: {e}")))?;
                    Stream::Tls(Box::new(rustls::StreamOwned::new(connection, stream)))
                }
                None => Stream::Plain(stream),
            });
        }
        // Set just above.
        Ok(self.stream.as_mut().expect("connected"))
    }

    /// Sends one request as the admin (acting for `tenant` when given) and reads the
    /// answer. A connection the server closed before answering is reopened once.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        tenant: Option<&str>,
        body: &[u8],
    ) -> Result<Response, BenchError> {
        let authorization = format!("Bearer {}", self.admin_key);
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", authorization.as_bytes()),
            ("Content-Type", b"application/json"),
        ];
        if let Some(tenant) = tenant {
            headers.push(("Herald-Tenant", tenant.as_bytes()));
        }
        self.out.clear();
        encode_request(&mut self.out, method, path, &self.host, &headers, body)
            .map_err(|e| remote_error(format!("encoding {method} {path}: {e}")))?;
        for attempt in 0..2 {
            match self.exchange() {
                Ok(response) => {
                    if !response.keep_alive {
                        self.stream = None;
                    }
                    return Ok(response);
                }
                // A keep-alive connection closed by the server between requests: retry
                // once on a new one (the request had not been read).
                Err(Exchange::Closed) if attempt == 0 => self.stream = None,
                Err(Exchange::Closed) => {
                    return Err(remote_error(format!(
                        "{method} {path}: the server closed the connection without answering"
                    )))
                }
                Err(Exchange::Failed(e)) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    fn exchange(&mut self) -> Result<Response, Exchange> {
        let out = std::mem::take(&mut self.out);
        let result = self.exchange_bytes(&out);
        self.out = out;
        result
    }

    fn exchange_bytes(&mut self, out: &[u8]) -> Result<Response, Exchange> {
        let fresh = self.stream.is_none();
        let stream = self.connect().map_err(Exchange::Failed)?;
        if let Err(e) = stream.write_all(out).and_then(|()| stream.flush()) {
            return Err(if fresh {
                let hint = if matches!(self.stream, Some(Stream::Tls(_))) {
                    " (an https server signed by a private CA needs --ca-file)"
                } else {
                    ""
                };
                Exchange::Failed(remote_error(format!("sending: {e}{hint}")))
            } else {
                Exchange::Closed
            });
        }
        let mut read_any = false;
        loop {
            let stream = self.stream.as_mut().expect("connected above");
            let n = match stream.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if !read_any && !fresh => {
                    let _ = e;
                    return Err(Exchange::Closed);
                }
                Err(e) => return Err(Exchange::Failed(remote_error(format!("reading: {e}")))),
            };
            if n == 0 {
                if !read_any && !fresh {
                    return Err(Exchange::Closed);
                }
                return match self.parser.feed_eof() {
                    Ok(Some(response)) => Ok(response),
                    _ => Err(Exchange::Failed(remote_error(
                        "the server closed the connection mid-answer",
                    ))),
                };
            }
            read_any = true;
            let mut input = &self.buf[..n];
            while !input.is_empty() {
                let (used, response) = self
                    .parser
                    .feed(input)
                    .map_err(|e| Exchange::Failed(remote_error(format!("bad answer: {e}"))))?;
                input = &input[used..];
                if let Some(response) = response {
                    return Ok(response);
                }
                if used == 0 {
                    break;
                }
            }
        }
    }
}

enum Exchange {
    Closed,
    Failed(BenchError),
}

/// The body of an answer as text, for error messages.
pub fn body_text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body[..response.body.len().min(512)]).into_owned()
}

/// Checks the status, or fails naming the call and the server's answer.
pub fn expect(response: Response, status: u16, what: &str) -> Result<Response, BenchError> {
    if response.status == status {
        Ok(response)
    } else {
        Err(remote_error(format!(
            "{what}: expected {status}, got {}: {}",
            response.status,
            body_text(&response)
        )))
    }
}
