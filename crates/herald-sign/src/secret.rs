//! Secret and key formats, parsed once into ring key schedules.

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use ring::{hmac, signature};

use crate::encoding::BASE64_LENIENT;
use crate::Scheme;

/// Most live secrets per webhook. Rotation needs two (old and new), three at a stretch;
/// every extra secret costs one more HMAC over the body per request.
pub const SECRETS_MAX: usize = 8;
/// Longest stripe/olo secret accepted, in bytes (the HMAC key is the secret's bytes; longer
/// than a SHA-256 block buys nothing).
pub const SECRET_BYTES_MAX: usize = 1024;
/// Fewest decoded bytes in a `whsec_` secret (Standard Webhooks).
pub const STANDARD_KEY_BYTES_MIN: usize = 24;
/// Most decoded bytes in a `whsec_` secret (Standard Webhooks).
pub const STANDARD_KEY_BYTES_MAX: usize = 64;
/// Bytes of an ed25519 seed (the `whsk_` payload) and of a public key (`whpk_`).
pub const ED25519_SEED_BYTES: usize = 32;

const STANDARD_PREFIX: &str = "whsec_";
const ED25519_SECRET_PREFIX: &str = "whsk_";
const ED25519_PUBLIC_PREFIX: &str = "whpk_";

/// A secret, key or scheme setting that cannot be used. Always the caller's configuration
/// error; `index` is the position of the offending secret in the list given (0-based).
/// Messages never include secret material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret was given.
    #[error("no secret given: at least one live secret is needed")]
    NoSecret,
    /// More than [`SECRETS_MAX`] secrets were given.
    #[error("{count} secrets given; at most {max} may be live at once")]
    TooMany {
        /// How many were given.
        count: usize,
        /// [`SECRETS_MAX`].
        max: usize,
    },
    /// A secret is empty.
    #[error("secret at index {index} is empty")]
    Empty {
        /// Position in the list.
        index: usize,
    },
    /// A secret is longer than [`SECRET_BYTES_MAX`].
    #[error("secret at index {index} is {bytes} bytes long; at most {max} are accepted")]
    TooLong {
        /// Position in the list.
        index: usize,
        /// Its length.
        bytes: usize,
        /// [`SECRET_BYTES_MAX`].
        max: usize,
    },
    /// A secret starts or ends with whitespace: almost always a copy-paste or file-reading
    /// accident (a trailing newline), and a classic cause of "signature verification
    /// failing".
    #[error("secret at index {index} starts or ends with whitespace (a stray newline?)")]
    Whitespace {
        /// Position in the list.
        index: usize,
    },
    /// A secret lacks its scheme's prefix.
    #[error("secret at index {index} must start with `{expected}`")]
    Prefix {
        /// Position in the list.
        index: usize,
        /// The prefix(es) expected, e.g. `whsec_`.
        expected: &'static str,
    },
    /// The text after the prefix is not base64.
    #[error("secret at index {index} is not valid base64 after its prefix")]
    Base64 {
        /// Position in the list.
        index: usize,
    },
    /// The decoded key has the wrong size.
    #[error("secret at index {index} decodes to {bytes} bytes; {expected} expected")]
    Length {
        /// Position in the list.
        index: usize,
        /// Decoded length.
        bytes: usize,
        /// What is accepted, e.g. `24..=64`.
        expected: &'static str,
    },
    /// ring rejected an ed25519 key (e.g. a 64-byte `whsk_` whose public half does not
    /// belong to its seed).
    #[error("secret at index {index} is not a valid ed25519 key: {reason}")]
    Ed25519 {
        /// Position in the list.
        index: usize,
        /// ring's description of the problem.
        reason: String,
    },
    /// The stripe header name is not an HTTP token of at most
    /// [`crate::HEADER_NAME_BYTES_MAX`] bytes.
    #[error("header name {name:?} is not a valid HTTP field name of at most 64 bytes")]
    HeaderName {
        /// The name given (truncated).
        name: String,
    },
}

/// A key schedule ready to sign with.
pub(crate) enum SigningKey {
    Hmac(HmacKey),
    Ed25519(Ed25519KeyPair),
}

/// An HMAC-SHA256 key's inner and outer padded SHA-256 states, computed once: ring's,
/// and where the CPU has the SHA extensions the same states for signing several
/// messages at once ([`crate::lanes`]).
pub(crate) struct HmacKey {
    pub(crate) ring: hmac::Key,
    pub(crate) lanes: Option<crate::lanes::HmacState>,
}

impl HmacKey {
    fn new(bytes: &[u8]) -> HmacKey {
        HmacKey {
            ring: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            lanes: crate::lanes::HmacState::new(bytes),
        }
    }
}

/// A key schedule ready to verify with.
pub(crate) enum VerifyingKey {
    Hmac(hmac::Key),
    Ed25519(signature::UnparsedPublicKey<[u8; ED25519_SEED_BYTES]>),
}

fn check_list(secrets: &[&str]) -> Result<(), SecretError> {
    if secrets.is_empty() {
        return Err(SecretError::NoSecret);
    }
    if secrets.len() > SECRETS_MAX {
        return Err(SecretError::TooMany {
            count: secrets.len(),
            max: SECRETS_MAX,
        });
    }
    Ok(())
}

fn check_text(index: usize, secret: &str) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty { index });
    }
    if secret.len() > SECRET_BYTES_MAX {
        return Err(SecretError::TooLong {
            index,
            bytes: secret.len(),
            max: SECRET_BYTES_MAX,
        });
    }
    if secret.trim() != secret {
        return Err(SecretError::Whitespace { index });
    }
    Ok(())
}

