//! `POST /v1/inbound/{source}`: signed webhooks from providers (a payment provider's
//! Stripe-style `Stripe-Signature`, Standard Webhooks senders, a generic HMAC header)
//! become platform events of one tenant.
//!
//! The request is verified before its body is trusted; the provider's event id is the
//! idempotency key (`in:{source}:{id}`), so a provider that retries a delivery (it does
//! on any non-2xx) never fans out twice; the answer is 2xx only once the event is
//! durable. Types without a mapping are accepted and dropped (2xx), and counted.

use std::collections::BTreeMap;

use herald::{Event, EventType, Scheme, TenantId, Verifier};
use herald_http::Request;
use serde_json::{json, Value};

use crate::config::InboundSource;
use crate::routes::{ApiError, App};
use crate::time::now_ms;
use crate::Response;

/// Default signature header of the `hmac` scheme.
pub const HMAC_HEADER_DEFAULT: &str = "X-Signature";
/// The payment provider's signature header.
pub const STRIPE_HEADER: &str = "Stripe-Signature";
/// Longest provider event id used in an idempotency key (the key's limit is 255 bytes).
const PROVIDER_ID_BYTES_MAX: usize = 200;

/// A configured source, ready to verify.
#[derive(Debug)]
pub struct Source {
    name: String,
    config: InboundSource,
    verifier: Option<Verifier>,
}

/// Builds the verifiers of every configured source (the config was validated).
pub fn sources(
    config: &BTreeMap<String, InboundSource>,
) -> Result<BTreeMap<String, Source>, String> {
    config
        .iter()
        .map(|(name, source)| {
            let tolerance = source.tolerance_s.unwrap_or(herald_tolerance_default());
            let verifier = match source.scheme.as_str() {
                "stripe" => Some(Verifier::new(
                    Scheme::Stripe {
                        header: STRIPE_HEADER.to_string(),
                    },
                    &[source.secret.expose()],
                )),
                "standard" => Some(Verifier::new(Scheme::Standard, &[source.secret.expose()])),
                _ => None,
            }
            .transpose()
            .map_err(|e| format!("inbound.{name}.secret: {e}"))?
            .map(|v| v.with_tolerance_s(tolerance));
            Ok((
                name.clone(),
                Source {
                    name: name.clone(),
                    config: source.clone(),
                    verifier,
                },
            ))
        })
        .collect()
}

fn herald_tolerance_default() -> u64 {
    300
}

/// Request headers as the verifier looks them up.
struct Headers<'a>(&'a Request);

impl herald::HeaderLookup for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The answer to a request for a source that is not configured.
pub(crate) fn unknown_source(name: &str) -> ApiError {
    ApiError::new(
        404,
        "not_found",
        format!("no inbound source {name:?} is configured"),
    )
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(401, "unauthorized", message)
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "invalid_request", message)
}

/// The prefix of the idempotency keys of inbound events; a client's own keys and event
/// ids may not begin with it (`routes.rs`), so that no tenant can take a provider
/// event's key before the provider's event arrives.
pub const INBOUND_KEY_PREFIX: &str = "in:";

