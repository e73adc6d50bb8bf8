//! Webhook signature schemes (Standard Webhooks, ed25519, Stripe-style, Olo) with batched
//! HMAC signing and receiver-side verification.
//!
//! This crate is pure: no IO, no clock. Times are passed in (`timestamp_s`, `now_s`, Unix
//! seconds).
//!
//! * [`Signer`] holds one webhook's signing setup: a [`Scheme`] and 1..=[`SECRETS_MAX`] live
//!   secrets whose key schedules are computed once, in [`Signer::new`].
//! * [`Signer::sign_into`] signs one [`Message`] into a reusable [`SignedHeaders`] buffer.
//! * [`BatchSigner::sign_batch`] signs many `(signer, message)` pairs per call into
//!   caller-provided buffers, reusing its scratch space: nothing is allocated per message
//!   once the buffers have grown to the working size (see `BENCHES.md` for what batching
//!   does and does not buy).
//! * [`Verifier`] / [`verify`] check a received request as a receiver would: headers,
//!   timestamp tolerance, constant-time signature comparison, rotation.
//!
//! # Schemes and secret formats
//!
//! | scheme | headers | signed content | secret |
//! |---|---|---|---|
//! | [`Scheme::Standard`] | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` | `{id}.{ts}.{body}` | `whsec_` + base64 of 24..=64 bytes (the key is the decoded bytes) |
//! | [`Scheme::Ed25519`] | same, `v1a,<base64>` | `{id}.{ts}.{body}` | `whsk_` + base64 of the 32-byte RFC 8032 seed; receivers use `whpk_` + base64 of the 32-byte public key |
//! | [`Scheme::Stripe`] | `<header>: t=<ts>,v1=<hex>` | `{ts}.{body}` | any string; the key is its UTF-8 bytes (as Stripe does with its `whsec_…` strings) |
//! | [`Scheme::Olo`] | `X-Olo-Message-Id`, `X-Olo-Timestamp` (.NET ticks), `X-Olo-Signature: <base64>` | `{url}\n{body}\n{id}\n{ticks}` | any string; the key is its UTF-8 bytes |
//!
//! A 64-byte `whsk_` payload (seed followed by public key, libsodium's layout) is accepted
//! too. Olo timestamps are signed at whole seconds (`timestamp_s` × 10⁷ ticks after the
//! Unix epoch's tick count); received ticks are used verbatim.
//!
//! # Example
//!
//! ```
//! use herald_sign::{Message, Scheme, SignedHeaders, Signer, Verifier};
//!
//! let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
//! let signer = Signer::new(Scheme::Standard, &[secret])?;
//! let mut headers = SignedHeaders::new(); // reuse it for the next message
//! let msg = Message {
//!     id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
//!     timestamp_s: 1_614_265_330,
//!     url: "https://example.com/webhook",
//!     body: br#"{"test": 2432232314}"#,
//! };
//! signer.sign_into(&msg, &mut headers);
//! assert_eq!(
//!     headers.get("webhook-signature"),
//!     Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
//! );
//!
//! // The receiver's side; `now_s` comes from its clock.
//! let verifier = Verifier::new(Scheme::Standard, &[secret])?;
//! verifier.verify(&headers, msg.url, msg.body, 1_614_265_331)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Rotation
//!
//! With several live secrets every request carries one signature per secret, in the order
//! the secrets were given:
//! * standard / ed25519: space-separated, `v1,AAA v1,BBB` (as the Standard Webhooks spec says);
//! * stripe: repeated `v1=` entries, `t=…,v1=aaa,v1=bbb` (as Stripe does);
//! * olo: comma-separated, `AAA,BBB`. Olo defines no rotation format; a comma is what an
//!   HTTP stack produces when it folds repeated header fields into one value (RFC 9110
//!   §5.3), and base64 never contains one. Receivers that compare the whole value only
//!   accept requests signed with a single secret.
#![deny(unsafe_code)] // The SHA extensions' lanes (`lanes.rs`) allow it, a SAFETY comment on every block.
#![warn(missing_docs)]

mod encoding;
mod headers;
#[cfg(target_arch = "x86_64")]
mod lanes;
#[cfg(not(target_arch = "x86_64"))]
#[path = "lanes_none.rs"]
mod lanes;
mod scheme;
mod secret;

/// One message for the lanes to authenticate: `head`, `body` and `tail` one after the
/// other, under `state` (the lanes of this architecture, or none).
#[derive(Clone, Copy)]
pub(crate) struct LaneJob<'a> {
    pub(crate) state: &'a lanes::HmacState,
    pub(crate) head: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) tail: &'a [u8],
}
mod signer;
mod verify;

pub use headers::{HeaderLookup, SignedHeaders, HEADERS_MAX};
pub use scheme::{Scheme, UnknownSchemeError, HEADER_NAME_BYTES_MAX, STRIPE_HEADER_DEFAULT};
pub use secret::{
    generate_secret, public_key, SecretError, ED25519_SEED_BYTES, SECRETS_MAX, SECRET_BYTES_MAX,
    STANDARD_KEY_BYTES_MAX, STANDARD_KEY_BYTES_MIN,
};
pub use signer::{
    validate_message_id, BatchSigner, Message, MessageIdError, Signer, MESSAGE_ID_BYTES_MAX,
    SCRATCH_RETAINED_BYTES_MAX,
};
/// Whether [`BatchSigner`] hashes the HMAC tags of its `standard`, `stripe` and `olo` messages
/// several at a time on this CPU (x86-64 with the SHA extensions); otherwise every tag is
/// hashed one message at a time. The signatures are the same either way; only the CPU
/// they cost differs (`crates/herald-sign/BENCHES.md`).
pub fn hmac_lanes() -> bool {
    lanes::available()
}

pub use verify::{
    ticks_to_unix_s, unix_s_to_ticks, verify, Verifier, VerifyError, SIGNATURES_MAX,
    SIGNATURE_HEADER_BYTES_MAX, TOLERANCE_S_DEFAULT,
};
