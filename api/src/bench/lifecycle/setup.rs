//! Running `bench lifecycle`: the server it starts (embedded or durable on a scratch
//! prefix and database) and the audit-trail check after the clock stops.

use super::*;

/// Result of the audit-trail check.
#[derive(Debug, Default)]
pub(super) struct EventCheck {
    pub(super) checked: usize,
    /// Jobs whose trail does not hold exactly one `job_assigned` and one `job_completed`
    /// (or could not be read).
    pub(super) bad: HashSet<Uuid>,
}

/// A job's `job_assigned` and `job_completed` counts, or why its trail could not be read.
pub(super) type TrailCounts = Result<(usize, usize), String>;

/// Reads the events of `ids` (`concurrency` at a time) and counts assignments and
/// completions.
pub(super) async fn check_events(
    http: &reqwest::Client,
    base: &str,
    ids: Vec<Uuid>,
    concurrency: usize,
) -> EventCheck {
    let checked = ids.len();
    let results: Vec<(Uuid, TrailCounts)> =
        futures::stream::iter(ids.into_iter().map(|id| async move {
            let res = async {
                let r = http
                    .get(format!("{base}/v1/jobs/{id}/events"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status();
                if status != reqwest::StatusCode::OK {
                    return Err(format!("{status} {}", r.text().await.unwrap_or_default()));
                }
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                let events = v["events"].as_array().ok_or("no events array")?;
                let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
                Ok((count("job_assigned"), count("job_completed")))
            }
            .await;
            (id, res)
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut out = EventCheck {
        checked,
        bad: HashSet::new(),
    };
    let mut shown = 0;
    for (id, res) in results {
        let ok = matches!(res, Ok((1, 1)));
        if !ok {
            if shown < 5 {
                eprintln!("events of {id}: {res:?} (want 1 job_assigned, 1 job_completed)");
                shown += 1;
            }
            out.bad.insert(id);
        }
    }
    out
}

/// `url` with its database name replaced by `db`.
pub(super) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    match base[host_start..].find('/') {
        Some(i) => format!("{}/{db}{query}", &base[..host_start + i]),
        None => format!("{base}/{db}{query}"),
    }
}

/// The durable run's scratch resources, removed by [`Scratch::remove`].
pub(super) struct Scratch {
    pub(super) redis: jobsource_eventstore::redis::RedisTarget,
    pub(super) prefix: String,
    pub(super) admin: sqlx::PgPool,
    pub(super) database: String,
}

impl Scratch {
    pub(super) async fn remove(self) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&self.admin)
        .await?;
        self.admin.close().await;
        let store = jobsource_eventstore::RedisStore::connect(
            self.redis.clone(),
            jobsource_eventstore::StoreConfig {
                prefix: self.prefix.clone(),
                ..jobsource_eventstore::StoreConfig::default()
            },
        )
        .await?;
        super::super::delete_keys(&store, &format!("{}:*", self.prefix)).await
    }
}

/// Runs the benchmark; fails unless every job completed exactly once.
pub async fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let durable = args.durable
        || args.redis_url.is_some()
        || args.redis_cluster_nodes.is_some()
        || args.database_url.is_some();
    let mode = match (&args.url, durable) {
        (Some(_), _) => "url",
        (None, true) => "durable",
        (None, false) => "embedded",
    };
    let mut server = None;
    let mut scratch = None;
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let id = Uuid::now_v7().simple().to_string();
            let prefix = format!("bench-life-{id}");
            let mut config = ServeConfig {
                prefix: prefix.clone(),
                ..ServeConfig::default()
            };
            if durable {
                let redis = jobsource_eventstore::redis::RedisTarget::from_settings(
                    args.redis_url.as_deref(),
                    args.redis_cluster_nodes.as_deref(),
                    DEFAULT_REDIS,
                )?;
                let admin_url = args
                    .database_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DATABASE.into());
                let database = format!("bench_life_{id}");
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url)
                    .await?;
                sqlx::query(&format!("CREATE DATABASE {database}"))
                    .execute(&admin)
                    .await?;
                match &redis {
                    jobsource_eventstore::redis::RedisTarget::Single(url) => {
                        config.redis_url = Some(url.clone());
                    }
                    jobsource_eventstore::redis::RedisTarget::Cluster(nodes) => {
                        config.redis_cluster_nodes = Some(nodes.join(","));
                    }
                }
                config.database_url = Some(with_database(&admin_url, &database));
                scratch = Some(Scratch {
                    redis,
                    prefix,
                    admin,
                    database,
                });
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            match Server::start_on(config, listener).await {
                Ok(s) => {
                    let base = format!("http://{}", s.addr);
                    server = Some(s);
                    base
                }
                Err(e) => {
                    if let Some(sc) = scratch.take() {
                        sc.remove().await?;
                    }
                    return Err(e.into());
                }
            }
        }
    };

    let outcome = workload(&args, &base, mode).await;

    if let Some(s) = server.take() {
        s.shutdown().await;
    }
    if let Some(sc) = scratch.take() {
        if args.keep {
            eprintln!("kept prefix {} and database {}", sc.prefix, sc.database);
        } else {
            sc.remove().await?;
        }
    }
    outcome
}
