//! Where the Redis store is: one server (`REDIS_URL`) or a Redis Cluster
//! (`JOBSOURCE_REDIS_CLUSTER_NODES`), and how connections to it are made.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::{ClusterClient, ClusterClientBuilder};

use super::{redact_url, RedisConn};
use crate::error::StoreError;

/// The setting naming the cluster's nodes.
pub const CLUSTER_NODES_ENV: &str = "JOBSOURCE_REDIS_CLUSTER_NODES";

/// A Redis deployment to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Single(String),
    /// The seed nodes of a Redis Cluster (the rest are discovered).
    Cluster(Vec<String>),
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> Self {
        RedisTarget::Single(url.to_owned())
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> Self {
        RedisTarget::Single(url.clone())
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> Self {
        RedisTarget::Single(url)
    }
}

impl RedisTarget {
    /// The target named by the two settings: `url` (`REDIS_URL`, or its command-line flag)
    /// and `cluster_nodes` (a comma-separated list). Setting both is refused, since one
    /// of them would be silently ignored; setting neither gives `default_url`.
    pub fn from_settings(
        url: Option<&str>,
        cluster_nodes: Option<&str>,
        default_url: &str,
    ) -> Result<RedisTarget, StoreError> {
        let url = url.map(str::trim).filter(|u| !u.is_empty());
        let nodes: Vec<String> = cluster_nodes
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        match (url, nodes.is_empty()) {
            (Some(_), false) => Err(StoreError::Config(format!(
                "both REDIS_URL and {CLUSTER_NODES_ENV} are set; set only one \
                 (REDIS_URL for one server, {CLUSTER_NODES_ENV} for a Redis Cluster)"
            ))),
            (Some(u), true) => Ok(RedisTarget::Single(u.to_owned())),
            (None, false) => {
                for n in &nodes {
                    redis::Client::open(n.as_str()).map_err(|e| {
                        StoreError::Config(format!(
                            "{CLUSTER_NODES_ENV}: {:?} is not a Redis URL: {e}",
                            redact_url(n)
                        ))
                    })?;
                }
                Ok(RedisTarget::Cluster(nodes))
            }
            (None, true) => Ok(RedisTarget::Single(default_url.to_owned())),
        }
    }

    /// The target as shown in logs and errors (credentials removed).
    pub fn shown(&self) -> String {
        match self {
            RedisTarget::Single(u) => redact_url(u),
            RedisTarget::Cluster(nodes) => nodes
                .iter()
                .map(|n| redact_url(n))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// What makes new connections: dedicated ones for blocking reads, beside the shared one.
#[derive(Clone)]
pub(crate) enum Connector {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

/// Connects the shared connection of `target`, checking that the target is what the
/// setting says (a cluster for the cluster setting, a lone server for `REDIS_URL`).
pub(crate) async fn connect(target: &RedisTarget) -> Result<(Connector, RedisConn), StoreError> {
    let shown = target.shown();
    let unavailable = |setting: &str, e: String| StoreError::Unavailable {
        url: shown.clone(),
        message: format!("{e} (check {setting})"),
    };
    match target {
        RedisTarget::Single(url) => {
            let client =
                redis::Client::open(url.as_str()).map_err(|e| StoreError::Unavailable {
                    url: shown.clone(),
                    message: format!("invalid Redis URL: {e}"),
                })?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(10)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = client
                .get_connection_manager_with_config(config)
                .await
                .map_err(|e| unavailable("REDIS_URL", e.to_string()))?;
            let conn = RedisConn::Single(conn);
            if cluster_enabled(&conn).await {
                return Err(StoreError::Config(format!(
                    "REDIS_URL ({shown}) is a Redis Cluster node; a cluster is used through \
                     {CLUSTER_NODES_ENV}=redis://host1:port1,redis://host2:port2,..."
                )));
            }
            Ok((Connector::Single(client), conn))
        }
        RedisTarget::Cluster(nodes) => {
            let client = cluster_builder(nodes)
                .response_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| StoreError::Config(format!("{CLUSTER_NODES_ENV}: {e}")))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| unavailable(CLUSTER_NODES_ENV, e.to_string()))?;
            Ok((
                Connector::Cluster(Box::new(client)),
                RedisConn::Cluster(conn),
            ))
        }
    }
}

fn cluster_builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(Duration::from_secs(2))
        .retries(3)
        .max_retry_wait(500)
}

/// Whether the server runs with `cluster-enabled yes` (`INFO cluster`); false when it
/// cannot tell (e.g. a proxy that hides `INFO`).
async fn cluster_enabled(conn: &RedisConn) -> bool {
    let mut c = conn.clone();
    let info: Result<String, _> = redis::cmd("INFO").arg("cluster").query_async(&mut c).await;
    info.map(|i| i.contains("cluster_enabled:1"))
        .unwrap_or(false)
}

impl Connector {
    /// A new connection for blocking reads (`XREAD BLOCK`): never shared, so a blocked
    /// read stalls nothing else. `block` is the longest block the caller asks for.
    pub(crate) async fn dedicated(&self, block: Duration) -> Result<RedisConn, redis::RedisError> {
        match self {
            Connector::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(block + Duration::from_secs(10)))
                    .set_number_of_retries(0);
                Ok(RedisConn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Connector::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(block + Duration::from_secs(10));
                Ok(RedisConn::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_setting_at_a_time() {
        let d = "redis://127.0.0.1:6379";
        assert_eq!(
            RedisTarget::from_settings(None, None, d).ok(),
            Some(RedisTarget::Single(d.into()))
        );
        assert_eq!(
            RedisTarget::from_settings(None, Some(" redis://a:1, redis://b:2 ,"), d).ok(),
            Some(RedisTarget::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        let both = RedisTarget::from_settings(Some("redis://x:1"), Some("redis://a:1"), d);
        assert!(matches!(both, Err(StoreError::Config(m)) if m.contains(CLUSTER_NODES_ENV)));
        let bad = RedisTarget::from_settings(None, Some("nonsense"), d);
        assert!(matches!(bad, Err(StoreError::Config(m)) if m.contains("not a Redis URL")));
    }
}
