//! Incremental body decoding: fixed length, chunked (with extensions and trailers), or
//! until the connection closes. Bytes are captured up to `body_captured_bytes_max` and
//! counted (and drained) up to `body_bytes_max`.

use crate::encode::{is_field_value, is_token};
use crate::{HttpError, Limits};

/// How the body of one message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (HEAD response, 1xx/204/304, request without length).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

impl Framing {
    /// Capacity to reserve for the captured body: exact for a declared length (so the
    /// capture never reallocates), nothing otherwise.
    pub(crate) fn capture_hint(&self, limits: &Limits) -> usize {
        match *self {
            Framing::Length(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(limits.body_captured_bytes_max),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Length { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkDataEnd { cr_seen: bool },
    Trailer,
    UntilClose,
}

/// Where body bytes go: the captured prefix and the running total.
pub(crate) struct Sink<'a> {
    pub(crate) body: &'a mut Vec<u8>,
    pub(crate) total: &'a mut u64,
    /// Reported in [`HttpError::BodyTooLarge`] (None for requests).
    pub(crate) status: Option<u16>,
}

impl Sink<'_> {
    fn take(&mut self, data: &[u8], limits: &Limits) -> Result<(), HttpError> {
        let total = self.total.saturating_add(data.len() as u64);
        if total > limits.body_bytes_max {
            return Err(HttpError::BodyTooLarge {
                body_bytes_max: limits.body_bytes_max,
                status: self.status,
            });
        }
        *self.total = total;
        let room = limits
            .body_captured_bytes_max
            .saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..room.min(data.len())]);
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct BodyDecoder {
    state: State,
    /// The chunk-size line or trailer line being assembled (bounded by the limits).
    line: Vec<u8>,
    trailer_bytes: usize,
    trailer_count: usize,
    /// Bytes of chunk framing read (chunk-size lines and the CRLFs after chunk data),
    /// bounded by [`Limits::chunk_framing_bytes_max`].
    framing_bytes: u64,
}

impl Default for BodyDecoder {
    fn default() -> Self {
        BodyDecoder {
            state: State::Done,
            line: Vec::new(),
            trailer_bytes: 0,
            trailer_count: 0,
            framing_bytes: 0,
        }
    }
}

impl BodyDecoder {
    pub(crate) fn start(&mut self, framing: Framing) {
        self.line.clear();
        self.trailer_bytes = 0;
        self.trailer_count = 0;
        self.framing_bytes = 0;
        self.state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
    }

    /// Counts `n` more bytes of chunk framing, which may not pass
    /// [`Limits::chunk_framing_bytes_max`].
    fn count_framing(&mut self, n: usize, limits: &Limits) -> Result<(), HttpError> {
        self.framing_bytes = self.framing_bytes.saturating_add(n as u64);
        if self.framing_bytes > limits.chunk_framing_bytes_max() {
            return Err(HttpError::ChunkFramingTooLarge {
                chunk_framing_bytes_max: limits.chunk_framing_bytes_max(),
            });
        }
        Ok(())
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn is_until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Consumes body bytes from `input`; returns the bytes consumed and whether the body
    /// is complete (then the rest of `input` belongs to the next message).
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut Sink<'_>,
        limits: &Limits,
    ) -> Result<(usize, bool), HttpError> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match self.state {
                State::Done => return Ok((consumed, true)),
                _ if rest.is_empty() => return Ok((consumed, false)),
                State::UntilClose => {
                    sink.take(rest, limits)?;
                    return Ok((input.len(), false));
                }
                State::Length { remaining } | State::ChunkData { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    sink.take(&rest[..n], limits)?;
                    consumed += n;
                    let remaining = remaining - n as u64;
                    self.state = match (self.state, remaining) {
                        (State::Length { .. }, 0) => State::Done,
                        (State::Length { .. }, _) => State::Length { remaining },
                        (_, 0) => State::ChunkDataEnd { cr_seen: false },
                        (_, _) => State::ChunkData { remaining },
                    };
                }
                State::ChunkDataEnd { cr_seen } => {
                    let want = if cr_seen { b'\n' } else { b'\r' };
                    if rest[0] != want {
                        return Err(HttpError::MalformedChunk("chunk data not followed by CRLF"));
                    }
                    consumed += 1;
                    self.count_framing(1, limits)?;
                    self.state = if cr_seen {
                        State::ChunkSize
                    } else {
                        State::ChunkDataEnd { cr_seen: true }
                    };
                }
                State::ChunkSize => {
                    let (n, complete) = take_line(
                        &mut self.line,
                        rest,
                        limits.chunk_line_bytes_max,
                        HttpError::ChunkLineTooLong {
                            chunk_line_bytes_max: limits.chunk_line_bytes_max,
                        },
                    )?;
                    consumed += n;
                    self.count_framing(n, limits)?;
                    if complete {
                        let size = parse_chunk_line(&self.line)?;
                        self.line.clear();
                        if size == 0 {
                            self.state = State::Trailer;
                        } else {
                            // Fail on the announcement rather than after draining up to it.
                            if sink.total.saturating_add(size) > limits.body_bytes_max {
                                return Err(HttpError::BodyTooLarge {
                                    body_bytes_max: limits.body_bytes_max,
                                    status: sink.status,
                                });
                            }
                            self.state = State::ChunkData { remaining: size };
                        }
                    }
                }
                State::Trailer => {
                    let room = limits.head_bytes_max.saturating_sub(self.trailer_bytes);
                    let (n, complete) = take_line(
                        &mut self.line,
                        rest,
                        room,
                        HttpError::TrailersTooLarge {
                            head_bytes_max: limits.head_bytes_max,
                        },
                    )?;
                    consumed += n;
                    if complete {
                        self.trailer_bytes += self.line.len();
                        if self.line == b"\r\n" {
                            self.line.clear();
                            self.state = State::Done;
                        } else {
                            // Trailers are validated and dropped: nothing in Herald reads
                            // them, and merging them into the header fields is unsafe
                            // (RFC 9110 §6.5.1).
                            check_trailer_line(&self.line)?;
                            self.trailer_count += 1;
                            if self.trailer_count > limits.header_count_max {
                                return Err(HttpError::TooManyHeaders {
                                    header_count_max: limits.header_count_max,
                                });
                            }
                            self.line.clear();
                        }
                    }
                }
            }
        }
    }
}

