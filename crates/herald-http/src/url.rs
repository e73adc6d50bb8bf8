use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest URL accepted by [`Url::parse`], in bytes. Webhook endpoints are short; a
/// multi-kilobyte URL is a mistake or an attempt to bloat every stored delivery record.
pub const URL_BYTES_MAX: usize = 2048;

/// Longest host name (RFC 1035: 253 characters in text form).
const HOST_BYTES_MAX: usize = 253;
/// Longest DNS label (RFC 1035).
const LABEL_BYTES_MAX: usize = 63;

/// The scheme of an endpoint [`Url`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UrlScheme {
    /// Plain-text HTTP, default port 80.
    Http,
    /// HTTP over TLS, default port 443.
    Https,
}

impl UrlScheme {
    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            UrlScheme::Http => 80,
            UrlScheme::Https => 443,
        }
    }

    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }
}

/// A parsed endpoint URL: what a request needs to reach the endpoint and nothing more.
///
/// * `scheme` is http or https; `host` is lower-cased; an IPv6 literal is stored without
///   brackets in its canonical text form (`::1`), an IPv4 literal in dotted-quad form.
/// * `port` is explicit or the scheme's default.
/// * `target` is the origin-form request target (path and query), `"/"` when the URL has
///   no path. Bytes outside ASCII are percent-encoded; the fragment is dropped (it is
///   never sent).
///
/// Userinfo (`user:pass@`), whitespace, control characters, bad ports, ambiguous numeric
/// hosts (`0x7f.1`, `127.1`) and URLs longer than [`URL_BYTES_MAX`] are rejected.
/// Internationalized host names must be given in their ASCII (`xn--`) form: there is no
/// IDNA mapping here, so a non-ASCII host is [`UrlError::InvalidHost`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    /// http or https.
    pub scheme: UrlScheme,
    /// Host name (lower-case) or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request target: path and query, starting with `/`.
    pub target: String,
}

/// Why a URL was rejected. Always the caller's fault (the URL came from configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`URL_BYTES_MAX`].
    #[error("URL is {len} bytes, longer than {max}")]
    TooLong {
        /// Length of the rejected URL.
        len: usize,
        /// [`URL_BYTES_MAX`].
        max: usize,
    },
    /// Not `http://` or `https://` (or no scheme at all).
    #[error("URL scheme must be http or https")]
    UnsupportedScheme,
    /// A space, tab, control character or DEL at byte `index`.
    #[error("URL contains whitespace or a control character at byte {index}")]
    InvalidCharacter {
        /// Byte offset in the input.
        index: usize,
    },
    /// `user:password@host`: credentials in URLs leak into logs and are not supported.
    #[error("URL must not contain userinfo (user:password@)")]
    UserinfoNotAllowed,
    /// Empty host.
    #[error("URL has no host")]
    MissingHost,
    /// Host is not a valid DNS name (labels of letters, digits, `-` and `_`, no label
    /// starting or ending with `-`), IPv4 dotted quad or bracketed IPv6 literal.
    #[error("URL host is invalid")]
    InvalidHost,
    /// Port is not a number in 1..=65535.
    #[error("URL port is invalid")]
    InvalidPort,
    /// A `%` not followed by two hex digits.
    #[error("URL contains an invalid percent-encoding")]
    InvalidPercentEncoding,
}

impl Url {
    /// Parses an absolute http or https URL.
    pub fn parse(s: &str) -> Result<Url, UrlError> {
        if s.len() > URL_BYTES_MAX {
            return Err(UrlError::TooLong {
                len: s.len(),
                max: URL_BYTES_MAX,
            });
        }
        if let Some(index) = s.bytes().position(|b| b <= b' ' || b == 0x7f) {
            return Err(UrlError::InvalidCharacter { index });
        }
        let (scheme, rest) = split_scheme(s)?;
        // The fragment is client-side only and never part of a request.
        let rest = match rest.find('#') {
            Some(i) => &rest[..i],
            None => rest,
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(UrlError::UserinfoNotAllowed);
        }
        let (host, port) = split_host_port(authority)?;
        let host = parse_host(host)?;
        let port = match port {
            None | Some("") => scheme.default_port(),
            Some(p) => parse_port(p)?,
        };
        let target = normalize_target(path_and_query)?;
        Ok(Url {
            scheme,
            host,
            port,
            target,
        })
    }

    /// The value for the `Host` header: the host, bracketed if IPv6, with `:port` when the
    /// port is not the scheme's default.
    pub fn host_header(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + 8);
        self.write_authority(&mut out);
        out
    }

    /// Appends [`host_header`](Self::host_header) to `out`, for a caller that reuses one
    /// buffer per request instead of allocating a `String` each time.
    pub fn write_host_header(&self, out: &mut String) {
        self.write_authority(out);
    }

    /// The host as an IP address when it is an IP literal (no DNS lookup needed).
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// True for `https`.
    pub fn is_tls(&self) -> bool {
        self.scheme == UrlScheme::Https
    }

    fn write_authority(&self, out: &mut String) {
        use fmt::Write as _;
        if self.host.contains(':') {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&self.host);
        }
        if self.port != self.scheme.default_port() {
            // Writing to a String cannot fail.
            let _ = write!(out, ":{}", self.port);
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut authority = String::with_capacity(self.host.len() + 8);
        self.write_authority(&mut authority);
        write!(f, "{}://{}{}", self.scheme.as_str(), authority, self.target)
    }
}

