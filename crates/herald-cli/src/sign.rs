//! `herald sign` and `herald verify`: the signing schemes from the command line, for
//! senders testing a receiver and for receivers whose verification fails.
//!
//! Exit codes: 0 success (`verify` prints `valid`); 1 the request does not verify (the
//! reason on stderr) or stdin could not be read; 2 usage errors (bad arguments, an unusable
//! secret, a body over [`BODY_BYTES_MAX`]).
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_sign::{
    validate_message_id, Message, Scheme, SignedHeaders, Signer, Verifier, VerifyError,
    TOLERANCE_S_DEFAULT,
};

/// Largest body read from stdin. Webhook bodies are small; this only stops a mistaken
/// pipe (a log file, a device) from filling memory.
pub const BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Most `-H` headers accepted by `herald verify` (an HTTP server's usual limit).
pub const HEADER_COUNT_MAX: usize = 100;

const EXIT_INVALID: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Signature scheme names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemeName {
    /// Standard Webhooks, HMAC-SHA256 (`whsec_…` secrets).
    Standard,
    /// Standard Webhooks, ed25519 (`whsk_…` signing keys; `whpk_…` to verify).
    Ed25519,
    /// `t=<ts>,v1=<hex>` in one header (default X-Olympus-Signature).
    Stripe,
    /// Olo: X-Olo-Message-Id, X-Olo-Timestamp (.NET ticks), X-Olo-Signature.
    Olo,
}

/// Arguments of `herald sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Signature scheme.
    #[arg(long, value_enum)]
    scheme: SchemeName,
    /// Signing secret; repeat for rotation (one signature per secret, in order).
    #[arg(long = "secret", value_name = "SECRET", required = true)]
    secrets: Vec<String>,
    /// Message id [default: msg_<random> (olo: a random UUID)].
    #[arg(long)]
    id: Option<String>,
    /// Signing time, Unix seconds [default: now].
    #[arg(long, value_name = "UNIX_SECS")]
    timestamp: Option<i64>,
    /// The exact URL the request goes to (signed by olo, which requires it).
    #[arg(long)]
    url: Option<String>,
    /// Signature header name for stripe [default: X-Olympus-Signature].
    #[arg(long, value_name = "NAME")]
    header: Option<String>,
}

/// Arguments of `herald verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Signature scheme.
    #[arg(long, value_enum)]
    scheme: SchemeName,
    /// Secret (ed25519: `whpk_` public key or `whsk_` signing key); repeat to accept any.
    #[arg(long = "secret", value_name = "SECRET", required = true)]
    secrets: Vec<String>,
    /// The exact URL the request was sent to (olo signs it, and requires it).
    #[arg(long)]
    url: Option<String>,
    /// Allowed clock difference, seconds, either direction.
    #[arg(long = "tolerance-s", value_name = "N", default_value_t = TOLERANCE_S_DEFAULT)]
    tolerance_s: u64,
    /// Signature header name for stripe [default: X-Olympus-Signature].
    #[arg(long, value_name = "NAME")]
    header: Option<String>,
    /// A received header, `Name: value`; repeat for each.
    #[arg(short = 'H', long = "request-header", value_name = "NAME: VALUE")]
    request_headers: Vec<String>,
    /// Verify as of this time, Unix seconds, e.g. for a captured request [default: now].
    #[arg(long, value_name = "UNIX_SECS")]
    now: Option<i64>,
}

/// A failure of the command, with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

fn finish(command: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("herald {command}: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `herald sign`: prints the headers to send with the body read from stdin.
pub fn sign(args: SignArgs) -> ExitCode {
    finish(
        "sign",
        run_sign(args, &mut io::stdin().lock(), &mut io::stdout().lock()),
    )
}

/// `herald verify`: exit 0 and `valid` when the body on stdin and the `-H` headers verify.
pub fn verify(args: VerifyArgs) -> ExitCode {
    finish(
        "verify",
        run_verify(args, &mut io::stdin().lock(), &mut io::stdout().lock()),
    )
}

fn scheme(name: SchemeName, header: Option<String>) -> Result<Scheme, Failure> {
    match (name, header) {
        (SchemeName::Stripe, Some(header)) => Ok(Scheme::Stripe { header }),
        (SchemeName::Stripe, None) => Ok(Scheme::stripe()),
        (_, Some(_)) => Err(Failure::usage(
            "--header names the stripe signature header; other schemes have fixed headers",
        )),
        (SchemeName::Standard, None) => Ok(Scheme::Standard),
        (SchemeName::Ed25519, None) => Ok(Scheme::Ed25519),
        (SchemeName::Olo, None) => Ok(Scheme::Olo),
    }
}

fn url_for(scheme: &Scheme, url: Option<String>) -> Result<String, Failure> {
    match (scheme, url) {
        (Scheme::Olo, None) => Err(Failure::usage(
            "olo signs the request URL: pass --url with the exact URL the request goes to",
        )),
        (_, url) => Ok(url.unwrap_or_default()),
    }
}

fn read_body(input: &mut dyn Read) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    input
        .take(BODY_BYTES_MAX + 1)
        .read_to_end(&mut body)
        .map_err(|error| Failure {
            code: EXIT_INVALID,
            message: format!("cannot read the body from stdin: {error}"),
        })?;
    if body.len() as u64 > BODY_BYTES_MAX {
        return Err(Failure::usage(format!(
            "the body on stdin is larger than {BODY_BYTES_MAX} bytes (16 MiB), the most this command accepts"
        )));
    }
    Ok(body)
}

fn now_s() -> i64 {
    // A clock before 1970 is a broken machine; signing at 0 then fails loudly at the
    // receiver's tolerance check rather than here.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn run_sign(args: SignArgs, input: &mut dyn Read, output: &mut dyn Write) -> Result<(), Failure> {
    let scheme = scheme(args.scheme, args.header)?;
    let url = url_for(&scheme, args.url)?;
    let secrets: Vec<&str> = args.secrets.iter().map(String::as_str).collect();
    let is_olo = scheme == Scheme::Olo;
    let signer =
        Signer::new(scheme, &secrets).map_err(|error| Failure::usage(error.to_string()))?;
    let id = match args.id {
        Some(id) => {
            validate_message_id(&id).map_err(|error| Failure::usage(format!("--id: {error}")))?;
            id
        }
        None if is_olo => uuid::Uuid::new_v4().hyphenated().to_string(),
        None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    };
    let body = read_body(input)?;
    let msg = Message {
        id: &id,
        timestamp_s: args.timestamp.unwrap_or_else(now_s),
        url: &url,
        body: &body,
    };
    let mut headers = SignedHeaders::new();
    signer.sign_into(&msg, &mut headers);
    let mut text = String::new();
    for (name, value) in headers.iter() {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    }
    output.write_all(text.as_bytes()).map_err(|error| Failure {
        code: EXIT_INVALID,
        message: format!("cannot write the headers: {error}"),
    })
}

/// Parses `Name: value` (any amount of whitespace around the value, as in HTTP).
fn parse_header_line(line: &str) -> Result<(String, String), Failure> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(Failure::usage(format!(
            "-H {line:?}: expected `Name: value`"
        )));
    };
    let name = name.trim();
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        return Err(Failure::usage(format!(
            "-H {line:?}: {name:?} is not a valid header name"
        )));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

