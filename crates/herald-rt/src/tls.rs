//! TLS client setup: trust anchors, rustls configuration (ring provider), server names.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;

/// Most certificates read from one extra-CA PEM file: a bundle of private roots is a
/// handful; thousands means the wrong file was named.
pub const EXTRA_CA_CERTIFICATES_MAX: usize = 1024;

/// Largest extra-CA PEM file read, for the same reason.
pub const EXTRA_CA_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Where the trust anchors came from (for logs and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsSource {
    /// The operating system's certificate store.
    System,
    /// The bundled Mozilla roots (`webpki-roots`), used when no system root loaded.
    Bundled,
    /// Only explicitly added certificates.
    ExplicitOnly,
}

/// The set of CA certificates https receivers are verified against.
///
/// Loading the system store takes milliseconds, so the engine loads it once and hands a
/// clone (cheap: an `Arc`) to every shard's [`HttpClient`](crate::HttpClient).
#[derive(Clone)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
    source: RootsSource,
    extra_count: usize,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("roots", &self.roots.len())
            .field("source", &self.source)
            .field("extra", &self.extra_count)
            .finish()
    }
}

/// Why trust anchors could not be set up (the operator's configuration is wrong).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra-CA file could not be read.
    #[error("cannot read extra CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The extra-CA file is larger than [`EXTRA_CA_FILE_BYTES_MAX`].
    #[error("extra CA file {path} exceeds {EXTRA_CA_FILE_BYTES_MAX} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The PEM text is malformed or a certificate is not a usable trust anchor.
    #[error("invalid CA certificate in {origin}: {detail}")]
    InvalidCertificate {
        /// File name or "PEM input".
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// The PEM input holds no certificate at all.
    #[error("no CA certificate found in {origin}")]
    NoCertificate {
        /// File name or "PEM input".
        origin: String,
    },
    /// More than [`EXTRA_CA_CERTIFICATES_MAX`] certificates.
    #[error("more than {EXTRA_CA_CERTIFICATES_MAX} certificates in {origin}")]
    TooManyCertificates {
        /// File name or "PEM input".
        origin: String,
    },
}

impl TrustAnchors {
    /// The system's root certificates, or the bundled Mozilla roots when none of the
    /// system's load (a minimal container image without a CA bundle).
    pub fn system() -> TrustAnchors {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        // Individual unparsable system certificates are skipped: one odd file in
        // /etc/ssl/certs must not take https down.
        let (_added, _ignored) = roots.add_parsable_certificates(loaded.certs);
        if !loaded.errors.is_empty() {
            tracing::debug!(
                errors = loaded.errors.len(),
                "some system roots did not load"
            );
        }
        let source = if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            RootsSource::Bundled
        } else {
            RootsSource::System
        };
        TrustAnchors {
            roots: Arc::new(roots),
            source,
            extra_count: 0,
        }
    }

    /// No trust anchors at all; add some with [`add_pem`](Self::add_pem). For private
    /// deployments that must not trust the public web PKI, and for tests.
    pub fn empty() -> TrustAnchors {
        TrustAnchors {
            roots: Arc::new(RootCertStore::empty()),
            source: RootsSource::ExplicitOnly,
            extra_count: 0,
        }
    }

    /// Adds every certificate of a PEM file (for private receivers and tests).
    pub fn add_pem_file(&mut self, path: &Path) -> Result<usize, TlsSetupError> {
        let read_error = |source| TlsSetupError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > EXTRA_CA_FILE_BYTES_MAX {
            return Err(TlsSetupError::FileTooLarge {
                path: path.to_owned(),
            });
        }
        let pem = std::fs::read(path).map_err(read_error)?;
        self.add_pem_from(&pem, &path.display().to_string())
    }

    /// Adds every certificate of PEM text.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<usize, TlsSetupError> {
        self.add_pem_from(pem, "PEM input")
    }

    fn add_pem_from(&mut self, pem: &[u8], origin: &str) -> Result<usize, TlsSetupError> {
        let mut certs: Vec<CertificateDer<'static>> = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            let cert = item.map_err(|e| TlsSetupError::InvalidCertificate {
                origin: origin.to_owned(),
                detail: e.to_string(),
            })?;
            if certs.len() == EXTRA_CA_CERTIFICATES_MAX {
                return Err(TlsSetupError::TooManyCertificates {
                    origin: origin.to_owned(),
                });
            }
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(TlsSetupError::NoCertificate {
                origin: origin.to_owned(),
            });
        }
        let roots = Arc::make_mut(&mut self.roots);
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| TlsSetupError::InvalidCertificate {
                    origin: origin.to_owned(),
                    detail: e.to_string(),
                })?;
        }
        self.extra_count += certs.len();
        Ok(certs.len())
    }

    /// Number of trust anchors.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether there is no trust anchor (every https request would fail).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Where the base set came from.
    pub fn source(&self) -> RootsSource {
        self.source
    }
}

/// The cryptography every Herald TLS configuration uses, client and server: rustls's
/// ring provider, named explicitly so that no process-wide default is needed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for one shard: ring provider, TLS 1.2 and 1.3, ALPN
/// `http/1.1`, and its own session cache (resumption saves a round trip and the
/// server's signature on every reconnect to a receiver).
pub(crate) fn client_config(
    trust: &TrustAnchors,
    sessions_max: usize,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        // Invariant: ring's default provider supports the safe default versions.
        .expect("ring provider supports TLS 1.2 and 1.3");
    let mut config = builder
        .with_root_certificates(trust.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(sessions_max);
    Arc::new(config)
}

/// The name the receiver's certificate is checked against.
///
/// A DNS name is sent as SNI. An IP literal is not (RFC 6066 forbids IP addresses in
/// SNI); the certificate must then carry that address as an IP SAN, which rustls checks.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    if let Some(ip) = crate::dns::ip_literal(host) {
        return Ok(ServerName::IpAddress(IpAddr::into(ip)));
    }
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("invalid TLS server name {host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("example.com").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn pem_errors() {
        let mut trust = TrustAnchors::empty();
        let err = trust.add_pem(b"not pem at all").unwrap_err();
        assert!(matches!(err, TlsSetupError::NoCertificate { .. }), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = trust.add_pem(garbage).unwrap_err();
        assert!(
            matches!(err, TlsSetupError::InvalidCertificate { .. }),
            "{err}"
        );
        assert!(trust.is_empty());
        let err = trust
            .add_pem_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(matches!(err, TlsSetupError::Read { .. }), "{err}");
    }

    #[test]
    fn pem_certificate_count_is_bounded() {
        let one = herald_sink::Pki::generate("ca.test")
            .unwrap()
            .ca_pem()
            .to_owned();
        let mut trust = TrustAnchors::empty();
        assert_eq!(trust.add_pem(one.as_bytes()).unwrap(), 1);
        assert_eq!(trust.len(), 1);
        let many = one.repeat(EXTRA_CA_CERTIFICATES_MAX + 1);
        let err = trust.add_pem(many.as_bytes()).unwrap_err();
        assert!(
            matches!(err, TlsSetupError::TooManyCertificates { .. }),
            "{err}"
        );
    }

    #[test]
    fn system_roots_load_or_fall_back() {
        let trust = TrustAnchors::system();
        assert!(!trust.is_empty());
        assert_ne!(trust.source(), RootsSource::ExplicitOnly);
    }
}
