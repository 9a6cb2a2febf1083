//! Per-user MCP server configs: put, list (no secrets), load (opened), remove.

use zeroize::Zeroizing;

use super::{MAX_SEALED_PLAINTEXT, MCPCredentialStore, StoreError, key_id_column, now_unix, on_db};
use crate::crypto::{Binding, Purpose};
use crate::model::{AuthType, ServerAuth, ServerConfig, ServerName, Transport, UserId, ValidationError};

/// A server config as listed: everything but the secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerSummary {
    /// The server's name.
    pub name: String,
    /// How it is reached.
    pub transport: Transport,
    /// Which kind of auth it uses.
    pub auth_type: AuthType,
    /// Incremented by every put.
    pub version: i64,
    /// When it was last put (Unix seconds).
    pub updated_at: i64,
}

/// A server config as loaded for use, secrets opened.
#[derive(Debug, Clone)]
pub struct StoredServer {
    /// The config, with its secrets.
    pub config: ServerConfig,
    /// Its version.
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    name: String,
    transport: String,
    auth_type: String,
    version: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    name: String,
    transport: String,
    auth_sealed: Vec<u8>,
    version: i64,
}

const UPSERT: &str =
    "INSERT INTO servers (user_id, name, transport, auth_type, auth_sealed, key_id, version, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)
     ON CONFLICT (user_id, name) DO UPDATE SET transport = excluded.transport, auth_type = excluded.auth_type,
       auth_sealed = excluded.auth_sealed, key_id = excluded.key_id, version = servers.version + 1,
       updated_at = excluded.updated_at
     RETURNING version";

