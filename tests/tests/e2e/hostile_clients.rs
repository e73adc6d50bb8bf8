//! Hostile clients of the API, table-driven: well over a hundred malformed, oversized,
//! ambiguous, slow or wrongly typed requests, each sent on its own connection as raw
//! bytes (some in pieces with pauses). Each must get the right 4xx or a closed
//! connection within a bound, never a 5xx and never a hang; afterwards the server is
//! still up and serves.
//!
//! `listener.rs` has the listener's defences one by one and `errors.rs` every error
//! class of the routes; this table is the breadth: request lines, header syntax,
//! framing and smuggling, chunked encoding, JSON bodies (invalid UTF-8, deep nesting,
//! 10,000 keys, huge numbers), content types, slowloris heads and bodies.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use herald_e2e::raw::read_until;
use herald_e2e::*;

/// The listener limits of this test's server: short timeouts so the slow cases end
/// quickly, and the default 256 KiB body limit.
const CONFIG: &str = "[limits]\n\
    header_read_timeout_ms = 800\n\
    body_read_timeout_ms = 1200\n\
    idle_timeout_ms = 3000\n";

/// Far above every timeout in [`CONFIG`]: reaching it means the server hung.
const BOUND: Duration = Duration::from_secs(15);

/// One piece of what a client does.
#[derive(Debug, Clone)]
enum Step {
    Send(Vec<u8>),
    Pause(Duration),
}

/// One hostile request and what may come back.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    steps: Vec<Step>,
    /// Statuses that are right for it.
    statuses: &'static [u16],
    /// Whether closing the connection without an answer is right too.
    closed_ok: bool,
}

/// Fills `{host}`, `{auth}` (tenant key) and `{admin}` in a request template.
struct Fill {
    host: String,
    auth: String,
    admin: String,
}

impl Fill {
    fn text(&self, template: &str) -> Vec<u8> {
        template
            .replace("{host}", &self.host)
            .replace("{auth}", &self.auth)
            .replace("{admin}", &self.admin)
            .into_bytes()
    }

    /// A POST of `body` (as given, bytes) to `path` with `content_type`, framed by an
    /// exact `Content-Length`.
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut wire = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        wire
    }
}

