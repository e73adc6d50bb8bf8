//! Identifier newtypes. Each is parsed once at the edge ([`TenantId::parse`], …) and is
//! valid by construction afterwards, so the rest of the core never re-checks.
//!
//! String ids share their text through an `Arc<str>`: deliveries, log entries and matcher
//! indexes all hold copies, and cloning must not allocate. Event ids, which each event
//! holds alone, are kept inline when short ([`EventId`]).

use std::fmt;
use std::sync::Arc;

/// Longest [`TenantId`], [`WebhookId`] or [`LocationId`], in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest [`EventId`], in bytes. Event ids are sent as the `webhook-id` header and stored
/// by receivers for de-duplication; 128 bytes fits any UUID or ULID with a prefix.
pub const EVENT_ID_BYTES_MAX: usize = 128;
/// Longest [`EventType`], in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;
/// Most dot-separated segments in an [`EventType`] (bounds the prefix lookups per match).
pub const EVENT_TYPE_SEGMENTS_MAX: usize = 8;

/// Why an identifier was rejected. Always the caller's fault: ids come from API input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of id (`"tenant id"`, `"event type"`, …).
        kind: &'static str,
    },
    /// The id is longer than its limit.
    #[error("{kind} is {bytes} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains a character outside its charset.
    #[error("{kind} contains {character:?} at byte {offset}; allowed: {allowed}")]
    Character {
        /// Which kind of id.
        kind: &'static str,
        /// The offending character.
        character: char,
        /// Its byte offset.
        offset: usize,
        /// A description of the allowed charset.
        allowed: &'static str,
    },
    /// An event type with an empty segment (`a..b`, `.a`, `a.`) or too many segments.
    #[error("event type {value:?} must be 1..={max} non-empty segments separated by '.'")]
    Segments {
        /// The rejected value (at most [`EVENT_TYPE_BYTES_MAX`] bytes of it).
        value: String,
        /// [`EVENT_TYPE_SEGMENTS_MAX`].
        max: usize,
    },
}

/// The bytes a charset allows, one entry per byte value: a lookup per byte where a chain
/// of range tests was. Replay parses again every id it reads back, and those tests were
/// ~14 % of a restart with a million pending deliveries.
type ByteSet = [bool; 256];

