//! `GET /v1/ws`: a tenant's live event stream over WebSocket.
//!
//! # Handshake
//!
//! The request is read by the listener's ordinary parser; this module checks it as an
//! RFC 6455 opening handshake (`Upgrade: websocket`, `Connection: Upgrade`,
//! `Sec-WebSocket-Version: 13`, a 16-byte `Sec-WebSocket-Key`), authenticates it,
//! subscribes, and only then answers `101 Switching Protocols`; the framing after that
//! is `tokio-tungstenite`'s. Every refusal before the upgrade is an ordinary HTTP answer
//! with the API's JSON error body.
//!
//! # Credentials
//!
//! * `Authorization: Bearer <token>`, or, for browsers (which cannot set headers), the
//!   subprotocol list `Sec-WebSocket-Protocol: herald.v1, bearer.<token>`; the server
//!   then answers with `Sec-WebSocket-Protocol: herald.v1` (never the token).
//! * `<token>` is a tenant API key (or the admin key with `Herald-Tenant`), or a JWT:
//!   HS256 with `[ws] jwt_secret`, RS256 with `[ws] jwt_public_key_pem`, `exp` required,
//!   the tenant in the claim `[ws] tenant_claim` (default `tenant_id`).
//!
//! # Query
//!
//! `events=order.*,kds.ticket.bumped` (webhook filter syntax; none: every type),
//! `location_id=loc_1[,loc_2]` (repeatable), `after=SEQ` (resume).
//!
//! # Messages and close codes
//!
//! Each event is one text frame: its envelope (the webhook body's fields) plus a leading
//! `"seq"`. The server pings every `ws.ping_interval_ms`; a client silent (no frame, no
//! pong) for `ws.idle_timeout_ms` is closed. Close codes: [`CLOSE_GOING_AWAY`] (server
//! stopping), [`CLOSE_RESYNC`] (`after` outside the replay window: resynchronise, then
//! subscribe without `after`), [`CLOSE_SLOW_CONSUMER`] (the send queue filled, or a replay
//! read so slowly that the window dropped events it had yet to send: resume with the
//! `after` in the reason), [`CLOSE_IDLE`] (no frame within the idle timeout),
//! [`CLOSE_CREDENTIAL`] (the credential lapsed: a revoked key, an expired JWT, a
//! deleted tenant; checked at every ping, so an open stream never outlives it by more
//! than `ws.ping_interval_ms`).

pub mod config;
pub mod jwt;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::{EventFilter, StreamEnd, StreamFilter, SubscribeError, Subscription, TenantId};
use herald_http::Request;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use config::WsConfig;
use jwt::JwtVerifier;

use crate::auth::Principal;
use crate::routes::App;
use crate::Response;

/// The route.
pub const PATH: &str = "/v1/ws";
/// The subprotocol the server speaks (and echoes when offered).
pub const PROTOCOL: &str = "herald.v1";
/// Prefix of the subprotocol carrying a credential: `bearer.<api key or JWT>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";
/// Close code: the server is stopping; reconnect (to it or another) with `after`.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: `after` is outside the replay window (or ahead of the stream): read
/// current state elsewhere, then subscribe without `after`.
pub const CLOSE_RESYNC: u16 = 4000;
/// Close code: the connection's send queue (`ws.send_queue_max`) filled; the reason
/// names the `after` to resume from.
pub const CLOSE_SLOW_CONSUMER: u16 = 4001;
/// Close code: nothing (not even a pong) arrived within `ws.idle_timeout_ms`.
pub const CLOSE_IDLE: u16 = 4002;
/// Close code: the credential the stream was opened with no longer holds (the API key
/// was revoked, the JWT expired); reconnect with a valid one.
/// Checked at every ping (`ws.ping_interval_ms`).
pub const CLOSE_CREDENTIAL: u16 = 4003;
/// Largest frame or message a client may send: the protocol needs none beyond control
/// frames (whose payload is at most 125 bytes), so anything large is refused early.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// The stream's read buffer: room for a client message (at most
/// [`CLIENT_MESSAGE_BYTES_MAX`]) twice over.
const STREAM_READ_BUFFER_BYTES: usize = 2 * CLIENT_MESSAGE_BYTES_MAX;
/// Most `events` filters and most `location_id`s in one subscription.
pub const FILTERS_MAX: usize = 64;
/// Time allowed to write one message (or close frame) to a client: as long as the API
/// gives any answer. A client whose socket stays full longer is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time given to a client to answer our close frame before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest close reason RFC 6455 allows (a control frame's 125 bytes less the code).
const CLOSE_REASON_BYTES_MAX: usize = 123;

