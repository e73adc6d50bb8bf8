//! `herald serve` configuration: a TOML file (unknown keys refused), then flags on top.
//!
//! Every setting has a default, so `herald serve` with no file runs: data in
//! `./herald-data`, the API on `127.0.0.1:8080`, one shard per core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default API listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./herald-data";
/// Default largest request body: 256 KiB, far above one event or one webhook document,
/// small enough that a flood of large bodies cannot exhaust memory.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 256 * 1024;
/// Default most open API connections (per process): a platform back end keeps a few
/// dozen keep-alive connections; the cap bounds file descriptors and buffers.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
/// Default most open API connections from one client address (an IPv6 client's whole
/// /64, which one host is commonly given): a quarter of [`CONNECTIONS_MAX_DEFAULT`], so
/// that one client holding connections that are never idle (heads sent a byte at a
/// time, stalled TLS handshakes) cannot take every slot. Far above what a platform back
/// end or a reverse proxy in front of Herald keeps open; raise it (up to
/// `connections_max`) when every client arrives through one proxy address.
pub const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = CONNECTIONS_MAX_DEFAULT / 4;
/// Default time allowed for a request head to arrive once its first byte did
/// (slowloris defence).
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time allowed for a whole body to arrive once its head did.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time an idle keep-alive connection is kept.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default most requests answered on one connection before it is closed, so a client
/// cannot pin a connection (and its shard crossing) forever.
pub const REQUESTS_PER_CONNECTION_MAX_DEFAULT: usize = 100_000;
/// Default most pipelined requests read ahead of their answers on one connection.
pub const PIPELINED_REQUESTS_MAX_DEFAULT: usize = 16;
/// Default most tenants: each costs a little memory in the key store, which is
/// rewritten whole on every change.
pub const TENANTS_MAX_DEFAULT: usize = 100_000;
/// Default most API keys per tenant: rotation needs two; a handful covers every
/// deployment pattern.
pub const KEYS_PER_TENANT_MAX_DEFAULT: usize = 16;
/// Most requests of one tenant under way at once with the default intake queue: an
/// eighth of it (an eighth of the configured one otherwise), so that one tenant's flood of requests (reads wait for room in
/// the queue instead of being refused) cannot fill the queue its shard's other tenants
/// publish through; far above what a publisher needs (a few connections, batches of
/// up to 1,000 events).
pub const REQUESTS_IN_FLIGHT_PER_TENANT_MAX_DEFAULT: usize = herald::INTAKE_CAPACITY_DEFAULT / 8;
/// Default grace period of a rotated secret.
pub const ROTATE_GRACE_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// `pinning`'s value: one of `herald::Pinning`'s names.
fn de_pinning<'de, D: serde::Deserializer<'de>>(d: D) -> Result<herald::Pinning, D::Error> {
    let name = String::deserialize(d)?;
    herald::Pinning::parse(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "pinning must be \"auto\", \"always\" or \"never\", not {name:?}"
        ))
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "log_format must be \"text\" or \"json\", not {other:?}"
            )),
        }
    }
}

/// A secret of the configuration (the admin key, an inbound source's signing secret,
/// the stream's JWT key): used, never shown. Its `Debug` gives its length, not its text,
/// so a configuration that is printed or logged leaks no key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret of `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// Its text, for the one use it is for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes, not shown>)", self.0.len())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// API listen address.
    pub listen: SocketAddr,
    /// Journal and key store directory.
    pub data_dir: PathBuf,
    /// Shards (0: one per core).
    pub shards: usize,
    /// Shard threads under Linux's `SCHED_BATCH` policy (see
    /// `herald::Builder::batch_scheduling`).
    pub batch_scheduling: bool,
    /// Shard threads pinned to CPUs: `auto` (pinned when there are more CPUs than shards),
    /// `always` or `never` (see `herald::Pinning`).
    #[serde(deserialize_with = "de_pinning")]
    pub pinning: herald::Pinning,
    /// Responses awaited on each shard's own io_uring (see `herald::Builder::socket_ring`).
    pub socket_ring: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// The admin key in clear (prefer `HERALD_ADMIN_KEY`); when neither is set, one is
    /// generated on first start and only its hash is stored.
    pub admin_key: Option<Secret>,
    /// Outbound address policy.
    pub egress: EgressConfig,
    /// Signing defaults for new webhooks.
    pub signing: SigningConfig,
    /// Default retry schedule.
    pub retry: RetryConfig,
    /// Limits of the API listener.
    pub limits: LimitsConfig,
    /// The engine's journal files.
    pub journal: JournalConfig,
    /// HTTPS for the API.
    pub tls: Option<TlsConfig>,
    /// Inbound webhook sources (`POST /v1/inbound/{name}`), by name.
    pub inbound: std::collections::BTreeMap<String, InboundSource>,
    /// The event stream, `GET /v1/ws`.
    pub ws: crate::ws::WsConfig,
}

