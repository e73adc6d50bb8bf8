//! Drivers that feed a parser the same bytes in different chunkings.
#![allow(dead_code)] // reason: each test binary uses a different subset of the helpers

use herald_http::{HttpError, Limits, Request, RequestParser, Response, ResponseParser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Ways of cutting the input into chunks.
#[derive(Debug, Clone, Copy)]
pub enum Split {
    Whole,
    ByteAtATime,
    Random(u64),
}

/// Every chunking a case is run under: whole, byte-at-a-time and 16 seeded random splits.
pub fn splits() -> impl Iterator<Item = Split> {
    [Split::Whole, Split::ByteAtATime]
        .into_iter()
        .chain((0..16).map(Split::Random))
}

pub fn chunks(wire: &[u8], split: Split) -> Vec<&[u8]> {
    match split {
        Split::Whole => vec![wire],
        Split::ByteAtATime => wire.chunks(1).collect(),
        Split::Random(seed) => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut out = Vec::new();
            let mut rest = wire;
            while !rest.is_empty() {
                // Mostly small pieces, now and then a large one.
                let max = if rng.random_bool(0.2) {
                    rest.len()
                } else {
                    7.min(rest.len())
                };
                let n = rng.random_range(1..=max);
                let (piece, tail) = rest.split_at(n);
                out.push(piece);
                rest = tail;
            }
            out
        }
    }
}

/// Parses every response in `wire`, then signals EOF. `head_flags[i]` says whether
/// response i answers a HEAD request.
pub fn parse_responses(
    wire: &[u8],
    split: Split,
    limits: Limits,
    head_flags: &[bool],
) -> Result<Vec<Response>, HttpError> {
    let mut parser = ResponseParser::new(limits);
    let mut out = Vec::new();
    parser.set_request_is_head(head_flags.first().copied().unwrap_or(false));
    for chunk in chunks(wire, split) {
        let mut pos = 0;
        while pos < chunk.len() {
            let (n, response) = parser.feed(&chunk[pos..])?;
            assert!(n <= chunk.len() - pos, "consumed more than given");
            pos += n;
            match response {
                Some(response) => {
                    out.push(response);
                    parser.set_request_is_head(head_flags.get(out.len()).copied().unwrap_or(false));
                }
                None => assert_eq!(pos, chunk.len(), "stopped early without a response"),
            }
        }
    }
    // A final response with an empty body can complete without further input.
    loop {
        let (n, response) = parser.feed(&[])?;
        assert_eq!(n, 0);
        match response {
            Some(response) => out.push(response),
            None => break,
        }
    }
    if let Some(response) = parser.feed_eof()? {
        out.push(response);
    }
    assert!(parser.is_idle());
    Ok(out)
}

/// Parses every request in `wire`, then signals EOF.
pub fn parse_requests(
    wire: &[u8],
    split: Split,
    limits: Limits,
) -> Result<Vec<Request>, HttpError> {
    let mut parser = RequestParser::new(limits);
    let mut out = Vec::new();
    for chunk in chunks(wire, split) {
        let mut pos = 0;
        while pos < chunk.len() {
            let (n, request) = parser.feed(&chunk[pos..])?;
            assert!(n <= chunk.len() - pos, "consumed more than given");
            pos += n;
            match request {
                Some(request) => out.push(request),
                None => assert_eq!(pos, chunk.len(), "stopped early without a request"),
            }
        }
    }
    loop {
        let (n, request) = parser.feed(&[])?;
        assert_eq!(n, 0);
        match request {
            Some(request) => out.push(request),
            None => break,
        }
    }
    parser.feed_eof()?;
    Ok(out)
}
