//! Sign → verify for every scheme, tampering, expiry, rotation, malformed and missing
//! headers.
use herald_sign::{
    generate_secret, public_key, BatchSigner, Message, Scheme, SignedHeaders, Signer, Verifier,
    VerifyError, SIGNATURES_MAX, SIGNATURE_HEADER_BYTES_MAX,
};
use proptest::prelude::*;

const NOW_S: i64 = 1_700_000_000;
const URL: &str = "https://hooks.example.com/olympus?tenant=7";

/// A signing secret and the matching verifying key for each scheme.
fn keys(scheme: &Scheme, seed: u8) -> (String, String) {
    let secret = generate_secret(scheme, &[seed; 32]);
    let verifying = match scheme {
        Scheme::Ed25519 => public_key(&secret).unwrap(),
        _ => secret.clone(),
    };
    (secret, verifying)
}

fn schemes() -> Vec<Scheme> {
    vec![
        Scheme::Standard,
        Scheme::Ed25519,
        Scheme::stripe(),
        Scheme::Stripe {
            header: "Crumb-Signature".into(),
        },
        Scheme::Olo,
    ]
}

fn owned(headers: &SignedHeaders) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn signed(scheme: &Scheme, secrets: &[&str], msg: &Message<'_>) -> Vec<(String, String)> {
    let mut out = SignedHeaders::new();
    Signer::new(scheme.clone(), secrets)
        .unwrap()
        .sign_into(msg, &mut out);
    owned(&out)
}

fn set(headers: &mut [(String, String)], name: &str, value: String) {
    let slot = headers
        .iter_mut()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .unwrap();
    slot.1 = value;
}

