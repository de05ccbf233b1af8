//! Group commit under contention (issue 13): 64 writers over 16 streams, with injected
//! conflicts, against both backends.
//!
//! The Redis store sends appends waiting on the same lane together in one script call, so
//! each command's result must come from its own check. Each scenario runs with one lane per
//! partition and with one lane for all of them (every call then mixes the partitions,
//! grouped by partition in the script). Two scenarios:
//! - deterministic: one owner per stream appends with the right version while three
//!   injectors per stream send stale expected versions (and reused idempotency keys) into
//!   the same batches. Every owner append must succeed at exactly its version, every
//!   injected one must fail with its own conflict (its stream, its expected version), and
//!   none of the injected events may be stored;
//! - racing: four writers per stream read the version and append with `Exact`, retrying
//!   on conflict. Every stream must end contiguous, every acknowledged command's events
//!   must sit at the versions it was told, and no conflicting command's event is stored.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jobsource_eventstore::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, Idempotency, MemoryStore, NewEvent,
    Position, RedisStore, StoreConfig, StoreError,
};
use jobsource_tests::{cleanup_prefix, redis_target, unique_prefix};
use serde_json::json;
use uuid::Uuid;

type Store = Arc<dyn EventStore>;

const STREAMS: usize = 16;
const WRITERS: usize = 64;
/// Commands per owner (deterministic) and successful commands per writer (racing).
const ROUNDS: u64 = 40;

/// One attempted command: what was sent and what came back.
struct Attempt {
    stream: String,
    expected: ExpectedVersion,
    event_ids: Vec<Uuid>,
    outcome: Result<AppendResult, StoreError>,
}

fn events(tag: &str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("job_progress", 1, json!({ "by": tag, "i": i })))
        .collect()
}

async fn attempt(store: &Store, request: AppendRequest) -> Attempt {
    let stream = request.stream.clone();
    let expected = request.expected;
    let event_ids = request.events.iter().map(|e| e.event_id).collect();
    let outcome = store.append(request).await;
    Attempt {
        stream,
        expected,
        event_ids,
        outcome,
    }
}

/// Stream name -> event id and log position per version (index = version - 1), checking
/// contiguity.
type Logs = HashMap<String, Vec<Uuid>>;
type Positions = HashMap<String, Vec<Position>>;

async fn logs(store: &Store, streams: &[String]) -> (Logs, Positions) {
    let mut out = HashMap::new();
    let mut positions = HashMap::new();
    for s in streams {
        let all = store.read_stream_all(s).await.unwrap();
        let versions: Vec<u64> = all.iter().map(|e| e.envelope.version).collect();
        assert_eq!(
            versions,
            (1..=all.len() as u64).collect::<Vec<_>>(),
            "{s} is not contiguous"
        );
        let ids: Vec<Uuid> = all.iter().map(|e| e.envelope.event_id).collect();
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            ids.len(),
            "{s} holds an event twice"
        );
        out.insert(s.clone(), ids);
        positions.insert(s.clone(), all.iter().map(|e| e.position).collect());
    }
    (out, positions)
}

/// Every acknowledged command's events sit at its versions and at the positions it was
/// told (its stream's partition, its log entries); no failed command's events are stored.
fn check_against_log(attempts: &[Attempt], logs: &Logs, positions: &Positions) {
    let stored: HashSet<Uuid> = logs.values().flatten().copied().collect();
    let mut acknowledged = 0;
    for a in attempts {
        match &a.outcome {
            Ok(r) => {
                acknowledged += a.event_ids.len();
                assert_eq!(r.stream, a.stream);
                assert!(!r.replayed);
                if let ExpectedVersion::Exact(v) = a.expected {
                    assert_eq!(r.first_version, v + 1, "{} got another's version", a.stream);
                }
                let log = &logs[&a.stream];
                let range = r.first_version as usize - 1..r.last_version as usize;
                assert_eq!(
                    &log[range.clone()],
                    a.event_ids.as_slice(),
                    "{}: not its events",
                    a.stream
                );
                assert_eq!(
                    r.positions, positions[&a.stream][range],
                    "{}: told other positions",
                    a.stream
                );
            }
            Err(StoreError::Conflict {
                stream,
                expected,
                actual,
            }) => {
                assert_eq!(stream, &a.stream, "a conflict reported to another stream");
                assert_eq!(*expected, a.expected, "a conflict of another command");
                assert!(!expected.matches(*actual), "{expected} vs {actual}");
                assert!(a.event_ids.iter().all(|id| !stored.contains(id)));
            }
            Err(StoreError::IdempotencyKeyReused { .. }) => {
                assert!(a.event_ids.iter().all(|id| !stored.contains(id)));
            }
            Err(e) => panic!("{}: unexpected error {e}", a.stream),
        }
    }
    assert_eq!(
        acknowledged,
        stored.len(),
        "an unacknowledged event was stored"
    );
}

