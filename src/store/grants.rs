//! OAuth grants: a sealed token set per (user, server), with the plaintext expiry the refresher
//! schedules on, and a `generation` that every replacing write compares and swaps.

use std::fmt;

use zeroize::Zeroizing;

use super::{AuditEvent, MCPCredentialStore, StoreError, key_id_column, now_unix, on_db};
use crate::crypto::Purpose;
use crate::model::{ServerName, UserId};

/// A grant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Usable and refreshed ahead of expiry.
    Active,
    /// The authorization server rejected its refresh token; the user must authorize again.
    ReauthorizationRequired,
}

impl GrantStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::ReauthorizationRequired => "reauthorization_required",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "active" => Ok(GrantStatus::Active),
            "reauthorization_required" => Ok(GrantStatus::ReauthorizationRequired),
            _ => Err(StoreError::Corrupt { what: "grant status" }),
        }
    }
}

/// A grant as loaded: the opened token set and its bookkeeping.
pub struct Grant {
    /// The token set as sealed by the caller (opaque bytes to the store), opened.
    pub tokens: Zeroizing<Vec<u8>>,
    /// When the access token expires (Unix seconds), if known.
    pub expires_at: Option<i64>,
    /// Compare-and-swap counter: every replacing write increments it.
    pub generation: i64,
    /// Whether it is usable.
    pub status: GrantStatus,
    /// The OAuth client id the grant was issued to.
    pub client_id: Option<String>,
    /// The issuer that issued it.
    pub issuer: Option<String>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("tokens", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .field("status", &self.status)
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// What a write stores.
pub struct GrantWrite<'a> {
    /// The token set to seal.
    pub tokens: &'a [u8],
    /// When its access token expires (Unix seconds), if known.
    pub expires_at: Option<i64>,
    /// The client id.
    pub client_id: Option<&'a str>,
    /// The issuer.
    pub issuer: Option<&'a str>,
}

/// What a grant write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No grant yet: insert only.
    Absent,
    /// The grant at exactly this generation (a refresh replacing what it read).
    Generation(i64),
    /// Whatever is there (a fresh authorization supersedes any older grant).
    Any,
}

/// An active grant's schedule entry, for the token refresher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSchedule {
    /// The user.
    pub user: String,
    /// The server.
    pub server: String,
    /// When its access token expires.
    pub expires_at: Option<i64>,
    /// Its generation when read.
    pub generation: i64,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    tokens_sealed: Vec<u8>,
    expires_at: Option<i64>,
    generation: i64,
    status: String,
    client_id: Option<String>,
    issuer: Option<String>,
}

