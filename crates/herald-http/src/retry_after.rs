use crate::date::parse_http_date;

/// A parsed `Retry-After` value (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryAfter {
    /// `Retry-After: 120`: wait this many seconds from when the response was received.
    /// Absurdly large values saturate at `u64::MAX`; the caller clamps.
    DelaySeconds(u64),
    /// `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT`: not before this instant (Unix seconds).
    AtUnixSeconds(i64),
}

impl RetryAfter {
    /// Milliseconds to wait from `now_ms` (Unix milliseconds); 0 for dates in the past.
    /// Saturates instead of overflowing.
    pub fn delay_ms(&self, now_ms: u64) -> u64 {
        match *self {
            RetryAfter::DelaySeconds(s) => s.saturating_mul(1000),
            RetryAfter::AtUnixSeconds(at_s) => {
                let at_ms = i128::from(at_s) * 1000;
                let delay = at_ms - i128::from(now_ms);
                u64::try_from(delay.max(0)).unwrap_or(u64::MAX)
            }
        }
    }
}

/// Parses a `Retry-After` header value: delta-seconds (`120`) or an HTTP-date in any of
/// its three forms (IMF-fixdate, and the obsolete RFC 850 and asctime forms). Surrounding
/// spaces and tabs are ignored. Returns `None` for anything else (a malformed value is
/// treated as absent, as RFC 9110 recommends for invalid fields).
pub fn parse_retry_after(value: &[u8]) -> Option<RetryAfter> {
    let value = trim_ows(value);
    if value.is_empty() {
        return None;
    }
    if value.iter().all(u8::is_ascii_digit) {
        let seconds = value.iter().fold(0u64, |n, &b| {
            n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(RetryAfter::DelaySeconds(seconds));
    }
    parse_http_date(value).map(RetryAfter::AtUnixSeconds)
}

pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<RetryAfter>)] = &[
            (b"0", Some(RetryAfter::DelaySeconds(0))),
            (b"120", Some(RetryAfter::DelaySeconds(120))),
            (b" 7\t", Some(RetryAfter::DelaySeconds(7))),
            (b"000030", Some(RetryAfter::DelaySeconds(30))),
            (
                b"99999999999999999999999",
                Some(RetryAfter::DelaySeconds(u64::MAX)),
            ),
            (
                b"Fri, 31 Dec 1999 23:59:59 GMT",
                Some(RetryAfter::AtUnixSeconds(946_684_799)),
            ),
            (
                b"Friday, 31-Dec-99 23:59:59 GMT",
                Some(RetryAfter::AtUnixSeconds(946_684_799)),
            ),
            (
                b"Fri Dec 31 23:59:59 1999",
                Some(RetryAfter::AtUnixSeconds(946_684_799)),
            ),
            (b"", None),
            (b"  ", None),
            (b"-5", None),
            (b"+5", None),
            (b"1.5", None),
            (b"5s", None),
            (b"1 2", None),
            (b"tomorrow", None),
            (b"Fri, 31 Dec 1999 23:59:59", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_retry_after(input),
                *want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn delay_ms() {
        assert_eq!(RetryAfter::DelaySeconds(3).delay_ms(123), 3000);
        assert_eq!(RetryAfter::DelaySeconds(u64::MAX).delay_ms(0), u64::MAX);
        assert_eq!(RetryAfter::AtUnixSeconds(100).delay_ms(90_500), 9_500);
        assert_eq!(RetryAfter::AtUnixSeconds(100).delay_ms(200_000), 0);
        assert_eq!(RetryAfter::AtUnixSeconds(i64::MIN).delay_ms(0), 0);
        assert_eq!(
            RetryAfter::AtUnixSeconds(i64::MAX).delay_ms(0),
            u64::MAX,
            "saturates"
        );
    }
}