async fn deterministic_conflicts(store: Store) {
    let streams: Arc<Vec<String>> = Arc::new(
        (0..STREAMS)
            .map(|i| format!("job-{}-gc{i}", Uuid::now_v7()))
            .collect(),
    );
    // Every stream exists before the injectors start, so version - 1 is always stale.
    for s in streams.iter() {
        let r = store
            .append(
                AppendRequest::new(s, ExpectedVersion::NoStream, events("owner", 1))
                    .with_idempotency(Idempotency::new("first", "fp-first")),
            )
            .await
            .unwrap();
        assert_eq!(r.last_version, 1);
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, streams) = (store.clone(), streams.clone());
        tasks.push(tokio::spawn(async move {
            let stream = &streams[w % STREAMS];
            let mut out = Vec::new();
            if w < STREAMS {
                // The owner: the only writer whose expected version is right.
                let mut version = 1;
                for round in 0..ROUNDS {
                    let n = 1 + (round % 3) as usize;
                    let a = attempt(
                        &store,
                        AppendRequest::new(
                            stream,
                            ExpectedVersion::Exact(version),
                            events("owner", n),
                        ),
                    )
                    .await;
                    version = a.outcome.as_ref().expect("owner append").last_version;
                    out.push((true, a));
                }
            } else {
                for round in 0..ROUNDS {
                    let seen = store.stream_version(stream).await.unwrap();
                    let request = match round % 4 {
                        // Reuses the owner's key with another request: refused.
                        3 => AppendRequest::new(stream, ExpectedVersion::Any, events("inj", 1))
                            .with_idempotency(Idempotency::new("first", "fp-other")),
                        2 => {
                            AppendRequest::new(stream, ExpectedVersion::NoStream, events("inj", 1))
                        }
                        _ => AppendRequest::new(
                            stream,
                            ExpectedVersion::Exact(seen - 1),
                            events("inj", 2),
                        ),
                    };
                    out.push((false, attempt(&store, request).await));
                }
            }
            out
        }));
    }
    let mut attempts = Vec::new();
    for t in tasks {
        for (owner, a) in t.await.unwrap() {
            if owner {
                assert!(a.outcome.is_ok());
            } else {
                match &a.outcome {
                    Err(StoreError::Conflict { .. }) => {
                        assert!(matches!(
                            a.expected,
                            ExpectedVersion::Exact(_) | ExpectedVersion::NoStream
                        ))
                    }
                    Err(StoreError::IdempotencyKeyReused { key }) => {
                        assert_eq!(key, "first");
                        assert_eq!(a.expected, ExpectedVersion::Any);
                    }
                    other => panic!("an injected command was not refused: {other:?}"),
                }
            }
            attempts.push(a);
        }
    }
    let (logs, positions) = logs(&store, &streams).await;
    let per_stream: u64 = 1 + (0..ROUNDS).map(|r| 1 + r % 3).sum::<u64>();
    for s in streams.iter() {
        assert_eq!(logs[s].len() as u64, per_stream, "{s}");
    }
    // The first appends are not in `attempts`; count them as acknowledged too.
    let firsts: Vec<Attempt> = streams
        .iter()
        .map(|s| Attempt {
            stream: s.clone(),
            expected: ExpectedVersion::NoStream,
            event_ids: vec![logs[s][0]],
            outcome: Ok(AppendResult {
                stream: s.clone(),
                first_version: 1,
                last_version: 1,
                positions: vec![positions[s][0]],
                replayed: false,
            }),
        })
        .collect();
    attempts.extend(firsts);
    check_against_log(&attempts, &logs, &positions);
}

