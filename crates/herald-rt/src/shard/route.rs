//! Tenant → shard routing.
//!
//! Journals are per shard, so the mapping from a tenant to its shard is part of the
//! on-disk format: it must be the same in every process, on every machine, in every
//! release. Rust's `DefaultHasher` is randomly keyed per process and is therefore not
//! usable here; FNV-1a (64-bit) is fixed, tiny and well distributed for short ids.

/// FNV-1a 64-bit offset basis (fixed by the FNV specification).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime (fixed by the FNV specification).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64-bit hash of `bytes`. Stable across runs, platforms and releases.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The shard that owns `tenant_id` among `shards` shards:
/// `fnv1a_64(tenant_id as UTF-8 bytes) % shards`.
///
/// Pure and stable: a data directory written with `shards` shards must be reopened with
/// the same count, or tenants would be looked for in the wrong journal. `shards == 0` is
/// treated as 1 (everything on shard 0) rather than dividing by zero.
pub fn shard_of(tenant_id: &str, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    // The remainder is < shards, which came from a usize, so the cast back cannot truncate.
    (fnv1a_64(tenant_id.as_bytes()) % shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values from the FNV specification's test suite.
        let cases: &[(&str, u64)] = &[
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ];
        for &(input, expected) in cases {
            assert_eq!(fnv1a_64(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn shard_of_is_pinned_for_known_tenants() {
        // These values are part of the on-disk format; a change here breaks every
        // existing data directory.
        let cases: &[(&str, usize, usize)] = &[
            // Computed independently (FNV-1a 64 of the UTF-8 bytes, then modulo).
            ("acme", 1, 0),
            ("acme", 2, 1),
            ("acme", 3, 2),
            ("acme", 8, 7),
            ("globex", 2, 0),
            ("globex", 8, 6),
            ("tenant-1", 3, 0),
            ("tenant-1", 8, 3),
        ];
        for &(tenant, shards, expected) in cases {
            assert_eq!(
                shard_of(tenant, shards),
                expected,
                "{tenant:?} over {shards}"
            );
        }
    }

    #[test]
    fn zero_shards_means_one() {
        assert_eq!(shard_of("anything", 0), 0);
    }

    proptest::proptest! {
        #[test]
        fn shard_is_in_range_and_deterministic(tenant in ".{0,64}", shards in 1usize..64) {
            let first = shard_of(&tenant, shards);
            proptest::prop_assert!(first < shards);
            proptest::prop_assert_eq!(first, shard_of(&tenant, shards));
        }
    }

    #[test]
    fn tenants_spread_over_shards() {
        let shards = 4;
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("tenant-{i}"), shards)] += 1;
        }
        // A fair hash puts ~1000 in each; a broken one (constant, or using only the
        // length) puts everything in one or two.
        for (shard, &count) in counts.iter().enumerate() {
            assert!((700..=1300).contains(&count), "shard {shard} got {count}");
        }
    }
}
