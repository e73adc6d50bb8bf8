//! Routing, authentication and the handlers. Each handler maps to one operation of the
//! [`herald`] API; its errors map one-to-one to statuses ([`ApiError::from`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use herald::{
    DeliveryQuery, DeliveryStatus, EndpointLimits, Event, EventFilter, EventId, EventType, Herald,
    LocationId, RateLimit, RetrySchedule, Scheme, SecretSpec, TenantId, Url, WebhookId,
    WebhookSpec, WebhookStatus,
};
use herald_http::Request;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

use crate::auth::{KeyStore, Principal, StoreError};
use crate::config::{self, Config};
use crate::metrics::{EngineFigures, Metrics};
use crate::server::ConnectionCount;
use crate::stats::{Unanswered, FIGURES_WAIT};
use crate::time::{now_ms, parse_rfc3339, rfc3339};
use crate::{catalog, console, views, Response};

/// A cursor the route did not hand out.
const BAD_CURSOR: &str =
    "bad cursor: pass the previous page's `next_cursor` back unchanged, or omit `cursor` for the first page";

/// Most items on one page of a listing; `limit` above it is clamped.
pub const PAGE_LIMIT_MAX: usize = 100;
/// Items on a page when `limit` is not given.
pub const PAGE_LIMIT_DEFAULT: usize = 20;
/// Most events in one `POST /v1/events/batch`.
pub const BATCH_EVENTS_MAX: usize = 1000;
/// Most engine pages read to fill one filtered page of the delivery log: a filter that
/// matches rarely returns a short page with a cursor instead of scanning the whole log.
const DELIVERY_SCAN_PAGES_MAX: usize = 10;
/// Longest `Idempotency-Key` accepted.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// Longest rotation grace period: a week covers any receiver's redeploy cycle.
pub const ROTATE_GRACE_S_MAX: u64 = 7 * 24 * 3600;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub herald: Herald,
    pub keys: KeyStore,
    pub default_scheme: Scheme,
    pub metrics: Metrics,
    pub connections: Arc<ConnectionCount>,
    /// Inbound webhook sources, by name.
    pub inbound: BTreeMap<String, crate::inbound::Source>,
    /// `GET /v1/ws`: JWT keys and per-tenant connection counts.
    pub ws: crate::ws::Hub,
    /// The shards' figures for `/readyz` and `/metrics`, queried at most ten times a
    /// second however many ask.
    stats: crate::stats::SharedStats<Vec<herald::ShardStats>>,
    /// Changes of one webhook (`PATCH`, secret rotation) take turns.
    webhook_changes: crate::changes::WebhookChanges,
    /// Requests under way per tenant, for `requests_in_flight_per_tenant_max`.
    tenant_requests: TenantRequests,
    /// Tenants are created and deleted one at a time: a creation purges what a deleted
    /// tenant of its id left, which must not race a creation of the same id.
    tenant_changes: tokio::sync::Mutex<()>,
}

/// Requests under way per tenant (tenants with none have no entry).
#[derive(Debug, Default)]
struct TenantRequests(std::sync::Mutex<std::collections::HashMap<TenantId, usize>>);

impl TenantRequests {
    /// Requests of `tenant` under way.
    fn under_way(&self, tenant: &TenantId) -> usize {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.get(tenant).copied().unwrap_or(0)
    }

    /// Counts a request of `tenant` while the returned guard lives; `None` when the
    /// tenant already has `max` under way.
    fn enter(&self, tenant: &TenantId, max: usize) -> Option<TenantRequest<'_>> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(tenant.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(TenantRequest {
            counts: self,
            tenant: tenant.clone(),
        })
    }
}

/// One request counted in [`TenantRequests`] until dropped.
struct TenantRequest<'a> {
    counts: &'a TenantRequests,
    tenant: TenantId,
}

impl Drop for TenantRequest<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after_s: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    /// The status this error answers with.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// The message of the answer.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(400, "invalid_request", message)
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }

    fn unavailable(message: impl Into<String>, retry_after_s: u32) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(503, "unavailable", message)
        }
    }

    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = Value::String(field);
        }
        let mut response = Response::json(self.status, &json!({ "error": error }));
        if let Some(seconds) = self.retry_after_s {
            response = response.with_header("Retry-After", seconds.to_string());
        }
        response
    }
}

/// The operating system's reason at the bottom of `error`'s chain (say, "No space left
/// on device (os error 28)"), without the operation and path around it: what a caller
/// may learn of a storage fault. The server's paths and the rest stay in its log.
fn os_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.to_string());
        }
        cause = current.source();
    }
    None
}

/// `Retry-After` of a tenant at its pending limit: its backlog drains at its receivers'
/// pace (a retry schedule's first step is a minute), so asking again sooner mostly
/// repeats the refusal.
const TENANT_FULL_RETRY_AFTER_S: u32 = 10;

/// Longest a tenant's deletion waits for the tenant's requests already under way (one
/// may be creating a webhook) before it deletes the webhooks they left: their bodies are
/// read already, so what remains is the engine's answer and, for a new webhook, the
/// lookup of its URL's name, which take milliseconds unless a resolver hangs. A request
/// still under way after this is logged, and a webhook it creates stays.
const TENANT_DELETE_SETTLE: Duration = Duration::from_secs(10);

/// Longest a tenant's purge (the last step of its deletion, and the first of a tenant
/// made with its id) is asked again while the engine refuses it because a deleted
/// webhook's pending deliveries are still ending: they end a bounded number per shard
/// tick, thousands a millisecond, so even a tenant at its pending limit is through well
/// within this.
const TENANT_PURGE_SETTLE: Duration = Duration::from_secs(10);

/// Whose webhooks [`App::delete_webhooks_of`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    /// A tenant being deleted with them.
    Live,
    /// A tenant deleted already (strays a request under way left).
    Deleted,
}

/// Webhooks listed at a time when a tenant's webhooks are deleted with it.
const TENANT_WEBHOOKS_PAGE: usize = 100;

/// Most pages of a tenant's webhooks deleted: each round deletes a page and lists what is left, and
/// a tenant holds at most 10,000 webhooks (the engine's `webhooks_per_tenant_max`), so
/// more rounds than this mean deletions that do not take, which more would not change.
const TENANT_WEBHOOKS_ROUNDS_MAX: usize = 10_000 / TENANT_WEBHOOKS_PAGE + 2;

impl From<herald::Error> for ApiError {
    fn from(error: herald::Error) -> ApiError {
        use herald::Error as E;
        let os = os_reason(&error);
        match error {
            E::Invalid { message, field, .. } => ApiError {
                field,
                ..ApiError::new(400, "invalid_request", message)
            },
            E::UnknownWebhook { webhook, .. } => {
                ApiError::not_found(format!("no webhook {webhook}"))
            }
            E::UnknownDelivery { delivery, .. } => {
                ApiError::not_found(format!("no delivery {}", views::delivery_id(delivery)))
            }
            E::Conflict { message } => ApiError::new(409, "conflict", message),
            E::Backpressure { .. } => ApiError::unavailable(
                "the server is at capacity (its intake queue or its pending deliveries are full); retry shortly",
                1,
            ),
            E::TenantFull { pending, max, .. } => ApiError {
                retry_after_s: Some(TENANT_FULL_RETRY_AFTER_S),
                ..ApiError::new(
                    429,
                    "too_many_pending",
                    format!(
                        "the tenant has {pending} deliveries pending (at most {max}): its receivers are failing or slow; \
                         retry once they catch up, or fix, disable or delete the failing webhooks"
                    ),
                )
            },
            E::Storage { message, .. } => {
                tracing::error!(%message, "journal write failed");
                let reason = os.unwrap_or_else(|| "a storage fault".to_owned());
                ApiError::unavailable(
                    format!("the journal could not be written ({reason}); nothing was accepted; retry later"),
                    5,
                )
            }
            E::ShuttingDown { .. } => {
                ApiError::unavailable("the server is shutting down; retry on another instance", 1)
            }
            E::Environment { message, .. } => {
                // The host, not a defect and not the disk: this instance cannot serve the
                // tenant until an operator changes the host and restarts it.
                tracing::error!(%message, "a shard was stopped by its host");
                ApiError::unavailable(
                    "this instance cannot serve the request (its host stopped a shard); retry on another instance",
                    5,
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    500,
                    "internal",
                    "an internal error; the server's log has the details",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::Conflict(message) | StoreError::Limit(message) => {
                ApiError::new(409, "conflict", message)
            }
            error @ (StoreError::Io { .. } | StoreError::Corrupt { .. }) => {
                tracing::error!(%error, "key store write failed");
                ApiError::unavailable(
                    "the key store could not be written; nothing was changed; retry later",
                    5,
                )
            }
        }
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A request's target, split.
struct Target<'a> {
    segments: Vec<&'a str>,
    query: Vec<(String, String)>,
}

fn parse_target(target: &str) -> Result<Target<'_>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "the request target must be a path",
        ));
    }
    let segments = path[1..].split('/').collect();
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)
            .ok_or_else(|| ApiError::invalid(name, "bad percent-encoding in the query"))?;
        let value = percent_decode(value)
            .ok_or_else(|| ApiError::invalid(&name, "bad percent-encoding in the query"))?;
        pairs.push((name, value));
    }
    Ok(Target {
        segments,
        query: pairs,
    })
}

pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly (from_str_radix alone would take "+1").
                let hex = text.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl Target<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `cursor` parameter; an empty one (`?cursor=`, what a client sends for "no
    /// cursor yet") is the first page.
    fn cursor(&self) -> Option<&str> {
        self.query("cursor").filter(|cursor| !cursor.is_empty())
    }

    fn limit(&self) -> Result<usize> {
        match self.query("limit") {
            None => Ok(PAGE_LIMIT_DEFAULT),
            Some(text) => match text.parse::<usize>() {
                // A whole number too large for usize is served as the most, like any
                // other above it.
                Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Ok(PAGE_LIMIT_MAX),
                Ok(0) | Err(_) => Err(ApiError::invalid(
                    "limit",
                    format!("limit must be a whole number from 1 to {PAGE_LIMIT_MAX}"),
                )),
                Ok(n) => Ok(n.min(PAGE_LIMIT_MAX)),
            },
        }
    }
}

