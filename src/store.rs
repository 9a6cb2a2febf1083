//! `MCPCredentialStore`: warden's only door to the database, on SQLite or PostgreSQL.
//!
//! One API over both backends: each query is written once (SQLite accepts PostgreSQL's `$N`
//! placeholders) and run against whichever pool is open, through the [`on_db!`] dispatch.
//! Secrets are sealed before they reach SQL and opened after they leave it; the plaintext
//! columns hold only what listing and scheduling need (names, transport, auth type, expiry,
//! generation, status). Inputs are validated at this door, so a bad one writes nothing.
//!
//! # Layout
//! - `store/servers.rs` — per-user server configs.
//! - `store/grants.rs` — OAuth grants, compare-and-swap on `generation`.
//! - `store/pending.rs` — pending OAuth authorizations, indexed by a hash of the state.
//! - `store/audit.rs` — the audit trail (no secrets).
//! - `store/rotate.rs` — online re-sealing under the primary key.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::crypto::{CryptoError, Keyring, Purpose};
use crate::model::ValidationError;

mod audit;
mod grants;
mod locks;
mod pending;
mod rotate;
mod servers;

pub use audit::{AuditEvent, AuditRecord};
pub use grants::{Expect, Grant, GrantSchedule, GrantStatus, GrantWrite};
pub use locks::GrantLock;
pub use pending::PendingAuthorization;
pub use rotate::RotationReport;
pub use servers::{ServerSummary, StoredServer};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Largest sealed plaintext per row, in bytes.
pub const MAX_SEALED_PLAINTEXT: usize = 64 * 1024;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Input failed validation; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A compare-and-swap lost: the row changed (or appeared, or vanished) since it was read.
    #[error("{what} of user {user} on server {server} changed concurrently")]
    Conflict {
        /// What was being written.
        what: &'static str,
        /// The user.
        user: String,
        /// The server.
        server: String,
    },
    /// A row needed for the write does not exist.
    #[error("user {user} has no server named {server}")]
    UnknownServer {
        /// The user.
        user: String,
        /// The server.
        server: String,
    },
    /// A sealed value failed to open (wrong key, tampered, or moved from another row).
    #[error("sealed {purpose:?} of user {user} on server {server} could not be opened: {source}")]
    Sealed {
        /// The column.
        purpose: Purpose,
        /// The user.
        user: String,
        /// The server.
        server: String,
        /// Why.
        source: CryptoError,
    },
    /// A row's plaintext columns or opened JSON do not parse.
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// What failed to parse.
        what: &'static str,
    },
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The pool of whichever backend is open.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the open backend's pool. The body is compiled once per
/// backend, so it may use anything generic over `sqlx::Database` (queries, transactions, rows).
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The encrypted credential store (the seed's `MCPCredentialStore`). Cheap to clone.
#[derive(Clone)]
pub struct MCPCredentialStore {
    db: Db,
    keyring: Arc<Keyring>,
    locks: Arc<locks::LockTable>,
}

// The pool is left out on purpose: its Debug is long and says nothing useful.
#[allow(clippy::missing_fields_in_debug)]
impl std::fmt::Debug for MCPCredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MCPCredentialStore").field("backend", &self.backend()).field("keyring", &self.keyring).finish()
    }
}

impl MCPCredentialStore {
    /// Opens `url` (`sqlite:PATH` or `postgres://...`) and applies the embedded migrations.
    /// A SQLite file and its directory (0700) are created if missing.
    pub async fn connect(url: &str, max_connections: u32, keyring: Arc<Keyring>) -> Result<Self, StoreError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let path = options.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(sqlx::Error::Io)?;
            }
            let pool = SqlitePoolOptions::new().max_connections(max_connections).connect_with(options).await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Db::Sqlite(pool)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Db::Postgres(pool)
        };
        Ok(Self { db, keyring, locks: Arc::default() })
    }

    /// Which backend this store is on.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The keyring sealing and opening this store's values.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The same store with another keyring (used after rotation, and by tests).
    #[must_use]
    pub fn with_keyring(&self, keyring: Arc<Keyring>) -> Self {
        Self { db: self.db.clone(), keyring, locks: self.locks.clone() }
    }

    /// The statement that opens a writing transaction. SQLite needs `BEGIN IMMEDIATE`: a
    /// deferred transaction that reads and then writes fails with "database is locked" when
    /// another writer got there first, without waiting for the busy timeout.
    pub(crate) fn begin_write(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }

    fn locks(&self) -> &locks::LockTable {
        &self.locks
    }

    /// The pool, for the modules that implement the store's parts.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await);
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Converts a key id for an INTEGER/BIGINT column.
pub(crate) fn key_id_column(id: crate::crypto::KeyId) -> i64 {
    i64::from(id.0)
}

#[cfg(test)]
mod tests;
