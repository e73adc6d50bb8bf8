//! The built-in event-type catalog served at `GET /v1/event-types`: the restaurant and
//! commerce events Herald documents out of the box, each with a description and a sample
//! of the event's `data` member.
//!
//! The catalog is documentation, not a whitelist: publishers may send any type that
//! [`herald::EventType::parse`] accepts. The samples live in `catalog/<type>.json` and are
//! embedded at compile time.

/// One documented event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeInfo {
    /// The type, such as `order.created`.
    pub event_type: &'static str,
    /// What happened when this event is published, in one or two sentences.
    pub description: &'static str,
    /// JSON text of an example `data` member (always a JSON object).
    pub sample: &'static str,
}

macro_rules! entry {
    ($event_type:literal, $description:literal) => {
        EventTypeInfo {
            event_type: $event_type,
            description: $description,
            sample: include_str!(concat!("../catalog/", $event_type, ".json")),
        }
    };
}

static CATALOG: [EventTypeInfo; 24] = [
    entry!(
        "order.created",
        "A new order was placed on any channel (online, kiosk, POS, marketplace), with its line items, modifiers, totals and fulfillment details."
    ),
    entry!(
        "order.updated",
        "An open order was changed (items added or removed, quantities, fulfillment or totals); carries the new order and a list of changes."
    ),
    entry!(
        "order.sent",
        "An order was fired to the kitchen or POS, split into station tickets."
    ),
    entry!(
        "order.ready",
        "The kitchen finished an order and it is ready for pickup, hand-off to a courier, or serving."
    ),
    entry!(
        "order.completed",
        "An order was fulfilled and closed, with its final totals and payments."
    ),
    entry!(
        "order.cancelled",
        "An order was cancelled before completion, with the reason, who cancelled it, and any refund started."
    ),
    entry!(
        "payment.processed",
        "A payment was authorized for an order; capture may follow later for manual-capture payments."
    ),
    entry!(
        "payment.captured",
        "Funds for an authorized payment were captured, including tip, processor fees and settlement details."
    ),
    entry!(
        "payment.failed",
        "A payment attempt was declined or errored, with the processor's failure code and whether a retry can succeed."
    ),
    entry!(
        "payment.refunded",
        "A full or partial refund succeeded against a captured payment, itemised by line item."
    ),
    entry!(
        "payment.voided",
        "An authorization was released before capture, so the customer is never charged."
    ),
    entry!(
        "inventory.low_stock",
        "An inventory item at a location fell below its reorder point."
    ),
    entry!(
        "inventory.out_of_stock",
        "An inventory item at a location ran out; lists the menu items and modifiers made unavailable as a result."
    ),
    entry!(
        "inventory.updated",
        "Stock quantities changed through receiving, counts, waste or transfers; one event per adjustment."
    ),
    entry!(
        "menu.item_updated",
        "A menu item's details changed: name, description, allergens, modifier groups or the locations that carry it."
    ),
    entry!(
        "menu.item_availability",
        "A menu item was marked available or unavailable (86'd) at a location, on some or all channels."
    ),
    entry!(
        "menu.price_changed",
        "A menu item's price, or its modifiers' prices, changed for some locations and channels from a given time."
    ),
    entry!(
        "location.hours_changed",
        "A location's regular or special opening hours changed."
    ),
    entry!(
        "location.status_changed",
        "A location opened, closed, or paused ordering on some channels, with the reason and when it resumes."
    ),
    entry!(
        "reservation.created",
        "A guest booked a table, with party size, time, guest profile, notes and any deposit held."
    ),
    entry!(
        "reservation.updated",
        "A reservation's party size, time, tables or notes changed; carries the new reservation and a list of changes."
    ),
    entry!(
        "reservation.cancelled",
        "A reservation was cancelled by the guest or the restaurant, with any late-cancellation fee charged."
    ),
    entry!(
        "kds.ticket.bumped",
        "A kitchen display ticket was bumped at a station, moving it on to the next station or to expo."
    ),
    entry!(
        "table.status_changed",
        "A table changed state (available, reserved, occupied, dirty), with the party, server and order seated at it."
    ),
];

/// Every documented event type, in a fixed order (grouped by domain).
pub fn catalog() -> &'static [EventTypeInfo] {
    &CATALOG
}

