//! One pass over an event's `data` that accepts exactly what strict JSON parsers accept
//! (RFC 8259: one value, optional surrounding whitespace, UTF-8) and that receivers can
//! read: nesting at most [`DATA_DEPTH_MAX`] deep, no `\u` escape that is a lone
//! surrogate, no number beyond a double's range.
//!
//! It runs once per accepted event on the shard's thread, over up to
//! [`crate::BODY_BYTES_MAX`] bytes, so it does the least work a byte allows: string
//! contents are skipped eight bytes at a time, UTF-8 is checked only where a byte is not
//! ASCII (by the standard library, over each run of such bytes), and a number is parsed
//! as a double only when its digits alone cannot show it is in range. Nothing is
//! allocated unless the data is refused.
//!
//! Outside strings the grammar allows ASCII only, so a byte that is not ASCII there is
//! refused as out of place; inside a string each maximal run of such bytes must be valid
//! UTF-8 on its own (an ASCII byte is never part of a multi-byte sequence), so checking
//! the runs checks the whole input: one pass instead of a UTF-8 pass and a JSON pass.

use crate::envelope::DATA_DEPTH_MAX;

// The nesting kinds are kept as bits of a `u64`, one per level.
const _: () = assert!(DATA_DEPTH_MAX <= 64);

/// Integer digits a number without an exponent may have and be sure to fit a double:
/// every such number is below 10^308, and a double reaches ~1.8 × 10^308.
const PLAIN_INTEGER_DIGITS_MAX: usize = 308;

/// Checks `data`; on refusal says why and where (a byte offset from 0).
pub(crate) fn check_data(data: &[u8]) -> Result<(), String> {
    Checker { data, at: 0 }.run()
}

struct Checker<'a> {
    data: &'a [u8],
    at: usize,
}

