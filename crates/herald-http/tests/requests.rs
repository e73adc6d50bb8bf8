//! Request parser (server side): every case fed whole, byte-at-a-time and in random splits.

mod support;

use herald_http::{encode_response, HttpError, Limits, Request, ResponseParser};
use support::{parse_requests, splits};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    method: String,
    target: String,
    body: Vec<u8>,
    body_bytes_total: u64,
    keep_alive: bool,
}

fn want(method: &str, target: &str, body: &[u8], keep_alive: bool) -> Want {
    Want {
        method: method.to_owned(),
        target: target.to_owned(),
        body: body.to_vec(),
        body_bytes_total: body.len() as u64,
        keep_alive,
    }
}

fn summary(r: &Request) -> Want {
    Want {
        method: r.method.clone(),
        target: r.target.clone(),
        body: r.body.clone(),
        body_bytes_total: r.body_bytes_total,
        keep_alive: r.keep_alive,
    }
}

fn check(name: &str, wire: &[u8], limits: Limits, expected: &Result<Vec<Want>, HttpError>) {
    for split in splits() {
        let got = parse_requests(wire, split, limits)
            .map(|requests| requests.iter().map(summary).collect::<Vec<_>>());
        assert_eq!(&got, expected, "case {name:?}, split {split:?}");
    }
}

