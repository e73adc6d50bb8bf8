//! Sans-IO HTTP/1.1 codec for Herald.
//!
//! * [`Url`]: endpoint URLs (http/https only), parsed once at configuration time.
//! * [`encode_request`] / [`encode_response`]: write a message head and body into a
//!   caller-owned, reusable `Vec<u8>`; header names and values are checked so that
//!   attacker-influenced custom headers cannot inject extra header lines.
//! * [`ResponseParser`] / [`RequestParser`]: incremental parsers fed arbitrary byte
//!   chunks (built on `httparse` for the head), with every buffer bounded by [`Limits`].
//! * [`RetryAfter`] / [`parse_retry_after`]: the `Retry-After` header, delta-seconds or
//!   HTTP-date.
//!
//! Nothing here touches sockets, TLS or clocks: bytes in, messages out.
#![forbid(unsafe_code)]

mod body;
mod date;
mod encode;
mod error;
mod head;
mod limits;
mod request;
mod response;
mod retry_after;
mod url;

pub use encode::{
    check_header_name, check_header_value, encode_request, encode_response, EncodeError,
};
pub use error::HttpError;
pub use limits::Limits;
pub use request::{Request, RequestParser};
pub use response::{Response, ResponseParser};
pub use retry_after::{parse_retry_after, RetryAfter};
pub use url::{Url, UrlError, UrlScheme, URL_BYTES_MAX};
