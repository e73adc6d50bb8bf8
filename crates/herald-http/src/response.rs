use crate::body::{Framing, Sink};
use crate::head::{self, Declared, HeadBuffer};
use crate::message::{Framer, Message, Phase};
use crate::{parse_retry_after, HttpError, Limits, ReceivedHeaders, RetryAfter};

/// A complete HTTP response, as parsed by [`ResponseParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 200..=999 (interim 1xx responses are skipped by the parser).
    pub status: u16,
    /// Header fields in arrival order, names as sent.
    pub headers: ReceivedHeaders,
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
        self.headers.get(name)
    }

    /// True when the body was longer than what was captured.
    pub fn body_truncated(&self) -> bool {
        self.body_bytes_total > self.body.len() as u64
    }
}

impl Message for Response {
    fn sink(&mut self) -> Sink<'_> {
        Sink {
            body: &mut self.body,
            total: &mut self.body_bytes_total,
            status: Some(self.status),
        }
    }
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
    framer: Framer<Response>,
    request_is_head: bool,
    informational_count: usize,
}

impl ResponseParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            framer: Framer::new(limits),
            request_is_head: false,
            informational_count: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.framer.limits
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
        self.framer.is_between_messages() && self.informational_count == 0
    }

    /// Forgets all state (for a new connection); buffers keep their capacity.
    pub fn reset(&mut self) {
        self.framer.reset();
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
        let request_is_head = self.request_is_head;
        let informational_count = &mut self.informational_count;
        let mut announced_oversized = None;
        let result = self.framer.feed(input, |buffer, limits| {
            parse_head(
                buffer,
                limits,
                request_is_head,
                informational_count,
                &mut announced_oversized,
            )
        });
        if announced_oversized.is_some() {
            self.framer.oversized = announced_oversized;
        }
        if let Ok((_, Some(_))) = &result {
            self.request_is_head = false;
            self.informational_count = 0;
        }
        result
    }

    /// After [`HttpError::BodyTooLarge`]: the response whose body ran past
    /// `body_bytes_max`, with its status, headers and the body bytes captured (at most
    /// `body_captured_bytes_max`; `body_bytes_total` counts what was read), so that a
    /// client can still classify it by its status; `keep_alive` is false (the rest of
    /// the body was not read: the connection must be closed). `None` after any other
    /// error, or once taken.
    pub fn take_oversized(&mut self) -> Option<Response> {
        self.framer.oversized.take().map(|mut response| {
            response.keep_alive = false;
            response
        })
    }

    /// The peer closed the connection: completes a close-delimited body. Returns
    /// `Ok(None)` when idle (a clean close between responses), an error when a response
    /// was cut short. The parser is then reset.
    pub fn feed_eof(&mut self) -> Result<Option<Response>, HttpError> {
        let phase = std::mem::replace(&mut self.framer.phase, Phase::Head);
        let result = match phase {
            Phase::Failed(error) => {
                self.framer.phase = Phase::Failed(error.clone());
                return Err(error);
            }
            Phase::Head if self.framer.head.is_empty() && self.informational_count == 0 => Ok(None),
            Phase::Head => Err(HttpError::UnexpectedEof("in response head")),
            Phase::Body(response) if self.framer.body.is_until_close() => Ok(Some(response)),
            Phase::Body(_) => Err(HttpError::UnexpectedEof("in response body")),
        };
        self.reset();
        result
    }
}

/// Parses a head that ends in a blank line. `Ok(None)`: not a final response yet
/// (more bytes needed, or an interim 1xx that was skipped).
/// Parses a response head. One whose `Content-Length` is over `body_bytes_max` is
/// [`HttpError::BodyTooLarge`], the response (its body unread) left in `oversized`.
fn parse_head(
    buffer: &mut HeadBuffer,
    limits: &Limits,
    request_is_head: bool,
    informational_count: &mut usize,
    oversized: &mut Option<Response>,
) -> Result<Option<(Response, Framing)>, HttpError> {
    let limits = *limits;
    let buf = &buffer.buf;
    let parsed = head::with_header_slots(limits.header_count_max, |slots| {
        let mut response = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buf, slots)
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
        let retry_after = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
            .and_then(|h| parse_retry_after(h.value));
        let framing = if request_is_head || code == 204 || code == 304 {
            Framing::Empty
        } else {
            match analysis.declared {
                Declared::Chunked => Framing::Chunked,
                Declared::OtherCoding | Declared::Nothing => Framing::UntilClose,
                Declared::Length(n) => head::length_framing(n, limits.body_bytes_max, Some(code))
                    .inspect_err(|_| {
                    *oversized = Some(Response {
                        status: code,
                        headers: ReceivedHeaders::from_parsed(response.headers),
                        body: Vec::new(),
                        body_bytes_total: 0,
                        keep_alive: false,
                        retry_after,
                        version_minor,
                    });
                })?,
            }
        };
        Ok(Parsed::Final(
            Response {
                status: code,
                headers: ReceivedHeaders::from_parsed(response.headers),
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
            buffer.clear();
            *informational_count += 1;
            if *informational_count > limits.informational_count_max {
                return Err(HttpError::TooManyInformational {
                    informational_count_max: limits.informational_count_max,
                });
            }
            Ok(None)
        }
        Parsed::Final(response, framing) => Ok(Some((response, framing))),
    }
}

enum Parsed {
    Partial,
    Informational,
    Final(Response, Framing),
}
