//! Partition leases and fencing on real Redis and PostgreSQL: two instances' claims split
//! the partitions and rebalance when one arrives; a paused owner whose lease was taken over
//! can neither write its batch nor move the checkpoint (PostgreSQL and the Redis model).

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobsource_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, LogId, MemoryStore, NewEvent, StoreConfig,
};
use jobsource_projections::subscriber::lease::{Claims, LeaseStore, RedisLeaseStore};
use jobsource_projections::subscriber::pg::PgHandler;
use jobsource_projections::subscriber::redis::RedisModelHandler;
use jobsource_projections::subscriber::{Handler, Outcome};
use jobsource_projections::{checkpoint, migrate, Archive, RedisReadModel};
use jobsource_tests::{cleanup_prefix, redis_url, unique_prefix, TestDatabase};
use serde_json::json;

async fn connection() -> jobsource_eventstore::redis::RedisConn {
    let client = redis::Client::open(redis_url()).unwrap();
    redis::aio::ConnectionManager::new(client)
        .await
        .unwrap()
        .into()
}

async fn appended(store: &dyn EventStore, n: usize) {
    for i in 0..n {
        store
            .append(AppendRequest::new(
                format!("note-{i}-{}", uuid::Uuid::now_v7()),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("note_added", 1, json!({"i": i}))],
            ))
            .await
            .unwrap();
    }
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn held(c: &Claims, partitions: u32) -> Vec<u32> {
    (0..partitions).filter(|p| c.epoch(*p).is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_split_the_partitions_and_a_paused_owner_is_fenced_out() {
    let prefix = unique_prefix("fencing");
    let conn = connection().await;
    let leases: Arc<dyn LeaseStore> = Arc::new(RedisLeaseStore::new(conn.clone(), &prefix));
    let ttl = Duration::from_millis(900);
    let a = Claims::new(leases.clone(), "archive", "a", ttl, 4);
    let b = Claims::new(leases.clone(), "archive", "b", ttl, 4);

    // Alone, a takes every partition; once b is live they end with two each.
    a.refresh().await.unwrap();
    assert_eq!(held(&a, 4), vec![0, 1, 2, 3]);
    wait_for("the split", async || {
        b.refresh().await.unwrap();
        a.refresh().await.unwrap();
        held(&a, 4).len() == 2 && held(&b, 4).len() == 2
    })
    .await;
    let mine = held(&a, 4);
    assert!(held(&b, 4).iter().all(|p| !mine.contains(p)));

    // PostgreSQL: a writes partition p under its epoch; then a "pauses" (stops
    // renewing), b takes p over with a higher epoch and writes; a's late batch is fenced.
    let store = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 4,
        ..StoreConfig::default()
    }));
    appended(&*store, 40).await;
    let db = TestDatabase::create().await;
    let pool = db.pool(4).await.unwrap();
    migrate::migrate(&pool).await.unwrap();
    let handler = PgHandler::new(Arc::new(Archive), pool.clone());
    let p = mine[0];
    let events = store.read_partition(p, LogId::ZERO, 100).await.unwrap();
    assert!(events.len() >= 4, "partition {p} has few events");
    let (first, rest) = events.split_at(2);
    let a_epoch = a.epoch(p).unwrap();
    assert_eq!(
        handler
            .apply(p, LogId::ZERO, first, Some(a_epoch))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let after_first = first[1].position.id;
    wait_for("b's takeover of the paused owner's partition", async || {
        b.refresh().await.unwrap();
        b.epoch(p).is_some()
    })
    .await;
    let b_epoch = b.epoch(p).unwrap();
    assert!(b_epoch > a_epoch);
    let (b_part, late) = rest.split_at(1);
    assert_eq!(
        handler
            .apply(p, after_first, b_part, Some(b_epoch))
            .await
            .unwrap(),
        Outcome::Applied
    );
    // a wakes up with the batch it read before its pause.
    assert_eq!(
        handler
            .apply(p, after_first, rest, Some(a_epoch))
            .await
            .unwrap(),
        Outcome::Fenced
    );
    assert_eq!(
        handler.checkpoint(p).await.unwrap(),
        b_part[0].position.id,
        "the fenced batch moved nothing"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE partition = $1")
        .bind(p as i32)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "the fenced batch wrote nothing");
    // The rightful owner goes on.
    assert_eq!(
        handler
            .apply(p, b_part[0].position.id, late, Some(b_epoch))
            .await
            .unwrap(),
        Outcome::Applied
    );

    // The Redis model: the same, in its batch script.
    let model = Arc::new(RedisReadModel::new(conn.clone(), &format!("{prefix}:rm")));
    let redis_handler = RedisModelHandler::new(model.clone());
    assert_eq!(
        redis_handler
            .apply(p, LogId::ZERO, first, Some(b_epoch))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        redis_handler
            .apply(p, after_first, rest, Some(a_epoch))
            .await
            .unwrap(),
        Outcome::Fenced
    );
    assert_eq!(model.checkpoint(p).await.unwrap(), after_first);

    a.release_all().await;
    b.release_all().await;
    pool.close().await;
    db.drop_db().await;
    cleanup_prefix(&redis_url(), &prefix).await.unwrap();
}

