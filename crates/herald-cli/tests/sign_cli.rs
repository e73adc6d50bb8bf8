//! `herald sign` / `herald verify` run as a user would: the built binary, stdin, exit codes.
use std::io::Write;
use std::process::{Command, Output, Stdio};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ED25519_SIGNING: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const ED25519_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const URL: &str = "https://hooks.example.com/in";

fn herald(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The command may refuse (and exit) before reading everything: a broken pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Signs `body` and returns the printed header lines.
fn sign(args: &[&str], body: &[u8]) -> Vec<String> {
    let output = herald(&[&["sign"], args].concat(), body);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).lines().map(str::to_string).collect()
}

/// Runs verify with the header lines as `-H` arguments.
fn verify(args: &[&str], headers: &[String], body: &[u8]) -> Output {
    let mut all: Vec<&str> = vec!["verify"];
    all.extend_from_slice(args);
    for header in headers {
        all.push("-H");
        all.push(header);
    }
    herald(&all, body)
}

#[test]
fn published_standard_example_prints_the_expected_headers() {
    let lines = sign(
        &[
            "--scheme",
            "standard",
            "--secret",
            STANDARD_SECRET,
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
        ],
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(
        lines,
        [
            "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp: 1614265330",
            "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ]
    );
}

#[test]
fn published_olo_example_verifies_as_of_its_time() {
    let output = herald(
        &[
            "verify",
            "--scheme",
            "olo",
            "--secret",
            "ThisIsADemonstrationSecret",
            "--url",
            "https://www.olo.com/webhook/",
            "--now",
            "1426012114",
            "-H",
            "X-Olo-Message-Id: f8dac5dd-d3b2-w76c-b969-a668c699637c",
            "-H",
            "X-Olo-Timestamp: 635616089149791951",
            "-H",
            "X-Olo-Signature: wdXzIQ3FsGtRWtcIgJ5+7eCsPW19s2lILsuOicy54nI=",
        ],
        br#"{"message":"Olo webhook test!"}"#,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "valid\n");
}

#[test]
fn sign_then_verify_round_trips_for_every_scheme() {
    let body = br#"{"type":"order.created","id":"ord_1"}"#;
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--scheme", "standard", "--secret", STANDARD_SECRET],
            &["--scheme", "standard", "--secret", STANDARD_SECRET],
        ),
        (
            &["--scheme", "ed25519", "--secret", ED25519_SIGNING],
            &["--scheme", "ed25519", "--secret", ED25519_PUBLIC],
        ),
        (
            &["--scheme", "stripe", "--secret", "whsec_abc"],
            &["--scheme", "stripe", "--secret", "whsec_abc"],
        ),
        (
            &[
                "--scheme",
                "stripe",
                "--header",
                "Crumb-Signature",
                "--secret",
                "whsec_abc",
            ],
            &[
                "--scheme",
                "stripe",
                "--header",
                "Crumb-Signature",
                "--secret",
                "whsec_abc",
            ],
        ),
        (
            &["--scheme", "olo", "--secret", "shared", "--url", URL],
            &["--scheme", "olo", "--secret", "shared", "--url", URL],
        ),
    ];
    for (sign_args, verify_args) in cases {
        let headers = sign(sign_args, body);
        let output = verify(verify_args, &headers, body);
        assert_eq!(
            (output.status.code(), stdout(&output)),
            (Some(0), "valid\n".to_string()),
            "{sign_args:?}: {headers:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn generated_ids_follow_the_scheme() {
    let standard = sign(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        b"{}",
    );
    let id = standard[0].strip_prefix("webhook-id: msg_").unwrap();
    assert_eq!(id.len(), 32, "{id}");
    let olo = sign(&["--scheme", "olo", "--secret", "s", "--url", URL], b"{}");
    let id = olo[0].strip_prefix("X-Olo-Message-Id: ").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    // Two runs, two ids.
    let again = sign(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        b"{}",
    );
    assert_ne!(standard[0], again[0]);
}

#[test]
fn rotation_emits_one_signature_per_secret() {
    let other = "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==";
    let headers = sign(
        &[
            "--scheme",
            "standard",
            "--secret",
            STANDARD_SECRET,
            "--secret",
            other,
        ],
        b"{}",
    );
    let signature = headers[2].strip_prefix("webhook-signature: ").unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    for secret in [STANDARD_SECRET, other] {
        let output = verify(
            &["--scheme", "standard", "--secret", secret],
            &headers,
            b"{}",
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
}

#[test]
fn failures_exit_1_with_the_reason() {
    let body = b"{\"amount\":100}";
    let headers = sign(
        &[
            "--scheme",
            "standard",
            "--secret",
            STANDARD_SECRET,
            "--timestamp",
            "1700000000",
        ],
        body,
    );
    let wrong = "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==";
    let at = ["--now", "1700000000"];
    // (extra verify arguments, headers, body, expected reason; empty = valid)
    type Case<'a> = (Vec<&'a str>, Vec<String>, &'a [u8], &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--secret", STANDARD_SECRET],
            headers.clone(),
            b"{\"amount\": 100}",
            "no matching signature",
        ),
        (
            vec!["--secret", wrong],
            headers.clone(),
            body,
            "no matching signature",
        ),
        (
            vec!["--secret", STANDARD_SECRET, "--now", "1700000400"],
            headers.clone(),
            body,
            "timestamp outside tolerance: 400 s old, 100 s beyond the 300 s allowed",
        ),
        (
            vec![
                "--secret",
                STANDARD_SECRET,
                "--now",
                "1700000400",
                "--tolerance-s",
                "500",
            ],
            headers.clone(),
            body,
            "",
        ),
        (
            vec!["--secret", STANDARD_SECRET],
            headers[..2].to_vec(),
            body,
            "missing header webhook-signature",
        ),
        (
            vec!["--secret", STANDARD_SECRET],
            vec![
                headers[0].clone(),
                "webhook-timestamp: yesterday".into(),
                headers[2].clone(),
            ],
            body,
            "malformed header webhook-timestamp",
        ),
    ];
    for (extra, headers, body, reason) in cases {
        let mut args = vec!["--scheme", "standard"];
        args.extend(&extra);
        if !extra.contains(&"--now") {
            args.extend(at);
        }
        let output = verify(&args, &headers, body);
        if reason.is_empty() {
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        assert_eq!(stdout(&output), "");
        assert!(
            stderr(&output).contains(reason),
            "{extra:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let big = vec![b'x'; 16 * 1024 * 1024 + 1];
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (
            vec![
                "sign",
                "--scheme",
                "standard",
                "--secret",
                "whsec_c2hvcnRzZWNyZXQ=",
            ],
            b"{}",
            "decodes to 11 bytes; 24..=64 expected",
        ),
        (
            vec![
                "sign",
                "--scheme",
                "standard",
                "--secret",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
            b"{}",
            "must start with `whsec_`",
        ),
        (
            vec!["sign", "--scheme", "olo", "--secret", "s"],
            b"{}",
            "pass --url",
        ),
        (
            vec![
                "sign",
                "--scheme",
                "standard",
                "--secret",
                STANDARD_SECRET,
                "--header",
                "X-Sig",
            ],
            b"{}",
            "--header names the stripe signature header",
        ),
        (
            vec![
                "sign",
                "--scheme",
                "stripe",
                "--secret",
                "s",
                "--header",
                "Bad Header",
            ],
            b"{}",
            "not a valid HTTP field name",
        ),
        (
            vec![
                "sign",
                "--scheme",
                "standard",
                "--secret",
                STANDARD_SECRET,
                "--id",
                "msg 1",
            ],
            b"{}",
            "--id: message id contains byte 0x20",
        ),
        (
            vec!["sign", "--scheme", "standard", "--secret", STANDARD_SECRET],
            &big,
            "larger than 16777216 bytes",
        ),
        (
            vec!["sign", "--scheme", "hmac", "--secret", "s"],
            b"{}",
            "invalid value 'hmac'",
        ),
        (vec!["sign", "--scheme", "standard"], b"{}", "--secret"),
        (
            vec![
                "verify",
                "--scheme",
                "standard",
                "--secret",
                STANDARD_SECRET,
                "-H",
                "no colon",
            ],
            b"{}",
            "expected `Name: value`",
        ),
        (
            vec!["verify", "--scheme", "ed25519", "--secret", STANDARD_SECRET],
            b"{}",
            "must start with `whpk_ (or whsk_)`",
        ),
        (
            vec![
                "verify",
                "--scheme",
                "standard",
                "--secret",
                STANDARD_SECRET,
            ],
            &big,
            "larger than 16777216 bytes",
        ),
    ];
    for (args, body, message) in cases {
        let output = herald(&args, body);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stdout(&output), "", "{args:?}");
    }
}

#[test]
fn verify_header_count_is_bounded() {
    let headers = sign(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        b"{}",
    );
    // Padding up to exactly 100 headers is accepted; one more is a usage error.
    let padding =
        |count: usize| -> Vec<String> { (0..count).map(|i| format!("X-Pad-{i}: {i}")).collect() };
    let at_limit = [headers.clone(), padding(100 - headers.len())].concat();
    let output = verify(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        &at_limit,
        b"{}",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let over = [headers, padding(101 - 3)].concat();
    let output = verify(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        &over,
        b"{}",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("101 headers given with -H; at most 100"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_trailing_newline_on_stdin_gets_a_hint() {
    let body = br#"{"id":1}"#;
    let headers = sign(&["--scheme", "standard", "--secret", STANDARD_SECRET], body);
    let with_newline = [body.as_slice(), b"\n"].concat();
    let output = verify(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        &headers,
        &with_newline,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no matching signature")
            && stderr(&output).contains("hint: it verifies without the trailing newline"),
        "{}",
        stderr(&output)
    );
    // A body that is simply different gets no such hint.
    let output = verify(
        &["--scheme", "standard", "--secret", STANDARD_SECRET],
        &headers,
        b"{\"id\":2}\n",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(!stderr(&output).contains("hint"), "{}", stderr(&output));
}

#[test]
fn a_stale_timestamp_without_now_gets_a_hint() {
    let body = br#"{"id":1}"#;
    let signed_at = ["--scheme", "standard", "--secret", STANDARD_SECRET];
    let stale = sign(&[&signed_at[..], &["--timestamp", "1000"]].concat(), body);
    let output = verify(&signed_at, &stale, body);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("timestamp outside tolerance")
            && stderr(&output).contains("hint: for a request captured earlier, pass --now"),
        "{}",
        stderr(&output)
    );
    // With --now the caller chose the time: no hint. A future timestamp is not a capture.
    let output = verify(
        &[&signed_at[..], &["--now", "999999"]].concat(),
        &stale,
        body,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(!stderr(&output).contains("hint"), "{}", stderr(&output));
    let future = sign(
        &[&signed_at[..], &["--timestamp", "99999999999"]].concat(),
        body,
    );
    let output = verify(&signed_at, &future, body);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("in the future") && !stderr(&output).contains("hint"),
        "{}",
        stderr(&output)
    );
}