/// Which route a path names, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Tenants,
    Tenant(&'a str),
    TenantKeys(&'a str),
    TenantKey(&'a str, &'a str),
    Webhooks,
    Webhook(&'a str),
    WebhookRotate(&'a str),
    WebhookTest(&'a str),
    WebhookDeliveries(&'a str),
    WebhookRecover(&'a str),
    EventTypes,
    Delivery(&'a str),
    DeliveryRetry(&'a str),
    Events,
    EventsBatch,
    Inbound(&'a str),
    Deliveries,
    /// The operator console's page and assets (public: they hold no data).
    Console(&'static console::Asset),
}

impl<'a> Route<'a> {
    fn parse(segments: &[&'a str]) -> Option<Route<'a>> {
        Some(match segments {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["v1", "openapi.json"] => Route::OpenApi,
            ["v1", "tenants"] => Route::Tenants,
            ["v1", "tenants", id] => Route::Tenant(id),
            ["v1", "tenants", id, "keys"] => Route::TenantKeys(id),
            ["v1", "tenants", id, "keys", key] => Route::TenantKey(id, key),
            ["v1", "webhooks"] => Route::Webhooks,
            ["v1", "webhooks", id] => Route::Webhook(id),
            ["v1", "webhooks", id, "secret", "rotate"] => Route::WebhookRotate(id),
            ["v1", "webhooks", id, "test"] => Route::WebhookTest(id),
            ["v1", "webhooks", id, "deliveries"] => Route::WebhookDeliveries(id),
            ["v1", "webhooks", id, "recover"] => Route::WebhookRecover(id),
            ["v1", "event-types"] => Route::EventTypes,
            ["v1", "deliveries", id] => Route::Delivery(id),
            ["v1", "deliveries", id, "retry"] => Route::DeliveryRetry(id),
            ["v1", "events"] => Route::Events,
            ["v1", "events", "batch"] => Route::EventsBatch,
            ["v1", "inbound", source] => Route::Inbound(source),
            ["v1", "deliveries"] => Route::Deliveries,
            ["console"] | ["console", _] => Route::Console(console::find(segments)?),
            _ => return None,
        })
    }

    /// The pattern, for metrics labels and logs.
    fn pattern(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/v1/openapi.json",
            Route::Tenants => "/v1/tenants",
            Route::Tenant(_) => "/v1/tenants/{id}",
            Route::TenantKeys(_) => "/v1/tenants/{id}/keys",
            Route::TenantKey(..) => "/v1/tenants/{id}/keys/{key_id}",
            Route::Webhooks => "/v1/webhooks",
            Route::Webhook(_) => "/v1/webhooks/{id}",
            Route::WebhookRotate(_) => "/v1/webhooks/{id}/secret/rotate",
            Route::WebhookTest(_) => "/v1/webhooks/{id}/test",
            Route::WebhookDeliveries(_) => "/v1/webhooks/{id}/deliveries",
            Route::WebhookRecover(_) => "/v1/webhooks/{id}/recover",
            Route::EventTypes => "/v1/event-types",
            Route::Delivery(_) => "/v1/deliveries/{id}",
            Route::DeliveryRetry(_) => "/v1/deliveries/{id}/retry",
            Route::Events => "/v1/events",
            Route::EventsBatch => "/v1/events/batch",
            Route::Inbound(_) => "/v1/inbound/{source}",
            Route::Deliveries => "/v1/deliveries",
            Route::Console(_) => "/console",
        }
    }

    /// The methods the route answers.
    fn allowed(self) -> &'static str {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::OpenApi
            | Route::EventTypes
            | Route::WebhookDeliveries(_)
            | Route::Delivery(_)
            | Route::Deliveries
            | Route::Console(_) => "GET",
            Route::Tenants | Route::Webhooks => "GET, POST",
            Route::TenantKeys(_)
            | Route::WebhookRotate(_)
            | Route::WebhookTest(_)
            | Route::WebhookRecover(_)
            | Route::DeliveryRetry(_)
            | Route::Events
            | Route::EventsBatch
            | Route::Inbound(_) => "POST",
            Route::TenantKey(..) => "DELETE",
            Route::Tenant(_) => "GET, DELETE",
            Route::Webhook(_) => "GET, PATCH, DELETE",
        }
    }

    fn is_admin(self) -> bool {
        matches!(
            self,
            Route::Tenants | Route::Tenant(_) | Route::TenantKeys(_) | Route::TenantKey(..)
        )
    }

    fn needs_auth(self) -> bool {
        !matches!(
            self,
            Route::Healthz
                | Route::Readyz
                | Route::Metrics
                | Route::OpenApi
                | Route::Console(_)
                | Route::Inbound(_)
        )
    }
}

/// The 405 for a method `route` does not answer (`HEAD` goes where `GET` does).
fn method_refused(route: Route<'_>, method: &str) -> Option<Response> {
    let allowed = route.allowed();
    let method_ok =
        allowed.split(", ").any(|m| m == method) || (method == "HEAD" && allowed.contains("GET"));
    (!method_ok).then(|| {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("{} answers {allowed}", route.pattern()),
        )
        .into_response()
        .with_header("Allow", allowed.to_string())
    })
}

/// The value of header `name` when the request carries it at most once. A repeated
/// credential, tenant or idempotency header is ambiguous (a proxy and this server could
/// each believe a different one), so it is refused rather than resolved by position.
pub(crate) fn sole_header<'r>(
    request: &'r Request,
    name: &str,
) -> std::result::Result<Option<&'r [u8]>, ()> {
    let mut values = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    let first = values.next();
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

fn header_str<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Parses a JSON body into `T`; 415 for another content type, 400 for bad JSON.
fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T> {
    if request.body.is_empty() {
        return Err(ApiError::new(
            400,
            "invalid_json",
            "a JSON request body is required",
        ));
    }
    check_content_type(request)?;
    let value: T = serde_json::from_slice(&request.body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            "invalid_json"
        } else {
            "invalid_request"
        };
        ApiError::new(400, code, format!("request body: {e}"))
    })?;
    // serde reads a struct from an array too (`[]` for a body whose fields are all
    // optional); every body of this API is an object.
    if request.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// `Some` for a field that is present, whatever its value (`null` included); with
/// `#[serde(default)]`, `None` when it is absent.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Like [`json_body`], but an empty body is `T::default()`.
fn optional_json_body<T: DeserializeOwned + Default>(request: &Request) -> Result<T> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(request)
}

pub(crate) fn check_content_type(request: &Request) -> Result<()> {
    let Some(value) = header_str(request, "content-type") else {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    };
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("Content-Type {media:?} is not supported; send application/json"),
        ))
    }
}

impl App {
    /// Builds the handler state.
    pub fn new(config: Config, herald: Herald, keys: KeyStore, default_scheme: Scheme) -> App {
        let connections_max = config.limits.connections_max;
        App {
            ws: crate::ws::Hub::new(&config.ws),
            config,
            herald,
            keys,
            default_scheme,
            metrics: Metrics::default(),
            connections: Arc::new(ConnectionCount::new(connections_max)),
            inbound: BTreeMap::new(),
            stats: crate::stats::SharedStats::default(),
            webhook_changes: crate::changes::WebhookChanges::default(),
            tenant_requests: TenantRequests::default(),
            tenant_changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: &Request, peer: SocketAddr) -> Response {
        let started = std::time::Instant::now();
        let (pattern, response) = match parse_target(&request.target) {
            Ok(target) => match Route::parse(&target.segments) {
                Some(route) => {
                    let response = match self.dispatch(route, &target, request).await {
                        Ok(response) => response,
                        Err(error) => error.into_response(),
                    };
                    (route.pattern(), response)
                }
                None => (
                    "unmatched",
                    ApiError::not_found(format!("no route {}", request.target)).into_response(),
                ),
            },
            Err(error) => ("unmatched", error.into_response()),
        };
        self.metrics.observe_request(pattern, response.status);
        self.metrics
            .observe_latency(started.elapsed().as_secs_f64());
        // A 503 is back-pressure the caller is told to retry: under the flood it answers,
        // a line per request would be a flood of its own (the metrics count them).
        if response.status >= 500 && response.status != 503 {
            tracing::warn!(method = %request.method, route = pattern, status = response.status, %peer, "request failed");
        } else {
            tracing::debug!(method = %request.method, route = pattern, status = response.status, %peer, "request");
        }
        response
    }

    /// The answer to a request with a body decided by its head alone, before the body
    /// is read: a target that names no route or is malformed (404, 400), an inbound
    /// source that is not configured (404), a stream handshake (which has no body, 400),
    /// a route that needs a key and no valid key (401). The server then writes it and
    /// closes without reading the body or sending `100 Continue`, so a client without a
    /// key cannot have bodies read and buffered for it. `None`: read the body and
    /// [`handle`](Self::handle) the request.
    pub fn refuse_before_body(&self, head: &Request, peer: SocketAddr) -> Option<Response> {
        let (pattern, response) = self.answer_on_head(head)?;
        self.metrics.observe_request(pattern, response.status);
        tracing::debug!(method = %head.method, route = pattern, status = response.status, %peer, "refused before its body");
        Some(response)
    }

    fn answer_on_head(&self, head: &Request) -> Option<(&'static str, Response)> {
        if crate::ws::is_stream_request(head) {
            return Some((crate::ws::PATH, crate::ws::refuse_body()));
        }
        let target = match parse_target(&head.target) {
            Ok(target) => target,
            Err(error) => return Some(("unmatched", error.into_response())),
        };
        let Some(route) = Route::parse(&target.segments) else {
            let error = ApiError::not_found(format!("no route {}", head.target));
            return Some(("unmatched", error.into_response()));
        };
        match route {
            Route::Inbound(name) if !self.inbound.contains_key(name) => {
                self.metrics.observe_inbound("unknown", "rejected");
                let error = crate::inbound::unknown_source(name);
                return Some((route.pattern(), error.into_response()));
            }
            // Signed by the provider: read, then verified.
            Route::Inbound(_) => return None,
            // Health, metrics, the API's description and the console are read, never
            // written to: none takes a body.
            _ if !route.needs_auth() => {
                if let Some(refused) = method_refused(route, head.method.as_str()) {
                    return Some((route.pattern(), refused));
                }
                let error = ApiError::new(
                    400,
                    "invalid_request",
                    format!("{} takes no request body", route.pattern()),
                );
                return Some((route.pattern(), error.into_response()));
            }
            _ => {}
        }
        let error = self.authenticate(head).err()?;
        Some((route.pattern(), error.into_response()))
    }

    async fn dispatch(
        &self,
        route: Route<'_>,
        target: &Target<'_>,
        request: &Request,
    ) -> Result<Response> {
        let method = request.method.as_str();
        // Authentication comes first: without a valid key, a route's methods are not
        // revealed (401, never 405), and admin routes look absent to tenant keys.
        let principal = if route.needs_auth() {
            let principal = self.authenticate(request)?;
            if route.is_admin() {
                self.require_admin(Some(&principal))?;
            }
            Some(principal)
        } else {
            None
        };
        if let Some(refused) = method_refused(route, method) {
            return Ok(refused);
        }
        match route {
            Route::Healthz => Ok(Response::json(200, &json!({"status": "ok"}))),
            Route::Readyz => self.readyz().await,
            Route::Metrics => self.metrics_page().await,
            Route::OpenApi => Ok(Response {
                content_type: "application/json",
                body: crate::OPENAPI_JSON.as_bytes().to_vec(),
                ..Response::empty(200)
            }),
            Route::EventTypes => Ok(event_types()),
            // Providers sign their requests instead of holding a key.
            Route::Inbound(source) => self.inbound(source, request).await,
            Route::Console(asset) => Ok(console::response(asset)),
            Route::Tenants => {
                self.require_admin(principal.as_ref())?;
                if method == "POST" {
                    self.create_tenant(request).await
                } else {
                    self.list_tenants(target)
                }
            }
            Route::Tenant(id) => {
                self.require_admin(principal.as_ref())?;
                if method == "DELETE" {
                    self.delete_tenant(id, target).await
                } else {
                    self.get_tenant(id)
                }
            }
            Route::TenantKeys(id) => {
                self.require_admin(principal.as_ref())?;
                self.mint_key(id).await
            }
            Route::TenantKey(id, key) => {
                self.require_admin(principal.as_ref())?;
                self.revoke_key(id, key).await
            }
            _ => {
                // Checked above: every other route needs auth.
                let principal = principal.expect("tenant routes are authenticated");
                let tenant = self.tenant_of(&principal, request)?;
                let max = self.config.limits.requests_in_flight_per_tenant_max();
                let Some(_counted) = self.tenant_requests.enter(&tenant, max) else {
                    return Err(ApiError {
                        retry_after_s: Some(1),
                        ..ApiError::new(
                            429,
                            "too_many_requests",
                            format!(
                                "tenant {tenant} has {max} requests under way, the most allowed \
                                 (limits.requests_in_flight_per_tenant_max); wait for their \
                                 answers, or send events in batches"
                            ),
                        )
                    });
                };
                self.tenant_route(route, target, request, &tenant).await
            }
        }
    }

    async fn tenant_route(
        &self,
        route: Route<'_>,
        target: &Target<'_>,
        request: &Request,
        tenant: &TenantId,
    ) -> Result<Response> {
        let method = request.method.as_str();
        match route {
            Route::Webhooks if method == "POST" => self.create_webhook(tenant, request).await,
            Route::Webhooks => self.list_webhooks(tenant, target).await,
            Route::Webhook(id) => {
                let id = webhook_id(id)?;
                match method {
                    "PATCH" => self.patch_webhook(tenant, &id, request).await,
                    "DELETE" => {
                        self.herald.try_delete_webhook_async(tenant, &id)?.await?;
                        Ok(Response::empty(204))
                    }
                    _ => {
                        let webhook = self.existing_webhook(tenant, &id).await?;
                        Ok(Response::json(200, &views::webhook(&webhook, None)))
                    }
                }
            }
            Route::WebhookRotate(id) => self.rotate(tenant, &webhook_id(id)?, request).await,
            Route::WebhookTest(id) => self.test_send(tenant, &webhook_id(id)?, request).await,
            Route::WebhookDeliveries(id) => {
                self.list_deliveries(tenant, Some(&webhook_id(id)?), target)
                    .await
            }
            Route::Deliveries => {
                let webhook = match target.query("webhook_id") {
                    Some(id) => Some(webhook_id(id)?),
                    None => None,
                };
                self.list_deliveries(tenant, webhook.as_ref(), target).await
            }
            Route::WebhookRecover(id) => self.recover(tenant, &webhook_id(id)?, request).await,
            Route::Delivery(id) => {
                let id = delivery_id(id)?;
                match self.herald.delivery_async(tenant, id).await? {
                    Some(record) => Ok(Response::json(200, &views::delivery_detail(&record))),
                    None => Err(ApiError::not_found(format!(
                        "no delivery {}",
                        views::delivery_id(id)
                    ))),
                }
            }
            Route::DeliveryRetry(id) => {
                let id = delivery_id(id)?;
                self.herald.try_retry_delivery_async(tenant, id)?.await?;
                Ok(Response::json(
                    202,
                    &json!({"delivery_id": views::delivery_id(id), "status": "pending"}),
                ))
            }
            Route::Events => self.publish(tenant, request).await,
            Route::EventsBatch => self.publish_batch(tenant, request).await,
            _ => Err(ApiError::not_found("no such route")),
        }
    }

    // ------------------------------------------------------------------ auth

    fn authenticate(&self, request: &Request) -> Result<Principal> {
        let unauthorized = |message: &str| ApiError::new(401, "unauthorized", message);
        let value = sole_header(request, "authorization")
            .map_err(|()| unauthorized("send one Authorization header, not several"))?
            .ok_or_else(|| unauthorized("send Authorization: Bearer <api key>"))?;
        let value = value.trim_ascii();
        let key = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii())
            .ok_or_else(|| unauthorized("the Authorization header must be: Bearer <api key>"))?;
        self.keys.authenticate(key).ok_or_else(|| {
            unauthorized("the API key is not valid (revoked, mistyped, or another server's)")
        })
    }

    fn require_admin(&self, principal: Option<&Principal>) -> Result<()> {
        match principal {
            Some(Principal::Admin) => Ok(()),
            // A tenant key does not learn that admin routes exist.
            _ => Err(ApiError::not_found("no such route for this key")),
        }
    }

    /// The tenant a request acts for: a tenant key's own, or the `Herald-Tenant` header
    /// for the admin key.
    fn tenant_of(&self, principal: &Principal, request: &Request) -> Result<TenantId> {
        let raw = sole_header(request, "herald-tenant").map_err(|()| {
            ApiError::invalid(
                "Herald-Tenant",
                "send one Herald-Tenant header, not several",
            )
        })?;
        let named = header_str(request, "herald-tenant");
        if raw.is_some() && named.is_none() {
            // Not text: never a tenant id, so it is not silently ignored either.
            return Err(ApiError::invalid(
                "Herald-Tenant",
                "Herald-Tenant must be a tenant id",
            ));
        }
        match principal {
            Principal::Tenant(tenant) => match named {
                Some(name) if name != tenant.as_str() => Err(ApiError::not_found(format!(
                    "no tenant {name} for this key"
                ))),
                _ => Ok(tenant.clone()),
            },
            Principal::Admin => {
                let name = named.ok_or_else(|| {
                    ApiError::invalid(
                        "Herald-Tenant",
                        "the admin key acts for a tenant named in the Herald-Tenant header",
                    )
                })?;
                let tenant = TenantId::parse(name)
                    .map_err(|e| ApiError::invalid("Herald-Tenant", e.to_string()))?;
                if !self.keys.has_tenant(&tenant) {
                    return Err(ApiError::not_found(format!("no tenant {tenant}")));
                }
                Ok(tenant)
            }
        }
    }

    // ------------------------------------------------------------------ operations

    async fn readyz(&self) -> Result<Response> {
        let stats = self
            .stats
            .fresh_within(FIGURES_WAIT, || self.herald.stats_async())
            .await;
        match stats {
            Ok(stats) if stats.len() == self.herald.shards() => {
                Ok(Response::json(200, &json!({"status": "ready"})))
            }
            Err(Unanswered::TimedOut) => {
                Ok(Response::json(503, &json!({"status": "unresponsive"})))
            }
            _ => Ok(Response::json(503, &json!({"status": "replaying"}))),
        }
    }

    async fn metrics_page(&self) -> Result<Response> {
        let stats = self
            .stats
            .fresh_within(FIGURES_WAIT, || self.herald.stats_async())
            .await;
        // Shards that did not answer in time: a failed scrape, not a page of zeros (a
        // scraper would take zeroed counters for a reset, and the totals when they come
        // back for a burst).
        if matches!(stats, Err(Unanswered::TimedOut)) {
            return Err(ApiError::unavailable(
                "the shards did not give their figures within 2 s; scrape again",
                1,
            ));
        }
        let figures = EngineFigures::from_stats(stats.as_deref().map_or(&[], |s| &s[..]));
        let process = crate::metrics::ProcessFigures::read();
        let text = self
            .metrics
            .render(&figures, &process, self.connections.get());
        Ok(Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: text.into_bytes(),
            ..Response::empty(200)
        })
    }

    // ------------------------------------------------------------------ tenants

    async fn create_tenant(&self, request: &Request) -> Result<Response> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            id: String,
        }
        let body: Body = json_body(request)?;
        let tenant =
            TenantId::parse(&body.id).map_err(|e| ApiError::invalid("id", e.to_string()))?;
        // `.` and `..` are path segments to clients (curl, browsers) that normalise URLs:
        // /v1/tenants/../keys/K would never reach this tenant's key routes.
        if body.id.bytes().all(|b| b == b'.') {
            return Err(ApiError::invalid(
                "id",
                "a tenant id must not be made of dots only (URLs would lose it)",
            ));
        }
        let _turn = self.tenant_changes.lock().await;
        if !self.keys.has_tenant(&tenant) {
            // What a deleted tenant of this id left (its deletion purges it, unless that
            // failed) is never shown to the new one.
            self.purge_tenant(&tenant).await.map_err(|error| {
                tracing::warn!(tenant = %tenant, %error, "deleted tenant's data not purged");
                // The caller is told the reason as any error tells it (no server paths).
                let reason = ApiError::from(error).message;
                ApiError::unavailable(
                    format!(
                        "tenant {tenant} was not created: clearing what a deleted tenant of \
                         this id may have left failed ({reason}); create it again in a moment"
                    ),
                    1,
                )
            })?;
        }
        let minted = self
            .blocking(move |keys| keys.create_tenant(&tenant, now_ms()))
            .await?;
        tracing::info!(tenant = %body.id, key_id = %minted.key_id, "tenant created");
        Ok(Response::json(
            201,
            &json!({
                "id": body.id,
                "api_key": minted.api_key,
                "key_id": minted.key_id,
                "created_at": rfc3339(minted.created_at_ms),
            }),
        ))
    }

    fn list_tenants(&self, target: &Target<'_>) -> Result<Response> {
        let limit = target.limit()?;
        // The cursor is the last tenant id of the previous page.
        if let Some(cursor) = target.cursor() {
            TenantId::parse(cursor).map_err(|_| ApiError::invalid("cursor", BAD_CURSOR))?;
        }
        let (page, more) = self.keys.tenants(target.cursor(), limit);
        let next = if more {
            page.last().map(|t| Value::String(t.id.clone()))
        } else {
            None
        };
        let data: Vec<Value> = page.iter().map(tenant_view).collect();
        Ok(Response::json(
            200,
            &json!({"data": data, "next_cursor": next.unwrap_or(Value::Null)}),
        ))
    }

    fn get_tenant(&self, id: &str) -> Result<Response> {
        let no_tenant = || ApiError::not_found(format!("no tenant {id}"));
        let tenant = TenantId::parse(id).map_err(|_| no_tenant())?;
        let entry = self.keys.tenant(&tenant).ok_or_else(no_tenant)?;
        Ok(Response::json(200, &tenant_view(&entry)))
    }

    /// Deletes a tenant that has no webhook left: its keys stop working at once, and
    /// its streams close at their next ping. Webhooks go first, each through its own
    /// route or all at once with `?with_webhooks=true`, so that deleting a tenant never
    /// drops pending deliveries unseen (a deleted webhook's end as failed, in the log).
    async fn delete_tenant(&self, id: &str, target: &Target<'_>) -> Result<Response> {
        let no_tenant = || ApiError::not_found(format!("no tenant {id}"));
        let tenant = TenantId::parse(id).map_err(|_| no_tenant())?;
        let with_webhooks = match target.query("with_webhooks") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "with_webhooks",
                    format!("with_webhooks is true or false, not {other:?}"),
                ))
            }
        };
        let _turn = self.tenant_changes.lock().await;
        if !self.keys.has_tenant(&tenant) {
            return Err(no_tenant());
        }
        if with_webhooks {
            let deleted = self.delete_webhooks_of(&tenant, Whose::Live).await?;
            tracing::info!(tenant = %tenant, deleted, "webhooks deleted with their tenant");
        }
        let left = self
            .herald
            .list_webhooks_page_async(&tenant, None, 1)
            .await?;
        if let Some(webhook) = left.first() {
            return Err(ApiError::new(
                409,
                "conflict",
                format!(
                    "tenant {tenant} still has webhooks ({} among them); delete them first \
                     (DELETE /v1/webhooks/{{id}} with the admin key and Herald-Tenant: {tenant}), \
                     or ask for them to go with it (?with_webhooks=true)",
                    webhook.id
                ),
            ));
        }
        let removed = tenant.clone();
        self.blocking(move |keys| keys.delete_tenant(&removed))
            .await?;
        tracing::info!(tenant = %tenant, "tenant deleted");
        // A request authenticated just before the deletion may still be under way, and
        // a webhook it creates would outlive its tenant (and reappear under a tenant
        // made later with the same id). Wait for the tenant's requests to end, then
        // delete whatever webhook they left.
        let settle_until = std::time::Instant::now() + TENANT_DELETE_SETTLE;
        while self.tenant_requests.under_way(&tenant) > 0 {
            if std::time::Instant::now() >= settle_until {
                tracing::warn!(tenant = %tenant, "requests of a deleted tenant still under way; a webhook one of them creates stays (delete it with Herald-Tenant once a tenant of this id is made again)");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(error) = self.delete_webhooks_of(&tenant, Whose::Deleted).await {
            tracing::warn!(tenant = %tenant, %error, "webhooks of a deleted tenant not deleted; delete them with Herald-Tenant once a tenant of this id is made again");
        }
        match self.purge_tenant(&tenant).await {
            Ok(deliveries) => {
                tracing::info!(tenant = %tenant, deliveries, "deleted tenant's data purged");
                Ok(Response::empty(204))
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "deleted tenant's data not purged");
                // The status and the reason as any error gives them (no server paths).
                let mut answer = ApiError::from(error);
                answer.message = format!(
                    "tenant {tenant} is deleted (its keys no longer work), but what it left \
                     (delivery log, stream window, idempotency keys) could not be purged: \
                     {}; it is purged before a tenant of this id is made again, and ages out \
                     until then",
                    answer.message
                );
                // The deletion stands: asking again would find no tenant.
                answer.retry_after_s = None;
                Err(answer)
            }
        }
    }

    /// Purges what the engine retained of `tenant` (its finished deliveries, stream
    /// events and idempotency keys), asking again while a deleted webhook's pending
    /// deliveries are still ending (at most [`TENANT_PURGE_SETTLE`]) and deleting a
    /// webhook a request under way left meanwhile; how many deliveries left the log.
    async fn purge_tenant(&self, tenant: &TenantId) -> std::result::Result<usize, herald::Error> {
        let until = std::time::Instant::now() + TENANT_PURGE_SETTLE;
        loop {
            match self.herald.purge_tenant_async(tenant).await {
                Err(herald::Error::Conflict { .. }) if std::time::Instant::now() < until => {
                    if !self.keys.has_tenant(tenant) {
                        self.delete_webhooks_of(tenant, Whose::Deleted).await?;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return result,
            }
        }
    }

    /// Deletes every webhook of `tenant`, a page at a time; how many. For a tenant that
    /// no longer exists ([`Whose::Deleted`], see `delete_tenant`) it stops, deleting
    /// nothing more, once a tenant of the same id is made again: its webhooks are its own.
    async fn delete_webhooks_of(
        &self,
        tenant: &TenantId,
        whose: Whose,
    ) -> std::result::Result<usize, herald::Error> {
        let mut deleted = 0;
        for _ in 0..TENANT_WEBHOOKS_ROUNDS_MAX {
            let page = self
                .herald
                .list_webhooks_page_async(tenant, None, TENANT_WEBHOOKS_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(deleted);
            }
            for webhook in &page {
                if whose == Whose::Deleted && self.keys.has_tenant(tenant) {
                    tracing::warn!(tenant = %tenant, "a tenant of a deleted tenant's id was made while its strays were deleted; its webhooks are left to it");
                    return Ok(deleted);
                }
                self.herald
                    .try_delete_webhook_async(tenant, &webhook.id)?
                    .await?;
                if whose == Whose::Deleted {
                    tracing::info!(tenant = %tenant, webhook = %webhook.id, "webhook created while its tenant was deleted, deleted");
                }
                deleted += 1;
            }
        }
        tracing::warn!(tenant = %tenant, deleted, "webhooks still listed after deleting them");
        Ok(deleted)
    }

    async fn mint_key(&self, id: &str) -> Result<Response> {
        let tenant =
            TenantId::parse(id).map_err(|_| ApiError::not_found(format!("no tenant {id}")))?;
        let minted = self
            .blocking(move |keys| keys.mint_key(&tenant, now_ms()))
            .await?;
        tracing::info!(tenant = %id, key_id = %minted.key_id, "key minted");
        Ok(Response::json(
            201,
            &json!({
                "id": minted.key_id,
                "api_key": minted.api_key,
                "created_at": rfc3339(minted.created_at_ms),
            }),
        ))
    }

    async fn revoke_key(&self, id: &str, key: &str) -> Result<Response> {
        let tenant =
            TenantId::parse(id).map_err(|_| ApiError::not_found(format!("no tenant {id}")))?;
        let key_id = key.to_string();
        self.blocking(move |keys| keys.revoke_key(&tenant, &key_id))
            .await?;
        tracing::info!(tenant = %id, key_id = %key, "key revoked");
        Ok(Response::empty(204))
    }

    /// Runs a key-store change: it writes and fsyncs a file, so the worker is marked as
    /// blocking (`block_in_place`) and the other workers keep serving meanwhile.
    async fn blocking<T, F>(&self, change: F) -> Result<T>
    where
        F: FnOnce(&KeyStore) -> std::result::Result<T, StoreError>,
    {
        tokio::task::block_in_place(|| change(&self.keys)).map_err(ApiError::from)
    }

    // ------------------------------------------------------------------ webhooks

    async fn existing_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<herald::Webhook> {
        found_webhook(id, self.herald.webhook_async(tenant, id).await?)
    }

    /// [`existing_webhook`](Self::existing_webhook) for a route about to change it: a
    /// full intake is a 503 at once, as for the change itself.
    async fn webhook_to_change(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> Result<herald::Webhook> {
        found_webhook(id, self.herald.try_webhook_async(tenant, id)?.await?)
    }

    async fn create_webhook(&self, tenant: &TenantId, request: &Request) -> Result<Response> {
        let input: WebhookInput = json_body(request)?;
        let url = input
            .url
            .as_deref()
            .ok_or_else(|| ApiError::invalid("url", "url is required"))?;
        let url = parse_url(url)?;
        let events = input.events.as_ref().ok_or_else(|| {
            ApiError::invalid("events", "events is required (e.g. [\"order.*\"])")
        })?;
        let filters = parse_filters(events)?;
        let scheme = match &input.signature {
            Some(signature) => self.parse_scheme(signature)?,
            None => self.default_scheme.clone(),
        };
        let secret = match &input.secret {
            Some(secret) => {
                check_secret(&scheme, secret)?;
                secret.clone()
            }
            None => generate_secret(&scheme),
        };
        let mut spec = WebhookSpec::new(url, filters, scheme, secret.clone());
        input.apply_settings(&mut spec)?;
        self.herald.try_check_url_async(&spec.url)?.await?;
        let id = self
            .herald
            .try_create_webhook_async(tenant, spec.clone())?
            .await?;
        tracing::info!(tenant = %tenant, webhook = %id, "webhook created");
        let now = now_ms();
        let webhook = self
            .written_webhook(tenant, &id, || new_webhook(tenant, &id, spec, now))
            .await;
        Ok(Response::json(
            201,
            &views::webhook(&webhook, Some(&secret)),
        ))
    }

    /// The webhook as this request just wrote it, for the answer. The change is durable
    /// already, so failing the request now would hide a success (and a create's or a
    /// rotation's secret, shown only in this answer): if reading it back fails (a delete
    /// in between, a full shard queue), the answer is built from what was written.
    async fn written_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        written: impl FnOnce() -> herald::Webhook,
    ) -> herald::Webhook {
        let read = match self.herald.try_webhook_async(tenant, id) {
            Ok(read) => read.await,
            Err(error) => Err(error),
        };
        match read {
            Ok(Some(webhook)) => webhook,
            Ok(None) => written(),
            Err(error) => {
                tracing::warn!(tenant = %tenant, webhook = %id, %error, "webhook written but not read back; answering with what was written");
                written()
            }
        }
    }

    async fn list_webhooks(&self, tenant: &TenantId, target: &Target<'_>) -> Result<Response> {
        let limit = target.limit()?;
        let after = match target.cursor() {
            Some(cursor) => Some(
                WebhookId::parse(cursor).map_err(|_| ApiError::invalid("cursor", BAD_CURSOR))?,
            ),
            None => None,
        };
        let mut page = self
            .herald
            .list_webhooks_page_async(tenant, after.as_ref(), limit + 1)
            .await?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last()
                .map(|w| Value::String(w.id.as_str().to_string()))
        } else {
            None
        };
        let data: Vec<Value> = page.iter().map(|w| views::webhook(w, None)).collect();
        Ok(Response::json(
            200,
            &json!({"data": data, "next_cursor": next.unwrap_or(Value::Null)}),
        ))
    }

    async fn patch_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        request: &Request,
    ) -> Result<Response> {
        let input: WebhookInput = json_body(request)?;
        // Read, changed and written back whole: no other change of it in between.
        let _turn = self.webhook_changes.turn(tenant, id).await;
        let current = self.webhook_to_change(tenant, id).await?;
        let mut spec = current.spec.clone();
        let mut url_changed = false;
        if let Some(url) = &input.url {
            spec.url = parse_url(url)?;
            url_changed = true;
        }
        if let Some(events) = &input.events {
            spec.filters = parse_filters(events)?;
        }
        if let Some(signature) = &input.signature {
            spec.scheme = self.parse_scheme(signature)?;
        }
        if let Some(secret) = &input.secret {
            check_secret(&spec.scheme, secret)?;
            spec.secrets = vec![SecretSpec {
                value: secret.clone(),
                expires_at_ms: None,
            }];
        } else if input.signature.is_some() {
            for secret in &spec.secrets {
                check_secret(&spec.scheme, &secret.value)?;
            }
        }
        input.apply_settings(&mut spec)?;
        if url_changed {
            self.herald.try_check_url_async(&spec.url)?.await?;
        }
        // Without a status of its own, the change keeps the one the webhook has when it
        // is applied: the engine may have disabled it since it was read (a 410).
        if input.status.is_some() {
            self.herald
                .try_update_webhook_async(tenant, id, spec.clone())?
                .await?;
        } else {
            self.herald
                .try_update_webhook_settings_async(tenant, id, spec.clone())?
                .await?;
        }
        tracing::info!(tenant = %tenant, webhook = %id, "webhook updated");
        let webhook = self
            .written_webhook(tenant, id, || updated_webhook(current, spec))
            .await;
        Ok(Response::json(200, &views::webhook(&webhook, None)))
    }

    async fn rotate(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        request: &Request,
    ) -> Result<Response> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default, deserialize_with = "integer")]
            grace_s: Option<u64>,
        }
        let body: Body = optional_json_body(request)?;
        let grace_s = body
            .grace_s
            .unwrap_or(config::ROTATE_GRACE_DEFAULT.as_secs());
        if grace_s > ROTATE_GRACE_S_MAX {
            return Err(ApiError::invalid(
                "grace_s",
                format!("grace_s is at most {ROTATE_GRACE_S_MAX} (7 days)"),
            ));
        }
        let _turn = self.webhook_changes.turn(tenant, id).await;
        let current = self.webhook_to_change(tenant, id).await?;
        let now = now_ms();
        let expires = now.saturating_add(grace_s.saturating_mul(1000));
        let mut spec = current.spec.clone();
        let secret = generate_secret(&spec.scheme);
        // Old secrets still live keep signing until their grace ends; the current one
        // gets this rotation's grace. The oldest are dropped to stay within the limit.
        let mut kept: Vec<SecretSpec> = spec
            .secrets
            .iter()
            .filter(|s| s.expires_at_ms.is_none_or(|at| at > now))
            .map(|s| SecretSpec {
                value: s.value.clone(),
                expires_at_ms: Some(s.expires_at_ms.map_or(expires, |at| at.min(expires))),
            })
            .filter(|s| grace_s > 0 && s.expires_at_ms.is_some_and(|at| at > now))
            .collect();
        kept.sort_by_key(|s| std::cmp::Reverse(s.expires_at_ms));
        kept.truncate(SECRETS_KEPT_MAX);
        let previous_expires = kept.first().and_then(|s| s.expires_at_ms);
        spec.secrets = std::iter::once(SecretSpec {
            value: secret.clone(),
            expires_at_ms: None,
        })
        .chain(kept)
        .collect();
        self.herald
            .try_update_webhook_settings_async(tenant, id, spec.clone())?
            .await?;
        tracing::info!(tenant = %tenant, webhook = %id, grace_s, "secret rotated");
        let webhook = self
            .written_webhook(tenant, id, || updated_webhook(current, spec))
            .await;
        let mut view = views::webhook(&webhook, Some(&secret));
        view["previous_secret_expires_at"] = crate::time::rfc3339_json(previous_expires);
        Ok(Response::json(200, &view))
    }

    fn parse_scheme(&self, signature: &SignatureInput) -> Result<Scheme> {
        let header = signature.header.clone();
        let scheme = match signature.scheme.as_str() {
            "standard" => Scheme::Standard,
            "ed25519" => Scheme::Ed25519,
            "olo" => Scheme::Olo,
            "stripe" => {
                let header = header
                    .clone()
                    .unwrap_or_else(|| self.config.signing.stripe_header.clone());
                herald_http::check_header_name(&header).map_err(|_| {
                    ApiError::invalid(
                        "signature.header",
                        format!("{header:?} is not an HTTP header name"),
                    )
                })?;
                Scheme::Stripe { header }
            }
            other => {
                return Err(ApiError::invalid(
                    "signature.scheme",
                    format!(
                        "signature.scheme must be standard, ed25519, stripe or olo; not {other:?}"
                    ),
                ))
            }
        };
        if header.is_some() && !matches!(scheme, Scheme::Stripe { .. }) {
            return Err(ApiError::invalid(
                "signature.header",
                "signature.header applies to the stripe scheme only",
            ));
        }
        Ok(scheme)
    }

    async fn test_send(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        request: &Request,
    ) -> Result<Response> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            event_type: Option<String>,
            /// Present (`null` included) or absent.
            #[serde(default, deserialize_with = "present")]
            data: Option<Box<RawValue>>,
        }
        let body: Body = optional_json_body(request)?;
        let name = body.event_type.as_deref().unwrap_or("order.created");
        let event_type =
            EventType::parse(name).map_err(|e| ApiError::invalid("event_type", e.to_string()))?;
        let data = match (&body.data, catalog::find(name)) {
            (Some(data), _) => data.get().as_bytes().to_vec(),
            (None, Some(info)) => info.sample.as_bytes().to_vec(),
            (None, None) => {
                return Err(ApiError::invalid(
                    "event_type",
                    format!("{name} is not in the catalog (GET /v1/event-types); pass \"data\" to send it anyway"),
                ))
            }
        };
        let event = Event::from_json_bytes(event_type, data);
        let sent = self
            .herald
            .try_send_test_event_with_async(tenant, id, event)?
            .await?;
        Ok(Response::json(
            202,
            &json!({
                "delivery_id": views::delivery_id(sent.delivery),
                "event_id": sent.event_id.as_str(),
            }),
        ))
    }

    // ------------------------------------------------------------------ deliveries

    /// A page of the delivery log: one webhook's (`GET /v1/webhooks/{id}/deliveries`)
    /// or the whole tenant's (`GET /v1/deliveries`, optionally `webhook_id=`), filtered
    /// by status, event type and creation time (`since`, `until`), in delivery order.
    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        webhook: Option<&WebhookId>,
        target: &Target<'_>,
    ) -> Result<Response> {
        if let Some(webhook) = webhook {
            self.existing_webhook(tenant, webhook).await?;
        }
        let limit = target.limit()?;
        let time = |name: &str| match target.query(name) {
            Some(text) => parse_rfc3339(text).map(Some).map_err(|m| {
                // `+` in a query string is a space: the offset's sign was lost on the way.
                let hint = if text.contains(' ') {
                    "; a `+` in a query string reads as a space, so send the offset's `+` as `%2B`"
                } else {
                    ""
                };
                ApiError::invalid(name, format!("{name}: {m}{hint}"))
            }),
            None => Ok(None),
        };
        let (since_ms, until_ms) = (time("since")?, time("until")?);
        let status = match target.query("status") {
            None => None,
            Some("success") => Some(DeliveryStatus::Success),
            Some("pending") => Some(DeliveryStatus::Pending),
            // Failed and exhausted both read as failed: filtered below.
            Some("failed") => None,
            Some(other) => {
                return Err(ApiError::invalid(
                    "status",
                    format!("status must be success, failed or pending; not {other:?}"),
                ))
            }
        };
        let want_failed = target.query("status") == Some("failed");
        let event_type = match target.query("event_type") {
            Some(t) => Some(
                EventType::parse(t).map_err(|e| ApiError::invalid("event_type", e.to_string()))?,
            ),
            None => None,
        };
        // Answered by the shard's own scan (an exact match on the event's id), so a page
        // holds the event's deliveries to every webhook however many others the log has
        // between them.
        let event = match target.query("event_id") {
            Some(id) => {
                Some(EventId::parse(id).map_err(|e| ApiError::invalid("event_id", e.to_string()))?)
            }
            None => None,
        };
        let mut after = match target.cursor() {
            Some(cursor) => Some(
                views::parse_delivery_id(cursor)
                    .ok_or_else(|| ApiError::invalid("cursor", BAD_CURSOR))?,
            ),
            None => None,
        };
        let mut data = Vec::new();
        let mut next = None;
        for _ in 0..DELIVERY_SCAN_PAGES_MAX {
            let page = self
                .herald
                .deliveries_async(DeliveryQuery {
                    tenant: tenant.clone(),
                    webhook: webhook.cloned(),
                    event: event.clone(),
                    status,
                    after,
                    limit: limit - data.len(),
                })
                .await?;
            for record in &page.items {
                let keep = (!want_failed
                    || matches!(
                        record.status,
                        DeliveryStatus::Failed | DeliveryStatus::Exhausted
                    ))
                    && event_type.as_ref().is_none_or(|t| &record.event_type == t)
                    && since_ms.is_none_or(|since| record.accepted_at_ms >= since)
                    && until_ms.is_none_or(|until| record.accepted_at_ms <= until);
                if keep {
                    data.push(views::delivery(record));
                }
                next = Some(record.id);
            }
            after = page.next_after;
            if page.next_after.is_none() {
                next = None;
                break;
            }
            next = page.next_after.or(next);
            if data.len() >= limit {
                break;
            }
        }
        let cursor = next.map_or(Value::Null, |id| Value::String(views::delivery_id(id)));
        Ok(Response::json(
            200,
            &json!({"data": data, "next_cursor": cursor}),
        ))
    }

    async fn recover(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        request: &Request,
    ) -> Result<Response> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            since: String,
        }
        let body: Body = json_body(request)?;
        let since_ms = parse_rfc3339(&body.since).map_err(|m| ApiError::invalid("since", m))?;
        let requeued = self
            .herald
            .try_resend_failed_async(tenant, webhook, since_ms)?
            .await?;
        tracing::info!(tenant = %tenant, webhook = %webhook, requeued, "recover");
        Ok(Response::json(202, &json!({"requeued": requeued})))
    }

    // ------------------------------------------------------------------ events

    async fn publish(&self, tenant: &TenantId, request: &Request) -> Result<Response> {
        let input: EventInput = json_body(request)?;
        let sole = sole_header(request, "idempotency-key").map_err(|()| {
            ApiError::invalid(
                "Idempotency-Key",
                "send one Idempotency-Key header, not several",
            )
        })?;
        let key = match sole {
            Some(value) => Some(parse_idempotency_key(value)?),
            None => None,
        };
        let event = input.to_event(key)?;
        // A full intake is a 503 at once: a flood must not pile up waiting requests.
        let published = self
            .herald
            .try_publish_detailed_async(tenant, event)?
            .await?;
        let mut response = Response::serialize(202, &input.envelope(tenant, &published));
        if published.duplicate {
            response = response.with_header("Idempotent-Replayed", "true".to_string());
        }
        Ok(response)
    }

    async fn publish_batch(&self, tenant: &TenantId, request: &Request) -> Result<Response> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            events: Vec<Box<RawValue>>,
        }
        let body: Body = json_body(request)?;
        if body.events.is_empty() || body.events.len() > BATCH_EVENTS_MAX {
            return Err(ApiError::invalid(
                "events",
                format!(
                    "a batch holds 1 to {BATCH_EVENTS_MAX} events; got {}",
                    body.events.len()
                ),
            ));
        }
        let mut inputs: Vec<Option<EventInput>> = Vec::with_capacity(body.events.len());
        let mut results: Vec<Option<BatchItem<'_>>> = Vec::with_capacity(body.events.len());
        let mut accepted = Vec::new();
        for (index, raw) in body.events.iter().enumerate() {
            let parsed = serde_json::from_str::<EventInput>(raw.get())
                .map_err(|e| ApiError::new(400, "invalid_request", format!("events[{index}]: {e}")))
                .and_then(|input| {
                    let event = input.to_event(None)?;
                    Ok((input, event))
                });
            match parsed {
                Ok((input, event)) => {
                    inputs.push(Some(input));
                    results.push(None);
                    accepted.push((index, event));
                }
                Err(error) => {
                    inputs.push(None);
                    results.push(Some(BatchItem::failed(&error)));
                }
            }
        }
        // One hand-off for the whole batch (BATCH_EVENTS_MAX fits the engine's batch), so
        // the batch is accepted or refused as a unit: no half-published batch behind an
        // error answer.
        let (indexes, events): (Vec<usize>, Vec<Event>) = accepted.into_iter().unzip();
        let published: Vec<(usize, Result<herald::Published>)> = if events.is_empty() {
            Vec::new()
        } else {
            let answers = self
                .herald
                .try_publish_batch_detailed_async(tenant, events)?
                .await?;
            indexes
                .into_iter()
                .zip(answers.into_iter().map(|a| a.map_err(ApiError::from)))
                .collect()
        };
        for (index, answer) in &published {
            results[*index] = Some(match (answer, &inputs[*index]) {
                (Ok(done), Some(input)) => BatchItem::Accepted {
                    status: 202,
                    event: input.envelope(tenant, done),
                },
                (Err(error), _) => BatchItem::failed(error),
                // Every accepted index has its input.
                (Ok(_), None) => {
                    BatchItem::failed(&ApiError::new(500, "internal", "batch input lost"))
                }
            });
        }
        Ok(Response::serialize(200, &BatchAnswer { data: results }))
    }
}

