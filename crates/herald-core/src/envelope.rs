//! The event envelope sent to receivers, in the platform's published format:
//!
//! ```json
//! {"id":"evt_1","type":"order.created","api_version":"2024-06-01",
//!  "created_at":"2026-11-22T07:08:15.123Z","tenant_id":"acme","location_id":null,
//!  "data":{…}}
//! ```
//!
//! The envelope is encoded once, when the event is accepted; those exact bytes are
//! journaled, signed and sent to every matching webhook (the bytes signed are the bytes
//! sent). `data` is copied verbatim from the publisher after one pass checks its syntax
//! (strict JSON, UTF-8), a nesting limit ([`DATA_DEPTH_MAX`]), that every `\u` escape is a
//! Unicode character and that every number fits a double (`crate::json_check`).

use crate::ids::{EventId, EventType, LocationId, TenantId};

/// Largest encoded envelope: 256 KiB. Bounds journal frames, memory per pending event and
/// what receivers must accept.
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Deepest nesting of arrays and objects in `data`. Real events nest a handful of levels;
/// receivers' JSON parsers stop somewhere (serde_json at 128 levels, others near 1,000),
/// and an event a receiver cannot parse fails on every retry. 64 leaves the envelope's
/// own level and a wide margin under the strictest common parser.
pub const DATA_DEPTH_MAX: usize = 64;
/// Longest `api_version`.
pub const API_VERSION_BYTES_MAX: usize = 32;
/// `api_version` used when the publisher gives none.
pub const API_VERSION_DEFAULT: &str = "2024-06-01";

/// Longest idempotency key ([`Idempotency::key`]): room for any UUID or request id a
/// publisher is likely to use, while bounding what every remembered key costs.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// A publisher's idempotency key and the fingerprint of the event it was used with. While
/// the key is remembered ([`crate::DispatcherConfig::idempotency_window_ms`]), publishing
/// again with the same key and fingerprint is answered with the first event, and with a
/// different fingerprint is refused ([`crate::AcceptError::IdempotencyConflict`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Idempotency {
    /// 1..=[`IDEMPOTENCY_KEY_BYTES_MAX`] bytes of printable ASCII (`' '..='~'`).
    pub key: String,
    /// A digest of what makes two publishes "the same event"; computed by the caller
    /// (the `herald` crate hashes type, location, api version, data and a given id).
    pub fingerprint: [u8; 16],
}

impl Idempotency {
    /// Whether `key` is 1..=[`IDEMPOTENCY_KEY_BYTES_MAX`] bytes of printable ASCII.
    pub fn key_is_valid(key: &str) -> bool {
        (1..=IDEMPOTENCY_KEY_BYTES_MAX).contains(&key.len())
            && key.bytes().all(|b| (b' '..=b'~').contains(&b))
    }
}

/// An event as published, before it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Stable id (receivers de-duplicate on it).
    pub id: EventId,
    /// Event type, matched against webhook filters.
    pub event_type: EventType,
    /// Payload schema version: 1..=[`API_VERSION_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`.
    pub api_version: String,
    /// Creation time (Unix ms), rendered as RFC 3339 UTC with milliseconds.
    pub created_at_ms: u64,
    /// Optional location within the tenant.
    pub location_id: Option<LocationId>,
    /// The `data` member: any JSON value, as raw bytes.
    pub data: Vec<u8>,
    /// The publisher's idempotency key, if any.
    pub idempotency: Option<Idempotency>,
}

/// An event that cannot be accepted (caller's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// `data` is not a single valid JSON value.
    #[error("event data is not valid JSON: {reason}")]
    Data {
        /// The JSON parser's message.
        reason: String,
    },
    /// Bad `api_version`.
    #[error("api_version must be 1..={max} bytes of letters, digits, '.', '_', '-'")]
    ApiVersion {
        /// [`API_VERSION_BYTES_MAX`].
        max: usize,
    },
    /// The envelope would exceed [`BODY_BYTES_MAX`].
    #[error("event envelope is {bytes} bytes; at most {max} are allowed")]
    TooLarge {
        /// Size of the envelope (or a lower bound of it).
        bytes: usize,
        /// [`BODY_BYTES_MAX`].
        max: usize,
    },
}