/// Bytes `b` of `x` (little-endian lanes) that are below `n` (`n` ≤ 128): the lowest
/// flagged lane is exact; lanes above a flagged one may be flagged wrongly.
fn lanes_below(x: u64, n: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// A byte with its top bit set when a string's scan must stop at `b`: a control byte
/// (below 0x20), a byte that is not ASCII, a quote or a backslash. Branch-free, so that a
/// fold of it over a block vectorizes.
fn needs_a_look(b: u8) -> u8 {
    b.wrapping_sub(0x20) | b | (b ^ b'"').wrapping_sub(1) | (b ^ b'\\').wrapping_sub(1)
}

/// Lanes of `x` equal to `b`, with the same exactness as [`lanes_below`].
fn lanes_equal(x: u64, b: u8) -> u64 {
    lanes_below(x ^ (0x0101_0101_0101_0101 * u64::from(b)), 1)
}

impl Checker<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        match self.peek() {
            Some(b) if b.is_ascii_graphic() => Err(format!(
                "{what} at byte {}, found '{}'",
                self.at,
                char::from(b)
            )),
            Some(b) => Err(format!("{what} at byte {}, found byte 0x{b:02x}", self.at)),
            None => Err(format!("{what} at byte {}, found the end", self.at)),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(what)
        }
    }

    /// The whole input: one value, then nothing but whitespace.
    fn run(mut self) -> Result<(), String> {
        // Bit `d` of `objects` is set when the container at depth `d + 1` is an object.
        let mut objects: u64 = 0;
        let mut depth = 0usize;
        'value: loop {
            self.skip_whitespace();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth == DATA_DEPTH_MAX {
                        return Err(format!(
                            "arrays and objects nest deeper than {DATA_DEPTH_MAX} levels"
                        ));
                    }
                    self.at += 1;
                    let object = open == b'{';
                    if object {
                        objects |= 1 << depth;
                    } else {
                        objects &= !(1 << depth);
                    }
                    depth += 1;
                    self.skip_whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return self.fail("expected a value"),
            }
            // After a value: close containers, or go on to the next element.
            loop {
                self.skip_whitespace();
                if depth == 0 {
                    return match self.peek() {
                        None => Ok(()),
                        Some(_) => self.fail("expected the end after the value"),
                    };
                }
                let object = objects & (1 << (depth - 1)) != 0;
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.skip_whitespace();
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.at += 1;
                        depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.at += 1;
                        depth -= 1;
                    }
                    _ if object => return self.fail("expected ',' or '}'"),
                    _ => return self.fail("expected ',' or ']'"),
                }
            }
        }
    }

    /// A member's name and its colon; whitespace before the name is already skipped.
    fn member_name(&mut self) -> Result<(), String> {
        if self.peek() != Some(b'"') {
            return self.fail("expected a member name");
        }
        self.string()?;
        self.skip_whitespace();
        self.expect(b':', "expected ':'")
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.data[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail("expected a value")
        }
    }

    /// A string, from its opening quote: the quote, escapes, control characters and
    /// bytes that are not ASCII (checked as UTF-8) need looking at, nothing else.
    fn string(&mut self) -> Result<(), String> {
        self.at += 1;
        loop {
            // Eight bytes at a time up to the first quote, backslash, control byte or
            // byte that is not ASCII; past the first sixteen clean ones (a long string,
            // such as a padding or an encoded blob: most of many payloads' bytes),
            // thirty-two at a time while none needs looking at, as one reduction over the
            // block with no early exit, which the compiler turns into a few vector
            // instructions. Short strings, most of an object's, never try a block.
            'scan: {
                for _ in 0..2 {
                    if !self.skip_clean_chunk() {
                        break 'scan;
                    }
                }
                while let Some(block) = self.data.get(self.at..self.at + 32) {
                    let stops = block.iter().fold(0u8, |stops, &b| stops | needs_a_look(b));
                    if stops & 0x80 != 0 {
                        break;
                    }
                    self.at += 32;
                }
                while self.skip_clean_chunk() {}
            }
            match self.peek() {
                None => return self.fail("unterminated string"),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(0x00..=0x1f) => {
                    return self.fail("control character in a string (escape it)");
                }
                Some(0x80..=0xff) => self.utf8_run()?,
                Some(_) => self.at += 1,
            }
        }
    }

    /// Inside a string: steps over the next eight bytes when none needs looking at (and
    /// says so), else to the first that does; false also when fewer than eight are left.
    fn skip_clean_chunk(&mut self) -> bool {
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let Some(chunk) = self.data.get(self.at..self.at + 8) else {
            return false;
        };
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let stops =
            lanes_below(x, 0x20) | lanes_equal(x, b'"') | lanes_equal(x, b'\\') | (x & HIGHS);
        if stops != 0 {
            self.at += (stops.trailing_zeros() / 8) as usize;
            return false;
        }
        self.at += 8;
        true
    }

    /// A run of bytes that are not ASCII, from its first: valid UTF-8 on its own, since
    /// no multi-byte sequence holds an ASCII byte.
    fn utf8_run(&mut self) -> Result<(), String> {
        let start = self.at;
        let rest = &self.data[start..];
        let end = start + rest.iter().position(u8::is_ascii).unwrap_or(rest.len());
        match std::str::from_utf8(&self.data[start..end]) {
            Ok(_) => {
                self.at = end;
                Ok(())
            }
            Err(e) => Err(format!("invalid UTF-8 at byte {}", start + e.valid_up_to())),
        }
    }

    /// An escape, from its backslash.
    fn escape(&mut self) -> Result<(), String> {
        self.at += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4()?;
                if (0xDC00..0xE000).contains(&unit) {
                    return Err(lone_surrogate());
                }
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed at once by a low one.
                    if self.data[self.at..].starts_with(b"\\u") {
                        self.at += 1;
                        let low = self.hex4()?;
                        if (0xDC00..0xE000).contains(&low) {
                            return Ok(());
                        }
                    }
                    return Err(lone_surrogate());
                }
                Ok(())
            }
            _ => self.fail("invalid escape"),
        }
    }

    /// `u` and four hex digits, from the `u`: the code unit they spell.
    fn hex4(&mut self) -> Result<u16, String> {
        let digits = self
            .data
            .get(self.at + 1..self.at + 5)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit));
        let Some(digits) = digits else {
            self.at += 1;
            return self.fail("expected four hex digits after \\u");
        };
        let text = std::str::from_utf8(digits).expect("hex digits are ASCII");
        let unit = u16::from_str_radix(text, 16).expect("four hex digits");
        self.at += 5;
        Ok(unit)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, within a double's range.
    fn number(&mut self) -> Result<(), String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let integer_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail("expected a digit"),
        }
        let integer_digits = self.at - integer_start;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return self.fail("expected a digit after '.'");
            }
            self.digits();
        }
        let mut exponent = false;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            exponent = true;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return self.fail("expected a digit in the exponent");
            }
            self.digits();
        }
        if exponent || integer_digits > PLAIN_INTEGER_DIGITS_MAX {
            let number = &self.data[start..self.at];
            let text = std::str::from_utf8(number).expect("a number is ASCII");
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                let shown = &text[..text.len().min(24)];
                return Err(format!(
                    "the number {shown}{} is beyond the range of a double",
                    if text.len() > 24 { "…" } else { "" }
                ));
            }
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