/// The PostgreSQL handler remembers the checkpoint its own batches wrote instead of reading
/// it before every batch. When another writer (a second instance, a rebuild's swap) moved
/// the checkpoint meanwhile, the stale batch writes nothing (`Moved`) and the next
/// `checkpoint` reads the real one at once; a checkpoint moved back (a replay from an
/// offset) is seen once the memory expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_checkpoint_gives_way_to_the_one_another_writer_moved() {
    use jobsource_projections::subscriber::pg::CHECKPOINT_TTL;
    let store = Arc::new(MemoryStore::new(StoreConfig {
        partitions: 1,
        ..StoreConfig::default()
    }));
    appended(&*store, 6).await;
    let db = TestDatabase::create().await;
    let pool = db.pool(4).await.unwrap();
    migrate::migrate(&pool).await.unwrap();
    let events = store.read_partition(0, LogId::ZERO, 100).await.unwrap();
    let id = |i: usize| events[i].position.id;
    let mine = PgHandler::new(Arc::new(Archive), pool.clone());
    let other = PgHandler::new(Arc::new(Archive), pool.clone());

    assert_eq!(mine.checkpoint(0).await.unwrap(), LogId::ZERO);
    let applied = mine.apply(0, LogId::ZERO, &events[..2], None).await;
    assert_eq!(applied.unwrap(), Outcome::Applied);
    assert_eq!(mine.checkpoint(0).await.unwrap(), id(1));
    // The other writer goes on from there.
    assert_eq!(other.checkpoint(0).await.unwrap(), id(1));
    let applied = other.apply(0, id(1), &events[2..4], None).await;
    assert_eq!(applied.unwrap(), Outcome::Applied);
    // This handler's batch read after what it remembered: refused whole, and forgotten.
    let stale = mine.apply(0, id(1), &events[2..4], None).await;
    assert_eq!(stale.unwrap(), Outcome::Moved);
    assert_eq!(mine.checkpoint(0).await.unwrap(), id(3));
    let applied = mine.apply(0, id(3), &events[4..], None).await;
    assert_eq!(applied.unwrap(), Outcome::Applied);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 6, "every event archived once");

    // A replay from the start, set in the table: seen once the memory has expired.
    checkpoint::reset(&pool, "archive", &jobsource_eventstore::Cursor::start(1))
        .await
        .unwrap();
    tokio::time::sleep(CHECKPOINT_TTL + Duration::from_millis(100)).await;
    assert_eq!(mine.checkpoint(0).await.unwrap(), LogId::ZERO);

    pool.close().await;
    db.drop_db().await;
}
