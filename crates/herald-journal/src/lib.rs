//! Memory-mapped, append-only, CRC-checked rkyv journal with group commit and recovery
#![forbid(unsafe_code)]
