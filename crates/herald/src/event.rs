//! Events as publishers hand them in.

use herald_core::{EventId, EventType, Idempotency, LocationId, NewEvent};

use crate::Error;

/// An event to publish: a type, JSON data, and optional id, location, API version and
/// creation time. Herald wraps it in the platform envelope
/// (`{"id","type","api_version","created_at","tenant_id","location_id","data"}`), signs
/// the envelope and sends exactly those bytes to every matching webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable id receivers de-duplicate on; generated (`evt_<uuid>`) when `None`.
    pub id: Option<EventId>,
    /// Type matched against webhook filters, e.g. `order.created`.
    pub event_type: EventType,
    /// Optional location within the tenant.
    pub location_id: Option<LocationId>,
    /// Payload schema version; the engine's default when `None`.
    pub api_version: Option<String>,
    /// Creation time (Unix ms); the time of publishing when `None`.
    pub created_at_ms: Option<u64>,
    /// The `data` member as raw JSON text (one JSON value). Checked when published.
    pub data: Vec<u8>,
    /// Publishing again with the same key while it is remembered (24 hours by default,
    /// [`crate::Builder::idempotency_window`]) records and sends nothing and answers
    /// with the first event ([`crate::Published::duplicate`]); publishing a different
    /// event with it is [`crate::Error::Conflict`]. 1..=255 bytes of printable ASCII
    /// ([`crate::Error::Invalid`] otherwise). "The same event" means the same type,
    /// location, api version (when given), data bytes and id (when given); generated
    /// ids and creation times do not count.
    pub idempotency_key: Option<String>,
}

impl Event {
    /// An event with `data` serialised from a JSON value.
    pub fn new(event_type: EventType, data: &serde_json::Value) -> Event {
        Event::from_json_bytes(event_type, data.to_string().into_bytes())
    }

    /// An event whose `data` is already JSON text (copied verbatim into the envelope
    /// after a syntax check at publish time).
    pub fn from_json_bytes(event_type: EventType, data: Vec<u8>) -> Event {
        Event {
            id: None,
            event_type,
            location_id: None,
            api_version: None,
            created_at_ms: None,
            data,
            idempotency_key: None,
        }
    }

    /// Parses `event_type` and builds [`Event::new`]; the caller's error if the type is
    /// invalid.
    pub fn parse(event_type: &str, data: &serde_json::Value) -> Result<Event, Error> {
        let event_type = EventType::parse(event_type)
            .map_err(|e| Error::invalid_because(Some("event_type"), e))?;
        Ok(Event::new(event_type, data))
    }

    /// Sets the id (builder style).
    pub fn with_id(mut self, id: EventId) -> Event {
        self.id = Some(id);
        self
    }

    /// Sets the location (builder style).
    pub fn with_location(mut self, location_id: LocationId) -> Event {
        self.location_id = Some(location_id);
        self
    }

    /// Sets the idempotency key (builder style); see [`Event::idempotency_key`].
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Event {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The fingerprint an idempotency key is checked against: SHA-256 (first 16 bytes)
    /// over the type, location, api version (the default when none is given: the
    /// envelope is the same), the id as given (an absent one marked absent) and the data
    /// bytes, each length-prefixed so that no two events share an input.
    fn fingerprint(&self) -> [u8; 16] {
        fn part(context: &mut ring::digest::Context, value: Option<&[u8]>) {
            match value {
                None => context.update(&[0]),
                Some(bytes) => {
                    context.update(&[1]);
                    context.update(&(bytes.len() as u64).to_le_bytes());
                    context.update(bytes);
                }
            }
        }
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        part(&mut context, Some(self.event_type.as_str().as_bytes()));
        part(
            &mut context,
            self.location_id.as_ref().map(|l| l.as_str().as_bytes()),
        );
        let api_version = self
            .api_version
            .as_deref()
            .unwrap_or(herald_core::API_VERSION_DEFAULT);
        part(&mut context, Some(api_version.as_bytes()));
        part(
            &mut context,
            self.id.as_ref().map(|id| id.as_str().as_bytes()),
        );
        part(&mut context, Some(&self.data));
        let digest = context.finish();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest.as_ref()[..16]);
        fingerprint
    }

    /// Fills in what the caller left out; the id is fixed here so that a hand-off that
    /// fails gives back an event that can be re-published with the same id.
    pub(crate) fn into_new_event(self, now_ms: u64) -> NewEvent {
        // Taken before defaults are filled in: only what the caller gave counts.
        let idempotency = self.idempotency_key.clone().map(|key| Idempotency {
            fingerprint: self.fingerprint(),
            key,
        });
        NewEvent {
            id: self.id.unwrap_or_else(generate_event_id),
            event_type: self.event_type,
            api_version: self
                .api_version
                .unwrap_or_else(|| herald_core::API_VERSION_DEFAULT.to_string()),
            created_at_ms: self.created_at_ms.unwrap_or(now_ms),
            location_id: self.location_id,
            data: self.data,
            idempotency,
        }
    }