impl MCPCredentialStore {
    /// Loads and opens the grant of (user, server), if any.
    pub async fn load_grant(&self, user: &str, server: &str) -> Result<Option<Grant>, StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let row: Option<GrantRow> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT tokens_sealed, expires_at, generation, status, client_id, issuer FROM grants WHERE user_id = $1 AND server = $2")
                .bind(user.as_str()).bind(server.as_str()).fetch_optional(pool).await?
        });
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Grant {
            tokens: self.open(Purpose::GrantTokens, user.as_str(), server.as_str(), &row.tokens_sealed)?,
            expires_at: row.expires_at,
            generation: row.generation,
            status: GrantStatus::parse(&row.status)?,
            client_id: row.client_id,
            issuer: row.issuer,
        }))
    }

    /// Stores a grant for (user, server) if the current row matches `expect`, and returns the
    /// new generation. The status becomes active. A lost race is [`StoreError::Conflict`] and
    /// changes nothing. The server config must exist.
    pub async fn save_grant(
        &self,
        user: &str,
        server: &str,
        write: &GrantWrite<'_>,
        expect: Expect,
    ) -> Result<i64, StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let sealed = self.seal(Purpose::GrantTokens, user.as_str(), server.as_str(), write.tokens)?;
        let key_id = key_id_column(self.keyring().primary());
        let now = now_unix();
        let (u, s) = (user.as_str(), server.as_str());
        let generation: Option<i64> = on_db!(self.db(), pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM servers WHERE user_id = $1 AND name = $2")
                .bind(u).bind(s).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                return Err(StoreError::UnknownServer { user: u.to_owned(), server: s.to_owned() });
            }
            let generation: Option<i64> = match expect {
                Expect::Absent => sqlx::query_scalar(
                    "INSERT INTO grants (user_id, server, tokens_sealed, key_id, expires_at, generation, status, client_id, issuer, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 1, 'active', $6, $7, $8, $8)
                     ON CONFLICT (user_id, server) DO NOTHING RETURNING generation")
                    .bind(u).bind(s).bind(&sealed).bind(key_id).bind(write.expires_at).bind(write.client_id).bind(write.issuer).bind(now)
                    .fetch_optional(&mut *tx).await?,
                Expect::Any => sqlx::query_scalar(
                    "INSERT INTO grants (user_id, server, tokens_sealed, key_id, expires_at, generation, status, client_id, issuer, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 1, 'active', $6, $7, $8, $8)
                     ON CONFLICT (user_id, server) DO UPDATE SET tokens_sealed = excluded.tokens_sealed, key_id = excluded.key_id,
                       expires_at = excluded.expires_at, generation = grants.generation + 1, status = 'active',
                       client_id = excluded.client_id, issuer = excluded.issuer, updated_at = excluded.updated_at
                     RETURNING generation")
                    .bind(u).bind(s).bind(&sealed).bind(key_id).bind(write.expires_at).bind(write.client_id).bind(write.issuer).bind(now)
                    .fetch_optional(&mut *tx).await?,
                Expect::Generation(expected) => sqlx::query_scalar(
                    "UPDATE grants SET tokens_sealed = $3, key_id = $4, expires_at = $5, generation = generation + 1, status = 'active',
                       client_id = $6, issuer = $7, updated_at = $8
                     WHERE user_id = $1 AND server = $2 AND generation = $9 RETURNING generation")
                    .bind(u).bind(s).bind(&sealed).bind(key_id).bind(write.expires_at).bind(write.client_id).bind(write.issuer).bind(now).bind(expected)
                    .fetch_optional(&mut *tx).await?,
            };
            if let Some(g) = generation {
                sqlx::query(super::audit::INSERT)
                    .bind(now).bind(u).bind(s).bind(AuditEvent::GrantSaved.as_str()).bind(format!("generation={g}"))
                    .execute(&mut *tx).await?;
                tx.commit().await?;
            }
            generation
        });
        generation.ok_or_else(|| StoreError::Conflict { what: "grant", user: u.to_owned(), server: s.to_owned() })
    }

    /// Marks the grant as needing re-authorization, but only if it is still at `generation`:
    /// a failure that arrives after another refresh succeeded leaves the newer grant alone.
    /// Returns whether the grant was marked.
    pub async fn mark_reauthorization_required(
        &self,
        user: &str,
        server: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let now = now_unix();
        let marked = on_db!(self.db(), pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let marked = sqlx::query(
                "UPDATE grants SET status = 'reauthorization_required', updated_at = $3
                 WHERE user_id = $1 AND server = $2 AND generation = $4 AND status = 'active'")
                .bind(user.as_str()).bind(server.as_str()).bind(now).bind(generation)
                .execute(&mut *tx).await?.rows_affected() > 0;
            if marked {
                sqlx::query(super::audit::INSERT)
                    .bind(now).bind(user.as_str()).bind(server.as_str()).bind(AuditEvent::GrantReauthorizationRequired.as_str())
                    .bind(format!("generation={generation}"))
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            marked
        });
        Ok(marked)
    }

    /// Deletes the grant of (user, server). Returns whether one existed.
    pub async fn delete_grant(&self, user: &str, server: &str) -> Result<bool, StoreError> {
        let (user, server) = (UserId::parse(user)?, ServerName::parse(server)?);
        let deleted = on_db!(self.db(), pool => {
            sqlx::query("DELETE FROM grants WHERE user_id = $1 AND server = $2")
                .bind(user.as_str()).bind(server.as_str()).execute(pool).await?.rows_affected() > 0
        });
        Ok(deleted)
    }

    /// Every active grant with its expiry, for the refresher's schedule.
    pub async fn active_grants(&self) -> Result<Vec<GrantSchedule>, StoreError> {
        let rows: Vec<(String, String, Option<i64>, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT user_id, server, expires_at, generation FROM grants WHERE status = 'active' ORDER BY user_id, server")
                .fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(user, server, expires_at, generation)| GrantSchedule { user, server, expires_at, generation })
            .collect())
    }

    /// The status of each of `user`'s grants, by server (nothing is opened).
    pub async fn grant_statuses(
        &self,
        user: &str,
    ) -> Result<std::collections::HashMap<String, GrantStatus>, StoreError> {
        let user = UserId::parse(user)?;
        let rows: Vec<(String, String)> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT server, status FROM grants WHERE user_id = $1").bind(user.as_str()).fetch_all(pool).await?
        });
        rows.into_iter().map(|(server, status)| Ok((server, GrantStatus::parse(&status)?))).collect()
    }

    /// Counts grants by status: (active, reauthorization required).
    pub async fn grant_counts(&self) -> Result<(i64, i64), StoreError> {
        let rows: Vec<(String, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT status, COUNT(*) FROM grants GROUP BY status").fetch_all(pool).await?
        });
        let count = |status: GrantStatus| rows.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
        Ok((count(GrantStatus::Active), count(GrantStatus::ReauthorizationRequired)))
    }
}
