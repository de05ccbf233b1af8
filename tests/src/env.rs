//! Where the shared test servers are: `REDIS_URL` and `DATABASE_URL` (exported by
//! `scripts/test`), else the default local ports.

/// Redis used when `REDIS_URL` is unset or empty.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// PostgreSQL used when `DATABASE_URL` is unset or empty (user `postgres`, trust auth).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default.to_string(),
    }
}

/// The shared Redis: env `REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    env_or("REDIS_URL", DEFAULT_REDIS_URL)
}

/// The Redis Cluster the Redis tests run on instead, when `JOBSOURCE_TEST_CLUSTER_NODES`
/// names one (comma-separated node URLs; `scripts/test` starts a private 3-master cluster
/// and runs the conformance suite and the API end-to-end tests with it set).
pub fn cluster_nodes() -> Option<String> {
    std::env::var("JOBSOURCE_TEST_CLUSTER_NODES")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Where the tests' event stores live: the cluster of [`cluster_nodes`] when set, else
/// [`redis_url`].
pub fn redis_target() -> jobsource_eventstore::redis::RedisTarget {
    use jobsource_eventstore::redis::RedisTarget;
    match cluster_nodes() {
        Some(nodes) => RedisTarget::from_settings(None, Some(&nodes), "")
            .expect("JOBSOURCE_TEST_CLUSTER_NODES is a list of Redis URLs"),
        None => RedisTarget::Single(redis_url()),
    }
}

/// The shared PostgreSQL server: env `DATABASE_URL`, else
/// `postgres://postgres@127.0.0.1:5432/postgres`. Tests do not use its database directly;
/// they create their own with [`crate::TestDatabase::create`].
pub fn database_url() -> String {
    env_or("DATABASE_URL", DEFAULT_DATABASE_URL)
}
