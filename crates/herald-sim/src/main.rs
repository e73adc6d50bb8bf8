//! Seeded deterministic simulation of the Herald dispatch core
#![forbid(unsafe_code)]
fn main() {}
