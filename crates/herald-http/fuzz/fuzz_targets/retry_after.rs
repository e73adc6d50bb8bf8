//! parse_retry_after never panics; delays are consistent with the text.
#![no_main]

use herald_http::{parse_retry_after, RetryAfter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_retry_after(data) {
        Some(RetryAfter::DelaySeconds(_)) => {
            assert!(data.iter().any(u8::is_ascii_digit));
        }
        Some(at @ RetryAfter::AtUnixSeconds(_)) => {
            // Any `now` must give a delay without overflow or panic.
            let _ = at.delay_ms(0);
            let _ = at.delay_ms(u64::MAX);
        }
        None => {}
    }
});