/// A webhook read back, or the 404 for its id.
/// A tenant as `GET /v1/tenants` and `GET /v1/tenants/{id}` show it: its keys by id and
/// prefix, never their hashes.
fn tenant_view(t: &crate::auth::TenantEntry) -> Value {
    json!({
        "id": t.id,
        "created_at": rfc3339(t.created_at_ms),
        "keys": t.keys.iter().map(|k| json!({
            "id": k.id,
            "prefix": k.prefix,
            "created_at": rfc3339(k.created_at_ms),
        })).collect::<Vec<_>>(),
    })
}

fn found_webhook(id: &WebhookId, webhook: Option<herald::Webhook>) -> Result<herald::Webhook> {
    webhook.ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))
}

/// A webhook just created from `spec`, as the engine would show it.
fn new_webhook(
    tenant: &TenantId,
    id: &WebhookId,
    spec: WebhookSpec,
    now_ms: u64,
) -> herald::Webhook {
    herald::Webhook {
        tenant: tenant.clone(),
        id: id.clone(),
        health: herald::Health::new(now_ms, &spec.limits),
        spec,
        pending: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    }
}

/// `current` with its configuration replaced by `spec`.
fn updated_webhook(current: herald::Webhook, spec: WebhookSpec) -> herald::Webhook {
    herald::Webhook {
        spec,
        updated_at_ms: now_ms(),
        ..current
    }
}