/// ASCII letters and digits, and `extra`.
const fn byte_set(extra: &[u8]) -> ByteSet {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 256 {
        set[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        set[extra[i] as usize] = true;
        i += 1;
    }
    set
}

/// `[A-Za-z0-9_.-]`: tenant, webhook and location ids, and event types (whose dots are
/// then checked as separators).
static NAME_BYTES: ByteSet = byte_set(b"_-.");
/// `[A-Za-z0-9_.:-]`: event ids.
static EVENT_ID_BYTES: ByteSet = byte_set(b"_-.:");
/// `[0-9A-Fa-f]`: the digits of a delivery id.
static HEX_BYTES: ByteSet = {
    let mut set = [false; 256];
    let mut b = 0;
    while b < 256 {
        set[b] = (b as u8).is_ascii_hexdigit();
        b += 1;
    }
    set
};

fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    bytes: &'static ByteSet,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            kind,
            bytes: value.len(),
            max,
        });
    }
    // Every allowed character is ASCII, so bytes are checked one by one (no UTF-8
    // decoding) and the first refused one starts the character the error names.
    if let Some(offset) = value.bytes().position(|b| !bytes[usize::from(b)]) {
        let character = value[offset..]
            .chars()
            .next()
            .expect("a character starts here");
        return Err(IdError::Character {
            kind,
            character,
            offset,
            allowed,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(Arc<str>);

        // The text's order, decided without reading it when both share one allocation:
        // a lookup by an id the registry handed out (most of them) ends on that
        // comparison. (`Arc`'s equality already checks the pointer first.)
        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &$name) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &$name) -> std::cmp::Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    return std::cmp::Ordering::Equal;
                }
                self.0.cmp(&other.0)
            }
        }

        impl $name {
            /// Parses an id, checking its length and charset.
            pub fn parse(value: &str) -> Result<$name, IdError> {
                check($kind, value, $max, $allowed, $ok)?;
                Ok($name(Arc::from(value)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, shared (a record written live holds it without a copy).
            pub fn shared_text(&self) -> Arc<str> {
                Arc::clone(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<$name, IdError> {
                $name::parse(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Equality, order and hash are the text's (derived through `Arc<str>`), so maps
        // keyed by the id may be searched with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A tenant: 1..=[`ID_BYTES_MAX`] bytes of `[A-Za-z0-9_.-]`.
    TenantId,
    "tenant id",
    ID_BYTES_MAX,
    "ASCII letters, digits, '_', '-', '.'",
    &NAME_BYTES
);
string_id!(
    /// A webhook, unique within its tenant: 1..=[`ID_BYTES_MAX`] bytes of `[A-Za-z0-9_.-]`.
    /// Chosen by the caller (the embedding layer generates `wh_<uuid>`), so that the core
    /// stays deterministic.
    WebhookId,
    "webhook id",
    ID_BYTES_MAX,
    "ASCII letters, digits, '_', '-', '.'",
    &NAME_BYTES
);
string_id!(
    /// A location within a tenant (the envelope's optional `location_id`):
    /// 1..=[`ID_BYTES_MAX`] bytes of `[A-Za-z0-9_.-]`.
    LocationId,
    "location id",
    ID_BYTES_MAX,
    "ASCII letters, digits, '_', '-', '.'",
    &NAME_BYTES
);
/// Longest [`EventId`] kept inline, without an allocation of its own: the common forms
/// fit (`evt_` and 32 hex digits as generated by the `herald` crate, and a bare UUID,
/// 36 bytes; a ULID or KSUID with a short prefix, ~30), and 38 bytes make the id 40
/// bytes in place, which keeps the dispatcher's per-event state in the allocator's
/// 96-byte size class. A pending event whose id had its own allocation paid 56 bytes
/// for it; longer ids (up to [`EVENT_ID_BYTES_MAX`]) are shared through an `Arc<str>`
/// as before.
const EVENT_ID_INLINE_BYTES_MAX: usize = 38;

/// An event, sent to receivers as the stable de-duplication id (`webhook-id`):
/// 1..=[`EVENT_ID_BYTES_MAX`] bytes of `[A-Za-z0-9_.:-]`, which is always a valid
/// header value and a valid signing message id.
///
/// Unlike the other string ids it is not always shared: an id of at most
/// `EVENT_ID_INLINE_BYTES_MAX` bytes is held in place (each event holds its own id,
/// so sharing saved nothing but cost an allocation per event); cloning copies it.
#[derive(Clone)]
pub struct EventId(EventIdText);

/// Where an [`EventId`]'s text is.
#[derive(Clone)]
enum EventIdText {
    /// The first `len` bytes of `bytes`: ASCII (the charset checked at parse).
    Inline {
        len: u8,
        bytes: [u8; EVENT_ID_INLINE_BYTES_MAX],
    },
    /// Longer than [`EVENT_ID_INLINE_BYTES_MAX`].
    Shared(Arc<str>),
}

// 40 bytes: the size a pending event's state was planned around (see
// `EVENT_ID_INLINE_BYTES_MAX`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<EventId>() <= 40);

impl EventId {
    /// Parses an id, checking its length and charset.
    pub fn parse(value: &str) -> Result<EventId, IdError> {
        check(
            "event id",
            value,
            EVENT_ID_BYTES_MAX,
            "ASCII letters, digits, '_', '-', '.', ':'",
            &EVENT_ID_BYTES,
        )?;
        if value.len() > EVENT_ID_INLINE_BYTES_MAX {
            return Ok(EventId(EventIdText::Shared(Arc::from(value))));
        }
        let mut bytes = [0; EVENT_ID_INLINE_BYTES_MAX];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Ok(EventId(EventIdText::Inline {
            // At most EVENT_ID_INLINE_BYTES_MAX (38), checked just above.
            len: value.len() as u8,
            bytes,
        }))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            EventIdText::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                // Copied from a `&str` at a char boundary (its length) by `parse`.
                .expect("an inline event id is the text it was parsed from"),
            EventIdText::Shared(text) => text,
        }
    }
}

impl PartialEq for EventId {
    fn eq(&self, other: &EventId) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventId {}

impl std::hash::Hash for EventId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &EventId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    fn cmp(&self, other: &EventId) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({:?})", self.as_str())
    }
}

impl std::str::FromStr for EventId {
    type Err = IdError;
    fn from_str(value: &str) -> Result<EventId, IdError> {
        EventId::parse(value)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// An event type such as `order.created`: 1..=[`EVENT_TYPE_BYTES_MAX`] bytes, at most
/// [`EVENT_TYPE_SEGMENTS_MAX`] non-empty segments of `[A-Za-z0-9_-]` separated by `.`.
/// No `*`: wildcards belong to filters ([`crate::EventFilter`]), never to events.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Parses an event type.
    pub fn parse(value: &str) -> Result<EventType, IdError> {
        check(
            "event type",
            value,
            EVENT_TYPE_BYTES_MAX,
            "ASCII letters, digits, '_', '-', and '.' between segments",
            &NAME_BYTES,
        )?;
        check_segments(value)?;
        Ok(EventType(Arc::from(value)))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The type's text, shared (a record written live holds it without a copy).
    pub fn shared_text(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// The proper prefixes of this type at segment boundaries, shortest first:
    /// `a.b.c` yields `a`, `a.b`. A filter `p.*` matches exactly when `p` is one of them.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> + '_ {
        self.0
            .match_indices('.')
            .map(move |(index, _)| &self.0[..index])
    }
}

pub(crate) fn check_segments(value: &str) -> Result<(), IdError> {
    let segments = value.split('.');
    let mut count = 0;
    for segment in segments {
        count += 1;
        if segment.is_empty() || count > EVENT_TYPE_SEGMENTS_MAX {
            return Err(IdError::Segments {
                value: value.chars().take(EVENT_TYPE_BYTES_MAX).collect(),
                max: EVENT_TYPE_SEGMENTS_MAX,
            });
        }
    }
    Ok(())
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventType({:?})", &*self.0)
    }
}

impl std::str::FromStr for EventType {
    type Err = IdError;
    fn from_str(value: &str) -> Result<EventType, IdError> {
        EventType::parse(value)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A delivery: one event to one webhook, across all of its attempts. Assigned by the
/// [`crate::Dispatcher`] from a per-shard counter (restored by replay), so ids are unique
/// within a shard and increase with acceptance order. Displayed as `del_<16 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

impl DeliveryId {
    /// Parses the `del_<hex>` form produced by `Display`.
    pub fn parse(value: &str) -> Result<DeliveryId, IdError> {
        let kind = "delivery id";
        let hex = value.strip_prefix("del_").ok_or(IdError::Character {
            kind,
            character: value.chars().next().unwrap_or(' '),
            offset: 0,
            allowed: "'del_' followed by 1..=16 hex digits",
        })?;
        check(kind, hex, 16, "hex digits", &HEX_BYTES)?;
        // `check` admitted only 1..=16 hex digits, which always fit a u64.
        u64::from_str_radix(hex, 16)
            .map(DeliveryId)
            .map_err(|_| IdError::Empty { kind })
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "del_{:016x}", self.0)
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for DeliveryId {
    type Err = IdError;
    fn from_str(value: &str) -> Result<DeliveryId, IdError> {
        DeliveryId::parse(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_and_webhook_ids() {
        let long = "a".repeat(ID_BYTES_MAX);
        let too_long = "a".repeat(ID_BYTES_MAX + 1);
        let cases: &[(&str, bool)] = &[
            ("acme", true),
            ("acme-1.eu_west", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("a b", false),
            ("a/b", false),
            ("é", false),
            ("a\r\n", false),
        ];
        for (value, ok) in cases {
            assert_eq!(TenantId::parse(value).is_ok(), *ok, "{value:?}");
            assert_eq!(WebhookId::parse(value).is_ok(), *ok, "{value:?}");
            assert_eq!(LocationId::parse(value).is_ok(), *ok, "{value:?}");
        }
    }

    #[test]
    fn string_ids_order_as_their_text_shared_or_not() {
        use std::cmp::Ordering;
        use std::collections::BTreeMap;
        let a = TenantId::parse("tenant-a").unwrap();
        let b = TenantId::parse("tenant-b").unwrap();
        let a_again = TenantId::parse("tenant-a").unwrap();
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal, "one allocation");
        assert_eq!(
            a.cmp(&a_again),
            Ordering::Equal,
            "two allocations, one text"
        );
        assert_eq!(a.cmp(&b), Ordering::Less);
        assert_eq!(b.cmp(&a_again), Ordering::Greater);
        // Maps find a key by an id that shares its allocation, by another copy of the
        // text, and by the text itself.
        let map: BTreeMap<TenantId, u32> = [(a.clone(), 1), (b.clone(), 2)].into();
        assert_eq!(map.get(&a), Some(&1));
        assert_eq!(map.get(&a_again), Some(&1));
        assert_eq!(map.get("tenant-b"), Some(&2));
        assert_eq!(map.get(&TenantId::parse("tenant-c").unwrap()), None);
    }

    #[test]
    fn event_ids() {
        let long = "e".repeat(EVENT_ID_BYTES_MAX);
        let too_long = "e".repeat(EVENT_ID_BYTES_MAX + 1);
        let cases: &[(&str, bool)] = &[
            ("evt_01J0ABC", true),
            ("urn:evt:1", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("a b", false),
            ("a,b", false),
        ];
        for (value, ok) in cases {
            assert_eq!(EventId::parse(value).is_ok(), *ok, "{value:?}");
            if *ok {
                assert!(herald_sign::validate_message_id(value).is_ok());
            }
        }
    }

    #[test]
    fn event_ids_inline_or_shared_behave_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
            let mut h = DefaultHasher::new();
            value.hash(&mut h);
            h.finish()
        }
        let texts = [
            "e".to_string(),
            "evt_0123456789abcdef0123456789abcdef".to_string(),
            "x".repeat(EVENT_ID_INLINE_BYTES_MAX - 1),
            "x".repeat(EVENT_ID_INLINE_BYTES_MAX),
            "x".repeat(EVENT_ID_INLINE_BYTES_MAX + 1),
            "y".repeat(EVENT_ID_BYTES_MAX),
        ];
        for text in &texts {
            let id = EventId::parse(text).unwrap();
            let inline = matches!(id.0, EventIdText::Inline { .. });
            assert_eq!(inline, text.len() <= EVENT_ID_INLINE_BYTES_MAX, "{text}");
            assert_eq!(id.as_str(), text);
            assert_eq!(id.as_ref(), text.as_str());
            assert_eq!(id.to_string(), *text);
            assert_eq!(format!("{id:?}"), format!("EventId({text:?})"));
            assert_eq!(id.clone(), id);
            assert_eq!(hash_of(&id), hash_of(text.as_str()));
        }
        for a in &texts {
            for b in &texts {
                let (ia, ib) = (EventId::parse(a).unwrap(), EventId::parse(b).unwrap());
                assert_eq!(ia.cmp(&ib), a.cmp(b), "{a} against {b}");
                assert_eq!(ia == ib, a == b);
            }
        }
    }

    #[test]
    fn event_types() {
        let many = ["s"; EVENT_TYPE_SEGMENTS_MAX].join(".");
        let too_many = ["s"; EVENT_TYPE_SEGMENTS_MAX + 1].join(".");
        let long = "t".repeat(EVENT_TYPE_BYTES_MAX);
        let too_long = "t".repeat(EVENT_TYPE_BYTES_MAX + 1);
        let cases: &[(&str, bool)] = &[
            ("order.created", true),
            ("payment.refund-issued.v2", true),
            ("ping", true),
            (&many, true),
            (&too_many, false),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("order.*", false),
            ("*", false),
            ("order..created", false),
            (".order", false),
            ("order.", false),
            ("order created", false),
        ];
        for (value, ok) in cases {
            assert_eq!(EventType::parse(value).is_ok(), *ok, "{value:?}");
        }
    }

    #[test]
    fn a_refused_character_is_named_whole_with_its_byte_offset() {
        for (value, character, offset) in [("abé", 'é', 2), ("a b", ' ', 1), ("😀x", '😀', 0)]
        {
            match TenantId::parse(value) {
                Err(IdError::Character {
                    character: c,
                    offset: o,
                    ..
                }) => assert_eq!((c, o), (character, offset), "{value}"),
                other => panic!("{value}: {other:?}"),
            }
        }
        // A `.` in an event id is allowed; a `*` never is.
        assert!(EventId::parse("evt.1:a-b_c").is_ok());
        assert!(EventId::parse("evt*").is_err());
    }

    #[test]
    fn prefixes_are_segment_boundaries() {
        let t = EventType::parse("a.bc.d").unwrap();
        assert_eq!(t.prefixes().collect::<Vec<_>>(), ["a", "a.bc"]);
        let t = EventType::parse("ping").unwrap();
        assert_eq!(t.prefixes().count(), 0);
    }

    #[test]
    fn delivery_id_round_trips() {
        for n in [0, 1, 0xdead_beef, u64::MAX] {
            let id = DeliveryId(n);
            assert_eq!(DeliveryId::parse(&id.to_string()), Ok(id));
        }
        for bad in ["", "del_", "del_xyz", "123", "del_00000000000000001"] {
            assert!(DeliveryId::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Every byte value against each charset as its documentation states it.
    #[test]
    fn each_charset_admits_exactly_its_documented_bytes() {
        for b in 0..=255u8 {
            let c = char::from(b);
            let text = c.to_string();
            let alnum = c.is_ascii_alphanumeric();
            let name = alnum || "_-.".contains(c);
            assert_eq!(TenantId::parse(&format!("a{text}")).is_ok(), name, "{c:?}");
            assert_eq!(WebhookId::parse(&format!("a{text}")).is_ok(), name, "{c:?}");
            assert_eq!(
                LocationId::parse(&format!("a{text}")).is_ok(),
                name,
                "{c:?}"
            );
            let event_id = alnum || "_-.:".contains(c);
            assert_eq!(
                EventId::parse(&format!("a{text}")).is_ok(),
                event_id,
                "{c:?}"
            );
            // A dot is a separator in an event type: put it between segments.
            let event_type = name;
            assert_eq!(
                EventType::parse(&format!("a{text}b")).is_ok(),
                event_type,
                "{c:?}"
            );
            let hex = c.is_ascii_hexdigit();
            assert_eq!(
                DeliveryId::parse(&format!("del_{text}")).is_ok(),
                hex,
                "{c:?}"
            );
        }
    }
}
