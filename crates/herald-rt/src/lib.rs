//! Herald runtime: the parts of a shard that touch the operating system.
//!
//! * [`HttpClient`]: the per-shard outbound HTTP/1.1 client on glommio — keep-alive
//!   pools per origin, TLS via rustls (ring provider) with session resumption, timeouts,
//!   and the [egress guard](egress) against server-side request forgery.
//! * [`egress`]: the pure address classifier and CIDR allowlist.
//! * [`TrustAnchors`]: system roots (or bundled Mozilla roots) plus extra CA files.
//!
//! The workspace lint denies `unsafe`; this crate allows it in a few places (borrowing a
//! connection's socket, adopting the wake eventfd and the socket ring's eventfd,
//! submitting to that ring, setting a shard thread's scheduling policy, reading back a
//! record the shard has just serialized without validating it again), each with a
//! `// SAFETY:` argument.
//!
//! ```no_run
//! use herald_rt::{Cidr, ClientConfig, HttpClient, OutboundRequest, TransportError, TrustAnchors};
//!
//! // Built once (loading system roots takes milliseconds), cloned into every shard.
//! let mut config = ClientConfig::new(TrustAnchors::system());
//! config.egress.allow(Cidr::parse("127.0.0.0/8").unwrap()).unwrap();
//!
//! glommio::LocalExecutorBuilder::default()
//!     .io_memory(512 * 1024)
//!     .spawn(move || async move {
//!         // One client per shard thread; it is not `Send`.
//!         let client = HttpClient::new(config);
//!         let url = herald_http::Url::parse("http://127.0.0.1:8080/hook").unwrap();
//!         let request = OutboundRequest::new(url, &b"{}"[..]).header("webhook-id", "msg_1");
//!         match client.send(request).await {
//!             Ok(response) => println!("{}", response.status),
//!             Err(TransportError::RequestTimeout(detail)) => println!("retry later: {detail}"),
//!             Err(other) => println!("{}: {}", other.class(), other.detail()),
//!         }
//!     })
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! ```
#![warn(missing_docs)]

mod client;
mod conn;
mod deadline;
mod dns;
pub mod egress;
mod error;
mod pool;
mod ring;
pub mod shard;
mod tls;

pub use client::{
    ClientConfig, ClientStats, HttpClient, OutboundRequest, UrlRefusal, CHECK_URL_TIMEOUT_MS,
    CONNECT_TIMEOUT_MS_DEFAULT, REQUEST_HEADERS_MAX, REQUEST_TIMEOUT_MS_DEFAULT, USER_AGENT,
};
pub use dns::{DnsConfig, DnsError, ADDRESSES_PER_NAME_MAX, FAILURE_TTL_MS};
pub use egress::{AddressClass, Cidr, CidrError, EgressPolicy, EgressRefusal};
pub use error::TransportError;
pub use pool::{OriginKey, PoolConfig};
pub use tls::{
    crypto_provider, RootsSource, TlsSetupError, TrustAnchors, EXTRA_CA_CERTIFICATES_MAX,
    EXTRA_CA_FILE_BYTES_MAX,
};