/// Secrets kept besides the new one at rotation (the signer's limit is 8).
const SECRETS_KEPT_MAX: usize = 7;

// A batch is one engine hand-off.
const _: () = assert!(BATCH_EVENTS_MAX <= herald::PUBLISH_BATCH_MAX);

/// `POST /v1/events/batch`'s answer.
#[derive(serde::Serialize)]
struct BatchAnswer<'a> {
    data: Vec<Option<BatchItem<'a>>>,
}

/// One event's result in a batch.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Accepted { status: u16, event: Envelope<'a> },
    Failed { status: u16, error: Value },
}

impl BatchItem<'_> {
    fn failed(error: &ApiError) -> Self {
        let mut body = json!({"code": error.code, "message": error.message});
        if let Some(field) = &error.field {
            body["field"] = Value::String(field.clone());
        }
        BatchItem::Failed {
            status: error.status,
            error: body,
        }
    }
}

fn event_types() -> Response {
    let data: Vec<Value> = catalog::catalog()
        .iter()
        .map(|info| {
            // Samples are checked to be JSON by the catalog's tests.
            let sample: Value = serde_json::from_str(info.sample).unwrap_or(Value::Null);
            json!({"type": info.event_type, "description": info.description, "sample": sample})
        })
        .collect();
    Response::json(200, &json!({ "data": data }))
}

