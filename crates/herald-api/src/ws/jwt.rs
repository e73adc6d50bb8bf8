//! JWTs for the event stream: HS256 (`ws.jwt_secret`) or RS256
//! (`ws.jwt_public_key_pem`), `exp` required and checked, the tenant read from the
//! configured claim (`ws.tenant_claim`).

use herald::TenantId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::config::WsConfig;

/// Largest token examined; real ones are a few hundred bytes.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Clock difference tolerated on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 30;

/// Parses an RSA public key given as PEM text or as the path of a PEM file.
pub fn rsa_key(pem_or_path: &str) -> Result<DecodingKey, String> {
    let pem = if pem_or_path.contains("-----BEGIN") {
        pem_or_path.as_bytes().to_vec()
    } else {
        std::fs::read(pem_or_path)
            .map_err(|e| format!("ws.jwt_public_key_pem: cannot read {pem_or_path}: {e}"))?
    };
    DecodingKey::from_rsa_pem(&pem).map_err(|e| {
        format!("ws.jwt_public_key_pem: not an RSA public key in PEM (BEGIN PUBLIC KEY): {e}")
    })
}

/// Checks stream JWTs.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    tenant_claim: String,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("tenant_claim", &self.tenant_claim)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl JwtVerifier {
    /// The verifier `[ws]` describes, or `None` when no JWT key is configured.
    pub fn from_config(config: &WsConfig) -> Result<Option<JwtVerifier>, String> {
        let hs256 = config
            .jwt_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes()));
        let rs256 = config
            .jwt_public_key_pem
            .as_deref()
            .map(rsa_key)
            .transpose()?;
        if hs256.is_none() && rs256.is_none() {
            return Ok(None);
        }
        Ok(Some(JwtVerifier {
            hs256,
            rs256,
            tenant_claim: config.tenant_claim.clone(),
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
        }))
    }

    /// The tenant a valid token speaks for; otherwise why it is refused.
    pub fn tenant(&self, token: &str) -> Result<TenantId, String> {
        self.verify(token).map(|verified| verified.tenant)
    }

    /// The tenant a valid token speaks for and when it expires; otherwise why it is
    /// refused.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("the token is longer than {TOKEN_BYTES_MAX} bytes"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .as_ref()
                .ok_or("HS256 tokens are not accepted here (no ws.jwt_secret)")?,
            Algorithm::RS256 => self
                .rs256
                .as_ref()
                .ok_or("RS256 tokens are not accepted here (no ws.jwt_public_key_pem)")?,
            other => {
                return Err(format!(
                    "JWT algorithm {other:?} is not accepted; use HS256 or RS256"
                ))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                "the JWT has expired (exp is past)".to_string()
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "the JWT's signature does not verify".to_string()
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                "the JWT is not for this server (its aud does not name ws.jwt_audience)".to_string()
            }
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                "the JWT's iss is not ws.jwt_issuer".to_string()
            }
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                format!("the JWT has no {claim} claim, which this server requires")
            }
            _ => format!("the JWT is not valid: {e}"),
        })?;
        let tenant = data
            .claims
            .get(&self.tenant_claim)
            .and_then(|value| value.as_str())
            .ok_or_else(|| format!("the JWT has no string claim {:?}", self.tenant_claim))?;
        let tenant =
            TenantId::parse(tenant).map_err(|e| format!("claim {:?}: {e}", self.tenant_claim))?;
        // Required and checked above; a fractional one counts from its whole seconds.
        let expires_at_s = data
            .claims
            .get("exp")
            .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
            .ok_or("the JWT's exp is not a number of seconds")?;
        Ok(Verified {
            tenant,
            expires_at_s,
        })
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The tenant it speaks for.
    pub tenant: TenantId,
    /// Its `exp` (Unix seconds): a stream opened with it is closed once this (and
    /// [`LEEWAY_S`]) is past.
    pub expires_at_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn now_s() -> u64 {
        crate::time::now_ms() / 1000
    }

    fn verifier() -> JwtVerifier {
        let config = WsConfig {
            jwt_secret: Some(crate::config::Secret::new(SECRET)),
            tenant_claim: "org".to_string(),
            ..WsConfig::default()
        };
        JwtVerifier::from_config(&config).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens_name_their_tenant_in_the_configured_claim() {
        let verifier = verifier();
        let exp = now_s() + 600;
        let good = token(serde_json::json!({"org": "acme", "exp": exp}), SECRET);
        assert_eq!(verifier.tenant(&good).unwrap().as_str(), "acme");
        let cases = [
            (
                token(
                    serde_json::json!({"org": "acme", "exp": now_s() - 3600}),
                    SECRET,
                ),
                "expired",
            ),
            (
                token(
                    serde_json::json!({"org": "acme", "exp": exp}),
                    "another-secret-another-secret-xx",
                ),
                "signature",
            ),
            (token(serde_json::json!({"org": "acme"}), SECRET), "exp"),
            (
                token(serde_json::json!({"tenant_id": "acme", "exp": exp}), SECRET),
                "no string claim \"org\"",
            ),
            (
                token(
                    serde_json::json!({"org": "not a tenant!", "exp": exp}),
                    SECRET,
                ),
                "claim \"org\"",
            ),
            ("not.a.jwt".to_string(), "not a valid JWT"),
        ];
        for (token, reason) in cases {
            let refused = verifier.tenant(&token).unwrap_err();
            assert!(refused.contains(reason), "{reason}: {refused}");
        }
    }

    #[test]
    fn an_audience_and_an_issuer_when_configured_are_required() {
        let config = WsConfig {
            jwt_secret: Some(crate::config::Secret::new(SECRET)),
            jwt_audience: Some("herald-stream".to_string()),
            jwt_issuer: Some("https://id.example".to_string()),
            ..WsConfig::default()
        };
        let verifier = JwtVerifier::from_config(&config).unwrap().unwrap();
        let exp = now_s() + 600;
        let claims = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"tenant_id": "acme", "exp": exp});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            token(claims, SECRET)
        };
        let iss = "https://id.example";
        for good in [
            claims(serde_json::json!({"aud": "herald-stream", "iss": iss})),
            claims(serde_json::json!({"aud": ["billing", "herald-stream"], "iss": iss})),
        ] {
            assert_eq!(verifier.tenant(&good).unwrap().as_str(), "acme");
        }
        let cases = [
            (
                claims(serde_json::json!({"aud": "billing", "iss": iss})),
                "not for this server",
            ),
            (claims(serde_json::json!({"iss": iss})), "no aud claim"),
            (
                claims(serde_json::json!({"aud": "herald-stream", "iss": "https://other"})),
                "iss is not",
            ),
            (
                claims(serde_json::json!({"aud": "herald-stream"})),
                "no iss claim",
            ),
        ];
        for (token, reason) in cases {
            let refused = verifier.tenant(&token).unwrap_err();
            assert!(refused.contains(reason), "{reason}: {refused}");
        }
        // Without them configured, neither is looked at (as before).
        let plain = verifier_with_claim("tenant_id");
        let any = claims(serde_json::json!({"aud": "billing", "iss": "https://other"}));
        assert_eq!(plain.tenant(&any).unwrap().as_str(), "acme");
    }

    fn verifier_with_claim(claim: &str) -> JwtVerifier {
        let config = WsConfig {
            jwt_secret: Some(crate::config::Secret::new(SECRET)),
            tenant_claim: claim.to_string(),
            ..WsConfig::default()
        };
        JwtVerifier::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn an_algorithm_without_a_configured_key_is_refused() {
        let config = WsConfig {
            jwt_secret: Some(crate::config::Secret::new(SECRET)),
            ..WsConfig::default()
        };
        let verifier = JwtVerifier::from_config(&config).unwrap().unwrap();
        let header = Header::new(Algorithm::HS384);
        let claims = serde_json::json!({"tenant_id": "acme", "exp": now_s() + 60});
        let hs384 = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(verifier.tenant(&hs384).unwrap_err().contains("HS384"));
        assert!(JwtVerifier::from_config(&WsConfig::default())
            .unwrap()
            .is_none());
        assert!(rsa_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(rsa_key("/nonexistent/key.pem").is_err_and(|e| e.contains("cannot read")));
    }
}
