//! Herald's end-to-end suite: every test starts the real `herald serve` binary on a
//! temporary data directory and a free loopback port, drives its REST API over HTTP,
//! and receives its deliveries with `herald-sink`, verifying every signature.
//!
//! See `tests/README.md` for what each module covers and how to run it.

mod config;
mod console;
mod crash;
mod egress;
mod errors;
mod hostile_clients;
mod hostile_receivers;
mod inbound;
mod isolation;
mod listener;
mod overload;
mod readme;
mod restart;
mod schemathesis;
mod schemes;
mod storage;
mod story;
mod tenants;
mod tls;
mod ws;

/// Server config with a short default retry schedule, so that retries and exhaustion
/// happen within a test.
pub const FAST_RETRIES: &str = "[retry]\nschedule_s = [0.2, 0.4]\n";