/// `[inbound.NAME]`: a provider whose signed webhooks become platform events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSource {
    /// `stripe` (`Stripe-Signature: t=…,v1=…`), `standard` (Standard Webhooks) or `hmac`
    /// (hex HMAC-SHA256 of the body in one header, optionally `sha256=`-prefixed; no
    /// timestamp, so a replay is refused only within the idempotency window).
    pub scheme: String,
    /// The provider's signing secret (`whsec_…` for stripe and standard).
    pub secret: Secret,
    /// The tenant every event of this source belongs to ...
    pub tenant: Option<String>,
    /// ... or a dotted path to it in the payload, e.g. `data.object.metadata.tenant_id`:
    /// the payload picks the tenant, so the field must be one only the platform sets.
    pub tenant_path: Option<String>,
    /// The signature header of the `hmac` scheme [default: X-Signature]; refused for the
    /// other schemes, which read their own headers.
    pub header: Option<String>,
    /// Allowed clock difference for timestamped schemes, seconds [default: 300].
    pub tolerance_s: Option<u64>,
    /// Provider type → platform type, e.g. `"payment_intent.succeeded" = "payment.captured"`.
    /// Unmapped types are accepted and dropped.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, String>,
}

/// Longest inbound source name: it appears in the path and in metric labels.
pub const INBOUND_SOURCE_NAME_BYTES_MAX: usize = 64;
/// Most inbound sources: each is a metric label value.
pub const INBOUND_SOURCES_MAX: usize = 64;
/// Longest allowed `tolerance_s`: a day; beyond it a captured request could be replayed
/// for too long (idempotency keys are kept 24 h).
pub const INBOUND_TOLERANCE_S_MAX: u64 = 24 * 3600;

/// `[egress]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// CIDRs that deliveries may reach although the guard refuses them by default
    /// (loopback, private ranges, …).
    pub allow_cidrs: Vec<String>,
    /// Refuse `http://` webhook URLs.
    pub require_https: bool,
    /// PEM files of CA certificates that https receivers may present besides the
    /// system's roots (a private CA); a file that cannot be read stops start-up.
    pub extra_ca_pems: Vec<PathBuf>,
}

/// `[signing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Scheme of webhooks created without one: `standard`, `ed25519`, `stripe` or `olo`.
    pub default_scheme: String,
    /// Header of `stripe` webhooks created without one.
    pub stripe_header: String,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            default_scheme: "standard".to_string(),
            stripe_header: match herald::Scheme::stripe() {
                herald::Scheme::Stripe { header } => header,
                _ => unreachable!("Scheme::stripe() is the Stripe scheme"),
            },
        }
    }
}

/// `[retry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delays before each retry, in seconds (fractions allowed); `None` keeps the
    /// platform's schedule (+1 min, +5 min, +30 min, +2 h, +8 h, +24 h).
    pub schedule_s: Option<Vec<f64>>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body (413 beyond).
    pub body_bytes_max: u64,
    /// Most open API connections. A connection over it closes the one idle longest (no
    /// request under way; a connection not yet read from or still in its TLS handshake
    /// counts as idle), so idle connections cannot starve new requests; when none is
    /// idle, or each idle one is already closing for an earlier newcomer, it gets a 503
    /// with `Retry-After` and is closed (unanswered while 256 refusals are under way,
    /// a flood).
    pub connections_max: usize,
    /// Most open API connections from one client address (IPv6: one /64). A connection
    /// over it gets a 429 `too_many_connections` with `Retry-After` and is closed
    /// (unanswered while 256 refusals are under way), and takes no other client's room.
    pub connections_per_address_max: usize,
    /// Time for a request head to arrive once its first byte has (slowloris defence), in
    /// milliseconds.
    pub header_read_timeout_ms: u64,
    /// Time for a request body to arrive once its head has, in milliseconds.
    pub body_read_timeout_ms: u64,
    /// Idle keep-alive time, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Most requests on one connection.
    pub requests_per_connection_max: usize,
    /// Most requests read ahead of their answers on one connection.
    pub pipelined_requests_max: usize,
    /// Most tenants.
    pub tenants_max: usize,
    /// Most API keys per tenant.
    pub keys_per_tenant_max: usize,
    /// Most requests of one tenant under way at once (on tenant routes, whichever key);
    /// beyond it a request gets a 429 `too_many_requests` with `Retry-After`. Unset: an
    /// eighth of `intake_capacity` ([`LimitsConfig::requests_in_flight_per_tenant_max`]).
    pub requests_in_flight_per_tenant_max: Option<usize>,
    /// Each shard's intake queue (requests waiting for the shard). When it is full,
    /// every route that writes (publish, batch, webhook changes, test sends, retries,
    /// recovers, inbound events) answers 503 with `Retry-After` at once instead of
    /// holding the request until room frees; reads wait for room.
    pub intake_capacity: usize,
    /// Most pending deliveries per shard; beyond it every publish to the shard answers
    /// 503 with `Retry-After` (at most [`PENDING_DELIVERIES_MAX_LIMIT`]).
    pub pending_deliveries_max: usize,
    /// Most pending deliveries of one tenant in its shard; beyond it that tenant's
    /// publishes answer 429 `too_many_pending` with `Retry-After`, while the shard's
    /// other tenants go on. Unset: half of `pending_deliveries_max`
    /// ([`LimitsConfig::pending_deliveries_per_tenant_max`]), so that one tenant whose
    /// receivers are down cannot take its shard's whole room.
    pub pending_deliveries_per_tenant_max: Option<usize>,
}

