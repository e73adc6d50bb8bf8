//! Remote mode: a minimal keep-alive client of `herald serve`'s REST API (plain HTTP,
//! herald-http's encoder and parser), enough to create tenants and webhooks and to
//! publish events singly or in batches.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use herald_http::{encode_request, Limits, Response, ResponseParser};

use crate::scenario::Target;
use crate::BenchError;

/// Socket timeout: a stuck server fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a batch answer of 1,000 envelopes with their data).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One keep-alive connection to the server, reconnecting when the server closes it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    admin_key: String,
    stream: Option<TcpStream>,
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
        Ok(Client {
            addr,
            host: url.host_header(),
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

    fn connect(&mut self) -> Result<&mut TcpStream, BenchError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .map_err(|e| remote_error(format!("connecting to {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            self.parser.reset();
            self.stream = Some(stream);
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
        if let Err(e) = stream.write_all(out) {
            return Err(if fresh {
                Exchange::Failed(remote_error(format!("sending: {e}")))
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