/// A POST of an event to `/v1/events` with the framing headers given as is.
fn framed(fill: &Fill, framing: &str, body: &[u8]) -> Vec<u8> {
    let mut wire = fill.text(&format!(
        "POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    ));
    wire.extend_from_slice(body);
    wire
}

fn case(
    name: impl Into<String>,
    bytes: Vec<u8>,
    statuses: &'static [u16],
    closed_ok: bool,
) -> Case {
    Case {
        name: name.into(),
        steps: vec![Step::Send(bytes)],
        statuses,
        closed_ok,
    }
}

fn slow(name: &str, steps: Vec<Step>, statuses: &'static [u16]) -> Case {
    Case {
        name: name.to_string(),
        steps,
        statuses,
        closed_ok: true,
    }
}

/// Runs a case on a fresh connection; `Err` says what was wrong.
fn run(addr: std::net::SocketAddr, case: &Case) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_write_timeout(Some(BOUND))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for step in &case.steps {
        match step {
            // A refused write still lets us read what the server answered.
            Step::Send(bytes) => {
                if stream.write_all(bytes).is_err() {
                    break;
                }
            }
            Step::Pause(pause) => std::thread::sleep(*pause),
        }
    }
    let outcome = read_until(&mut stream, 1, BOUND.saturating_sub(started.elapsed()));
    match outcome.responses.first() {
        Some(answer) if answer.status >= 500 => Err(format!(
            "a {} ({})",
            answer.status,
            answer.text().chars().take(200).collect::<String>()
        )),
        Some(answer) if case.statuses.contains(&answer.status) => Ok(format!("{}", answer.status)),
        Some(answer) => Err(format!(
            "want one of {:?}{}; got {} {}",
            case.statuses,
            if case.closed_ok { " or a close" } else { "" },
            answer.status,
            answer.text().chars().take(200).collect::<String>()
        )),
        None if outcome.closed && case.closed_ok => Ok("closed".to_string()),
        None if outcome.closed => Err(format!(
            "closed without an answer; want one of {:?}",
            case.statuses
        )),
        None => Err(format!("no answer and not closed within {BOUND:?} (hung)")),
    }
}

fn cases(fill: &Fill) -> Vec<Case> {
    let ms = Duration::from_millis;
    let t = |s: &str| fill.text(s);
    let event = br#"{"type":"order.created","data":{"n":1}}"#;
    let mut cases = vec![
        // ---- request lines
        case("garbage line", t("HELLO\r\n\r\n"), &[400], true),
        case("method only", t("GET\r\n\r\n"), &[400], true),
        case("no version", t("GET /healthz\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("HTTP/0.9", t("GET /healthz\r\n\r\n"), &[400], true),
        case("HTTP/2.0 version", t("GET /healthz HTTP/2.0\r\nHost: {host}\r\n\r\n"), &[400, 505], true),
        case("HTTP/1.2 version", t("GET /healthz HTTP/1.2\r\nHost: {host}\r\n\r\n"), &[400, 505], true),
        case("HTTP/9.9 version", t("GET /healthz HTTP/9.9\r\nHost: {host}\r\n\r\n"), &[400, 505], true),
        case("lower-case version", t("GET /healthz http/1.1\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("extra token", t("GET /healthz HTTP/1.1 extra\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("two spaces", t("GET  /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("tab separator", t("GET\t/healthz\tHTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("leading space", t(" GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("lower-case method", t("get /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400, 404, 405], true),
        case("unknown method", t("BREW /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400, 404, 405], true),
        case("method of 10,000 letters", t(&format!("{} /healthz HTTP/1.1\r\nHost: {{host}}\r\n\r\n", "A".repeat(10_000))), &[400, 405, 431], true),
        case("target without slash", t("GET healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400], true),
        case("absolute-form target", t("GET http://evil.example/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400, 404], true),
        case("asterisk target", t("OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[400, 404, 405], true),
        case("CONNECT authority", t("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"), &[400, 404, 405], true),
        case("target with a NUL", b"GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &[400], true),
        case("target with raw UTF-8", t("GET /v1/webhooks/wh_\u{e9}t\u{e9} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400, 404], true),
        case("target with invalid UTF-8", [b"GET /v1/webhooks/\xff\xfe HTTP/1.1\r\nHost: x\r\n".as_slice(), t("Authorization: Bearer {auth}\r\n\r\n").as_slice()].concat(), &[400, 404], true),
        case("target of 20,000 bytes", t(&format!("GET /healthz?{} HTTP/1.1\r\nHost: {{host}}\r\n\r\n", "a".repeat(20_000))), &[414, 431], true),
        case("dot segments", t("GET /v1/../v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400, 404], true),
        case("encoded slash in an id", t("GET /v1/webhooks/wh_a%2F..%2F HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400, 404], true),
        case("bad percent escape", t("GET /v1/webhooks?limit=%G1 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400], true),
        case("percent-encoded NUL in a query", t("GET /v1/webhooks?cursor=%00 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400], true),
        // A whole number above the most is served as the most (100), however large.
        case("huge limit", t("GET /v1/webhooks?limit=99999999999999999999999 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[200], true),
        case("negative limit", t("GET /v1/webhooks?limit=-1 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[400], true),
        case("10,000 query parameters", t(&format!("GET /v1/webhooks?{} HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\n\r\n", "a=1&".repeat(3_000))), &[200, 400, 414, 431], true),
        case("bare LF line endings", t("GET /healthz HTTP/1.1\nHost: {host}\n\n"), &[200, 400], true),
        case("bare CR line endings", t("GET /healthz HTTP/1.1\rHost: {host}\r\r"), &[400, 408], true),
        case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[400, 505], true),
        case("TLS ClientHello on plain HTTP", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), &[400, 408], true),
        case("binary noise", (0u8..=255).cycle().take(4096).collect(), &[400, 408, 431], true),
        // ---- header syntax
        case("header without colon", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nNoColon\r\n\r\n"), &[400], true),
        case("space before colon", t("GET /healthz HTTP/1.1\r\nHost : {host}\r\n\r\n"), &[400], true),
        case("empty header name", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\n: value\r\n\r\n"), &[400], true),
        case("header name with a space", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX Bad: 1\r\n\r\n"), &[400], true),
        case("header name with UTF-8", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-\u{e9}: 1\r\n\r\n"), &[400], true),
        case("obs-fold continuation", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n  b\r\n\r\n"), &[400], true),
        case("NUL in a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n".to_vec(), &[400], true),
        case("CR inside a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n".to_vec(), &[400], true),
        case("201 headers", t(&format!("GET /healthz HTTP/1.1\r\nHost: {{host}}\r\n{}\r\n", "X-Many: 1\r\n".repeat(201))), &[431], true),
        case("one 20,000-byte header", t(&format!("GET /healthz HTTP/1.1\r\nHost: {{host}}\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000))), &[431], true),
        case("head of 17 KiB in small headers", t(&format!("GET /healthz HTTP/1.1\r\nHost: {{host}}\r\n{}\r\n", "X-Pad: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n".repeat(80).repeat(3))), &[431], true),
        case("invalid UTF-8 in a header value", [b"GET /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\n".as_slice(), b"\r\n"].concat(), &[400, 401], true),
        case("Authorization of 10,000 bytes", t(&format!("GET /v1/webhooks HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {}\r\n\r\n", "k".repeat(10_000))), &[401], true),
        case("two Authorization headers", t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nAuthorization: Bearer {admin}\r\n\r\n"), &[401], true),
        case("Authorization without a scheme", t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n"), &[401], true),
        case("lower-case bearer", t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: bearer {auth}\r\n\r\n"), &[200, 401], true),
        case("Herald-Tenant with a space", t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\nHerald-Tenant: a b\r\n\r\n"), &[400], true),
        case("Herald-Tenant with invalid UTF-8", [t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\n").as_slice(), b"Herald-Tenant: \xff\r\n\r\n"].concat(), &[400], true),
        case("Herald-Tenant with invalid UTF-8 on a tenant key", [t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n").as_slice(), b"Herald-Tenant: \xc3\x97\xc3\xb8\xc2\x9b\xff\r\n\r\n"].concat(), &[400], true),
        case("empty cursor is the first page", t("GET /v1/webhooks?limit=20&cursor= HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\r\n"), &[200], false),
        case("two Herald-Tenant headers", t("GET /v1/webhooks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\nHerald-Tenant: tenant_clients\r\nHerald-Tenant: tenant_other\r\n\r\n"), &[400], true),
        case("no Host header", t("GET /healthz HTTP/1.1\r\n\r\n"), &[200, 400], true),
        case("two Host headers", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n"), &[200, 400], true),
        case("Expect: something else", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nExpect: 200-ok\r\n\r\n"), &[200, 417], true),
        case("Upgrade: websocket", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), &[200, 400], true),
        case("Upgrade: h2c", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"), &[200, 400], true),
        // ---- framing and smuggling
        case("CL and TE together", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400], true),
        case("TE and CL together", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), &[400], true),
        case("two different Content-Lengths", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"), &[400], true),
        case("two equal Content-Lengths (RFC 9112 lets them count as one)", framed(fill, &format!("Content-Length: {n}\r\nContent-Length: {n}", n = event.len()), event), &[202], false),
        case("Content-Length list that agrees", framed(fill, &format!("Content-Length: {n}, {n}", n = event.len()), event), &[202], false),
        case("Content-Length list that disagrees", framed(fill, &format!("Content-Length: {}, 3", event.len()), event), &[400], true),
        case("negative Content-Length", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: -1\r\n\r\n"), &[400], true),
        case("Content-Length with a plus", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: +2\r\n\r\n{}"), &[400], true),
        case("hex Content-Length", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: 0x2\r\n\r\n{}"), &[400], true),
        case("Content-Length with inner space", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: 1 0\r\n\r\n0123456789"), &[400], true),
        case("empty Content-Length", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: \r\n\r\n"), &[400], true),
        case("Content-Length past u64", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: 99999999999999999999999\r\n\r\n"), &[400, 413], true),
        case("Content-Length of 1 TB", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{"), &[413], true),
        case("Content-Length over the limit with Expect", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 300000\r\nExpect: 100-continue\r\n\r\n"), &[413], true),
        case("TE: identity", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: identity\r\n\r\n{}"), &[400, 411], true),
        case("TE: gzip, chunked", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), &[400], true),
        case("TE: chunked, identity", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"), &[400], true),
        case("TE: xchunked", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), &[400], true),
        case("two TE headers", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400], true),
        case("TE with a vertical tab", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"), &[400], true),
        case("chunk size not hex", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"), &[400], true),
        case("chunk size overflowing u64", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"), &[400, 413], true),
        case("negative chunk size", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n"), &[400], true),
        case("chunk extension of 2 KiB", t(&format!("POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2;{}\r\n{{}}\r\n0\r\n\r\n", "e".repeat(2048))), &[400], true),
        case("chunk longer than its size", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}}}}\r\n0\r\n\r\n"), &[400], true),
        case("chunk without CRLF after data", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}0\r\n\r\n"), &[400], true),
        case("chunks summing past the body limit", t(&format!("POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", format!("8000\r\n{}\r\n", "a".repeat(0x8000)).repeat(9))), &[413], true),
        case("trailer of 20 KiB", t(&format!("POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\nX-Trailer: {}\r\n\r\n", "t".repeat(20_000))), &[400, 431], true),
        case("GET with a body then a smuggled request", t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 40\r\n\r\nGET /v1/tenants HTTP/1.1\r\nHost: {host}\r\n\r\n"), &[200, 400], true),
        // Answered on the head, the body never read (reading it would end in a 408 once
        // body_read_timeout_ms passed): a client without a key has nothing buffered.
        case("a body owed to no route", t("POST /v1/nothing HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"), &[404], true),
        case("a body owed to a malformed target", t("POST /v1/%zz HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"), &[400, 404], true),
        case("a body owed to the stream's handshake", t("GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 200000\r\n\r\n{"), &[400], true),
        case("a body owed to an inbound source not configured", t("POST /v1/inbound/nope HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"), &[404], true),
        case("a body owed to a health check", t("GET /readyz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 200000\r\n\r\n{"), &[400], true),
        case("a body owed to the metrics by POST", t("POST /metrics HTTP/1.1\r\nHost: {host}\r\nContent-Length: 200000\r\n\r\n{"), &[405], true),
        case("a body owed without a key", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"), &[401], true),
        case("body shorter than Content-Length then EOF", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":"), &[400, 408], true),
        // ---- content types
        case("no Content-Type", t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Length: 2\r\n\r\n{}"), &[400, 415], true),
        case("text/plain", fill.post("/v1/events", "text/plain", event), &[415], false),
        case("application/xml", fill.post("/v1/events", "application/xml", b"<event/>"), &[415], false),
        case("multipart/form-data", fill.post("/v1/events", "multipart/form-data; boundary=x", b"--x--"), &[415], false),
        case("charset=utf-16", fill.post("/v1/events", "application/json; charset=utf-16", event), &[202, 400, 415], false),
        case("upper-case media type", fill.post("/v1/events", "APPLICATION/JSON", event), &[202, 415], false),
        case("json-patch media type", fill.post("/v1/events", "application/json-patch+json", event), &[202, 415], false),
        // ---- JSON bodies
        case("invalid UTF-8 in a string", fill.post("/v1/events", "application/json", b"{\"type\":\"order.created\",\"data\":{\"s\":\"\xff\xfe\"}}"), &[400], false),
        case("invalid UTF-8 in a key", fill.post("/v1/events", "application/json", b"{\"type\":\"order.created\",\"data\":{\"\xc3\x28\":1}}"), &[400], false),
        case("overlong UTF-8 NUL", fill.post("/v1/events", "application/json", b"{\"type\":\"order.created\",\"data\":{\"s\":\"\xc0\x80\"}}"), &[400], false),
        case("UTF-8 surrogate bytes", fill.post("/v1/events", "application/json", b"{\"type\":\"order.created\",\"data\":{\"s\":\"\xed\xa0\x80\"}}"), &[400], false),
        case("lone surrogate escape", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"s":"\ud800"}}"#), &[400], false),
        case("NUL escape in the type", fill.post("/v1/events", "application/json", br#"{"type":"order.\u0000created","data":{}}"#), &[400], false),
        case("raw control character in a string", fill.post("/v1/events", "application/json", b"{\"type\":\"order.created\",\"data\":{\"s\":\"a\x01b\"}}"), &[400], false),
        case("UTF-16 body", fill.post("/v1/events", "application/json", &"{\"type\":\"order.created\",\"data\":{}}".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>()), &[400], false),
        case("UTF-8 BOM", fill.post("/v1/events", "application/json", b"\xef\xbb\xbf{\"type\":\"order.created\",\"data\":{}}"), &[400], false),
        case("trailing garbage", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{}}x"#), &[400], false),
        case("two documents", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{}}{}"#), &[400], false),
        case("comments", fill.post("/v1/events", "application/json", b"/* hi */{\"type\":\"order.created\",\"data\":{}}"), &[400], false),
        case("single quotes", fill.post("/v1/events", "application/json", b"{'type':'order.created','data':{}}"), &[400], false),
        case("trailing comma", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{},}"#), &[400], false),
        case("NaN", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"n":NaN}}"#), &[400], false),
        case("Infinity", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"n":Infinity}}"#), &[400], false),
        case("leading zeros", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"n":007}}"#), &[400], false),
        case("duplicate type key", fill.post("/v1/events", "application/json", br#"{"type":"order.created","type":"order.paid","data":{}}"#), &[400], false),
        case("type as an object", fill.post("/v1/events", "application/json", br#"{"type":{"a":1},"data":{}}"#), &[400], false),
        case("type of 10,000 characters", fill.post("/v1/events", "application/json", format!("{{\"type\":\"{}\",\"data\":{{}}}}", "a".repeat(10_000)).as_bytes()), &[400], false),
        case("data nested 10,000 arrays deep", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes()), &[400], false),
        case("data nested 10,000 objects deep", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{}1{}}}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).as_bytes()), &[400], false),
        case("data nested 100,000 deep, unclosed", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{}", "[".repeat(100_000)).as_bytes()), &[400], false),
        case("10,000 keys in data", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{{{}\"end\":0}}}}", (0..10_000).map(|i| format!("\"k{i}\":{i},")).collect::<String>()).as_bytes()), &[202, 400, 413], false),
        case("10,000 keys in the webhook document", fill.post("/v1/webhooks", "application/json", format!("{{\"url\":\"http://127.0.0.1:1/x\",\"events\":[\"*\"],{}\"end\":0}}", (0..10_000).map(|i| format!("\"k{i}\":{i},")).collect::<String>()).as_bytes()), &[400], false),
        case("10,000 custom headers", fill.post("/v1/webhooks", "application/json", format!("{{\"url\":\"http://127.0.0.1:1/x\",\"events\":[\"*\"],\"headers\":{{{}\"X-End\":\"0\"}}}}", (0..10_000).map(|i| format!("\"X-H{i}\":\"v\",")).collect::<String>()).as_bytes()), &[400], false),
        case("10,000 event filters", fill.post("/v1/webhooks", "application/json", format!("{{\"url\":\"http://127.0.0.1:1/x\",\"events\":[{}\"a.b\"]}}", "\"order.*\",".repeat(10_000)).as_bytes()), &[400], false),
        case("huge integer in data", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{{\"n\":{}}}}}", "9".repeat(400)).as_bytes()), &[400], false),
        case("1e400 in data", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"n":1e400}}"#), &[400], false),
        case("-1e400 in data", fill.post("/v1/events", "application/json", br#"{"type":"order.created","data":{"n":-1e400}}"#), &[400], false),
        case("exponent of 100,000 digits", fill.post("/v1/events", "application/json", format!("{{\"type\":\"order.created\",\"data\":{{\"n\":1e{}}}}}", "9".repeat(100_000)).as_bytes()), &[400], false),
        case("timeout_ms past u64", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"timeout_ms":18446744073709551616}"#), &[400], false),
        case("timeout_ms negative", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"timeout_ms":-1}"#), &[400], false),
        case("timeout_ms fractional", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"timeout_ms":1.5}"#), &[400], false),
        case("timeout_ms of u64::MAX", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"timeout_ms":18446744073709551615}"#), &[400], false),
        case("max_in_flight past u32", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"max_in_flight":4294967296}"#), &[400], false),
        case("retry delay of 1e300 seconds", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"retry_schedule_s":[1e300]}"#), &[400], false),
        case("retry schedule of 10,000 delays", fill.post("/v1/webhooks", "application/json", format!("{{\"url\":\"http://127.0.0.1:1/x\",\"events\":[\"*\"],\"retry_schedule_s\":[{}1]}}", "1,".repeat(10_000)).as_bytes()), &[400], false),
        case("rate limit past u32", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"rate_limit_per_s":99999999999}"#), &[400], false),
        case("URL of 100,000 characters", fill.post("/v1/webhooks", "application/json", format!("{{\"url\":\"http://127.0.0.1:1/{}\",\"events\":[\"*\"]}}", "a".repeat(100_000)).as_bytes()), &[400], false),
        case("URL with CRLF", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x\r\nX-Injected: 1","events":["*"]}"#), &[400], false),
        case("header value with CRLF", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"headers":{"X-A":"v\r\nX-Injected: 1"}}"#), &[400], false),
        case("Host as a custom header", fill.post("/v1/webhooks", "application/json", br#"{"url":"http://127.0.0.1:1/x","events":["*"],"headers":{"Host":"evil.example"}}"#), &[400], false),
        case("batch of 10,000 events", fill.post("/v1/events/batch", "application/json", format!("{{\"events\":[{}{{\"type\":\"a.b\",\"data\":{{}}}}]}}", "{\"type\":\"a.b\",\"data\":{}},".repeat(9_999)).as_bytes()), &[400, 413], false),
        case("batch nested in a batch", fill.post("/v1/events/batch", "application/json", br#"{"events":[{"events":[{"type":"a.b","data":{}}]}]}"#), &[200, 207, 400], false),
        case("tenant id of 10,000 characters", {
            let body = format!("{{\"id\":\"{}\"}}", "t".repeat(10_000));
            let mut wire = t(&format!("POST /v1/tenants HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{admin}}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
            wire.extend_from_slice(body.as_bytes());
            wire
        }, &[400], false),
        case("since of a million digits", fill.post("/v1/webhooks/wh_nope/recover", "application/json", format!("{{\"since\":\"{}\"}}", "9".repeat(200_000)).as_bytes()), &[400, 404], false),
        case("Idempotency-Key of 10,000 bytes", {
            let mut wire = t(&format!("POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", "k".repeat(10_000), event.len()));
            wire.extend_from_slice(event);
            wire
        }, &[400], false),
        case("two Idempotency-Key headers", framed(fill, &format!("Idempotency-Key: k-1\r\nIdempotency-Key: k-2\r\nContent-Length: {}", event.len()), event), &[400], false),
        case("Idempotency-Key with invalid UTF-8", {
            let mut wire = t(&format!("POST /v1/events HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {{auth}}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", event.len()));
            wire.extend_from_slice(b"Idempotency-Key: \xff\xfe\r\n\r\n");
            wire.extend_from_slice(event);
            wire
        }, &[400], false),
    ];
    // ---- slowloris: heads and bodies that never finish in time
    let slow_head = t("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    cases.extend([
        slow("head stalls after the request line", vec![Step::Send(t("GET /healthz HTTP/1.1\r\n")), Step::Pause(ms(2000))], &[408]),
        slow("head trickles a header every 200 ms", {
            let mut steps = vec![Step::Send(slow_head.clone())];
            for i in 0..15 {
                steps.push(Step::Pause(ms(200)));
                steps.push(Step::Send(format!("X-Slow-{i}: 1\r\n").into_bytes()));
            }
            steps
        }, &[408]),
        slow("head one byte every 100 ms", {
            t("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: 0123456789\r\n\r\n")
                .into_iter()
                .flat_map(|b| [Step::Send(vec![b]), Step::Pause(ms(100))])
                .take(60)
                .collect()
        }, &[408]),
        slow("body stalls half-way", vec![
            Step::Send(t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"type\":")),
            Step::Pause(ms(2500)),
        ], &[408]),
        slow("body trickles one byte every 200 ms", {
            let mut steps = vec![Step::Send(t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"))];
            for _ in 0..15 {
                steps.push(Step::Pause(ms(200)));
                steps.push(Step::Send(b" ".to_vec()));
            }
            steps
        }, &[408]),
        slow("chunked body stalls between chunks", vec![
            Step::Send(t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")),
            Step::Pause(ms(2500)),
        ], &[408]),
        slow("Expect: 100-continue and no body", vec![
            Step::Send(t("POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")),
            Step::Pause(ms(2500)),
        ], &[100, 408]),
        slow("second pipelined head stalls", vec![
            Step::Send(t("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\nGET /healthz HTTP/1.1\r\n")),
            Step::Pause(ms(2000)),
        ], &[200]),
    ]);
    cases
}

#[test]
fn hostile_clients_get_a_4xx_or_a_close_never_a_5xx() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().config(CONFIG));
    let admin = server.admin();
    let created = admin
        .post("/v1/tenants", &serde_json::json!({"id": "tenant_clients"}))
        .expect(201);
    let auth = created["api_key"]
        .as_str()
        .expect("the new tenant's api_key")
        .to_string();
    let tenant = admin.key(&auth);
    create_tenant(&admin, "tenant_other");
    let fill = Fill {
        host: server.addr().to_string(),
        auth,
        admin: ADMIN_KEY.to_string(),
    };
    let cases = cases(&fill);
    assert!(cases.len() >= 100, "{} cases", cases.len());
    // Run in parallel batches: the slow cases wait on the server's timeouts.
    let mut results: Vec<(String, Result<String, String>)> = Vec::new();
    let addr = server.addr();
    for batch in cases.chunks(16) {
        let handles: Vec<_> = batch
            .iter()
            .cloned()
            .map(|case| std::thread::spawn(move || (case.name.clone(), run(addr, &case))))
            .collect();
        for handle in handles {
            results.push(handle.join().expect("a case thread"));
        }
        // The server is up after every batch.
        server.client().get("/healthz").expect(200);
    }
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests answered wrongly:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    // Still serving real work: a publish goes through.
    publish(
        &tenant,
        &serde_json::json!({"type": "order.created", "data": {"after": "hostile clients"}}),
    );
    let mut tally = std::collections::BTreeMap::new();
    for (_, result) in &results {
        if let Ok(outcome) = result {
            *tally.entry(outcome.clone()).or_insert(0) += 1;
        }
    }
    println!(
        "hostile clients: {} requests, answers {tally:?}, 0 5xx, server up",
        results.len()
    );
    if std::env::var_os("HERALD_E2E_VERBOSE").is_some() {
        for (name, result) in &results {
            println!("  {name}: {result:?}");
        }
    }
}