impl LimitsConfig {
    /// `requests_in_flight_per_tenant_max` as set, or an eighth of `intake_capacity`
    /// (at least 1): reads wait for room in the intake queue, so one tenant's flood of
    /// requests must not fill the queue its shard's other tenants publish through,
    /// whatever its configured size.
    pub fn requests_in_flight_per_tenant_max(&self) -> usize {
        self.requests_in_flight_per_tenant_max
            .unwrap_or((self.intake_capacity / 8).max(1))
    }

    /// `pending_deliveries_per_tenant_max` as set, or half of `pending_deliveries_max`
    /// (at least 1), so that the tenant's share follows the shard's room as configured.
    pub fn pending_deliveries_per_tenant_max(&self) -> usize {
        self.pending_deliveries_per_tenant_max
            .unwrap_or((self.pending_deliveries_max / 2).max(1))
    }
}

/// Largest `limits.pending_deliveries_max`: a pending delivery holds ~230 bytes of
/// memory (`herald bench pending`), so 50 million are ~11 GiB for one shard.
pub const PENDING_DELIVERIES_MAX_LIMIT: usize = 50_000_000;

/// A configured admin key (`setting` names where it came from) is one a client can
/// present: [`ADMIN_KEY_BYTES_MIN`] to [`crate::auth::BEARER_BYTES_MAX`] bytes of
/// visible ASCII. A longer one, or one with spaces at its ends (which a bearer token
/// loses), would start cleanly and then refuse every admin call.
pub fn check_admin_key(key: &str, setting: &str) -> Result<(), String> {
    let max = crate::auth::BEARER_BYTES_MAX;
    if key.len() < ADMIN_KEY_BYTES_MIN || key.len() > max {
        return Err(format!(
            "{setting} must be {ADMIN_KEY_BYTES_MIN} to {max} characters; it is {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{setting} must be visible ASCII only (no spaces or control characters), as a bearer token is"
        ));
    }
    Ok(())
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            header_read_timeout_ms: millis(HEADER_READ_TIMEOUT_DEFAULT),
            body_read_timeout_ms: millis(BODY_READ_TIMEOUT_DEFAULT),
            idle_timeout_ms: millis(IDLE_TIMEOUT_DEFAULT),
            requests_per_connection_max: REQUESTS_PER_CONNECTION_MAX_DEFAULT,
            pipelined_requests_max: PIPELINED_REQUESTS_MAX_DEFAULT,
            tenants_max: TENANTS_MAX_DEFAULT,
            keys_per_tenant_max: KEYS_PER_TENANT_MAX_DEFAULT,
            requests_in_flight_per_tenant_max: None,
            intake_capacity: herald::INTAKE_CAPACITY_DEFAULT,
            pending_deliveries_max: herald::PENDING_DELIVERIES_MAX_DEFAULT,
            pending_deliveries_per_tenant_max: None,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl LimitsConfig {
    /// [`LimitsConfig::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// [`LimitsConfig::body_read_timeout_ms`] as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
    /// [`LimitsConfig::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// Smallest journal segment: a few records plus a header; smaller would roll constantly.
pub const JOURNAL_SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest journal segment: bounds one mapping and one recovery scan.
pub const JOURNAL_SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Default journal segment size.
pub const JOURNAL_SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// `[journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Size of each preallocated segment file (a multiple of 4096 in
    /// [`JOURNAL_SEGMENT_BYTES_MIN`]`..=`[`JOURNAL_SEGMENT_BYTES_MAX`]). Each shard holds
    /// its segments plus one prepared ahead, so a small disk wants small segments.
    pub segment_bytes: u64,
    /// Most segments each shard's journal holds (`2..=`[`JOURNAL_SEGMENTS_MAX_LIMIT`]):
    /// with `segment_bytes`, the disk a shard may use. At the limit the shard refuses
    /// changes (503) and checkpoints until old segments can go; a state larger than about
    /// twice the limit's bytes cannot checkpoint, so size it above the largest backlog.
    pub segments_max: usize,
    /// Group commit: a shard's journal starts its syncs at least this many µs apart
    /// (`0..=`[`JOURNAL_GROUP_DELAY_US_MAX`]) unless `group_records_max` records wait, so
    /// that records appended meanwhile share one; a record appended after a longer pause
    /// is synced at once. Every write is
    /// answered after its sync: a shorter delay answers sooner at the cost of more syncs
    /// (CPU, and device writes) while the server is busy.
    pub group_delay_us: u64,
    /// Group commit for records nobody waits for (a shard's attempt outcomes, while no
    /// write and no delivery waits for a record): synced this many µs after the last sync
    /// began (`0..=`[`JOURNAL_GROUP_DELAY_US_MAX`], never less than `group_delay_us`),
    /// unless a record someone waits for comes first. A power loss (or a crash right
    /// after the journal began a new segment) may lose this much of them, whose
    /// deliveries are then sent again.
    pub lazy_delay_us: u64,
    /// Group commit: a sync starts at once when this many records wait
    /// (`1..=`[`JOURNAL_GROUP_RECORDS_MAX_LIMIT`]).
    pub group_records_max: usize,
}

/// Largest `[journal] group_delay_us`: the journal's own bound (`GROUP_DELAY_US_MAX`),
/// above which a write would wait more than a second for its answer.
pub const JOURNAL_GROUP_DELAY_US_MAX: u64 = 1_000_000;
/// Default `[journal] group_delay_us` (the journal's default).
pub const JOURNAL_GROUP_DELAY_US_DEFAULT: u64 = 1_000;
/// Default `[journal] lazy_delay_us` (the journal's default).
pub const JOURNAL_LAZY_DELAY_US_DEFAULT: u64 = 10_000;
/// Largest `[journal] group_records_max`: the journal's own bound
/// (`GROUP_RECORDS_MAX_LIMIT`).
pub const JOURNAL_GROUP_RECORDS_MAX_LIMIT: usize = 1 << 20;
/// Default `[journal] group_records_max` (the journal's default).
pub const JOURNAL_GROUP_RECORDS_MAX_DEFAULT: usize = 256;

/// Largest `[journal] segments_max`: the journal's own bound (`SEGMENTS_MAX_LIMIT`).
pub const JOURNAL_SEGMENTS_MAX_LIMIT: usize = 1 << 16;
/// Default `[journal] segments_max` (the journal's default).
pub const JOURNAL_SEGMENTS_MAX_DEFAULT: usize = 1024;

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: JOURNAL_SEGMENT_BYTES_DEFAULT,
            segments_max: JOURNAL_SEGMENTS_MAX_DEFAULT,
            group_delay_us: JOURNAL_GROUP_DELAY_US_DEFAULT,
            lazy_delay_us: JOURNAL_LAZY_DELAY_US_DEFAULT,
            group_records_max: JOURNAL_GROUP_RECORDS_MAX_DEFAULT,
        }
    }
}

