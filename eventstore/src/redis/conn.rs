//! One connection type for a single Redis server and for a Redis Cluster.
//!
//! [`RedisConn`] is what every part of jobsource that talks to Redis holds. On a single
//! server it is the auto-reconnecting multiplexed `ConnectionManager`; on a cluster it is
//! the redis crate's cluster client, which routes each command to the master of its key's
//! slot and follows `MOVED`/`ASK` redirections.
//!
//! Scripts and multi-key commands are written so their keys share one slot (the `{p<N>}`
//! tag of a partition, or the read model's tag). Pipelines are different: several of ours
//! read one key per partition (the head, the queue hint, the lease holders). The cluster
//! client refuses such a pipeline, so [`RedisConn`] splits it by slot, sends the parts to
//! their nodes concurrently and puts the replies back in order. Our pipelines are never
//! `MULTI` transactions; a transaction is passed through unchanged (and must be one slot).

use std::collections::HashMap;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to a single Redis server or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// A single server (or a proxy that looks like one).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConn {
    fn from(c: ConnectionManager) -> Self {
        RedisConn::Single(c)
    }
}

impl From<ClusterConnection> for RedisConn {
    fn from(c: ClusterConnection) -> Self {
        RedisConn::Cluster(c)
    }
}

impl RedisConn {
    /// A shared connection to `target` (what [`super::RedisStore`] holds), for tools and
    /// tests that talk to the same Redis without a store.
    pub async fn open(target: &super::RedisTarget) -> Result<RedisConn, crate::StoreError> {
        Ok(super::target::connect(target).await?.1)
    }

    /// Whether this talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// The reply of `cmd` from the one server, or from every master of a cluster.
    pub async fn on_every_master(&self, cmd: Cmd) -> redis::RedisResult<Vec<Value>> {
        match self {
            RedisConn::Single(c) => {
                let mut c = c.clone();
                Ok(vec![cmd.query_async::<Value>(&mut c).await?])
            }
            RedisConn::Cluster(c) => {
                let mut out = Vec::new();
                for (host, port) in masters(c).await? {
                    let mut c = c.clone();
                    out.push(c.route_command(cmd.clone(), by_address(host, port)).await?);
                }
                Ok(out)
            }
        }
    }

    /// Every key matching `pattern`: one `SCAN` walk on a single server, one per master
    /// on a cluster (a cluster's `SCAN` only sees the node it is sent to).
    pub async fn scan_match(&self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let mut out = Vec::new();
        match self {
            RedisConn::Single(c) => {
                scan_node(&mut out, pattern, |cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                })
                .await?;
            }
            RedisConn::Cluster(c) => {
                for (host, port) in masters(c).await? {
                    scan_node(&mut out, pattern, |cmd| {
                        let mut c = c.clone();
                        let route = by_address(host.clone(), port);
                        async move { c.route_command(cmd, route).await }
                    })
                    .await?;
                }
            }
        }
        Ok(out)
    }
}

fn by_address(host: String, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port })
}

