//! The audit trail: who changed what, and which requests were refused. Details never hold a
//! secret; they are built from names, versions and generations only.

use super::{MCPCredentialStore, StoreError, now_unix, on_db};
use crate::model::UserId;

/// The insert every audited write runs inside its own transaction.
pub(crate) const INSERT: &str =
    "INSERT INTO audit_events (at, user_id, server, event, detail) VALUES ($1, $2, $3, $4, $5)";

/// Kinds of audited events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    /// A server config was created or replaced.
    ServerPut,
    /// A server config was removed.
    ServerRemove,
    /// A grant was stored (authorization or refresh).
    GrantSaved,
    /// A grant's refresh token was rejected.
    GrantReauthorizationRequired,
    /// A request was refused because its connection is bound to another user.
    Forbidden,
    /// A user's session was stopped on request.
    SessionStopped,
    /// An OAuth authorization was started.
    AuthorizationStarted,
}

impl AuditEvent {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::ServerPut => "server.put",
            AuditEvent::ServerRemove => "server.remove",
            AuditEvent::GrantSaved => "grant.saved",
            AuditEvent::GrantReauthorizationRequired => "grant.reauthorization_required",
            AuditEvent::Forbidden => "request.forbidden",
            AuditEvent::SessionStopped => "session.stopped",
            AuditEvent::AuthorizationStarted => "oauth.started",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// The user concerned.
    pub user_id: String,
    /// The server concerned, if any.
    pub server: Option<String>,
    /// The event name.
    pub event: String,
    /// Non-secret detail.
    pub detail: String,
}

impl MCPCredentialStore {
    /// Records an event. `detail` must not contain secrets.
    pub async fn audit(
        &self,
        user: &str,
        server: Option<&str>,
        event: AuditEvent,
        detail: &str,
    ) -> Result<(), StoreError> {
        let user = UserId::parse(user)?;
        on_db!(self.db(), pool => {
            sqlx::query(INSERT).bind(now_unix()).bind(user.as_str()).bind(server).bind(event.as_str()).bind(detail).execute(pool).await?;
        });
        Ok(())
    }

    /// The most recent `limit` events of `user`, oldest first.
    pub async fn audit_events(&self, user: &str, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let user = UserId::parse(user)?;
        let mut rows: Vec<AuditRecord> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT at, user_id, server, event, detail FROM audit_events WHERE user_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(user.as_str()).bind(limit).fetch_all(pool).await?
        });
        rows.reverse();
        Ok(rows)
    }
}
