//! Codec micro-benchmarks: the per-delivery work herald-http does on the hot path.
//!
//! Run: `cargo bench -p herald-http --bench codec -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use herald_http::{encode_request, Limits, RequestParser, ResponseParser, Url};

/// A signed Standard Webhooks delivery: 1 KiB JSON body, eight headers.
fn signed_webhook() -> (Url, Vec<u8>) {
    let url = Url::parse("https://hooks.example.com/webhooks/orders?tenant=t_42").unwrap();
    let mut body = br#"{"type":"order.created","data":{"id":"ord_123","items":["#.to_vec();
    while body.len() < 1000 {
        body.extend_from_slice(br#"{"sku":"SKU-0001","qty":1},"#);
    }
    body.extend_from_slice(b"{}]}}");
    body.truncate(1024);
    (url, body)
}

const SIGNED_HEADERS: [(&str, &[u8]); 8] = [
        ("content-type", b"application/json"),
        ("user-agent", b"herald/0.1"),
        ("webhook-id", b"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        ("webhook-timestamp", b"1795331055"),
        (
            "webhook-signature",
            b"v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,Ot6dA0PNs7ypnCSsNa4jDU5dTvGNqkkDvuwNnkp9TxM=",
        ),
        ("x-herald-tenant", b"t_42"),
        ("x-herald-attempt", b"1"),
        ("accept", b"*/*"),
    ];

fn encode_signed_webhook(c: &mut Criterion) {
    let (url, body) = signed_webhook();
    let host = url.host_header();
    let headers = SIGNED_HEADERS;
    let mut out = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("signed_webhook_1KiB_8_headers", |b| {
        b.iter(|| {
            out.clear();
            encode_request(
                &mut out,
                "POST",
                black_box(&url.target),
                black_box(&host),
                black_box(&headers),
                black_box(&body),
            )
            .unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

/// A typical receiver acknowledgement, parsed by a warm (reused) parser.
fn parse_small_response(c: &mut Criterion) {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nDate: Sun, 22 Nov 2026 07:04:15 GMT\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: keep-alive\r\nServer: nginx\r\n\r\n{\"received\":true}";
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, wire) in [
        ("small_200_content_length", ok),
        ("small_200_chunked", chunked),
    ] {
        let mut parser = ResponseParser::new(Limits::default());
        group.bench_function(name, |b| {
            b.iter(|| {
                let (n, response) = parser.feed(black_box(wire)).unwrap();
                assert_eq!(n, wire.len());
                black_box(response.unwrap().status)
            })
        });
    }
    group.finish();
}

/// A signed delivery as a receiver (the bench sink, `herald serve`'s ingest) parses it,
/// by a warm parser: the encoded request of `encode_signed_webhook`.
fn parse_signed_request(c: &mut Criterion) {
    let (url, body) = signed_webhook();
    let mut wire = Vec::new();
    encode_request(
        &mut wire,
        "POST",
        &url.target,
        &url.host_header(),
        &SIGNED_HEADERS,
        &body,
    )
    .unwrap();
    let mut parser = RequestParser::new(Limits::default());
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("signed_webhook_request_1KiB_8_headers", |b| {
        b.iter(|| {
            let (n, request) = parser.feed(black_box(&wire)).unwrap();
            assert_eq!(n, wire.len());
            black_box(request.unwrap().body.len())
        })
    });
    group.finish();
}

fn parse_url(c: &mut Criterion) {
    c.bench_function("url/parse", |b| {
        b.iter(|| {
            Url::parse(black_box(
                "https://Hooks.Example.com:8443/webhooks/orders?tenant=t_42",
            ))
            .unwrap()
        })
    });
}

criterion_group!(
    benches,
    encode_signed_webhook,
    parse_small_response,
    parse_signed_request,
    parse_url
);
criterion_main!(benches);