/// Walks one node's keyspace with `SCAN MATCH`.
async fn scan_node<F, Fut>(out: &mut Vec<String>, pattern: &str, send: F) -> redis::RedisResult<()>
where
    F: Fn(Cmd) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<Value>>,
{
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(send(cmd).await?)?;
        out.extend(keys);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The (host, port) of every master, from `CLUSTER SLOTS`.
pub(crate) async fn masters(c: &ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let mut c = c.clone();
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    if let Value::Array(ranges) = slots {
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            // [start, end, [host, port, id, ...], replicas...]
            let Some(Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let host: Option<String> = master
                .first()
                .and_then(|v| redis::from_redis_value(v.clone()).ok());
            let port: Option<u16> = master
                .get(1)
                .and_then(|v| redis::from_redis_value(v.clone()).ok());
            if let (Some(host), Some(port)) = (host, port) {
                if !out.iter().any(|(h, p)| *h == host && *p == port) {
                    out.push((host, port));
                }
            }
        }
    }
    Ok(out)
}

/// The key a command is routed by, for the commands our pipelines send: the first
/// argument, the one after a container command's subcommand, or the first key of a script
/// call; `None` for keyless commands (`TIME`).
fn routing_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"TIME" | b"PING" | b"INFO" | b"CLUSTER" => None,
        b"EVAL" | b"EVALSHA" => {
            let _script = args.next()?;
            let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if numkeys == 0 {
                None
            } else {
                args.next().map(<[u8]>::to_vec)
            }
        }
        // Container commands: the key follows the subcommand (`MEMORY USAGE <key>`).
        b"MEMORY" | b"OBJECT" | b"XINFO" | b"XGROUP" => {
            let _subcommand = args.next()?;
            args.next().map(<[u8]>::to_vec)
        }
        _ => args.next().map(<[u8]>::to_vec),
    }
}

/// Sends a pipeline whose commands may live in several slots: one sub-pipeline per slot,
/// concurrently, replies reassembled in the original order. Keyless commands ride with
/// the first slot's part.
async fn split_pipeline(
    conn: &ClusterConnection,
    pipeline: &Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Option<Slot>, usize> = HashMap::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = routing_key(cmd).map(Slot::for_key);
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    // Keyless commands join a keyed group when there is one.
    if groups.len() > 1 {
        if let Some(pos) = groups.iter().position(|(s, _)| s.is_none()) {
            let (_, keyless) = groups.remove(pos);
            groups[0].1.extend(keyless);
        }
    }
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let parts = groups.iter().map(|(slot, members)| {
        let mut sub = redis::pipe();
        for &i in members {
            sub.add_command(cmds[i].clone());
        }
        let route = match slot {
            Some(s) => SingleNodeRoutingInfo::SpecificNode(Route::with_slot(*s, SlotAddr::Master)),
            None => SingleNodeRoutingInfo::RandomPrimary,
        };
        let mut c = conn.clone();
        let n = members.len();
        async move { c.route_pipeline(sub, 0, n, route).await }
    });
    let replies = try_join_all(parts).await?;
    let mut out: Vec<Option<Value>> = vec![None; cmds.len()];
    for ((_, members), values) in groups.iter().zip(replies) {
        for (&i, v) in members.iter().zip(values) {
            out[i] = Some(v);
        }
    }
    Ok(out.into_iter().map(|v| v.unwrap_or(Value::Nil)).collect())
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => {
                let one_slot = {
                    let mut slots = pipeline
                        .cmd_iter()
                        .filter_map(routing_key)
                        .map(Slot::for_key);
                    match slots.next() {
                        None => true,
                        Some(first) => slots.all(|s| s == first),
                    }
                };
                if pipeline.is_transaction() || one_slot || offset != 0 {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    let c = c.clone();
                    Box::pin(async move { split_pipeline(&c, pipeline).await })
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_of_the_commands_pipelines_send() {
        let mut c = redis::cmd("HGET");
        c.arg("js:{p3}:v:1").arg("s");
        assert_eq!(routing_key(&c), Some(b"js:{p3}:v:1".to_vec()));
        let mut t = redis::cmd("TIME");
        t.arg("x");
        assert_eq!(routing_key(&t), None);
        let mut e = redis::cmd("EVALSHA");
        e.arg("abc").arg(2).arg("k1").arg("k2").arg("a");
        assert_eq!(routing_key(&e), Some(b"k1".to_vec()));
        let mut m = redis::cmd("MEMORY");
        m.arg("USAGE").arg("js:{p1}:log").arg("SAMPLES").arg(0);
        assert_eq!(routing_key(&m), Some(b"js:{p1}:log".to_vec()));
        let mut e0 = redis::cmd("EVALSHA");
        e0.arg("abc").arg(0);
        assert_eq!(routing_key(&e0), None);
    }
}
