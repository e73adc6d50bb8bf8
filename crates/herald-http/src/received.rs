//! The header fields of a received request, in three allocations whatever their number.

/// Header fields of a received request, in arrival order, names as sent.
///
/// A webhook or an ingest request carries about ten fields. As `(String, Vec<u8>)` pairs
/// owning them cost two allocations per field; here every name is appended to one text
/// buffer and every value to one byte buffer, so a head costs those two buffers and the
/// field index however many fields it holds. Values are bytes: a field may carry
/// `obs-text`, which is not text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReceivedHeaders {
    names: String,
    values: Vec<u8>,
    /// Where each field's name and value end; each starts where the one before ended.
    ends: Vec<(usize, usize)>,
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
            names: String::with_capacity(name_bytes),
            values: Vec::with_capacity(value_bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.names.push_str(name);
        self.values.extend_from_slice(value);
        self.ends.push((self.names.len(), self.values.len()));
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
        (0..self.ends.len()).map(move |i| {
            let (name_start, value_start) = match i.checked_sub(1) {
                Some(before) => self.ends[before],
                None => (0, 0),
            };
            let (name_end, value_end) = self.ends[i];
            (
                &self.names[name_start..name_end],
                &self.values[value_start..value_end],
            )
        })
    }

    /// The value of the first field called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
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
        let (names, values, ends) = (
            headers.names.as_ptr(),
            headers.values.as_ptr(),
            headers.ends.as_ptr(),
        );
        headers.push("Host", b"a.b");
        headers.push("Accept", b"*/*");
        assert_eq!(
            (
                headers.names.as_ptr(),
                headers.values.as_ptr(),
                headers.ends.as_ptr()
            ),
            (names, values, ends)
        );
    }
}
