//! The client tests' receivers (herald-sink's hostile servers, plain and TLS), their
//! PKI, and an executor helper.
#![allow(dead_code)] // reason: each test binary uses a different subset

use std::future::Future;
use std::sync::Arc;

use herald_rt::{Cidr, ClientConfig, TrustAnchors};
pub use herald_sink::hostile::{Behaviour, Hostile};

/// Runs `f` on a small glommio executor (tests run in parallel threads; the memlock
/// budget is shared).
pub fn run<F, T>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(128 * 1024)
        .ring_depth(64)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

/// A client config that may reach loopback.
pub fn loopback_config(trust: TrustAnchors) -> ClientConfig {
    let mut config = ClientConfig::new(trust);
    config
        .egress
        .allow(Cidr::parse("127.0.0.0/8").unwrap())
        .unwrap();
    config
}

/// Starts a plain HTTP receiver behaving as `behaviour` (herald-sink's hostile
/// servers: every misbehaviour the client is tested against, and `Ok` as the control).
pub fn plain_receiver(behaviour: Behaviour) -> Hostile {
    Hostile::start(behaviour).expect("a loopback receiver starts")
}

/// Starts a TLS receiver with the given rustls server configuration.
pub fn tls_receiver(behaviour: Behaviour, config: Arc<rustls::ServerConfig>) -> Hostile {
    Hostile::start_tls(behaviour, config).expect("a loopback TLS receiver starts")
}

/// `scheme://<receiver's address><path>`: any scheme, so that a test can also speak
/// https to a plain receiver.
pub fn url(receiver: &Hostile, scheme: &str, path: &str) -> herald_http::Url {
    herald_http::Url::parse(&format!("{scheme}://{}{path}", receiver.addr())).unwrap()
}

/// A CA and a leaf certificate for `localhost` and 127.0.0.1 signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    let pki = herald_sink::Pki::generate("herald test CA").unwrap();
    let identity = pki.issue(&["localhost", "127.0.0.1"]).unwrap();
    TestPki {
        ca_pem: pki.ca_pem().to_owned(),
        server_config: identity.server_config().unwrap(),
    }
}
