//! PostgreSQL migrations (`migrations/` at the workspace root, embedded at build time).

use sqlx::{Connection, PgConnection, PgPool};

use crate::error::ProjectionError;

/// The embedded migrator.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), ProjectionError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Connects to `url` (one connection) and applies every pending migration.
pub async fn migrate_url(url: &str) -> Result<(), ProjectionError> {
    let mut conn = PgConnection::connect(url).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