/// The catalog entry for `event_type`, if it is documented. Exact match: filters such as
/// `order.*` are not catalog entries.
pub fn find(event_type: &str) -> Option<&'static EventTypeInfo> {
    CATALOG.iter().find(|info| info.event_type == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const EXPECTED: [&str; 24] = [
        "order.created",
        "order.updated",
        "order.sent",
        "order.ready",
        "order.completed",
        "order.cancelled",
        "payment.processed",
        "payment.captured",
        "payment.failed",
        "payment.refunded",
        "payment.voided",
        "inventory.low_stock",
        "inventory.out_of_stock",
        "inventory.updated",
        "menu.item_updated",
        "menu.item_availability",
        "menu.price_changed",
        "location.hours_changed",
        "location.status_changed",
        "reservation.created",
        "reservation.updated",
        "reservation.cancelled",
        "kds.ticket.bumped",
        "table.status_changed",
    ];

    #[test]
    fn every_sample_is_a_json_object() {
        for info in catalog() {
            let value: serde_json::Value = serde_json::from_str(info.sample)
                .unwrap_or_else(|e| panic!("{} sample is not JSON: {e}", info.event_type));
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{} sample is not a JSON object", info.event_type));
            assert!(!object.is_empty(), "{} sample is empty", info.event_type);
        }
    }

    #[test]
    fn every_name_is_a_valid_event_type() {
        for info in catalog() {
            let parsed = herald::EventType::parse(info.event_type)
                .unwrap_or_else(|e| panic!("{} is not a valid event type: {e}", info.event_type));
            assert_eq!(parsed.as_str(), info.event_type);
        }
    }

    #[test]
    fn names_are_unique() {
        let names: BTreeSet<&str> = catalog().iter().map(|info| info.event_type).collect();
        assert_eq!(names.len(), catalog().len());
    }

    #[test]
    fn catalog_holds_exactly_the_documented_types() {
        let names: Vec<&str> = catalog().iter().map(|info| info.event_type).collect();
        assert_eq!(names, EXPECTED);
    }

    /// The OpenAPI document says which types a test send takes without `data`: exactly
    /// the catalog's, and null (the default type, as the server reads it).
    #[test]
    fn the_document_lists_the_catalog_for_test_sends() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let branches = doc["components"]["schemas"]["TestRequest"]["anyOf"]
            .as_array()
            .expect("TestRequest.anyOf");
        let listed = branches
            .iter()
            .find_map(|b| b["properties"]["event_type"]["enum"].as_array())
            .expect("an anyOf branch with the event_type enum");
        assert!(listed.contains(&serde_json::Value::Null), "{listed:?}");
        let names: Vec<&str> = listed
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().expect("a type name"))
            .collect();
        assert_eq!(names, EXPECTED);
    }

    #[test]
    fn every_entry_is_described() {
        for info in catalog() {
            assert!(
                !info.description.trim().is_empty(),
                "{} has no description",
                info.event_type
            );
        }
    }

    #[test]
    fn find_returns_the_entry_by_exact_name() {
        let info = find("kds.ticket.bumped").expect("kds.ticket.bumped is in the catalog");
        assert_eq!(info.event_type, "kds.ticket.bumped");
        assert!(info.sample.contains("\"tkt_"));
        for name in EXPECTED {
            assert_eq!(find(name).map(|info| info.event_type), Some(name));
        }
        assert_eq!(find("order.*"), None);
        assert_eq!(find("order"), None);
        assert_eq!(find("ORDER.CREATED"), None);
        assert_eq!(find(""), None);
    }

    #[test]
    fn money_in_samples_is_integer_minor_units_with_a_currency() {
        fn check(event_type: &str, value: &serde_json::Value, money_seen: &mut usize) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(currency) = map.get("currency") {
                        let currency = currency.as_str().unwrap_or_default();
                        assert!(
                            currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
                            "{event_type}: currency {currency:?} is not an ISO 4217 code"
                        );
                        let amount = map.get("amount").unwrap_or_else(|| {
                            panic!("{event_type}: money object without an amount")
                        });
                        assert!(
                            amount.is_i64(),
                            "{event_type}: amount {amount} is not integer minor units"
                        );
                        *money_seen += 1;
                    }
                    for nested in map.values() {
                        check(event_type, nested, money_seen);
                    }
                }
                serde_json::Value::Array(items) => {
                    for nested in items {
                        check(event_type, nested, money_seen);
                    }
                }
                _ => {}
            }
        }
        let mut money_seen = 0;
        for info in catalog() {
            let value: serde_json::Value = serde_json::from_str(info.sample).unwrap();
            check(info.event_type, &value, &mut money_seen);
        }
        assert!(money_seen > 0, "no money amounts in any sample");
    }
}
