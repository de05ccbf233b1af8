//! `jobsource serve` as a child process, for the tests that kill it.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobsource_tests::{cluster_nodes, free_port, redis_url};
use serde_json::Value;

/// A `jobsource serve` child process.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Serve {
    /// Starts `jobsource serve` on `prefix` and waits until it is ready.
    #[allow(dead_code)]
    pub async fn start(prefix: &str, database_url: &str) -> Serve {
        Serve::start_with(prefix, database_url, &[]).await
    }

    /// [`Serve::start`] with more environment (instance id, lease TTL, ...).
    pub async fn start_with(prefix: &str, database_url: &str, env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobsource"));
        for (k, v) in env {
            command.env(k, v);
        }
        // On the test cluster (JOBSOURCE_TEST_CLUSTER_NODES) the child runs on it.
        match cluster_nodes() {
            Some(nodes) => command
                .env_remove("REDIS_URL")
                .env("JOBSOURCE_REDIS_CLUSTER_NODES", nodes),
            None => command
                .env("REDIS_URL", redis_url())
                .env_remove("JOBSOURCE_REDIS_CLUSTER_NODES"),
        };
        let child = command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("JOBSOURCE_PREFIX", prefix)
            .env("JOBSOURCE_PARTITIONS", "4")
            .env("JOBSOURCE_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jobsource serve starts");
        let serve = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("{}/health/ready", serve.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return serve;
                }
            }
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no drain, no shutdown hook.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body`; returns the status and the JSON body (`Null` when not JSON).
pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