/// The stream's shared state: the JWT verifier and the connection counts.
#[derive(Debug)]
pub struct Hub {
    jwt: Option<JwtVerifier>,
    connections: Arc<Mutex<Counts>>,
}

/// Open stream connections, per tenant and in all.
#[derive(Debug, Default)]
struct Counts {
    per_tenant: HashMap<TenantId, usize>,
    total: usize,
}

/// Why a stream connection has no slot.
enum NoSlot {
    /// The tenant has `ws.connections_per_tenant_max` open.
    Tenant,
    /// The server has its most streams open (`WsConfig::streams_max`).
    Server,
}

impl Hub {
    /// From a validated `[ws]`.
    pub fn new(config: &WsConfig) -> Hub {
        let jwt = JwtVerifier::from_config(config).unwrap_or_else(|error| {
            // Config::validate parsed the same keys before the server was built.
            tracing::error!(%error, "ws JWT keys not usable; JWTs are refused");
            None
        });
        Hub {
            jwt,
            connections: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// Open stream connections of `tenant`.
    pub fn connections_of(&self, tenant: &TenantId) -> usize {
        let counts = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        counts.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn take_slot(
        &self,
        tenant: &TenantId,
        per_tenant_max: usize,
        total_max: usize,
    ) -> Result<TenantSlot, NoSlot> {
        let mut counts = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= total_max {
            return Err(NoSlot::Server);
        }
        let count = counts.per_tenant.entry(tenant.clone()).or_insert(0);
        if *count >= per_tenant_max {
            return Err(NoSlot::Tenant);
        }
        *count += 1;
        counts.total += 1;
        Ok(TenantSlot {
            counts: Arc::clone(&self.connections),
            tenant: tenant.clone(),
        })
    }
}

/// One of a tenant's stream connections; given back when dropped.
struct TenantSlot {
    counts: Arc<Mutex<Counts>>,
    tenant: TenantId,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(count) = counts.per_tenant.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.per_tenant.remove(&self.tenant);
            }
        }
    }
}

/// Whether `request` is for the stream (any method: the others get 405 here).
pub fn is_stream_request(request: &Request) -> bool {
    let path = request.target.split('?').next().unwrap_or("");
    path == PATH
}

/// An accepted handshake, ready to switch protocols.
pub struct Upgrade {
    accept: String,
    protocol: bool,
    tenant: TenantId,
    credential: Credential,
    after: Option<u64>,
    start: Result<Subscription, SubscribeError>,
    _slot: TenantSlot,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("tenant", &self.tenant)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

/// What a stream was opened with, checked again at every ping: an open stream must not
/// outlive its credential (a key revoked because it leaked, a short-lived JWT).
enum Credential {
    /// An API key (a tenant's or the admin's), authenticated again.
    Key(Vec<u8>),
    /// A JWT, valid until its `exp` (Unix seconds).
    Jwt { expires_at_s: u64 },
}

impl Credential {
    /// Why the stream for `tenant` must close now, if it must.
    fn lapsed(&self, app: &App, tenant: &TenantId) -> Option<&'static str> {
        match self {
            Credential::Key(token) => match app.keys.authenticate(token) {
                Some(Principal::Tenant(own)) if own == *tenant => None,
                Some(Principal::Admin) => None,
                _ => return Some("credential revoked: the API key is no longer valid; reconnect with a valid one"),
            },
            Credential::Jwt { expires_at_s } => {
                (crate::time::now_ms() / 1000 > expires_at_s.saturating_add(jwt::LEEWAY_S))
                    .then_some("credential expired: the JWT's exp is past; reconnect with a fresh token")
            }
        }
        .or_else(|| {
            (!app.keys.has_tenant(tenant))
                .then_some("credential revoked: the tenant no longer exists")
        })
    }
}

