use crate::HeaderFields;

/// Why a message could not be encoded. Always the caller's fault: a header, method, target
/// or host that would break (or inject into) the message framing. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The method is empty or not an HTTP token.
    #[error("invalid request method")]
    InvalidMethod,
    /// The request target is empty or contains whitespace, control or non-ASCII bytes.
    #[error("invalid request target")]
    InvalidTarget,
    /// The Host value is empty or contains whitespace, control or non-ASCII bytes.
    #[error("invalid Host value")]
    InvalidHost,
    /// Header name `index` (in the caller's slice) is empty or not an HTTP token.
    #[error("header {index}: invalid header name")]
    InvalidHeaderName {
        /// Position in the headers slice.
        index: usize,
    },
    /// Header value `index` contains CR, LF, NUL or another control character: sending it
    /// would let whoever chose the value inject header lines.
    #[error("header {index}: header value contains a control character")]
    InvalidHeaderValue {
        /// Position in the headers slice.
        index: usize,
    },
    /// Header `index` is one the encoder writes itself (`Host`, `Content-Length`,
    /// `Transfer-Encoding`): a second copy would make the framing ambiguous.
    #[error("header {index}: framing header is set by the encoder")]
    ReservedHeader {
        /// Position in the headers slice.
        index: usize,
    },
    /// Status code outside 100..=999.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// A body given for a status that cannot have one (1xx, 204, 304).
    #[error("status {0} cannot carry a body")]
    BodyNotAllowed(u16),
}

/// Checks that `name` is a valid header field name (an RFC 9110 token). The error's
/// `index` is 0: there is no slice to point into.
pub fn check_header_name(name: &str) -> Result<(), EncodeError> {
    if is_token(name.as_bytes()) {
        Ok(())
    } else {
        Err(EncodeError::InvalidHeaderName { index: 0 })
    }
}

/// Checks that `value` is a valid header field value: no control characters other than
/// horizontal tab (so no CR, LF or NUL), no DEL. Bytes >= 0x80 (obs-text) are allowed.
/// The error's `index` is 0: there is no slice to point into.
pub fn check_header_value(value: &[u8]) -> Result<(), EncodeError> {
    if is_field_value(value) {
        Ok(())
    } else {
        Err(EncodeError::InvalidHeaderValue { index: 0 })
    }
}

/// Appends an HTTP/1.1 request to `out`: request line, `Host`, the caller's `headers`,
/// `Content-Length` (omitted only for a GET or HEAD without body), blank line, body.
///
/// `out` is not cleared: callers reuse one buffer per connection and clear it
/// themselves, so steady-state encoding allocates nothing. Each header is checked just
/// before it is written; on error what was written is taken back, so `out` holds what it
/// held before.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), EncodeError> {
    let headers_bytes = slice_wire_bytes(headers);
    encode_request_from(
        out,
        method,
        target,
        host,
        headers.iter().copied(),
        headers_bytes,
        body,
    )
}

/// [`encode_request`] with the header fields of a [`HeaderFields`] list, after
/// `defaults` (fields the caller adds in front, such as a default `User-Agent`): head and
/// body land in `out` together, ready for one write. An error's `index` counts
/// `defaults` first, then `fields`.
pub fn encode_request_fields(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    defaults: &[(&str, &[u8])],
    fields: &HeaderFields,
    body: &[u8],
) -> Result<(), EncodeError> {
    let headers_bytes = slice_wire_bytes(defaults) + fields.wire_bytes();
    let headers = defaults
        .iter()
        .copied()
        .chain(fields.iter().map(|(name, value)| (name, value.as_bytes())));
    encode_request_from(out, method, target, host, headers, headers_bytes, body)
}

