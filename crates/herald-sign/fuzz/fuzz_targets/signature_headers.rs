//! Signature header parsing, every scheme: the `Verifier` reads fuzzer-made
//! `webhook-*`, `Stripe-Signature` (the header `herald-api` parses for inbound
//! `stripe` sources, with the same `Verifier`) and `X-Olo-*` headers.
//!
//! Input: one control byte, then up to nine fields separated by `\n`: webhook-id,
//! webhook-timestamp, webhook-signature, Stripe-Signature, X-Olo-Message-Id,
//! X-Olo-Timestamp, X-Olo-Signature, the URL, and the body (the rest).
//!
//! Oracles:
//! * no panic, for any header text, tolerance and clock;
//! * no header set verifies under two unrelated keys (that would be a forgery);
//! * what `Signer` makes for the same id, URL, body and time verifies (sign/verify
//!   round trip), and stops verifying once the body changes.
#![no_main]

use herald_sign::{
    generate_secret, public_key, validate_message_id, Message, Scheme, SignedHeaders, Signer,
    Verifier,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const NAMES: [&str; 7] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Stripe-Signature",
    "X-Olo-Message-Id",
    "X-Olo-Timestamp",
    "X-Olo-Signature",
];

/// (scheme, the signer's secret, the verifier's key) for two unrelated key sets, made
/// once per run.
fn setups(set: usize) -> &'static [(Scheme, String, String)] {
    static SETS: OnceLock<[Vec<(Scheme, String, String)>; 2]> = OnceLock::new();
    &SETS.get_or_init(|| [make_setups(0), make_setups(1)])[set]
}

fn make_setups(set: u8) -> Vec<(Scheme, String, String)> {
    let random = [set.wrapping_mul(37).wrapping_add(1); 32];
    let ed_secret = generate_secret(&Scheme::Ed25519, &random);
    let ed_public = public_key(&ed_secret).expect("generated ed25519 key");
    let standard = generate_secret(&Scheme::Standard, &random);
    let stripe = generate_secret(&Scheme::stripe(), &random);
    let olo = generate_secret(&Scheme::Olo, &random);
    vec![
        (Scheme::Standard, standard.clone(), standard),
        (Scheme::Ed25519, ed_secret, ed_public),
        (Scheme::stripe(), stripe.clone(), stripe),
        (Scheme::Olo, olo.clone(), olo),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.splitn(9, |&b| b == b'\n');
    let mut values: Vec<String> = Vec::with_capacity(NAMES.len());
    for _ in NAMES {
        values.push(String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned());
    }
    let url = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let body = fields.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = NAMES
        .iter()
        .zip(&values)
        .map(|(name, value)| (*name, value.as_str()))
        .collect();

    let tolerance_s = match control & 3 {
        0 => 300,
        1 => 0,
        2 => u64::MAX,
        _ => u64::from(control),
    };
    let now_s = match (control >> 2) & 3 {
        0 => 1_700_000_000,
        1 => i64::MAX,
        2 => i64::MIN,
        _ => values[1].trim().parse().unwrap_or(0),
    };

    let ours = setups(0);
    let theirs = setups(1);
    for ((scheme, secret, key), (_, _, other_key)) in ours.iter().zip(theirs) {
        let verifier = Verifier::new(scheme.clone(), &[key.as_str()])
            .expect("valid key")
            .with_tolerance_s(tolerance_s);
        let other = Verifier::new(scheme.clone(), &[other_key.as_str()])
            .expect("valid key")
            .with_tolerance_s(tolerance_s);
        let mine = verifier.verify(&headers, &url, body, now_s);
        let foreign = other.verify(&headers, &url, body, now_s);
        assert!(
            mine.is_err() || foreign.is_err(),
            "{} headers verified under two unrelated keys: {headers:?}",
            scheme.name()
        );

        // Round trip with the fuzzer's id, URL, body and time.
        let id = values[0].as_str();
        let Ok(timestamp_s) = values[1].trim().parse::<i64>() else {
            continue;
        };
        if validate_message_id(id).is_err() || !(0..=253_402_300_799).contains(&timestamp_s) {
            continue;
        }
        let signer = Signer::new(scheme.clone(), &[secret.as_str()]).expect("valid secret");
        let mut signed = SignedHeaders::new();
        let message = Message {
            id,
            timestamp_s,
            url: &url,
            body,
        };
        signer.sign_into(&message, &mut signed);
        let fresh = Verifier::new(scheme.clone(), &[key.as_str()]).expect("valid key");
        if let Err(error) = fresh.verify(&signed, &url, body, timestamp_s) {
            panic!("{} did not verify its own signature: {error}; {signed:?}", scheme.name());
        }
        let mut changed = body.to_vec();
        changed.push(b'!');
        assert!(
            fresh.verify(&signed, &url, &changed, timestamp_s).is_err(),
            "{} verified a changed body",
            scheme.name()
        );
    }
});
