//! Where an event's envelope is kept while its deliveries wait.
//!
//! The journal already holds every accepted event's envelope (in its `EventAccepted`
//! record, and in the checkpoint that later summarises it), and its segments are mapped
//! read-only. So once the driver has journaled an event it tells the dispatcher where
//! the envelope lies ([`crate::Dispatcher::body_stored`]), and the dispatcher keeps that
//! position instead of a copy: a million deliveries waiting for a receiver that is down
//! hold no heap copy of their bodies. The bytes are read back through a [`BodyStore`]
//! (the driver's view of the journal) when an attempt is signed and when a checkpoint
//! copies them; a checkpoint then tells the dispatcher the bodies' new positions
//! ([`crate::Dispatcher::checkpoint_stored`]), because the segments before it may be
//! deleted once it is durable.
//!
//! A driver that never reports positions (unit tests, say) keeps every body in memory
//! and may pass [`Held`] as the store.

pub use bytes::Bytes;

/// Where an envelope lies in the journal, as the driver reported it. The core does not
/// interpret it; it hands it back to the [`BodyStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BodyPos {
    /// The journal segment (its first sequence number).
    pub segment: u64,
    /// Byte offset in the segment (segments are at most 1 GiB).
    pub offset: u32,
    /// Length of the envelope in bytes.
    pub len: u32,
}

/// Where a record's payload lies in the journal (the journal's own position, as the
/// driver reads it from an append or a replayed frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadAt {
    /// The journal segment (its first sequence number).
    pub segment: u64,
    /// Byte offset of the payload in the segment.
    pub offset: u64,
}

impl PayloadAt {
    /// The body at `span` (offset in the payload, length), as found by
    /// [`crate::record::body_spans`]; `None` past what a [`BodyPos`] can name.
    pub fn body(self, (offset, len): (u32, u32)) -> Option<BodyPos> {
        let offset = self.offset.checked_add(u64::from(offset))?;
        Some(BodyPos {
            segment: self.segment,
            offset: u32::try_from(offset).ok()?,
            len,
        })
    }
}

/// Reads envelopes back from where the driver stored them.
pub trait BodyStore {
    /// The `at.len` bytes at `at`, or `None` when the store no longer holds them (a bug
    /// in whoever reported the position: the dispatcher refuses to go on without a body
    /// it was promised).
    fn body(&self, at: BodyPos) -> Option<&[u8]>;

    /// The same bytes as an owned [`Bytes`] a request can carry past this call (to a
    /// socket, across awaits). The default copies them; a store whose bytes can be held
    /// (a mapping kept alive by a count) returns them without a copy.
    fn shared(&self, at: BodyPos) -> Option<Bytes> {
        self.body(at).map(Bytes::copy_from_slice)
    }
}

/// The store of a driver that keeps every body in memory: it holds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held;

impl BodyStore for Held {
    fn body(&self, _at: BodyPos) -> Option<&[u8]> {
        None
    }
}
