//! Secret and key parsing: every way a configured secret can be unusable.
use herald_sign::{
    generate_secret, public_key, Scheme, SecretError, Signer, Verifier, SECRETS_MAX,
    SECRET_BYTES_MAX,
};

fn b64(bytes: usize) -> String {
    // Base64 of `bytes` zero bytes without a base64 dependency in the tests: "AAAA" per 3.
    let mut out = String::new();
    let full = bytes / 3;
    for _ in 0..full {
        out.push_str("AAAA");
    }
    match bytes % 3 {
        1 => out.push_str("AA=="),
        2 => out.push_str("AAA="),
        _ => {}
    }
    out
}

#[test]
fn bad_secrets_are_refused_with_the_reason() {
    let long = "x".repeat(SECRET_BYTES_MAX + 1);
    let at_max = "x".repeat(SECRET_BYTES_MAX);
    let short_standard = format!("whsec_{}", b64(23));
    let long_standard = format!("whsec_{}", b64(65));
    let min_standard = format!("whsec_{}", b64(24));
    let max_standard = format!("whsec_{}", b64(64));
    let seed = format!("whsk_{}", b64(32));
    let short_seed = format!("whsk_{}", b64(31));
    // A 64-byte seed‖public whose public half (zeros) does not belong to the seed.
    let inconsistent = format!("whsk_{}", b64(64));
    let cases: Vec<(Scheme, Vec<&str>, Result<(), SecretError>)> = vec![
        (Scheme::Standard, vec![], Err(SecretError::NoSecret)),
        (Scheme::Standard, vec![&min_standard], Ok(())),
        (Scheme::Standard, vec![&max_standard], Ok(())),
        // Unpadded base64 is accepted too.
        (
            Scheme::Standard,
            vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            Ok(()),
        ),
        (
            Scheme::Standard,
            vec![&short_standard],
            Err(SecretError::Length {
                index: 0,
                bytes: 23,
                expected: "24..=64",
            }),
        ),
        (
            Scheme::Standard,
            vec![&min_standard, &long_standard],
            Err(SecretError::Length {
                index: 1,
                bytes: 65,
                expected: "24..=64",
            }),
        ),
        (
            Scheme::Standard,
            vec!["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            Err(SecretError::Prefix {
                index: 0,
                expected: "whsec_",
            }),
        ),
        (
            Scheme::Standard,
            vec!["whsec_not base64!"],
            Err(SecretError::Base64 { index: 0 }),
        ),
        (
            Scheme::Standard,
            vec![""],
            Err(SecretError::Empty { index: 0 }),
        ),
        (
            Scheme::Standard,
            vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"],
            Err(SecretError::Whitespace { index: 0 }),
        ),
        (
            Scheme::Olo,
            vec![" secret"],
            Err(SecretError::Whitespace { index: 0 }),
        ),
        (Scheme::Olo, vec![&at_max], Ok(())),
        (
            Scheme::Olo,
            vec![&long],
            Err(SecretError::TooLong {
                index: 0,
                bytes: SECRET_BYTES_MAX + 1,
                max: SECRET_BYTES_MAX,
            }),
        ),
        (Scheme::stripe(), vec!["whsec_anything goes inside"], Ok(())),
        (
            Scheme::Stripe {
                header: "Bad Header".into(),
            },
            vec!["whsec_x"],
            Err(SecretError::HeaderName {
                name: "Bad Header".into(),
            }),
        ),
        (Scheme::Ed25519, vec![&seed], Ok(())),
        (
            Scheme::Ed25519,
            vec![&short_seed],
            Err(SecretError::Length {
                index: 0,
                bytes: 31,
                expected: "32 (seed) or 64 (seed and public key)",
            }),
        ),
        (
            Scheme::Ed25519,
            vec!["whpk_AAAA"],
            Err(SecretError::Prefix {
                index: 0,
                expected: "whsk_",
            }),
        ),
    ];
    for (scheme, secrets, expected) in &cases {
        let result = Signer::new(scheme.clone(), secrets).map(|_| ());
        assert_eq!(&result, expected, "{scheme} {secrets:?}");
    }
    assert!(matches!(
        Signer::new(Scheme::Ed25519, &[&inconsistent]),
        Err(SecretError::Ed25519 { index: 0, .. })
    ));
}

