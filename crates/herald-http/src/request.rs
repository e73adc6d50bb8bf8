use crate::body::{BodyDecoder, Framing, Sink};
use crate::head::{self, Declared, HeadBuffer};
use crate::{HttpError, Limits};

/// A complete HTTP request, as parsed by [`RequestParser`] (server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent (case-sensitive, e.g. `POST`).
    pub method: String,
    /// Request target as sent (origin-form `/path?query` for ordinary requests).
    pub target: String,
    /// Header fields in arrival order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The first `body_captured_bytes_max` bytes of the (de-chunked) body.
    pub body: Vec<u8>,
    /// Length of the whole body, captured or drained. A server that needs the whole body
    /// answers 413 when this exceeds `body.len()`.
    pub body_bytes_total: u64,
    /// Whether the client allows another request on this connection.
    pub keep_alive: bool,
    /// Minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version_minor: u8,
}

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        head::find(&self.headers, name)
    }

    /// True when the body was longer than what was captured.
    pub fn body_truncated(&self) -> bool {
        self.body_bytes_total > self.body.len() as u64
    }
}

#[derive(Debug)]
enum Phase {
    Head,
    Body(Request),
    Failed(HttpError),
}

/// Incremental HTTP/1.1 request parser for one server-side connection; the same shape
/// as [`ResponseParser`](crate::ResponseParser).
///
/// Requests are framed by `Content-Length` or `Transfer-Encoding: chunked`; neither means
/// no body. Any other transfer coding, both headers at once, or a missing/repeated `Host`
/// in HTTP/1.1 is an error (answer 400 and close).
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    phase: Phase,
    head: HeadBuffer,
    body: BodyDecoder,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            phase: Phase::Head,
            head: HeadBuffer::default(),
            body: BodyDecoder::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when no byte of a request has been seen since the last one completed.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.head.is_empty()
    }

    /// True while the request being received carries `Expect: 100-continue` and none of
    /// its body has arrived yet: the server may answer `100 Continue` (once) or a final
    /// status. Clients wait a moment before sending the body anyway, so ignoring this only
    /// costs latency.
    pub fn expects_continue(&self) -> bool {
        match &self.phase {
            Phase::Body(request) => {
                request.body_bytes_total == 0
                    && !self.body.is_done()
                    && request
                        .header("expect")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
            }
            _ => false,
        }
    }

    /// Forgets all state (for a new connection); buffers keep their capacity.
    pub fn reset(&mut self) {
        self.phase = Phase::Head;
        self.head.clear();
        self.body.start(Framing::Empty);
    }

    /// Feeds bytes; returns how many were consumed and the request if one completed.
    /// Bytes after a completed request are left for the next call (pipelining). After an
    /// error, further calls return the same error until [`reset`](Self::reset).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Request>), HttpError> {
        if let Phase::Failed(error) = &self.phase {
            return Err(error.clone());
        }
        let result = self.feed_inner(input);
        if let Err(error) = &result {
            self.phase = Phase::Failed(error.clone());
        }
        result
    }

    /// The client closed the connection: `Ok(())` when idle, an error when a request was
    /// cut short. The parser is then reset.
    pub fn feed_eof(&mut self) -> Result<(), HttpError> {
        let result = match &self.phase {
            Phase::Failed(error) => return Err(error.clone()),
            Phase::Head if self.head.is_empty() => Ok(()),
            Phase::Head => Err(HttpError::UnexpectedEof("in request head")),
            Phase::Body(_) => Err(HttpError::UnexpectedEof("in request body")),
        };
        self.reset();
        result
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Request>), HttpError> {
        let mut consumed = 0;
        loop {
            match &mut self.phase {
                Phase::Failed(error) => return Err(error.clone()),
                Phase::Head => {
                    if consumed == input.len() {
                        return Ok((consumed, None));
                    }
                    let (n, candidate) = self
                        .head
                        .push(&input[consumed..], self.limits.head_bytes_max)?;
                    consumed += n;
                    if candidate {
                        if let Some((request, framing)) = self.parse_head()? {
                            self.head.clear();
                            self.body.start(framing);
                            self.phase = Phase::Body(request);
                        }
                    }
                }
                Phase::Body(request) => {
                    let mut sink = Sink {
                        body: &mut request.body,
                        total: &mut request.body_bytes_total,
                        status: None,
                    };
                    let (n, done) = self
                        .body
                        .feed(&input[consumed..], &mut sink, &self.limits)?;
                    consumed += n;
                    if !done {
                        return Ok((consumed, None));
                    }
                    let Phase::Body(request) = std::mem::replace(&mut self.phase, Phase::Head)
                    else {
                        unreachable!("phase was Body at the top of this arm");
                    };
                    return Ok((consumed, Some(request)));
                }
            }
        }
    }

    fn parse_head(&mut self) -> Result<Option<(Request, Framing)>, HttpError> {
        let limits = self.limits;
        let buf = &self.head.buf;
        head::with_header_slots(limits.header_count_max, |slots| {
            let mut request = httparse::Request::new(slots);
            let status = request
                .parse(buf)
                .map_err(|e| HttpError::from_httparse(e, limits.header_count_max))?;
            let len = match status {
                httparse::Status::Partial => return Ok(None),
                httparse::Status::Complete(len) => len,
            };
            if len != buf.len() {
                return Err(HttpError::MalformedHead("bytes after the blank line"));
            }
            let (Some(method), Some(target), Some(version_minor)) =
                (request.method, request.path, request.version)
            else {
                return Err(HttpError::MalformedHead("incomplete request line"));
            };
            let analysis = head::analyze(request.headers, version_minor)?;
            let host_ok = match version_minor {
                0 => analysis.host_count <= 1,
                _ => analysis.host_count == 1,
            };
            if !host_ok {
                return Err(HttpError::InvalidHost);
            }
            let framing = match analysis.declared {
                Declared::Nothing => Framing::Empty,
                Declared::Chunked => Framing::Chunked,
                Declared::OtherCoding => return Err(HttpError::UnsupportedTransferEncoding),
                Declared::Length(n) => head::length_framing(n, limits.body_bytes_max, None)?,
            };
            Ok(Some((
                Request {
                    method: method.to_owned(),
                    target: target.to_owned(),
                    headers: head::own_headers(request.headers),
                    body: Vec::with_capacity(framing.capture_hint(&limits)),
                    body_bytes_total: 0,
                    keep_alive: analysis.keep_alive,
                    version_minor,
                },
                framing,
            )))
        })
    }
}