fn run_verify(
    args: VerifyArgs,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), Failure> {
    let scheme = scheme(args.scheme, args.header)?;
    let url = url_for(&scheme, args.url)?;
    if args.request_headers.len() > HEADER_COUNT_MAX {
        return Err(Failure::usage(format!(
            "{} headers given with -H; at most {HEADER_COUNT_MAX} are accepted",
            args.request_headers.len()
        )));
    }
    let headers = args
        .request_headers
        .iter()
        .map(|line| parse_header_line(line))
        .collect::<Result<Vec<_>, _>>()?;
    let secrets: Vec<&str> = args.secrets.iter().map(String::as_str).collect();
    let verifier = Verifier::new(scheme, &secrets)
        .map_err(|error| Failure::usage(error.to_string()))?
        .with_tolerance_s(args.tolerance_s);
    let body = read_body(input)?;
    let now_given = args.now.is_some();
    let now_s = args.now.unwrap_or_else(now_s);
    if let Err(error) = verifier.verify(&headers, &url, &body, now_s) {
        let mut message = format!("invalid: {error}");
        // The usual cause is replaying a request captured from a log some minutes ago.
        if !now_given
            && matches!(
                error,
                VerifyError::TimestampOutsideTolerance { skew_s, .. } if skew_s > 0
            )
        {
            message.push_str(
                "\nhint: for a request captured earlier, pass --now with the Unix time it \
                 arrived (or widen --tolerance-s)",
            );
        }
        // `echo` and many editors add a final newline that the sender never signed.
        if matches!(error, VerifyError::NoMatchingSignature { .. }) && body.ends_with(b"\n") {
            let trimmed = body
                .strip_suffix(b"\r\n")
                .or_else(|| body.strip_suffix(b"\n"));
            if let Some(trimmed) = trimmed {
                if verifier.verify(&headers, &url, trimmed, now_s).is_ok() {
                    message.push_str(
                        "\nhint: it verifies without the trailing newline on stdin; \
                         pass the body byte for byte (printf '%s', or a file with no final newline)",
                    );
                }
            }
        }
        return Err(Failure {
            code: EXIT_INVALID,
            message,
        });
    }
    output.write_all(b"valid\n").map_err(|error| Failure {
        code: EXIT_INVALID,
        message: format!("cannot write the result: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("webhook-id: msg_1", Some(("webhook-id", "msg_1"))),
            ("webhook-id:msg_1", Some(("webhook-id", "msg_1"))),
            (
                "Crumb-Signature:  t=1,v1=ab  ",
                Some(("Crumb-Signature", "t=1,v1=ab")),
            ),
            // Only the first colon separates: values may contain colons.
            ("X-A: b:c", Some(("X-A", "b:c"))),
            ("no colon", None),
            (": value", None),
            ("bad name: value", None),
        ];
        for (line, expected) in cases {
            let parsed = parse_header_line(line).ok();
            let expected = expected.map(|(name, value)| (name.to_string(), value.to_string()));
            assert_eq!(parsed, expected, "{line:?}");
        }
    }

    #[test]
    fn body_limit_is_enforced_at_the_boundary() {
        let at_limit = vec![b'x'; BODY_BYTES_MAX as usize];
        assert_eq!(
            read_body(&mut at_limit.as_slice())
                .map(|body| body.len())
                .ok(),
            Some(at_limit.len())
        );
        let over = vec![b'x'; BODY_BYTES_MAX as usize + 1];
        let failure = read_body(&mut over.as_slice())
            .err()
            .map(|f| (f.code, f.message));
        assert!(
            matches!(&failure, Some((EXIT_USAGE, message)) if message.contains("16 MiB")),
            "{failure:?}"
        );
    }
}