fn decode_prefixed(
    index: usize,
    secret: &str,
    prefix: &'static str,
) -> Result<Vec<u8>, SecretError> {
    check_text(index, secret)?;
    let payload = secret.strip_prefix(prefix).ok_or(SecretError::Prefix {
        index,
        expected: prefix,
    })?;
    BASE64_LENIENT
        .decode(payload)
        .map_err(|_| SecretError::Base64 { index })
}

/// The key bytes of a `standard` secret.
fn standard_key(index: usize, secret: &str) -> Result<Vec<u8>, SecretError> {
    let bytes = decode_prefixed(index, secret, STANDARD_PREFIX)?;
    if !(STANDARD_KEY_BYTES_MIN..=STANDARD_KEY_BYTES_MAX).contains(&bytes.len()) {
        return Err(SecretError::Length {
            index,
            bytes: bytes.len(),
            expected: "24..=64",
        });
    }
    Ok(bytes)
}

/// The key bytes of a `stripe` or `olo` secret: its text.
fn utf8_key(index: usize, secret: &str) -> Result<&[u8], SecretError> {
    check_text(index, secret)?;
    Ok(secret.as_bytes())
}

/// `whsk_` + base64 of the 32-byte seed; the 64-byte seed‖public-key form that libsodium
/// calls a secret key is accepted too, and its public half must match the seed.
fn ed25519_pair(index: usize, secret: &str) -> Result<Ed25519KeyPair, SecretError> {
    let bytes = decode_prefixed(index, secret, ED25519_SECRET_PREFIX)?;
    let pair = match bytes.len() {
        ED25519_SEED_BYTES => Ed25519KeyPair::from_seed_unchecked(&bytes),
        64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
        other => {
            return Err(SecretError::Length {
                index,
                bytes: other,
                expected: "32 (seed) or 64 (seed and public key)",
            })
        }
    };
    pair.map_err(|rejected| SecretError::Ed25519 {
        index,
        reason: rejected.to_string(),
    })
}

pub(crate) fn signing_keys(
    scheme: &Scheme,
    secrets: &[&str],
) -> Result<Vec<SigningKey>, SecretError> {
    scheme.check()?;
    check_list(secrets)?;
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| match scheme {
            Scheme::Standard => {
                standard_key(index, secret).map(|k| SigningKey::Hmac(HmacKey::new(&k)))
            }
            Scheme::Stripe { .. } | Scheme::Olo => {
                utf8_key(index, secret).map(|k| SigningKey::Hmac(HmacKey::new(k)))
            }
            Scheme::Ed25519 => ed25519_pair(index, secret).map(SigningKey::Ed25519),
        })
        .collect()
}

/// For ed25519, receivers pass `whpk_` public keys; a `whsk_` signing key is accepted too
/// (its public key is derived), which helps when testing both ends with one key.
pub(crate) fn verifying_keys(
    scheme: &Scheme,
    keys: &[&str],
) -> Result<Vec<VerifyingKey>, SecretError> {
    scheme.check()?;
    check_list(keys)?;
    keys.iter()
        .enumerate()
        .map(|(index, key)| match scheme {
            Scheme::Standard => standard_key(index, key).map(|k| VerifyingKey::Hmac(hmac_key(&k))),
            Scheme::Stripe { .. } | Scheme::Olo => {
                utf8_key(index, key).map(|k| VerifyingKey::Hmac(hmac_key(k)))
            }
            Scheme::Ed25519 => ed25519_public(index, key).map(|public| {
                VerifyingKey::Ed25519(signature::UnparsedPublicKey::new(
                    &signature::ED25519,
                    public,
                ))
            }),
        })
        .collect()
}

fn hmac_key(bytes: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, bytes)
}

fn ed25519_public(index: usize, key: &str) -> Result<[u8; ED25519_SEED_BYTES], SecretError> {
    if key.starts_with(ED25519_SECRET_PREFIX) {
        let pair = ed25519_pair(index, key)?;
        let mut public = [0u8; ED25519_SEED_BYTES];
        public.copy_from_slice(pair.public_key().as_ref());
        return Ok(public);
    }
    let bytes =
        decode_prefixed(index, key, ED25519_PUBLIC_PREFIX).map_err(|error| match error {
            SecretError::Prefix { index, .. } => SecretError::Prefix {
                index,
                expected: "whpk_ (or whsk_)",
            },
            other => other,
        })?;
    <[u8; ED25519_SEED_BYTES]>::try_from(bytes.as_slice()).map_err(|_| SecretError::Length {
        index,
        bytes: bytes.len(),
        expected: "32",
    })
}

/// Makes a new secret for `scheme` from 32 random bytes supplied by the caller (this crate
/// reads no randomness itself):
/// * standard: `whsec_` + base64 of the 32 bytes;
/// * ed25519: `whsk_` + base64 of the 32 bytes as the seed (see [`public_key`]);
/// * stripe: `whsec_` + hex of the 32 bytes (the key is the whole string, as with Stripe);
/// * olo: hex of the 32 bytes.
pub fn generate_secret(scheme: &Scheme, random: &[u8; 32]) -> String {
    match scheme {
        Scheme::Standard => format!(
            "{STANDARD_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(random)
        ),
        Scheme::Ed25519 => format!(
            "{ED25519_SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(random)
        ),
        Scheme::Stripe { .. } => format!("{STANDARD_PREFIX}{}", hex::encode(random)),
        Scheme::Olo => hex::encode(random),
    }
}

/// The `whpk_` public key of an ed25519 `whsk_` signing key: what the webhook's owner
/// gives to receivers.
pub fn public_key(signing_key: &str) -> Result<String, SecretError> {
    let pair = ed25519_pair(0, signing_key)?;
    Ok(format!(
        "{ED25519_PUBLIC_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref())
    ))
}