/// The request encoder behind both entry points. `headers_bytes`: what the headers take
/// on the wire (`name: value` and CRLF each), so that `out` grows once. Each header is
/// checked as it is written, in one pass over the fields (a second pass to check them
/// first cost as much again, the fields being read twice); an invalid one takes back
/// everything this call wrote.
fn encode_request_from<'h>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    headers_bytes: usize,
    body: &[u8],
) -> Result<(), EncodeError> {
    if !is_token(method.as_bytes()) {
        return Err(EncodeError::InvalidMethod);
    }
    if target.is_empty() || !is_graphic(target.as_bytes()) {
        return Err(EncodeError::InvalidTarget);
    }
    if host.is_empty() || !is_graphic(host.as_bytes()) {
        return Err(EncodeError::InvalidHost);
    }
    let send_length = !body.is_empty() || !(method == "GET" || method == "HEAD");
    let mut length_digits = [0u8; 20];
    let length = format_decimal(body.len() as u64, &mut length_digits);

    let start = out.len();
    out.reserve(
        method.len() + target.len() + host.len() + headers_bytes + length.len() + body.len() + 64,
    );
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (index, (name, value)) in headers.enumerate() {
        if let Err(error) = check_header(index, name, value) {
            out.truncate(start);
            return Err(error);
        }
        write_header(out, name, value);
    }
    if send_length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(length);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Appends an HTTP/1.1 response to `out` (for servers: the management API, the test
/// sink): status line with the standard reason phrase, the caller's `headers`,
/// `Content-Length` (except for 1xx, 204 and 304), blank line, body.
///
/// A body for 1xx, 204 or 304 is an error. Like [`encode_request`], `out` is appended to
/// and is unchanged on error.
pub fn encode_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), EncodeError> {
    if !(100..=999).contains(&status) {
        return Err(EncodeError::InvalidStatus(status));
    }
    let bodyless = status < 200 || status == 204 || status == 304;
    if bodyless && !body.is_empty() {
        return Err(EncodeError::BodyNotAllowed(status));
    }
    let headers_len = check_headers(headers.iter().copied())?;
    let reason = reason_phrase(status);
    let mut status_digits = [0u8; 20];
    let status_text = format_decimal(u64::from(status), &mut status_digits);
    let mut length_digits = [0u8; 20];
    let length = format_decimal(body.len() as u64, &mut length_digits);

    out.reserve(reason.len() + headers_len + body.len() + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_text);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(out, headers.iter().copied());
    // 304 keeps no Content-Length: it would describe the representation, not this message.
    if !bodyless {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(length);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Validates caller headers; returns the bytes they will take on the wire.
fn check_headers<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Result<usize, EncodeError> {
    let mut len = 0;
    for (index, (name, value)) in headers.enumerate() {
        check_header(index, name, value)?;
        len += header_line_bytes(name.len(), value.len());
    }
    Ok(len)
}

/// Validates caller header `index`: a token for a name, no control characters in the
/// value, and none of the framing headers the encoder writes itself.
fn check_header(index: usize, name: &str, value: &[u8]) -> Result<(), EncodeError> {
    if !is_token(name.as_bytes()) {
        return Err(EncodeError::InvalidHeaderName { index });
    }
    if !is_field_value(value) {
        return Err(EncodeError::InvalidHeaderValue { index });
    }
    if ["host", "content-length", "transfer-encoding"]
        .iter()
        .any(|reserved| name.eq_ignore_ascii_case(reserved))
    {
        return Err(EncodeError::ReservedHeader { index });
    }
    Ok(())
}

/// Bytes a header takes in a head: name, `": "`, value, CRLF.
pub(crate) fn header_line_bytes(name_len: usize, value_len: usize) -> usize {
    name_len + value_len + 4
}

/// [`header_line_bytes`] of every header in `headers`.
fn slice_wire_bytes(headers: &[(&str, &[u8])]) -> usize {
    headers
        .iter()
        .map(|(name, value)| header_line_bytes(name.len(), value.len()))
        .sum()
}

fn write_headers<'h>(out: &mut Vec<u8>, headers: impl Iterator<Item = (&'h str, &'h [u8])>) {
    for (name, value) in headers {
        write_header(out, name, value);
    }
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Lookup table for [`is_tchar`]: header names are checked on every encode.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

// The checks below look at every byte, without stopping at the first bad one: a loop
// without an early exit has no branch per byte (and the comparisons vectorize), and
// every request is checked in full on the way out, so it is the common case that counts.

pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().fold(true, |ok, &b| ok & is_tchar(b))
}

/// RFC 9110 field-value: VCHAR, obs-text, SP and HTAB. No CR, LF, NUL or other CTL.
pub(crate) fn is_field_value(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b >= b' ') & (b != 0x7f) | (b == b'\t'))
    })
}

/// Visible ASCII only (`0x21..=0x7e`): a request target or a Host value.
fn is_graphic(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & b.is_ascii_graphic())
}

