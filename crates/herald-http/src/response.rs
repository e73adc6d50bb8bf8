use crate::body::{BodyDecoder, Framing, Sink};
use crate::head::{self, Declared, HeadBuffer};
use crate::{parse_retry_after, HttpError, Limits, RetryAfter};

/// A complete HTTP response, as parsed by [`ResponseParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 200..=999 (interim 1xx responses are skipped by the parser).
    pub status: u16,
    /// Header fields in arrival order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The first `body_captured_bytes_max` bytes of the (de-chunked) body.
    pub body: Vec<u8>,
    /// Length of the whole body, captured or drained.
    pub body_bytes_total: u64,
    /// Whether the connection may carry another request: false for HTTP/1.0 without
    /// `Connection: keep-alive`, for `Connection: close`, and for close-delimited bodies.
    pub keep_alive: bool,
    /// The `Retry-After` header, if present and well-formed (honouring it is the
    /// caller's decision; it is parsed whatever the status).
    pub retry_after: Option<RetryAfter>,
    /// Minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version_minor: u8,
}

impl Response {
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
    Body(Response),
    Failed(HttpError),
}

/// Incremental HTTP/1.1 response parser for one connection.
///
/// Feed it whatever the socket returned; it buffers at most one head (`head_bytes_max`)
/// and one captured body (`body_captured_bytes_max`). Interim 1xx responses are skipped.
/// After a response completes, the remaining input belongs to the next response on the
/// same connection (pipelining): call [`feed`](Self::feed) again with the rest.
///
/// ```
/// use herald_http::{Limits, ResponseParser};
/// let mut parser = ResponseParser::new(Limits::default());
/// let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// let (used, response) = parser.feed(wire).unwrap();
/// assert_eq!(used, wire.len());
/// let response = response.unwrap();
/// assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
/// ```
#[derive(Debug)]
pub struct ResponseParser {
    limits: Limits,
    phase: Phase,
    head: HeadBuffer,
    body: BodyDecoder,
    request_is_head: bool,
    informational_count: usize,
}