fn lone_surrogate() -> String {
    "a \\u escape in a string is a lone surrogate, not a Unicode character".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a strict parser says, for data nested at most [`DATA_DEPTH_MAX`] deep.
    fn serde_accepts(data: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(data).is_ok()
    }

    #[test]
    fn a_scan_stops_exactly_at_the_bytes_a_string_must_look_at() {
        for b in 0..=255u8 {
            let must = !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\';
            assert_eq!(needs_a_look(b) & 0x80 != 0, must, "byte {b:#04x}");
        }
    }

    /// Every byte a string must look at, at every offset of a long string (in and
    /// across the 32- and 8-byte blocks): the checker agrees with a strict parser.
    #[test]
    fn long_strings_agree_with_a_strict_parser_wherever_a_special_byte_falls() {
        let specials: [&[u8]; 7] = [
            b"\"",
            b"\\n",
            b"\\u00e9",
            b"\x01",
            b"\x1f",
            "é".as_bytes(),
            b"\xff",
        ];
        for special in specials {
            for at in 0..80 {
                let mut data = b"{\"pad\":\"".to_vec();
                data.extend(std::iter::repeat_n(b'x', at));
                data.extend_from_slice(special);
                data.extend(std::iter::repeat_n(b'y', 70));
                data.extend_from_slice(b"\"}");
                assert_eq!(
                    check_data(&data).is_ok(),
                    serde_accepts(&data),
                    "{special:?} at {at}: {}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    #[test]
    fn agrees_with_a_strict_parser_on_hand_picked_inputs() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"{}",
            b" {} ",
            b"[]",
            b"[ ]",
            b"{ }",
            b"0",
            b"-0",
            b"01",
            b"-",
            b"1.",
            b".5",
            b"1.5",
            b"1e5",
            b"1E+5",
            b"1e-5",
            b"1e",
            b"1e+",
            b"+1",
            b"00",
            b"-01",
            b"true",
            b"tru",
            b"truex",
            b"false",
            b"null",
            b"nul",
            b"NaN",
            b"Infinity",
            b"\"\"",
            b"\"a\"",
            b"\"a",
            b"\"\\\"",
            b"\"\\x\"",
            b"\"\\u00\"",
            b"\"\\u00zz\"",
            b"\"\\u0041\"",
            b"\"\\/\\b\\f\\n\\r\\t\"",
            b"\"\x01\"",
            b"\"\x1f\"",
            b"\"\x7f\"",
            b"\"tab\there\"",
            "\"é😀\"".as_bytes(),
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"[1,,2]",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{,}",
            b"{1:2}",
            b"{\"a\" : 1 , \"b\":[]}",
            b"{\"a\":1}}",
            b"[1]]",
            b"[[1]",
            b"[1}",
            b"{\"a\":1]",
            b"{} {}",
            b"[] x",
            b"1 2",
            b"{\"a\":[{\"b\":null},true,false,-1.5e-3]}",
            b"\"\\ud83d\\ude00\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"[1e400]",
            b"[1e-400]",
            b"\xef\xbb\xbf{}",
            b"\"\xff\"",
            b"\"\xc3\"",
            b"// x\n1",
            b"[1,2,3]\n",
            b"\"abcdefgh\\\"ijklmnop\"",
            b"\"abcdefghijklmno\x00pq\"",
            // Bytes that are not ASCII across the eight-byte steps, valid and not:
            // sequences split by a step, an overlong form, a surrogate, a stray
            // continuation byte, a sequence cut by the closing quote.
            b"\"abcdefg\xc3\xa9hijklmn\"",
            b"\"abcdef\xf0\x9f\x98\x80ghijklmnop\xe2\x82\xac\"",
            b"{\"\xc3\xa9t\xc3\xa9\":\"\xe6\x97\xa5\xe6\x9c\xac\"}",
            b"\"abcdefg\xc0\xaf\"",
            b"\"abcdefg\xed\xa0\x80\"",
            b"\"abcdefg\x80\"",
            b"\"abcdefg\xe2\x82\"",
            b"[\"ok\"]\xc3\xa9",
        ];
        for data in cases {
            assert_eq!(
                check_data(data).is_ok(),
                serde_accepts(data),
                "{:?}: {:?}",
                String::from_utf8_lossy(data),
                check_data(data)
            );
        }
    }

    #[test]
    fn refusals_say_where() {
        let cases: &[(&[u8], &str)] = &[
            (b"[1, x]", "expected a value at byte 4, found 'x'"),
            (b"{\"a\":1", "expected ',' or '}' at byte 6, found the end"),
            (
                b"\"a\x01\"",
                "control character in a string (escape it) at byte 2, found byte 0x01",
            ),
            (b"[\"\xff\"]", "invalid UTF-8 at byte 2"),
            (b"[\"\xc3\xa9\xc3\"]", "invalid UTF-8 at byte 4"),
            (
                b"\"abcdefgh\xe2\x82\xacijk\xf0\x9f\x98\"",
                "invalid UTF-8 at byte 15",
            ),
            (
                b"[1, \xc3\xa9]",
                "expected a value at byte 4, found byte 0xc3",
            ),
        ];
        for (data, reason) in cases {
            assert_eq!(check_data(data).unwrap_err(), *reason);
        }
    }

    #[test]
    fn long_plain_integers_are_parsed_only_past_the_digits_that_always_fit() {
        let fits = format!("-{}", "9".repeat(PLAIN_INTEGER_DIGITS_MAX));
        assert!(check_data(fits.as_bytes()).is_ok());
        let one_more = format!("1{}", "0".repeat(PLAIN_INTEGER_DIGITS_MAX));
        assert!(check_data(one_more.as_bytes()).is_ok(), "1e308 fits");
        let too_big = "9".repeat(PLAIN_INTEGER_DIGITS_MAX + 1);
        assert!(check_data(too_big.as_bytes()).is_err());
    }

    /// JSON text with a little of everything, nested a few levels.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[ -~éß😀\\\\\"\u{7f}]{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"\\ud83d\\ude00\\u00e9\\n\"".to_string()),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z\"\\\\]{0,6}", inner), 0..6).prop_map(|m| {
                    let members: Vec<String> = m
                        .into_iter()
                        .map(|(k, v)| format!("{} : {v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{ {} }}", members.join(" ,"))
                }),
            ]
        })
    }

    /// Small edits that break JSON in the ways that matter: structure, escapes,
    /// surrogates, numbers, control bytes, invalid UTF-8.
    const SPLICES: &[&[u8]] = &[
        b"{", b"}", b"[", b"]", b",", b":", b"\"", b"\\", b"\\u", b"\\ud800", b"\\udc00",
        b"\\ud83d", b"0", b"-", b".", b"e", b"E+", b"1e400", b"00", b" ", b"\n", b"\x00", b"\x1f",
        b"\xff", b"\xc3", b"t", b"nul", b"x",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_a_strict_parser(
            text in json_text(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3usize, 0..SPLICES.len()), 0..3),
        ) {
            let mut data = text.into_bytes();
            prop_assert!(check_data(&data).is_ok(), "{:?}", String::from_utf8_lossy(&data));
            for (at, remove, splice) in edits {
                let at = at.index(data.len() + 1);
                let end = (at + remove).min(data.len());
                data.splice(at..end, SPLICES[splice].iter().copied());
            }
            prop_assert_eq!(
                check_data(&data).is_ok(),
                serde_accepts(&data),
                "{:?}: {:?}",
                String::from_utf8_lossy(&data),
                check_data(&data)
            );
        }
    }
}
