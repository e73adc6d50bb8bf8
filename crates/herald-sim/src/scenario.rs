//! Random scenarios: tenants, their webhooks and endpoints, and the event stream.

use crate::endpoint::Behaviour;
use rand::Rng;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// Event types the generator publishes; filters are drawn from the same vocabulary.
pub const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.updated",
    "order.cancelled",
    "payment.processed",
    "payment.failed",
    "customer.created",
    "menu.item.updated",
];

/// Size knobs of one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioLimits {
    /// Most tenants.
    pub tenants_max: u32,
    /// Most webhooks per tenant.
    pub webhooks_per_tenant_max: u32,
    /// Most events published over the run.
    pub events_max: u32,
    /// Publishing window: events arrive within this long after the start.
    pub publish_window_ms: u64,
}

impl Default for ScenarioLimits {
    fn default() -> Self {
        ScenarioLimits {
            tenants_max: 4,
            webhooks_per_tenant_max: 4,
            events_max: 120,
            publish_window_ms: 8 * 24 * HOUR_MS,
        }
    }
}

/// One webhook as the simulator knows it (its own ground truth, independent of the core).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookPlan {
    /// Owning tenant (index into [`Scenario::tenants`]).
    pub tenant: usize,
    /// Webhook id, unique over the run.
    pub id: String,
    /// Endpoint URL, unique per webhook so a request's URL names its webhook.
    pub url: String,
    /// Filters: exact types, `prefix.*`, `*`.
    pub filters: Vec<String>,
    /// Retry delays; `None` uses the default schedule.
    pub retry_delays_ms: Option<Vec<u64>>,
    /// In-flight cap.
    pub in_flight_max: u32,
    /// Request timeout.
    pub request_timeout_ms: u64,
    /// Token-bucket rate limit: (requests per second, burst).
    pub rate: Option<(u32, u32)>,
    /// How the endpoint behaves.
    pub behaviour: Behaviour,
}

/// A publish at a virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPlan {
    /// When it is published (virtual Unix ms).
    pub at_ms: u64,
    /// Tenant index.
    pub tenant: usize,
    /// Event id, unique over the run.
    pub id: String,
    /// Event type.
    pub event_type: String,
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Start of virtual time (Unix ms).
    pub start_ms: u64,
    /// Tenant ids.
    pub tenants: Vec<String>,
    /// Webhooks, created at the start.
    pub webhooks: Vec<WebhookPlan>,
    /// Events in publishing order.
    pub events: Vec<EventPlan>,
}

/// Whether `filter` (exact, `prefix.*` or `*`) matches `event_type`; the simulator's own
/// reading of the filter rules, used to check the core's matcher.
pub fn filter_matches(filter: &str, event_type: &str) -> bool {
    if filter == "*" {
        return true;
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => filter == event_type,
    }
}

/// A random filter over [`EVENT_TYPES`]: mostly exact, sometimes `prefix.*` or `*`.
pub fn random_filter(rng: &mut impl Rng) -> String {
    let event_type = EVENT_TYPES[rng.random_range(0..EVENT_TYPES.len())];
    match rng.random_range(0..10) {
        0 => "*".to_string(),
        1..=3 => {
            let first = event_type.split('.').next().unwrap_or(event_type);
            format!("{first}.*")
        }
        _ => event_type.to_string(),
    }
}

impl Scenario {
    /// A random scenario.
    pub fn random(rng: &mut impl Rng, limits: &ScenarioLimits) -> Scenario {
        // A fixed epoch in 2026 keeps envelopes' `created_at` realistic; the offset varies.
        let start_ms = 1_780_000_000_000 + rng.random_range(0..365 * 24 * HOUR_MS);
        let tenant_count = rng.random_range(1..=limits.tenants_max);
        let tenants: Vec<String> = (0..tenant_count).map(|t| format!("tenant-{t}")).collect();
        let mut webhooks = Vec::new();
        for tenant in 0..tenants.len() {
            for w in 0..rng.random_range(0..=limits.webhooks_per_tenant_max) {
                let filters = (0..rng.random_range(1..=3))
                    .map(|_| random_filter(rng))
                    .collect();
                let retry_delays_ms = match rng.random_range(0..4) {
                    0 => Some(
                        (0..rng.random_range(0..5))
                            .map(|_| rng.random_range(0..3 * HOUR_MS))
                            .collect(),
                    ),
                    _ => None,
                };
                webhooks.push(WebhookPlan {
                    tenant,
                    id: format!("wh-{tenant}-{w}"),
                    url: format!("https://t{tenant}-w{w}.example.com/hooks/{w}"),
                    filters,
                    retry_delays_ms,
                    in_flight_max: [1, 2, 4, 16][rng.random_range(0..4)],
                    request_timeout_ms: [5_000, 10_000, 30_000][rng.random_range(0..3)],
                    rate: rng.random_bool(0.25).then(|| {
                        (
                            [1, 2, 5, 20][rng.random_range(0..4)],
                            rng.random_range(1..=5),
                        )
                    }),
                    behaviour: Behaviour::random(rng, start_ms),
                });
            }
        }
        let event_count = rng.random_range(1..=limits.events_max);
        // Most runs publish within a day and a half (the default schedule's reach); some
        // keep publishing through long outages, which is what auto-disable needs.
        let window_ms = if rng.random_bool(0.3) {
            limits.publish_window_ms
        } else {
            limits.publish_window_ms.min(36 * HOUR_MS)
        };
        let mut times: Vec<u64> = (0..event_count)
            .map(|_| {
                // Bursts: half the events land within a few seconds of each other.
                if rng.random_bool(0.5) {
                    start_ms + rng.random_range(0..5_000)
                } else {
                    start_ms + rng.random_range(0..window_ms)
                }
            })
            .collect();
        times.sort_unstable();
        let events = times
            .into_iter()
            .enumerate()
            .map(|(n, at_ms)| EventPlan {
                at_ms,
                tenant: rng.random_range(0..tenants.len()),
                id: format!("evt-{n}"),
                event_type: EVENT_TYPES[rng.random_range(0..EVENT_TYPES.len())].to_string(),
            })
            .collect();
        Scenario {
            start_ms,
            tenants,
            webhooks,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rules() {
        let cases = [
            ("*", "order.created", true),
            ("order.*", "order.created", true),
            ("order.*", "orders.created", false),
            ("order.*", "order", false),
            ("menu.*", "menu.item.updated", true),
            ("menu.item.*", "menu.item.updated", true),
            ("order.created", "order.created", true),
            ("order.created", "order.updated", false),
        ];
        for (filter, event_type, expected) in cases {
            assert_eq!(
                filter_matches(filter, event_type),
                expected,
                "{filter} {event_type}"
            );
        }
    }
}
