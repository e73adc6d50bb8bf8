//! Differential target for the server-side request parser: whole vs split input.
#![no_main]

use herald_http::{HttpError, Limits, Request, RequestParser};
use libfuzzer_sys::fuzz_target;

fn run(wire: &[u8], step: usize, limits: Limits) -> Result<Vec<Request>, HttpError> {
    let mut parser = RequestParser::new(limits);
    let mut out = Vec::new();
    for mut chunk in wire.chunks(step) {
        while !chunk.is_empty() {
            let (n, request) = parser.feed(chunk)?;
            assert!(n <= chunk.len());
            chunk = &chunk[n..];
            match request {
                Some(r) => {
                    assert!(r.body.len() <= limits.body_captured_bytes_max);
                    out.push(r);
                }
                None => assert!(chunk.is_empty()),
            }
        }
    }
    parser.feed_eof()?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        head_bytes_max: 256,
        header_count_max: usize::from(control % 8),
        body_captured_bytes_max: 16,
        body_bytes_max: 256,
        chunk_line_bytes_max: 16,
        informational_count_max: 2,
    };
    let step = usize::from(control / 8) + 1;
    assert_eq!(
        run(wire, wire.len().max(1), limits),
        run(wire, step, limits)
    );
});