/// Writes `n` in decimal into the tail of `buf` without allocating.
fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // The reason phrase is optional (RFC 9112 §4); clients must not depend on it.
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_request() {
        let mut out = Vec::new();
        encode_request(
            &mut out,
            "POST",
            "/hook?a=1",
            "example.com:8443",
            &[
                ("content-type", b"application/json"),
                ("webhook-id", b"msg_1"),
            ],
            b"{}",
        )
        .unwrap();
        assert_eq!(
            out,
            b"POST /hook?a=1 HTTP/1.1\r\nHost: example.com:8443\r\ncontent-type: application/json\r\nwebhook-id: msg_1\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn get_without_body_has_no_content_length_but_post_does() {
        let mut out = Vec::new();
        encode_request(&mut out, "GET", "/", "h", &[], b"").unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        out.clear();
        encode_request(&mut out, "POST", "/", "h", &[], b"").unwrap();
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn appends_and_reuses_buffer() {
        let mut out = b"prefix".to_vec();
        encode_request(&mut out, "POST", "/", "h", &[], b"x").unwrap();
        assert!(out.starts_with(b"prefixPOST / HTTP/1.1\r\n"));
        out.clear();
        let capacity = out.capacity();
        encode_request(&mut out, "POST", "/", "h", &[], b"x").unwrap();
        assert_eq!(
            out.capacity(),
            capacity,
            "no growth when the buffer is warm"
        );
    }

    #[test]
    fn rejects_injection_and_leaves_buffer_untouched() {
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a [u8])],
            EncodeError,
        );
        let cases: &[Case<'_>] = &[
            ("", "/", "h", &[], EncodeError::InvalidMethod),
            ("PO ST", "/", "h", &[], EncodeError::InvalidMethod),
            ("POST\r\n", "/", "h", &[], EncodeError::InvalidMethod),
            ("POST", "", "h", &[], EncodeError::InvalidTarget),
            ("POST", "/a b", "h", &[], EncodeError::InvalidTarget),
            ("POST", "/\r\nX: y", "h", &[], EncodeError::InvalidTarget),
            ("POST", "/", "", &[], EncodeError::InvalidHost),
            ("POST", "/", "h\r\nX: y", &[], EncodeError::InvalidHost),
            (
                "POST",
                "/",
                "h",
                &[("", b"v")],
                EncodeError::InvalidHeaderName { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("a", b"v"), ("X:Y", b"v")],
                EncodeError::InvalidHeaderName { index: 1 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X\r\nY", b"v")],
                EncodeError::InvalidHeaderName { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X", b"v\r\nEvil: 1")],
                EncodeError::InvalidHeaderValue { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X", b"v\nEvil: 1")],
                EncodeError::InvalidHeaderValue { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X", b"v\r")],
                EncodeError::InvalidHeaderValue { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X", b"v\0")],
                EncodeError::InvalidHeaderValue { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("X", b"\x7f")],
                EncodeError::InvalidHeaderValue { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("Content-Length", b"5")],
                EncodeError::ReservedHeader { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("HOST", b"x")],
                EncodeError::ReservedHeader { index: 0 },
            ),
            (
                "POST",
                "/",
                "h",
                &[("transfer-encoding", b"chunked")],
                EncodeError::ReservedHeader { index: 0 },
            ),
        ];
        for (method, target, host, headers, want) in cases {
            let mut out = b"keep".to_vec();
            let got = encode_request(&mut out, method, target, host, headers, b"body");
            assert_eq!(
                got.as_ref(),
                Err(want),
                "{method:?} {target:?} {host:?} {headers:?}"
            );
            assert_eq!(out, b"keep");
        }
    }

    /// The checks read every byte without stopping early (their loops are unrolled and
    /// vectorized): a bad byte is caught at any position of a value of any length, in
    /// the unrolled part and in the tail.
    #[test]
    fn a_bad_byte_is_caught_at_every_position() {
        for len in [1usize, 7, 16, 31, 33, 64, 65, 200] {
            let value: Vec<u8> = (0..len).map(|i| b"aZ9 \t~\x80\xff"[i % 8]).collect();
            assert!(is_field_value(&value), "a valid value of {len} bytes");
            let name: Vec<u8> = (0..len).map(|i| b"aZ9-_.~!"[i % 8]).collect();
            assert!(is_token(&name), "a valid name of {len} bytes");
            assert!(is_graphic(&name), "visible ASCII of {len} bytes");
            for at in 0..len {
                for bad in [b'\r', b'\n', 0, 0x1f, 0x7f] {
                    let mut v = value.clone();
                    v[at] = bad;
                    assert!(!is_field_value(&v), "byte {bad:#x} at {at} of {len}");
                }
                for bad in [b':', b' ', b'\r', b'"', 0x80] {
                    let mut n = name.clone();
                    n[at] = bad;
                    assert!(!is_token(&n), "name byte {bad:#x} at {at} of {len}");
                }
                for bad in [b' ', b'\n', 0x7f, 0x80] {
                    let mut n = name.clone();
                    n[at] = bad;
                    assert!(!is_graphic(&n), "target byte {bad:#x} at {at} of {len}");
                }
            }
        }
        assert!(!is_token(b""));
        assert!(is_field_value(b""));
    }

    #[test]
    fn header_fields_encode_like_the_same_slice_and_are_checked_alike() {
        let mut fields = HeaderFields::new();
        fields.push_static("webhook-id", "msg_1");
        fields.push("X-Team", "blue");
        let defaults: [(&str, &[u8]); 1] = [("User-Agent", b"herald")];
        let mut from_fields = b"kept".to_vec();
        encode_request_fields(
            &mut from_fields,
            "POST",
            "/h",
            "h",
            &defaults,
            &fields,
            b"{}",
        )
        .unwrap();
        let mut from_slice = b"kept".to_vec();
        let slice: [(&str, &[u8]); 3] = [
            ("User-Agent", b"herald"),
            ("webhook-id", b"msg_1"),
            ("X-Team", b"blue"),
        ];
        encode_request(&mut from_slice, "POST", "/h", "h", &slice, b"{}").unwrap();
        assert_eq!(from_fields, from_slice);

        // The error's index counts the defaults first; nothing is written on error.
        let cases: [(&str, &str, EncodeError); 3] = [
            (
                "X-Evil",
                "a\r\nInjected: 1",
                EncodeError::InvalidHeaderValue { index: 2 },
            ),
            ("Bad Name", "v", EncodeError::InvalidHeaderName { index: 2 }),
            (
                "content-length",
                "1",
                EncodeError::ReservedHeader { index: 2 },
            ),
        ];
        for (name, value, expected) in cases {
            let mut bad = HeaderFields::new();
            bad.push_static("webhook-id", "msg_1");
            bad.push(name, value);
            let mut out = b"kept".to_vec();
            let error = encode_request_fields(&mut out, "POST", "/", "h", &defaults, &bad, b"")
                .unwrap_err();
            assert_eq!(error, expected, "{name}");
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn header_value_allows_tab_and_obs_text() {
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/", "h", &[("X", b"a\tb \xff")], b"").unwrap();
        assert!(check_header_value(b"a\tb").is_ok());
        assert!(check_header_value(b"a\rb").is_err());
        assert!(check_header_name("X-Ok").is_ok());
        assert!(check_header_name("X Bad").is_err());
    }

    #[test]
    fn encodes_responses() {
        let mut out = Vec::new();
        encode_response(&mut out, 200, &[("Content-Type", b"text/plain")], b"hi").unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        out.clear();
        encode_response(&mut out, 204, &[], b"").unwrap();
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
        out.clear();
        encode_response(&mut out, 599, &[], b"").unwrap();
        assert_eq!(out, b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n");
        out.clear();
        assert_eq!(
            encode_response(&mut out, 99, &[], b""),
            Err(EncodeError::InvalidStatus(99))
        );
        assert_eq!(
            encode_response(&mut out, 1000, &[], b""),
            Err(EncodeError::InvalidStatus(1000))
        );
        assert_eq!(
            encode_response(&mut out, 304, &[], b"x"),
            Err(EncodeError::BodyNotAllowed(304))
        );
        assert_eq!(
            encode_response(&mut out, 100, &[], b"x"),
            Err(EncodeError::BodyNotAllowed(100))
        );
        assert_eq!(
            encode_response(&mut out, 200, &[("X", b"\n")], b""),
            Err(EncodeError::InvalidHeaderValue { index: 0 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn tchar_table_matches_rfc_9110() {
        let specials = b"!#$%&'*+-.^_`|~";
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || specials.contains(&b);
            assert_eq!(is_tchar(b), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn decimal_formatting() {
        let mut buf = [0u8; 20];
        assert_eq!(format_decimal(0, &mut buf), b"0");
        assert_eq!(format_decimal(1024, &mut buf), b"1024");
        assert_eq!(format_decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