fn webhook_id(text: &str) -> Result<WebhookId> {
    // An id that cannot exist is simply not found.
    WebhookId::parse(text).map_err(|_| ApiError::not_found(format!("no webhook {text}")))
}

fn delivery_id(text: &str) -> Result<herald::DeliveryId> {
    views::parse_delivery_id(text).ok_or_else(|| ApiError::not_found(format!("no delivery {text}")))
}

fn parse_url(text: &str) -> Result<Url> {
    Url::parse(text).map_err(|e| ApiError::invalid("url", format!("url: {e}")))
}

fn parse_filters(events: &[String]) -> Result<Vec<EventFilter>> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "events needs at least one filter (e.g. \"order.*\" or \"*\")",
        ));
    }
    // The field names the filter at fault by its place, as a JSON path.
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            EventFilter::parse(e).map_err(|error| {
                ApiError::invalid(
                    &format!("events[{i}]"),
                    format!("events[{i}]: {e:?}: {error}"),
                )
            })
        })
        .collect()
}

fn parse_idempotency_key(value: &[u8]) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= IDEMPOTENCY_KEY_BYTES_MAX
        && value.iter().all(|b| (0x21..=0x7e).contains(b));
    if !ok {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} printable ASCII characters without spaces"),
        ));
    }
    refuse_inbound_prefix("Idempotency-Key", value)?;
    // Checked to be ASCII above.
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// Refuses a client's key or event id in the namespace of inbound events' keys.
fn refuse_inbound_prefix(field: &str, value: &[u8]) -> Result<()> {
    let prefix = crate::inbound::INBOUND_KEY_PREFIX;
    if value.starts_with(prefix.as_bytes()) {
        return Err(ApiError::invalid(
            field,
            format!("{field} may not begin with {prefix:?}: that prefix is kept for the keys of inbound events"),
        ));
    }
    Ok(())
}