/// What the query string asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// Event-type and location filters.
    pub filter: StreamFilter,
    /// Resume after this seq.
    pub after: Option<u64>,
}

/// The answer to a handshake that comes with a body.
pub(crate) fn refuse_body() -> Response {
    refuse(400, "invalid_request", "a WebSocket handshake has no body")
}

fn refuse(status: u16, code: &str, message: impl AsRef<str>) -> Response {
    let mut response = Response::error(status, code, message.as_ref());
    response.close = true;
    response
}

fn invalid(field: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "error": {"code": "invalid_request", "message": message.into(), "field": field}
    });
    let mut response = Response::json(400, &body);
    response.close = true;
    response
}

/// Parses `events`, `location_id` and `after`; any other parameter is refused (a typo
/// would otherwise silently widen the subscription).
pub fn parse_query(query: &str) -> Result<StreamQuery, Response> {
    let mut parsed = StreamQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::routes::percent_decode(value)
            .ok_or_else(|| invalid(name, "bad percent-encoding in the query"))?;
        match name {
            "events" => {
                for filter in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    let filter = EventFilter::parse(filter)
                        .map_err(|e| invalid("events", format!("event filter {filter:?}: {e}")))?;
                    parsed.filter.events.push(filter);
                }
                if parsed.filter.events.len() > FILTERS_MAX {
                    return Err(invalid(
                        "events",
                        format!("at most {FILTERS_MAX} event filters"),
                    ));
                }
            }
            "location_id" => {
                for location in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                    let location = herald::LocationId::parse(location)
                        .map_err(|e| invalid("location_id", e.to_string()))?;
                    parsed.filter.locations.push(location.as_str().to_string());
                }
                if parsed.filter.locations.len() > FILTERS_MAX {
                    return Err(invalid(
                        "location_id",
                        format!("at most {FILTERS_MAX} locations"),
                    ));
                }
            }
            "after" => {
                let after = value.parse::<u64>().map_err(|_| {
                    invalid("after", "after must be the seq of the last event received")
                })?;
                if parsed.after.replace(after).is_some() {
                    return Err(invalid("after", "give after once"));
                }
            }
            other => {
                return Err(invalid(
                    other,
                    format!(
                    "unknown parameter {other:?}; the stream takes events, location_id and after"
                ),
                ))
            }
        }
    }
    Ok(parsed)
}

