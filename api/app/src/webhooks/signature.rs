//! Webhook signatures: `X-Jobsource-Signature: t=<unix seconds>,v1=<hex>` where the hex is
//! HMAC-SHA256, keyed with `JOBSOURCE_WEBHOOK_SECRET`, of `"<t>.<body>"` (the exact bytes
//! sent). Including the timestamp lets a receiver refuse replays of old requests.
//!
//! A receiver checks it with [`verify`] (or by recomputing the HMAC itself): split the
//! header at `,`, take `t` and `v1`, compute HMAC-SHA256(secret, `t` + "." + body), compare
//! in constant time, and refuse timestamps too far from its clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the delivery id (stable across attempts and redeliveries).
pub const DELIVERY_HEADER: &str = "x-jobsource-delivery";
/// Header carrying the signature, when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-jobsource-signature";
/// Header carrying the event type.
pub const EVENT_HEADER: &str = "x-jobsource-event";
/// Header carrying the attempt number (1-based).
pub const ATTEMPT_HEADER: &str = "x-jobsource-attempt";

/// The key could not be used (never for HMAC, which takes keys of any length; kept as an
/// error rather than a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HMAC key")]
pub struct InvalidKey;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<HmacSha256, InvalidKey> {
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| InvalidKey)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn digest_hex(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<String, InvalidKey> {
    Ok(hex::encode(
        mac(secret, timestamp, body)?.finalize().into_bytes(),
    ))
}

/// The `X-Jobsource-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<String, InvalidKey> {
    Ok(format!(
        "t={timestamp},v1={}",
        digest_hex(secret, timestamp, body)?
    ))
}

/// Checks a signature header against `body`: well formed, a `v1` that matches (compared in
/// constant time), and a timestamp within `tolerance_secs` of `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    signatures.into_iter().any(|v| {
        let Ok(expected) = hex::decode(v) else {
            return false;
        };
        mac(secret, t, body).is_ok_and(|m| m.verify_slice(&expected).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // RFC 4231 test case 2 (key "Jefe"): the primitive the signature is built on.
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signs_timestamp_dot_body() {
        let body = br#"{"type":"job_completed"}"#;
        let header = sign(b"s3cret", 1_700_000_000, body).unwrap();
        let (t, v1) = header.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        let mut m = HmacSha256::new_from_slice(b"s3cret").unwrap();
        m.update(b"1700000000.");
        m.update(body);
        assert_eq!(v1, format!("v1={}", hex::encode(m.finalize().into_bytes())));
        assert_eq!(v1.len(), 3 + 64);
    }

    #[test]
    fn verifies_and_refuses() {
        let body = b"{}";
        let header = sign(b"k", 1000, body).unwrap();
        assert!(verify(b"k", &header, body, 1000, 300));
        assert!(verify(b"k", &header, body, 1200, 300));
        // Stale, wrong key, tampered body, garbage.
        assert!(!verify(b"k", &header, body, 2000, 300));
        assert!(!verify(b"other", &header, body, 1000, 300));
        assert!(!verify(b"k", &header, b"{ }", 1000, 300));
        assert!(!verify(b"k", "v1=00", body, 1000, 300));
        assert!(!verify(b"k", "t=1000,v1=zz", body, 1000, 300));
        assert!(!verify(b"k", "", body, 1000, 300));
    }

    #[test]
    fn empty_secret_still_signs() {
        assert!(sign(b"", 1, b"x").unwrap().starts_with("t=1,v1="));
    }
}
