/// Bounds on everything a parser buffers or reads from the peer.
///
/// Exceeding any of these is a typed [`HttpError`](crate::HttpError), never a panic and
/// never unbounded growth. Build with struct-update syntax to change one field:
/// `Limits { head_bytes_max: 8 * 1024, ..Limits::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message head (start line + headers + blank line), and separately the
    /// largest chunked trailer section. Default 16 KiB: far above what webhook receivers
    /// and management clients send, small enough that a hostile peer cannot make us hold
    /// much per connection.
    pub head_bytes_max: usize,
    /// Most header fields in one head (and most trailer fields). Default 100.
    pub header_count_max: usize,
    /// Body bytes kept in [`Response::body`](crate::Response::body) /
    /// [`Request::body`](crate::Request::body). Default 64 KiB: enough for a delivery log
    /// excerpt or a management API document. Bytes beyond it are counted and drained.
    pub body_captured_bytes_max: usize,
    /// Most body bytes read (captured or drained) before giving up with
    /// [`HttpError::BodyTooLarge`](crate::HttpError::BodyTooLarge); the caller then closes
    /// the connection instead of draining further. Default 1 MiB: draining a little keeps
    /// a keep-alive connection usable, draining a lot costs more than a new connection.
    /// A chunked body's framing (its chunk-size lines and CRLFs) is bounded apart:
    /// [`Limits::chunk_framing_bytes_max`].
    pub body_bytes_max: u64,
    /// Longest chunk-size line (size, extensions, CRLF). Default 1 KiB: chunk extensions
    /// are practically unused, so a long line is either a bug or an attack.
    pub chunk_line_bytes_max: usize,
    /// Most interim (1xx) responses skipped before the final response. Default 16:
    /// `100 Continue` and `103 Early Hints` come in ones and twos.
    pub informational_count_max: usize,
}

impl Limits {
    /// Default [`Limits::head_bytes_max`]: 16 KiB.
    pub const HEAD_BYTES_MAX_DEFAULT: usize = 16 * 1024;
    /// Default [`Limits::header_count_max`]: 100.
    pub const HEADER_COUNT_MAX_DEFAULT: usize = 100;
    /// Default [`Limits::body_captured_bytes_max`]: 64 KiB.
    pub const BODY_CAPTURED_BYTES_MAX_DEFAULT: usize = 64 * 1024;
    /// Default [`Limits::body_bytes_max`]: 1 MiB.
    pub const BODY_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
    /// Default [`Limits::chunk_line_bytes_max`]: 1 KiB.
    pub const CHUNK_LINE_BYTES_MAX_DEFAULT: usize = 1024;
    /// Default [`Limits::informational_count_max`]: 16.
    pub const INFORMATIONAL_COUNT_MAX_DEFAULT: usize = 16;
    /// Framing a chunked body may take beyond `body_bytes_max` (see
    /// [`Limits::chunk_framing_bytes_max`]): 64 KiB, some 13,000 chunks' sizes and CRLFs
    /// more than a body of the largest size's own bytes.
    pub const CHUNK_FRAMING_SLACK_BYTES: u64 = 64 * 1024;

    /// Most bytes of chunk framing (chunk-size lines with their extensions, and the CRLF
    /// after each chunk's data) read for one body before giving up with
    /// [`HttpError::ChunkFramingTooLarge`](crate::HttpError::ChunkFramingTooLarge):
    /// `body_bytes_max` plus [`Limits::CHUNK_FRAMING_SLACK_BYTES`]. Only the data counts
    /// toward `body_bytes_max`, so without this bound a peer could send about a thousand
    /// times that many bytes, in chunks of one byte behind long extensions; with it, a
    /// body costs at most about twice its limit on the wire, whatever its chunks.
    pub fn chunk_framing_bytes_max(&self) -> u64 {
        self.body_bytes_max
            .saturating_add(Self::CHUNK_FRAMING_SLACK_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes_max: Self::HEAD_BYTES_MAX_DEFAULT,
            header_count_max: Self::HEADER_COUNT_MAX_DEFAULT,
            body_captured_bytes_max: Self::BODY_CAPTURED_BYTES_MAX_DEFAULT,
            body_bytes_max: Self::BODY_BYTES_MAX_DEFAULT,
            chunk_line_bytes_max: Self::CHUNK_LINE_BYTES_MAX_DEFAULT,
            informational_count_max: Self::INFORMATIONAL_COUNT_MAX_DEFAULT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let limits = Limits::default();
        assert_eq!(limits.head_bytes_max, 16 * 1024);
        assert_eq!(limits.header_count_max, 100);
        assert_eq!(limits.body_captured_bytes_max, 64 * 1024);
        assert_eq!(limits.body_bytes_max, 1024 * 1024);
        assert_eq!(limits.chunk_line_bytes_max, 1024);
        assert_eq!(limits.informational_count_max, 16);
    }
}
