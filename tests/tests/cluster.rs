//! Redis Cluster settings: what `serve` and the store refuse at start, and what the store
//! does on a real cluster (`JOBSOURCE_TEST_CLUSTER_NODES`, started by `scripts/test`).
//!
//! The settings checks need no cluster. The tests that need one print why they skip when
//! the variable is unset (running `cargo test` by hand); `scripts/test` always sets it
//! where redis-server is installed.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use jobsource_api::serve::{ServeConfig, ServeError, Server};
use jobsource_eventstore::redis::{RedisConn, RedisTarget, CLUSTER_NODES_ENV};
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, RedisStore, StoreConfig, StoreError,
};
use jobsource_tests::{
    cleanup_prefix, cluster_nodes, corrupt_log_entry, free_port, redis_url, unique_prefix,
};

fn config(prefix: &str, partitions: u32) -> StoreConfig {
    StoreConfig {
        prefix: prefix.to_owned(),
        partitions,
        ..StoreConfig::default()
    }
}

async fn start(config: ServeConfig) -> Result<Server, ServeError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::start_on(config, listener).await
}

fn cluster_or_skip(test: &str) -> Option<Vec<String>> {
    match cluster_nodes() {
        Some(n) => Some(n.split(',').map(str::to_owned).collect()),
        None => {
            eprintln!(
                "skipped {test}: JOBSOURCE_TEST_CLUSTER_NODES is not set \
                 (scripts/test starts a private Redis Cluster and sets it)"
            );
            None
        }
    }
}

#[tokio::test]
async fn serve_refuses_both_redis_settings_naming_them() {
    let err = start(ServeConfig {
        redis_url: Some(redis_url()),
        redis_cluster_nodes: Some("redis://127.0.0.1:7000".into()),
        database_url: Some("postgres://postgres@127.0.0.1:5432/postgres".into()),
        ..ServeConfig::default()
    })
    .await
    .err()
    .expect("both settings must be refused");
    let text = err.to_string();
    assert!(
        text.contains("REDIS_URL") && text.contains(CLUSTER_NODES_ENV),
        "{text}"
    );
}

#[tokio::test]
async fn serve_on_a_cluster_refuses_a_read_prefix_without_a_hash_tag() {
    // Checked before connecting: no cluster is needed to see the refusal.
    for read_prefix in ["rm", ""] {
        let err = start(ServeConfig {
            redis_cluster_nodes: Some(format!("redis://127.0.0.1:{}", free_port())),
            database_url: Some("postgres://postgres@127.0.0.1:5432/postgres".into()),
            read_prefix: Some(read_prefix.into()),
            ..ServeConfig::default()
        })
        .await
        .err()
        .expect("an untagged read prefix must be refused on a cluster");
        assert!(matches!(err, ServeError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("JOBSOURCE_READ_PREFIX"), "{err}");
    }
}

#[tokio::test]
async fn an_unreachable_node_list_is_an_error_naming_the_setting() {
    let nodes = format!(
        "redis://127.0.0.1:{},redis://127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let target = RedisTarget::from_settings(None, Some(&nodes), "").unwrap();
    let err = RedisStore::connect(target, config(&unique_prefix("cluster_down"), 4))
        .await
        .err()
        .expect("an unreachable cluster must be refused");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(CLUSTER_NODES_ENV), "{err}");
}

#[tokio::test]
async fn cluster_nodes_pointing_at_a_lone_server_are_refused() {
    // The shared Redis is no cluster: the cluster client cannot read its slots.
    let target = RedisTarget::from_settings(None, Some(&redis_url()), "").unwrap();
    let err = RedisStore::connect(target, config(&unique_prefix("cluster_lone"), 4))
        .await
        .err()
        .expect("a lone server named as a cluster must be refused");
    assert!(err.to_string().contains(CLUSTER_NODES_ENV), "{err}");
}

#[tokio::test]
async fn redis_url_pointing_at_a_cluster_node_is_refused() {
    let Some(nodes) = cluster_or_skip("redis_url_pointing_at_a_cluster_node_is_refused") else {
        return;
    };
    let err = RedisStore::connect(nodes[0].as_str(), config(&unique_prefix("cluster_url"), 4))
        .await
        .err()
        .expect("REDIS_URL on a cluster node must be refused");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains(CLUSTER_NODES_ENV), "{err}");
}

