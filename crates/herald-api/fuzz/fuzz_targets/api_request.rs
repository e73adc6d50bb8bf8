//! The API's request handling, bytes in, answer out: the input is sent as it is on one
//! connection to [`herald_api::Offline`] (the server's own connection handler, routes,
//! engine and key store, over an in-memory stream).
//!
//! Oracle: no panic; every answer parses as HTTP/1.1 (in order, `HEAD` answers without a
//! body); no answer is a 500 (the API maps every error it knows to a 4xx or a 503).
//!
//! One application serves every input of a run (state carries over, as on a real
//! server). It has the admin key [`ADMIN_KEY`], a tenant `acme` and three inbound
//! sources (`payments`: Stripe-Signature, `orders`: Standard Webhooks, `shop`: hex
//! HMAC), so that seeds can reach every route. Webhooks created by the fuzzer are
//! delivered like the server's: run it without a network (`unshare -rn`, see README.md).
#![no_main]

use std::sync::OnceLock;

use herald_api::{Config, Offline};
use herald_http::{Limits, RequestParser, ResponseParser};
use libfuzzer_sys::fuzz_target;

/// The admin key the seeds use.
const ADMIN_KEY: &str = "hra_fuzz_admin_key_0123456789abcdefghijklmnop";

struct Fixture {
    api: Offline,
    // Kept for the run's life: the data directory.
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let toml = format!(
            r#"
data_dir = "{dir}"
shards = 1
[retry]
schedule_s = [0.2, 0.4]
[inbound.payments]
scheme = "stripe"
secret = "whsec_fuzzstripesecret"
tenant_path = "data.object.metadata.tenant_id"
[inbound.payments.types]
"payment_intent.succeeded" = "payment.captured"
[inbound.orders]
scheme = "standard"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
tenant = "acme"
[inbound.orders.types]
"order.placed" = "order.created"
[inbound.shop]
scheme = "hmac"
secret = "fuzz-hmac-secret"
tenant = "acme"
"#,
            dir = dir.path().display()
        );
        let config = Config::from_toml(&toml, "fuzz").expect("fuzz config");
        let api = Offline::start(config, Some(ADMIN_KEY.to_string())).expect("offline API");
        let body = r#"{"id":"acme"}"#;
        let create = format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: f\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = api.exchange(create.as_bytes());
        assert!(
            answer.starts_with(b"HTTP/1.1 201 "),
            "tenant not created: {}",
            String::from_utf8_lossy(&answer)
        );
        Fixture { api, _dir: dir }
    })
}

/// The methods of the requests in `input`, in order, as the server's parser reads them.
fn methods(input: &[u8]) -> Vec<String> {
    let mut parser = RequestParser::new(Limits {
        body_captured_bytes_max: 1 << 20,
        ..Limits::default()
    });
    let mut methods = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        match parser.feed(rest) {
            Ok((used, request)) => {
                rest = &rest[used..];
                match request {
                    Some(request) => methods.push(request.method),
                    None if used == 0 => break,
                    None => {}
                }
            }
            Err(_) => break,
        }
    }
    methods
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let answer = fixture.api.exchange(data);
    let methods = methods(data);
    let mut parser = ResponseParser::new(Limits {
        body_captured_bytes_max: 64,
        body_bytes_max: u64::MAX,
        ..Limits::default()
    });
    let mut rest = &answer[..];
    let mut count = 0usize;
    parser.set_request_is_head(methods.first().is_some_and(|m| m == "HEAD"));
    while !rest.is_empty() {
        let (used, response) = parser.feed(rest).unwrap_or_else(|error| {
            panic!(
                "answer {count} does not parse ({error}): {}",
                String::from_utf8_lossy(&answer)
            )
        });
        rest = &rest[used..];
        match response {
            Some(response) => {
                assert_ne!(
                    response.status,
                    500,
                    "a 500: {}",
                    String::from_utf8_lossy(&answer)
                );
                count += 1;
                parser.set_request_is_head(methods.get(count).is_some_and(|m| m == "HEAD"));
            }
            None => assert!(rest.is_empty(), "the parser stopped short of the answer"),
        }
    }
    // Every answer is whole: the connection ended at an answer's end.
    let last = parser.feed_eof().unwrap_or_else(|error| {
        panic!(
            "the answer ends mid-message ({error}): {}",
            String::from_utf8_lossy(&answer)
        )
    });
    assert!(
        last.is_none(),
        "an answer without a length: {}",
        String::from_utf8_lossy(&answer)
    );
});
