//! `[ws]`: the event stream's authentication (JWT), replay window and bounds.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// Default claim naming the tenant in a JWT.
pub const TENANT_CLAIM_DEFAULT: &str = "tenant_id";
/// Default replay window: ten minutes of a tenant's events.
pub const REPLAY_WINDOW_S_DEFAULT: u64 = 600;
/// Longest replay window: a day (the window is memory; longer gaps call for a
/// resynchronisation anyway).
pub const REPLAY_WINDOW_S_MAX: u64 = 24 * 3600;
/// Most events per tenant any window may keep.
pub const REPLAY_EVENTS_MAX_LIMIT: usize = 10_000_000;
/// Largest replay window in bytes per shard: 4 GiB.
pub const REPLAY_BYTES_MAX_LIMIT: usize = 4 << 30;
/// Default per-connection send queue: events waiting to be written to one client.
/// A client keeping up holds a handful; a thousand absorbs a burst of a busy tenant
/// while a stalled socket is cut off before it costs much memory.
pub const SEND_QUEUE_MAX_DEFAULT: usize = 1024;
/// Default most stream connections per tenant (each holds a subscription and a queue).
pub const CONNECTIONS_PER_TENANT_MAX_DEFAULT: usize = 256;
/// Default most stream connections across tenants. A stream holds a connection of
/// `limits.connections_max` for hours and is never closed to make room, so streams
/// alone could take every connection the API has and leave none for requests (health
/// checks, publishes, providers' inbound webhooks): at most half of
/// `limits.connections_max` is ever used, whatever this says.
pub const CONNECTIONS_MAX_DEFAULT: usize = 2048;
/// Default time between two pings from the server.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 20_000;
/// Default time without any frame from the client (pongs included) before it is
/// closed: three missed pings.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Shortest ping interval: a flood of pings is load without information.
pub const PING_INTERVAL_MS_MIN: u64 = 100;
/// Shortest HS256 secret: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// Longest tenant claim name.
pub const TENANT_CLAIM_BYTES_MAX: usize = 128;