#[tokio::test]
async fn a_cluster_store_with_another_partition_count_is_refused() {
    let Some(nodes) = cluster_or_skip("a_cluster_store_with_another_partition_count_is_refused")
    else {
        return;
    };
    let prefix = unique_prefix("cluster_partitions");
    let target = RedisTarget::Cluster(nodes);
    drop(
        RedisStore::connect(target.clone(), config(&prefix, 4))
            .await
            .unwrap(),
    );
    let err = RedisStore::connect(target.clone(), config(&prefix, 8))
        .await
        .err()
        .expect("another partition count must be refused");
    assert!(err.to_string().contains("JOBSOURCE_PARTITIONS"), "{err}");
    cleanup_prefix(target, &prefix).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_the_masters_and_cross_slot_pipelines_work() {
    let Some(nodes) =
        cluster_or_skip("partitions_spread_over_the_masters_and_cross_slot_pipelines_work")
    else {
        return;
    };
    let prefix = unique_prefix("cluster_spread");
    let target = RedisTarget::Cluster(nodes);
    let store = RedisStore::connect(target.clone(), config(&prefix, 16))
        .await
        .unwrap();
    for i in 0..64 {
        let stream = format!("job-{i}");
        store
            .append(AppendRequest::new(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new(
                    "job_submitted",
                    1,
                    serde_json::json!({"i": i}),
                )],
            ))
            .await
            .unwrap();
    }
    // `head` is one pipeline over 16 partition logs in 16 slots: split per slot.
    let head = store.head().await.unwrap();
    let mut total = 0;
    for p in 0..16 {
        total += store.partition_len(p).await.unwrap();
        if store.partition_len(p).await.unwrap() > 0 {
            assert_ne!(head.after(p), jobsource_eventstore::LogId::ZERO);
        }
    }
    assert_eq!(total, 64);
    // The logs live on more than one master (one SCAN step each covers a test cluster).
    let conn = RedisConn::open(&target).await.unwrap();
    let per_master = conn
        .on_every_master({
            let mut c = redis::cmd("SCAN");
            c.arg(0)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(100_000);
            c
        })
        .await
        .unwrap();
    let holding = per_master
        .into_iter()
        .filter(|v| {
            redis::from_redis_value::<(u64, Vec<String>)>(v.clone())
                .is_ok_and(|(_, keys)| !keys.is_empty())
        })
        .count();
    assert!(holding >= 2, "keys on {holding} master(s) only");
    let keys = conn.scan_match(&format!("{prefix}:*")).await.unwrap();
    assert!(keys.len() > 64, "{} keys", keys.len());
    // `MEMORY USAGE <key>` per key: a pipeline over every slot, routed by the key.
    assert!(store.memory_usage().await.unwrap() > 64 * 100);
    cleanup_prefix(target.clone(), &prefix).await.unwrap();
    assert!(conn
        .scan_match(&format!("{prefix}:*"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_ends_the_whole_tail_on_a_cluster() {
    let Some(nodes) = cluster_or_skip("a_corrupt_entry_ends_the_whole_tail_on_a_cluster") else {
        return;
    };
    use futures::StreamExt;
    let prefix = unique_prefix("cluster_corrupt_tail");
    let target = RedisTarget::Cluster(nodes);
    let store = RedisStore::connect(target.clone(), config(&prefix, 4))
        .await
        .unwrap();
    let mut tail = store.tail(store.head().await.unwrap()).await.unwrap();
    // One reader per partition: corrupt partition 2's log.
    corrupt_log_entry(&store, 2).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), tail.next())
        .await
        .expect("the tail yields the corrupt entry");
    assert!(
        matches!(first, Some(Err(StoreError::Decode(_)))),
        "{first:?}"
    );
    // The other partitions' readers do not keep the stream going without partition 2.
    let then = tokio::time::timeout(std::time::Duration::from_secs(10), tail.next())
        .await
        .expect("the tail ends after a corrupt entry");
    assert!(then.is_none(), "{then:?}");
    cleanup_prefix(target, &prefix).await.unwrap();
}
