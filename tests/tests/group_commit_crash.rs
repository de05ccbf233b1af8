//! A crash between batching and the answer loses no acknowledged event (issue 13).
//!
//! The test re-runs its own binary as a child process (the ignored `crash_child` test,
//! told its key prefix through the environment). The child appends without pause from 32
//! writers over 32 streams of 4 partitions, so the Redis store's group commit always has
//! batches queued and in flight, and prints one `ACK` line per append that answered `Ok`.
//! The parent kills it with SIGKILL once enough appends were acknowledged, then reads the
//! store: every acknowledged command's events sit at the versions it was told, every
//! stream is contiguous, and every command is either wholly stored or not at all (each
//! command writes 3 events, so each stream is a sequence of whole 3-event blocks of one
//! command each).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, RedisStore, StoreConfig,
};
use jobsource_tests::{cleanup_prefix, redis_target, unique_prefix};
use serde_json::json;
use uuid::Uuid;

const CHILD_ENV: &str = "JOBSOURCE_GROUP_CRASH_PREFIX";
const WRITERS: usize = 32;
const EVENTS_PER_COMMAND: usize = 3;
/// Acknowledged appends after which the child is killed.
const KILL_AFTER: usize = 3000;

fn config(prefix: String) -> StoreConfig {
    StoreConfig {
        prefix,
        partitions: 4,
        ..StoreConfig::default()
    }
}

/// The child: appends until killed, printing `ACK <stream> <first> <last> <ids>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by group_commit_crash_loses_no_acknowledged_event as a child process"]
async fn crash_child() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Arc::new(
        RedisStore::connect(redis_target(), config(prefix))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("job-{}-crash{w}", Uuid::now_v7());
            let mut version = 0;
            loop {
                let command = Uuid::new_v4();
                let events: Vec<NewEvent> = (0..EVENTS_PER_COMMAND)
                    .map(|i| NewEvent::new("job_progress", 1, json!({"cmd": command, "i": i})))
                    .collect();
                let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let r = store
                    .append(AppendRequest::new(&stream, expected, events))
                    .await
                    .unwrap();
                version = r.last_version;
                println!(
                    "ACK {stream} {} {} {}",
                    r.first_version,
                    r.last_version,
                    ids.join(",")
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

struct Ack {
    stream: String,
    first: u64,
    last: u64,
    ids: Vec<Uuid>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        stream: f.next()?.to_owned(),
        first: f.next()?.parse().ok()?,
        last: f.next()?.parse().ok()?,
        ids: f
            .next()?
            .split(',')
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_crash_loses_no_acknowledged_event() {
    let prefix = unique_prefix("gc_crash");
    // The child inherits the environment, so it uses the same Redis (or cluster).
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the acknowledgements on a thread; kill the child mid-run, then read what it
    // printed before it died (those appends were acknowledged too).
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut child = Some(child);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                acks.push(ack);
            }
            if acks.len() == KILL_AFTER {
                if let Some(mut c) = child.take() {
                    c.kill().unwrap(); // SIGKILL
                    c.wait().unwrap();
                }
            }
        }
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        acks
    });
    let acks = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(
        acks.len() >= KILL_AFTER,
        "the child stopped after {} acknowledged appends",
        acks.len()
    );

    let store = RedisStore::connect(redis_target(), config(prefix.clone()))
        .await
        .unwrap();
    let mut logs: HashMap<String, Vec<(Uuid, String)>> = HashMap::new();
    for ack in &acks {
        if !logs.contains_key(&ack.stream) {
            let all = store.read_stream_all(&ack.stream).await.unwrap();
            for (i, e) in all.iter().enumerate() {
                assert_eq!(e.envelope.version, i as u64 + 1, "{} has a gap", ack.stream);
            }
            let entries = all
                .iter()
                .map(|e| {
                    (
                        e.envelope.event_id,
                        e.envelope.data.to_value()["cmd"].to_string(),
                    )
                })
                .collect();
            logs.insert(ack.stream.clone(), entries);
        }
        let log = &logs[&ack.stream];
        assert!(
            ack.last as usize <= log.len(),
            "acknowledged {}@{}..{} is missing (stream has {})",
            ack.stream,
            ack.first,
            ack.last,
            log.len()
        );
        let stored: Vec<Uuid> = log[ack.first as usize - 1..ack.last as usize]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(stored, ack.ids, "{} holds other events", ack.stream);
    }
    // Nothing half-applied: each stream is whole commands of 3 events (acknowledged or
    // not: the last one may have been applied without its answer reaching the child).
    for (stream, log) in &logs {
        assert_eq!(
            log.len() % EVENTS_PER_COMMAND,
            0,
            "{stream} ends mid-command"
        );
        for block in log.chunks(EVENTS_PER_COMMAND) {
            assert!(
                block.iter().all(|(_, cmd)| cmd == &block[0].1),
                "{stream}: a block mixes commands"
            );
        }
    }
    cleanup_prefix(redis_target(), &prefix).await.unwrap();
}
