//! Generic rkyv helpers: the journal stores bytes and knows nothing of the
//! record types; callers encode their records with these.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::error::JournalError;

/// Serializes `value` into 16-byte aligned bytes ready for
/// [`crate::Journal::append`].
pub fn encode<T>(value: &T) -> Result<AlignedVec, JournalError>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| JournalError::Payload {
        message: e.to_string(),
    })
}

/// Accesses an archived value in `payload` after checking it with bytecheck.
/// `payload` must be aligned for `T` (journal frames are 16-byte aligned).
pub fn access<T>(payload: &[u8]) -> Result<&T, JournalError>
where
    T: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(payload).map_err(|e| JournalError::Payload {
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Sample {
        id: u64,
        name: String,
        tags: Vec<u32>,
    }

    #[test]
    fn encode_then_access_round_trips() {
        let value = Sample {
            id: 7,
            name: "order.created".into(),
            tags: vec![1, 2, 3],
        };
        let bytes = encode(&value).unwrap();
        let archived = access::<ArchivedSample>(&bytes).unwrap();
        assert_eq!(archived.id, 7);
        assert_eq!(archived.name.as_str(), "order.created");
        assert_eq!(archived.tags.len(), 3);
    }

    #[test]
    fn access_rejects_garbage() {
        let value = Sample {
            id: 7,
            name: "x".into(),
            tags: vec![],
        };
        let bytes = encode(&value).unwrap();
        let mut broken = AlignedVec::<16>::new();
        broken.extend_from_slice(&bytes[..bytes.len() - 4]);
        assert!(matches!(
            access::<ArchivedSample>(&broken),
            Err(JournalError::Payload { .. })
        ));
    }
}
