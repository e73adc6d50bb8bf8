//! Published example vectors of the schemes, checked through the public API.
use herald_sign::{verify, Message, Scheme, SignedHeaders, Signer, Verifier, VerifyError};

/// The Standard Webhooks specification's example (spec/standard-webhooks.md and the
/// reference libraries' tests).
#[test]
fn standard_webhooks_published_example() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signer = Signer::new(Scheme::Standard, &[secret]).unwrap();
    let mut out = SignedHeaders::new();
    let msg = Message {
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp_s: 1_614_265_330,
        url: "https://example.com/webhook",
        body: br#"{"test": 2432232314}"#,
    };
    signer.sign_into(&msg, &mut out);
    assert_eq!(
        out.iter().collect::<Vec<_>>(),
        [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            ),
        ]
    );
    let headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    assert_eq!(
        verify(
            &Scheme::Standard,
            &[secret],
            &headers,
            "",
            msg.body,
            1_614_265_330,
            300
        ),
        Ok(())
    );
    let verifier = Verifier::new(Scheme::Standard, &[secret]).unwrap();
    assert!(matches!(
        verifier.verify(&headers, "", msg.body, 1_614_265_330 + 301),
        Err(VerifyError::TimestampOutsideTolerance {
            skew_s: 301,
            tolerance_s: 300
        })
    ));
}