impl MCPCredentialStore {
    /// Creates or replaces `config` for `user` and returns its new version. Validates first:
    /// an invalid config writes nothing. If the transport or auth kind changed, the server's
    /// OAuth grant and pending authorizations are deleted: a grant issued for one server must
    /// never be sent to another.
    pub async fn put_server(&self, user: &str, config: &ServerConfig) -> Result<i64, StoreError> {
        let user = UserId::parse(user)?;
        config.validate()?;
        let plaintext = config.auth.to_sealable_json();
        if plaintext.len() > MAX_SEALED_PLAINTEXT {
            return Err(
                ValidationError::new("auth", format!("secrets total more than {MAX_SEALED_PLAINTEXT} bytes")).into()
            );
        }
        let name = config.name.as_str();
        let sealed = self.seal(Purpose::ServerAuth, user.as_str(), name, &plaintext)?;
        let transport =
            serde_json::to_string(&config.transport).map_err(|_| StoreError::Corrupt { what: "transport" })?;
        let auth_type = config.auth.auth_type().as_str();
        let key_id = key_id_column(self.keyring().primary());
        let now = now_unix();
        let version = on_db!(self.db(), pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let previous: Option<(String, String)> =
                sqlx::query_as("SELECT transport, auth_type FROM servers WHERE user_id = $1 AND name = $2")
                    .bind(user.as_str()).bind(name).fetch_optional(&mut *tx).await?;
            let changed = previous.as_ref().is_some_and(|(t, a)| *t != transport || a != auth_type);
            if changed {
                sqlx::query("DELETE FROM grants WHERE user_id = $1 AND server = $2")
                    .bind(user.as_str()).bind(name).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM pending_authorizations WHERE user_id = $1 AND server = $2")
                    .bind(user.as_str()).bind(name).execute(&mut *tx).await?;
            }
            let version: i64 = sqlx::query_scalar(UPSERT)
                .bind(user.as_str()).bind(name).bind(&transport).bind(auth_type).bind(&sealed).bind(key_id).bind(now)
                .fetch_one(&mut *tx).await?;
            let detail = format!("version={version} auth_type={auth_type}{}", if changed { " grant_cleared" } else { "" });
            sqlx::query(super::audit::INSERT)
                .bind(now).bind(user.as_str()).bind(name).bind(super::AuditEvent::ServerPut.as_str()).bind(&detail)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            version
        });
        Ok(version)
    }

    /// Lists `user`'s server configs without opening any secret.
    pub async fn list_servers(&self, user: &str) -> Result<Vec<ServerSummary>, StoreError> {
        let user = UserId::parse(user)?;
        let rows: Vec<SummaryRow> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT name, transport, auth_type, version, updated_at FROM servers WHERE user_id = $1 ORDER BY name")
                .bind(user.as_str()).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(ServerSummary {
                    transport: serde_json::from_str(&r.transport)
                        .map_err(|_| StoreError::Corrupt { what: "transport" })?,
                    auth_type: AuthType::parse(&r.auth_type).ok_or(StoreError::Corrupt { what: "auth_type" })?,
                    name: r.name,
                    version: r.version,
                    updated_at: r.updated_at,
                })
            })
            .collect()
    }

    /// Loads and opens every server config of `user`.
    pub async fn load_servers(&self, user: &str) -> Result<Vec<StoredServer>, StoreError> {
        let user = UserId::parse(user)?;
        let rows: Vec<SealedRow> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT name, transport, auth_sealed, version FROM servers WHERE user_id = $1 ORDER BY name")
                .bind(user.as_str()).fetch_all(pool).await?
        });
        rows.into_iter().map(|row| self.open_server_row(&user, row)).collect()
    }

    /// Loads and opens one server config of `user`, if it exists.
    pub async fn load_server(&self, user: &str, name: &str) -> Result<Option<StoredServer>, StoreError> {
        let user = UserId::parse(user)?;
        let name = ServerName::parse(name)?;
        let row: Option<SealedRow> = on_db!(self.db(), pool => {
            sqlx::query_as("SELECT name, transport, auth_sealed, version FROM servers WHERE user_id = $1 AND name = $2")
                .bind(user.as_str()).bind(name.as_str()).fetch_optional(pool).await?
        });
        row.map(|row| self.open_server_row(&user, row)).transpose()
    }

    /// Removes a server config with its grant and pending authorizations. Returns whether it
    /// existed.
    pub async fn remove_server(&self, user: &str, name: &str) -> Result<bool, StoreError> {
        let user = UserId::parse(user)?;
        let name = ServerName::parse(name)?;
        let now = now_unix();
        let removed = on_db!(self.db(), pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            for table in ["DELETE FROM grants WHERE user_id = $1 AND server = $2", "DELETE FROM pending_authorizations WHERE user_id = $1 AND server = $2"] {
                sqlx::query(table).bind(user.as_str()).bind(name.as_str()).execute(&mut *tx).await?;
            }
            let removed = sqlx::query("DELETE FROM servers WHERE user_id = $1 AND name = $2")
                .bind(user.as_str()).bind(name.as_str()).execute(&mut *tx).await?.rows_affected() > 0;
            if removed {
                sqlx::query(super::audit::INSERT)
                    .bind(now).bind(user.as_str()).bind(name.as_str()).bind(super::AuditEvent::ServerRemove.as_str()).bind("")
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            removed
        });
        Ok(removed)
    }

    fn open_server_row(&self, user: &UserId, row: SealedRow) -> Result<StoredServer, StoreError> {
        let plaintext: Zeroizing<Vec<u8>> =
            self.open(Purpose::ServerAuth, user.as_str(), &row.name, &row.auth_sealed)?;
        let auth: ServerAuth =
            serde_json::from_slice(&plaintext).map_err(|_| StoreError::Corrupt { what: "server auth" })?;
        let transport = serde_json::from_str(&row.transport).map_err(|_| StoreError::Corrupt { what: "transport" })?;
        Ok(StoredServer { config: ServerConfig { name: row.name, transport, auth }, version: row.version })
    }

    /// Seals `plaintext` for (purpose, user, server).
    pub(crate) fn seal(
        &self,
        purpose: Purpose,
        user: &str,
        server: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.keyring().seal(Binding::new(purpose, user, server), plaintext).map_err(|source| StoreError::Sealed {
            purpose,
            user: user.to_owned(),
            server: server.to_owned(),
            source,
        })
    }

    /// Opens a value sealed for (purpose, user, server).
    pub(crate) fn open(
        &self,
        purpose: Purpose,
        user: &str,
        server: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.keyring().open(Binding::new(purpose, user, server), blob).map_err(|source| StoreError::Sealed {
            purpose,
            user: user.to_owned(),
            server: server.to_owned(),
            source,
        })
    }
}