async fn racing_writers(store: Store) {
    let streams: Arc<Vec<String>> = Arc::new(
        (0..STREAMS)
            .map(|i| format!("job-{}-race{i}", Uuid::now_v7()))
            .collect(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, streams) = (store.clone(), streams.clone());
        tasks.push(tokio::spawn(async move {
            let stream = &streams[w % STREAMS];
            let mut out = Vec::new();
            let mut done = 0;
            while done < ROUNDS / 4 {
                let v = store.stream_version(stream).await.unwrap();
                let expected = if v == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(v)
                };
                let n = 1 + w % 2;
                let a = attempt(
                    &store,
                    AppendRequest::new(stream, expected, events(&format!("w{w}"), n)),
                )
                .await;
                if a.outcome.is_ok() {
                    done += 1;
                }
                out.push(a);
            }
            out
        }));
    }
    let mut attempts = Vec::new();
    for t in tasks {
        attempts.extend(t.await.unwrap());
    }
    let (logs, positions) = logs(&store, &streams).await;
    for (i, s) in streams.iter().enumerate() {
        // Writers i, i + 16, i + 32, i + 48 share stream i: two write 1 event, two write 2.
        let per_writer = |w: usize| (ROUNDS / 4) as usize * (1 + w % 2);
        let want: usize = (0..4).map(|k| per_writer(i + k * STREAMS)).sum();
        assert_eq!(logs[s].len(), want, "{s}");
    }
    check_against_log(&attempts, &logs, &positions);
}

fn config(prefix: String) -> StoreConfig {
    StoreConfig {
        prefix,
        // Four streams per partition: the batches mix streams and writers.
        partitions: 4,
        ..StoreConfig::default()
    }
}

/// A Redis store with `lanes` group-commit lanes (on a cluster each partition is its own
/// lane whatever is asked).
async fn redis_store(name: &str, lanes: u32) -> (Store, RedisStore, String) {
    let prefix = unique_prefix(name);
    let config = StoreConfig {
        group_commit_lanes: lanes,
        ..config(prefix.clone())
    };
    let store = RedisStore::connect(redis_target(), config)
        .await
        .expect("connect to Redis (set REDIS_URL)");
    (Arc::new(store.clone()), store, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_commit_reports_each_conflict_to_its_command() {
    let (store, redis, prefix) = redis_store("gc_conflicts", 4).await;
    deterministic_conflicts(store).await;
    let (calls, commands) = redis.group_commit_stats();
    // Not a speed check: just that batches of several commands really happened.
    assert!(commands > calls, "{commands} commands in {calls} calls");
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_commit_racing_writers_stay_contiguous() {
    let (store, _, prefix) = redis_store("gc_racing", 4).await;
    racing_writers(store).await;
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_commit_across_partitions_reports_each_conflict_to_its_command() {
    let (store, redis, prefix) = redis_store("gc_conflicts_1lane", 1).await;
    deterministic_conflicts(store).await;
    let (calls, commands) = redis.group_commit_stats();
    assert!(commands > calls, "{commands} commands in {calls} calls");
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_commit_across_partitions_racing_writers_stay_contiguous() {
    let (store, _, prefix) = redis_store("gc_racing_1lane", 1).await;
    racing_writers(store).await;
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_reports_each_conflict_to_its_command() {
    deterministic_conflicts(Arc::new(MemoryStore::new(config("mem".into())))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_racing_writers_stay_contiguous() {
    racing_writers(Arc::new(MemoryStore::new(config("mem".into())))).await;
}