/// Encodes the envelope of `event` for `tenant`.
pub fn encode_envelope(tenant: &TenantId, event: &NewEvent) -> Result<Vec<u8>, EnvelopeError> {
    let v = event.api_version.as_bytes();
    if v.is_empty()
        || v.len() > API_VERSION_BYTES_MAX
        || !v
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(EnvelopeError::ApiVersion {
            max: API_VERSION_BYTES_MAX,
        });
    }
    if event.data.len() > BODY_BYTES_MAX {
        return Err(EnvelopeError::TooLarge {
            bytes: event.data.len(),
            max: BODY_BYTES_MAX,
        });
    }
    crate::json_check::check_data(&event.data).map_err(|reason| EnvelopeError::Data { reason })?;
    // Every string but `data` is an id of a restricted ASCII charset, so it needs no JSON
    // escaping; the quotes are written directly.
    let mut out = Vec::with_capacity(event.data.len() + 256);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(event.id.as_str().as_bytes());
    out.extend_from_slice(b"\",\"type\":\"");
    out.extend_from_slice(event.event_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"api_version\":\"");
    out.extend_from_slice(v);
    out.extend_from_slice(b"\",\"created_at\":\"");
    write_rfc3339_ms(&mut out, event.created_at_ms);
    out.extend_from_slice(b"\",\"tenant_id\":\"");
    out.extend_from_slice(tenant.as_str().as_bytes());
    out.extend_from_slice(b"\",\"location_id\":");
    match &event.location_id {
        Some(location) => {
            out.push(b'"');
            out.extend_from_slice(location.as_str().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&event.data);
    out.push(b'}');
    if out.len() > BODY_BYTES_MAX {
        return Err(EnvelopeError::TooLarge {
            bytes: out.len(),
            max: BODY_BYTES_MAX,
        });
    }
    Ok(out)
}

/// The `location_id` of an envelope written by [`encode_envelope`], or `None` when it is
/// `null` (or the bytes are not such an envelope). The envelope's members before `data`
/// are ids of restricted charsets, so the first `"location_id":` is the envelope's own
/// and never one inside `data`.
pub fn envelope_location_id(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"location_id\":\"";
    const DATA: &[u8] = b",\"data\":";
    let data_at = memchr::memmem::find(body, DATA)?;
    let head = &body[..data_at];
    let at = memchr::memmem::find(head, KEY)? + KEY.len();
    let end = memchr::memchr(b'"', &head[at..])? + at;
    std::str::from_utf8(&head[at..end]).ok()
}

/// Renders Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_ms(&mut out, unix_ms);
    String::from_utf8(out).expect("digits and punctuation are ASCII")
}

/// [`rfc3339_ms`] appended to `out`, without a `String` of its own (once per accepted
/// event). Years past 9999 take as many digits as they need, as `{:04}` would.
fn write_rfc3339_ms(out: &mut Vec<u8>, unix_ms: u64) {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        out.extend_from_slice(year.to_string().as_bytes());
    } else {
        out.extend_from_slice(&digits::<4>(year));
    }
    // `-MM-DDTHH:MM:SS.mmmZ`, made on the stack and appended at once.
    let mut rest = *b"-00-00T00:00:00.000Z";
    rest[1..3].copy_from_slice(&digits::<2>(month));
    rest[4..6].copy_from_slice(&digits::<2>(day));
    rest[7..9].copy_from_slice(&digits::<2>(ms_of_day / 3_600_000));
    rest[10..12].copy_from_slice(&digits::<2>(ms_of_day / 60_000 % 60));
    rest[13..15].copy_from_slice(&digits::<2>(ms_of_day / 1000 % 60));
    rest[16..19].copy_from_slice(&digits::<3>(ms_of_day % 1000));
    out.extend_from_slice(&rest);
}

/// `value` (below `10^WIDTH`) as exactly `WIDTH` decimal digits, zero-padded.
fn digits<const WIDTH: usize>(mut value: u64) -> [u8; WIDTH] {
    let mut text = [b'0'; WIDTH];
    for digit in text.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    text
}

/// Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_location_id_is_read_back_from_the_envelope_not_from_data() {
        let tenant = TenantId::parse("acme").unwrap();
        let mut event = NewEvent {
            id: EventId::parse("evt_1").unwrap(),
            event_type: EventType::parse("order.created").unwrap(),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: 0,
            location_id: None,
            data: br#"{"location_id":"decoy","data":{"x":1}}"#.to_vec(),
            idempotency: None,
        };
        let body = encode_envelope(&tenant, &event).unwrap();
        assert_eq!(envelope_location_id(&body), None);
        event.location_id = Some(LocationId::parse("loc_1").unwrap());
        let body = encode_envelope(&tenant, &event).unwrap();
        assert_eq!(envelope_location_id(&body), Some("loc_1"));
        assert_eq!(envelope_location_id(b"not an envelope"), None);
    }
    use super::*;

    fn event(data: &[u8]) -> NewEvent {
        NewEvent {
            id: EventId::parse("evt_1").unwrap(),
            event_type: EventType::parse("order.created").unwrap(),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: 1_700_000_000_123,
            location_id: None,
            data: data.to_vec(),
            idempotency: None,
        }
    }

    #[test]
    fn encodes_the_published_format() {
        let tenant = TenantId::parse("acme").unwrap();
        let body = encode_envelope(&tenant, &event(br#"{"total": 12.5}"#)).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"id":"evt_1","type":"order.created","api_version":"2024-06-01","created_at":"2023-11-14T22:13:20.123Z","tenant_id":"acme","location_id":null,"data":{"total": 12.5}}"#
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["data"]["total"], 12.5);

        let mut with_location = event(b"[1,2]");
        with_location.location_id = Some(LocationId::parse("store-9").unwrap());
        let body = encode_envelope(&tenant, &with_location).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["location_id"], "store-9");
        assert_eq!(value["data"], serde_json::json!([1, 2]));
    }

    #[test]
    fn rejects_bad_input() {
        let tenant = TenantId::parse("acme").unwrap();
        for data in [&b""[..], b"{", b"{} {}", b"nul", b"{\"a\":1,}"] {
            assert!(
                matches!(
                    encode_envelope(&tenant, &event(data)),
                    Err(EnvelopeError::Data { .. })
                ),
                "{data:?}"
            );
        }
        for version in ["", "a b", "\"", &"v".repeat(API_VERSION_BYTES_MAX + 1)] {
            let mut e = event(b"{}");
            e.api_version = version.to_string();
            assert!(matches!(
                encode_envelope(&tenant, &e),
                Err(EnvelopeError::ApiVersion { .. })
            ));
        }
    }

    #[test]
    fn data_nesting_surrogates_and_number_range() {
        let tenant = TenantId::parse("acme").unwrap();
        let nested = |depth: usize, open: &str, close: &str| {
            format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
        };
        // (data, accepted)
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (nested(DATA_DEPTH_MAX, "[", "]"), true),
            (nested(DATA_DEPTH_MAX + 1, "[", "]"), false),
            (nested(DATA_DEPTH_MAX, "{\"a\":", "}"), true),
            (nested(DATA_DEPTH_MAX + 1, "{\"a\":", "}"), false),
            (nested(10_000, "[", "]"), false),
            // Brackets inside strings do not count.
            (
                format!("{{\"s\":\"{}\"}}", "[{".repeat(1000)).into_bytes(),
                true,
            ),
            // Wide but shallow.
            (format!("[{}0]", "[],".repeat(10_000)).into_bytes(), true),
            (br#"{"s":"\ud83d\ude00"}"#.to_vec(), true),
            (br#"{"s":"\u00e9\u0000\uFFFF"}"#.to_vec(), true),
            (br#"{"s":"\\ud800"}"#.to_vec(), true),
            (br#"{"s":"\ud800"}"#.to_vec(), false),
            (br#"{"s":"\ud800x"}"#.to_vec(), false),
            (br#"{"s":"\ud800\n"}"#.to_vec(), false),
            (br#"{"s":"\ud800\ud800"}"#.to_vec(), false),
            (br#"{"s":"\udc00"}"#.to_vec(), false),
            (br#"{"\udfff":1}"#.to_vec(), false),
            (br#"["\"\\", "\ud800"]"#.to_vec(), false),
            // Numbers: within a double's range (precision may go), or refused.
            (
                br#"[0, -0, 1.5e308, -1.7e308, 1e-400, 123456789012345678901234567890]"#.to_vec(),
                true,
            ),
            (br#"{"n":"1e400"}"#.to_vec(), true),
            (br#"{"n":1e400}"#.to_vec(), false),
            (br#"[-1E+400]"#.to_vec(), false),
            (format!("[{}]", "9".repeat(400)).into_bytes(), false),
            (format!("[1e{}]", "9".repeat(10_000)).into_bytes(), false),
        ];
        for (data, accepted) in cases {
            let result = encode_envelope(&tenant, &event(&data));
            let shown = String::from_utf8_lossy(&data[..data.len().min(60)]).into_owned();
            match (accepted, result) {
                (true, Ok(body)) => {
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|e| {
                        panic!("{shown}: accepted but serde_json refuses it: {e}")
                    });
                }
                (false, Err(EnvelopeError::Data { .. })) => {}
                (accepted, other) => panic!("{shown}: want accepted={accepted}, got {other:?}"),
            }
        }
    }

    #[test]
    fn body_limit() {
        let tenant = TenantId::parse("acme").unwrap();
        let overhead = encode_envelope(&tenant, &event(b"\"\"")).unwrap().len();
        let fits = format!("\"{}\"", "x".repeat(BODY_BYTES_MAX - overhead));
        let body = encode_envelope(&tenant, &event(fits.as_bytes())).unwrap();
        assert_eq!(body.len(), BODY_BYTES_MAX);
        let over = format!("\"{}\"", "x".repeat(BODY_BYTES_MAX - overhead + 1));
        assert!(matches!(
            encode_envelope(&tenant, &event(over.as_bytes())),
            Err(EnvelopeError::TooLarge { .. })
        ));
        let huge = vec![b' '; BODY_BYTES_MAX + 1];
        assert!(matches!(
            encode_envelope(&tenant, &event(&huge)),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn timestamps() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(rfc3339_ms(*ms), *text);
        }
        // The digits written by hand agree with `format!`, past year 9999 too.
        let formatted = |unix_ms: u64| {
            let (year, month, day) = civil_from_days(unix_ms / 86_400_000);
            let d = unix_ms % 86_400_000;
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                d / 3_600_000,
                d / 60_000 % 60,
                d / 1000 % 60,
                d % 1000
            )
        };
        let mut ms = 1u64;
        while ms < u64::MAX / 3 {
            for at in [
                ms,
                ms + 86_399_999,
                253_402_300_799_999,
                253_402_300_800_000,
            ] {
                assert_eq!(rfc3339_ms(at), formatted(at), "{at}");
            }
            ms = ms * 3 + 7;
        }
    }
}
