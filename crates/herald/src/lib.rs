//! Herald: embeddable high-throughput outbound webhook dispatch engine
#![forbid(unsafe_code)]
