//! The `redis` read model: its writer ([`model`], with the machine hashes of
//! [`machines`]), its background rebuild ([`rebuild`]) and its reader ([`reader`]), which
//! is the only other code that knows the key and field names.

pub mod machines;
pub mod model;
pub mod reader;
pub mod rebuild;

/// The read model's namespace: `read_prefix` when set, else the store's `prefix`.
///
/// On a Redis Cluster the model's scripts apply a batch (many jobs, workflows, the global
/// sets such as `<rm>:jobs:pending`, and the checkpoint) atomically, so every key of the
/// model must be in one slot: the namespace needs a hash tag (`{...}`). The default there
/// is `{<prefix>}`; a set `JOBSOURCE_READ_PREFIX` without a tag (or empty, the seed's bare
/// keys) is refused with an error naming the setting.
pub fn read_namespace(
    read_prefix: Option<&str>,
    prefix: &str,
    cluster: bool,
) -> Result<String, String> {
    match read_prefix {
        None if cluster => Ok(format!("{{{prefix}}}")),
        None => Ok(prefix.to_owned()),
        Some(rm) if cluster && !has_hash_tag(rm) => Err(format!(
            "JOBSOURCE_READ_PREFIX={rm:?} has no hash tag: on a Redis Cluster the read model's \
             keys must share one slot, so the namespace needs one, e.g. \"{{{}}}\"",
            if rm.is_empty() { prefix } else { rm }
        )),
        Some(rm) => Ok(rm.to_owned()),
    }
}

/// Whether `key` has a non-empty `{...}` hash tag (Redis Cluster's rule: the first `{`
/// and the first `}` after it).
pub fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn cluster_namespaces_carry_a_hash_tag() {
        assert_eq!(read_namespace(None, "js", false).as_deref(), Ok("js"));
        assert_eq!(read_namespace(None, "js", true).as_deref(), Ok("{js}"));
        assert_eq!(read_namespace(Some(""), "js", false).as_deref(), Ok(""));
        assert!(read_namespace(Some(""), "js", true).is_err());
        assert!(read_namespace(Some("rm"), "js", true)
            .unwrap_err()
            .contains("JOBSOURCE_READ_PREFIX"));
        assert_eq!(
            read_namespace(Some("{rm}"), "js", true).as_deref(),
            Ok("{rm}")
        );
        assert!(!has_hash_tag("a{}b"));
        assert!(has_hash_tag("x:{t}:y"));
    }
}
