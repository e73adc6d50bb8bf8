//! The JSON shapes the API answers with (documented in `openapi.json`).

use herald::{Breaker, DeliveryRecord, DeliveryStatus, Webhook, WebhookStatus};
use serde_json::{json, Map, Value};

use crate::time::{rfc3339, rfc3339_json};

/// API form of a delivery id: `del_<16 hex>` (the id's own display form, as in logs).
pub fn delivery_id(id: herald::DeliveryId) -> String {
    id.to_string()
}

/// Parses `del_<hex>`.
pub fn parse_delivery_id(text: &str) -> Option<herald::DeliveryId> {
    herald::DeliveryId::parse(text).ok()
}

/// The API's three delivery states: exhausted deliveries are `failed`.
pub fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Success => "success",
        DeliveryStatus::Failed | DeliveryStatus::Exhausted => "failed",
    }
}

fn breaker_name(breaker: &Breaker) -> &'static str {
    match breaker {
        Breaker::Closed => "closed",
        Breaker::Open { .. } => "open",
        _ => "half_open",
    }
}

/// A webhook; `secret` only on create and rotate.
pub fn webhook(w: &Webhook, secret: Option<&str>) -> Value {
    let spec = &w.spec;
    let (status, disabled_reason) = match &spec.status {
        WebhookStatus::Active => ("active", Value::Null),
        WebhookStatus::Disabled { reason, .. } => ("disabled", Value::String(reason_name(reason))),
    };
    let header = match &spec.scheme {
        herald::Scheme::Stripe { header } => Value::String(header.clone()),
        _ => Value::Null,
    };
    let headers: Map<String, Value> = spec
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let schedule = spec.retry_schedule.as_ref().map_or(Value::Null, |s| {
        Value::Array(
            s.retry_delays_ms()
                .iter()
                .map(|&ms| seconds_value(ms))
                .collect(),
        )
    });
    let mut out = json!({
        "id": w.id.as_str(),
        "url": spec.url.to_string(),
        "events": spec.filters.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "status": status,
        "disabled_reason": disabled_reason,
        "description": spec.description,
        "signature": {"scheme": spec.scheme.name(), "header": header},
        "headers": headers,
        "retry_schedule_s": schedule,
        "timeout_ms": spec.limits.request_timeout_ms,
        "max_in_flight": spec.limits.in_flight_max,
        "rate_limit_per_s": spec.limits.rate.map(|r| r.per_s),
        "created_at": rfc3339(w.created_at_ms),
        "updated_at": rfc3339(w.updated_at_ms),
        "pending": w.pending,
        "health": {
            "breaker": breaker_name(&w.health.breaker),
            "consecutive_failures": w.health.consecutive_failures,
            "failing_since": rfc3339_json(w.health.failing_since_ms),
            "in_flight": w.health.in_flight,
        },
    });
    if let Some(secret) = secret {
        out["secret"] = Value::String(secret.to_string());
    }
    out
}

fn reason_name(reason: &herald::DisableReason) -> String {
    format!("{reason:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() && i > 0 {
                vec!['_', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
}

/// Whole seconds as an integer, fractions as a float.
fn seconds_value(ms: u64) -> Value {
    if ms.is_multiple_of(1000) {
        Value::from(ms / 1000)
    } else {
        Value::from(ms as f64 / 1000.0)
    }
}

/// A delivery as listed.
pub fn delivery(d: &DeliveryRecord) -> Value {
    let delivered_at = match d.status {
        DeliveryStatus::Success => Value::String(rfc3339(d.updated_at_ms)),
        _ => Value::Null,
    };
    json!({
        "id": delivery_id(d.id),
        "event_id": d.event_id.as_str(),
        "event_type": d.event_type.as_str(),
        "webhook_id": d.webhook.as_str(),
        "status": status_name(d.status),
        "attempts": d.attempt,
        "response_code": d.response_status,
        "response_time_ms": d.response_time_ms,
        "delivered_at": delivered_at,
        "next_retry_at": rfc3339_json(d.next_retry_at_ms),
        "last_error": d.error.as_ref().map(|e| e.name()),
        "created_at": rfc3339(d.accepted_at_ms),
    })
}

/// A delivery with every attempt and the latest response's headers and body.
pub fn delivery_detail(d: &DeliveryRecord) -> Value {
    let mut out = delivery(d);
    let history: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "started_at": rfc3339(a.started_at_ms),
                "finished_at": rfc3339_json(a.finished_at_ms),
                "response_code": a.response_status,
                "response_time_ms": a.response_time_ms,
                "error": a.error.as_ref().map(|e| e.name()),
            })
        })
        .collect();
    out["attempt_history"] = Value::Array(history);
    out["response_body"] = if d.response_body.is_empty() {
        Value::Null
    } else {
        Value::String(String::from_utf8_lossy(&d.response_body).into_owned())
    };
    // Repeated names are joined with ", " as HTTP allows.
    let mut headers = Map::new();
    for (name, value) in d.response_headers.iter() {
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    out["response_headers"] = Value::Object(headers);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_round_trip_and_refuse_junk() {
        let id = herald::DeliveryId(0xabc);
        assert_eq!(delivery_id(id), "del_0000000000000abc");
        assert_eq!(parse_delivery_id("del_0000000000000abc"), Some(id));
        for junk in ["del_", "dlv_01", "del_xyz", "del_00000000000000000", "abc"] {
            assert_eq!(parse_delivery_id(junk), None, "{junk}");
        }
    }

    #[test]
    fn delivery_detail_shows_response_headers_as_an_object() {
        let record = |headers: Vec<(String, String)>| DeliveryRecord {
            id: herald::DeliveryId(1),
            tenant: herald::TenantId::parse("acme").unwrap(),
            event_id: herald::EventId::parse("evt_1").unwrap(),
            event_type: herald::EventType::parse("a.b").unwrap(),
            webhook: herald::WebhookId::parse("wh_1").unwrap(),
            attempt: 1,
            status: DeliveryStatus::Success,
            response_status: Some(200),
            response_time_ms: Some(3),
            error: None,
            next_retry_at_ms: None,
            response_body: std::sync::Arc::from(&b"ok"[..]),
            response_headers: headers.into(),
            accepted_at_ms: 1_000,
            updated_at_ms: 2_000,
            finished_at_ms: Some(2_000),
            attempts: Vec::new(),
        };
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        let shown = delivery_detail(&record(vec![
            pair("content-type", "text/plain"),
            pair("vary", "accept"),
            pair("vary", "origin"),
        ]));
        assert_eq!(
            shown["response_headers"],
            json!({ "content-type": "text/plain", "vary": "accept, origin" })
        );
        assert_eq!(
            delivery_detail(&record(Vec::new()))["response_headers"],
            json!({})
        );
    }

    #[test]
    fn reasons_are_snake_case() {
        assert_eq!(reason_name(&herald::DisableReason::Manual), "manual");
        assert_eq!(reason_name(&herald::DisableReason::Gone), "gone");
    }
}