fn signature_header(scheme: &Scheme) -> &str {
    match scheme {
        Scheme::Standard | Scheme::Ed25519 => "webhook-signature",
        Scheme::Stripe { header } => header,
        Scheme::Olo => "X-Olo-Signature",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_then_verify_round_trips(
        scheme_index in 0usize..5,
        seeds in prop::collection::vec(any::<u8>(), 1..4),
        pick in any::<prop::sample::Index>(),
        id in "[A-Za-z0-9_-]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..2048),
        skew_s in -300i64..=300,
    ) {
        let scheme = &schemes()[scheme_index];
        let pairs: Vec<(String, String)> = seeds.iter().map(|&seed| keys(scheme, seed)).collect();
        let secrets: Vec<&str> = pairs.iter().map(|(secret, _)| secret.as_str()).collect();
        let msg = Message { id: &id, timestamp_s: NOW_S, url: URL, body: &body };
        let headers = signed(scheme, &secrets, &msg);

        // Any single live key verifies (rotation), at any skew within tolerance.
        let (_, verifying) = pick.get(&pairs);
        let verifier = Verifier::new(scheme.clone(), &[verifying.as_str()]).unwrap();
        prop_assert_eq!(verifier.verify(&headers, URL, &body, NOW_S + skew_s), Ok(()));

        // A key that was not used does not.
        let (_, stranger) = keys(scheme, 0xEE);
        if !seeds.contains(&0xEE) {
            let verifier = Verifier::new(scheme.clone(), &[stranger.as_str()]).unwrap();
            let is_no_match = matches!(
                verifier.verify(&headers, URL, &body, NOW_S),
                Err(VerifyError::NoMatchingSignature { .. })
            );
            prop_assert!(is_no_match);
        }
    }

    #[test]
    fn any_body_change_is_detected(
        scheme_index in 0usize..5,
        body in prop::collection::vec(any::<u8>(), 1..512),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let scheme = &schemes()[scheme_index];
        let (secret, verifying) = keys(scheme, 1);
        let msg = Message { id: "msg_1", timestamp_s: NOW_S, url: URL, body: &body };
        let headers = signed(scheme, &[&secret], &msg);
        let mut tampered = body.clone();
        tampered[flip.index(body.len())] ^= 1 << bit;
        let verifier = Verifier::new(scheme.clone(), &[verifying.as_str()]).unwrap();
        let is_no_match = matches!(
            verifier.verify(&headers, URL, &tampered, NOW_S),
            Err(VerifyError::NoMatchingSignature { .. })
        );
        prop_assert!(is_no_match);
    }

    #[test]
    fn batch_signing_equals_one_at_a_time(
        jobs in prop::collection::vec((0usize..5, "[a-z0-9]{1,12}", prop::collection::vec(any::<u8>(), 0..300), 0i64..2_000_000_000), 0..24),
    ) {
        let signers: Vec<Signer> = schemes()
            .iter()
            .map(|scheme| {
                let (first, _) = keys(scheme, 3);
                let (second, _) = keys(scheme, 4);
                Signer::new(scheme.clone(), &[&first, &second]).unwrap()
            })
            .collect();
        let batch: Vec<(&Signer, Message<'_>)> = jobs
            .iter()
            .map(|(scheme, id, body, ts)| {
                (&signers[*scheme], Message { id, timestamp_s: *ts, url: URL, body })
            })
            .collect();
        // Dirty buffers: sign_batch must replace, not append.
        let mut out = vec![signed_junk(); batch.len()];
        BatchSigner::new().sign_batch(&batch, &mut out);
        for ((signer, msg), headers) in batch.iter().zip(&out) {
            let mut single = SignedHeaders::new();
            signer.sign_into(msg, &mut single);
            prop_assert_eq!(owned(headers), owned(&single));
        }
    }
}

fn signed_junk() -> SignedHeaders {
    let mut out = SignedHeaders::new();
    let msg = Message {
        id: "junk",
        timestamp_s: 1,
        url: URL,
        body: b"junk",
    };
    Signer::new(Scheme::Olo, &["junk"])
        .unwrap()
        .sign_into(&msg, &mut out);
    out
}

/// Changing any signed header value (id, timestamp, signature) breaks verification; a
/// changed timestamp still inside the tolerance shows up as a signature mismatch.
#[test]
fn tampered_headers_are_rejected() {
    for scheme in schemes() {
        let (secret, verifying) = keys(&scheme, 9);
        let body = br#"{"type":"order.created"}"#;
        let msg = Message {
            id: "msg_2Kx",
            timestamp_s: NOW_S,
            url: URL,
            body,
        };
        let headers = signed(&scheme, &[&secret], &msg);
        let verifier = Verifier::new(scheme.clone(), &[verifying.as_str()]).unwrap();
        assert_eq!(
            verifier.verify(&headers, URL, body, NOW_S),
            Ok(()),
            "{scheme}"
        );

        let mut edits: Vec<Vec<(String, String)>> = Vec::new();
        match &scheme {
            Scheme::Standard | Scheme::Ed25519 => {
                let mut id = headers.clone();
                set(&mut id, "webhook-id", "msg_2Ky".into());
                let mut ts = headers.clone();
                set(&mut ts, "webhook-timestamp", (NOW_S + 1).to_string());
                edits.extend([id, ts]);
            }
            Scheme::Stripe { header } => {
                let mut ts = headers.clone();
                let value = headers[0]
                    .1
                    .replacen(&NOW_S.to_string(), &(NOW_S + 1).to_string(), 1);
                set(&mut ts, header, value);
                edits.push(ts);
            }
            Scheme::Olo => {
                let mut id = headers.clone();
                set(&mut id, "X-Olo-Message-Id", "other".into());
                let mut ticks = headers.clone();
                let value = headers[1].1.clone();
                set(
                    &mut ticks,
                    "X-Olo-Timestamp",
                    format!("{}1", &value[..value.len() - 1]),
                );
                edits.extend([id, ticks]);
            }
        }
        let mut signature = headers.clone();
        let name = signature_header(&scheme).to_string();
        let value = signature
            .iter()
            .find(|(candidate, _)| *candidate == name)
            .unwrap()
            .1
            .clone();
        // Change the first characters of the signature payload (the last character of
        // base64 carries padding bits, so a change there may not even parse).
        let mut chars: Vec<char> = value.chars().collect();
        let at = match &scheme {
            Scheme::Standard | Scheme::Ed25519 => value.find(',').unwrap() + 1,
            Scheme::Stripe { .. } => value.rfind("v1=").unwrap() + 3,
            Scheme::Olo => 0,
        };
        if chars[at] == chars[at + 1] {
            chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
        } else {
            chars.swap(at, at + 1);
        }
        set(&mut signature, &name, chars.into_iter().collect());
        edits.push(signature);

        for edited in edits {
            assert!(
                matches!(
                    verifier.verify(&edited, URL, body, NOW_S),
                    Err(VerifyError::NoMatchingSignature { .. })
                ),
                "{scheme}: {edited:?} -> {:?}",
                verifier.verify(&edited, URL, body, NOW_S)
            );
        }
    }
}

#[test]
fn timestamp_tolerance_is_inclusive_and_two_sided() {
    for scheme in schemes() {
        let (secret, verifying) = keys(&scheme, 5);
        let msg = Message {
            id: "msg_t",
            timestamp_s: NOW_S,
            url: URL,
            body: b"{}",
        };
        let headers = signed(&scheme, &[&secret], &msg);
        let default = Verifier::new(scheme.clone(), &[verifying.as_str()]).unwrap();
        let strict = Verifier::new(scheme.clone(), &[verifying.as_str()])
            .unwrap()
            .with_tolerance_s(10);
        let cases: &[(&Verifier, i64, Result<(), VerifyError>)] = &[
            (&default, NOW_S, Ok(())),
            (&default, NOW_S + 300, Ok(())),
            (&default, NOW_S - 300, Ok(())),
            (
                &default,
                NOW_S + 301,
                Err(VerifyError::TimestampOutsideTolerance {
                    skew_s: 301,
                    tolerance_s: 300,
                }),
            ),
            (
                &default,
                NOW_S - 301,
                Err(VerifyError::TimestampOutsideTolerance {
                    skew_s: -301,
                    tolerance_s: 300,
                }),
            ),
            (&strict, NOW_S + 10, Ok(())),
            (
                &strict,
                NOW_S - 11,
                Err(VerifyError::TimestampOutsideTolerance {
                    skew_s: -11,
                    tolerance_s: 10,
                }),
            ),
            (
                &default,
                i64::MAX,
                Err(VerifyError::TimestampOutsideTolerance {
                    skew_s: i64::MAX - NOW_S,
                    tolerance_s: 300,
                }),
            ),
        ];
        for (verifier, now_s, expected) in cases {
            assert_eq!(
                &verifier.verify(&headers, URL, b"{}", *now_s),
                expected,
                "{scheme} at {now_s}"
            );
        }
    }
}

#[test]
fn timestamp_errors_say_by_how_much() {
    let old = VerifyError::TimestampOutsideTolerance {
        skew_s: 400,
        tolerance_s: 300,
    };
    assert!(old.to_string().contains("400 s old, 100 s beyond"), "{old}");
    let future = VerifyError::TimestampOutsideTolerance {
        skew_s: -900,
        tolerance_s: 300,
    };
    assert!(
        future.to_string().contains("900 s in the future"),
        "{future}"
    );
}

#[test]
fn rotation_signs_once_per_secret_in_order() {
    for scheme in schemes() {
        let (old, old_verifying) = keys(&scheme, 1);
        let (new, new_verifying) = keys(&scheme, 2);
        let (_, retired_verifying) = keys(&scheme, 3);
        let msg = Message {
            id: "msg_r",
            timestamp_s: NOW_S,
            url: URL,
            body: b"rotate",
        };
        let both = signed(&scheme, &[&old, &new], &msg);
        let only_old = signed(&scheme, &[&old], &msg);
        let only_new = signed(&scheme, &[&new], &msg);
        let name = signature_header(&scheme);
        let value = |headers: &[(String, String)]| {
            headers
                .iter()
                .find(|(candidate, _)| candidate == name)
                .unwrap()
                .1
                .clone()
        };
        let expected = match &scheme {
            Scheme::Standard | Scheme::Ed25519 => {
                format!("{} {}", value(&only_old), value(&only_new))
            }
            Scheme::Stripe { .. } => {
                let new_part = value(&only_new);
                let (_, v1) = new_part.split_once(',').unwrap();
                format!("{},{v1}", value(&only_old))
            }
            Scheme::Olo => format!("{},{}", value(&only_old), value(&only_new)),
        };
        assert_eq!(value(&both), expected, "{scheme}");

        for keys in [
            vec![old_verifying.as_str()],
            vec![new_verifying.as_str()],
            vec![retired_verifying.as_str(), new_verifying.as_str()],
        ] {
            let verifier = Verifier::new(scheme.clone(), &keys).unwrap();
            assert_eq!(
                verifier.verify(&both, URL, b"rotate", NOW_S),
                Ok(()),
                "{scheme}"
            );
        }
        let verifier = Verifier::new(scheme.clone(), &[retired_verifying.as_str()]).unwrap();
        assert_eq!(
            verifier.verify(&both, URL, b"rotate", NOW_S),
            Err(VerifyError::NoMatchingSignature {
                signatures: 2,
                keys: 1
            }),
            "{scheme}"
        );
    }
}

fn missing(name: &str) -> Result<(), VerifyError> {
    Err(VerifyError::MissingHeader { name: name.into() })
}

fn malformed(name: &str, reason: &'static str) -> Result<(), VerifyError> {
    Err(VerifyError::MalformedHeader {
        name: name.into(),
        reason,
    })
}

#[test]
fn missing_and_malformed_headers_name_the_header() {
    let standard = Verifier::new(
        Scheme::Standard,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    .unwrap();
    let ed25519 = Verifier::new(Scheme::Ed25519, &[&keys(&Scheme::Ed25519, 1).1]).unwrap();
    let stripe = Verifier::new(
        Scheme::Stripe {
            header: "Crumb-Signature".into(),
        },
        &["whsec_x"],
    )
    .unwrap();
    let olo = Verifier::new(Scheme::Olo, &["secret"]).unwrap();
    let ts = NOW_S.to_string();
    let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let long = "v1,".to_string() + &"A".repeat(SIGNATURE_HEADER_BYTES_MAX);
    let many = vec![sig; SIGNATURES_MAX + 1].join(" ");
    let olo_ticks = herald_sign::unix_s_to_ticks(NOW_S).to_string();
    type Case<'a> = (
        &'a Verifier,
        Vec<(&'a str, &'a str)>,
        Result<(), VerifyError>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            &standard,
            vec![("webhook-timestamp", &ts), ("webhook-signature", sig)],
            missing("webhook-id"),
        ),
        (
            &standard,
            vec![("webhook-id", "m"), ("webhook-signature", sig)],
            missing("webhook-timestamp"),
        ),
        (
            &standard,
            vec![("webhook-id", "m"), ("webhook-timestamp", &ts)],
            missing("webhook-signature"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", "hello"),
                ("webhook-signature", sig),
            ],
            malformed("webhook-timestamp", "not a non-negative decimal integer"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", "-5"),
                ("webhook-signature", sig),
            ],
            malformed("webhook-timestamp", "not a non-negative decimal integer"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "g0hM9SsE"),
            ],
            malformed("webhook-signature", "an entry lacks the `version,` prefix"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v1,not base64!"),
            ],
            malformed("webhook-signature", "a signature is not base64"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v1a,AAAA"),
            ],
            malformed("webhook-signature", "no v1 signature present"),
        ),
        (
            &ed25519,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", sig),
            ],
            malformed("webhook-signature", "no v1a signature present"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &long),
            ],
            malformed("webhook-signature", "longer than 4096 bytes"),
        ),
        (
            &standard,
            vec![
                ("webhook-id", "m"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &many),
            ],
            malformed("webhook-signature", "more than 16 signatures"),
        ),
        (
            &stripe,
            vec![("X-Olympus-Signature", "t=1,v1=00")],
            missing("Crumb-Signature"),
        ),
        (
            &stripe,
            vec![("crumb-signature", "v1=00")],
            malformed("Crumb-Signature", "no `t=` timestamp"),
        ),
        (
            &stripe,
            vec![("crumb-signature", "t=1,t=2,v1=00")],
            malformed("Crumb-Signature", "`t=` appears twice"),
        ),
        (
            &stripe,
            vec![("crumb-signature", "t=1,garbage")],
            malformed("Crumb-Signature", "an entry is not `key=value`"),
        ),
        (
            &stripe,
            vec![("crumb-signature", "t=1700000000,v1=xyz")],
            malformed("Crumb-Signature", "a v1 signature is not hex"),
        ),
        (
            &stripe,
            vec![("crumb-signature", "t=1700000000,v0=00")],
            malformed("Crumb-Signature", "no v1 signature present"),
        ),
        (
            &olo,
            vec![("X-Olo-Timestamp", &olo_ticks), ("X-Olo-Signature", "AAAA")],
            missing("X-Olo-Message-Id"),
        ),
        (
            &olo,
            vec![("X-Olo-Message-Id", "m"), ("X-Olo-Signature", "AAAA")],
            missing("X-Olo-Timestamp"),
        ),
        (
            &olo,
            vec![("X-Olo-Message-Id", "m"), ("X-Olo-Timestamp", &olo_ticks)],
            missing("X-Olo-Signature"),
        ),
        (
            &olo,
            vec![
                ("X-Olo-Message-Id", "m"),
                ("X-Olo-Timestamp", "2015-03-10"),
                ("X-Olo-Signature", "AAAA"),
            ],
            malformed("X-Olo-Timestamp", "not a non-negative decimal integer"),
        ),
        (
            &olo,
            vec![
                ("X-Olo-Message-Id", "m"),
                ("X-Olo-Timestamp", &olo_ticks),
                ("X-Olo-Signature", " , "),
            ],
            malformed("X-Olo-Signature", "empty"),
        ),
        (
            &olo,
            vec![
                ("X-Olo-Message-Id", "m"),
                ("X-Olo-Timestamp", &olo_ticks),
                ("X-Olo-Signature", "%%"),
            ],
            malformed("X-Olo-Signature", "a signature is not base64"),
        ),
    ];
    for (index, (verifier, headers, expected)) in cases.iter().enumerate() {
        assert_eq!(
            &verifier.verify(headers.as_slice(), URL, b"{}", NOW_S),
            expected,
            "case {index}: {headers:?}"
        );
    }
}

