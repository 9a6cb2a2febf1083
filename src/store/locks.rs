//! Per-grant refresh locks: at most one refresh of a grant at a time, across the tasks of this
//! process and (on PostgreSQL) across every node sharing the database.
//!
//! In-process, a `tokio` mutex per (user, server). On PostgreSQL, the lock also takes a
//! transaction-scoped advisory lock (`pg_advisory_xact_lock`) on a connection of its own,
//! released when the lock is dropped (the transaction rolls back). SQLite has a single writer
//! and warden runs one process per SQLite file, so the in-process mutex is the whole lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Db, MCPCredentialStore, StoreError};

/// The in-process half: one mutex per (user, server).
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    locks: Mutex<HashMap<(String, String), LocalLock>>,
}

type LocalLock = Arc<tokio::sync::Mutex<()>>;

impl LockTable {
    fn get(&self, user: &str, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget locks nobody holds or waits for, so the table does not grow without bound.
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry((user.to_owned(), server.to_owned())).or_default().clone()
    }
}

/// A held refresh lock; dropping it releases both halves.
pub struct GrantLock {
    /// Held only to be dropped.
    #[allow(dead_code)]
    local: tokio::sync::OwnedMutexGuard<()>,
    /// The transaction holding the advisory lock; dropping it rolls back, which releases it.
    remote: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl std::fmt::Debug for GrantLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantLock").field("advisory", &self.remote.is_some()).finish_non_exhaustive()
    }
}

/// Two 32-bit advisory-lock keys for (user, server): a class key for warden's grant locks
/// and a hash of the pair. The two-key form never collides with sqlx's migration lock, which
/// uses the one-bigint form.
fn advisory_keys(user: &str, server: &str) -> (i32, i32) {
    use sha2::Digest as _;
    let digest =
        sha2::Sha256::new().chain_update(user.as_bytes()).chain_update([0]).chain_update(server.as_bytes()).finalize();
    (0x5741_5244, i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]))
}

impl MCPCredentialStore {
    /// Takes the refresh lock of (user, server), waiting for whoever holds it.
    pub async fn lock_grant(&self, user: &str, server: &str) -> Result<GrantLock, StoreError> {
        let local = self.locks().get(user, server).lock_owned().await;
        let remote = match self.db() {
            Db::Sqlite(_) => None,
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let (class, key) = advisory_keys(user, server);
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(class).bind(key).execute(&mut *tx).await?;
                Some(tx)
            }
        };
        Ok(GrantLock { local, remote })
    }
}