/// Checks a caller's secret against its scheme's format, explaining the format.
fn check_secret(scheme: &Scheme, secret: &str) -> Result<()> {
    let decodes = |prefix: &str| {
        secret.strip_prefix(prefix).is_some_and(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| k.len() >= 16)
        })
    };
    match scheme {
        Scheme::Standard if !decodes("whsec_") => Err(ApiError::invalid(
            "secret",
            "a standard webhook's secret is \"whsec_\" followed by the base64 of 16 to 64 random bytes \
             (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw); omit \"secret\" to have one generated, \
             or choose the stripe scheme for a plain secret",
        )),
        Scheme::Ed25519 if !decodes("whsk_") => Err(ApiError::invalid(
            "secret",
            "an ed25519 webhook's secret is \"whsk_\" followed by the base64 of a 32-byte seed; omit \"secret\" to have one generated",
        )),
        _ if secret.is_empty() => Err(ApiError::invalid("secret", "secret must not be empty")),
        _ => Ok(()),
    }
}

fn generate_secret(scheme: &Scheme) -> String {
    let random = |n: usize| {
        let mut buf = vec![0u8; n];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
            .expect("the system random number generator works");
        base64::engine::general_purpose::STANDARD.encode(buf)
    };
    match scheme {
        Scheme::Ed25519 => format!("whsk_{}", random(32)),
        Scheme::Olo => random(32),
        _ => format!("whsec_{}", random(24)),
    }
}

