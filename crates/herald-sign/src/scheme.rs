//! Signature schemes.

use std::fmt;
use std::str::FromStr;

/// Default header of [`Scheme::Stripe`].
pub const STRIPE_HEADER_DEFAULT: &str = "X-Olympus-Signature";

/// Longest configurable header name: real names are short, and the name is copied into
/// every signed request.
pub const HEADER_NAME_BYTES_MAX: usize = 64;

/// How a webhook's requests are signed (chosen per webhook).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Standard Webhooks, HMAC-SHA256: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64>`; secrets `whsec_<base64>`.
    #[default]
    Standard,
    /// Standard Webhooks, asymmetric: as [`Scheme::Standard`] with `v1a,<base64 ed25519>`;
    /// signing keys `whsk_<base64 seed>`, verifying keys `whpk_<base64 public key>`.
    Ed25519,
    /// Stripe-style `t=<unix>,v1=<hex HMAC-SHA256 of "{ts}.{body}">` in one header.
    Stripe {
        /// The header carrying the signature, e.g. [`STRIPE_HEADER_DEFAULT`] or
        /// `Crumb-Signature`. Must be an HTTP token of at most [`HEADER_NAME_BYTES_MAX`]
        /// bytes (checked by [`crate::Signer::new`] and [`crate::Verifier::new`]).
        header: String,
    },
    /// Olo: `X-Olo-Message-Id`, `X-Olo-Timestamp` (.NET ticks), `X-Olo-Signature` (base64
    /// HMAC-SHA256 of `"{url}\n{body}\n{id}\n{ticks}"`, keyed with the UTF-8 secret).
    Olo,
}

impl Scheme {
    /// [`Scheme::Stripe`] with the default header, [`STRIPE_HEADER_DEFAULT`].
    pub fn stripe() -> Scheme {
        Scheme::Stripe {
            header: STRIPE_HEADER_DEFAULT.to_string(),
        }
    }

    /// The scheme's name as accepted by [`Scheme::from_str`]: `standard`, `ed25519`,
    /// `stripe` or `olo`.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Ed25519 => "ed25519",
            Scheme::Stripe { .. } => "stripe",
            Scheme::Olo => "olo",
        }
    }

    /// Checks what [`Scheme`] cannot enforce by type: the stripe header name.
    pub(crate) fn check(&self) -> Result<(), crate::SecretError> {
        match self {
            Scheme::Stripe { header } if !is_header_name(header) => {
                Err(crate::SecretError::HeaderName {
                    name: header.chars().take(HEADER_NAME_BYTES_MAX + 1).collect(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheme name that is not one of `standard`, `ed25519`, `stripe`, `olo` (caller's
/// configuration error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature scheme {name:?}: expected standard, ed25519, stripe or olo")]
pub struct UnknownSchemeError {
    /// The name given (at most 64 characters of it).
    pub name: String,
}

impl FromStr for Scheme {
    type Err = UnknownSchemeError;

    /// Parses a scheme name, case-insensitively; `stripe` gets the default header.
    fn from_str(name: &str) -> Result<Scheme, UnknownSchemeError> {
        let known = [
            Scheme::Standard,
            Scheme::Ed25519,
            Scheme::stripe(),
            Scheme::Olo,
        ];
        known
            .into_iter()
            .find(|scheme| scheme.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownSchemeError {
                name: name.chars().take(64).collect(),
            })
    }
}

/// RFC 9110 `token`: what an HTTP field name may be made of.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= HEADER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scheme in [
            Scheme::Standard,
            Scheme::Ed25519,
            Scheme::stripe(),
            Scheme::Olo,
        ] {
            assert_eq!(scheme.name().parse::<Scheme>(), Ok(scheme.clone()));
            assert_eq!(scheme.to_string(), scheme.name());
        }
        assert_eq!("OLO".parse::<Scheme>(), Ok(Scheme::Olo));
        assert!("hmac".parse::<Scheme>().is_err());
        assert_eq!(Scheme::default(), Scheme::Standard);
    }

    #[test]
    fn header_names() {
        let cases: &[(&str, bool)] = &[
            ("X-Olympus-Signature", true),
            ("Crumb-Signature", true),
            ("", false),
            ("Bad Name", false),
            ("Bad:Name", false),
            ("Bad\r\nName", false),
            (&"a".repeat(HEADER_NAME_BYTES_MAX), true),
            (&"a".repeat(HEADER_NAME_BYTES_MAX + 1), false),
        ];
        for (name, ok) in cases {
            let scheme = Scheme::Stripe {
                header: name.to_string(),
            };
            assert_eq!(scheme.check().is_ok(), *ok, "{name:?}");
        }
    }
}
