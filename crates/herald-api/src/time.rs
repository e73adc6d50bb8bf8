//! Wall-clock time as the API speaks it: RFC 3339 in UTC, millisecond precision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Last millisecond of year 9999: RFC 3339 has four-digit years, and the formatter
/// fails beyond (which `to_string` would turn into a panic).
const RFC3339_MS_MAX: u64 = 253_402_300_799_999;

/// `2026-12-01T13:14:15.123Z` (times past year 9999 are shown as its last millisecond).
pub fn rfc3339(unix_ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms.min(RFC3339_MS_MAX));
    humantime::format_rfc3339_millis(time).to_string()
}

/// `rfc3339` of an optional time, as JSON (`null` when absent).
pub fn rfc3339_json(unix_ms: Option<u64>) -> serde_json::Value {
    unix_ms.map_or(serde_json::Value::Null, |ms| rfc3339(ms).into())
}

/// Parses an RFC 3339 timestamp (with `Z` or a numeric offset) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let (base, offset_s) = split_offset(text)?;
    let utc = format!("{base}Z");
    let time = humantime::parse_rfc3339(&utc)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_millis();
    let ms = i128::try_from(ms).unwrap_or(i128::MAX) - i128::from(offset_s) * 1000;
    // A local time in 1970 whose offset puts it before the epoch reads as the epoch:
    // nothing is older.
    u64::try_from(ms.max(0)).map_err(|_| format!("{text:?} is out of range"))
}

/// Splits `…+05:30` / `…-08:00` / `…Z` into the local part and the offset in seconds.
fn split_offset(text: &str) -> Result<(&str, i64), String> {
    if let Some(base) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return Ok((base, 0));
    }
    let bad =
        || format!("{text:?} is not an RFC 3339 timestamp (it needs Z or an offset like +02:00)");
    // The offset is six ASCII bytes; checking that first keeps every slice below on a
    // character boundary whatever the caller sent.
    let Some((base, offset)) = text
        .len()
        .checked_sub(6)
        .and_then(|at| Some((text.get(..at)?, text.get(at..)?)))
        .filter(|(_, offset)| offset.is_ascii())
    else {
        return Err(bad());
    };
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    if bytes[3] != b':' {
        return Err(bad());
    }
    let hours: i64 = offset[1..3].parse().map_err(|_| bad())?;
    let minutes: i64 = offset[4..6].parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok((base, sign * (hours * 3600 + minutes * 60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        let cases = [
            ("2023-11-14T22:13:20.123Z", Ok(1_700_000_000_123)),
            ("2023-11-14T22:13:20Z", Ok(1_700_000_000_000)),
            ("2023-11-14T23:13:20+01:00", Ok(1_700_000_000_000)),
            ("2023-11-14T14:13:20-08:00", Ok(1_700_000_000_000)),
            // Before the epoch only through its offset: the epoch.
            ("1970-01-01T00:30:00+01:00", Ok(0)),
            ("2023-11-14", Err(())),
            ("yesterday", Err(())),
            ("2023-11-14T22:13:20+1:00", Err(())),
            // Multi-byte characters where the offset would be: refused, not a panic.
            ("aéééé", Err(())),
            ("é00:00", Err(())),
            ("2023-11-14T22:13:20é00:00", Err(())),
            ("2023-11-14T22:13:20+0é:0", Err(())),
            ("2023-11-14T22:13:2é:00", Err(())),
            ("é", Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text).map_err(|_| ()), expected, "{text}");
        }
    }
}