/// The header's comma-separated tokens, trimmed.
fn tokens(request: &Request, name: &str) -> Vec<String> {
    request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Checks the handshake, authenticates, subscribes. `Err` is the HTTP answer.
pub fn accept(app: &App, request: &Request) -> Result<Upgrade, Response> {
    if request.method != "GET" {
        return Err(refuse(
            405,
            "method_not_allowed",
            "GET /v1/ws with a WebSocket upgrade",
        )
        .with_header("Allow", "GET".to_string()));
    }
    let upgrade = tokens(request, "upgrade");
    if !upgrade.iter().any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Err(refuse(
            426,
            "upgrade_required",
            "GET /v1/ws is a WebSocket endpoint: send Upgrade: websocket and Connection: Upgrade",
        )
        .with_header("Upgrade", "websocket".to_string()));
    }
    if !tokens(request, "connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Err(refuse(
            400,
            "invalid_request",
            "a WebSocket handshake needs Connection: Upgrade",
        ));
    }
    // A handshake has no body (RFC 6455 4.1); one sent with it would be buffered for the
    // stream's whole life. (The server answers this on the head, before reading a body:
    // `refuse_body`.)
    if !request.body.is_empty() || request.header("transfer-encoding").is_some() {
        return Err(refuse_body());
    }
    if request.header("sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(refuse(
            426,
            "upgrade_required",
            "only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)",
        )
        .with_header("Sec-WebSocket-Version", "13".to_string()));
    }
    let key = crate::routes::sole_header(request, "sec-websocket-key")
        .ok()
        .flatten()
        .map(<[u8]>::trim_ascii)
        .filter(|key| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or_else(|| {
            refuse(
                400,
                "invalid_request",
                "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            )
        })?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);

    // Credentials: the Authorization header, or a `bearer.` subprotocol.
    let protocols = tokens(request, "sec-websocket-protocol");
    let offered_protocol = protocols.iter().any(|p| p == PROTOCOL);
    let from_protocol: Vec<&str> = protocols
        .iter()
        .filter_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .collect();
    if !protocols.is_empty() && !offered_protocol {
        return Err(refuse(
            400,
            "invalid_request",
            format!("offer the subprotocol {PROTOCOL} (with bearer.<token> for credentials)"),
        ));
    }
    let unauthorized = |message: &str| refuse(401, "unauthorized", message);
    let from_header = crate::routes::sole_header(request, "authorization")
        .map_err(|()| unauthorized("send one Authorization header, not several"))?;
    let token: Vec<u8> = match (from_header, from_protocol.as_slice()) {
        (Some(_), [_, ..]) => {
            return Err(unauthorized(
                "send the credential once: in Authorization or in the bearer. subprotocol",
            ))
        }
        (Some(value), []) => {
            let value = value.trim_ascii();
            value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
                .map(|_| value[7..].trim_ascii().to_vec())
                .ok_or_else(|| unauthorized("the Authorization header must be: Bearer <token>"))?
        }
        (None, [token]) => token.as_bytes().to_vec(),
        (None, [_, _, ..]) => return Err(unauthorized("offer one bearer. subprotocol")),
        (None, []) => {
            return Err(unauthorized(
                "send Authorization: Bearer <api key or JWT>, or the subprotocols herald.v1, bearer.<token>",
            ))
        }
    };
    let (principal, credential) = match app.keys.authenticate(&token) {
        Some(principal) => (principal, Credential::Key(token)),
        None => {
            let text = std::str::from_utf8(&token).unwrap_or("");
            let looks_like_jwt = text.split('.').count() == 3;
            match (&app.ws.jwt, looks_like_jwt) {
                (Some(verifier), true) => verifier
                    .verify(text)
                    .map(|verified| {
                        (
                            Principal::Tenant(verified.tenant),
                            Credential::Jwt {
                                expires_at_s: verified.expires_at_s,
                            },
                        )
                    })
                    .map_err(|reason| unauthorized(&reason))?,
                (None, true) => {
                    return Err(unauthorized(
                        "JWTs are not accepted: the server has no ws.jwt_secret or ws.jwt_public_key_pem",
                    ))
                }
                _ => {
                    return Err(unauthorized(
                        "the API key is not valid (revoked, mistyped, or another server's)",
                    ))
                }
            }
        }
    };
    let named = crate::routes::sole_header(request, "herald-tenant")
        .map_err(|()| {
            invalid(
                "Herald-Tenant",
                "send one Herald-Tenant header, not several",
            )
        })?
        .map(|raw| {
            std::str::from_utf8(raw)
                .ok()
                .and_then(|text| TenantId::parse(text.trim()).ok())
                .ok_or_else(|| invalid("Herald-Tenant", "Herald-Tenant must be a tenant id"))
        })
        .transpose()?;
    let tenant = match (principal, named) {
        (Principal::Tenant(own), Some(named)) if named != own => {
            return Err(refuse(
                404,
                "not_found",
                format!("no tenant {named} for this credential"),
            ))
        }
        (Principal::Tenant(own), _) => own,
        (Principal::Admin, Some(named)) => named,
        (Principal::Admin, None) => {
            return Err(invalid(
                "Herald-Tenant",
                "the admin key streams a tenant named in the Herald-Tenant header",
            ))
        }
    };
    if !app.keys.has_tenant(&tenant) {
        return Err(refuse(404, "not_found", format!("no tenant {tenant}")));
    }
    let query = parse_query(request.target.split_once('?').map_or("", |(_, q)| q))?;
    let config = &app.config.ws;
    let streams_max = config.streams_max(app.config.limits.connections_max);
    let slot = app
        .ws
        .take_slot(&tenant, config.connections_per_tenant_max, streams_max)
        .map_err(|no_slot| match no_slot {
            NoSlot::Tenant => refuse(
                429,
                "too_many_connections",
                format!(
                    "tenant {tenant} already has {} stream connections (ws.connections_per_tenant_max); close one first",
                    config.connections_per_tenant_max
                ),
            )
            .with_header("Retry-After", "5".to_string()),
            NoSlot::Server => refuse(
                503,
                "unavailable",
                format!(
                    "the server has its most stream connections open ({streams_max}: ws.connections_max, at most half of limits.connections_max); retry later or on another instance"
                ),
            )
            .with_header("Retry-After", "5".to_string()),
        })?;
    let start = app
        .herald
        .subscribe(&tenant, query.filter, query.after, config.send_queue_max);
    if let Err(SubscribeError::ShuttingDown) = start {
        return Err(refuse(
            503,
            "unavailable",
            "the server is shutting down; reconnect to another instance with after",
        )
        .with_header("Retry-After", "1".to_string()));
    }
    Ok(Upgrade {
        accept,
        protocol: offered_protocol,
        tenant,
        credential,
        after: query.after,
        start,
        _slot: slot,
    })
}

