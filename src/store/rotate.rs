//! Online key rotation: re-seal every row that is not under the primary key.
//!
//! Safe while daemons serve: each row is rewritten with a compare-and-swap on its old sealed
//! bytes, so a concurrent write (already under the new primary, if the daemon runs with it)
//! wins and the rotation simply moves on. Idempotent and resumable: it only looks at rows whose
//! `key_id` differs from the primary, so a second run, or a run after an interrupted one, does
//! only what is left. Deploy the new primary key (with the old one in `WARDEN_PREVIOUS_KEYS`) to
//! every daemon before rotating, or daemons still sealing under the old key keep adding work.

use std::collections::HashSet;

// Dynamic SQL here is built only from the constant table and column names in `COLUMNS`.
use sqlx::AssertSqlSafe;

use super::{MCPCredentialStore, StoreError, key_id_column, on_db};
use crate::crypto::Purpose;

/// What a rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// Rows re-sealed under the primary key.
    pub resealed: u64,
    /// Rows that could not be opened with any key of the ring (left untouched).
    pub failed: u64,
    /// Rows still not under the primary key when it finished (failed ones included).
    pub remaining: u64,
}

/// One sealed column: its table, the column, and how a row is identified.
struct Column {
    table: &'static str,
    sealed: &'static str,
    server: &'static str,
    /// Primary-key expression selected as text `pk`.
    pk: &'static str,
    purpose: Purpose,
}

const COLUMNS: [Column; 3] = [
    Column {
        table: "servers",
        sealed: "auth_sealed",
        server: "name",
        pk: "user_id || '/' || name",
        purpose: Purpose::ServerAuth,
    },
    Column {
        table: "grants",
        sealed: "tokens_sealed",
        server: "server",
        pk: "user_id || '/' || server",
        purpose: Purpose::GrantTokens,
    },
    Column {
        table: "pending_authorizations",
        sealed: "sealed",
        server: "server",
        pk: "state_hash",
        purpose: Purpose::PendingAuthorization,
    },
];

const BATCH: i64 = 256;

impl MCPCredentialStore {
    /// Re-seals every row not under the primary key. See the module doc.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        let primary = key_id_column(self.keyring().primary());
        let mut report = RotationReport::default();
        for col in &COLUMNS {
            let mut failed: HashSet<String> = HashSet::new();
            loop {
                let select = format!(
                    "SELECT {pk} AS pk, user_id, {server} AS server, {sealed} AS blob FROM {table} WHERE key_id <> $1 ORDER BY pk LIMIT $2",
                    pk = col.pk,
                    server = col.server,
                    sealed = col.sealed,
                    table = col.table
                );
                let rows: Vec<(String, String, String, Vec<u8>)> = on_db!(self.db(), pool => {
                    sqlx::query_as(AssertSqlSafe(select.as_str())).bind(primary).bind(BATCH + i64::try_from(failed.len()).unwrap_or(i64::MAX)).fetch_all(pool).await?
                });
                let mut progressed = false;
                for (pk, user, server, blob) in rows {
                    if failed.contains(&pk) {
                        continue;
                    }
                    let Ok(plaintext) = self.open(col.purpose, &user, &server, &blob) else {
                        failed.insert(pk);
                        continue;
                    };
                    let resealed = self.seal(col.purpose, &user, &server, &plaintext)?;
                    let update = format!(
                        "UPDATE {table} SET {sealed} = $1, key_id = $2 WHERE {pk} = $3 AND {sealed} = $4",
                        table = col.table,
                        sealed = col.sealed,
                        pk = col.pk
                    );
                    let n = on_db!(self.db(), pool => {
                        sqlx::query(AssertSqlSafe(update.as_str())).bind(&resealed).bind(primary).bind(&pk).bind(&blob).execute(pool).await?.rows_affected()
                    });
                    // n == 0: the row changed or vanished meanwhile; a concurrent writer sealed
                    // it anew, and the next batch sees it again if that was under an old key.
                    report.resealed += n;
                    progressed |= n > 0;
                }
                if !progressed {
                    break;
                }
            }
            report.failed += failed.len() as u64;
            let count = format!("SELECT COUNT(*) FROM {table} WHERE key_id <> $1", table = col.table);
            let remaining: i64 = on_db!(self.db(), pool => sqlx::query_scalar(AssertSqlSafe(count.as_str())).bind(primary).fetch_one(pool).await?);
            report.remaining += u64::try_from(remaining).unwrap_or(0);
        }
        Ok(report)
    }

    /// Counts sealed rows per key id across all tables: `(key id, rows)`.
    pub async fn rows_per_key(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = "SELECT key_id, CAST(SUM(n) AS BIGINT) FROM (
                SELECT key_id, COUNT(*) AS n FROM servers GROUP BY key_id
                UNION ALL SELECT key_id, COUNT(*) AS n FROM grants GROUP BY key_id
                UNION ALL SELECT key_id, COUNT(*) AS n FROM pending_authorizations GROUP BY key_id
            ) AS t GROUP BY key_id ORDER BY key_id";
        let rows: Vec<(i64, i64)> = on_db!(self.db(), pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows)
    }
}
