//! Herald runtime: the parts of a shard that touch the operating system.
//!
//! * [`HttpClient`]: the per-shard outbound HTTP/1.1 client on glommio — keep-alive
//!   pools per origin, TLS via rustls (ring provider) with session resumption, timeouts,
//!   and the [egress guard](egress) against server-side request forgery.
//! * [`egress`]: the pure address classifier and CIDR allowlist.
//! * [`TrustAnchors`]: system roots (or bundled Mozilla roots) plus extra CA files.
//!
//! This is the only crate allowed `unsafe`; the workspace lint denies it and each use is
//! allowed locally with a `// SAFETY:` argument.

mod client;
mod conn;
mod dns;
pub mod egress;
mod error;
mod pool;
pub mod shard;
mod tls;

pub use client::{
    ClientConfig, ClientStats, HttpClient, OutboundRequest, CONNECT_TIMEOUT_MS_DEFAULT,
    REQUEST_HEADERS_MAX, REQUEST_TIMEOUT_MS_DEFAULT, USER_AGENT,
};
pub use dns::{DnsConfig, DnsError, ADDRESSES_PER_NAME_MAX};
pub use egress::{AddressClass, Cidr, CidrError, EgressPolicy};
pub use error::TransportError;
pub use pool::{OriginKey, PoolConfig};
pub use tls::{
    RootsSource, TlsSetupError, TrustAnchors, EXTRA_CA_CERTIFICATES_MAX, EXTRA_CA_FILE_BYTES_MAX,
};