/// `signature` in a webhook body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureInput {
    scheme: String,
    header: Option<String>,
}

/// `null` in a PATCH clears a setting; absence leaves it.
fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An integer field (`null` as absent) that also takes a JSON number with a zero fraction
/// (`106.0`): JSON Schema's `integer` includes those, and clients that keep numbers as
/// doubles send them. Fractions, negatives and values out of `T`'s range are refused.
fn integer<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    /// Largest double that still holds every integer below it exactly.
    const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=EXACT_MAX).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|value| T::try_from(value).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number in range")))
}

/// [`integer`] for a field where `null` means "none" and absence means "unchanged".
fn nullable_integer<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    integer(deserializer).map(Some)
}

/// A webhook body (create: `url` and `events` required; PATCH: everything optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    signature: Option<SignatureInput>,
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    retry_schedule_s: Option<Option<Vec<f64>>>,
    #[serde(default, deserialize_with = "integer")]
    timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "integer")]
    max_in_flight: Option<u32>,
    #[serde(default, deserialize_with = "nullable_integer")]
    rate_limit_per_s: Option<Option<u32>>,
    status: Option<String>,
}

impl WebhookInput {
    /// Applies the settings other than url, events, scheme and secret.
    fn apply_settings(&self, spec: &mut WebhookSpec) -> Result<()> {
        if let Some(description) = &self.description {
            spec.description = description.clone();
        }
        if let Some(headers) = &self.headers {
            spec.headers = headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
        }
        if let Some(schedule) = &self.retry_schedule_s {
            spec.retry_schedule = match schedule {
                None => None,
                Some(seconds) => {
                    let delays = config::seconds_to_ms(seconds).map_err(|m| {
                        ApiError::invalid("retry_schedule_s", format!("retry_schedule_s: {m}"))
                    })?;
                    Some(RetrySchedule::new(delays).map_err(|e| {
                        ApiError::invalid("retry_schedule_s", format!("retry_schedule_s: {e}"))
                    })?)
                }
            };
        }
        let limits: &mut EndpointLimits = &mut spec.limits;
        if let Some(timeout_ms) = self.timeout_ms {
            limits.request_timeout_ms = timeout_ms;
        }
        if let Some(max) = self.max_in_flight {
            limits.in_flight_max = max;
        }
        if let Some(rate) = &self.rate_limit_per_s {
            limits.rate = rate.map(|per_s| RateLimit {
                per_s,
                burst: per_s.max(1),
            });
        }
        if let Some(status) = &self.status {
            spec.status = match status.as_str() {
                "active" => WebhookStatus::Active,
                "disabled" => match spec.status {
                    WebhookStatus::Disabled { .. } => spec.status,
                    WebhookStatus::Active => WebhookStatus::Disabled {
                        reason: herald::DisableReason::Manual,
                        at_ms: now_ms(),
                    },
                },
                other => {
                    return Err(ApiError::invalid(
                        "status",
                        format!("status must be \"active\" or \"disabled\"; not {other:?}"),
                    ))
                }
            };
        }
        Ok(())
    }
}

/// The body of `POST /v1/events` (and each item of a batch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInput {
    #[serde(rename = "type")]
    event_type: String,
    location_id: Option<String>,
    data: Box<RawValue>,
    id: Option<String>,
    api_version: Option<String>,
}

impl EventInput {
    fn to_event(&self, idempotency_key: Option<String>) -> Result<Event> {
        let event_type = EventType::parse(&self.event_type)
            .map_err(|e| ApiError::invalid("type", format!("type: {e}")))?;
        let mut event = Event::from_json_bytes(event_type, self.data.get().as_bytes().to_vec());
        if let Some(id) = &self.id {
            event.id =
                Some(EventId::parse(id).map_err(|e| ApiError::invalid("id", format!("id: {e}")))?);
            // The id de-duplicates like a key (below).
            refuse_inbound_prefix("id", id.as_bytes())?;
        }
        if let Some(location) = &self.location_id {
            event.location_id = Some(
                LocationId::parse(location)
                    .map_err(|e| ApiError::invalid("location_id", format!("location_id: {e}")))?,
            );
        }
        if let Some(version) = &self.api_version {
            event.api_version = Some(version.clone());
        }
        // A client id de-duplicates like a key when no header is given.
        event.idempotency_key = idempotency_key.or_else(|| self.id.clone());
        Ok(event)
    }
}

/// The envelope the webhooks receive, as the answer to a publish.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    api_version: &'a str,
    created_at: String,
    tenant_id: &'a str,
    location_id: Option<&'a str>,
    data: &'a RawValue,
}

