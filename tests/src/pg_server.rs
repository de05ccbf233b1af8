//! A private PostgreSQL server for tests that stop and restart the database (never the
//! shared one): `initdb` into a temp dir and `pg_ctl` on a free loopback port, as the
//! `postgres` user when the tests run as root (PostgreSQL refuses to run as root).

use std::path::PathBuf;
use std::process::Command;

use crate::redis_server::free_port;

/// A private PostgreSQL cluster owned by one test; stopped and removed on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_user: Option<String>,
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    /// Whether `initdb`/`pg_ctl` can be found.
    pub fn available() -> bool {
        pg_bin().is_some()
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Creates and starts a cluster. Panics when PostgreSQL is missing or does not start.
    pub fn start() -> PrivatePostgres {
        let bin = pg_bin().expect("PostgreSQL server binaries (initdb) not found");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("jobsource-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let as_user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &as_user {
            let _ = Command::new("chown").arg(user).arg(&dir).status();
        }
        let pg = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            dir,
            as_user,
        };
        let data = pg.dir.join("data");
        let data = data.to_string_lossy().into_owned();
        assert!(
            pg.run(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            "initdb failed"
        );
        assert!(pg.start_again(), "private PostgreSQL did not start");
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Starts the (stopped) server again on the same port; waits until it accepts.
    pub fn start_again(&self) -> bool {
        let opts = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.to_string_lossy()
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        )
    }

    /// Stops the server immediately (like a crash of the database).
    pub fn stop(&self) -> bool {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
