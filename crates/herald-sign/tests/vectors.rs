//! Published example vectors, and values computed by independent implementations (Python's
//! `hmac` and `cryptography` packages, OpenSSL), checked through the public API.
use herald_sign::{
    public_key, unix_s_to_ticks, verify, Message, Scheme, SignedHeaders, Signer, Verifier,
    VerifyError,
};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const STANDARD_TS: i64 = 1_614_265_330;
const STANDARD_BODY: &[u8] = br#"{"test": 2432232314}"#;

fn message() -> Message<'static> {
    Message {
        id: STANDARD_ID,
        timestamp_s: STANDARD_TS,
        url: "https://www.olo.com/webhook/",
        body: STANDARD_BODY,
    }
}

fn sign(scheme: Scheme, secrets: &[&str], msg: &Message<'_>) -> Vec<(String, String)> {
    let signer = Signer::new(scheme, secrets).unwrap();
    let mut out = SignedHeaders::new();
    signer.sign_into(msg, &mut out);
    out.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The Standard Webhooks example (standard-webhooks repository,
/// libraries/python/tests/test_webhooks.py `test_sign_function`, and the spec).
#[test]
fn standard_webhooks_published_example() {
    let expected = [
        ("webhook-id", STANDARD_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    assert_eq!(
        sign(Scheme::Standard, &[STANDARD_SECRET], &message()),
        pairs(&expected)
    );
    assert_eq!(
        verify(
            &Scheme::Standard,
            &[STANDARD_SECRET],
            &expected,
            "",
            STANDARD_BODY,
            STANDARD_TS,
            300
        ),
        Ok(())
    );
    // The same repository's negative case: the last base64 digit changed.
    let tampered = [
        ("webhook-id", STANDARD_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        ),
    ];
    assert_eq!(
        verify(
            &Scheme::Standard,
            &[STANDARD_SECRET],
            &tampered,
            "",
            STANDARD_BODY,
            STANDARD_TS,
            300
        ),
        Err(VerifyError::NoMatchingSignature {
            signatures: 1,
            keys: 1
        })
    );
}

/// The repository's multi-signature case: unknown versions and non-matching `v1` entries
/// around the valid one.
#[test]
fn standard_webhooks_multi_signature_header() {
    let header = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
                  v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
                  v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= \
                  v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    let headers = [
        ("Webhook-Id", STANDARD_ID),
        ("Webhook-Timestamp", "1614265330"),
        ("Webhook-Signature", header),
    ];
    let verifier = Verifier::new(Scheme::Standard, &[STANDARD_SECRET]).unwrap();
    assert_eq!(
        verifier.verify(&headers, "", STANDARD_BODY, STANDARD_TS),
        Ok(())
    );
}

/// Olo's published sample (ololabs/dev-support-code-samples, WebhookSignatureValidation).
/// The samples print the signature without stating it; the expected value was computed with
/// Python's `hmac` module and with `openssl dgst -sha256 -hmac`, which agree.
#[test]
fn olo_published_example() {
    let headers = [
        ("X-Olo-Message-Id", "f8dac5dd-d3b2-w76c-b969-a668c699637c"),
        ("X-Olo-Timestamp", "635616089149791951"),
        (
            "X-Olo-Signature",
            "wdXzIQ3FsGtRWtcIgJ5+7eCsPW19s2lILsuOicy54nI=",
        ),
    ];
    let url = "https://www.olo.com/webhook/";
    let body = br#"{"message":"Olo webhook test!"}"#;
    // 635616089149791951 ticks is 2015-03-10T18:28:34.979Z.
    let now_s = 1_426_012_114;
    let verifier = Verifier::new(Scheme::Olo, &["ThisIsADemonstrationSecret"]).unwrap();
    assert_eq!(verifier.verify(&headers, url, body, now_s), Ok(()));
    // Every signed part matters.
    assert!(matches!(
        verifier.verify(&headers, "https://www.olo.com/webhook", body, now_s),
        Err(VerifyError::NoMatchingSignature { .. })
    ));
    assert!(matches!(
        verifier.verify(&headers, url, br#"{"message": "Olo webhook test!"}"#, now_s),
        Err(VerifyError::NoMatchingSignature { .. })
    ));
    assert!(matches!(
        verifier.verify(&headers, url, body, now_s + 301),
        Err(VerifyError::TimestampOutsideTolerance { skew_s: 301, .. })
    ));
}

/// Olo signing at a whole second, cross-checked with Python:
/// `hmac.new(b"ThisIsADemonstrationSecret", f"{url}\n{body}\n{id}\n{ticks}".encode(), sha256)`.
#[test]
fn olo_signing_matches_independent_hmac() {
    let msg = Message {
        id: "f8dac5dd-d3b2-476c-b969-a668c699637c",
        timestamp_s: STANDARD_TS,
        url: "https://www.olo.com/webhook/",
        body: br#"{"message":"Olo webhook test!"}"#,
    };
    assert_eq!(unix_s_to_ticks(STANDARD_TS), 637_498_621_300_000_000);
    let signed = sign(Scheme::Olo, &["ThisIsADemonstrationSecret"], &msg);
    assert_eq!(signed[0], ("X-Olo-Message-Id".into(), msg.id.into()));
    assert_eq!(
        signed[1],
        ("X-Olo-Timestamp".into(), "637498621300000000".into())
    );
    assert_eq!(signed[2].0, "X-Olo-Signature");
    assert_eq!(signed[2].1, "ePPVwXFAwCWW8tADpEdr4g2JZSbwfMSuPS/yCrTz+L0=");
}

/// Stripe-style, cross-checked with Python: `hmac.new(secret, b"1614265330." + body,
/// sha256).hexdigest()` for each secret.
#[test]
fn stripe_matches_independent_hmac_and_rotates_with_repeated_v1() {
    let one = sign(Scheme::stripe(), &["whsec_test_secret"], &message());
    assert_eq!(
        one,
        pairs(&[(
            "X-Olympus-Signature",
            "t=1614265330,v1=10c96c6fd3f320fcfc264cdc4f476c15060ede8e8a08404cea2ddf3b72544a9c"
        )])
    );
    let crumb = Scheme::Stripe {
        header: "Crumb-Signature".into(),
    };
    let two = sign(
        crumb.clone(),
        &["whsec_test_secret", "whsec_rotated_secret"],
        &message(),
    );
    assert_eq!(
        two,
        pairs(&[(
            "Crumb-Signature",
            "t=1614265330,\
             v1=10c96c6fd3f320fcfc264cdc4f476c15060ede8e8a08404cea2ddf3b72544a9c,\
             v1=86731edc514acd4db1b52c163309ecb4b771f39a8c0deb397eb88cb7aa9f40d6"
        )])
    );
    for secret in ["whsec_test_secret", "whsec_rotated_secret"] {
        assert_eq!(
            verify(&crumb, &[secret], &two, "", STANDARD_BODY, STANDARD_TS, 300),
            Ok(())
        );
    }
}

/// RFC 8032 test 1 key (seed 9d61b19d…, public d75a9801…); the signature was computed with
/// Python's `cryptography` package over `{id}.{ts}.{body}`.
#[test]
fn ed25519_matches_rfc8032_key_and_independent_signature() {
    let signing = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    let public = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    assert_eq!(public_key(signing).as_deref(), Ok(public));
    let expected = [
        ("webhook-id", STANDARD_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw==",
        ),
    ];
    assert_eq!(
        sign(Scheme::Ed25519, &[signing], &message()),
        pairs(&expected)
    );
    for key in [public, signing] {
        assert_eq!(
            verify(
                &Scheme::Ed25519,
                &[key],
                &expected,
                "",
                STANDARD_BODY,
                STANDARD_TS,
                300
            ),
            Ok(())
        );
    }
    assert!(matches!(
        verify(
            &Scheme::Ed25519,
            &[public],
            &expected,
            "",
            b"{}",
            STANDARD_TS,
            300
        ),
        Err(VerifyError::NoMatchingSignature { .. })
    ));
}
