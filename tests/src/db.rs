//! A fresh PostgreSQL database per test.
//!
//! [`TestDatabase::create`] makes `t_<uuid>` on the server of [`crate::database_url`];
//! the test uses [`TestDatabase::url`] and calls [`TestDatabase::drop_db`] at the end.
//! Dropping is async, which `Drop` cannot await: when a test forgets `drop_db` or panics
//! before reaching it, `Drop` makes a best-effort `DROP DATABASE ... WITH (FORCE)` from a
//! helper thread with its own runtime (bounded by a timeout), so runs do not pile up
//! databases. Calling `drop_db` is still the rule: it reports errors.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// How long creating or dropping a database may take before it is given up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A database of its own for one test, dropped at the end of the test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database (same server, user and options as
    /// [`crate::database_url`]).
    pub url: String,
    name: String,
    /// URL of the maintenance database the admin statements run on.
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates a fresh, empty database `t_<uuid simple>` on the server of
    /// [`crate::database_url`]. Panics (failing the test) when the server is unreachable.
    pub async fn create() -> TestDatabase {
        Self::try_create(&crate::database_url())
            .await
            .unwrap_or_else(|e| panic!("TestDatabase::create: {e}"))
    }

    /// Like [`TestDatabase::create`] on the server of `admin_url`, returning errors.
    pub async fn try_create(admin_url: &str) -> Result<TestDatabase, sqlx::Error> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE \"{name}\"");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match admin_exec(admin_url, &sql).await {
                Ok(()) => break,
                // Concurrent CREATE DATABASE can trip over someone connected to the
                // template ("source database ... is being accessed by other users").
                Err(e) if attempt < 5 && e.to_string().contains("being accessed") => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(TestDatabase {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
            dropped: false,
        })
    }

    /// The database's name (`t_<32 hex chars>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to this database.
    pub async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect(&self.url).await
    }

    /// A connection pool on this database (at most `max_connections`).
    pub async fn pool(&self, max_connections: u32) -> Result<sqlx::PgPool, sqlx::Error> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&self.url)
            .await
    }

    /// Drops the database (`DROP DATABASE ... WITH (FORCE)`, which also ends connections
    /// still open on it). Call it at the end of every test; panics on failure.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name)
            .await
            .unwrap_or_else(|e| panic!("dropping test database {}: {e}", self.name));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Best effort: a thread of its own, so this works inside or outside a runtime.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(drop_database(&admin_url, &name)).err()
        });
        if let Ok(Some(e)) = handle.join() {
            eprintln!(
                "TestDatabase: best-effort drop of {} failed: {e}",
                self.name
            );
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    admin_exec(
        admin_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await
}

/// Runs one statement (outside any transaction) on a short-lived connection.
async fn admin_exec(admin_url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let work = async {
        let mut conn = PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        conn.close().await
    };
    tokio::time::timeout(ADMIN_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("`{sql}` took longer than {ADMIN_TIMEOUT:?}"),
            )))
        })
}

/// `url` with its database (the path) replaced by `database`; user, host, port and query
/// parameters are kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    format!("{}/{database}{query}", &base[..path_start])
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_only() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
            "postgres://postgres@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t_2"),
            "postgres://u:p@h:1/t_2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "t_3"), "postgres://h:1/t_3");
        assert_eq!(
            with_database("postgresql://h?host=/tmp", "t_4"),
            "postgresql://h/t_4?host=/tmp"
        );
    }
}
