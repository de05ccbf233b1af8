//! Stream-to-partition mapping: a stable hash of the stream name modulo P.
//!
//! FNV-1a (64 bit) is used because it is tiny, fast on short keys and, unlike std's
//! `DefaultHasher`, guaranteed stable across Rust versions and processes: the mapping is
//! part of the stored data's layout.

/// FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of `stream` among `partitions`.
pub fn partition_of(stream: &str, partitions: u32) -> u32 {
    (fnv1a(stream.as_bytes()) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_stable() {
        // Known FNV-1a vectors; a change here would move streams between partitions.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(partition_of("job-1", 1), 0);
    }

    #[test]
    fn streams_spread_over_partitions() {
        let mut counts = [0u32; 16];
        for i in 0..1600 {
            counts[partition_of(&format!("job-{i:08}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
    }
}