/// `[tls]`: with both files the API listens on https.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // A constant that parses.
            listen: LISTEN_DEFAULT
                .parse()
                .expect("default listen address parses"),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            shards: 0,
            batch_scheduling: true,
            pinning: herald::Pinning::Auto,
            socket_ring: true,
            log_format: LogFormat::Text,
            admin_key: None,
            egress: EgressConfig::default(),
            signing: SigningConfig::default(),
            retry: RetryConfig::default(),
            limits: LimitsConfig::default(),
            journal: JournalConfig::default(),
            tls: None,
            inbound: std::collections::BTreeMap::new(),
            ws: crate::ws::WsConfig::default(),
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// What is wrong, naming the key (and the file).
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::new(format!("{origin}: {}", e.to_string().trim_end())))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Checks what the types cannot. Run again after flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default_scheme()?;
        if let Some(schedule) = &self.retry.schedule_s {
            self.retry_schedule_of(schedule)?;
        }
        let limits = &self.limits;
        let positive = [
            ("limits.body_bytes_max", limits.body_bytes_max == 0),
            ("limits.connections_max", limits.connections_max == 0),
            (
                "limits.connections_per_address_max",
                limits.connections_per_address_max == 0,
            ),
            (
                "limits.requests_in_flight_per_tenant_max",
                limits.requests_in_flight_per_tenant_max == Some(0),
            ),
            (
                "limits.header_read_timeout_ms",
                limits.header_read_timeout_ms == 0,
            ),
            (
                "limits.body_read_timeout_ms",
                limits.body_read_timeout_ms == 0,
            ),
            ("limits.idle_timeout_ms", limits.idle_timeout_ms == 0),
            (
                "limits.requests_per_connection_max",
                limits.requests_per_connection_max == 0,
            ),
            (
                "limits.pipelined_requests_max",
                limits.pipelined_requests_max == 0,
            ),
            ("limits.tenants_max", limits.tenants_max == 0),
            (
                "limits.keys_per_tenant_max",
                limits.keys_per_tenant_max == 0,
            ),
            ("limits.intake_capacity", limits.intake_capacity == 0),
            (
                "limits.pending_deliveries_max",
                limits.pending_deliveries_max == 0,
            ),
            (
                "limits.pending_deliveries_per_tenant_max",
                limits.pending_deliveries_per_tenant_max == Some(0),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::new(format!("{key} must be greater than 0")));
        }
        for (key, value) in [
            (
                "limits.pending_deliveries_max",
                limits.pending_deliveries_max,
            ),
            (
                "limits.pending_deliveries_per_tenant_max",
                limits.pending_deliveries_per_tenant_max(),
            ),
        ] {
            if value > PENDING_DELIVERIES_MAX_LIMIT {
                return Err(ConfigError::new(format!(
                    "{key} is {value}; at most {PENDING_DELIVERIES_MAX_LIMIT} is allowed \
                     (each pending delivery holds ~230 bytes of memory)"
                )));
            }
        }
        if limits.body_bytes_max > BODY_BYTES_MAX_LIMIT {
            return Err(ConfigError::new(format!(
                "limits.body_bytes_max is {}; at most {BODY_BYTES_MAX_LIMIT} (16 MiB) is allowed",
                limits.body_bytes_max
            )));
        }
        let segment_bytes = self.journal.segment_bytes;
        if !(JOURNAL_SEGMENT_BYTES_MIN..=JOURNAL_SEGMENT_BYTES_MAX).contains(&segment_bytes)
            || !segment_bytes.is_multiple_of(4096)
        {
            return Err(ConfigError::new(format!(
                "journal.segment_bytes is {segment_bytes}; it must be a multiple of 4096 from {JOURNAL_SEGMENT_BYTES_MIN} to {JOURNAL_SEGMENT_BYTES_MAX}"
            )));
        }
        let segments_max = self.journal.segments_max;
        if !(2..=JOURNAL_SEGMENTS_MAX_LIMIT).contains(&segments_max) {
            return Err(ConfigError::new(format!(
                "journal.segments_max is {segments_max}; it must be from 2 to {JOURNAL_SEGMENTS_MAX_LIMIT}"
            )));
        }
        let group_delay_us = self.journal.group_delay_us;
        if group_delay_us > JOURNAL_GROUP_DELAY_US_MAX {
            return Err(ConfigError::new(format!(
                "journal.group_delay_us is {group_delay_us}; it must be from 0 to {JOURNAL_GROUP_DELAY_US_MAX} (a second)"
            )));
        }
        let lazy_delay_us = self.journal.lazy_delay_us;
        if lazy_delay_us > JOURNAL_GROUP_DELAY_US_MAX {
            return Err(ConfigError::new(format!(
                "journal.lazy_delay_us is {lazy_delay_us}; it must be from 0 to {JOURNAL_GROUP_DELAY_US_MAX} (a second)"
            )));
        }
        let group_records_max = self.journal.group_records_max;
        if !(1..=JOURNAL_GROUP_RECORDS_MAX_LIMIT).contains(&group_records_max) {
            return Err(ConfigError::new(format!(
                "journal.group_records_max is {group_records_max}; it must be from 1 to {JOURNAL_GROUP_RECORDS_MAX_LIMIT}"
            )));
        }
        self.validate_inbound()?;
        self.ws.validate()?;
        if let Some(key) = &self.admin_key {
            check_admin_key(key.expose(), "admin_key").map_err(ConfigError::new)?;
        }
        Ok(())
    }

    fn validate_inbound(&self) -> Result<(), ConfigError> {
        if self.inbound.len() > INBOUND_SOURCES_MAX {
            return Err(ConfigError::new(format!(
                "inbound: at most {INBOUND_SOURCES_MAX} sources"
            )));
        }
        for (name, source) in &self.inbound {
            let at = |key: &str| format!("inbound.{name}.{key}");
            let name_ok = !name.is_empty()
                && name.len() <= INBOUND_SOURCE_NAME_BYTES_MAX
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return Err(ConfigError::new(format!(
                    "inbound.{name}: source names are 1 to {INBOUND_SOURCE_NAME_BYTES_MAX} letters, digits, '_' or '-'"
                )));
            }
            if !["stripe", "standard", "hmac"].contains(&source.scheme.as_str()) {
                return Err(ConfigError::new(format!(
                    "{} must be stripe, standard or hmac; not {:?}",
                    at("scheme"),
                    source.scheme
                )));
            }
            if source.secret.expose().is_empty() {
                return Err(ConfigError::new(format!(
                    "{} must not be empty",
                    at("secret")
                )));
            }
            if source.scheme == "standard" {
                herald::Verifier::new(herald::Scheme::Standard, &[source.secret.expose()])
                    .map_err(|e| {
                        ConfigError::new(format!("{}: {e} (expected whsec_<base64>)", at("secret")))
                    })?;
            }
            match (&source.tenant, &source.tenant_path) {
                (Some(tenant), None) => {
                    herald::TenantId::parse(tenant)
                        .map_err(|e| ConfigError::new(format!("{}: {e}", at("tenant"))))?;
                }
                (None, Some(path))
                    if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => {}
                (None, Some(_)) => {
                    return Err(ConfigError::new(format!(
                        "{} is a dotted path such as data.object.metadata.tenant_id",
                        at("tenant_path")
                    )))
                }
                _ => {
                    return Err(ConfigError::new(format!(
                        "inbound.{name} needs exactly one of tenant or tenant_path"
                    )))
                }
            }
            if let Some(header) = &source.header {
                // The other schemes name their own headers: a setting they would ignore
                // is refused, not left to look as if it were obeyed.
                if source.scheme != "hmac" {
                    return Err(ConfigError::new(format!(
                        "{} is for the hmac scheme only; {} reads its own headers",
                        at("header"),
                        source.scheme
                    )));
                }
                herald_http::check_header_name(header).map_err(|_| {
                    ConfigError::new(format!("{} {header:?} is not a header name", at("header")))
                })?;
            }
            if source
                .tolerance_s
                .is_some_and(|t| t > INBOUND_TOLERANCE_S_MAX)
            {
                return Err(ConfigError::new(format!(
                    "{} is at most {INBOUND_TOLERANCE_S_MAX}",
                    at("tolerance_s")
                )));
            }
            for (provider, platform) in &source.types {
                herald::EventType::parse(platform)
                    .map_err(|e| ConfigError::new(format!("{}.{provider:?}: {e}", at("types"))))?;
            }
        }
        Ok(())
    }

    /// The scheme new webhooks get when they name none.
    pub fn default_scheme(&self) -> Result<herald::Scheme, ConfigError> {
        match self.signing.default_scheme.as_str() {
            "standard" => Ok(herald::Scheme::Standard),
            "ed25519" => Ok(herald::Scheme::Ed25519),
            "olo" => Ok(herald::Scheme::Olo),
            "stripe" => {
                herald_http::check_header_name(&self.signing.stripe_header).map_err(|_| {
                    ConfigError::new(format!(
                        "signing.stripe_header {:?} is not an HTTP header name",
                        self.signing.stripe_header
                    ))
                })?;
                Ok(herald::Scheme::Stripe {
                    header: self.signing.stripe_header.clone(),
                })
            }
            other => Err(ConfigError::new(format!(
                "signing.default_scheme must be one of standard, ed25519, stripe, olo; not {other:?}"
            ))),
        }
    }

    /// The default retry schedule, if configured.
    pub fn retry_schedule(&self) -> Result<Option<herald::RetrySchedule>, ConfigError> {
        self.retry
            .schedule_s
            .as_ref()
            .map(|s| self.retry_schedule_of(s))
            .transpose()
    }

    fn retry_schedule_of(&self, seconds: &[f64]) -> Result<herald::RetrySchedule, ConfigError> {
        let delays = seconds_to_ms(seconds)
            .map_err(|m| ConfigError::new(format!("retry.schedule_s: {m}")))?;
        herald::RetrySchedule::new(delays)
            .map_err(|e| ConfigError::new(format!("retry.schedule_s: {e}")))
    }
}

