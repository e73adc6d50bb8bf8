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

/// A throw-away certificate authority that issues server certificates: the one test
/// PKI of the workspace (the sink's TLS, the client's and the server's TLS tests, the
/// hostile receivers). Clients trust [`Pki::ca_pem`]; servers present an [`Identity`].
pub struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// A calendar date: (year, month, day).
pub type Ymd = (i32, u8, u8);

/// What [`Pki::issue_with`] puts in a server certificate.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    /// DNS names and IP addresses (as text) the certificate is valid for.
    pub names: Vec<String>,
    /// Validity, as (year, month, day) pairs; `None` keeps rcgen's default (valid now).
    pub validity: Option<(Ymd, Ymd)>,
}

impl LeafOptions {
    /// A certificate for `names`, valid now.
    pub fn for_names(names: &[&str]) -> LeafOptions {
        LeafOptions {
            names: names.iter().map(|n| n.to_string()).collect(),
            validity: None,
        }
    }
}

/// What is wrong with a server certificate from [`Pki::issue_defective`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertDefect {
    /// Nothing: issued by the CA for the names asked for, valid now.
    None,
    /// Issued by the CA for the names asked for, but expired (valid 2019–2020 only).
    Expired,
    /// For the names asked for, but signed by its own key, not by the CA.
    SelfSigned,
    /// Issued by the CA, valid now, but for another name
    /// ([`CertDefect::WRONG_HOST`]).
    WrongHost,
}

impl CertDefect {
    /// The one name a [`CertDefect::WrongHost`] certificate is valid for.
    pub const WRONG_HOST: &'static str = "wrong-host.invalid";
}

/// A server's certificate chain (leaf, then the CA) and private key.
pub struct Identity {
    /// The chain in DER, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's PKCS#8 private key in DER.
    pub key_der: Vec<u8>,
    /// The chain as PEM text, leaf first.
    pub chain_pem: String,
    /// The private key as PEM text.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A certificate for `names` signed by its own key (no CA will vouch for it), for
    /// testing that a client refuses it.
    pub fn self_signed(names: &[&str]) -> Result<Identity, SinkError> {
        let key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(|e| tls_error("server params", e))?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_error("self-signed certificate", e))?;
        Ok(Identity {
            chain_pem: cert.pem(),
            chain: vec![cert.der().clone()],
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }

    /// The rustls server configuration that presents this identity.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, SinkError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let server = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .map_err(|e| tls_error("server configuration", e))?;
        Ok(Arc::new(server))
    }
}

impl Pki {
    /// A new CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Pki, SinkError> {
        let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("CA params", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .clone()
            .self_signed(&ca_key)
            .map_err(|e| tls_error("CA certificate", e))?;
        Ok(Pki {
            ca_pem: ca.pem(),
            ca_der: CertificateDer::from(ca.der().to_vec()),
            ca_key,
            ca_params,
        })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A server certificate for `names`, valid now.
    pub fn issue(&self, names: &[&str]) -> Result<Identity, SinkError> {
        self.issue_with(&LeafOptions::for_names(names))
    }

    /// A server certificate as `options` say (names, validity).
    pub fn issue_with(&self, options: &LeafOptions) -> Result<Identity, SinkError> {
        let leaf_key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
        let mut leaf_params = CertificateParams::new(options.names.clone())
            .map_err(|e| tls_error("server params", e))?;
        if let Some(first) = options.names.first() {
            leaf_params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if let Some(((y0, m0, d0), (y1, m1, d1))) = options.validity {
            leaf_params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            leaf_params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        let issuer = self.issuer()?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer, &self.ca_key)
            .map_err(|e| tls_error("server certificate", e))?;
        Ok(Identity {
            chain_pem: format!("{}{}", leaf.pem(), self.ca_pem),
            chain: vec![leaf.der().clone(), self.ca_der.clone()],
            key_pem: leaf_key.serialize_pem(),
            key_der: leaf_key.serialize_der(),
        })
    }

    /// A server certificate for `names` with `defect`, for testing that a client
    /// refuses it (or, with [`CertDefect::None`], accepts it).
    pub fn issue_defective(
        &self,
        names: &[&str],
        defect: CertDefect,
    ) -> Result<Identity, SinkError> {
        match defect {
            CertDefect::None => self.issue(names),
            CertDefect::Expired => self.issue_with(&LeafOptions {
                validity: Some(((2019, 1, 1), (2020, 1, 1))),
                ..LeafOptions::for_names(names)
            }),
            CertDefect::WrongHost => self.issue(&[CertDefect::WRONG_HOST]),
            CertDefect::SelfSigned => Identity::self_signed(names),
        }
    }

    /// The CA as rcgen's issuer of leaf certificates.
    fn issuer(&self) -> Result<rcgen::Certificate, SinkError> {
        self.ca_params
            .clone()
            .self_signed(&self.ca_key)
            .map_err(|e| tls_error("CA certificate", e))
    }
}

pub(crate) fn generate() -> Result<Generated, SinkError> {
    let pki = Pki::generate("herald-sink test CA")?;
    let identity = pki.issue(&TLS_NAMES)?;
    Ok(Generated {
        ca_pem: pki.ca_pem().to_owned(),
        server: identity.server_config()?,
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