/// `[ws]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// HS256 key for JWTs (at least [`JWT_SECRET_BYTES_MIN`] bytes).
    pub jwt_secret: Option<crate::config::Secret>,
    /// RS256 public key for JWTs: PEM text, or the path of a PEM file.
    pub jwt_public_key_pem: Option<String>,
    /// The claim holding the tenant id.
    pub tenant_claim: String,
    /// When set, a JWT must name this audience (`aud`, a string or a list holding it):
    /// an identity provider shared with other applications issues tokens for them too,
    /// and one of those must not open a stream.
    pub jwt_audience: Option<String>,
    /// When set, a JWT's issuer (`iss`) must be this.
    pub jwt_issuer: Option<String>,
    /// Events accepted longer ago than this leave the replay window, seconds.
    pub replay_window_s: u64,
    /// Most events kept per tenant for resuming.
    pub replay_events_max: usize,
    /// Most bytes of events kept per shard for resuming (the oldest go first).
    pub replay_bytes_max: usize,
    /// Events queued for one client; past it the client is closed (slow consumer).
    pub send_queue_max: usize,
    /// Most open stream connections per tenant.
    pub connections_per_tenant_max: usize,
    /// Most open stream connections across tenants (at most half of
    /// `limits.connections_max` is used, [`CONNECTIONS_MAX_DEFAULT`]).
    pub connections_max: usize,
    /// Time between server pings, milliseconds.
    pub ping_interval_ms: u64,
    /// Time without any frame from the client before it is closed, milliseconds.
    pub idle_timeout_ms: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            jwt_secret: None,
            jwt_public_key_pem: None,
            tenant_claim: TENANT_CLAIM_DEFAULT.to_string(),
            jwt_audience: None,
            jwt_issuer: None,
            replay_window_s: REPLAY_WINDOW_S_DEFAULT,
            replay_events_max: herald::STREAM_WINDOW_EVENTS_MAX_DEFAULT,
            replay_bytes_max: herald::STREAM_WINDOW_BYTES_MAX_DEFAULT,
            send_queue_max: SEND_QUEUE_MAX_DEFAULT,
            connections_per_tenant_max: CONNECTIONS_PER_TENANT_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            ping_interval_ms: PING_INTERVAL_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl WsConfig {
    /// The most streams open at once: `ws.connections_max`, and at most half of the
    /// API's `connections_max` (at least 1), so that streams never take every
    /// connection.
    pub fn streams_max(&self, api_connections_max: usize) -> usize {
        self.connections_max.min((api_connections_max / 2).max(1))
    }

    /// The replay window's age bound.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.replay_window_s)
    }

    /// Checks every key; the error names it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |message: String| Err(ConfigError { message });
        if let Some(secret) = &self.jwt_secret {
            if secret.expose().len() < JWT_SECRET_BYTES_MIN {
                return error(format!(
                    "ws.jwt_secret is {} bytes; an HS256 key needs at least {JWT_SECRET_BYTES_MIN}",
                    secret.expose().len()
                ));
            }
        }
        if let Some(pem) = &self.jwt_public_key_pem {
            super::jwt::rsa_key(pem).map_err(|message| ConfigError { message })?;
        }
        for (key, value) in [
            ("ws.jwt_audience", &self.jwt_audience),
            ("ws.jwt_issuer", &self.jwt_issuer),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > TENANT_CLAIM_BYTES_MAX * 4)
            {
                return error(format!(
                    "{key} must be 1 to {} bytes when set",
                    TENANT_CLAIM_BYTES_MAX * 4
                ));
            }
        }
        let claim = &self.tenant_claim;
        if claim.is_empty() || claim.len() > TENANT_CLAIM_BYTES_MAX {
            return error(format!(
                "ws.tenant_claim must be 1 to {TENANT_CLAIM_BYTES_MAX} bytes"
            ));
        }
        if !(1..=REPLAY_WINDOW_S_MAX).contains(&self.replay_window_s) {
            return error(format!(
                "ws.replay_window_s is {}; it must be 1 to {REPLAY_WINDOW_S_MAX}",
                self.replay_window_s
            ));
        }
        if !(1..=REPLAY_EVENTS_MAX_LIMIT).contains(&self.replay_events_max) {
            return error(format!(
                "ws.replay_events_max is {}; it must be 1 to {REPLAY_EVENTS_MAX_LIMIT}",
                self.replay_events_max
            ));
        }
        if !(1..=REPLAY_BYTES_MAX_LIMIT).contains(&self.replay_bytes_max) {
            return error(format!(
                "ws.replay_bytes_max is {}; it must be 1 to {REPLAY_BYTES_MAX_LIMIT}",
                self.replay_bytes_max
            ));
        }
        if !(1..=herald::STREAM_QUEUE_MAX_LIMIT).contains(&self.send_queue_max) {
            return error(format!(
                "ws.send_queue_max is {}; it must be 1 to {}",
                self.send_queue_max,
                herald::STREAM_QUEUE_MAX_LIMIT
            ));
        }
        if self.connections_per_tenant_max == 0 {
            return error("ws.connections_per_tenant_max must be greater than 0".to_string());
        }
        if self.connections_max == 0 {
            return error("ws.connections_max must be greater than 0".to_string());
        }
        if self.ping_interval_ms < PING_INTERVAL_MS_MIN {
            return error(format!(
                "ws.ping_interval_ms is {}; it must be at least {PING_INTERVAL_MS_MIN}",
                self.ping_interval_ms
            ));
        }
        if self.idle_timeout_ms <= self.ping_interval_ms {
            return error(format!(
                "ws.idle_timeout_ms ({}) must be longer than ws.ping_interval_ms ({}): a client \
                 answers pings, so it would be closed between two of them",
                self.idle_timeout_ms, self.ping_interval_ms
            ));
        }
        Ok(())
    }
}
