//! Per-shard webhook dispatch state machine: registry, matcher, retry policy, timing wheel, endpoint health
#![forbid(unsafe_code)]

pub mod wheel;
