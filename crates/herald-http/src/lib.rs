//! Sans-IO HTTP/1.1 codec for Herald.
//!
//! * [`Url`]: endpoint URLs (http/https only), parsed once at configuration time.
//! * [`encode_request`] / [`encode_response`]: write a message head and body into a
//!   caller-owned, reusable `Vec<u8>`; header names and values are checked so that
//!   attacker-influenced custom headers cannot inject extra header lines.
//!   [`HeaderFields`] holds a request's fields in one text buffer (static names are not
//!   copied), and [`encode_request_fields`] encodes from it.
//! * [`ResponseParser`] / [`RequestParser`]: incremental parsers fed arbitrary byte
//!   chunks (built on `httparse` for the head), with every buffer bounded by [`Limits`].
//! * [`RetryAfter`] / [`parse_retry_after`]: the `Retry-After` header, delta-seconds or
//!   HTTP-date.
//!
//! Nothing here touches sockets, TLS or clocks: bytes in, messages out.
//!
//! ```
//! use herald_http::{encode_request, Limits, ResponseParser, RetryAfter, Url};
//!
//! let url = Url::parse("https://hooks.example.com/orders").unwrap();
//! let mut wire = Vec::new();
//! let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
//! encode_request(&mut wire, "POST", &url.target, &url.host_header(), &headers, b"{}").unwrap();
//! assert!(wire.starts_with(b"POST /orders HTTP/1.1\r\nHost: hooks.example.com\r\n"));
//!
//! // The receiver's answer may arrive in any number of pieces.
//! let mut parser = ResponseParser::new(Limits::default());
//! assert!(parser.feed(b"HTTP/1.1 503 Busy\r\nRetry-After: 30\r\n").unwrap().1.is_none());
//! let (_, response) = parser.feed(b"Content-Length: 0\r\n\r\n").unwrap();
//! let response = response.unwrap();
//! assert_eq!(response.status, 503);
//! assert_eq!(response.retry_after, Some(RetryAfter::DelaySeconds(30)));
//! assert!(response.keep_alive);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod date;
mod encode;
mod error;
mod fields;
mod head;
mod limits;
mod message;
mod received;
mod request;
mod response;
mod retry_after;
mod url;

pub use encode::{
    check_header_name, check_header_value, encode_request, encode_request_fields, encode_response,
    EncodeError,
};
pub use error::HttpError;
pub use fields::HeaderFields;
pub use limits::Limits;
pub use received::ReceivedHeaders;
pub use request::{Request, RequestParser};
pub use response::{Response, ResponseParser};
pub use retry_after::{parse_retry_after, RetryAfter};
pub use url::{Url, UrlError, UrlScheme, URL_BYTES_MAX};
