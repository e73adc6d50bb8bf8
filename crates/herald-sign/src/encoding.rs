//! Allocation-free text encodings used on the signing path: decimal integers, base64 and
//! hex are written through stack buffers so a warmed-up [`crate::SignedHeaders`] never
//! reallocates.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Seconds between 0001-01-01T00:00:00Z (the .NET epoch) and the Unix epoch.
const DOTNET_EPOCH_TO_UNIX_S: i64 = 62_135_596_800;
/// .NET ticks are 100 ns units.
const TICKS_PER_S: i64 = 10_000_000;

/// Standard-alphabet base64 that accepts input with or without `=` padding: secrets are
/// pasted by people, and both forms are in circulation.
pub(crate) const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A formatted decimal integer on the stack (`i64::MIN` needs 20 bytes).
pub(crate) struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(value: i64) -> Decimal {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        let mut rest = value.unsigned_abs();
        loop {
            at -= 1;
            // `rest % 10` is below 10, so the cast cannot truncate.
            buf[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if value < 0 {
            at -= 1;
            buf[at] = b'-';
        }
        Decimal { buf, start: at }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Appends ASCII bytes to a string without a temporary allocation. Validating and
/// copying the slice whole is several times faster than pushing it char by char.
pub(crate) fn push_ascii(out: &mut String, ascii: &[u8]) {
    match std::str::from_utf8(ascii) {
        Ok(text) => out.push_str(text),
        // Not reached for the ASCII this crate writes; Latin-1 is the faithful fallback.
        Err(_) => out.extend(ascii.iter().map(|&b| char::from(b))),
    }
}

/// Appends standard base64 (with padding) of `input`, at most 64 bytes (an ed25519
/// signature), without allocating.
pub(crate) fn push_base64(out: &mut String, input: &[u8]) {
    let mut buf = [0u8; 88];
    // 64 input bytes need exactly 88 output bytes, so this cannot fail for our inputs
    // (HMAC-SHA256 tags and ed25519 signatures).
    match STANDARD.encode_slice(input, &mut buf) {
        Ok(written) => push_ascii(out, &buf[..written]),
        Err(_) => unreachable!("base64 of {} bytes exceeds 88", input.len()),
    }
}

/// Appends lowercase hex of `input`, at most 32 bytes (an HMAC-SHA256 tag).
pub(crate) fn push_hex(out: &mut String, input: &[u8]) {
    let mut buf = [0u8; 64];
    let len = input.len() * 2;
    // The only callers pass 32-byte tags, which need exactly 64 output bytes.
    match hex::encode_to_slice(input, &mut buf[..len]) {
        Ok(()) => push_ascii(out, &buf[..len]),
        Err(_) => unreachable!("hex of {} bytes exceeds 64", input.len()),
    }
}

/// Converts Unix seconds to .NET ticks (100 ns units since 0001-01-01T00:00:00Z), the unit
/// of Olo's `X-Olo-Timestamp`. Saturates at 0 and `i64::MAX` (years 1 and 29228) instead of
/// wrapping.
pub fn unix_s_to_ticks(unix_s: i64) -> i64 {
    let ticks = (i128::from(unix_s) + i128::from(DOTNET_EPOCH_TO_UNIX_S)) * i128::from(TICKS_PER_S);
    // Clamped into i64's range first, so the conversion cannot fail.
    i64::try_from(ticks.clamp(0, i128::from(i64::MAX))).unwrap_or(i64::MAX)
}

/// Converts .NET ticks to Unix seconds, rounding down to the whole second.
pub fn ticks_to_unix_s(ticks: i64) -> i64 {
    ticks.div_euclid(TICKS_PER_S) - DOTNET_EPOCH_TO_UNIX_S
}

/// Parses a non-negative decimal integer made only of ASCII digits (no sign, no spaces,
/// no leading `+` that `str::parse` would accept).
pub(crate) fn parse_digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_display() {
        for value in [0, 1, -1, 9, 10, 1_614_265_330, i64::MAX, i64::MIN, -42] {
            assert_eq!(Decimal::new(value).as_bytes(), value.to_string().as_bytes());
        }
    }

    #[test]
    fn ticks_round_trip_and_known_points() {
        // 1970-01-01 is 621355968000000000 ticks in .NET.
        assert_eq!(unix_s_to_ticks(0), 621_355_968_000_000_000);
        assert_eq!(ticks_to_unix_s(621_355_968_000_000_000), 0);
        for unix_s in [0, 1, 1_614_265_330, 4_102_444_800] {
            assert_eq!(ticks_to_unix_s(unix_s_to_ticks(unix_s)), unix_s);
        }
        assert_eq!(unix_s_to_ticks(i64::MIN), 0);
        assert_eq!(unix_s_to_ticks(i64::MAX), i64::MAX);
        // Sub-second ticks round down.
        assert_eq!(ticks_to_unix_s(621_355_968_009_999_999), 0);
    }

    #[test]
    fn parse_digits_is_strict() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("1614265330", Some(1_614_265_330)),
            ("", None),
            ("+1", None),
            ("-1", None),
            (" 1", None),
            ("1.5", None),
            ("99999999999999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_digits(text), *expected, "{text:?}");
        }
    }
}
