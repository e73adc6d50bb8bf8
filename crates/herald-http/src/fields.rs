//! The header fields of one outgoing request, in one allocation whatever their number.

use smallvec::SmallVec;

/// Header fields of one outgoing request, in send order.
///
/// A webhook request carries about ten fields (content type, user agent, signature
/// headers, the webhook's own). As `(String, String)` pairs that is twenty allocations
/// per request; here every name and value is appended to one text buffer, and where each
/// ends is kept inline for up to eight fields, so a list costs one
/// allocation however many fields it holds (two past that many). Size it once with
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
    fields: SmallVec<[Field; FIELDS_INLINE]>,
}

/// Fields whose ends a [`HeaderFields`] keeps without an allocation of their own: a
/// request's defaults and signature headers, and a few of the webhook's.
const FIELDS_INLINE: usize = 8;

/// Where a field's name and value end in the text; its name starts where the field
/// before it ended (at 0 for the first), its value where its name ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name_end: u32,
    value_end: u32,
}

impl HeaderFields {
    /// An empty list; it allocates on first use.
    pub fn new() -> HeaderFields {
        HeaderFields::default()
    }

    /// An empty list with room for `fields` fields and `text_bytes` bytes of names and
    /// values.
    pub fn with_capacity(fields: usize, text_bytes: usize) -> HeaderFields {
        HeaderFields {
            text: String::with_capacity(text_bytes),
            fields: SmallVec::with_capacity(fields),
        }
    }

    /// Appends a field whose name is a constant of the program ([`push`](Self::push);
    /// kept for callers that name their defaults this way).
    pub fn push_static(&mut self, name: &'static str, value: &str) {
        self.push(name, value);
    }

    /// Appends a field, copying name and value into the list's buffer.
    ///
    /// # Panics
    ///
    /// When the list's text would pass 4 GiB (requests are bounded far below it).
    pub fn push(&mut self, name: &str, value: &str) {
        let name_end = self.append(name);
        let value_end = self.append(value);
        self.fields.push(Field {
            name_end,
            value_end,
        });
    }

    fn append(&mut self, text: &str) -> u32 {
        self.text.push_str(text);
        u32::try_from(self.text.len()).expect("header fields' text within 4 GiB")
    }

    fn field(&self, index: usize) -> (&str, &str) {
        let start = match index.checked_sub(1) {
            Some(before) => self.fields[before].value_end as usize,
            None => 0,
        };
        let Field {
            name_end,
            value_end,
        } = self.fields[index];
        (
            &self.text[start..name_end as usize],
            &self.text[name_end as usize..value_end as usize],
        )
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
        (0..self.fields.len()).map(move |index| self.field(index))
    }

    /// Bytes the fields take in a message head: `name: value` and CRLF each.
    pub(crate) fn wire_bytes(&self) -> usize {
        self.iter()
            .map(|(name, value)| crate::encode::header_line_bytes(name.len(), value.len()))
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
        // One buffer for every name and value, nothing else allocated.
        assert_eq!(
            fields.text.len(),
            "content-typeapplication/jsonwebhook-idmsg_1user-agentX-Teamblue".len()
        );
        assert!(!fields.fields.spilled());
    }

    #[test]
    fn sized_once_it_does_not_grow() {
        let mut fields = HeaderFields::with_capacity(3, 33);
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
    fn more_fields_than_kept_inline_read_back_in_order() {
        let pairs: Vec<(String, String)> = (0..FIELDS_INLINE * 2 + 1)
            .map(|i| (format!("x-field-{i}"), "v".repeat(i)))
            .collect();
        let fields: HeaderFields = pairs.iter().cloned().collect();
        assert!(fields.fields.spilled());
        let read: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(read, pairs);
        assert_eq!(fields.len(), pairs.len());
        assert_eq!(fields.get("X-FIELD-16"), Some(&*"v".repeat(16)));
    }

    #[test]
    fn debug_shows_names_but_never_values() {
        let fields: HeaderFields = [("authorization", "Bearer s3cret")].into_iter().collect();
        let shown = format!("{fields:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
