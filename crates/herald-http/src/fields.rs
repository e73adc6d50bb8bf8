//! The header fields of one outgoing request, in two allocations whatever their number.

/// Header fields of one outgoing request, in send order.
///
/// A webhook request carries about ten fields (content type, user agent, signature
/// headers, the webhook's own). As `(String, String)` pairs that is twenty allocations
/// per request; here names known when the program is built are `&'static str`, and every
/// other name and every value is appended to one text buffer, so a list costs the buffer
/// and the field index however many fields it holds. Size it once with
/// [`with_capacity`](Self::with_capacity) and it does not grow.
///
/// Nothing is validated on the way in: [`encode_request_fields`](crate::encode_request_fields)
/// checks every name and value before writing a byte, as [`encode_request`](crate::encode_request)
/// does for slices.
///
/// `Debug` prints names only: values may be credentials (a webhook's `Authorization`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderFields {
    text: String,
    fields: Vec<Field>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: Name,
    /// `text[value_start..value_end]`.
    value_start: usize,
    value_end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Static(&'static str),
    /// `text[start..end]`.
    Text {
        start: usize,
        end: usize,
    },
}

impl HeaderFields {
    /// An empty list; it allocates on first use.
    pub fn new() -> HeaderFields {
        HeaderFields::default()
    }

    /// An empty list with room for `fields` fields and `text_bytes` bytes of names (those
    /// not pushed as `'static`) and values.
    pub fn with_capacity(fields: usize, text_bytes: usize) -> HeaderFields {
        HeaderFields {
            text: String::with_capacity(text_bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Appends a field whose name lives for the whole program (no copy of the name).
    pub fn push_static(&mut self, name: &'static str, value: &str) {
        let (value_start, value_end) = self.append(value);
        self.fields.push(Field {
            name: Name::Static(name),
            value_start,
            value_end,
        });
    }

    /// Appends a field, copying name and value into the list's buffer.
    pub fn push(&mut self, name: &str, value: &str) {
        let (start, end) = self.append(name);
        let (value_start, value_end) = self.append(value);
        self.fields.push(Field {
            name: Name::Text { start, end },
            value_start,
            value_end,
        });
    }

    fn append(&mut self, text: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(text);
        (start, self.text.len())
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the list holds no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Forgets every field, keeping the memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    /// Names and values in send order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.fields.iter().map(move |field| {
            let name = match field.name {
                Name::Static(name) => name,
                Name::Text { start, end } => &self.text[start..end],
            };
            (name, &self.text[field.value_start..field.value_end])
        })
    }

    /// Bytes the fields take in a message head: `name: value` and CRLF each.
    pub(crate) fn wire_bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|field| {
                let name = match field.name {
                    Name::Static(name) => name.len(),
                    Name::Text { start, end } => end - start,
                };
                crate::encode::header_line_bytes(name, field.value_end - field.value_start)
            })
            .sum()
    }

    /// Names in send order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        self.iter().map(|(name, _)| name)
    }

    /// The value of the first field called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Whether a field called `name` (any case) is present.
    pub fn contains(&self, name: &str) -> bool {
        self.names()
            .any(|candidate| candidate.eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Debug for HeaderFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderFields")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for HeaderFields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> HeaderFields {
        let mut fields = HeaderFields::new();
        for (name, value) in pairs {
            fields.push(name.as_ref(), value.as_ref());
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_copied_names_keep_their_order_and_values() {
        let mut fields = HeaderFields::with_capacity(4, 64);
        fields.push_static("content-type", "application/json");
        fields.push("webhook-id", "msg_1");
        fields.push_static("user-agent", "");
        fields.push("X-Team", "blue");
        assert_eq!(
            fields.iter().collect::<Vec<_>>(),
            [
                ("content-type", "application/json"),
                ("webhook-id", "msg_1"),
                ("user-agent", ""),
                ("X-Team", "blue"),
            ]
        );
        assert_eq!(fields.len(), 4);
        assert_eq!(fields.get("x-team"), Some("blue"));
        assert_eq!(fields.get("WEBHOOK-ID"), Some("msg_1"));
        assert_eq!(fields.get("missing"), None);
        assert!(fields.contains("Content-Type"));
        // The static names took no room in the buffer.
        assert_eq!(
            fields.text.len(),
            "application/json".len() + "webhook-idmsg_1".len() + "X-Teamblue".len()
        );
    }

    #[test]
    fn sized_once_it_does_not_grow() {
        let mut fields = HeaderFields::with_capacity(3, 32);
        let (text, index) = (fields.text.as_ptr(), fields.fields.as_ptr());
        fields.push_static("a", "0123456789");
        fields.push("b", "0123456789");
        fields.push_static("c", "0123456789");
        assert_eq!(
            (fields.text.as_ptr(), fields.fields.as_ptr()),
            (text, index)
        );
        fields.clear();
        assert!(fields.is_empty());
        assert_eq!(fields.iter().count(), 0);
    }

    #[test]
    fn debug_shows_names_but_never_values() {
        let fields: HeaderFields = [("authorization", "Bearer s3cret")].into_iter().collect();
        let shown = format!("{fields:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
