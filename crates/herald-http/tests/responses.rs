//! Response parser: every case fed whole, byte-at-a-time and in seeded random splits.

mod support;

use herald_http::{HttpError, Limits, Response, RetryAfter};
use support::{parse_responses, splits};

/// What a test expects of one parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    status: u16,
    body: Vec<u8>,
    body_bytes_total: u64,
    keep_alive: bool,
    retry_after: Option<RetryAfter>,
}

fn want(status: u16, body: &[u8], keep_alive: bool) -> Want {
    Want {
        status,
        body: body.to_vec(),
        body_bytes_total: body.len() as u64,
        keep_alive,
        retry_after: None,
    }
}

fn summary(r: &Response) -> Want {
    Want {
        status: r.status,
        body: r.body.clone(),
        body_bytes_total: r.body_bytes_total,
        keep_alive: r.keep_alive,
        retry_after: r.retry_after,
    }
}

/// Runs one case under every split and checks they all agree with `expected`.
fn check(
    name: &str,
    wire: &[u8],
    limits: Limits,
    head_flags: &[bool],
    expected: &Result<Vec<Want>, HttpError>,
) {
    for split in splits() {
        let got = parse_responses(wire, split, limits, head_flags)
            .map(|responses| responses.iter().map(summary).collect::<Vec<_>>());
        assert_eq!(&got, expected, "case {name:?}, split {split:?}");
    }
}

