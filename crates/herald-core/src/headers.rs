//! The response headers an attempt keeps, in one allocation.

use smallvec::SmallVec;

use crate::{RESPONSE_HEADERS_MAX, RESPONSE_HEADER_BYTES_MAX};

// The ends of the kept text fit in `u16`.
const _: () = assert!(RESPONSE_HEADER_BYTES_MAX <= u16::MAX as usize);

/// The response headers an attempt keeps: in arrival order, names lower-cased, values
/// as text (invalid UTF-8 replaced), at most [`RESPONSE_HEADERS_MAX`] of them and at most
/// [`RESPONSE_HEADER_BYTES_MAX`] bytes of names plus values; a header that would cross
/// the byte limit is left out. Every value of this type is within those limits:
/// [`ResponseHeaders::bounded`] is the only way to fill one, and applying it to its own
/// result changes nothing.
///
/// Names and values share one text buffer and the ends of all of them are inline, so an
/// attempt's headers cost one allocation however many the receiver sent, and none when
/// it sent none. They travel that way from the driver's [`crate::Outcome`] into the
/// outcome record (archived as the list of name and value strings it always was).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// Each kept header's name, then its value, then the next header's name.
    text: String,
    /// Where each header's name and value end in `text`; a name starts where the value
    /// before it ended.
    ends: SmallVec<[(u16, u16); RESPONSE_HEADERS_MAX]>,
}

impl ResponseHeaders {
    /// No headers.
    pub fn new() -> ResponseHeaders {
        ResponseHeaders::default()
    }

    /// The headers of `fields` (name, value bytes; in arrival order) that the limits
    /// keep, as described on the type. `fields` is walked twice: once to size the text
    /// buffer, once to fill it.
    pub fn bounded<N, V, I>(fields: I) -> ResponseHeaders
    where
        N: AsRef<str>,
        V: AsRef<[u8]>,
        I: IntoIterator<Item = (N, V)>,
        I::IntoIter: Clone,
    {
        let fields = fields.into_iter();
        // Sized by the bytes as received: replacing invalid UTF-8 may change a value's
        // length, and then the buffer grows once.
        let mut budget = HeaderBudget::default();
        let mut capacity = 0;
        for (name, value) in fields.clone() {
            let size = name.as_ref().len() + value.as_ref().len();
            match budget.admit(size) {
                Admit::Stop => break,
                Admit::Skip => {}
                Admit::Keep => capacity += size,
            }
        }
        let mut kept = ResponseHeaders {
            text: String::with_capacity(capacity),
            ends: SmallVec::new(),
        };
        let mut budget = HeaderBudget::default();
        for (name, value) in fields {
            let (name, value) = (name.as_ref(), String::from_utf8_lossy(value.as_ref()));
            match budget.admit(name.len() + value.len()) {
                Admit::Stop => break,
                Admit::Skip => continue,
                Admit::Keep => {
                    let start = kept.text.len();
                    kept.text.push_str(name);
                    kept.text[start..].make_ascii_lowercase();
                    let name_end = kept.text.len();
                    kept.text.push_str(&value);
                    // Both within RESPONSE_HEADER_BYTES_MAX, checked above to fit.
                    kept.ends.push((name_end as u16, kept.text.len() as u16));
                }
            }
        }
        kept
    }

    /// [`ResponseHeaders::bounded`] of a parsed response's headers, taking over their
    /// buffer when the limits keep every one and all of it is UTF-8 (a receiver's usual
    /// answer): the names are lower-cased in place and nothing is allocated or copied.
    pub fn from_received(received: herald_http::ReceivedHeaders) -> ResponseHeaders {
        let bytes = received.as_bytes();
        if received.len() > RESPONSE_HEADERS_MAX
            || bytes.len() > RESPONSE_HEADER_BYTES_MAX
            || std::str::from_utf8(bytes).is_err()
        {
            return ResponseHeaders::bounded(received.iter());
        }
        // Every field fits within both limits, and the text is the fields' own: what
        // `bounded` would keep, byte for byte, once the names are lower-case.
        let (bytes, ends) = received.into_parts();
        let mut text = String::from_utf8(bytes).expect("checked to be UTF-8 above");
        let mut kept = SmallVec::new();
        let mut start = 0;
        for (name_end, value_end) in ends {
            // A name ends where its value starts and starts where the value before it
            // ended: both are boundaries of the text's characters (names are text).
            text[start..name_end].make_ascii_lowercase();
            // Both within RESPONSE_HEADER_BYTES_MAX, checked above to fit.
            kept.push((name_end as u16, value_end as u16));
            start = value_end;
        }
        ResponseHeaders { text, ends: kept }
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The headers in arrival order, as (name, value).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = match i.checked_sub(1) {
                Some(before) => usize::from(self.ends[before].1),
                None => 0,
            };
            let (name_end, value_end) = self.ends[i];
            let (name_end, value_end) = (usize::from(name_end), usize::from(value_end));
            (&self.text[start..name_end], &self.text[name_end..value_end])
        })
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The headers as owned pairs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// Names only: a receiver's headers may carry session cookies or tokens.
impl std::fmt::Debug for ResponseHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHeaders")
            .field("names", &self.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What the response-header limits say about the next header, in arrival order.
#[derive(Default)]
struct HeaderBudget {
    kept: usize,
    bytes: usize,
}

enum Admit {
    /// [`RESPONSE_HEADERS_MAX`] are kept: no later header is.
    Stop,
    /// This one would cross [`RESPONSE_HEADER_BYTES_MAX`]; a smaller one after it may fit.
    Skip,
    Keep,
}

impl HeaderBudget {
    fn admit(&mut self, size: usize) -> Admit {
        if self.kept == RESPONSE_HEADERS_MAX {
            return Admit::Stop;
        }
        if self.bytes + size > RESPONSE_HEADER_BYTES_MAX {
            return Admit::Skip;
        }
        self.kept += 1;
        self.bytes += size;
        Admit::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_http::ReceivedHeaders;
    use proptest::prelude::*;

    fn received(fields: &[(String, Vec<u8>)]) -> ReceivedHeaders {
        fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }

    #[test]
    fn a_usual_answer_keeps_the_parsers_buffer() {
        let fields = received(&[
            ("Content-Type".into(), b"application/json".to_vec()),
            ("X-Request-Id".into(), b"r-1".to_vec()),
        ]);
        let at = fields.as_bytes().as_ptr();
        let kept = ResponseHeaders::from_received(fields);
        assert_eq!(kept.text.as_ptr(), at, "taken over, not copied");
        assert_eq!(
            kept.to_pairs(),
            [
                ("content-type".to_string(), "application/json".to_string()),
                ("x-request-id".to_string(), "r-1".to_string()),
            ]
        );
    }

    proptest! {
        /// Taking over the parser's buffer keeps exactly what bounding a copy keeps:
        /// names in any case, values that are not UTF-8, more headers or bytes than
        /// the limits allow.
        #[test]
        fn taking_over_the_buffer_keeps_what_bounding_keeps(
            fields in prop::collection::vec(
                (
                    "[A-Za-z][A-Za-z0-9-]{0,15}",
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..40),
                        "[ -~]{0,300}".prop_map(String::into_bytes),
                    ],
                ),
                0..24,
            )
        ) {
            let bounded = ResponseHeaders::bounded(
                fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            );
            let taken = ResponseHeaders::from_received(received(&fields));
            prop_assert_eq!(taken.to_pairs(), bounded.to_pairs());
            prop_assert_eq!(taken, bounded);
        }
    }
}