    /// The event as handed in (with its id and defaults filled in), for giving back. An
    /// event with an idempotency key whose id was generated comes back without it, so
    /// that publishing it again gives the same fingerprint as the first time.
    pub(crate) fn from_new_event(event: NewEvent) -> Event {
        let fingerprint = event.idempotency.as_ref().map(|i| i.fingerprint);
        let mut given = Event::from_new_event_with_id(event);
        if let Some(fingerprint) = fingerprint {
            let id = given.id.take();
            if given.fingerprint() != fingerprint {
                given.id = id;
            }
        }
        given
    }

    fn from_new_event_with_id(event: NewEvent) -> Event {
        Event {
            id: Some(event.id),
            event_type: event.event_type,
            location_id: event.location_id,
            api_version: Some(event.api_version),
            created_at_ms: Some(event.created_at_ms),
            data: event.data,
            idempotency_key: event.idempotency.map(|i| i.key),
        }
    }
}

fn generate_event_id() -> EventId {
    // Made on the stack (once per published event without an id of its own).
    let mut text = [0u8; 4 + uuid::fmt::Simple::LENGTH];
    text[..4].copy_from_slice(b"evt_");
    let digits = uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut text[4..])
        .len();
    let text = std::str::from_utf8(&text[..4 + digits]).expect("\"evt_\" and hex digits");
    // "evt_" + 32 hex digits: within the event id charset and its 128-byte limit.
    EventId::parse(text).expect("generated event ids are valid")
}

pub(crate) fn generate_webhook_id() -> herald_core::WebhookId {
    let text = format!("wh_{}", uuid::Uuid::new_v4().simple());
    // "wh_" + 32 hex digits: within the webhook id charset and its 64-byte limit.
    herald_core::WebhookId::parse(&text).expect("generated webhook ids are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_and_survive_a_round_trip() {
        let event = Event::parse("order.created", &serde_json::json!({"n": 1})).unwrap();
        let new = event.clone().into_new_event(1_000);
        assert!(new.id.as_str().starts_with("evt_"));
        assert_eq!(new.created_at_ms, 1_000);
        assert_eq!(new.api_version, herald_core::API_VERSION_DEFAULT);
        assert_eq!(new.data, br#"{"n":1}"#);
        let back = Event::from_new_event(new.clone());
        assert_eq!(back.id.as_ref(), Some(&new.id));
        assert_eq!(back.data, event.data);
        assert_eq!(back.event_type, event.event_type);
    }

    #[test]
    fn fingerprints_cover_what_the_caller_gave() {
        let base = Event::parse("order.created", &serde_json::json!({"n": 1}))
            .unwrap()
            .with_idempotency_key("k");
        let fingerprint = |event: &Event| event.clone().into_new_event(0).idempotency.unwrap();
        let same = fingerprint(&base);
        assert_eq!(same.key, "k");
        // Generated ids and times do not count; the default api version is the default.
        let mut at_another_time = base.clone();
        at_another_time.created_at_ms = Some(5);
        let mut default_version = base.clone();
        default_version.api_version = Some(herald_core::API_VERSION_DEFAULT.to_string());
        for event in [&at_another_time, &default_version] {
            assert_eq!(fingerprint(event).fingerprint, same.fingerprint);
        }
        // Everything else the caller gives does.
        let mut other_data = base.clone();
        other_data.data = br#"{"n":2}"#.to_vec();
        let mut other_type = base.clone();
        other_type.event_type = EventType::parse("order.paid").unwrap();
        let mut other_version = base.clone();
        other_version.api_version = Some("2025-01-01".to_string());
        let with_id = base.clone().with_id(EventId::parse("evt_1").unwrap());
        let with_location = base
            .clone()
            .with_location(LocationId::parse("loc_1").unwrap());
        for event in [
            &other_data,
            &other_type,
            &other_version,
            &with_id,
            &with_location,
        ] {
            assert_ne!(
                fingerprint(event).fingerprint,
                same.fingerprint,
                "{event:?}"
            );
        }
        // An event given back after a failed hand-off publishes with the same fingerprint
        // (its generated id is dropped again); a given id stays.
        for event in [&base, &with_id] {
            let new = event.clone().into_new_event(7);
            let back = Event::from_new_event(new.clone());
            assert_eq!(back.id.is_some(), event.id.is_some());
            assert_eq!(
                fingerprint(&back).fingerprint,
                new.idempotency.unwrap().fingerprint
            );
        }
    }

    #[test]
    fn generated_ids_are_distinct() {
        let a = Event::parse("a", &serde_json::Value::Null)
            .unwrap()
            .into_new_event(0);
        let b = Event::parse("a", &serde_json::Value::Null)
            .unwrap()
            .into_new_event(0);
        assert_ne!(a.id, b.id);
        for id in [&a.id, &b.id] {
            let digits = id.as_str().strip_prefix("evt_").expect("evt_ first");
            assert_eq!(digits.len(), 32, "{id}");
            assert!(
                digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }
        assert_ne!(generate_webhook_id(), generate_webhook_id());
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Herald>();
        send_sync::<crate::Error>();
        send_sync::<crate::StartError>();
        send::<crate::PublishReceipt>();
        send_sync::<Event>();
    }

    #[test]
    fn invalid_type_is_the_callers_fault() {
        let error = Event::parse("order.*", &serde_json::Value::Null).unwrap_err();
        assert_eq!(error.fault(), crate::Fault::Caller);
    }
}