#[test]
fn well_formed_responses() {
    let retry_503 = Want {
        retry_after: Some(RetryAfter::DelaySeconds(120)),
        ..want(503, b"", true)
    };
    let retry_429 = Want {
        retry_after: Some(RetryAfter::AtUnixSeconds(784_111_777)),
        ..want(429, b"slow", true)
    };
    let cases: Vec<(&str, &[u8], Vec<Want>)> = vec![
        ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", vec![want(200, b"hello", true)]),
        ("content-length zero", b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", vec![want(202, b"", true)]),
        ("no reason phrase", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", vec![want(200, b"", true)]),
        (
            "chunked with extensions and trailers",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7 ; a=\"b\"\r\n, world\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
            vec![want(200, b"hello, world", true)],
        ),
        (
            "chunked uppercase hex, leading zeros",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n00A\r\n0123456789\r\n000\r\n\r\n",
            vec![want(200, b"0123456789", true)],
        ),
        (
            "gzip then chunked is chunk-framed",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            vec![want(200, b"ab", true)],
        ),
        (
            "transfer-encoding split over two fields",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            vec![want(200, b"a", true)],
        ),
        ("close-delimited", b"HTTP/1.1 200 OK\r\n\r\nuntil the end", vec![want(200, b"until the end", false)]),
        ("close-delimited empty", b"HTTP/1.1 500 Oops\r\n\r\n", vec![want(500, b"", false)]),
        (
            "non-chunked transfer coding runs to close",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz",
            vec![want(200, b"zzz", false)],
        ),
        ("http/1.0 closes", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", vec![want(200, b"ok", false)]),
        (
            "http/1.0 keep-alive",
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
            vec![want(200, b"ok", true)],
        ),
        (
            "connection close",
            b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 2\r\n\r\nok",
            vec![want(200, b"ok", false)],
        ),
        (
            "100 continue skipped",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            vec![want(201, b"x", true)],
        ),
        (
            "103 early hints skipped",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            vec![want(200, b"", true)],
        ),
        (
            "204 and 304 have no body",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
            vec![want(204, b"", true), want(304, b"", true), want(200, b"z", true)],
        ),
        (
            "pipelined content-length, chunked, close-delimited",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\nHTTP/1.1 410 Gone\r\n\r\nc",
            vec![want(200, b"a", true), want(404, b"b", true), want(410, b"c", false)],
        ),
        ("retry-after seconds", b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n", vec![retry_503]),
        (
            "retry-after date",
            b"HTTP/1.1 429 Too Many\r\nRetry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 4\r\n\r\nslow",
            vec![retry_429],
        ),
        (
            "retry-after malformed is absent",
            b"HTTP/1.1 503 Busy\r\nRetry-After: soon\r\nContent-Length: 0\r\n\r\n",
            vec![want(503, b"", true)],
        ),
        (
            "repeated equal content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
            vec![want(200, b"abc", true)],
        ),
        (
            "bare LF line endings in head",
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
            vec![want(200, b"ok", true)],
        ),
        (
            "body bytes that look like a head",
            b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nHTTP/1.1 500 X\r\n\r\n",
            vec![want(200, b"HTTP/1.1 500 X\r\n\r\n", true)],
        ),
        (
            "stray blank lines before a status line are skipped",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            vec![want(200, b"", true), want(201, b"", true)],
        ),
        ("http/1.1 999", b"HTTP/1.1 999 Custom\r\nContent-Length: 0\r\n\r\n", vec![want(999, b"", true)]),
    ];
    for (name, wire, expected) in cases {
        check(name, wire, Limits::default(), &[], &Ok(expected));
    }
}

#[test]
fn head_responses_have_no_body() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    check(
        "HEAD, HEAD, GET",
        wire,
        Limits::default(),
        &[true, true, false],
        &Ok(vec![
            want(200, b"", true),
            want(200, b"", true),
            want(200, b"ok", true),
        ]),
    );
}

#[test]
fn malformed_responses() {
    use HttpError::*;
    let cases: Vec<(&str, &[u8], HttpError)> = vec![
        (
            "conflicting content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            ConflictingContentLength,
        ),
        (
            "conflicting in a list",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
            ConflictingContentLength,
        ),
        (
            "content-length letters",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            InvalidContentLength,
        ),
        (
            "content-length negative",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            InvalidContentLength,
        ),
        (
            "content-length plus",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            InvalidContentLength,
        ),
        (
            "content-length empty",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            InvalidContentLength,
        ),
        (
            "content-length inner space",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            InvalidContentLength,
        ),
        (
            "content-length overflow",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            InvalidContentLength,
        ),
        (
            "cl and te",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ContentLengthWithTransferEncoding,
        ),
        (
            "te and cl",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            ContentLengthWithTransferEncoding,
        ),
        (
            "chunked twice",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "te in http/1.0",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "empty te",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "101",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            UnexpectedSwitchingProtocols,
        ),
        (
            "status below 100",
            b"HTTP/1.1 099 Low\r\n\r\n",
            InvalidStatus(99),
        ),
        (
            "not http",
            b"HTTX/1.1 200 OK\r\n\r\n",
            MalformedHead("invalid HTTP version"),
        ),
        (
            "http/2 status line",
            b"HTTP/2 200 OK\r\n\r\n",
            MalformedHead("invalid HTTP version"),
        ),
        (
            "status letters",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            MalformedHead("invalid status"),
        ),
        (
            "nul in header value",
            b"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n",
            MalformedHead("invalid header value"),
        ),
        (
            "space before colon",
            b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
            MalformedHead("invalid header name"),
        ),
        (
            "obsolete line folding",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            MalformedHead("invalid header name"),
        ),
        (
            "chunk size not hex",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            MalformedChunk("missing chunk size"),
        ),
        (
            "chunk size bare LF",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n",
            MalformedChunk("chunk-size line must end in CRLF"),
        ),
        (
            "chunk data too long",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
            MalformedChunk("chunk data not followed by CRLF"),
        ),
        (
            "chunk data missing LF",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\rx",
            MalformedChunk("chunk data not followed by CRLF"),
        ),
        (
            "chunk size overflow",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
            MalformedChunk("chunk size overflows"),
        ),
        (
            "bad trailer",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n\r\n",
            MalformedTrailer,
        ),
        (
            "eof in head",
            b"HTTP/1.1 200 OK\r\nContent-Len",
            UnexpectedEof("in response head"),
        ),
        (
            "eof in content-length body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            UnexpectedEof("in response body"),
        ),
        (
            "eof in chunked body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            UnexpectedEof("in response body"),
        ),
        (
            "eof before trailers end",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            UnexpectedEof("in response body"),
        ),
        (
            "eof after 100 continue",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            UnexpectedEof("in response head"),
        ),
    ];
    for (name, wire, error) in cases {
        check(name, wire, Limits::default(), &[], &Err(error));
    }
}

#[test]
fn errors_are_sticky_until_reset() {
    let mut parser = herald_http::ResponseParser::new(Limits::default());
    let error = parser
        .feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
        .unwrap_err();
    assert_eq!(error, HttpError::InvalidContentLength);
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(parser.feed(ok), Err(HttpError::InvalidContentLength));
    assert_eq!(parser.feed_eof(), Err(HttpError::InvalidContentLength));
    parser.reset();
    let (n, response) = parser.feed(ok).unwrap();
    assert_eq!((n, response.map(|r| r.status)), (ok.len(), Some(200)));
}

#[test]
fn response_accessors() {
    let wire = b"HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nx-request-id: def\r\nContent-Length: 4\r\n\r\nbody";
    let limits = Limits {
        body_captured_bytes_max: 2,
        ..Limits::default()
    };
    let responses = parse_responses(wire, support::Split::Whole, limits, &[]).unwrap();
    let r = &responses[0];
    assert_eq!(r.header("X-REQUEST-ID"), Some(&b"abc"[..]));
    assert_eq!(r.header("missing"), None);
    assert_eq!(r.headers.len(), 3);
    assert_eq!(r.version_minor, 1);
    assert!(r.body_truncated());
    assert_eq!(r.body, b"bo");
}

fn head_with_headers(count: usize, pad_to: Option<usize>) -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..count {
        wire.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    wire.extend_from_slice(b"Content-Length: 0\r\n");
    if let Some(total) = pad_to {
        let fixed = wire.len() + "X-Pad: \r\n\r\n".len();
        wire.extend_from_slice(b"X-Pad: ");
        wire.extend(std::iter::repeat_n(b'p', total - fixed));
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

#[test]
fn head_bytes_max() {
    let limits = Limits {
        head_bytes_max: 512,
        ..Limits::default()
    };
    let exact = head_with_headers(0, Some(512));
    assert_eq!(exact.len(), 512);
    check(
        "head at limit",
        &exact,
        limits,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    let over = head_with_headers(0, Some(513));
    check(
        "head over limit",
        &over,
        limits,
        &[],
        &Err(HttpError::HeadTooLarge {
            head_bytes_max: 512,
        }),
    );
    // A peer that never ends its head is cut off at the limit, not buffered forever.
    let endless = vec![b'a'; 4096];
    check(
        "endless head",
        &endless,
        limits,
        &[],
        &Err(HttpError::HeadTooLarge {
            head_bytes_max: 512,
        }),
    );
    let blank_lines = b"\r\n".repeat(300);
    check(
        "endless blank lines",
        &blank_lines,
        limits,
        &[],
        &Err(HttpError::HeadTooLarge {
            head_bytes_max: 512,
        }),
    );
}

#[test]
fn header_count_max() {
    let limits = Limits {
        header_count_max: 10,
        ..Limits::default()
    };
    // Content-Length is the tenth field.
    check(
        "at limit",
        &head_with_headers(9, None),
        limits,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    check(
        "over limit",
        &head_with_headers(10, None),
        limits,
        &[],
        &Err(HttpError::TooManyHeaders {
            header_count_max: 10,
        }),
    );
    let defaults = Limits::default();
    check(
        "default at limit",
        &head_with_headers(99, None),
        defaults,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    check(
        "default over limit",
        &head_with_headers(100, None),
        defaults,
        &[],
        &Err(HttpError::TooManyHeaders {
            header_count_max: 100,
        }),
    );
    // Limits above the inline slot count use the heap path.
    let large = Limits {
        header_count_max: 150,
        head_bytes_max: 64 * 1024,
        ..Limits::default()
    };
    check(
        "large at limit",
        &head_with_headers(149, None),
        large,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    check(
        "large over limit",
        &head_with_headers(150, None),
        large,
        &[],
        &Err(HttpError::TooManyHeaders {
            header_count_max: 150,
        }),
    );
}

#[test]
fn body_captured_bytes_max() {
    let limits = Limits {
        body_captured_bytes_max: 4,
        ..Limits::default()
    };
    let truncated = |status, total, keep_alive| Want {
        body: b"0123".to_vec(),
        body_bytes_total: total,
        ..want(status, b"", keep_alive)
    };
    check(
        "content-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n0123",
        limits,
        &[],
        &Ok(vec![truncated(200, 10, true), want(200, b"0123", true)]),
    );
    check(
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n012\r\n3\r\n345\r\n0\r\n\r\n",
        limits,
        &[],
        &Ok(vec![truncated(200, 6, true)]),
    );
    check(
        "close-delimited",
        b"HTTP/1.1 200 OK\r\n\r\n0123456",
        limits,
        &[],
        &Ok(vec![truncated(200, 7, false)]),
    );
}

#[test]
fn body_bytes_max() {
    let limits = Limits {
        body_bytes_max: 8,
        ..Limits::default()
    };
    let too_large = |status| HttpError::BodyTooLarge {
        body_bytes_max: 8,
        status: Some(status),
    };
    check(
        "length at limit",
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n01234567",
        limits,
        &[],
        &Ok(vec![want(200, b"01234567", true)]),
    );
    check(
        "length over limit",
        b"HTTP/1.1 502 Bad\r\nContent-Length: 9\r\n\r\n",
        limits,
        &[],
        &Err(too_large(502)),
    );
    check(
        "chunked at limit",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n4\r\n4567\r\n0\r\n\r\n",
        limits,
        &[],
        &Ok(vec![want(200, b"01234567", true)]),
    );
    check(
        "chunked over limit, announced",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n5\r\n",
        limits,
        &[],
        &Err(too_large(200)),
    );
    check(
        "close-delimited at limit",
        b"HTTP/1.1 200 OK\r\n\r\n01234567",
        limits,
        &[],
        &Ok(vec![want(200, b"01234567", false)]),
    );
    check(
        "close-delimited over limit",
        b"HTTP/1.1 500 X\r\n\r\n012345678",
        limits,
        &[],
        &Err(too_large(500)),
    );
    check(
        "head response ignores announced length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        limits,
        &[true],
        &Ok(vec![want(200, b"", true)]),
    );
}

/// A response whose body is over `body_bytes_max` is an error, and the response itself
/// (status, headers, the body captured so far) stays to be taken, so that a client can
/// still classify it by its status; its connection cannot be reused.
#[test]
fn an_oversized_response_can_still_be_read_by_its_status() {
    let limits = Limits {
        body_bytes_max: 8,
        body_captured_bytes_max: 4,
        ..Limits::default()
    };
    let cases: [(&str, &[u8], u16, &[u8]); 3] = [
        (
            "announced",
            b"HTTP/1.1 410 Gone\r\nRetry-After: 5\r\nContent-Length: 9\r\n\r\n",
            410,
            b"",
        ),
        (
            "chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n5\r\n45678\r\n",
            200,
            b"0123",
        ),
        // The bytes that passed the limit came in one piece: none of them was kept.
        (
            "close-delimited",
            b"HTTP/1.1 503 X\r\nRetry-After: 5\r\n\r\n012345678",
            503,
            b"",
        ),
    ];
    for (what, input, status, body) in cases {
        let mut parser = herald_http::ResponseParser::new(limits);
        let error = parser.feed(input).unwrap_err();
        assert!(
            matches!(error, HttpError::BodyTooLarge { .. }),
            "{what}: {error:?}"
        );
        let response = parser.take_oversized().unwrap_or_else(|| panic!("{what}"));
        assert_eq!(response.status, status, "{what}");
        assert_eq!(response.body, body, "{what}");
        assert!(!response.keep_alive, "{what}");
        if status != 200 {
            assert_eq!(
                response.retry_after,
                Some(RetryAfter::DelaySeconds(5)),
                "{what}"
            );
        }
        assert!(parser.take_oversized().is_none(), "{what}: taken once");
    }
    // Any other error leaves nothing to take.
    let mut parser = herald_http::ResponseParser::new(limits);
    assert!(parser.feed(b"HTTP/1.1 abc\r\n\r\n").is_err());
    assert!(parser.take_oversized().is_none());
}

/// A chunked body's framing is bounded apart from its data: one-byte chunks behind long
/// extensions cannot make a body within `body_bytes_max` cost a thousand times its size
/// on the wire.
#[test]
fn chunk_framing_bytes_max() {
    let limits = Limits {
        body_bytes_max: 1024,
        ..Limits::default()
    };
    let framing_max = limits.chunk_framing_bytes_max();
    assert_eq!(framing_max, 1024 + Limits::CHUNK_FRAMING_SLACK_BYTES);
    // Chunks of one byte, each behind a chunk-size line of 1,000 bytes (within
    // chunk_line_bytes_max): `chunks` bytes of data, ~1,002 bytes of framing each.
    let wire = |chunks: usize| {
        let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..chunks {
            w.extend_from_slice(b"1;");
            w.extend(std::iter::repeat_n(b'e', 996));
            w.extend_from_slice(b"\r\nx\r\n");
        }
        w.extend_from_slice(b"0\r\n\r\n");
        w
    };
    // 60 chunks: ~60 KiB of framing for 60 bytes, within the bound.
    check(
        "framing within the bound",
        &wire(60),
        limits,
        &[],
        &Ok(vec![want(200, &[b'x'; 60], true)]),
    );
    // 100 chunks: 100 bytes of data, well within body_bytes_max, but ~100 KiB framing.
    check(
        "framing over the bound",
        &wire(100),
        limits,
        &[],
        &Err(HttpError::ChunkFramingTooLarge {
            chunk_framing_bytes_max: framing_max,
        }),
    );
}

#[test]
fn chunk_line_bytes_max() {
    let limits = Limits {
        chunk_line_bytes_max: 16,
        ..Limits::default()
    };
    // "1;" + 11 bytes + CRLF = 15, "1;" + 12 + CRLF = 16, + 13 = 17.
    let wire = |ext_len: usize| {
        let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        w.extend(std::iter::repeat_n(b'e', ext_len));
        w.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        w
    };
    check(
        "at limit",
        &wire(12),
        limits,
        &[],
        &Ok(vec![want(200, b"x", true)]),
    );
    check(
        "over limit",
        &wire(13),
        limits,
        &[],
        &Err(HttpError::ChunkLineTooLong {
            chunk_line_bytes_max: 16,
        }),
    );
    let endless = [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        &[b'0'; 100],
    ]
    .concat();
    check(
        "endless zeros",
        &endless,
        limits,
        &[],
        &Err(HttpError::ChunkLineTooLong {
            chunk_line_bytes_max: 16,
        }),
    );
}

#[test]
fn trailer_limits() {
    let limits = Limits {
        head_bytes_max: 64,
        header_count_max: 3,
        ..Limits::default()
    };
    let wire = |trailers: &[&str]| {
        let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for t in trailers {
            w.extend_from_slice(t.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
        w
    };
    check(
        "three trailers",
        &wire(&["A: 1", "B: 2", "C: 3"]),
        limits,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    check(
        "four trailers",
        &wire(&["A: 1", "B: 2", "C: 3", "D: 4"]),
        limits,
        &[],
        &Err(HttpError::TooManyHeaders {
            header_count_max: 3,
        }),
    );
    // 60 bytes of trailer lines + the final CRLF = 62 <= 64.
    let long = format!("X: {}", "v".repeat(55));
    check(
        "trailers within limit",
        &wire(&[&long]),
        limits,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    let longer = format!("X: {}", "v".repeat(60));
    check(
        "trailers over limit",
        &wire(&[&longer]),
        limits,
        &[],
        &Err(HttpError::TrailersTooLarge { head_bytes_max: 64 }),
    );
}

#[test]
fn informational_count_max() {
    let limits = Limits {
        informational_count_max: 2,
        ..Limits::default()
    };
    let wire = |n: usize| {
        let mut w = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(n);
        w.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        w
    };
    check(
        "at limit",
        &wire(2),
        limits,
        &[],
        &Ok(vec![want(200, b"", true)]),
    );
    check(
        "over limit",
        &wire(3),
        limits,
        &[],
        &Err(HttpError::TooManyInformational {
            informational_count_max: 2,
        }),
    );
    // The count is per response, not per connection.
    let two_responses = [wire(2), wire(2)].concat();
    check(
        "per response",
        &two_responses,
        limits,
        &[],
        &Ok(vec![want(200, b"", true), want(200, b"", true)]),
    );
}

#[test]
fn feed_reports_bytes_of_first_response_only() {
    let mut parser = herald_http::ResponseParser::new(Limits::default());
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
    let second = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let wire = [&first[..], &second[..]].concat();
    assert!(parser.is_idle());
    let (n, response) = parser.feed(&wire).unwrap();
    assert_eq!(n, first.len());
    assert_eq!(response.unwrap().status, 200);
    assert!(parser.is_idle());
    let (n, response) = parser.feed(&wire[first.len()..]).unwrap();
    assert_eq!(n, second.len());
    assert_eq!(response.unwrap().status, 201);
    let (n, response) = parser.feed(b"HTTP/1.1").unwrap();
    assert_eq!((n, response), (8, None));
    assert!(!parser.is_idle());
}
