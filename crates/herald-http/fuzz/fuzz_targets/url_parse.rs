//! Url::parse never panics, and whatever it accepts prints back to the same Url.
#![no_main]

use herald_http::{Url, URL_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = Url::parse(s) {
        assert!(s.len() <= URL_BYTES_MAX);
        assert!(url.target.starts_with('/'));
        assert!(url.target.bytes().all(|b| b.is_ascii_graphic()));
        assert!(url.host.bytes().all(|b| b.is_ascii_graphic()));
        assert_ne!(url.port, 0);
        let printed = url.to_string();
        assert_eq!(Url::parse(&printed).as_ref(), Ok(&url), "{printed}");
    }
});