/// Largest `limits.body_bytes_max` accepted: the whole body is held in memory.
pub const BODY_BYTES_MAX_LIMIT: u64 = 16 << 20;
/// Shortest admin key accepted from the config or the environment: a short key can be
/// guessed.
pub const ADMIN_KEY_BYTES_MIN: usize = 16;

/// Converts a list of delays in (possibly fractional) seconds to milliseconds.
pub fn seconds_to_ms(seconds: &[f64]) -> Result<Vec<u64>, String> {
    seconds
        .iter()
        .enumerate()
        .map(|(index, &s)| {
            if !s.is_finite() || s < 0.0 {
                return Err(format!(
                    "entry {index} is {s}; delays are non-negative seconds"
                ));
            }
            if s > 1e9 {
                return Err(format!("entry {index} is {s}; too long"));
            }
            // Bounded above: the cast cannot overflow.
            Ok((s * 1000.0).round() as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(config.listen.to_string(), LISTEN_DEFAULT);
        assert_eq!(config.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
        assert_eq!(config.limits.body_bytes_max, 256 * 1024);
        assert_eq!(config.default_scheme().unwrap(), herald::Scheme::Standard);
        assert!(config.batch_scheduling);
        assert_eq!(config.pinning, herald::Pinning::Auto);
        assert!(config.socket_ring);
        assert_eq!(config.journal.group_delay_us, 1000);
        assert_eq!(config.journal.lazy_delay_us, 10_000);
        assert_eq!(config.journal.group_records_max, 256);
    }

    /// The configuration file the README shows is one the server takes, with the
    /// journal's group commit at its defaults.
    #[test]
    fn the_readme_configuration_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\nlisten = ")
            .expect("the README shows a configuration file");
        let block = &readme[start + "```toml\n".len()..];
        let block = &block[..block.find("```").expect("the block ends")];
        let config = Config::from_toml(block, "README.md").unwrap();
        assert_eq!(
            config.journal.group_delay_us,
            JOURNAL_GROUP_DELAY_US_DEFAULT
        );
        assert_eq!(
            config.journal.group_records_max,
            JOURNAL_GROUP_RECORDS_MAX_DEFAULT
        );
        assert_eq!(config.journal.lazy_delay_us, JOURNAL_LAZY_DELAY_US_DEFAULT);
        assert_eq!(config.journal.segments_max, JOURNAL_SEGMENTS_MAX_DEFAULT);
    }

    #[test]
    fn every_section_parses() {
        let text = r#"
            listen = "127.0.0.1:9000"
            data_dir = "/tmp/x"
            shards = 2
            batch_scheduling = false
            pinning = "never"
            socket_ring = false
            log_format = "json"
            [egress]
            allow_cidrs = ["127.0.0.0/8"]
            require_https = true
            extra_ca_pems = ["/tmp/ca.pem"]
            [signing]
            default_scheme = "stripe"
            stripe_header = "X-Olympus-Signature"
            [retry]
            schedule_s = [1, 2.5, 60]
            [limits]
            body_bytes_max = 1024
            connections_max = 10
            [journal]
            segment_bytes = 65536
            segments_max = 16
            group_delay_us = 250
            lazy_delay_us = 2000
            group_records_max = 64
        "#;
        let config = Config::from_toml(text, "t.toml").unwrap();
        assert_eq!(config.shards, 2);
        assert!(!config.batch_scheduling);
        assert_eq!(config.pinning, herald::Pinning::Never);
        assert!(!config.socket_ring);
        assert_eq!(config.journal.segment_bytes, 65536);
        assert_eq!(config.journal.segments_max, 16);
        assert_eq!(config.journal.group_delay_us, 250);
        assert_eq!(config.journal.lazy_delay_us, 2000);
        assert_eq!(config.journal.group_records_max, 64);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.egress.require_https);
        assert_eq!(config.egress.extra_ca_pems, [PathBuf::from("/tmp/ca.pem")]);
        assert_eq!(
            config.default_scheme().unwrap(),
            herald::Scheme::Stripe {
                header: "X-Olympus-Signature".into()
            }
        );
        let schedule = config.retry_schedule().unwrap().unwrap();
        assert_eq!(schedule.retry_delays_ms(), &[1000, 2500, 60_000]);
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases = [
            ("lisen = \"x\"", "lisen"),
            ("[egress]\nallow = []", "allow"),
            ("shards = \"two\"", "shards"),
            (
                "[signing]\ndefault_scheme = \"md5\"",
                "signing.default_scheme",
            ),
            ("[retry]\nschedule_s = [-1]", "retry.schedule_s"),
            ("[limits]\nconnections_max = 0", "limits.connections_max"),
            (
                "[limits]\nconnections_per_address_max = 0",
                "limits.connections_per_address_max",
            ),
            (
                "[limits]\nrequests_in_flight_per_tenant_max = 0",
                "limits.requests_in_flight_per_tenant_max",
            ),
            (
                "[limits]\npending_deliveries_per_tenant_max = 0",
                "limits.pending_deliveries_per_tenant_max",
            ),
            (
                "[limits]\npending_deliveries_max = 50000001",
                "limits.pending_deliveries_max",
            ),
            ("log_format = \"xml\"", "log_format"),
            ("pinning = true", "pinning"),
            ("pinning = \"sometimes\"", "pinning"),
            ("[journal]\nsegment_bytes = 4096", "journal.segment_bytes"),
            ("[journal]\nsegment_bytes = 65537", "journal.segment_bytes"),
            ("[journal]\nsize = 65536", "size"),
            ("[journal]\nsegments_max = 0", "journal.segments_max"),
            ("[journal]\nsegments_max = 1", "journal.segments_max"),
            ("[journal]\nsegments_max = 70000", "journal.segments_max"),
            ("[journal]\ngroup_delay_us = 1000001", "journal.group_delay_us"),
            ("[journal]\nlazy_delay_us = 1000001", "journal.lazy_delay_us"),
            ("[journal]\ngroup_records_max = 0", "journal.group_records_max"),
            ("[journal]\ngroup_records_max = 1048577", "journal.group_records_max"),
            ("admin_key = \"short\"", "admin_key"),
            (
                "admin_key = \" admin-key-0123456789abcdef \"",
                "admin_key",
            ),
            (
                "admin_key = \"admin key 0123456789abcdef\"",
                "admin_key",
            ),
            ("[tls]\ncert = \"a.pem\"", "key"),
            (
                "[inbound.s]\nscheme = \"md5\"\nsecret = \"x\"\ntenant = \"t\"",
                "inbound.s.scheme",
            ),
            (
                "[inbound.s]\nscheme = \"stripe\"\nsecret = \"x\"",
                "tenant or tenant_path",
            ),
            (
                "[inbound.s]\nscheme = \"standard\"\nsecret = \"nope\"\ntenant = \"t\"",
                "inbound.s.secret",
            ),
            (
                "[inbound.s]\nscheme = \"stripe\"\nsecret = \"x\"\ntenant = \"t\"\n[inbound.s.types]\n\"a.b\" = \"Bad Type\"",
                "inbound.s.types",
            ),
            (
                "[inbound.s]\nscheme = \"stripe\"\nsecret = \"x\"\ntenant_path = \"data..x\"",
                "inbound.s.tenant_path",
            ),
            (
                "[inbound.s]\nscheme = \"stripe\"\nsecret = \"x\"\ntenant = \"t\"\nheader = \"X-Sig\"",
                "inbound.s.header is for the hmac scheme only",
            ),
        ];
        for (text, key) in cases {
            let error = Config::from_toml(text, "t.toml").unwrap_err();
            assert!(
                error.message.contains(key),
                "{text:?}: {:?} does not name {key}",
                error.message
            );
        }
    }
    #[test]
    fn a_printed_configuration_shows_no_secret() {
        let text = "admin_key = \"admin-key-0123456789abcdefXYZ\"\n\
                    [ws]\njwt_secret = \"jwt-secret-0123456789abcdef0123456789\"\n\
                    [inbound.pay]\nscheme = \"hmac\"\nsecret = \"inbound-secret-42\"\ntenant = \"t\"\n";
        let config = Config::from_toml(text, "t.toml").unwrap();
        let printed = format!("{config:?}");
        for secret in [
            "admin-key-0123456789abcdefXYZ",
            "jwt-secret-0123456789abcdef0123456789",
            "inbound-secret-42",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(
            printed.contains("Secret(<17 bytes, not shown>)"),
            "{printed}"
        );
        assert_eq!(
            config.inbound["pay"].secret.expose(),
            "inbound-secret-42",
            "the secret is kept"
        );
    }

    #[test]
    fn an_admin_key_is_one_a_client_can_present() {
        assert!(check_admin_key(&"k".repeat(512), "admin_key").is_ok());
        let long = check_admin_key(&"k".repeat(513), "admin_key").unwrap_err();
        assert!(long.contains("to 512 characters"), "{long}");
        let spaced = check_admin_key(" admin-key-0123456789abcdef", "admin_key").unwrap_err();
        assert!(spaced.contains("visible ASCII"), "{spaced}");
    }
    /// Unset, the per-tenant limits follow the shard's as configured: a smaller intake
    /// queue or pending room gives each tenant its share of that, not of the defaults.
    #[test]
    fn per_tenant_limits_follow_the_shards_unless_set() {
        let defaults = Config::from_toml("", "test").unwrap().limits;
        assert_eq!(
            defaults.requests_in_flight_per_tenant_max(),
            REQUESTS_IN_FLIGHT_PER_TENANT_MAX_DEFAULT
        );
        assert_eq!(
            defaults.pending_deliveries_per_tenant_max(),
            herald::PENDING_DELIVERIES_PER_TENANT_MAX_DEFAULT
        );
        let smaller = Config::from_toml(
            "[limits]\nintake_capacity = 64\npending_deliveries_max = 1000",
            "test",
        )
        .unwrap()
        .limits;
        assert_eq!(smaller.requests_in_flight_per_tenant_max(), 8);
        assert_eq!(smaller.pending_deliveries_per_tenant_max(), 500);
        let tiny = Config::from_toml(
            "[limits]\nintake_capacity = 1\npending_deliveries_max = 1",
            "test",
        )
        .unwrap()
        .limits;
        assert_eq!(tiny.requests_in_flight_per_tenant_max(), 1);
        assert_eq!(tiny.pending_deliveries_per_tenant_max(), 1);
        let set = Config::from_toml(
            "[limits]\nintake_capacity = 64\nrequests_in_flight_per_tenant_max = 100\n\
             pending_deliveries_per_tenant_max = 7",
            "test",
        )
        .unwrap()
        .limits;
        assert_eq!(set.requests_in_flight_per_tenant_max(), 100);
        assert_eq!(set.pending_deliveries_per_tenant_max(), 7);
    }
}
