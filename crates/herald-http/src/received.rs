//! The header fields of a received message, in one allocation whatever their number.

use smallvec::SmallVec;

/// Fields whose ends are held inline: a webhook request carries about ten, a response
/// fewer; a head with more moves the ends to the heap (one allocation more).
const INLINE_FIELDS: usize = 12;

/// Header fields of a received request or response, in arrival order, names as sent.
///
/// As `(String, Vec<u8>)` pairs, owning a head's fields costs two allocations per field;
/// here every name and value is appended to one byte buffer and the ends of up to
/// `INLINE_FIELDS` fields are held inline, so a head costs one allocation however many
/// fields it holds. Values are bytes: a field may carry `obs-text`, which is not text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReceivedHeaders {
    /// Each field's name, then its value, then the next field's name.
    bytes: Vec<u8>,
    /// Where each field's name and value end in `bytes`; a name starts where the value
    /// before it ended.
    ends: SmallVec<[(u32, u32); INLINE_FIELDS]>,
}

impl ReceivedHeaders {
    /// An empty list.
    pub fn new() -> ReceivedHeaders {
        ReceivedHeaders::default()
    }

    /// An empty list that holds `fields` fields of `name_bytes` and `value_bytes` in all
    /// without growing.
    pub fn with_capacity(fields: usize, name_bytes: usize, value_bytes: usize) -> ReceivedHeaders {
        ReceivedHeaders {
            bytes: Vec::with_capacity(name_bytes + value_bytes),
            ends: SmallVec::with_capacity(fields),
        }
    }

    /// Copies parsed header fields out of a head buffer, sized once.
    pub(crate) fn from_parsed(headers: &[httparse::Header<'_>]) -> ReceivedHeaders {
        let bytes = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut received = ReceivedHeaders::with_capacity(headers.len(), bytes, 0);
        for header in headers {
            received.push(header.name, header.value);
        }
        received
    }

    /// Appends a field.
    ///
    /// # Panics
    /// When the list would pass 4 GiB (a parsed head is bounded by
    /// [`crate::Limits::head_bytes_max`], far below it).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        let offset = |at: usize| u32::try_from(at).expect("header fields of less than 4 GiB");
        self.ends.push((offset(name_end), offset(self.bytes.len())));
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The fields in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + Clone + '_ {
        self.spans().map(|(name, value)| {
            let name = std::str::from_utf8(&self.bytes[name])
                .expect("names are pushed as text and end where pushed");
            (name, &self.bytes[value])
        })
    }

    /// Where each field's name and value are in `bytes`.
    fn spans(
        &self,
    ) -> impl ExactSizeIterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + Clone + '_
    {
        (0..self.ends.len()).map(move |i| {
            let start = match i.checked_sub(1) {
                Some(before) => self.ends[before].1 as usize,
                None => 0,
            };
            let (name_end, value_end) = (self.ends[i].0 as usize, self.ends[i].1 as usize);
            (start..name_end, name_end..value_end)
        })
    }

    /// The value of the first field called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.spans()
            .find(|(candidate, _)| {
                self.bytes[candidate.clone()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|(_, value)| &self.bytes[value])
    }

    /// Every name and value, back to back in arrival order (a field's name, its value,
    /// the next field's name).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The buffer of [`ReceivedHeaders::as_bytes`], and where each field's name and value
    /// end in it, for a caller that keeps the fields in a form of its own without copying
    /// them.
    pub fn into_parts(self) -> (Vec<u8>, impl ExactSizeIterator<Item = (usize, usize)>) {
        let ends = self
            .ends
            .into_iter()
            .map(|(name_end, value_end)| (name_end as usize, value_end as usize));
        (self.bytes, ends)
    }

    /// The fields as owned pairs.
    pub fn to_pairs(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect()
    }
}

/// Names only: values may carry credentials (`Authorization`, API keys).
impl std::fmt::Debug for ReceivedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedHeaders")
            .field("names", &self.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for ReceivedHeaders {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> ReceivedHeaders {
        let mut headers = ReceivedHeaders::new();
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_names_and_byte_values() {
        let headers: ReceivedHeaders = [
            ("Host", &b"a.example"[..]),
            ("X-Empty", b""),
            ("x-bytes", b"caf\xe9"),
            ("host", b"second"),
        ]
        .into_iter()
        .collect();
        assert_eq!(headers.len(), 4);
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [
                ("Host", &b"a.example"[..]),
                ("X-Empty", b""),
                ("x-bytes", b"caf\xe9"),
                ("host", b"second"),
            ]
        );
        assert_eq!(
            headers.get("HOST"),
            Some(&b"a.example"[..]),
            "the first of two"
        );
        assert_eq!(headers.get("x-empty"), Some(&b""[..]));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(
            headers.to_pairs()[2],
            ("x-bytes".to_owned(), b"caf\xe9".to_vec())
        );
        assert_eq!(
            headers.as_bytes(),
            b"Hosta.exampleX-Emptyx-bytescaf\xe9hostsecond"
        );
        let (bytes, ends) = headers.clone().into_parts();
        assert_eq!(bytes, headers.as_bytes());
        assert_eq!(
            ends.collect::<Vec<_>>(),
            [(4, 13), (20, 20), (27, 31), (35, 41)]
        );
        assert!(ReceivedHeaders::new().iter().next().is_none());
        let debug = format!("{headers:?}");
        assert!(
            debug.contains("X-Empty") && !debug.contains("a.example"),
            "{debug}"
        );
    }

    #[test]
    fn sized_once_it_does_not_grow() {
        let mut headers = ReceivedHeaders::with_capacity(2, 8, 8);
        let bytes = headers.bytes.as_ptr();
        headers.push("Host", b"a.b");
        headers.push("Accept", b"*/*");
        assert_eq!(headers.bytes.as_ptr(), bytes);
        assert!(
            !headers.ends.spilled(),
            "the ends of a few fields are inline"
        );
        let many: ReceivedHeaders = (0..INLINE_FIELDS + 1)
            .map(|i| (format!("x-{i}"), b"v"))
            .collect();
        assert_eq!(many.len(), INLINE_FIELDS + 1);
        assert_eq!(
            many.iter().last(),
            Some((&*format!("x-{INLINE_FIELDS}"), &b"v"[..]))
        );
    }
}