impl ResponseParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            limits,
            phase: Phase::Head,
            head: HeadBuffer::default(),
            body: BodyDecoder::default(),
            request_is_head: false,
            informational_count: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Declares that the response about to be parsed answers a HEAD request, so it has no
    /// body whatever its headers say. Applies to the next completed response only.
    pub fn set_request_is_head(&mut self, is_head: bool) {
        self.request_is_head = is_head;
    }

    /// True when no byte of a response has been seen since the last one completed: a
    /// peer close now is a clean close, not a truncated response. (An interim 1xx
    /// response counts as seen: the final response is still owed.)
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.head.is_empty() && self.informational_count == 0
    }

    /// Forgets all state (for a new connection); buffers keep their capacity.
    pub fn reset(&mut self) {
        self.phase = Phase::Head;
        self.head.clear();
        self.body.start(Framing::Empty);
        self.request_is_head = false;
        self.informational_count = 0;
    }

    /// Feeds bytes; returns how many were consumed and the response if one completed.
    ///
    /// Without a completed response all of `input` is consumed. With one, the bytes after
    /// it are left unconsumed for the next call. After a response with `keep_alive ==
    /// false` the caller closes the connection rather than feeding what follows. After an
    /// error the connection must be closed; further calls return the same error until
    /// [`reset`](Self::reset).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Response>), HttpError> {
        if let Phase::Failed(error) = &self.phase {
            return Err(error.clone());
        }
        let result = self.feed_inner(input);
        if let Err(error) = &result {
            self.phase = Phase::Failed(error.clone());
        }
        result
    }

    /// The peer closed the connection: completes a close-delimited body. Returns
    /// `Ok(None)` when idle (a clean close between responses), an error when a response
    /// was cut short. The parser is then reset.
    pub fn feed_eof(&mut self) -> Result<Option<Response>, HttpError> {
        let phase = std::mem::replace(&mut self.phase, Phase::Head);
        let result = match phase {
            Phase::Failed(error) => {
                self.phase = Phase::Failed(error.clone());
                return Err(error);
            }
            Phase::Head if self.head.is_empty() && self.informational_count == 0 => Ok(None),
            Phase::Head => Err(HttpError::UnexpectedEof("in response head")),
            Phase::Body(response) if self.body.is_until_close() => Ok(Some(response)),
            Phase::Body(_) => Err(HttpError::UnexpectedEof("in response body")),
        };
        self.reset();
        result
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Response>), HttpError> {
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
                        if let Some((response, framing)) = self.parse_head()? {
                            self.head.clear();
                            self.body.start(framing);
                            self.phase = Phase::Body(response);
                        }
                    }
                }
                Phase::Body(response) => {
                    let mut sink = Sink {
                        body: &mut response.body,
                        total: &mut response.body_bytes_total,
                        status: Some(response.status),
                    };
                    let (n, done) = self
                        .body
                        .feed(&input[consumed..], &mut sink, &self.limits)?;
                    consumed += n;
                    if !done {
                        return Ok((consumed, None));
                    }
                    let Phase::Body(response) = std::mem::replace(&mut self.phase, Phase::Head)
                    else {
                        unreachable!("phase was Body at the top of this arm");
                    };
                    self.request_is_head = false;
                    self.informational_count = 0;
                    return Ok((consumed, Some(response)));
                }
            }
        }
    }

    /// Parses a head that ends in a blank line. `Ok(None)`: not a final response yet
    /// (more bytes needed, or an interim 1xx that was skipped).
    fn parse_head(&mut self) -> Result<Option<(Response, Framing)>, HttpError> {
        let limits = self.limits;
        let request_is_head = self.request_is_head;
        let buf = &self.head.buf;
        let parsed = head::with_header_slots(limits.header_count_max, |slots| {
            let mut response = httparse::Response::new(slots);
            let status = response
                .parse(buf)
                .map_err(|e| HttpError::from_httparse(e, limits.header_count_max))?;
            let len = match status {
                httparse::Status::Partial => return Ok(Parsed::Partial),
                httparse::Status::Complete(len) => len,
            };
            if len != buf.len() {
                return Err(HttpError::MalformedHead("bytes after the blank line"));
            }
            let code = response
                .code
                .ok_or(HttpError::MalformedHead("missing status"))?;
            let version_minor = response
                .version
                .ok_or(HttpError::MalformedHead("missing version"))?;
            if !(100..=999).contains(&code) {
                return Err(HttpError::InvalidStatus(code));
            }
            if code == 101 {
                return Err(HttpError::UnexpectedSwitchingProtocols);
            }
            if code < 200 {
                return Ok(Parsed::Informational);
            }
            let analysis = head::analyze(response.headers, version_minor)?;
            let framing = if request_is_head || code == 204 || code == 304 {
                Framing::Empty
            } else {
                match analysis.declared {
                    Declared::Chunked => Framing::Chunked,
                    Declared::OtherCoding | Declared::Nothing => Framing::UntilClose,
                    Declared::Length(n) => {
                        head::length_framing(n, limits.body_bytes_max, Some(code))?
                    }
                }
            };
            let retry_after = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| parse_retry_after(h.value));
            Ok(Parsed::Final(
                Response {
                    status: code,
                    headers: head::own_headers(response.headers),
                    body: Vec::with_capacity(framing.capture_hint(&limits)),
                    body_bytes_total: 0,
                    keep_alive: analysis.keep_alive && framing != Framing::UntilClose,
                    retry_after,
                    version_minor,
                },
                framing,
            ))
        })?;
        match parsed {
            Parsed::Partial => Ok(None),
            Parsed::Informational => {
                self.head.clear();
                self.informational_count += 1;
                if self.informational_count > limits.informational_count_max {
                    return Err(HttpError::TooManyInformational {
                        informational_count_max: limits.informational_count_max,
                    });
                }
                Ok(None)
            }
            Parsed::Final(response, framing) => Ok(Some((response, framing))),
        }
    }
}

enum Parsed {
    Partial,
    Informational,
    Final(Response, Framing),
}