impl std::str::FromStr for Url {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Url, UrlError> {
        Url::parse(s)
    }
}

fn split_scheme(s: &str) -> Result<(UrlScheme, &str), UrlError> {
    let (scheme, rest) = s.split_once("://").ok_or(UrlError::UnsupportedScheme)?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        UrlScheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        UrlScheme::Https
    } else {
        return Err(UrlError::UnsupportedScheme);
    };
    Ok((scheme, rest))
}

/// Splits `host[:port]` or `[v6][:port]`; the host keeps its brackets.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlError> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(UrlError::InvalidHost)?;
        let (host, after) = authority.split_at(close + 1);
        match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(UrlError::InvalidHost),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((authority, None)),
        }
    }
}

fn parse_host(host: &str) -> Result<String, UrlError> {
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UrlError::InvalidHost)?;
        // Zone identifiers (`%25eth0`) are meaningless to a remote receiver: rejected by
        // the std parser, as intended.
        let ip: Ipv6Addr = inner.parse().map_err(|_| UrlError::InvalidHost)?;
        return Ok(ip.to_string());
    }
    if host.len() > HOST_BYTES_MAX {
        return Err(UrlError::InvalidHost);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut last_label = "";
    for label in host.split('.') {
        let bytes = label.as_bytes();
        // RFC 1123 §2.1: a label neither starts nor ends with a hyphen (`_` is tolerated:
        // it appears in real service names).
        let ok = !bytes.is_empty()
            && bytes.len() <= LABEL_BYTES_MAX
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if !ok {
            return Err(UrlError::InvalidHost);
        }
        last_label = label;
    }
    // A numeric last label makes the host an IPv4 address to browsers and resolvers
    // (WHATWG URL, inet_aton), in any of several spellings (`127.1`, `0x7f.0.0.1`,
    // `017700000001`). Accept only the canonical dotted quad so that the egress guard and
    // the socket layer agree on which address this is.
    let numeric_last = last_label.bytes().all(|b| b.is_ascii_digit())
        || (last_label.len() > 1
            && last_label[..2].eq_ignore_ascii_case("0x")
            && last_label[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric_last {
        let ip: Ipv4Addr = host.parse().map_err(|_| UrlError::InvalidHost)?;
        return Ok(ip.to_string());
    }
    Ok(host.to_ascii_lowercase())
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::InvalidPort),
        Ok(p) => Ok(p),
    }
}

