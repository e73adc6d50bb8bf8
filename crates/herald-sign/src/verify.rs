//! Verification, as a receiver does it.

use std::fmt;

use base64::Engine as _;
use ring::hmac;
use subtle::ConstantTimeEq as _;

use crate::encoding::{parse_digits, BASE64_LENIENT};
use crate::secret::{verifying_keys, VerifyingKey};
use crate::signer::{olo_tag, standard_content, standard_tag, stripe_tag};
use crate::{HeaderLookup, Scheme, SecretError};

pub use crate::encoding::{ticks_to_unix_s, unix_s_to_ticks};

/// Default allowed difference between a request's timestamp and the receiver's clock, in
/// either direction (Standard Webhooks recommends five minutes).
pub const TOLERANCE_S_DEFAULT: u64 = 300;
/// Longest header value parsed. Eight rotated ed25519 signatures take about 750 bytes;
/// anything far beyond is not from a conforming sender and is refused before any work.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 4096;
/// Most signatures examined in one header; each costs a comparison per key.
pub const SIGNATURES_MAX: usize = 16;

/// Why a request did not verify. The first three are the sender's (or a proxy's) fault;
/// [`VerifyError::NoMatchingSignature`] is a wrong secret or a changed body, id, timestamp
/// or URL; [`VerifyError::Key`] is the receiver's configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {name}")]
    MissingHeader {
        /// The header's name.
        name: String,
    },
    /// A header is present but cannot be parsed.
    #[error("malformed header {name}: {reason}")]
    MalformedHeader {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The request's timestamp is further from `now_s` than the tolerance allows.
    #[error("{}", TimestampMessage { skew_s: *skew_s, tolerance_s: *tolerance_s })]
    TimestampOutsideTolerance {
        /// `now_s - timestamp`: positive when the request is old, negative when it claims to
        /// come from the future (a sender's clock running ahead).
        skew_s: i64,
        /// The tolerance in force.
        tolerance_s: u64,
    },
    /// No signature in the request matches any key.
    #[error("no matching signature: none of the {signatures} signature(s) present matches any of the {keys} key(s) (wrong secret, or a body/URL that changed after signing?)")]
    NoMatchingSignature {
        /// Signatures of this scheme's version found in the header.
        signatures: usize,
        /// Keys tried.
        keys: usize,
    },
    /// A key given to [`verify`] cannot be used.
    #[error("unusable key: {0}")]
    Key(#[from] SecretError),
}

struct TimestampMessage {
    skew_s: i64,
    tolerance_s: u64,
}

impl fmt::Display for TimestampMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (amount, direction) = if self.skew_s >= 0 {
            (self.skew_s.unsigned_abs(), "old")
        } else {
            (self.skew_s.unsigned_abs(), "in the future")
        };
        write!(
            f,
            "timestamp outside tolerance: {amount} s {direction}, {} s beyond the {} s allowed (clock skew or a replay?)",
            amount.saturating_sub(self.tolerance_s),
            self.tolerance_s
        )
    }
}

/// A receiver's verification setup: scheme, 1..=[`crate::SECRETS_MAX`] keys (any may
/// match), and the timestamp tolerance.
pub struct Verifier {
    scheme: Scheme,
    keys: Box<[VerifyingKey]>,
    tolerance_s: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .field("tolerance_s", &self.tolerance_s)
            .finish()
    }
}

impl Verifier {
    /// Parses the keys of `scheme`: the same secrets as for signing for the HMAC schemes;
    /// `whpk_` public keys (or `whsk_` signing keys) for ed25519. Tolerance is
    /// [`TOLERANCE_S_DEFAULT`].
    pub fn new(scheme: Scheme, keys: &[&str]) -> Result<Verifier, SecretError> {
        let keys = verifying_keys(&scheme, keys)?.into_boxed_slice();
        Ok(Verifier {
            scheme,
            keys,
            tolerance_s: TOLERANCE_S_DEFAULT,
        })
    }

    /// Sets the allowed timestamp difference, in seconds, in either direction.
    pub fn with_tolerance_s(mut self, tolerance_s: u64) -> Verifier {
        self.tolerance_s = tolerance_s;
        self
    }

