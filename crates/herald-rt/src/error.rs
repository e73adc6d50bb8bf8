//! Why an outbound request produced no HTTP response.

/// A failed exchange, classified so the dispatcher can map it to an outcome (most are
/// "retry later"; [`TransportError::EgressRefused`] and [`TransportError::InvalidRequest`]
/// will fail the same way every time). Each variant carries a human-readable detail for
/// the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The receiver's host name did not resolve (receiver's or resolver's fault), or the
    /// lookup did not finish within the connect timeout.
    #[error("dns: {0}")]
    Dns(String),
    /// The egress guard refused every address of the receiver, or the URL is plain http
    /// while https is required (configuration: the webhook URL or the allowlist).
    #[error("egress refused: {0}")]
    EgressRefused(String),
    /// TCP connect failed on every permitted address (refused, unreachable).
    #[error("connect: {0}")]
    Connect(String),
    /// No connection (TCP and, for https, the TLS handshake) within the connect timeout.
    #[error("connect timed out: {0}")]
    ConnectTimeout(String),
    /// The TLS handshake failed: bad certificate, name mismatch, protocol error.
    #[error("tls: {0}")]
    Tls(String),
    /// No complete response within the request timeout (covers the whole exchange:
    /// waiting for a connection, connecting, sending, receiving).
    #[error("request timed out: {0}")]
    RequestTimeout(String),
    /// The receiver sent something that is not acceptable HTTP/1.1 or exceeds a limit
    /// (head size, header count, body size), or closed mid-response.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connection broke during the exchange (reset, write failure).
    #[error("connection: {0}")]
    Connection(String),
    /// Too many requests already waiting for a connection to this receiver (this shard
    /// is over its own limit; the receiver is slow).
    #[error("pool full: {0}")]
    PoolFull(String),
    /// The request cannot be encoded (a header name or value would break the framing):
    /// the caller's fault, nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl TransportError {
    /// A stable short name of the class, for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            TransportError::Dns(_) => "dns",
            TransportError::EgressRefused(_) => "egress_refused",
            TransportError::Connect(_) => "connect",
            TransportError::ConnectTimeout(_) => "connect_timeout",
            TransportError::Tls(_) => "tls",
            TransportError::RequestTimeout(_) => "request_timeout",
            TransportError::Protocol(_) => "protocol",
            TransportError::Connection(_) => "connection",
            TransportError::PoolFull(_) => "pool_full",
            TransportError::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        match self {
            TransportError::Dns(d)
            | TransportError::EgressRefused(d)
            | TransportError::Connect(d)
            | TransportError::ConnectTimeout(d)
            | TransportError::Tls(d)
            | TransportError::RequestTimeout(d)
            | TransportError::Protocol(d)
            | TransportError::Connection(d)
            | TransportError::PoolFull(d)
            | TransportError::InvalidRequest(d) => d,
        }
    }
}