#[test]
fn well_formed_requests() {
    let cases: Vec<(&str, &[u8], Vec<Want>)> = vec![
        (
            "post with content-length",
            b"POST /v1/webhooks HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            vec![want("POST", "/v1/webhooks", b"{}", true)],
        ),
        ("get without body", b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n", vec![want("GET", "/health", b"", true)]),
        (
            "chunked body with trailer",
            b"PUT /x?y=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
            vec![want("PUT", "/x?y=1", b"abcde", true)],
        ),
        ("connection close", b"DELETE /w/1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", vec![want("DELETE", "/w/1", b"", false)]),
        ("http/1.0 without host", b"GET / HTTP/1.0\r\n\r\n", vec![want("GET", "/", b"", false)]),
        ("http/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", vec![want("GET", "/", b"", true)]),
        (
            "pipelined",
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nxGET /c HTTP/1.1\r\nHost: h\r\n\r\n",
            vec![want("GET", "/a", b"", true), want("POST", "/b", b"x", true), want("GET", "/c", b"", true)],
        ),
        (
            "leading blank lines are skipped",
            b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            vec![want("GET", "/", b"", true)],
        ),
    ];
    for (name, wire, expected) in cases {
        check(name, wire, Limits::default(), &Ok(expected));
    }
}

#[test]
fn malformed_requests() {
    use HttpError::*;
    let cases: Vec<(&str, &[u8], HttpError)> = vec![
        ("missing host", b"GET / HTTP/1.1\r\n\r\n", InvalidHost),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", InvalidHost),
        ("two hosts in 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", InvalidHost),
        ("gzip only", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", UnsupportedTransferEncoding),
        ("chunked not last", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", UnsupportedTransferEncoding),
        ("cl and te (smuggling)", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ContentLengthWithTransferEncoding),
        ("conflicting cl", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", ConflictingContentLength),
        ("bad method", b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", MalformedHead("invalid token")),
        ("bad version", b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", MalformedHead("invalid HTTP version")),
        ("eof in head", b"GET / HTTP/1.1\r\nHo", UnexpectedEof("in request head")),
        ("eof in body", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", UnexpectedEof("in request body")),
    ];
    for (name, wire, error) in cases {
        check(name, wire, Limits::default(), &Err(error));
    }
}

#[test]
fn request_limits() {
    let limits = Limits {
        head_bytes_max: 64,
        header_count_max: 2,
        body_captured_bytes_max: 3,
        body_bytes_max: 5,
        ..Limits::default()
    };
    check(
        "head too large",
        &[&b"GET /"[..], &[b'a'; 64], b" HTTP/1.1\r\n\r\n"].concat(),
        limits,
        &Err(HttpError::HeadTooLarge { head_bytes_max: 64 }),
    );
    check(
        "too many headers",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n",
        limits,
        &Err(HttpError::TooManyHeaders {
            header_count_max: 2,
        }),
    );
    check(
        "captured prefix, counted total",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde",
        limits,
        &Ok(vec![Want {
            body: b"abc".to_vec(),
            body_bytes_total: 5,
            ..want("POST", "/", b"", true)
        }]),
    );
    check(
        "announced body too large",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n",
        limits,
        &Err(HttpError::BodyTooLarge {
            body_bytes_max: 5,
            status: None,
        }),
    );
    check(
        "chunked body too large",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\n",
        limits,
        &Err(HttpError::BodyTooLarge {
            body_bytes_max: 5,
            status: None,
        }),
    );
}

#[test]
fn request_accessors_and_reset() {
    let wire = b"POST / HTTP/1.1\r\nHost: h\r\nX-Id: 7\r\nContent-Length: 3\r\n\r\nabc";
    let limits = Limits {
        body_captured_bytes_max: 1,
        ..Limits::default()
    };
    let requests = parse_requests(wire, support::Split::Whole, limits).unwrap();
    let r = &requests[0];
    assert_eq!(r.header("x-id"), Some(&b"7"[..]));
    assert_eq!(r.version_minor, 1);
    assert!(r.body_truncated());

    let mut parser = herald_http::RequestParser::new(Limits::default());
    assert_eq!(
        parser.feed(b"GET / HTTP/1.1\r\n\r\n"),
        Err(HttpError::InvalidHost)
    );
    assert_eq!(
        parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        Err(HttpError::InvalidHost)
    );
    parser.reset();
    assert!(parser.is_idle());
    let (_, request) = parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(request.unwrap().target, "/");
}

#[test]
fn server_response_round_trips_through_client_parser() {
    let mut wire = Vec::new();
    encode_response(
        &mut wire,
        200,
        &[("Content-Type", b"application/json")],
        b"{\"ok\":true}",
    )
    .unwrap();
    encode_response(&mut wire, 204, &[], b"").unwrap();
    encode_response(&mut wire, 429, &[("Retry-After", b"30")], b"").unwrap();
    let mut parser = ResponseParser::new(Limits::default());
    let mut statuses = Vec::new();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let (n, response) = parser.feed(rest).unwrap();
        rest = &rest[n..];
        let response = response.expect("each encoded response is complete");
        statuses.push((response.status, response.body, response.retry_after));
    }
    assert_eq!(
        statuses,
        vec![
            (200, b"{\"ok\":true}".to_vec(), None),
            (204, Vec::new(), None),
            (
                429,
                Vec::new(),
                Some(herald_http::RetryAfter::DelaySeconds(30))
            ),
        ]
    );
}

#[test]
fn expect_continue() {
    let mut parser = herald_http::RequestParser::new(Limits::default());
    assert!(!parser.expects_continue());
    let head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(parser.feed(head), Ok((head.len(), None)));
    assert!(parser.expects_continue());
    assert_eq!(parser.feed(b"a"), Ok((1, None)));
    assert!(!parser.expects_continue(), "body has started");
    let (_, request) = parser.feed(b"bc").unwrap();
    assert_eq!(request.unwrap().body, b"abc");
    assert!(!parser.expects_continue());

    let no_expect = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    parser.feed(no_expect).unwrap();
    assert!(!parser.expects_continue());
}

#[test]
fn server_status_for_errors() {
    let cases = [
        (HttpError::HeadTooLarge { head_bytes_max: 1 }, 431, true),
        (
            HttpError::TooManyHeaders {
                header_count_max: 1,
            },
            431,
            true,
        ),
        (
            HttpError::BodyTooLarge {
                body_bytes_max: 1,
                status: None,
            },
            413,
            true,
        ),
        (
            HttpError::ChunkLineTooLong {
                chunk_line_bytes_max: 1,
            },
            400,
            true,
        ),
        (HttpError::InvalidHost, 400, false),
        (HttpError::ContentLengthWithTransferEncoding, 400, false),
    ];
    for (error, status, limit) in cases {
        assert_eq!(error.server_status(), status, "{error}");
        assert_eq!(error.is_limit_exceeded(), limit, "{error}");
    }
}
