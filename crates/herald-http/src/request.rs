use crate::body::{Framing, Sink};
use crate::head::{self, Declared, HeadBuffer};
use crate::message::{Framer, Message, Phase};
use crate::{HttpError, Limits, ReceivedHeaders};

/// A complete HTTP request, as parsed by [`RequestParser`] (server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent (case-sensitive, e.g. `POST`).
    pub method: String,
    /// Request target as sent (origin-form `/path?query` for ordinary requests).
    pub target: String,
    /// Header fields in arrival order, names as sent.
    pub headers: ReceivedHeaders,
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
        self.headers.get(name)
    }

    /// True when the body was longer than what was captured.
    pub fn body_truncated(&self) -> bool {
        self.body_bytes_total > self.body.len() as u64
    }
}

impl Message for Request {
    fn sink(&mut self) -> Sink<'_> {
        Sink {
            body: &mut self.body,
            total: &mut self.body_bytes_total,
            status: None,
        }
    }
}

/// Incremental HTTP/1.1 request parser for one server-side connection; the same shape
/// as [`ResponseParser`](crate::ResponseParser).
///
/// Requests are framed by `Content-Length` or `Transfer-Encoding: chunked`; neither means
/// no body. Any other transfer coding, both headers at once, or a missing/repeated `Host`
/// in HTTP/1.1 is an error (answer 400 and close).
#[derive(Debug)]
pub struct RequestParser {
    framer: Framer<Request>,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            framer: Framer::new(limits),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.framer.limits
    }

    /// True when no byte of a request has been seen since the last one completed.
    pub fn is_idle(&self) -> bool {
        self.framer.is_between_messages()
    }

    /// True once a request's head is complete and its body is being received: a server
    /// that gives heads and bodies separate deadlines switches here.
    pub fn is_reading_body(&self) -> bool {
        matches!(self.framer.phase, Phase::Body(_))
    }

    /// True while the request being received carries `Expect: 100-continue` and none of
    /// its body has arrived yet: the server may answer `100 Continue` (once) or a final
    /// status. Clients wait a moment before sending the body anyway, so ignoring this only
    /// costs latency.
    pub fn expects_continue(&self) -> bool {
        match &self.framer.phase {
            Phase::Body(request) => {
                request.body_bytes_total == 0
                    && !self.framer.body.is_done()
                    && request
                        .header("expect")
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
            }
            _ => false,
        }
    }

    /// The request whose body is being received ([`is_reading_body`](Self::is_reading_body)):
    /// its method, target and headers, with the body so far. A server may answer from
    /// the head alone (a request it refuses whatever its body) without reading the body.
    pub fn head_in_progress(&self) -> Option<&Request> {
        match &self.framer.phase {
            Phase::Body(request) => Some(request),
            _ => None,
        }
    }

    /// Forgets all state (for a new connection); buffers keep their capacity.
    pub fn reset(&mut self) {
        self.framer.reset();
    }

    /// Feeds bytes; returns how many were consumed and the request if one completed.
    /// Bytes after a completed request are left for the next call (pipelining). After an
    /// error, further calls return the same error until [`reset`](Self::reset).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Request>), HttpError> {
        self.framer.feed(input, parse_head)
    }

    /// The client closed the connection: `Ok(())` when idle, an error when a request was
    /// cut short. The parser is then reset.
    pub fn feed_eof(&mut self) -> Result<(), HttpError> {
        let result = match &self.framer.phase {
            Phase::Failed(error) => return Err(error.clone()),
            Phase::Head if self.framer.head.is_empty() => Ok(()),
            Phase::Head => Err(HttpError::UnexpectedEof("in request head")),
            Phase::Body(_) => Err(HttpError::UnexpectedEof("in request body")),
        };
        self.reset();
        result
    }
}

fn parse_head(
    buffer: &mut HeadBuffer,
    limits: &Limits,
) -> Result<Option<(Request, Framing)>, HttpError> {
    let limits = *limits;
    let buf = &buffer.buf;
    head::with_header_slots(limits.header_count_max, |slots| {
        let mut request = httparse::Request::new(&mut []);
        let status = request
            .parse_with_uninit_headers(buf, slots)
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
                headers: ReceivedHeaders::from_parsed(request.headers),
                body: Vec::with_capacity(framing.capture_hint(&limits)),
                body_bytes_total: 0,
                keep_alive: analysis.keep_alive,
                version_minor,
            },
            framing,
        )))
    })
}
