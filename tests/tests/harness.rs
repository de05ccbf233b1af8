//! Tests of the test harness itself (`jobsource_tests`): prefix cleanup on the shared
//! Redis, a fresh PostgreSQL database per test, and a private Redis that can be killed
//! and restarted.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use jobsource_tests::{
    cleanup_prefix, database_url, redis_connection, redis_url, unique_prefix, PrivateRedis,
    TestDatabase,
};
use redis::AsyncCommands;
use sqlx::Connection;

#[tokio::test]
async fn cleanup_prefix_deletes_only_the_tests_keys() {
    let url = redis_url();
    let mine = unique_prefix("cleanup_prefix");
    let other = unique_prefix("cleanup_prefix");
    let mut conn = redis_connection(&url).await.expect("connect to REDIS_URL");

    // Enough keys to need several SCAN rounds, with hash tags like the event store's.
    for i in 0..1500 {
        let _: () = conn
            .set(format!("{mine}:{{p{}}}:k{i}", i % 16), i)
            .await
            .unwrap();
    }
    let _: () = conn.set(format!("{other}:keep"), 1).await.unwrap();
    // A key that merely starts with the same characters is not under the prefix.
    let _: () = conn.set(format!("{mine}x"), 1).await.unwrap();

    let deleted = cleanup_prefix(&url, &mine).await.unwrap();
    assert_eq!(deleted, 1500);
    let left: Vec<String> = conn.keys(format!("{mine}:*")).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(conn
        .exists::<_, bool>(format!("{other}:keep"))
        .await
        .unwrap());
    assert!(conn.exists::<_, bool>(format!("{mine}x")).await.unwrap());

    let _: () = conn.del(format!("{mine}x")).await.unwrap();
    assert_eq!(cleanup_prefix(&url, &other).await.unwrap(), 1);
    assert_eq!(cleanup_prefix(&url, &other).await.unwrap(), 0);
}

async fn database_exists(name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    found.is_some()
}

#[tokio::test]
async fn test_database_is_fresh_and_dropped() {
    let a = TestDatabase::create().await;
    let b = TestDatabase::create().await;
    assert_ne!(a.name(), b.name());
    assert!(a.url.ends_with(&format!("/{}", a.name())), "{}", a.url);

    let mut conn = a.connect().await.unwrap();
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(current, a.name());
    sqlx::raw_sql("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();

    // The other database is separate: no table `t` there.
    let pool = b.pool(2).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0);
    pool.close().await;

    // drop_db ends connections still open on the database (WITH (FORCE)).
    let name_a = a.name().to_string();
    a.drop_db().await;
    assert!(!database_exists(&name_a).await);
    drop(conn);

    // Forgetting drop_db still drops it, best effort, in Drop.
    let name_b = b.name().to_string();
    drop(b);
    assert!(!database_exists(&name_b).await);
}

#[tokio::test]
async fn private_redis_can_be_killed_and_restarted() {
    if !PrivateRedis::available() {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let mut server = PrivateRedis::start().await;
    assert_ne!(server.url, redis_url(), "must not be the shared server");
    assert!(server.is_running());
    let mut conn = redis_connection(&server.url).await.unwrap();
    let _: () = conn.set("k", "v").await.unwrap();

    server.kill();
    assert!(!server.is_running());
    assert!(
        redis_connection(&server.url).await.is_err() || {
            // A connection may be set up lazily; a command must fail then.
            let mut c = redis_connection(&server.url).await.unwrap();
            c.get::<_, Option<String>>("k").await.is_err()
        }
    );

    let port = server.port;
    server.restart().await;
    assert_eq!(server.port, port, "restart keeps the port");
    let mut conn = redis_connection(&server.url).await.unwrap();
    // No persistence by default: the data went with the killed process.
    let v: Option<String> = conn.get("k").await.unwrap();
    assert_eq!(v, None);

    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!dir.exists(), "the private directory is removed on drop");
    assert!(redis_connection(&format!("redis://127.0.0.1:{port}"))
        .await
        .is_err());
}

#[tokio::test]
async fn private_redis_with_aof_keeps_data_across_a_restart() {
    if !PrivateRedis::available() {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let mut server =
        PrivateRedis::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let mut conn = redis_connection(&server.url).await.unwrap();
    let _: () = conn.set("durable", "yes").await.unwrap();
    server.restart().await;
    let mut conn = redis_connection(&server.url).await.unwrap();
    let v: Option<String> = conn.get("durable").await.unwrap();
    assert_eq!(v.as_deref(), Some("yes"));
}
