//! One conformance suite, run against both event store backends (SPEC section 4).
//!
//! Every scenario is a function over `Arc<dyn EventStore>`; the `conformance!` macro
//! instantiates it once for the in-memory store and once for Redis (unique key prefix per
//! test, keys deleted afterwards).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Idempotency, LogId, MemoryStore, NewEvent, Offset,
    RedisStore, StoreConfig, StoreError,
};
use serde_json::json;

type Store = Arc<dyn EventStore>;

const PARTITIONS: u32 = 4;

fn ev(kind: &str, n: u64) -> NewEvent {
    NewEvent::new(kind, 1, json!({ "n": n }))
}

fn stream_name(tag: &str) -> String {
    format!("job-{}-{tag}", uuid::Uuid::now_v7())
}

async fn append_one(store: &Store, stream: &str, expected: ExpectedVersion, n: u64) -> u64 {
    store
        .append(AppendRequest::new(
            stream,
            expected,
            vec![ev("job_progress", n)],
        ))
        .await
        .expect("append")
        .last_version
}

// ---------------------------------------------------------------- scenarios

async fn conflict_reports_expected_and_actual(store: Store) {
    let s = stream_name("c");
    append_one(&store, &s, ExpectedVersion::NoStream, 1).await;
    append_one(&store, &s, ExpectedVersion::Exact(1), 2).await;
    let err = store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::Exact(1),
            vec![ev("x", 3)],
        ))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, s);
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 2);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(store.stream_version(&s).await.unwrap(), 2);
}

async fn expected_version_kinds(store: Store) {
    let s = stream_name("k");
    // Exact(0) on a missing stream is the same as NoStream.
    assert!(matches!(
        store
            .append(AppendRequest::new(
                &s,
                ExpectedVersion::Exact(3),
                vec![ev("x", 0)]
            ))
            .await,
        Err(StoreError::Conflict { actual: 0, .. })
    ));
    assert_eq!(
        append_one(&store, &s, ExpectedVersion::NoStream, 1).await,
        1
    );
    assert!(matches!(
        store
            .append(AppendRequest::new(
                &s,
                ExpectedVersion::NoStream,
                vec![ev("x", 0)]
            ))
            .await,
        Err(StoreError::Conflict { actual: 1, .. })
    ));
    assert_eq!(append_one(&store, &s, ExpectedVersion::Any, 2).await, 2);
    assert_eq!(
        append_one(&store, &s, ExpectedVersion::Exact(2), 3).await,
        3
    );
    let s2 = stream_name("k2");
    assert_eq!(append_one(&store, &s2, ExpectedVersion::Any, 1).await, 1);
    assert_eq!(
        append_one(&store, &s2, ExpectedVersion::Exact(1), 1).await,
        2
    );
    assert_eq!(store.stream_version("job-missing").await.unwrap(), 0);
}

