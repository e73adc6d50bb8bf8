//! The operator console served at `/console`: one HTML page, one stylesheet and one
//! script, embedded in the binary (no build step, nothing fetched at run time).
//!
//! The console is a client of the REST API only: the page signs in with an API key kept
//! in the tab's `sessionStorage` and sends it on each API call it makes with `fetch`,
//! exactly as `curl` would. The assets themselves are public (they hold no data), so
//! they are served without authentication.
//!
//! Every asset is answered with a strict `Content-Security-Policy` (no inline script or
//! style, no framing, API calls to this origin only) and `X-Content-Type-Options:
//! nosniff`; the script renders everything that comes from receivers and events as text
//! (DOM text nodes, never HTML).

use crate::Response;

/// The policy every console answer carries: scripts and styles from this origin only
/// (no inline code, no `eval`), images from this origin or `data:` (the favicon),
/// `fetch` to this origin only, never framed (clickjacking), no `<base>` rewriting, and
/// forms submitted to this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// Most bytes the first page may load (HTML, stylesheet and script together): the
/// console must open quickly on a slow link. Checked by a test.
pub const FIRST_PAGE_BYTES_MAX: usize = 200 * 1024;

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// Name under `/console/` (empty for the page itself).
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

/// The page: `/console` and `/console/`.
pub const INDEX: &Asset = &Asset {
    name: "",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../console/index.html"),
};

/// Every asset, the page first.
pub const ASSETS: [&Asset; 3] = [
    INDEX,
    &Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../console/console.css"),
    },
    &Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../console/console.js"),
    },
];

/// The asset a path names: `["console"]`, `["console", ""]` or `["console", name]`.
pub fn find(segments: &[&str]) -> Option<&'static Asset> {
    match segments {
        ["console"] | ["console", ""] => Some(INDEX),
        ["console", name] if !name.is_empty() => {
            ASSETS.iter().copied().find(|asset| asset.name == *name)
        }
        _ => None,
    }
}

/// The answer for `asset`, with the console's security headers.
pub fn response(asset: &Asset) -> Response {
    Response {
        content_type: asset.content_type,
        body: asset.body.as_bytes().to_vec(),
        ..Response::empty(200)
    }
    .with_header(
        "Content-Security-Policy",
        CONTENT_SECURITY_POLICY.to_string(),
    )
    .with_header("X-Content-Type-Options", "nosniff".to_string())
    // For browsers that predate `frame-ancestors`.
    .with_header("X-Frame-Options", "DENY".to_string())
    // Console paths hold no secrets, but nothing about them needs to leave either.
    .with_header("Referrer-Policy", "no-referrer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_embedded_assets_only() {
        assert_eq!(find(&["console"]), Some(INDEX));
        assert_eq!(find(&["console", ""]), Some(INDEX));
        assert_eq!(
            find(&["console", "console.js"]).map(|a| a.name),
            Some("console.js")
        );
        assert_eq!(
            find(&["console", "console.css"]).map(|a| a.name),
            Some("console.css")
        );
        for missing in [
            &["console", "nope.js"][..],
            &["console", "..", "openapi.json"],
            &["console", "console.js", "x"],
            &["consoles"],
        ] {
            assert_eq!(find(missing), None, "{missing:?}");
        }
    }

    #[test]
    fn answers_carry_the_security_headers() {
        for asset in ASSETS {
            let answer = response(asset);
            assert_eq!(answer.status, 200);
            let header = |name: &str| {
                answer
                    .headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                header("Content-Security-Policy"),
                Some(CONTENT_SECURITY_POLICY)
            );
            assert_eq!(header("X-Content-Type-Options"), Some("nosniff"));
            assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
            assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        }
    }

    #[test]
    fn the_first_page_is_small() {
        let total: usize = ASSETS.iter().map(|asset| asset.body.len()).sum();
        assert!(
            total < FIRST_PAGE_BYTES_MAX,
            "the console's assets weigh {total} bytes; the first page must stay under {FIRST_PAGE_BYTES_MAX}"
        );
    }

    /// The policy forbids inline code; the page must not rely on it (it would silently
    /// not run), and it must load exactly the embedded assets.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = INDEX.body.to_ascii_lowercase();
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline <style>");
        // An event handler attribute: ` on<letters>=` inside a tag.
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let after = html[at + 3 + name.len()..].trim_start();
            assert!(
                name.is_empty() || !after.starts_with('='),
                "inline event handler attribute on{name}"
            );
        }
        let mut rest = html.as_str();
        let mut scripts = 0;
        while let Some(at) = rest.find("<script") {
            let tag_end = rest[at..].find('>').expect("script tags are closed") + at;
            let tag = &rest[at..tag_end];
            assert!(
                tag.contains("src=\"/console/console.js\""),
                "inline script: {tag}"
            );
            scripts += 1;
            rest = &rest[tag_end..];
        }
        assert_eq!(scripts, 1);
        assert!(html.contains("href=\"/console/console.css\""));
    }

    /// Data from receivers and events is rendered as text: the script never hands a
    /// string to the HTML parser or to the JavaScript compiler.
    #[test]
    fn the_script_never_parses_strings_as_html_or_code() {
        let script = ASSETS[2].body;
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "DOMParser",
            "createContextualFragment",
            "eval(",
            "new Function",
            "setTimeout('",
            "setTimeout(\"",
            "srcdoc",
            "javascript:",
        ] {
            assert!(!script.contains(forbidden), "console.js uses {forbidden}");
        }
        assert!(
            script.starts_with("// "),
            "console.js opens with its comment"
        );
        assert!(script.contains("'use strict'"));
    }
}
