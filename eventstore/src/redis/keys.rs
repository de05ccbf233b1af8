//! The Redis key layout of the event store (documented in README.md).
//!
//! ```text
//! <prefix>:meta                         hash: partitions, layout
//! <prefix>:{p<N>}:log                   stream: the partition log; entry id = position; field `event`
//! <prefix>:{p<N>}:v:<bucket>            hash: stream name -> current version (authoritative);
//!                                       bucket = fnv1a(stream) >> 32 mod 1024
//! <prefix>:{p<N>}:h:<stream>            list: log entry id of each version (index = version - 1)
//! <prefix>:{p<N>}:idem:<stream>:<key>   string with TTL: "<fingerprint>\n<first> <last> <ids>"
//! <prefix>:reserve:<name>               string with TTL: the id a create's idempotency key reserved
//! <prefix>:{p<N>}:q:queues              set: names of the partition's ready queues
//! <prefix>:{p<N>}:q:ready:<queue>       zset: ready job streams by priority, then time
//! <prefix>:{p<N>}:q:idx                 hash: stream -> "queue\nversions key\nversion\nattempt\nscore"
//! <prefix>:{p<N>}:q:delayed             zset: delayed job streams by available_at (ms)
//! <prefix>:{p<N>}:q:leases              zset: leased job streams by deadline (ms)
//! <prefix>:{p<N>}:q:lease               hash: stream -> "worker\nmachine\nattempt\nlease_ms"
//! ```
//! The envelope is stored once, in the partition log; a stream's history is only the list of
//! its entry ids (~17 bytes per event), which is what keeps memory per event low.

/// Number of version-counter hashes per partition (part of the layout: fixed).
pub const VERSION_BUCKETS: u64 = 1024;

/// Key builder for one store prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The store's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:meta`.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// `<prefix>:{p<N>}:log`.
    pub fn log(&self, partition: u32) -> String {
        format!("{}:{{p{partition}}}:log", self.prefix)
    }

    /// `<prefix>:{p<N>}:v:<bucket>`: the version counter hash holding `stream`.
    ///
    /// Counters are spread over [`VERSION_BUCKETS`] small hashes per partition instead of
    /// one big hash: small hashes stay in Redis' compact listpack encoding (less memory),
    /// and lookups in them stay short (a 512-entry listpack costs ~5 us per HGET/HSET,
    /// measured).
    pub fn versions(&self, partition: u32, stream: &str) -> String {
        let bucket = (crate::partition::fnv1a(stream.as_bytes()) >> 32) % VERSION_BUCKETS;
        format!("{}:{{p{partition}}}:v:{bucket}", self.prefix)
    }

    /// `<prefix>:{p<N>}:h:<stream>`.
    pub fn history(&self, partition: u32, stream: &str) -> String {
        format!("{}:{{p{partition}}}:h:{stream}", self.prefix)
    }

    /// `<prefix>:reserve:<name>` (an id reserved for an idempotency key).
    pub fn reservation(&self, name: &str) -> String {
        format!("{}:reserve:{name}", self.prefix)
    }

    /// `<prefix>:{p<N>}:`: the start of every key of partition `p` (scripts derive the
    /// ready-queue and history keys from it; they share the tag, hence the slot).
    pub fn tag(&self, partition: u32) -> String {
        format!("{}:{{p{partition}}}:", self.prefix)
    }

    /// `<prefix>:{p<N>}:q:<name>`: a key of the partition's queue index.
    pub fn queue(&self, partition: u32, name: &str) -> String {
        format!("{}:{{p{partition}}}:q:{name}", self.prefix)
    }

    /// `<prefix>:{p<N>}:idem:<stream>:<key>`.
    pub fn idempotency(&self, partition: u32, stream: &str, key: &str) -> String {
        format!("{}:{{p{partition}}}:idem:{stream}:{key}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_key_carries_the_hash_tag() {
        let k = Keys::new("js");
        assert_eq!(k.log(7), "js:{p7}:log");
        assert!(k.versions(7, "job-1").starts_with("js:{p7}:v:"));
        assert_eq!(k.versions(7, "job-1"), k.versions(7, "job-1"));
        assert_eq!(k.history(7, "job-1"), "js:{p7}:h:job-1");
        assert_eq!(k.idempotency(7, "job-1", "k"), "js:{p7}:idem:job-1:k");
        assert_eq!(k.meta(), "js:meta");
    }
}
