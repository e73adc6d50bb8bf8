//! The reusable output buffer of signing, and header lookup for verification.

use std::fmt;

/// Most headers any scheme emits (standard, ed25519 and olo emit three; stripe one).
pub const HEADERS_MAX: usize = 3;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Field {
    name_start: usize,
    name_end: usize,
    value_end: usize,
}

/// The headers produced by signing one message, as `(name, value)` pairs.
///
/// All names and values live in one `String`; signing a message clears it and writes
/// again, so once a buffer has grown to fit the largest message it is used for, signing
/// into it allocates nothing. Keep one per in-flight request (or a pool) and reuse it.
///
/// Values hold signatures, never secrets, so `Debug` prints them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SignedHeaders {
    text: String,
    fields: [Field; HEADERS_MAX],
    len: usize,
}

impl SignedHeaders {
    /// An empty buffer; it grows on first use.
    pub fn new() -> SignedHeaders {
        SignedHeaders::default()
    }

    /// An empty buffer with room for `text_bytes` bytes of names and values (about 150 for
    /// one standard signature; add 48 per extra secret).
    pub fn with_capacity(text_bytes: usize) -> SignedHeaders {
        SignedHeaders {
            text: String::with_capacity(text_bytes),
            ..SignedHeaders::default()
        }
    }

    /// Forgets the headers, keeping the memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.len = 0;
    }

    /// Number of headers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no header is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of names and values the buffer can hold without reallocating.
    pub fn capacity_bytes(&self) -> usize {
        self.text.capacity()
    }

    /// The headers in the order they should be sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.fields[..self.len].iter().map(move |field| {
            (
                &self.text[field.name_start..field.name_end],
                &self.text[field.name_end..field.value_end],
            )
        })
    }

    /// The value of header `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Starts a header; its value is whatever is appended to the text until the next
    /// `start`. Schemes emit at most [`HEADERS_MAX`] headers, an invariant of this crate.
    pub(crate) fn start(&mut self, name: &str) -> &mut String {
        assert!(
            self.len < HEADERS_MAX,
            "a scheme emitted more than {HEADERS_MAX} headers"
        );
        let name_start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        self.fields[self.len] = Field {
            name_start,
            name_end,
            value_end: name_end,
        };
        self.len += 1;
        &mut self.text
    }

    /// Records where the value of the header begun by the last `start` ends.
    pub(crate) fn finish(&mut self) {
        if let Some(field) = self.len.checked_sub(1).map(|last| &mut self.fields[last]) {
            field.value_end = self.text.len();
        }
    }

    /// Appends a whole header.
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        crate::encoding::push_ascii(self.start(name), value);
        self.finish();
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Read access to a received request's headers, by name, case-insensitively (HTTP field
/// names are case-insensitive). When a name repeats, the first occurrence is used.
pub trait HeaderLookup {
    /// The value of the first header called `name` (any case), if any.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<N: AsRef<str>, V: AsRef<str>> HeaderLookup for [(N, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(candidate, _)| candidate.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
    }
}

impl<N: AsRef<str>, V: AsRef<str>> HeaderLookup for Vec<(N, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<N: AsRef<str>, V: AsRef<str>, const LEN: usize> HeaderLookup for [(N, V); LEN] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl HeaderLookup for SignedHeaders {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

impl<T: HeaderLookup + ?Sized> HeaderLookup for &T {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_get_clear() {
        let mut headers = SignedHeaders::new();
        headers.push("webhook-id", b"msg_1");
        let text = headers.start("webhook-signature");
        text.push_str("v1,a");
        text.push_str(" v1,b");
        headers.finish();
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [("webhook-id", "msg_1"), ("webhook-signature", "v1,a v1,b")]
        );
        assert_eq!(headers.get("WEBHOOK-ID"), Some("msg_1"));
        assert_eq!(headers.get("webhook-timestamp"), None);
        let capacity = headers.capacity_bytes();
        headers.clear();
        assert!(headers.is_empty());
        assert_eq!(headers.iter().count(), 0);
        assert_eq!(headers.capacity_bytes(), capacity);
    }

    #[test]
    fn lookup_is_case_insensitive_and_first_wins() {
        let pairs = [("X-Olo-Signature", "a"), ("x-olo-signature", "b")];
        assert_eq!(pairs.header("x-OLO-signature"), Some("a"));
        let owned = vec![("Webhook-Id".to_string(), "m".to_string())];
        assert_eq!(owned.header("webhook-id"), Some("m"));
        assert_eq!(owned.header("webhook-ids"), None);
    }

    #[test]
    #[should_panic(expected = "more than 3 headers")]
    fn more_than_headers_max_is_a_bug() {
        let mut headers = SignedHeaders::new();
        for _ in 0..=HEADERS_MAX {
            headers.push("a", b"b");
        }
    }
}
