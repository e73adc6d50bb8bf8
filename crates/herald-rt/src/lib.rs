//! Herald runtime: glommio thread-per-core shards, TCP and rustls, connection pools, egress guard
pub mod shard;