#[test]
fn error_messages_are_specific() {
    let cases: &[(VerifyError, &str)] = &[
        (
            VerifyError::MissingHeader {
                name: "webhook-id".into(),
            },
            "missing header webhook-id",
        ),
        (
            VerifyError::MalformedHeader {
                name: "X-Olo-Timestamp".into(),
                reason: "not a non-negative decimal integer",
            },
            "malformed header X-Olo-Timestamp: not a non-negative decimal integer",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), *text);
    }
    let no_match = VerifyError::NoMatchingSignature {
        signatures: 2,
        keys: 1,
    };
    assert!(no_match.to_string().starts_with("no matching signature"));
}

#[test]
fn signature_count_limit_is_inclusive() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let valid = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let decoy = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    let verifier = Verifier::new(Scheme::Standard, &[secret]).unwrap();
    let header = |decoys: usize| {
        let mut items = vec![decoy; decoys];
        items.push(valid);
        items.join(" ")
    };
    let at_limit = header(SIGNATURES_MAX - 1);
    let over = header(SIGNATURES_MAX);
    let headers = |signature: &str| {
        vec![
            (
                "webhook-id".to_string(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string(),
            ),
            ("webhook-timestamp".to_string(), "1614265330".to_string()),
            ("webhook-signature".to_string(), signature.to_string()),
        ]
    };
    assert_eq!(
        verifier.verify(&headers(&at_limit), "", body, 1_614_265_330),
        Ok(())
    );
    assert_eq!(
        verifier.verify(&headers(&over), "", body, 1_614_265_330),
        Err(VerifyError::MalformedHeader {
            name: "webhook-signature".into(),
            reason: "more than 16 signatures"
        })
    );
}

proptest! {
    /// Hostile or broken header values never panic and never verify.
    #[test]
    fn arbitrary_headers_are_rejected_without_panicking(
        scheme_index in 0usize..5,
        values in prop::collection::vec(".{0,120}", 3),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let scheme = &schemes()[scheme_index];
        let (_, verifying) = keys(scheme, 1);
        let names: [&str; 3] = match scheme {
            Scheme::Standard | Scheme::Ed25519 => ["webhook-id", "webhook-timestamp", "webhook-signature"],
            Scheme::Stripe { header } => [header.as_str(), "unused-1", "unused-2"],
            Scheme::Olo => ["X-Olo-Message-Id", "X-Olo-Timestamp", "X-Olo-Signature"],
        };
        let headers: Vec<(&str, &str)> = names.iter().copied().zip(values.iter().map(String::as_str)).collect();
        let verifier = Verifier::new(scheme.clone(), &[verifying.as_str()]).unwrap();
        prop_assert!(verifier.verify(&headers, URL, &body, NOW_S).is_err());
    }
}
