//! `spawn_app()`: a whole `jobsource serve` on real Redis and PostgreSQL, isolated per test
//! (unique key prefix, fresh database), with typed request helpers.

use std::time::Duration;

use jobsource_api::serve::{ServeConfig, Server};
use jobsource_http::HttpConfig;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::{cleanup_prefix, cluster_nodes, redis_target, redis_url, unique_prefix, TestDatabase};

/// A running server and what it needs cleaning up.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The store's key prefix (also the read-model namespace).
    pub prefix: String,
    /// The store's partition count.
    pub partitions: u32,
    server: Option<Server>,
    db: Option<TestDatabase>,
}

/// An answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// JSON body.
    pub body: Value,
}

impl Answer {
    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    /// The `field` of every entry of an error body's `details`, in order.
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|f| f["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string field of the body.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_owned()
    }
}

/// Starts a server for `test` on the shared Redis and a fresh database.
pub async fn spawn_app(test: &str) -> TestApp {
    spawn_app_with(test, HttpConfig::default()).await
}

/// [`spawn_app`] with HTTP settings (API keys, body limit).
pub async fn spawn_app_with(test: &str, http: HttpConfig) -> TestApp {
    spawn_app_config(test, |config| config.http = http).await
}

/// [`spawn_app`] with any server setting changed by `configure` (webhook backoff, worker
/// tuning, ...) after the harness filled in the URLs, prefix and partitions.
pub async fn spawn_app_config(test: &str, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let prefix = unique_prefix(test);
    let db = TestDatabase::create().await;
    let mut config = ServeConfig {
        redis_url: Some(redis_url()),
        database_url: Some(db.url.clone()),
        prefix: prefix.clone(),
        partitions: 4,
        ..ServeConfig::default()
    };
    configure(&mut config);
    // On the test cluster (JOBSOURCE_TEST_CLUSTER_NODES) a server left on the shared Redis
    // runs on the cluster instead (embedded servers stay embedded).
    if let Some(nodes) = cluster_nodes() {
        if config.redis_url.as_deref() == Some(redis_url().as_str()) {
            config.redis_url = None;
            config.redis_cluster_nodes = Some(nodes);
        }
    }
    let partitions = config.partitions;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start_on(config, listener)
        .await
        .expect("server starts");
    TestApp {
        base: format!("http://{}", server.addr),
        client: reqwest::Client::new(),
        prefix,
        partitions,
        server: Some(server),
        db: Some(db),
    }
}

impl TestApp {
    /// URL of the test's own database (until [`TestApp::stop`]).
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// Another connection to the server's Redis event store, as a second instance (another
    /// process) would open it.
    pub async fn connect_store(&self) -> jobsource_eventstore::RedisStore {
        jobsource_eventstore::RedisStore::connect(
            redis_target(),
            jobsource_eventstore::StoreConfig {
                prefix: self.prefix.clone(),
                partitions: self.partitions,
                ..jobsource_eventstore::StoreConfig::default()
            },
        )
        .await
        .expect("a second connection to the test's store")
    }

    /// The server's registry of consumers (to stop one, as a crashed task would end).
    pub fn consumers(&self) -> Option<std::sync::Arc<jobsource_app::consumers::Consumers>> {
        self.server
            .as_ref()
            .and_then(|s| s.state.consumers().cloned())
    }

    /// Sends a request with optional JSON body and headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(&body), &[]).await
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None, &[]).await
    }

    /// Submits a job, asserting 201; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let a = self.post("/v1/jobs", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.str("job_id")
    }

    /// Reads a job through the read model once it has passed `position`.
    pub async fn job_at(&self, id: &str, position: &str) -> Value {
        let a = self
            .get(&format!("/v1/jobs/{id}?min_position={position}"))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body
    }

    /// Polls `GET path` until `done(body)` holds (the orchestrator and projections run
    /// asynchronously); panics after 10 s.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let a = self.get(path).await;
            if a.status == StatusCode::OK && done(&a.body) {
                return a.body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{path} never reached the expected state; last: {} {}",
                    a.status, a.body
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server, deletes the keys and drops the database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let _ = cleanup_prefix(redis_target(), &self.prefix).await;
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}

async fn read(res: Response) -> Answer {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}