    /// Checks a received request: required headers present and well-formed, timestamp
    /// within tolerance of `now_s` (Unix seconds), and at least one signature made by one
    /// of the keys over `body` (and `url`, for olo: the URL exactly as the sender used it).
    pub fn verify<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        url: &str,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), VerifyError> {
        match &self.scheme {
            Scheme::Standard | Scheme::Ed25519 => self.verify_standard(headers, body, now_s),
            Scheme::Stripe { header } => self.verify_stripe(headers, header, body, now_s),
            Scheme::Olo => self.verify_olo(headers, url, body, now_s),
        }
    }

    fn check_time(&self, timestamp_s: i64, now_s: i64) -> Result<(), VerifyError> {
        let skew_s = i128::from(now_s) - i128::from(timestamp_s);
        if skew_s.unsigned_abs() > u128::from(self.tolerance_s) {
            return Err(VerifyError::TimestampOutsideTolerance {
                skew_s: i64::try_from(skew_s).unwrap_or(if skew_s > 0 {
                    i64::MAX
                } else {
                    i64::MIN
                }),
                tolerance_s: self.tolerance_s,
            });
        }
        Ok(())
    }

    fn hmac_keys(&self) -> impl Iterator<Item = &hmac::Key> {
        self.keys.iter().filter_map(|key| match key {
            VerifyingKey::Hmac(key) => Some(key),
            VerifyingKey::Ed25519(_) => None,
        })
    }

    fn verify_standard<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), VerifyError> {
        let id = required(headers, "webhook-id")?;
        let timestamp = required(headers, "webhook-timestamp")?;
        let signature_header = required(headers, "webhook-signature")?;
        let timestamp_s = parse_timestamp("webhook-timestamp", timestamp)?;
        self.check_time(timestamp_s, now_s)?;

        let version = if self.scheme == Scheme::Ed25519 {
            "v1a"
        } else {
            "v1"
        };
        let mut signatures = Vec::new();
        for item in signature_header.split(' ').filter(|item| !item.is_empty()) {
            let Some((item_version, encoded)) = item.split_once(',') else {
                return Err(malformed(
                    "webhook-signature",
                    "an entry lacks the `version,` prefix",
                ));
            };
            // Other versions (e.g. `v1a` next to `v1`) are skipped, as the spec says.
            if item_version != version {
                continue;
            }
            let decoded = BASE64_LENIENT
                .decode(encoded)
                .map_err(|_| malformed("webhook-signature", "a signature is not base64"))?;
            push_bounded(&mut signatures, decoded, "webhook-signature")?;
        }
        if signatures.is_empty() {
            return Err(if version == "v1a" {
                malformed("webhook-signature", "no v1a signature present")
            } else {
                malformed("webhook-signature", "no v1 signature present")
            });
        }

        if self.scheme != Scheme::Ed25519 {
            return self.hmac_outcome(&signatures, |key| {
                standard_tag(key, id, timestamp.as_bytes(), body)
            });
        }
        let mut content = Vec::new();
        standard_content(&mut content, id, timestamp.as_bytes(), body);
        let matched = self.keys.iter().any(|key| match key {
            VerifyingKey::Ed25519(public) => signatures
                .iter()
                .any(|signature| public.verify(&content, signature).is_ok()),
            VerifyingKey::Hmac(_) => false,
        });
        self.outcome(matched, signatures.len())
    }

    fn verify_stripe<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        name: &str,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), VerifyError> {
        let value = required(headers, name)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in value.split(',').map(str::trim) {
            let Some((key, text)) = item.split_once('=') else {
                return Err(malformed(name, "an entry is not `key=value`"));
            };
            match key {
                "t" if timestamp.is_some() => return Err(malformed(name, "`t=` appears twice")),
                "t" => timestamp = Some(text),
                "v1" => {
                    let decoded = hex::decode(text)
                        .map_err(|_| malformed(name, "a v1 signature is not hex"))?;
                    push_bounded(&mut signatures, decoded, name)?;
                }
                // Other schemes (Stripe's test-mode `v0`) are skipped, as Stripe does.
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or_else(|| malformed(name, "no `t=` timestamp"))?;
        let timestamp_s = parse_timestamp(name, timestamp)?;
        self.check_time(timestamp_s, now_s)?;
        if signatures.is_empty() {
            return Err(malformed(name, "no v1 signature present"));
        }
        self.hmac_outcome(&signatures, |key| {
            stripe_tag(key, timestamp.as_bytes(), body)
        })
    }

    fn verify_olo<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        url: &str,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), VerifyError> {
        let id = required(headers, "X-Olo-Message-Id")?;
        let ticks_text = required(headers, "X-Olo-Timestamp")?;
        let value = required(headers, "X-Olo-Signature")?;
        let ticks = parse_timestamp("X-Olo-Timestamp", ticks_text)?;
        self.check_time(ticks_to_unix_s(ticks), now_s)?;
        let mut signatures = Vec::new();
        for item in value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let decoded = BASE64_LENIENT
                .decode(item)
                .map_err(|_| malformed("X-Olo-Signature", "a signature is not base64"))?;
            push_bounded(&mut signatures, decoded, "X-Olo-Signature")?;
        }
        if signatures.is_empty() {
            return Err(malformed("X-Olo-Signature", "empty"));
        }
        self.hmac_outcome(&signatures, |key| {
            olo_tag(key, url, body, id, ticks_text.as_bytes())
        })
    }

    /// Accepts when the tag of any HMAC key equals any received signature.
    fn hmac_outcome(
        &self,
        signatures: &[Vec<u8>],
        tag: impl Fn(&hmac::Key) -> hmac::Tag,
    ) -> Result<(), VerifyError> {
        let matched = self
            .hmac_keys()
            .any(|key| any_equal(tag(key).as_ref(), signatures));
        self.outcome(matched, signatures.len())
    }

    fn outcome(&self, matched: bool, signatures: usize) -> Result<(), VerifyError> {
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature {
                signatures,
                keys: self.keys.len(),
            })
        }
    }
}