/// A close frame with `reason` cut to what a control frame holds.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_string().into(),
    }
}

/// Sends a close frame and waits (bounded) for the client's, then lets the
/// connection go.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = close_frame(code, reason);
    if tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(frame)))
        .await
        .is_ok_and(|sent| sent.is_ok())
    {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// Counts an open stream in the metrics while it lives.
struct ClientGauge<'a>(&'a App);

impl Drop for ClientGauge<'_> {
    fn drop(&mut self) {
        self.0.metrics.ws_clients.dec();
    }
}

/// Switches protocols on `stream` (whose unread bytes are `leftover`) and serves the
/// subscription until the client leaves, a bound closes it, or the server stops.
pub async fn serve<S>(
    mut stream: S,
    leftover: Vec<u8>,
    upgrade: Upgrade,
    app: Arc<App>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        upgrade.accept
    );
    if upgrade.protocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n"));
    }
    head.push_str("\r\n");
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    app.metrics.observe_request(PATH, 101);
    // Clients send control frames only: a read buffer of 8 KiB instead of tungstenite's
    // 128 KiB, allocated per stream for its whole life.
    let config = WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(CLIENT_MESSAGE_BYTES_MAX))
        .read_buffer_size(STREAM_READ_BUFFER_BYTES);
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    app.metrics.ws_clients.inc();
    let _gauge = ClientGauge(&app);
    let Upgrade {
        tenant,
        credential,
        after,
        start,
        _slot,
        ..
    } = upgrade;
    let mut subscription = match start {
        Ok(subscription) => subscription,
        Err(refusal) => {
            tracing::debug!(%peer, %tenant, %refusal, "stream resume refused");
            let reason = match refusal {
                SubscribeError::OutsideWindow { after, floor } => format!(
                    "resync: after={after} is outside the replay window (it resumes from after={floor})"
                ),
                // The shard's last seq is not the tenant's: it moves with every tenant's
                // records, so a reason naming it would let one tenant watch the others'
                // rate. The log has it.
                SubscribeError::Ahead { after, .. } => {
                    format!("resync: after={after} is ahead of this stream")
                }
                SubscribeError::ShuttingDown => "server shutting down".to_string(),
            };
            close(&mut ws, CLOSE_RESYNC, &reason).await;
            return;
        }
    };
    tracing::debug!(%peer, %tenant, ?after, "stream opened");
    let settings = &app.config.ws;
    let idle = Duration::from_millis(settings.idle_timeout_ms);
    let ping_every = Duration::from_millis(settings.ping_interval_ms);
    let mut pings = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let mut last_seq = after;
    let resume = |last_seq: Option<u64>| match last_seq {
        Some(seq) => format!("after={seq}"),
        None => "no after (nothing was sent)".to_string(),
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                close(&mut ws, CLOSE_GOING_AWAY, &format!("server shutting down; resume with {}", resume(last_seq))).await;
                return;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | None => {
                    // tungstenite queued the answering close frame; send it.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                    return;
                }
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(error)) => {
                    tracing::debug!(%peer, %tenant, %error, "stream read failed");
                    return;
                }
            },
            // Before the events: a stream with events always ready (a long replay, a
            // busy tenant) must still be pinged and have its credential checked.
            _ = pings.tick() => {
                if last_heard.elapsed() >= idle {
                    close(&mut ws, CLOSE_IDLE, "idle timeout: no frame or pong within ws.idle_timeout_ms").await;
                    return;
                }
                if let Some(reason) = credential.lapsed(&app, &tenant) {
                    tracing::info!(%peer, %tenant, reason, "stream closed: its credential lapsed");
                    close(&mut ws, CLOSE_CREDENTIAL, reason).await;
                    return;
                }
                if !matches!(tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Ping(Vec::new().into()))).await, Ok(Ok(()))) {
                    return;
                }
            }
            event = subscription.recv() => match event {
                Ok(event) => {
                    let message = Message::text(event.message.as_ref());
                    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(message)).await {
                        Ok(Ok(())) => {
                            app.metrics.ws_messages_sent.inc();
                            last_seq = Some(event.seq);
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %tenant, %error, "stream write failed");
                            return;
                        }
                        Err(_) => {
                            // The socket stayed full for the whole write timeout.
                            app.metrics.ws_slow_consumer_closes.inc();
                            tracing::info!(%peer, %tenant, "stream client not reading; dropped");
                            return;
                        }
                    }
                }
                Err(StreamEnd::Overflowed) => {
                    app.metrics.ws_slow_consumer_closes.inc();
                    tracing::info!(%peer, %tenant, queue_max = settings.send_queue_max, "stream client too slow; closed");
                    let reason = format!(
                        "slow consumer: more than {} events queued, or the replay fell behind the window; resume with {}",
                        settings.send_queue_max,
                        resume(last_seq)
                    );
                    close(&mut ws, CLOSE_SLOW_CONSUMER, &reason).await;
                    return;
                }
                Err(StreamEnd::ShuttingDown) => {
                    close(&mut ws, CLOSE_GOING_AWAY, &format!("server shutting down; resume with {}", resume(last_seq))).await;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_parsed_strictly() {
        let parsed =
            parse_query("events=order.*,kds.ticket.bumped&location_id=loc_1&after=42").unwrap();
        assert_eq!(
            parsed.filter.events,
            vec![
                EventFilter::parse("order.*").unwrap(),
                EventFilter::parse("kds.ticket.bumped").unwrap()
            ]
        );
        assert_eq!(parsed.filter.locations, ["loc_1"]);
        assert_eq!(parsed.after, Some(42));
        let everything = parse_query("").unwrap();
        assert_eq!(everything, StreamQuery::default());
        let two_locations = parse_query("location_id=loc_1&location_id=loc_2%2Cloc_3").unwrap();
        assert_eq!(two_locations.filter.locations, ["loc_1", "loc_2", "loc_3"]);
        for (query, field) in [
            ("events=order.**", "events"),
            ("events=.order", "events"),
            ("after=-1", "after"),
            ("after=1&after=2", "after"),
            ("after=abc", "after"),
            ("location_id=a%20b", "location_id"),
            ("event=order.*", "event"),
            ("events=%zz", "events"),
        ] {
            let refused = parse_query(query).unwrap_err();
            assert_eq!(refused.status, 400, "{query}");
            let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
            assert_eq!(body["error"]["field"], field, "{query}");
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(200);
        let frame = close_frame(CLOSE_RESYNC, &long);
        assert!(frame.reason.len() <= CLOSE_REASON_BYTES_MAX);
        assert_eq!(u16::from(frame.code), CLOSE_RESYNC);
    }
}