/// Appends `input` to `line` up to and including `\n`, keeping `line` within `max` bytes.
fn take_line(
    line: &mut Vec<u8>,
    input: &[u8],
    max: usize,
    too_long: HttpError,
) -> Result<(usize, bool), HttpError> {
    let (segment, complete) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..=i], true),
        None => (input, false),
    };
    if line.len() + segment.len() > max {
        return Err(too_long);
    }
    line.extend_from_slice(segment);
    Ok((segment.len(), complete))
}

/// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 §7.1). Extensions are checked for control
/// characters and otherwise ignored. Bare LF is rejected: lenient line endings in chunk
/// framing are what request smuggling feeds on.
fn parse_chunk_line(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r\n").ok_or(HttpError::MalformedChunk(
        "chunk-size line must end in CRLF",
    ))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::MalformedChunk("missing chunk size"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        // is_ascii_hexdigit above guarantees to_digit succeeds.
        let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(HttpError::MalformedChunk("chunk size overflows"))?;
    }
    let mut ext = &line[digits..];
    while let [b' ' | b'\t', rest @ ..] = ext {
        ext = rest;
    }
    if !ext.is_empty() && (ext[0] != b';' || !is_field_value(ext)) {
        return Err(HttpError::MalformedChunk("invalid chunk extension"));
    }
    Ok(size)
}

fn check_trailer_line(line: &[u8]) -> Result<(), HttpError> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(HttpError::MalformedTrailer)?;
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::MalformedTrailer)?;
    if !is_token(&line[..colon]) || !is_field_value(&line[colon + 1..]) {
        return Err(HttpError::MalformedTrailer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines() {
        let cases: &[(&[u8], Result<u64, HttpError>)] = &[
            (b"0\r\n", Ok(0)),
            (b"a\r\n", Ok(10)),
            (b"FF\r\n", Ok(255)),
            (b"0010\r\n", Ok(16)),
            (b"5;name=value\r\n", Ok(5)),
            (b"5 ; name=\"quoted\"\r\n", Ok(5)),
            (b"5\t;a;b=c\r\n", Ok(5)),
            (b"ffffffffffffffff\r\n", Ok(u64::MAX)),
            (
                b"10000000000000000\r\n",
                Err(HttpError::MalformedChunk("chunk size overflows")),
            ),
            (
                b"\r\n",
                Err(HttpError::MalformedChunk("missing chunk size")),
            ),
            (
                b";x\r\n",
                Err(HttpError::MalformedChunk("missing chunk size")),
            ),
            (
                b"-1\r\n",
                Err(HttpError::MalformedChunk("missing chunk size")),
            ),
            (
                b"0x5\r\n",
                Err(HttpError::MalformedChunk("invalid chunk extension")),
            ),
            (
                b"5 x\r\n",
                Err(HttpError::MalformedChunk("invalid chunk extension")),
            ),
            (
                b"5;\x01\r\n",
                Err(HttpError::MalformedChunk("invalid chunk extension")),
            ),
            (
                b"5\r;x\r\n",
                Err(HttpError::MalformedChunk("invalid chunk extension")),
            ),
            (
                b"5\n",
                Err(HttpError::MalformedChunk(
                    "chunk-size line must end in CRLF",
                )),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                &parse_chunk_line(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn trailer_lines() {
        assert!(check_trailer_line(b"X-Checksum: abc\r\n").is_ok());
        assert!(check_trailer_line(b"X-Empty:\r\n").is_ok());
        for bad in [
            &b"no colon\r\n"[..],
            b": no name\r\n",
            b"X Y: z\r\n",
            b"X: \x00\r\n",
            b"X: y\n",
        ] {
            assert_eq!(check_trailer_line(bad), Err(HttpError::MalformedTrailer));
        }
    }
}
