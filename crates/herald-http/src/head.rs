//! Head accumulation and the framing rules shared by both parsers (RFC 9112 §6).

use std::mem::MaybeUninit;

use crate::body::Framing;
use crate::retry_after::trim_ows;
use crate::HttpError;

/// Collects head bytes up to the blank line, never more than `head_bytes_max`.
#[derive(Debug, Default)]
pub(crate) struct HeadBuffer {
    pub(crate) buf: Vec<u8>,
    /// Whether anything but CR/LF has arrived. Until then a "blank line" is one of the
    /// empty lines tolerated before a start line, and handing the buffer to httparse at
    /// every one of them would make a stream of CRLFs cost quadratic time.
    content_seen: bool,
}

impl HeadBuffer {
    /// Appends `input` up to and including the first line that may end the head.
    /// Returns the bytes consumed and whether the buffer now holds a start line and ends
    /// with an empty line, i.e. is worth handing to httparse.
    ///
    /// One pass over `input` for its line ends and one copy: a head arrives whole in one
    /// read nearly always, and a copy per line cost more than the rest of the parse.
    pub(crate) fn push(
        &mut self,
        input: &[u8],
        head_bytes_max: usize,
    ) -> Result<(usize, bool), HttpError> {
        // A blank line before anything but CR/LF is one of the empty lines tolerated in
        // front of a start line, not the end of a head: look for ends only after content.
        let content_from = if self.content_seen {
            Some(0)
        } else {
            input.iter().position(|&b| b != b'\r' && b != b'\n')
        };
        let end = content_from.and_then(|from| {
            memchr::memchr_iter(b'\n', &input[from..])
                .map(|i| from + i)
                .find(|&i| {
                    let before = |back: usize| match i.checked_sub(back) {
                        Some(at) => Some(input[at]),
                        None => self.buf.len().checked_sub(back - i).map(|at| self.buf[at]),
                    };
                    match before(1) {
                        Some(b'\n') => true,
                        Some(b'\r') => before(2) == Some(b'\n'),
                        _ => false,
                    }
                })
                .map(|i| i + 1)
        });
        let take = end.unwrap_or(input.len());
        if self.buf.len() + take > head_bytes_max {
            return Err(HttpError::HeadTooLarge { head_bytes_max });
        }
        self.buf.extend_from_slice(&input[..take]);
        self.content_seen = self.content_seen || content_from.is_some_and(|from| from < take);
        Ok((take, end.is_some()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.content_seen = false;
    }
}

/// Header slots on the stack for the default limit; larger limits go to the heap.
const INLINE_HEADERS: usize = 100;

/// Runs `f` with `count` uninitialised httparse header slots (httparse writes each slot it
/// hands back; initialising 100 of them for every head cost as much as parsing one).
pub(crate) fn with_header_slots<'b, R>(
    count: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if count <= INLINE_HEADERS {
        let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; INLINE_HEADERS];
        f(&mut slots[..count])
    } else {
        let mut slots: Vec<MaybeUninit<httparse::Header<'b>>> = Vec::with_capacity(count);
        slots.resize_with(count, MaybeUninit::uninit);
        f(&mut slots)
    }
}

/// What the framing headers say, before status/method rules are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declared {
    /// Neither Transfer-Encoding nor Content-Length.
    Nothing,
    /// `Content-Length: n` (repeats agree).
    Length(u64),
    /// Transfer-Encoding with `chunked` last.
    Chunked,
    /// Transfer-Encoding without `chunked` last: a response runs to connection close, a
    /// request is rejected.
    OtherCoding,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Analysis {
    pub(crate) declared: Declared,
    pub(crate) keep_alive: bool,
    pub(crate) host_count: usize,
}

