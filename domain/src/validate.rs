//! Shared validation rules.

/// Longest accepted job type name.
pub const MAX_TYPE_LEN: usize = 64;

/// True when `t` matches `[a-z0-9][a-z0-9._-]{0,63}` (hand-written: no regex engine needed).
pub fn is_valid_job_type(t: &str) -> bool {
    let bytes = t.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= MAX_TYPE_LEN
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// The message used when a job type is invalid.
pub fn job_type_message(t: &str) -> String {
    format!("job type {t:?} must match [a-z0-9][a-z0-9._-]{{0,63}}")
}

/// Longest accepted machine (and worker) id.
pub const MAX_MACHINE_ID_LEN: usize = 128;

/// True when `id` matches `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}` (machine and worker ids).
pub fn is_valid_machine_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.len() <= MAX_MACHINE_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The message used when a machine or worker id is invalid.
pub fn machine_id_message(id: &str) -> String {
    format!("{id:?} must match [A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}")
}

/// The characters an accepted URL is made of after its scheme: RFC 3986's unreserved and
/// reserved characters and `%`, without `[` `]` (IPv6 literal hosts are not accepted).
pub const URL_CHARS: &str = "A-Za-z0-9._~:/?#@!$&'()*+,;=%-";

/// True when `url` is `http://` or `https://` followed by [`URL_CHARS`] only, with a
/// host and no credentials (`user:password@`) in it.
pub fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty()
        && !authority.contains('@')
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:/?#@!$&'()*+,;=%-".contains(&b))
}

/// Most capabilities a job may require.
pub const MAX_CAPABILITIES: usize = 32;

/// The pattern a capability name matches (no `,` or `|`: the queue index joins them).
pub const CAPABILITY_PATTERN: &str = "[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}";

/// Whether `c` is a capability name: [`CAPABILITY_PATTERN`].
pub fn is_valid_capability(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// Largest GPU memory (GB) a job may require or a worker may offer.
pub const MAX_GPU_MEMORY: f64 = 10_000.0;

/// What [`is_valid_gpu_memory`] checks, as a message.
pub const GPU_MEMORY_RULE: &str = "gpu_memory must be a number of GB between 0 and 10000";

/// Whether `g` is a GPU memory size in GB: finite, `0..=10000`.
pub fn is_valid_gpu_memory(g: f64) -> bool {
    g.is_finite() && (0.0..=MAX_GPU_MEMORY).contains(&g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types() {
        for ok in [
            "a",
            "text-to-image",
            "upscale",
            "x.y_z-1",
            "0abc",
            &"a".repeat(64),
        ] {
            assert!(is_valid_job_type(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "A", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!is_valid_job_type(bad), "{bad}");
        }
    }

    #[test]
    fn machine_ids() {
        for ok in ["m", "M1", "gpu-01.rack:3", "a_b", &"a".repeat(128)] {
            assert!(is_valid_machine_id(ok), "{ok}");
        }
        for bad in ["", "-a", ":a", "a b", "a/b", "é", "a{p1}", &"a".repeat(129)] {
            assert!(!is_valid_machine_id(bad), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(is_http_url("https://example.com/hook"));
        assert!(is_http_url("http://127.0.0.1:9/x"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("https://a b"));
        assert!(!is_http_url("https://user:secret@example.com/hook"));
        assert!(!is_http_url("http:///path"));
        assert!(is_http_url("https://example.com/a@b"));
    }
}