/// The idempotency key of provider event `id` from source `source`: `in:{source}:{id}`,
/// or, when that is longer than the engine takes, the id's SHA-256 in its place
/// (`in:{source}:sha256:{hex}`), so that a long id is still de-duplicated and never
/// refused after its signature passed.
fn inbound_key(source: &str, id: &str) -> String {
    let key = format!("{INBOUND_KEY_PREFIX}{source}:{id}");
    if key.len() <= crate::routes::IDEMPOTENCY_KEY_BYTES_MAX {
        return key;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    format!(
        "{INBOUND_KEY_PREFIX}{source}:sha256:{}",
        hex::encode(digest.as_ref())
    )
}

impl Source {
    /// The headers the source's scheme reads its signature from.
    fn signature_headers(&self) -> Vec<&str> {
        match self.config.scheme.as_str() {
            "stripe" => vec![STRIPE_HEADER],
            "standard" => vec!["webhook-id", "webhook-timestamp", "webhook-signature"],
            _ => vec![self.config.header.as_deref().unwrap_or(HMAC_HEADER_DEFAULT)],
        }
    }

    fn verify(&self, request: &Request) -> Result<(), ApiError> {
        // A header sent twice is ambiguous (a proxy and this server could each believe
        // a different one): refused, as the API's credential headers are.
        for name in self.signature_headers() {
            if crate::routes::sole_header(request, name).is_err() {
                return Err(unauthorized(format!("send one {name} header, not several")));
            }
        }
        if let Some(verifier) = &self.verifier {
            let now_s = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
            return verifier
                .verify(&Headers(request), "", &request.body, now_s)
                .map_err(|e| unauthorized(format!("signature not verified: {e}")));
        }
        let name = self.config.header.as_deref().unwrap_or(HMAC_HEADER_DEFAULT);
        let value = request
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| unauthorized(format!("missing header {name}")))?;
        let hex_sig = value.trim().strip_prefix("sha256=").unwrap_or(value.trim());
        let signature = hex::decode(hex_sig)
            .map_err(|_| unauthorized(format!("header {name} is not a hex HMAC-SHA256")))?;
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            self.config.secret.expose().as_bytes(),
        );
        // ring compares in constant time.
        ring::hmac::verify(&key, &request.body, &signature)
            .map_err(|_| unauthorized("signature not verified: no matching signature"))
    }

    /// The provider's event id: the body's `id`, or `webhook-id` for Standard Webhooks.
    fn event_id<'a>(&self, request: &'a Request, body: &'a Value) -> Option<&'a str> {
        if self.config.scheme == "standard" {
            if let Some(id) = request
                .header("webhook-id")
                .and_then(|v| std::str::from_utf8(v).ok())
            {
                return Some(id);
            }
        }
        body.get("id").and_then(Value::as_str)
    }

    /// The platform event's data: the provider's object (`data.object` for the payment
    /// provider, `data` otherwise), or the whole payload when it has none; its bytes as
    /// the provider signed them, never decoded and encoded again (which would round
    /// large numbers and merge repeated members).
    fn data<'a>(&self, body: &'a [u8]) -> Result<&'a [u8], ApiError> {
        #[derive(serde::Deserialize)]
        struct Data<'a> {
            #[serde(borrow, default)]
            data: Option<&'a serde_json::value::RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Object<'a> {
            #[serde(borrow, default)]
            object: Option<&'a serde_json::value::RawValue>,
        }
        let outer: Data<'a> = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "invalid_json", format!("request body: {e}")))?;
        let Some(data) = outer.data else {
            return Ok(body.trim_ascii());
        };
        if self.config.scheme == "stripe" {
            // `data` of another kind than an object has no `object`: it is the data.
            if let Ok(Object {
                object: Some(object),
            }) = serde_json::from_str::<Object<'a>>(data.get())
            {
                return Ok(object.get().as_bytes());
            }
        }
        Ok(data.get().as_bytes())
    }

    fn tenant(&self, body: &Value) -> Result<TenantId, ApiError> {
        let (text, origin) = match (&self.config.tenant, &self.config.tenant_path) {
            (Some(tenant), _) => (tenant.as_str(), "configuration".to_string()),
            (None, Some(path)) => {
                let found = path
                    .split('.')
                    .try_fold(body, |value, key| value.get(key))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("the payload has no tenant id at {path}")))?;
                (found, path.clone())
            }
            // Validated at start-up: exactly one is set.
            (None, None) => return Err(bad("source has no tenant mapping")),
        };
        TenantId::parse(text).map_err(|e| bad(format!("tenant id from {origin}: {e}")))
    }
}

impl App {
    /// Handles one inbound request.
    pub(crate) async fn inbound(
        &self,
        name: &str,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let Some(source) = self.inbound.get(name) else {
            self.metrics.observe_inbound("unknown", "rejected");
            return Err(unknown_source(name));
        };
        let result = self.inbound_verified(source, request).await;
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err(_) => "rejected",
        };
        self.metrics.observe_inbound(&source.name, outcome);
        if let Err(error) = &result {
            tracing::info!(source = %source.name, status = error.status(), reason = %error.message(), "inbound request refused");
        }
        result.map(|(response, _)| response)
    }

    async fn inbound_verified(
        &self,
        source: &Source,
        request: &Request,
    ) -> Result<(Response, &'static str), ApiError> {
        source.verify(request)?;
        crate::routes::check_content_type(request)?;
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::new(400, "invalid_json", format!("request body: {e}")))?;
        let provider_type = body
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the payload has no \"type\""))?;
        let Some(platform_type) = source.config.types.get(provider_type) else {
            return Ok((
                Response::json(
                    200,
                    &json!({"status": "ignored", "reason": format!("type {provider_type} is not mapped for this source")}),
                ),
                "ignored",
            ));
        };
        let id = source
            .event_id(request, &body)
            .ok_or_else(|| bad("the payload has no event \"id\""))?;
        let id_ok = !id.is_empty()
            && id.len() <= PROVIDER_ID_BYTES_MAX
            && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !id_ok {
            return Err(bad(format!(
                "the event id must be 1 to {PROVIDER_ID_BYTES_MAX} printable ASCII characters"
            )));
        }
        let tenant = source.tenant(&body)?;
        if !self.keys.has_tenant(&tenant) {
            return Err(bad(format!(
                "tenant {tenant} does not exist on this server"
            )));
        }
        // Validated at start-up.
        let event_type = EventType::parse(platform_type)
            .map_err(|e| ApiError::new(500, "internal", format!("mapped type: {e}")))?;
        let data = source.data(&request.body)?.to_vec();
        let mut event = Event::from_json_bytes(event_type, data);
        event.idempotency_key = Some(inbound_key(&source.name, id));
        // A full intake is a 503 at once; the provider retries later.
        let published = self
            .herald
            .try_publish_detailed_async(&tenant, event)?
            .await?;
        tracing::info!(
            source = %source.name, %tenant, event = %published.event_id, provider_event = id,
            duplicate = published.duplicate, "inbound event accepted"
        );
        Ok((
            Response::json(
                200,
                &json!({
                    "status": if published.duplicate { "duplicate" } else { "accepted" },
                    "event_id": published.event_id.as_str(),
                    "type": platform_type,
                    "tenant_id": tenant.as_str(),
                }),
            ),
            if published.duplicate {
                "duplicate"
            } else {
                "accepted"
            },
        ))
    }
}
