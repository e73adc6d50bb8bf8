//! Differential target: the response parser must reach the same outcome whether the
//! input arrives whole or cut at fuzzer-chosen points, and must never panic.
#![no_main]

use herald_http::{HttpError, Limits, Response, ResponseParser};
use libfuzzer_sys::fuzz_target;

fn run(
    wire: &[u8],
    cuts: &[usize],
    limits: Limits,
    head_mask: u8,
) -> Result<Vec<Response>, HttpError> {
    let mut parser = ResponseParser::new(limits);
    let mut out = Vec::new();
    parser.set_request_is_head(head_mask & 1 == 1);
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
        let mut chunk = &wire[start..end];
        start = end;
        while !chunk.is_empty() {
            let (n, response) = parser.feed(chunk)?;
            assert!(n <= chunk.len());
            chunk = &chunk[n..];
            match response {
                Some(r) => {
                    assert!(r.body.len() <= limits.body_captured_bytes_max);
                    assert!(r.body_bytes_total <= limits.body_bytes_max);
                    out.push(r);
                    parser.set_request_is_head((head_mask >> (out.len() % 8)) & 1 == 1);
                }
                None => assert!(chunk.is_empty()),
            }
        }
    }
    if let Some(r) = parser.feed_eof()? {
        out.push(r);
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (control, wire) = data.split_at(3);
    let limits = Limits {
        head_bytes_max: 64 + usize::from(control[0]) * 8,
        header_count_max: usize::from(control[1] % 16),
        body_captured_bytes_max: 32,
        body_bytes_max: 512,
        chunk_line_bytes_max: 24,
        informational_count_max: 2,
    };
    let head_mask = control[2];
    // Cut points derived from the data itself so that the fuzzer explores splits.
    let step = usize::from(control[0] % 13) + 1;
    let cuts: Vec<usize> = (step..wire.len()).step_by(step).collect();
    let whole = run(wire, &[], limits, head_mask);
    let split = run(wire, &cuts, limits, head_mask);
    assert_eq!(whole, split);
});
