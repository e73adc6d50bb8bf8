/// Why a peer's message could not be parsed.
///
/// Every variant is the peer's fault (the receiver for [`ResponseParser`](crate::ResponseParser),
/// the client for [`RequestParser`](crate::RequestParser)): either the bytes break HTTP/1.1
/// framing or they exceed one of our [`Limits`](crate::Limits). After any error the
/// connection's framing is lost: the caller must close it (a parser that failed keeps
/// returning the same error until [`reset`](crate::ResponseParser::reset)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The start line or a header line is malformed (as reported by `httparse`).
    #[error("malformed message head: {0}")]
    MalformedHead(&'static str),
    /// The status code is outside 100..=999 (the peer sent `HTTP/1.1 000`-like garbage).
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// The head (start line, headers and blank line) is longer than `head_bytes_max`.
    #[error("message head exceeds head_bytes_max = {head_bytes_max}")]
    HeadTooLarge {
        /// The limit in force.
        head_bytes_max: usize,
    },
    /// More header (or trailer) fields than `header_count_max`.
    #[error("more than header_count_max = {header_count_max} header fields")]
    TooManyHeaders {
        /// The limit in force.
        header_count_max: usize,
    },
    /// More interim (1xx) responses than `informational_count_max`.
    #[error("more than informational_count_max = {informational_count_max} 1xx responses")]
    TooManyInformational {
        /// The limit in force.
        informational_count_max: usize,
    },
    /// `101 Switching Protocols` although no upgrade was requested.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitchingProtocols,
    /// A `Content-Length` value is not a decimal number (or overflows u64).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` values that disagree (RFC 9112 §6.3: unrecoverable).
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both `Transfer-Encoding` and `Content-Length`: ambiguous framing, a classic request
    /// smuggling / response splitting vector, rejected rather than guessed.
    #[error("both Transfer-Encoding and Content-Length present")]
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` we cannot frame: `chunked` twice, in an HTTP/1.0 message, or
    /// (in a request) not the final coding.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// A chunk-size line or the CRLF after chunk data is malformed.
    #[error("malformed chunked encoding: {0}")]
    MalformedChunk(&'static str),
    /// A chunk-size line longer than `chunk_line_bytes_max`.
    #[error("chunk-size line exceeds chunk_line_bytes_max = {chunk_line_bytes_max}")]
    ChunkLineTooLong {
        /// The limit in force.
        chunk_line_bytes_max: usize,
    },
    /// A chunked body's framing (chunk-size lines, extensions, CRLFs) passed
    /// [`Limits::chunk_framing_bytes_max`](crate::Limits::chunk_framing_bytes_max).
    #[error("chunk framing exceeds chunk_framing_bytes_max = {chunk_framing_bytes_max}")]
    ChunkFramingTooLarge {
        /// The limit in force.
        chunk_framing_bytes_max: u64,
    },
    /// A trailer field is malformed.
    #[error("malformed trailer field")]
    MalformedTrailer,
    /// The trailer section is longer than `head_bytes_max`.
    #[error("trailer section exceeds head_bytes_max = {head_bytes_max}")]
    TrailersTooLarge {
        /// The limit in force.
        head_bytes_max: usize,
    },
    /// The body is (or is announced to be) longer than `body_bytes_max`. The caller
    /// should close the connection; `status` lets a client still classify the response,
    /// and [`ResponseParser::take_oversized`](crate::ResponseParser::take_oversized)
    /// gives it whole (headers, the body bytes captured).
    #[error("body exceeds body_bytes_max = {body_bytes_max}")]
    BodyTooLarge {
        /// The limit in force.
        body_bytes_max: u64,
        /// Status code of the response whose body was too large (None for requests).
        status: Option<u16>,
    },
    /// A request without `Host` (HTTP/1.1) or with several `Host` fields (RFC 9112 §3.2).
    #[error("missing or repeated Host header")]
    InvalidHost,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed mid-message ({0})")]
    UnexpectedEof(&'static str),
}

impl HttpError {
    /// True when the peer exceeded one of our [`Limits`](crate::Limits) (as opposed to
    /// breaking the protocol).
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(
            self,
            HttpError::HeadTooLarge { .. }
                | HttpError::TooManyHeaders { .. }
                | HttpError::TooManyInformational { .. }
                | HttpError::ChunkLineTooLong { .. }
                | HttpError::ChunkFramingTooLarge { .. }
                | HttpError::TrailersTooLarge { .. }
                | HttpError::BodyTooLarge { .. }
        )
    }

    /// The status a server answers a bad request with before closing the connection:
    /// 431 for oversized heads, 413 for oversized bodies, 400 for everything else.
    pub fn server_status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } | HttpError::ChunkFramingTooLarge { .. } => 413,
            _ => 400,
        }
    }

    pub(crate) fn from_httparse(error: httparse::Error, header_count_max: usize) -> HttpError {
        match error {
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { header_count_max },
            httparse::Error::HeaderName => HttpError::MalformedHead("invalid header name"),
            httparse::Error::HeaderValue => HttpError::MalformedHead("invalid header value"),
            httparse::Error::NewLine => HttpError::MalformedHead("invalid line ending"),
            httparse::Error::Status => HttpError::MalformedHead("invalid status"),
            httparse::Error::Token => HttpError::MalformedHead("invalid token"),
            httparse::Error::Version => HttpError::MalformedHead("invalid HTTP version"),
        }
    }
}
