//! `JOBSOURCE_WEBHOOK_DENY_PRIVATE`: webhook targets on loopback, private, link-local or
//! otherwise non-public addresses are refused, when a job or workflow is submitted (422
//! naming `webhook_url`) and again when a delivery is sent: the sender's resolver drops
//! such addresses, so a name that resolves to one later (DNS rebinding) is not reached.
//!
//! The risk it closes: without it, anyone who may submit jobs can make the server POST to
//! addresses only it can reach (its own admin ports, a cloud metadata endpoint, the
//! internal network): server-side request forgery.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Whether `ip` is not a public unicast address: loopback, private, link-local,
/// unspecified, multicast, broadcast, documentation, CGNAT, unique-local (and IPv4 inside
/// IPv6 by the same rules).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The host and port of an `http(s)://` URL (validated by the domain already).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(r) => (r, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Why `url` may not be a webhook target under the policy, if it may not. A name that
/// does not resolve (yet) is let through: the sender checks again when it sends.
pub async fn refused(url: &str) -> Option<String> {
    let (host, port) = host_port(url)?;
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(format!("{host} is a loopback name"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_private(ip).then(|| format!("{ip} is not a public address"));
    }
    let resolved = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    match resolved {
        Ok(Ok(addrs)) => addrs
            .map(|a: SocketAddr| a.ip())
            .find(|ip| is_private(*ip))
            .map(|ip| format!("{host} resolves to {ip}, not a public address")),
        _ => None,
    }
}

/// The sender's resolver under the policy: public addresses only.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (JOBSOURCE_WEBHOOK_DENY_PRIVATE)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_senders_resolver_never_yields_a_private_address() {
        use reqwest::dns::Resolve;
        let localhost: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(PublicOnly.resolve(localhost).await.is_err());
    }

    #[tokio::test]
    async fn literal_and_loopback_targets_are_refused() {
        assert!(refused("http://127.0.0.1:9/x").await.is_some());
        assert!(refused("https://localhost/x").await.is_some());
        assert!(refused("http://169.254.169.254/latest").await.is_some());
        assert!(refused("https://8.8.8.8/hook").await.is_none());
        assert_eq!(
            host_port("https://Example.com:8443/a?b"),
            Some(("example.com".into(), 8443))
        );
    }
}
