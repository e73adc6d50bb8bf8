//! Giving freed memory back to the system when a shard has just freed much of it.
//!
//! An allocator that caches freed pages per thread (mimalloc does) keeps what a shard
//! freed resident until that thread allocates again or the cache is collected. A shard
//! frees in bursts: a checkpoint's parts and its copies of the deliveries it had yet to
//! write when it ends, replay's buffers once the state is rebuilt, everything when it
//! stops. With a backlog of a million pending deliveries, what the checkpoint left
//! cached was ~30 MiB of `RssAnon` (~30 bytes per pending delivery) that nothing would
//! ask back. The engine does not know the process's allocator, so the process says how
//! to collect it ([`set_memory_release`]; the `herald` binary gives mimalloc's
//! `mi_collect`), and a shard calls it on its own thread at those moments only: never per
//! delivery, so its cost (1–3 ms for such a backlog) is paid a few times per checkpoint
//! period, not on the delivery path.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how to give the allocator's freed memory back to the system, for the whole
/// process (the allocator is the process's); the first registration stands, and a later
/// one returns `Err` with the function it was given. Every shard calls it on its own
/// thread once replay has rebuilt its state, when a checkpoint ends and when it stops.
/// With mimalloc as the global allocator: `|| unsafe { libmimalloc_sys::mi_collect(true) }`.
pub fn set_memory_release(release: fn()) -> Result<(), fn()> {
    RELEASE.set(release)
}

/// Gives freed memory back, if the process said how.
pub(crate) fn release_freed_memory() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
