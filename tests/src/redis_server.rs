//! A private `redis-server` for tests that kill or restart Redis (never the shared one).
//!
//! [`PrivateRedis::start`] runs `redis-server --port <free port> --bind 127.0.0.1
//! --save "" --appendonly no --dir <temp dir>` as a child process and waits until it
//! answers PING. [`PrivateRedis::kill`] kills it (SIGKILL, like a crash),
//! [`PrivateRedis::restart`] starts it again on the same port and directory. Dropping the
//! value kills the server and removes its directory.
//!
//! Tests that need one call [`PrivateRedis::available`] first and skip (with a message)
//! when `redis-server` is not installed; `scripts/test` installs it when it starts its own
//! servers, so under CI it is there.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A free TCP port on 127.0.0.1 (bind port 0, read the port, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// A `redis-server` child process owned by one test.
#[derive(Debug)]
pub struct PrivateRedis {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// The running server, `None` after [`PrivateRedis::kill`].
    pub child: Option<Child>,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl PrivateRedis {
    /// Whether a `redis-server` binary can be found.
    pub fn available() -> bool {
        redis_server_binary().is_some()
    }

    /// Starts a private server with the default arguments (no persistence).
    pub async fn start() -> PrivateRedis {
        Self::start_with_args(&[]).await
    }

    /// Starts a private server; `extra_args` come after the defaults, so they override
    /// them (e.g. `["--appendonly", "yes"]` for a test that needs the data to survive a
    /// restart). Panics when `redis-server` is missing or does not come up.
    pub async fn start_with_args(extra_args: &[&str]) -> PrivateRedis {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("jobsource-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating the private redis directory");
        let mut server = PrivateRedis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn(true).await;
        server
    }

    /// The server's working directory (RDB/AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server process is running (started and not killed).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (as a crash would) and waits for it to exit.
    /// Connections to it fail until [`PrivateRedis::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port and directory
    /// and waits until it answers PING. Without persistence the data is gone.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn(false).await;
    }

    /// Starts the child and waits until *it* (checked by process id, not just anything on
    /// the port) answers. On a first start a port taken meanwhile is swapped for another.
    async fn spawn(&mut self, may_change_port: bool) {
        assert!(self.child.is_none(), "private redis already running");
        let binary = redis_server_binary().expect("redis-server not found (install redis-server)");
        let log = self.dir.join("redis.log");
        // The port was free a moment ago; after a kill it may briefly still be held, so
        // retry a few times before giving up.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut cmd = Command::new(&binary);
            cmd.args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .arg("--logfile")
                .arg(&log)
                .args(&self.extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            loop {
                if server_pid(self.port) == Some(child.id()) {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // Exited, most likely the port is (still) taken: try again.
                    if may_change_port {
                        self.port = free_port();
                        self.url = format!("redis://127.0.0.1:{}", self.port);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "private redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                        self.port,
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if Instant::now() > deadline {
                panic!(
                    "private redis-server on port {} kept exiting; log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` on PATH, else in the usual places.
fn redis_server_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// The `process_id` the server on `port` reports (`INFO server`, raw RESP, blocking,
/// 500 ms timeouts), or `None` when nothing answers.
fn server_pid(port: u16) -> Option<u32> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 64 * 1024 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some(end) = rest.find("\r\n") {
                return rest[..end].trim().parse().ok();
            }
        }
        if text.starts_with('-') && text.contains("\r\n") {
            return None; // an error reply (e.g. still loading)
        }
    }
    None
}
