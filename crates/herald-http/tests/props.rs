//! Property tests: generated messages survive any chunking; arbitrary bytes never panic
//! and parse the same however they are split.

mod support;

use herald_http::{encode_request, parse_retry_after, Limits, RetryAfter, Url};
use proptest::prelude::*;
use support::{parse_requests, parse_responses, Split};

#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunk sizes to cut the body into (cycled), with or without extensions/trailers.
    Chunked {
        sizes: Vec<usize>,
        decorate: bool,
    },
    Close,
}

#[derive(Debug, Clone)]
struct GenResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    close: bool,
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}".prop_filter("not a framing header", |name| {
        !["content-length", "transfer-encoding", "connection", "host"]
            .contains(&name.to_ascii_lowercase().as_str())
    })
}

fn header_value() -> impl Strategy<Value = String> {
    // Leading/trailing whitespace is not part of a field value, so keep it out.
    "[!-~]([ -~]{0,30}[!-~])?"
}

fn gen_response(last: bool) -> impl Strategy<Value = GenResponse> {
    let framing = if last {
        prop_oneof![
            Just(Framing::Length),
            (prop::collection::vec(1usize..40, 1..4), any::<bool>())
                .prop_map(|(sizes, decorate)| Framing::Chunked { sizes, decorate }),
            Just(Framing::Close),
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(Framing::Length),
            (prop::collection::vec(1usize..40, 1..4), any::<bool>())
                .prop_map(|(sizes, decorate)| Framing::Chunked { sizes, decorate }),
        ]
        .boxed()
    };
    (
        prop_oneof![200u16..600, Just(204u16), Just(304u16)],
        prop::collection::vec((token(), header_value()), 0..6),
        prop::collection::vec(any::<u8>(), 0..200),
        framing,
        any::<bool>(),
    )
        .prop_map(move |(status, headers, body, framing, close)| {
            let bodyless = status == 204 || status == 304;
            GenResponse {
                status,
                headers,
                body: if bodyless { Vec::new() } else { body },
                // A 204/304 never has body framing on the wire (RFC 9110 §15.3.5, §15.4.5).
                framing: if bodyless { Framing::Length } else { framing },
                close: close && last,
            }
        })
}

fn encode(r: &GenResponse, wire: &mut Vec<u8>) {
    wire.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\n", r.status).as_bytes());
    for (name, value) in &r.headers {
        wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if r.close {
        wire.extend_from_slice(b"Connection: close\r\n");
    }
    match &r.framing {
        Framing::Length => {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
            wire.extend_from_slice(&r.body);
        }
        Framing::Chunked { sizes, decorate } => {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &r.body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                let ext = if *decorate { ";name=\"v\"" } else { "" };
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n");
            if *decorate {
                wire.extend_from_slice(b"X-Checksum: 1234\r\n");
            }
            wire.extend_from_slice(b"\r\n");
        }
        Framing::Close => {
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&r.body);
        }
    }
}

