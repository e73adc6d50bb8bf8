//! Conversions between configuration types and their journal records.

use herald_http::Url;
use herald_sign::Scheme;

use crate::ids::{TenantId, WebhookId};
use crate::matcher::EventFilter;
use crate::record::{HeaderRec, SecretRec, WebhookRec};
use crate::retry::RetrySchedule;
use crate::webhook::{
    DisableReason, EndpointLimits, RateLimit, SecretSpec, WebhookSpec, WebhookStatus,
};

pub(crate) fn webhook_to_rec(tenant: &TenantId, id: &WebhookId, spec: &WebhookSpec) -> WebhookRec {
    let (disabled_reason, disabled_at_ms) = match spec.status {
        WebhookStatus::Active => (None, 0),
        WebhookStatus::Disabled { reason, at_ms } => (Some(reason.name().to_string()), at_ms),
    };
    WebhookRec {
        tenant: tenant.as_str().to_string(),
        webhook: id.as_str().to_string(),
        url: spec.url.to_string(),
        filters: spec.filters.iter().map(|f| f.to_string()).collect(),
        scheme: spec.scheme.name().to_string(),
        stripe_header: match &spec.scheme {
            Scheme::Stripe { header } => Some(header.clone()),
            _ => None,
        },
        secrets: spec
            .secrets
            .iter()
            .map(|s| SecretRec {
                value: s.value.clone(),
                expires_at_ms: s.expires_at_ms,
            })
            .collect(),
        headers: spec
            .headers
            .iter()
            .map(|(name, value)| HeaderRec {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        disabled_reason,
        disabled_at_ms,
        retry_delays_ms: spec
            .retry_schedule
            .as_ref()
            .map(|s| s.retry_delays_ms().to_vec()),
        in_flight_max: spec.limits.in_flight_max,
        rate_per_s: spec.limits.rate.map_or(0, |r| r.per_s),
        rate_burst: spec.limits.rate.map_or(0, |r| r.burst),
        connect_timeout_ms: spec.limits.connect_timeout_ms,
        request_timeout_ms: spec.limits.request_timeout_ms,
        description: spec.description.clone(),
    }
}

/// Rebuilds a spec from its record. Errors name the field (the journal is corrupt or was
/// written by an incompatible version: storage's fault).
pub(crate) fn webhook_from_rec(
    rec: &WebhookRec,
) -> Result<(TenantId, WebhookId, WebhookSpec), String> {
    let tenant = TenantId::parse(&rec.tenant).map_err(|e| format!("tenant: {e}"))?;
    let id = WebhookId::parse(&rec.webhook).map_err(|e| format!("webhook: {e}"))?;
    let url = Url::parse(&rec.url).map_err(|e| format!("url: {e}"))?;
    let filters = rec
        .filters
        .iter()
        .map(|f| EventFilter::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("filter: {e}"))?;
    let scheme = match &rec.stripe_header {
        Some(header) if rec.scheme == "stripe" => Scheme::Stripe {
            header: header.clone(),
        },
        _ => rec
            .scheme
            .parse::<Scheme>()
            .map_err(|e| format!("scheme: {e}"))?,
    };
    let status = match &rec.disabled_reason {
        None => WebhookStatus::Active,
        Some(reason) => WebhookStatus::Disabled {
            reason: match reason.as_str() {
                "manual" => DisableReason::Manual,
                "gone" => DisableReason::Gone,
                "failing_too_long" => DisableReason::FailingTooLong,
                other => return Err(format!("disable reason {other:?}")),
            },
            at_ms: rec.disabled_at_ms,
        },
    };
    let retry_schedule = match &rec.retry_delays_ms {
        None => None,
        Some(delays) => {
            Some(RetrySchedule::new(delays.clone()).map_err(|e| format!("schedule: {e}"))?)
        }
    };
    let rate = (rec.rate_per_s > 0).then_some(RateLimit {
        per_s: rec.rate_per_s,
        burst: rec.rate_burst,
    });
    let spec = WebhookSpec {
        url,
        filters,
        scheme,
        secrets: rec
            .secrets
            .iter()
            .map(|s| SecretSpec {
                value: s.value.clone(),
                expires_at_ms: s.expires_at_ms,
            })
            .collect(),
        headers: rec
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        status,
        retry_schedule,
        limits: EndpointLimits {
            in_flight_max: rec.in_flight_max,
            rate,
            connect_timeout_ms: rec.connect_timeout_ms,
            request_timeout_ms: rec.request_timeout_ms,
        },
        description: rec.description.clone(),
    };
    Ok((tenant, id, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_record() {
        let mut spec = WebhookSpec::new(
            Url::parse("https://example.com:8443/a?b=c").unwrap(),
            vec![
                EventFilter::All,
                EventFilter::parse("order.*").unwrap(),
                EventFilter::parse("x.y").unwrap(),
            ],
            Scheme::Stripe {
                header: "Crumb-Signature".into(),
            },
            "sk_live".into(),
        );
        spec.secrets.push(SecretSpec {
            value: "old".into(),
            expires_at_ms: Some(99),
        });
        spec.headers.push(("x-team".into(), "blue".into()));
        spec.status = WebhookStatus::Disabled {
            reason: DisableReason::FailingTooLong,
            at_ms: 42,
        };
        spec.retry_schedule = Some(RetrySchedule::new(vec![10, 20]).unwrap());
        spec.limits.rate = Some(RateLimit { per_s: 5, burst: 2 });
        let tenant = TenantId::parse("t").unwrap();
        let id = WebhookId::parse("w").unwrap();
        let rec = webhook_to_rec(&tenant, &id, &spec);
        assert_eq!(webhook_from_rec(&rec).unwrap(), (tenant, id, spec));
    }
}