impl EventInput {
    fn envelope<'a>(
        &'a self,
        tenant: &'a TenantId,
        published: &'a herald::Published,
    ) -> Envelope<'a> {
        Envelope {
            id: published.event_id.as_str(),
            event_type: &self.event_type,
            api_version: self
                .api_version
                .as_deref()
                .unwrap_or(herald::API_VERSION_DEFAULT),
            created_at: rfc3339(published.created_at_ms),
            tenant_id: tenant.as_str(),
            location_id: self.location_id.as_deref(),
            data: &self.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_has_at_most_its_requests_under_way_and_others_theirs() {
        let requests = TenantRequests::default();
        let (acme, zed) = (
            TenantId::parse("acme").unwrap(),
            TenantId::parse("zed").unwrap(),
        );
        let first = requests.enter(&acme, 2).expect("room");
        let second = requests.enter(&acme, 2).expect("room");
        assert!(requests.enter(&acme, 2).is_none(), "a third is refused");
        let other = requests
            .enter(&zed, 2)
            .expect("another tenant's room is its own");
        drop(first);
        let third = requests
            .enter(&acme, 2)
            .expect("an answered request frees its place");
        drop((second, third, other));
        assert!(
            requests.0.lock().unwrap().is_empty(),
            "tenants with none under way keep no entry"
        );
    }

    fn json_request(body: &str) -> Request {
        Request {
            method: "POST".into(),
            target: "/v1/x".into(),
            headers: [("Content-Type", b"application/json")]
                .into_iter()
                .collect(),
            body: body.as_bytes().to_vec(),
            body_bytes_total: body.len() as u64,
            keep_alive: true,
            version_minor: 1,
        }
    }

    /// A storage fault tells the caller the operating system's reason, not the server's
    /// paths or operations; other faults tell nothing of the server.
    #[test]
    fn faults_tell_callers_the_reason_not_the_server_s_paths() {
        #[derive(Debug)]
        struct JournalIo(std::io::Error);
        impl std::fmt::Display for JournalIo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "fallocate /srv/secret/journal/shard-0/17.seg: {}",
                    self.0
                )
            }
        }
        impl std::error::Error for JournalIo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let source = JournalIo(std::io::Error::from_raw_os_error(28));
        let storage = herald::Error::Storage {
            shard: 0,
            message: source.to_string(),
            source: Some(std::sync::Arc::new(source)),
        };
        let error = ApiError::from(storage);
        assert_eq!(error.status, 503);
        assert!(
            error.message.contains("No space left on device"),
            "{}",
            error.message
        );
        assert!(error.message.contains("journal"), "{}", error.message);
        assert!(!error.message.contains("/srv/secret"), "{}", error.message);
        assert!(!error.message.contains("fallocate"), "{}", error.message);

        let environment = herald::Error::Environment {
            shard: 1,
            message: "cannot register /proc/self/fd/9 with the executor".to_owned(),
        };
        let error = ApiError::from(environment);
        assert_eq!(error.status, 503);
        assert!(!error.message.contains("/proc"), "{}", error.message);
    }

    /// Found by Schemathesis: `[]` was read as a body whose fields are all absent.
    #[test]
    fn bodies_are_json_objects() {
        #[derive(Deserialize, Default, Debug)]
        struct AllOptional {
            #[allow(dead_code)]
            grace_s: Option<u64>,
        }
        assert!(json_body::<AllOptional>(&json_request(" {} ")).is_ok());
        assert!(json_body::<AllOptional>(&json_request(r#"{"grace_s": 5}"#)).is_ok());
        for body in ["[]", " [5]", "null"] {
            let error = json_body::<AllOptional>(&json_request(body)).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (400, "invalid_request"),
                "{body}"
            );
        }
        let error = json_body::<AllOptional>(&json_request("nope")).unwrap_err();
        assert_eq!(error.code, "invalid_json");
        // An empty body is still the default where the body is optional.
        assert!(optional_json_body::<AllOptional>(&json_request("")).is_ok());
    }

    /// Found by Schemathesis: a test send's `"data": null` was taken for no data.
    #[test]
    fn a_present_null_is_not_an_absent_field() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "present")]
            data: Option<Box<RawValue>>,
        }
        let data = |text: &str| {
            serde_json::from_str::<Body>(text)
                .unwrap()
                .data
                .map(|raw| raw.get().to_string())
        };
        assert_eq!(data("{}"), None);
        assert_eq!(data(r#"{"data": null}"#).as_deref(), Some("null"));
        assert_eq!(
            data(r#"{"data": {"a": 1}}"#).as_deref(),
            Some(r#"{"a": 1}"#)
        );
    }

    #[test]
    fn integer_fields_take_whole_doubles_and_nothing_else() {
        let input = |text: &str| serde_json::from_str::<WebhookInput>(text);
        let timeout = |text: &str| input(text).map(|i| i.timeout_ms).map_err(|e| e.to_string());
        assert_eq!(timeout("{}"), Ok(None));
        assert_eq!(timeout(r#"{"timeout_ms": null}"#), Ok(None));
        assert_eq!(timeout(r#"{"timeout_ms": 1972}"#), Ok(Some(1972)));
        assert_eq!(timeout(r#"{"timeout_ms": 1972.0}"#), Ok(Some(1972)));
        assert_eq!(
            timeout(r#"{"timeout_ms": 18446744073709551615}"#),
            Ok(Some(u64::MAX))
        );
        for bad in [
            "1.5",
            "-1",
            "-0.5",
            "1e300",
            "18446744073709551616",
            "\"5\"",
            "true",
        ] {
            assert!(
                timeout(&format!("{{\"timeout_ms\": {bad}}}")).is_err(),
                "timeout_ms {bad}"
            );
        }
        let in_flight = |text: &str| input(text).map(|i| i.max_in_flight).ok();
        assert_eq!(in_flight(r#"{"max_in_flight": 16.0}"#), Some(Some(16)));
        assert_eq!(in_flight(r#"{"max_in_flight": 4294967296}"#), None);
        let rate = |text: &str| input(text).map(|i| i.rate_limit_per_s).ok();
        assert_eq!(rate("{}"), Some(None));
        assert_eq!(rate(r#"{"rate_limit_per_s": null}"#), Some(Some(None)));
        assert_eq!(rate(r#"{"rate_limit_per_s": 5.0}"#), Some(Some(Some(5))));
        assert_eq!(rate(r#"{"rate_limit_per_s": 5.5}"#), None);
    }

    #[test]
    fn routes_parse_and_name_their_pattern() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/healthz", Some("/healthz")),
            ("/v1/webhooks", Some("/v1/webhooks")),
            ("/v1/webhooks/wh_1", Some("/v1/webhooks/{id}")),
            (
                "/v1/webhooks/wh_1/secret/rotate",
                Some("/v1/webhooks/{id}/secret/rotate"),
            ),
            (
                "/v1/tenants/acme/keys/key_1",
                Some("/v1/tenants/{id}/keys/{key_id}"),
            ),
            ("/v1/events/batch", Some("/v1/events/batch")),
            (
                "/v1/deliveries/del_1/retry",
                Some("/v1/deliveries/{id}/retry"),
            ),
            ("/v1/nope", None),
            ("/", None),
        ];
        for (path, pattern) in cases {
            let target = parse_target(path).unwrap();
            assert_eq!(
                Route::parse(&target.segments).map(Route::pattern),
                *pattern,
                "{path}"
            );
        }
    }

    #[test]
    fn queries_are_percent_decoded() {
        let target =
            parse_target("/v1/x?event_type=order.%2A&since=2024-01-01T00%3A00%3A00%2B01%3A00&flag")
                .unwrap();
        assert_eq!(target.query("event_type"), Some("order.*"));
        assert_eq!(target.query("since"), Some("2024-01-01T00:00:00+01:00"));
        assert_eq!(target.query("flag"), Some(""));
        assert!(parse_target("/v1/x?a=%zz").is_err());
        for bad in ["%+1", "%-1", "%1", "%", "%é"] {
            assert!(parse_target(&format!("/v1/x?a={bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_and_clamped() {
        let limit = |q: &str| {
            parse_target(&format!("/x?{q}"))
                .unwrap()
                .limit()
                .map_err(|e| e.status)
        };
        assert_eq!(limit(""), Ok(PAGE_LIMIT_DEFAULT));
        assert_eq!(limit("limit=5"), Ok(5));
        assert_eq!(limit("limit=100000"), Ok(PAGE_LIMIT_MAX));
        // Past usize: still a whole number above the most.
        assert_eq!(limit("limit=458402054748254721015808"), Ok(PAGE_LIMIT_MAX));
        assert_eq!(limit("limit=0"), Err(400));
        assert_eq!(limit("limit=00"), Err(400));
        assert_eq!(limit("limit=1x"), Err(400));
        assert_eq!(limit("limit=-1"), Err(400));
    }

    #[test]
    fn standard_secrets_must_be_whsec_base64() {
        assert!(check_secret(&Scheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        let error = check_secret(&Scheme::Standard, "your-webhook-secret").unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.message.contains("whsec_"), "{}", error.message);
        assert!(check_secret(&Scheme::stripe(), "your-webhook-secret").is_ok());
        assert!(check_secret(&Scheme::Olo, "").is_err());
        for scheme in [
            Scheme::Standard,
            Scheme::Ed25519,
            Scheme::stripe(),
            Scheme::Olo,
        ] {
            assert!(
                check_secret(&scheme, &generate_secret(&scheme)).is_ok(),
                "{scheme:?}"
            );
        }
    }

    #[test]
    fn an_answer_built_from_what_was_written_has_the_created_shape() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = WebhookId::parse("wh_1").unwrap();
        let spec = WebhookSpec::new(
            Url::parse("https://example.com/hook").unwrap(),
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        );
        let created = new_webhook(&tenant, &id, spec.clone(), 1_700_000_000_000);
        let view = views::webhook(&created, Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert_eq!(view["id"], "wh_1");
        assert_eq!(view["url"], "https://example.com/hook");
        assert_eq!(view["events"], json!(["order.*"]));
        assert_eq!(view["status"], "active");
        assert_eq!(view["created_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(view["secret"], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let mut rotated_spec = spec;
        rotated_spec.description = Some("rotated".into());
        let updated = updated_webhook(created.clone(), rotated_spec);
        assert_eq!(updated.created_at_ms, created.created_at_ms);
        assert!(updated.updated_at_ms >= created.updated_at_ms);
        assert_eq!(updated.spec.description.as_deref(), Some("rotated"));
    }

    #[test]
    fn the_openapi_document_states_the_limits_the_handlers_apply() {
        let doc: Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let parameter = |name: &str| &doc["components"]["parameters"][name]["schema"];
        let schema = |name: &str| &doc["components"]["schemas"][name];
        assert_eq!(parameter("Limit")["default"], json!(PAGE_LIMIT_DEFAULT));
        assert!(
            parameter("Limit")["maximum"].is_null(),
            "larger limits are clamped, not refused"
        );
        assert!(doc["components"]["parameters"]["Limit"]["description"]
            .as_str()
            .unwrap()
            .contains(&PAGE_LIMIT_MAX.to_string()));
        assert_eq!(
            parameter("IdempotencyKey")["maxLength"],
            json!(IDEMPOTENCY_KEY_BYTES_MAX)
        );
        assert_eq!(
            schema("EventBatch")["properties"]["events"]["maxItems"],
            json!(BATCH_EVENTS_MAX)
        );
        assert_eq!(
            schema("RotateSecretRequest")["properties"]["grace_s"]["maximum"],
            json!(ROTATE_GRACE_S_MAX)
        );
        // The test send takes an optional body with an optional type and payload.
        let test = &doc["paths"]["/v1/webhooks/{id}/test"]["post"];
        assert_eq!(test["requestBody"]["required"], json!(false));
        assert!(schema("TestRequest")["required"].is_null());
        assert!(schema("TestRequest")["properties"]["data"].is_object());
        // Tenant keys get 404 on every admin route.
        for (path, method) in [
            ("/v1/tenants", "get"),
            ("/v1/tenants", "post"),
            ("/v1/tenants/{id}/keys", "post"),
            ("/v1/tenants/{id}/keys/{key_id}", "delete"),
        ] {
            assert!(
                doc["paths"][path][method]["responses"]["404"].is_object(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        assert_eq!(parse_idempotency_key(b"abc-123").unwrap(), "abc-123");
        assert!(parse_idempotency_key(b"").is_err());
        assert!(parse_idempotency_key(b"has space").is_err());
        assert!(parse_idempotency_key(&[b'a'; 256]).is_err());
        assert!(parse_idempotency_key("é".as_bytes()).is_err());
    }
}
