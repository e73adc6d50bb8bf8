//! Event filters and the per-tenant index that matches an event type to webhooks.
//!
//! Matching cost does not grow with the number of webhooks in a tenant, only with the
//! number of matches: exact types and `prefix.*` filters are hash lookups (one per
//! segment boundary of the event type, at most [`crate::EVENT_TYPE_SEGMENTS_MAX`]), and `*`
//! subscribers are kept in their own set.

use std::fmt;

use crate::ids::{check_segments, EventType, IdError, WebhookId, EVENT_TYPE_SEGMENTS_MAX};
use crate::FastHashMap;

/// Which events a webhook receives. Parsed from text:
/// * `*`: every event type;
/// * `order.*`: every type below `order` at a segment boundary (`order.created`,
///   `order.item.added`; not `order` itself, not `orders.created`);
/// * `order.created`: exactly that type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventFilter {
    /// `*`.
    All,
    /// `prefix.*`; holds the prefix without the trailing `.*`.
    Prefix(EventType),
    /// An exact type.
    Exact(EventType),
}

impl EventFilter {
    /// Parses `*`, `prefix.*` or an exact event type (caller's error if invalid).
    pub fn parse(value: &str) -> Result<EventFilter, IdError> {
        if value == "*" {
            return Ok(EventFilter::All);
        }
        if let Some(prefix) = value.strip_suffix(".*") {
            check_segments(prefix)?;
            return EventType::parse(prefix).map(EventFilter::Prefix);
        }
        EventType::parse(value).map(EventFilter::Exact)
    }

    /// Whether this filter selects `event_type` (the reference semantics the index
    /// implements).
    pub fn matches(&self, event_type: &EventType) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Exact(exact) => exact == event_type,
            EventFilter::Prefix(prefix) => event_type
                .as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFilter::All => f.write_str("*"),
            EventFilter::Prefix(prefix) => write!(f, "{prefix}.*"),
            EventFilter::Exact(exact) => f.write_str(exact.as_str()),
        }
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventFilter({self})")
    }
}

impl std::str::FromStr for EventFilter {
    type Err = IdError;
    fn from_str(value: &str) -> Result<EventFilter, IdError> {
        EventFilter::parse(value)
    }
}

/// A sorted, duplicate-free list of webhook ids. Sorted vectors iterate several times
/// faster than `BTreeSet`s, and insertion cost (a memmove) is paid only on configuration
/// changes, never per event.
#[derive(Debug, Default, Clone)]
struct IdSet(Vec<WebhookId>);

impl IdSet {
    fn insert(&mut self, id: &WebhookId) {
        if let Err(at) = self.0.binary_search(id) {
            self.0.insert(at, id.clone());
        }
    }