fn gen_pipeline() -> impl Strategy<Value = Vec<GenResponse>> {
    (
        prop::collection::vec(gen_response(false), 0..3),
        gen_response(true),
    )
        .prop_map(|(mut v, last)| {
            v.push(last);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_responses_parse_under_any_split(responses in gen_pipeline(), seed in any::<u64>()) {
        let mut wire = Vec::new();
        for r in &responses {
            encode(r, &mut wire);
        }
        for split in [Split::Whole, Split::Random(seed)] {
            let parsed = parse_responses(&wire, split, Limits::default(), &[]).unwrap();
            prop_assert_eq!(parsed.len(), responses.len());
            for (got, want) in parsed.iter().zip(&responses) {
                prop_assert_eq!(got.status, want.status);
                prop_assert_eq!(&got.body, &want.body);
                prop_assert_eq!(got.body_bytes_total, want.body.len() as u64);
                let bodyless = want.status == 204 || want.status == 304;
                let close_delimited = matches!(want.framing, Framing::Close) && !bodyless;
                prop_assert_eq!(got.keep_alive, !want.close && !close_delimited);
                for (name, value) in &want.headers {
                    prop_assert!(got.headers.iter().any(|(n, v)| n == name && v == value.as_bytes()));
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_parse_the_same_under_any_split(
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"HTTP/1.1 200 OK\r\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]),
        ],
        body in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'1'), Just(b':'), Just(b';'), Just(b' '), any::<u8>()],
            0..256,
        ),
        seed in any::<u64>(),
    ) {
        let wire = [prefix, &body[..]].concat();
        let limits = Limits { head_bytes_max: 128, body_bytes_max: 64, body_captured_bytes_max: 16, chunk_line_bytes_max: 16, ..Limits::default() };
        let whole = parse_responses(&wire, Split::Whole, limits, &[]);
        let bytewise = parse_responses(&wire, Split::ByteAtATime, limits, &[]);
        let random = parse_responses(&wire, Split::Random(seed), limits, &[]);
        prop_assert_eq!(&whole, &bytewise);
        prop_assert_eq!(&whole, &random);
        let requests_whole = parse_requests(&wire, Split::Whole, limits);
        let requests_random = parse_requests(&wire, Split::Random(seed), limits);
        prop_assert_eq!(requests_whole, requests_random);
    }

    #[test]
    fn encoded_requests_parse_back(
        method in prop_oneof![Just("POST"), Just("PUT"), Just("GET"), Just("PATCH")],
        target in "/[a-z0-9/?=&%-]{0,40}",
        headers in prop::collection::vec((token(), header_value()), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..300),
        seed in any::<u64>(),
    ) {
        let header_refs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let mut wire = Vec::new();
        encode_request(&mut wire, method, &target, "example.com:8080", &header_refs, &body).unwrap();
        encode_request(&mut wire, method, &target, "example.com:8080", &header_refs, &body).unwrap();
        let requests = parse_requests(&wire, Split::Random(seed), Limits::default()).unwrap();
        prop_assert_eq!(requests.len(), 2);
        for request in &requests {
            prop_assert_eq!(&request.method, method);
            prop_assert_eq!(&request.target, &target);
            prop_assert_eq!(&request.body, &body);
            prop_assert_eq!(request.header("host"), Some(&b"example.com:8080"[..]));
            prop_assert!(request.keep_alive);
            for (name, value) in &headers {
                prop_assert!(request.headers.iter().any(|(n, v)| n == name && v == value.as_bytes()));
            }
        }
    }

    #[test]
    fn url_parse_never_panics_and_display_round_trips(s in "(https?://)?[ -~\u{e9}]{0,60}") {
        if let Ok(url) = Url::parse(&s) {
            prop_assert!(url.target.starts_with('/'));
            prop_assert!(url.port != 0);
            let again = Url::parse(&url.to_string()).unwrap();
            prop_assert_eq!(again, url);
        }
    }

    #[test]
    fn url_from_parts_round_trips(
        https in any::<bool>(),
        labels in prop::collection::vec("[a-z]([a-z0-9-]{0,9}[a-z0-9])?", 1..4),
        port in prop::option::of(1u16..),
        path in "(/[a-zA-Z0-9._~-]{0,8}){0,4}",
        query in prop::option::of("[a-z0-9=&]{0,10}"),
    ) {
        let host = labels.join(".");
        let scheme = if https { "https" } else { "http" };
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let query_text = query.as_ref().map(|q| format!("?{q}")).unwrap_or_default();
        let url = Url::parse(&format!("{scheme}://{host}{port_text}{path}{query_text}#frag")).unwrap();
        prop_assert_eq!(&url.host, &host);
        prop_assert_eq!(url.port, port.unwrap_or(if https { 443 } else { 80 }));
        let want_target = format!("{}{}", if path.is_empty() { "/" } else { &path }, query_text);
        prop_assert_eq!(&url.target, &want_target);
    }

    #[test]
    fn retry_after_delta_seconds(n in any::<u64>()) {
        prop_assert_eq!(parse_retry_after(n.to_string().as_bytes()), Some(RetryAfter::DelaySeconds(n)));
    }

    #[test]
    fn retry_after_http_date_round_trips(t in 0i64..253_402_300_800) {
        let imf = imf_fixdate(t);
        prop_assert_eq!(parse_retry_after(imf.as_bytes()), Some(RetryAfter::AtUnixSeconds(t)), "{}", imf);
    }

    #[test]
    fn retry_after_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = parse_retry_after(&bytes);
    }
}

/// Independent formatter for the round-trip test (civil-from-days, H. Hinnant).
fn imf_fixdate(t: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