/// Applies RFC 9112 §6.1–6.3 and §9.3 to the header fields.
pub(crate) fn analyze(
    headers: &[httparse::Header<'_>],
    version_minor: u8,
) -> Result<Analysis, HttpError> {
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut coding_seen = false;
    let mut chunked_seen = false;
    let mut chunked_last = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut host_count = 0;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            for element in header.value.split(|&b| b == b',') {
                let n = parse_length(trim_ows(element))?;
                match content_length {
                    Some(previous) if previous != n => {
                        return Err(HttpError::ConflictingContentLength)
                    }
                    _ => content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for coding in header.value.split(|&b| b == b',').map(trim_ows) {
                if coding.is_empty() {
                    continue;
                }
                coding_seen = true;
                if coding.eq_ignore_ascii_case(b"chunked") {
                    if chunked_seen {
                        return Err(HttpError::UnsupportedTransferEncoding);
                    }
                    chunked_seen = true;
                    chunked_last = true;
                } else {
                    chunked_last = false;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            host_count += 1;
        }
    }
    let declared = if te_seen {
        // HTTP/1.0 has no Transfer-Encoding (RFC 9112 §6.1: treat as faulty framing); a
        // Content-Length beside it is the smuggling pattern; an empty list names nothing.
        if version_minor == 0 {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        if content_length.is_some() {
            return Err(HttpError::ContentLengthWithTransferEncoding);
        }
        if chunked_last {
            Declared::Chunked
        } else if coding_seen {
            Declared::OtherCoding
        } else {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
    } else {
        match content_length {
            Some(n) => Declared::Length(n),
            None => Declared::Nothing,
        }
    };
    let keep_alive = if version_minor >= 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(Analysis {
        declared,
        keep_alive,
        host_count,
    })
}

fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::InvalidContentLength)
    })
}

/// The framing a body decoder needs for a declared length, checked against the drain cap.
pub(crate) fn length_framing(
    length: u64,
    body_bytes_max: u64,
    status: Option<u16>,
) -> Result<Framing, HttpError> {
    if length > body_bytes_max {
        return Err(HttpError::BodyTooLarge {
            body_bytes_max,
            status,
        });
    }
    Ok(Framing::Length(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in the pieces `cuts` makes; returns the head bytes taken (or the
    /// error) once a piece ends the head.
    fn feed(wire: &[u8], cuts: &[usize], max: usize) -> Result<Option<usize>, HttpError> {
        let mut head = HeadBuffer::default();
        let mut at = 0;
        for end in cuts.iter().copied().chain([wire.len()]) {
            let (used, done) = head.push(&wire[at..end], max)?;
            if done {
                assert_eq!(
                    head.buf,
                    wire[..at + used],
                    "the buffer holds what was taken"
                );
                return Ok(Some(at + used));
            }
            assert_eq!(
                used,
                end - at,
                "a piece that does not end the head is taken whole"
            );
            at = end;
        }
        Ok(None)
    }

    #[test]
    fn a_head_ends_at_the_first_blank_line_after_content_however_it_is_cut() {
        let cases: [(&[u8], Option<usize>); 6] = [
            (b"POST / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(28)),
            (b"HTTP/1.1 200 OK\n\nrest", Some(17)),
            // Blank lines in front of the start line are not its end.
            (b"\r\n\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Some(32)),
            (b"\r\n\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nX: \r\r\n\r\n", Some(24)),
            (b"GET / HTTP/1.1\r\nX: y\r\n", None),
        ];
        for (wire, end) in cases {
            assert_eq!(feed(wire, &[], 1024).unwrap(), end, "{wire:?} whole");
            for a in 0..=wire.len() {
                for b in a..=wire.len() {
                    assert_eq!(
                        feed(wire, &[a, b], 1024).unwrap(),
                        end,
                        "{wire:?} cut at {a}, {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_head_past_the_limit_is_refused_wherever_it_is_cut() {
        let wire = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(feed(wire, &[], wire.len()).unwrap(), Some(wire.len()));
        for cut in 0..=wire.len() {
            assert!(matches!(
                feed(wire, &[cut], wire.len() - 1),
                Err(HttpError::HeadTooLarge { head_bytes_max }) if head_bytes_max == wire.len() - 1
            ));
        }
    }
}