/// Verifies a received request in one call; see [`Verifier::verify`]. Receivers checking
/// many requests should build a [`Verifier`] once instead.
pub fn verify<H: HeaderLookup + ?Sized>(
    scheme: &Scheme,
    keys: &[&str],
    headers: &H,
    url: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: u64,
) -> Result<(), VerifyError> {
    Verifier::new(scheme.clone(), keys)?
        .with_tolerance_s(tolerance_s)
        .verify(headers, url, body, now_s)
}

fn malformed(name: &str, reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        name: name.to_string(),
        reason,
    }
}

fn required<'h, H: HeaderLookup + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Result<&'h str, VerifyError> {
    let value = headers
        .header(name)
        .ok_or_else(|| VerifyError::MissingHeader {
            name: name.to_string(),
        })?;
    if value.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(malformed(name, "longer than 4096 bytes"));
    }
    Ok(value.trim())
}

// `MalformedHeader::reason` is `&'static str`, so the two reasons above and below quote the
// limits literally; this keeps them from drifting apart.
const _: () = assert!(
    SIGNATURE_HEADER_BYTES_MAX == 4096 && SIGNATURES_MAX == 16,
    "update the MalformedHeader reasons that quote these limits"
);

fn parse_timestamp(name: &str, text: &str) -> Result<i64, VerifyError> {
    parse_digits(text).ok_or_else(|| malformed(name, "not a non-negative decimal integer"))
}

fn push_bounded(
    signatures: &mut Vec<Vec<u8>>,
    signature: Vec<u8>,
    name: &str,
) -> Result<(), VerifyError> {
    if signatures.len() == SIGNATURES_MAX {
        return Err(malformed(name, "more than 16 signatures"));
    }
    signatures.push(signature);
    Ok(())
}

/// Constant-time in the tag's contents (length differences are public: tags have a fixed
/// size).
fn any_equal(tag: &[u8], signatures: &[Vec<u8>]) -> bool {
    // Compare against every signature without early exit, so timing does not reveal which
    // position matched.
    signatures
        .iter()
        .fold(subtle::Choice::from(0), |found, signature| {
            found | tag.ct_eq(signature)
        })
        .into()
}
