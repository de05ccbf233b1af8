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

/// True when `url` looks like an http(s) URL.
pub fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.contains(char::is_whitespace))
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
    fn urls() {
        assert!(is_http_url("https://example.com/hook"));
        assert!(is_http_url("http://127.0.0.1:9/x"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("https://a b"));
    }
}
