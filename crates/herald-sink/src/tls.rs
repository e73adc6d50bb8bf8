//! A throw-away certificate authority and a server certificate for `localhost` and
//! `127.0.0.1`, and the rustls server configuration that serves it.
//!
//! A separate CA (rather than one self-signed leaf) because WebPKI verifiers refuse a CA
//! certificate used as an end-entity certificate: clients trust the CA PEM, the server
//! presents a leaf it signed.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SinkError;

/// Names the leaf certificate is valid for.
pub const TLS_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The generated certificates.
pub(crate) struct Generated {
    pub(crate) ca_pem: String,
    pub(crate) server: Arc<rustls::ServerConfig>,
}

fn tls_error(what: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError::Tls(format!("{what}: {error}"))
}

/// The ring provider, named explicitly so that no process-wide default is needed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn generate() -> Result<Generated, SinkError> {
    let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("CA params", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herald-sink test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| tls_error("CA certificate", e))?;

    let leaf_key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
    let mut leaf_params = CertificateParams::new(
        TLS_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| tls_error("server params", e))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .map_err(|e| tls_error("server certificate", e))?;

    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server configuration", e))?;
    Ok(Generated {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    })
}

/// The rustls server configuration for a given certificate chain and private key (PEM
/// text: the leaf first, then its issuers; a PKCS#8, PKCS#1 or SEC1 key).
pub(crate) fn from_pem(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, SinkError> {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("certificate PEM", e))?;
    if chain.is_empty() {
        return Err(SinkError::Tls(
            "certificate PEM: no CERTIFICATE block; give the leaf certificate (then its issuers)"
                .into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| tls_error("private key PEM", e))?;
    let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            tls_error(
                "server configuration (does the key match the certificate?)",
                e,
            )
        })?;
    Ok(Arc::new(server))
}
