//! Pending OAuth authorizations: what a callback needs (PKCE verifier, state, client settings),
//! sealed, indexed by a SHA-256 of the state so the state itself is not stored in the clear.
//! They live in the database so a callback survives a restart and may land on any node.

use std::fmt;

use zeroize::Zeroizing;

use super::{MCPCredentialStore, StoreError, key_id_column, now_unix, on_db};
use crate::crypto::{Purpose, sha256_hex};
use crate::model::{ServerName, UserId};

/// A pending authorization taken by its callback.
pub struct PendingAuthorization {
    /// The user who started it.
    pub user: String,
    /// The server it authorizes.
    pub server: String,
    /// The sealed payload, opened.
    pub payload: Zeroizing<Vec<u8>>,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("user", &self.user)
            .field("server", &self.server)
            .field("payload", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl MCPCredentialStore {
    /// Stores a pending authorization for (user, server) under `state`, expiring at
    /// `expires_at`. A second one with the same state replaces the first.
    pub async fn put_pending(
        &self,
        user: &str,
        server: &str,
        state: &str,
        payload: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let sealed = self.seal(Purpose::PendingAuthorization, user.as_str(), server.as_str(), payload)?;
        let hash = sha256_hex(state.as_bytes());
        let key_id = key_id_column(self.keyring().primary());
        on_db!(self.db(), pool => {
            sqlx::query(
                "INSERT INTO pending_authorizations (state_hash, user_id, server, sealed, key_id, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (state_hash) DO UPDATE SET user_id = excluded.user_id, server = excluded.server,
                   sealed = excluded.sealed, key_id = excluded.key_id, expires_at = excluded.expires_at")
                .bind(&hash).bind(user.as_str()).bind(server.as_str()).bind(&sealed).bind(key_id).bind(expires_at).bind(now_unix())
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Reads the pending authorization for `state` without removing it.
    pub async fn load_pending(&self, state: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        let hash = sha256_hex(state.as_bytes());
        let row: Option<(String, String, Vec<u8>, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT user_id, server, sealed, expires_at FROM pending_authorizations WHERE state_hash = $1")
                .bind(&hash).fetch_optional(pool).await?
        });
        self.open_pending(row)
    }

    /// Removes and returns the pending authorization for `state`; one that has expired is
    /// removed and reported as absent. Each state can be taken once.
    pub async fn take_pending(&self, state: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        let hash = sha256_hex(state.as_bytes());
        let row: Option<(String, String, Vec<u8>, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as("DELETE FROM pending_authorizations WHERE state_hash = $1 RETURNING user_id, server, sealed, expires_at")
                .bind(&hash).fetch_optional(pool).await?
        });
        self.open_pending(row)
    }

    /// Deletes the pending authorizations of (user, server) keyed by `state`, if any.
    pub async fn delete_pending(&self, state: &str) -> Result<bool, StoreError> {
        let hash = sha256_hex(state.as_bytes());
        let deleted = on_db!(self.db(), pool => {
            sqlx::query("DELETE FROM pending_authorizations WHERE state_hash = $1").bind(&hash).execute(pool).await?.rows_affected() > 0
        });
        Ok(deleted)
    }

    /// The newest unexpired pending authorization of (user, server), if any.
    pub async fn latest_pending(&self, user: &str, server: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let row: Option<(String, String, Vec<u8>, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as(
                "SELECT user_id, server, sealed, expires_at FROM pending_authorizations
                 WHERE user_id = $1 AND server = $2 AND expires_at > $3 ORDER BY created_at DESC, expires_at DESC LIMIT 1")
                .bind(user.as_str()).bind(server.as_str()).bind(now_unix()).fetch_optional(pool).await?
        });
        self.open_pending(row)
    }

    /// Deletes every expired pending authorization; returns how many.
    pub async fn purge_expired_pending(&self) -> Result<u64, StoreError> {
        let now = now_unix();
        let n = on_db!(self.db(), pool => {
            sqlx::query("DELETE FROM pending_authorizations WHERE expires_at < $1").bind(now).execute(pool).await?.rows_affected()
        });
        Ok(n)
    }

    fn open_pending(
        &self,
        row: Option<(String, String, Vec<u8>, i64)>,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let Some((user, server, sealed, expires_at)) = row else {
            return Ok(None);
        };
        if expires_at < now_unix() {
            return Ok(None);
        }
        let payload = self.open(Purpose::PendingAuthorization, &user, &server, &sealed)?;
        Ok(Some(PendingAuthorization { user, server, payload, expires_at }))
    }
}