fn normalize_target(path_and_query: &str) -> Result<String, UrlError> {
    let mut target = String::with_capacity(path_and_query.len() + 1);
    if !path_and_query.starts_with('/') {
        target.push('/');
    }
    let bytes = path_and_query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let valid = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !valid {
                return Err(UrlError::InvalidPercentEncoding);
            }
        }
        if b.is_ascii() {
            target.push(b as char);
        } else {
            // Non-ASCII (already known to be UTF-8) travels percent-encoded, as browsers do.
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            target.push('%');
            target.push(HEX[usize::from(b >> 4)] as char);
            target.push(HEX[usize::from(b & 0xf)] as char);
        }
        i += 1;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn accepts_table() {
        use UrlScheme::*;
        let cases: &[(&str, UrlScheme, &str, u16, &str, &str)] = &[
            (
                "http://example.com",
                Http,
                "example.com",
                80,
                "/",
                "example.com",
            ),
            (
                "https://example.com",
                Https,
                "example.com",
                443,
                "/",
                "example.com",
            ),
            (
                "HTTPS://Example.COM/Hook",
                Https,
                "example.com",
                443,
                "/Hook",
                "example.com",
            ),
            (
                "https://a.b:8443/x?y=1",
                Https,
                "a.b",
                8443,
                "/x?y=1",
                "a.b:8443",
            ),
            ("http://a.b:80/", Http, "a.b", 80, "/", "a.b"),
            ("http://a-b.c_d/", Http, "a-b.c_d", 80, "/", "a-b.c_d"),
            ("http://a.b:/p", Http, "a.b", 80, "/p", "a.b"),
            ("http://a.b?q", Http, "a.b", 80, "/?q", "a.b"),
            ("http://a.b/p#frag", Http, "a.b", 80, "/p", "a.b"),
            ("http://a.b#frag", Http, "a.b", 80, "/", "a.b"),
            (
                "http://10.0.0.1:9000/h",
                Http,
                "10.0.0.1",
                9000,
                "/h",
                "10.0.0.1:9000",
            ),
            ("http://[::1]/", Http, "::1", 80, "/", "[::1]"),
            (
                "https://[2001:DB8::1]:8443/a",
                Https,
                "2001:db8::1",
                8443,
                "/a",
                "[2001:db8::1]:8443",
            ),
            (
                "http://host.example./x",
                Http,
                "host.example",
                80,
                "/x",
                "host.example",
            ),
            (
                "http://my_host-1/x%20y",
                Http,
                "my_host-1",
                80,
                "/x%20y",
                "my_host-1",
            ),
            ("http://h/caf\u{e9}", Http, "h", 80, "/caf%C3%A9", "h"),
            ("http://h:65535", Http, "h", 65535, "/", "h:65535"),
        ];
        for &(input, scheme, host, port, target, host_header) in cases {
            let url = ok(input);
            assert_eq!(url.scheme, scheme, "{input}");
            assert_eq!(url.host, host, "{input}");
            assert_eq!(url.port, port, "{input}");
            assert_eq!(url.target, target, "{input}");
            assert_eq!(url.host_header(), host_header, "{input}");
            let mut appended = String::from("kept:");
            url.write_host_header(&mut appended);
            assert_eq!(appended, format!("kept:{host_header}"), "{input}");
        }
    }

    #[test]
    fn rejects_table() {
        let long = format!("http://h/{}", "a".repeat(URL_BYTES_MAX));
        let cases: &[(&str, UrlError)] = &[
            ("", UrlError::UnsupportedScheme),
            ("example.com", UrlError::UnsupportedScheme),
            ("ftp://example.com", UrlError::UnsupportedScheme),
            ("http:/example.com", UrlError::UnsupportedScheme),
            ("http://", UrlError::MissingHost),
            ("http:///path", UrlError::MissingHost),
            ("http://:80/", UrlError::MissingHost),
            ("http://user:pw@h/", UrlError::UserinfoNotAllowed),
            ("http://@h/", UrlError::UserinfoNotAllowed),
            ("http://h /", UrlError::InvalidCharacter { index: 8 }),
            (" http://h/", UrlError::InvalidCharacter { index: 0 }),
            ("http://h/\r\nX: y", UrlError::InvalidCharacter { index: 9 }),
            ("http://h/\0", UrlError::InvalidCharacter { index: 9 }),
            ("http://h/\t", UrlError::InvalidCharacter { index: 9 }),
            ("http://h/\x7f", UrlError::InvalidCharacter { index: 9 }),
            ("http://h:0/", UrlError::InvalidPort),
            ("http://h:65536/", UrlError::InvalidPort),
            ("http://h:-1/", UrlError::InvalidPort),
            ("http://h:8o/", UrlError::InvalidPort),
            ("http://h:000080/", UrlError::InvalidPort),
            ("http://h:1:2/", UrlError::InvalidPort),
            ("http://[::1/", UrlError::InvalidHost),
            ("http://[::1]x/", UrlError::InvalidHost),
            ("http://[fe80::1%25eth0]/", UrlError::InvalidHost),
            ("http://[nothex]/", UrlError::InvalidHost),
            ("http://a..b/", UrlError::InvalidHost),
            ("http://a!b/", UrlError::InvalidHost),
            ("http://-a.example/", UrlError::InvalidHost),
            ("http://a-.example/", UrlError::InvalidHost),
            ("http://a.-example/", UrlError::InvalidHost),
            ("http://127.1/", UrlError::InvalidHost),
            ("http://0x7f.0.0.1/", UrlError::InvalidHost),
            ("http://017700000001/", UrlError::InvalidHost),
            ("http://256.0.0.1/", UrlError::InvalidHost),
            ("http://a.0x10/", UrlError::InvalidHost),
            ("http://b\u{fc}cher.example/", UrlError::InvalidHost),
            ("http://h/%zz", UrlError::InvalidPercentEncoding),
            ("http://h/%4", UrlError::InvalidPercentEncoding),
            (
                &long,
                UrlError::TooLong {
                    len: long.len(),
                    max: URL_BYTES_MAX,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Url::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn label_and_host_length_limits() {
        let label63 = "a".repeat(63);
        ok(&format!("http://{label63}.com/"));
        let label64 = "a".repeat(64);
        assert_eq!(
            Url::parse(&format!("http://{label64}.com/")),
            Err(UrlError::InvalidHost)
        );
        let host = vec!["abc"; 64].join("."); // 255 bytes
        assert_eq!(
            Url::parse(&format!("http://{host}/")),
            Err(UrlError::InvalidHost)
        );
        let exact = format!("http://h/{}", "a".repeat(URL_BYTES_MAX - 9));
        assert_eq!(exact.len(), URL_BYTES_MAX);
        ok(&exact);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "http://example.com/",
            "https://example.com:8443/a/b?c=d",
            "http://[::1]:8080/x",
            "https://10.1.2.3/",
        ] {
            let url = ok(s);
            assert_eq!(url.to_string(), s);
            assert_eq!(ok(&url.to_string()), url);
        }
        assert_eq!(ok("HTTP://H:80/p#f").to_string(), "http://h/p");
    }

    #[test]
    fn ip_literal() {
        assert_eq!(
            ok("http://[::1]/").ip_literal(),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            ok("http://1.2.3.4/").ip_literal(),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(ok("http://h/").ip_literal(), None);
    }
}
