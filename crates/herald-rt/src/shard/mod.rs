//! Shards: one glommio executor thread per shard, each owning its tenants' journal,
//! dispatcher state and HTTP client, fed from foreign threads through bounded queues.

mod intake;
mod oneshot;
mod route;
mod wake;

pub use oneshot::{reply_channel, Canceled, Reply, ReplyReceiver, WaitTimeoutError};
pub use route::{fnv1a_64, shard_of};