    fn remove(&mut self, id: &WebhookId) {
        if let Ok(at) = self.0.binary_search(id) {
            self.0.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Index from event types to the webhooks whose filters select them.
///
/// The hash maps are only ever probed, never iterated, so their seeds cannot leak into
/// outputs; results come out in id order.
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    exact: FastHashMap<EventType, IdSet>,
    prefix: FastHashMap<EventType, IdSet>,
    all: IdSet,
}

impl Matcher {
    /// An empty index.
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// Adds `webhook` under each of `filters`.
    pub fn insert(&mut self, webhook: &WebhookId, filters: &[EventFilter]) {
        for filter in filters {
            match filter {
                EventFilter::All => self.all.insert(webhook),
                EventFilter::Exact(t) => self.exact.entry(t.clone()).or_default().insert(webhook),
                EventFilter::Prefix(p) => self.prefix.entry(p.clone()).or_default().insert(webhook),
            }
        }
    }

    /// Removes `webhook` from under each of `filters` (the ones it was inserted with).
    pub fn remove(&mut self, webhook: &WebhookId, filters: &[EventFilter]) {
        fn remove_from(
            map: &mut FastHashMap<EventType, IdSet>,
            key: &EventType,
            webhook: &WebhookId,
        ) {
            if let Some(set) = map.get_mut(key) {
                set.remove(webhook);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        for filter in filters {
            match filter {
                EventFilter::All => self.all.remove(webhook),
                EventFilter::Exact(t) => remove_from(&mut self.exact, t, webhook),
                EventFilter::Prefix(p) => remove_from(&mut self.prefix, p, webhook),
            }
        }
    }

    /// Appends the webhooks matching `event_type` to `out`, sorted by id and without
    /// duplicates (a webhook whose several filters match appears once).
    pub fn matches(&self, event_type: &EventType, out: &mut Vec<WebhookId>) {
        // At most 2 + EVENT_TYPE_SEGMENTS_MAX sorted lists (all, exact, one per prefix):
        // merge them, no sort needed. Gathered on the stack: this runs for every event.
        let mut lists: [&[WebhookId]; 2 + EVENT_TYPE_SEGMENTS_MAX] =
            [&[]; 2 + EVENT_TYPE_SEGMENTS_MAX];
        let sets = std::iter::once(&self.all)
            .chain(self.exact.get(event_type.as_str()))
            .chain(event_type.prefixes().filter_map(|p| self.prefix.get(p)));
        let mut count = 0;
        for set in sets.filter(|set| !set.is_empty()) {
            lists[count] = set.0.as_slice();
            count += 1;
        }
        match &mut lists[..count] {
            [] => {}
            [only] => out.extend_from_slice(only),
            several => merge_unique(several, out),
        }
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.exact.is_empty() && self.prefix.is_empty()
    }
}

/// Merges sorted, duplicate-free lists into `out`, dropping ids present in several.
fn merge_unique(lists: &mut [&[WebhookId]], out: &mut Vec<WebhookId>) {
    loop {
        let mut min: Option<&WebhookId> = None;
        for list in lists.iter() {
            if let Some(head) = list.first() {
                if min.is_none_or(|m| head < m) {
                    min = Some(head);
                }
            }
        }
        let Some(min) = min.cloned() else {
            return;
        };
        for list in lists.iter_mut() {
            if list.first() == Some(&min) {
                *list = &list[1..];
            }
        }
        out.push(min);
    }
}

impl std::borrow::Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> EventType {
        EventType::parse(s).unwrap()
    }

    #[test]
    fn filter_parsing() {
        let cases: &[(&str, Option<EventFilter>)] = &[
            ("*", Some(EventFilter::All)),
            ("order.*", Some(EventFilter::Prefix(t("order")))),
            ("order.item.*", Some(EventFilter::Prefix(t("order.item")))),
            (
                "order.created",
                Some(EventFilter::Exact(t("order.created"))),
            ),
            ("order*", None),
            ("*.created", None),
            (".*", None),
            ("order.*.x", None),
            ("", None),
            ("**", None),
        ];
        for (text, want) in cases {
            let got = EventFilter::parse(text).ok();
            assert_eq!(&got, want, "{text:?}");
            if let Some(filter) = got {
                assert_eq!(filter.to_string(), *text);
            }
        }
    }

    #[test]
    fn filter_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything.at.all", true),
            ("order.*", "order.created", true),
            ("order.*", "order.item.added", true),
            ("order.*", "order", false),
            ("order.*", "orders.created", false),
            ("order.created", "order.created", true),
            ("order.created", "order.created.v2", false),
            ("order.item.*", "order.item.added", true),
            ("order.item.*", "order.created", false),
        ];
        for (filter, event, want) in cases {
            let filter = EventFilter::parse(filter).unwrap();
            assert_eq!(filter.matches(&t(event)), *want, "{filter} {event}");
        }
    }

    #[test]
    fn index_dedups_and_removes() {
        let a = WebhookId::parse("a").unwrap();
        let b = WebhookId::parse("b").unwrap();
        let fa = vec![
            EventFilter::parse("order.*").unwrap(),
            EventFilter::parse("order.created").unwrap(),
        ];
        let fb = vec![EventFilter::All];
        let mut m = Matcher::new();
        m.insert(&b, &fb);
        m.insert(&a, &fa);
        let mut out = Vec::new();
        m.matches(&t("order.created"), &mut out);
        assert_eq!(out, [a.clone(), b.clone()]);
        out.clear();
        m.matches(&t("payment.done"), &mut out);
        assert_eq!(out, std::slice::from_ref(&b));
        m.remove(&a, &fa);
        m.remove(&b, &fb);
        assert!(m.is_empty());
    }

    #[test]
    fn every_list_an_event_type_can_meet_is_merged() {
        // The deepest event type meets the most lists: `*`, its exact type, and one
        // per prefix (seven for eight segments).
        let segments: Vec<String> = (0..EVENT_TYPE_SEGMENTS_MAX)
            .map(|i| format!("s{i}"))
            .collect();
        let event = t(&segments.join("."));
        let mut filters = vec!["*".to_string(), segments.join(".")];
        for end in 1..EVENT_TYPE_SEGMENTS_MAX {
            filters.push(format!("{}.*", segments[..end].join(".")));
        }
        let mut m = Matcher::new();
        let mut want = Vec::new();
        // Inserted in reverse so that the lists' order differs from the ids'.
        for (i, filter) in filters.iter().enumerate().rev() {
            let id = WebhookId::parse(&format!("w{i:02}")).unwrap();
            m.insert(&id, &[EventFilter::parse(filter).unwrap()]);
            want.push(id);
        }
        want.sort();
        let mut got = Vec::new();
        m.matches(&event, &mut got);
        assert_eq!(got.len(), 2 + (EVENT_TYPE_SEGMENTS_MAX - 1));
        assert_eq!(got, want);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string)
    }

    fn event_type() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("."))
    }

    fn filter() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            event_type(),
            event_type().prop_map(|t| format!("{t}.*")),
        ]
    }

    proptest! {
        /// The index agrees with the reference semantics of each filter.
        #[test]
        fn index_agrees_with_filters(
            hooks in prop::collection::vec(prop::collection::vec(filter(), 1..4), 1..12),
            events in prop::collection::vec(event_type(), 1..8),
        ) {
            let mut m = Matcher::new();
            let parsed: Vec<(WebhookId, Vec<EventFilter>)> = hooks.iter().enumerate().map(|(i, fs)| {
                (WebhookId::parse(&format!("w{i:02}")).unwrap(),
                 fs.iter().map(|f| EventFilter::parse(f).unwrap()).collect())
            }).collect();
            for (id, fs) in &parsed {
                m.insert(id, fs);
            }
            for e in &events {
                let e = t(e);
                let mut got = Vec::new();
                m.matches(&e, &mut got);
                let want: Vec<WebhookId> = parsed.iter()
                    .filter(|(_, fs)| fs.iter().any(|f| f.matches(&e)))
                    .map(|(id, _)| id.clone()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