async fn multi_event_append_is_atomic(store: Store) {
    let s = stream_name("m");
    let r = store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::NoStream,
            vec![ev("a", 1), ev("b", 2), ev("c", 3)],
        ))
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (1, 3));
    assert_eq!(r.positions.len(), 3);
    assert!(r.positions.windows(2).all(|w| w[0].id < w[1].id));
    // A conflicting multi-event append writes none of its events.
    let head_before = store.head().await.unwrap();
    let err = store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::Exact(1),
            vec![ev("d", 4), ev("e", 5)],
        ))
        .await;
    assert!(matches!(err, Err(StoreError::Conflict { actual: 3, .. })));
    assert_eq!(store.head().await.unwrap(), head_before);
    let events = store.read_stream_all(&s).await.unwrap();
    let types: Vec<_> = events
        .iter()
        .map(|e| e.envelope.event_type.as_str())
        .collect();
    assert_eq!(types, ["a", "b", "c"]);
    let versions: Vec<_> = events.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    // Empty appends are refused, not silently accepted.
    assert!(matches!(
        store
            .append(AppendRequest::new(&s, ExpectedVersion::Any, vec![]))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn idempotency_same_and_different_request(store: Store) {
    let s = stream_name("i");
    let events = vec![ev("job_submitted_like", 1), ev("second", 2)];
    let key = Idempotency::for_events("key-1", &events);
    let first = store
        .append(
            AppendRequest::new(&s, ExpectedVersion::NoStream, events.clone())
                .with_idempotency(key.clone()),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    // Same key, same request (even with a now-stale expectation): original result, nothing new.
    let again = store
        .append(
            AppendRequest::new(&s, ExpectedVersion::NoStream, events.clone())
                .with_idempotency(key.clone()),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    assert_eq!((again.first_version, again.last_version), (1, 2));
    assert_eq!(store.stream_version(&s).await.unwrap(), 2);
    // Same key, different request: a distinct error, nothing appended.
    let other = Idempotency::for_events("key-1", &[ev("different", 9)]);
    let err = store
        .append(
            AppendRequest::new(&s, ExpectedVersion::Any, vec![ev("different", 9)])
                .with_idempotency(other),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyReused { ref key } if key == "key-1"));
    assert_eq!(store.stream_version(&s).await.unwrap(), 2);
    // recall: the recorded result without appending; a mismatch is the same typed error.
    let recalled = store.recall(&s, &key).await.unwrap().expect("recorded");
    assert!(recalled.replayed);
    assert_eq!(recalled.positions, first.positions);
    let unknown = Idempotency::for_events("never-used", &events);
    assert!(store.recall(&s, &unknown).await.unwrap().is_none());
    let other = Idempotency::for_events("key-1", &[ev("different", 9)]);
    assert!(matches!(
        store.recall(&s, &other).await,
        Err(StoreError::IdempotencyKeyReused { .. })
    ));
    // Another key appends normally.
    let k2 = Idempotency::for_events("key-2", &[ev("third", 3)]);
    let r = store
        .append(
            AppendRequest::new(&s, ExpectedVersion::Exact(2), vec![ev("third", 3)])
                .with_idempotency(k2),
        )
        .await
        .unwrap();
    assert_eq!(r.last_version, 3);
}

async fn read_stream_from_a_version(store: Store) {
    let s = stream_name("r");
    for n in 1..=5 {
        append_one(&store, &s, ExpectedVersion::Exact(n - 1), n).await;
    }
    let from3 = store.read_stream(&s, 3, 100).await.unwrap();
    assert_eq!(
        from3.iter().map(|e| e.envelope.version).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(from3[0].envelope.data, json!({"n": 3}));
    assert_eq!(from3[0].envelope.stream, s);
    let two = store.read_stream(&s, 2, 2).await.unwrap();
    assert_eq!(
        two.iter().map(|e| e.envelope.version).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(store.read_stream(&s, 6, 10).await.unwrap().is_empty());
    assert!(store
        .read_stream("job-nothing", 1, 10)
        .await
        .unwrap()
        .is_empty());
    // Positions from the stream read match the partition log.
    let p = store.partition_of(&s);
    assert!(from3.iter().all(|e| e.position.partition == p));
}

async fn read_partition_from_a_position_in_batches(store: Store) {
    let s = stream_name("b");
    let p = store.partition_of(&s);
    let start = store.head().await.unwrap().after(p);
    let mut written = Vec::new();
    for n in 1..=7 {
        let r = store
            .append(AppendRequest::new(
                &s,
                ExpectedVersion::Any,
                vec![ev("x", n)],
            ))
            .await
            .unwrap();
        written.push(r.positions[0]);
    }
    // Page through in batches of 3: 3 + 3 + 1, no overlap, no gap.
    let mut after = start;
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let batch = store.read_partition(p, after, 3).await.unwrap();
        if batch.is_empty() {
            break;
        }
        sizes.push(batch.len());
        after = batch.last().unwrap().position.id;
        seen.extend(batch.into_iter().map(|e| e.position));
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, written);
    // From a position in the middle: strictly after it.
    let mid = store.read_partition(p, written[3].id, 100).await.unwrap();
    assert_eq!(mid.first().unwrap().position, written[4]);
    assert_eq!(mid.len(), 3);
    assert!(matches!(
        store.read_partition(PARTITIONS + 1, LogId::ZERO, 1).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn offsets_resolve(store: Store) {
    let s = stream_name("o");
    append_one(&store, &s, ExpectedVersion::Any, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::Any,
            vec![ev("x", 2)],
        ))
        .await
        .unwrap();
    let p = store.partition_of(&s);
    // A timestamp yields only events appended at or after it.
    let cursor = store.resolve(&Offset::Timestamp(t)).await.unwrap();
    let after_t = store.read_partition(p, cursor.after(p), 100).await.unwrap();
    assert_eq!(after_t.len(), 1);
    assert_eq!(after_t[0].position, later.positions[0]);
    // `end` yields nothing until a new append.
    let end = store.resolve(&"end".parse().unwrap()).await.unwrap();
    assert!(store
        .read_partition(p, end.after(p), 10)
        .await
        .unwrap()
        .is_empty());
    // Explicit positions round-trip through text.
    let text = end.to_string();
    let again = store.resolve(&text.parse().unwrap()).await.unwrap();
    assert_eq!(again, end);
    let start = store.resolve(&Offset::Start).await.unwrap();
    assert_eq!(start.after(p), LogId::ZERO);
    let bad: Offset = format!("{}@1-0", PARTITIONS + 3).parse().unwrap();
    assert!(matches!(
        store.resolve(&bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn live_tail_sees_new_events(store: Store) {
    let s = stream_name("t");
    append_one(&store, &s, ExpectedVersion::Any, 1).await;
    let from = store.head().await.unwrap();
    let mut tail = store.tail(from).await.unwrap();
    let writer = {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            for n in 2..=4 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                append_one(&store, &s, ExpectedVersion::Any, n).await;
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 3 {
        let item = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("tail delivers within 10 s")
            .expect("tail does not end")
            .expect("no error");
        if item.envelope.stream == s {
            got.push(item.envelope.version);
        }
    }
    writer.await.unwrap();
    // Only events after the starting cursor, in order.
    assert_eq!(got, [2, 3, 4]);
}

async fn concurrent_writers_one_stream(store: Store) {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 5;
    let s = stream_name("hot");
    let p = store.partition_of(&s);
    let start = store.head().await.unwrap().after(p);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for i in 0..PER_TASK {
                loop {
                    let v = store.stream_version(&s).await.unwrap();
                    match store
                        .append(AppendRequest::new(
                            &s,
                            ExpectedVersion::Exact(v),
                            vec![ev("job_progress", t * 1000 + i)],
                        ))
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.last_version, v + 1);
                            break;
                        }
                        Err(StoreError::Conflict { actual, .. }) => {
                            assert!(actual > v);
                            conflicts += 1;
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let n = TASKS * PER_TASK;
    let events = store.read_stream_all(&s).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>());
    // Every task's payloads are all there exactly once.
    let mut payloads: Vec<u64> = events
        .iter()
        .map(|e| e.envelope.data.to_value()["n"].as_u64().unwrap())
        .collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len() as u64, n);
    // The partition log has exactly N entries of this stream, in version order.
    let mut log_versions = Vec::new();
    let mut after = start;
    loop {
        let batch = store.read_partition(p, after, 500).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position.id;
        log_versions.extend(
            batch
                .iter()
                .filter(|e| e.envelope.stream == s)
                .map(|e| e.envelope.version),
        );
    }
    assert_eq!(log_versions, (1..=n).collect::<Vec<_>>());
    assert_eq!(store.stream_version(&s).await.unwrap(), n);
}

async fn old_schemas_are_upcast_on_read(store: Store) {
    let s = stream_name("u");
    let old = NewEvent::new(
        "job_submitted",
        1,
        json!({"job_id": "j", "job_type": "upscale", "payload": {"prompt": "p", "parameters": {}},
               "priority": 50, "depends_on": []}),
    );
    let r = store
        .append(AppendRequest::new(&s, ExpectedVersion::NoStream, vec![old]))
        .await
        .unwrap();
    let read = store.read_stream_all(&s).await.unwrap();
    assert_eq!(read[0].envelope.schema, 2);
    assert_eq!(read[0].envelope.data.to_value()["type"], "upscale");
    assert_eq!(read[0].envelope.data.to_value()["status"], "pending");
    let logged = store
        .read_partition(
            r.positions[0].partition,
            LogId::just_before_ms(r.positions[0].id.ms),
            1000,
        )
        .await
        .unwrap();
    let mine = logged.iter().find(|e| e.envelope.stream == s).unwrap();
    assert_eq!(mine.envelope.schema, 2);
}

async fn envelope_fields_are_kept(store: Store) {
    let s = stream_name("e");
    let e = NewEvent::new("job_assigned", 1, json!({"worker_id": "w1"}))
        .with_correlation("corr-9")
        .with_causation("cause-3")
        .with_meta("actor", "alice")
        .with_meta("request_id", "req-1");
    let id = e.event_id;
    let at = e.occurred_at;
    store
        .append(AppendRequest::new(&s, ExpectedVersion::Any, vec![e]))
        .await
        .unwrap();
    let got = &store.read_stream_all(&s).await.unwrap()[0].envelope;
    assert_eq!(got.event_id, id);
    assert_eq!(got.event_id.get_version_num(), 7);
    assert_eq!(got.occurred_at, at);
    assert_eq!(got.correlation_id, "corr-9");
    assert_eq!(got.causation_id.as_deref(), Some("cause-3"));
    assert_eq!(got.metadata["actor"], "alice");
    assert_eq!(got.metadata["request_id"], "req-1");
    assert_eq!(got.version, 1);
    assert_eq!(got.event_type, "job_assigned");
}

// ---------------------------------------------------------------- backends

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn test_prefix(name: &str) -> String {
    format!(
        "t:{name}:{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn config(prefix: String) -> StoreConfig {
    StoreConfig {
        prefix,
        partitions: PARTITIONS,
        ..StoreConfig::default()
    }
}

/// Deletes the test's keys (on the test cluster too, when the suite runs there).
async fn delete_prefix(prefix: &str) {
    jobsource_tests::cleanup_prefix(jobsource_tests::redis_target(), prefix)
        .await
        .expect("delete the test's keys");
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::MemoryStore::new(super::config("mem".into()));
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = super::test_prefix(stringify!($name));
                    // The shared Redis, or the test cluster (JOBSOURCE_TEST_CLUSTER_NODES).
                    let store = super::RedisStore::connect(jobsource_tests::redis_target(), super::config(prefix.clone()))
                        .await
                        .expect("connect to Redis (set REDIS_URL)");
                    super::$name(std::sync::Arc::new(store)).await;
                    super::delete_prefix(&prefix).await;
                }
            )*
        }
    };
}

conformance!(
    conflict_reports_expected_and_actual,
    expected_version_kinds,
    multi_event_append_is_atomic,
    idempotency_same_and_different_request,
    read_stream_from_a_version,
    read_partition_from_a_position_in_batches,
    offsets_resolve,
    live_tail_sees_new_events,
    concurrent_writers_one_stream,
    old_schemas_are_upcast_on_read,
    envelope_fields_are_kept,
);

// ---------------------------------------------------------------- Redis-only behaviour

#[tokio::test]
async fn redis_corrupted_log_entry_is_a_typed_decode_error() {
    let prefix = test_prefix("corrupt");
    let store = RedisStore::connect(&redis_url(), config(prefix.clone()))
        .await
        .unwrap();
    let s = stream_name("x");
    let p = store.partition_of(&s);
    store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::Any,
            vec![ev("ok", 1)],
        ))
        .await
        .unwrap();
    let bad_id = jobsource_tests::corrupt_log_entry(&store, p).await.unwrap();
    let mut conn = store.connection();
    let _: String = redis::cmd("XADD")
        .arg(store.keys().log(p))
        .arg("*")
        .arg("other")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.read_partition(p, LogId::ZERO, 10).await.unwrap_err();
    match err {
        StoreError::Decode(d) => assert_eq!(d.at, format!("{p}@{bad_id}")),
        other => panic!("expected decode error, got {other:?}"),
    }
    // Past the bad entry: the entry without an `event` field is also a typed error.
    let bad: LogId = bad_id.parse().unwrap();
    assert!(matches!(
        store.read_partition(p, bad, 10).await,
        Err(StoreError::Decode(_))
    ));
    // The tail reports the corruption as an error item instead of panicking.
    let mut tail = store
        .tail(jobsource_eventstore::Cursor::start(PARTITIONS))
        .await
        .unwrap();
    let mut saw_error = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(3), tail.next()).await {
        if item.is_err() {
            saw_error = true;
            break;
        }
    }
    assert!(saw_error);
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn redis_unreachable_names_the_url() {
    let url = "redis://:secret@127.0.0.1:1/";
    let err = match RedisStore::connect(url, config(test_prefix("down"))).await {
        Err(e) => e,
        Ok(_) => panic!("port 1 should refuse"),
    };
    let text = err.to_string();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        !text.contains("secret"),
        "credentials must not leak: {text}"
    );
}

#[tokio::test]
async fn redis_refuses_a_different_partition_count() {
    let prefix = test_prefix("parts");
    RedisStore::connect(&redis_url(), config(prefix.clone()))
        .await
        .unwrap();
    let other = StoreConfig {
        partitions: PARTITIONS * 2,
        ..config(prefix.clone())
    };
    let err = match RedisStore::connect(&redis_url(), other).await {
        Err(e) => e,
        Ok(_) => panic!("a different partition count must be refused"),
    };
    assert!(matches!(
        err,
        StoreError::PartitionMismatch { stored: PARTITIONS, configured, .. } if configured == PARTITIONS * 2
    ));
    assert!(err.to_string().contains("JOBSOURCE_PARTITIONS=4"));
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn redis_history_is_compact_not_a_stream_per_aggregate() {
    let prefix = test_prefix("layout");
    let store = RedisStore::connect(&redis_url(), config(prefix.clone()))
        .await
        .unwrap();
    let s = stream_name("l");
    store
        .append(AppendRequest::new(
            &s,
            ExpectedVersion::Any,
            vec![ev("a", 1), ev("b", 2)],
        ))
        .await
        .unwrap();
    let mut conn = store.connection();
    let p = store.partition_of(&s);
    let kind: String = redis::cmd("TYPE")
        .arg(store.keys().history(p, &s))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "list");
    let log_len: u64 = redis::cmd("XLEN")
        .arg(store.keys().log(p))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(log_len, 2);
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn redis_refuses_a_store_with_another_key_layout() {
    let prefix = test_prefix("layout-v");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:meta"))
        .arg("partitions")
        .arg(PARTITIONS)
        .arg("layout")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = match RedisStore::connect(&redis_url(), config(prefix.clone())).await {
        Err(e) => e,
        Ok(_) => panic!("an older key layout must be refused"),
    };
    assert!(err.to_string().contains("layout"), "{err}");
    delete_prefix(&prefix).await;
}

/// Idempotency keys are forgotten after the configured retention.
async fn idempotency_keys_expire(store: Store) {
    let s = stream_name("ttl");
    let first = Idempotency::for_events("k", &[ev("a", 1)]);
    store
        .append(
            AppendRequest::new(&s, ExpectedVersion::Any, vec![ev("a", 1)]).with_idempotency(first),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the retention the key is free again: a different request under it appends.
    let other = Idempotency::for_events("k", &[ev("b", 2)]);
    let r = store
        .append(
            AppendRequest::new(&s, ExpectedVersion::Any, vec![ev("b", 2)]).with_idempotency(other),
        )
        .await
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(r.last_version, 2);
}

fn short_retention(prefix: String) -> StoreConfig {
    StoreConfig {
        idempotency_retention: Duration::from_millis(100),
        ..config(prefix)
    }
}

#[tokio::test]
async fn memory_idempotency_keys_expire() {
    idempotency_keys_expire(Arc::new(MemoryStore::new(short_retention("mem".into())))).await;
}

#[tokio::test]
async fn redis_idempotency_keys_expire() {
    let prefix = test_prefix("ttl");
    let store = RedisStore::connect(&redis_url(), short_retention(prefix.clone()))
        .await
        .unwrap();
    idempotency_keys_expire(Arc::new(store)).await;
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn redis_aof_setting_is_read_at_connect() {
    use jobsource_eventstore::redis::Aof;
    use jobsource_tests::PrivateRedis;
    if !PrivateRedis::available() {
        eprintln!("skipped: redis-server not installed");
        return;
    }
    for (args, expected) in [
        (&["--appendonly", "no"][..], Aof::Off),
        (&["--appendonly", "yes"][..], Aof::On),
    ] {
        let server = PrivateRedis::start_with_args(args).await;
        let store = RedisStore::connect(&server.url, config(test_prefix("aof")))
            .await
            .unwrap();
        assert_eq!(store.aof().await, expected);
    }
}
