//! HTTP-date (RFC 9110 §5.6.7) to Unix seconds, no clock involved.

const DAYS_SHORT: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const DAYS_LONG: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Parses IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms.
/// The weekday name must be valid but is not checked against the date (senders get it
/// wrong and it carries no information).
pub(crate) fn parse_http_date(s: &[u8]) -> Option<i64> {
    parse_imf_fixdate(s)
        .or_else(|| parse_rfc850(s))
        .or_else(|| parse_asctime(s))
}

fn parse_imf_fixdate(s: &[u8]) -> Option<i64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    if s.len() != 29 || !DAYS_SHORT.contains(&&s[0..3]) || &s[3..5] != b", " {
        return None;
    }
    let day = digits(&s[5..7])?;
    expect(s, 7, b" ")?;
    let month = month(&s[8..11])?;
    expect(s, 11, b" ")?;
    let year = digits(&s[12..16])?;
    expect(s, 16, b" ")?;
    let (hour, minute, second) = time_of_day(&s[17..25])?;
    expect(s, 25, b" GMT")?;
    to_unix(year, month, day, hour, minute, second)
}

fn parse_rfc850(s: &[u8]) -> Option<i64> {
    // "Sunday, 06-Nov-94 08:49:37 GMT"
    let comma = s.iter().position(|&b| b == b',')?;
    if !DAYS_LONG.contains(&&s[..comma]) {
        return None;
    }
    let s = &s[comma..];
    if s.len() != 24 || &s[..2] != b", " {
        return None;
    }
    let day = digits(&s[2..4])?;
    expect(s, 4, b"-")?;
    let month = month(&s[5..8])?;
    expect(s, 8, b"-")?;
    let yy = digits(&s[9..11])?;
    expect(s, 11, b" ")?;
    let (hour, minute, second) = time_of_day(&s[12..20])?;
    expect(s, 20, b" GMT")?;
    // RFC 9110 resolves two-digit years against the current date; a pure parser has none,
    // so use the fixed POSIX pivot (69 and below are 20xx). This form has been obsolete
    // since 1996 and is only ever seen from ancient servers.
    let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
    to_unix(year, month, day, hour, minute, second)
}

fn parse_asctime(s: &[u8]) -> Option<i64> {
    // "Sun Nov  6 08:49:37 1994"
    if s.len() != 24 || !DAYS_SHORT.contains(&&s[0..3]) {
        return None;
    }
    expect(s, 3, b" ")?;
    let month = month(&s[4..7])?;
    expect(s, 7, b" ")?;
    let day = if s[8] == b' ' {
        digits(&s[9..10])?
    } else {
        digits(&s[8..10])?
    };
    expect(s, 10, b" ")?;
    let (hour, minute, second) = time_of_day(&s[11..19])?;
    expect(s, 19, b" ")?;
    let year = digits(&s[20..24])?;
    to_unix(year, month, day, hour, minute, second)
}

fn expect(s: &[u8], at: usize, want: &[u8]) -> Option<()> {
    (s.get(at..at + want.len())? == want).then_some(())
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

fn month(s: &[u8]) -> Option<u32> {
    let index = MONTHS.iter().position(|m| *m == s)?;
    // index < 12
    Some(index as u32 + 1)
}

fn time_of_day(s: &[u8]) -> Option<(u32, u32, u32)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    // 60 allows a leap second.
    (hour < 24 && minute < 60 && second <= 60).then_some((hour, minute, second))
}

fn to_unix(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap =
                (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
            if leap {
                29
            } else {
                28
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_forms_agree() {
        let want = Some(784_111_777);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), want);
    }

    #[test]
    fn known_instants() {
        let cases: &[(&[u8], i64)] = &[
            (b"Thu, 01 Jan 1970 00:00:00 GMT", 0),
            (b"Sat, 01 Jan 2000 00:00:00 GMT", 946_684_800),
            (b"Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            (b"Sun, 22 Nov 2026 07:04:15 GMT", 1_795_331_055),
            (b"Wed, 31 Dec 1969 23:59:59 GMT", -1),
            (b"Monday, 01-Jan-01 00:00:00 GMT", 978_307_200),
            (b"Fri Dec 31 23:59:60 1999", 946_684_800),
            (b"Thu Jan 01 00:00:00 1970", 0),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_http_date(input),
                Some(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn rejects() {
        let cases: &[&[u8]] = &[
            b"",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 GMT ",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Xyz, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 31 Nov 1994 08:49:37 GMT",
            b"Sun, 29 Feb 1900 08:49:37 GMT",
            b"Sun, 00 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov 1994 08:49:61 GMT",
            b"Sun, 06 Nov 1994 08-49-37 GMT",
            b"Sun, 06 Nov +994 08:49:37 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sun, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"Sun Nov  6 08:49:37 94",
            b"\xff\xff\xff, 06 Nov 1994 08:49:37 GMT",
        ];
        for input in cases {
            assert_eq!(
                parse_http_date(input),
                None,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