#[test]
fn secret_count_is_bounded() {
    let secrets: Vec<String> = (0..=SECRETS_MAX).map(|i| format!("secret-{i}")).collect();
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert!(Signer::new(Scheme::Olo, &refs[..SECRETS_MAX]).is_ok());
    assert_eq!(
        Signer::new(Scheme::Olo, &refs).map(|_| ()),
        Err(SecretError::TooMany {
            count: SECRETS_MAX + 1,
            max: SECRETS_MAX
        })
    );
    assert_eq!(
        Verifier::new(Scheme::Olo, &refs).map(|_| ()),
        Err(SecretError::TooMany {
            count: SECRETS_MAX + 1,
            max: SECRETS_MAX
        })
    );
}

#[test]
fn ed25519_verifying_keys() {
    let signing = generate_secret(&Scheme::Ed25519, &[7; 32]);
    let public = public_key(&signing).unwrap();
    assert!(public.starts_with("whpk_"));
    let cases: Vec<(&str, Result<(), SecretError>)> = vec![
        (&public, Ok(())),
        (&signing, Ok(())),
        (
            "whpk_AAAA",
            Err(SecretError::Length {
                index: 0,
                bytes: 3,
                expected: "32",
            }),
        ),
        ("whpk_@@", Err(SecretError::Base64 { index: 0 })),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            Err(SecretError::Prefix {
                index: 0,
                expected: "whpk_ (or whsk_)",
            }),
        ),
    ];
    for (key, expected) in cases {
        assert_eq!(
            Verifier::new(Scheme::Ed25519, &[key]).map(|_| ()),
            expected,
            "{key}"
        );
    }
    assert!(public_key(&public).is_err());
}

#[test]
fn generated_secrets_parse_and_differ_by_randomness() {
    for scheme in [
        Scheme::Standard,
        Scheme::Ed25519,
        Scheme::stripe(),
        Scheme::Olo,
    ] {
        let a = generate_secret(&scheme, &[1; 32]);
        let b = generate_secret(&scheme, &[2; 32]);
        assert_ne!(a, b);
        assert!(
            Signer::new(scheme.clone(), &[&a, &b]).is_ok(),
            "{scheme}: {a}"
        );
    }
    assert!(generate_secret(&Scheme::Standard, &[0; 32]).starts_with("whsec_"));
    assert!(generate_secret(&Scheme::Ed25519, &[0; 32]).starts_with("whsk_"));
}

#[test]
fn debug_never_shows_secrets() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signer = Signer::new(Scheme::Standard, &[secret]).unwrap();
    let verifier = Verifier::new(Scheme::Standard, &[secret]).unwrap();
    for text in [format!("{signer:?}"), format!("{verifier:?}")] {
        assert!(!text.contains("MfKQ9r8G"), "{text}");
        assert!(text.contains("Standard"), "{text}");
    }
    let error = Signer::new(Scheme::Standard, &["whsec_secret material!"]).unwrap_err();
    assert!(!error.to_string().contains("material"), "{error}");
}

#[test]
fn secret_errors_name_the_position_unambiguously() {
    // `--secret` is repeated for rotation; with one secret, "secret #0" read like a count.
    let cases: &[(&[&str], &str)] = &[
        (&["nope"], "secret at index 0 must start with `whsec_`"),
        (
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""],
            "secret at index 1 is empty",
        ),
    ];
    for (secrets, expected) in cases {
        let error = Signer::new(Scheme::Standard, secrets).unwrap_err();
        assert_eq!(error.to_string(), *expected, "{secrets:?}");
    }
}
