//! Shared helpers for warden's integration tests: throwaway databases on both backends, keys.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::unused_async
)]

use std::sync::Arc;

use sqlx::Connection as _;
use warden::crypto::{Keyring, MasterKey};
use warden::store::MCPCredentialStore;

/// PostgreSQL admin URL; tests create and drop their own databases through it.
pub fn pg_admin_url() -> String {
    std::env::var("WARDEN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database on one backend, removed on drop.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("warden.db").display());
        Self {
            url,
            backend: "sqlite",
            dir: Some(dir),
            pg_name: None,
        }
    }

    /// A fresh PostgreSQL database. Panics (fails the test, never skips) if the server is
    /// unreachable.
    pub async fn postgres() -> Self {
        let name = format!("warden_test_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", pg_admin_url()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&pg_admin_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            backend: "postgres",
            dir: None,
            pg_name: Some(name),
        }
    }

    pub async fn store(&self, keyring: Arc<Keyring>) -> MCPCredentialStore {
        MCPCredentialStore::connect(&self.url, 4, keyring)
            .await
            .unwrap()
    }

    /// Every byte the database holds for warden's tables, as seen from outside warden: the
    /// SQLite files on disk, or every PostgreSQL row rendered as text plus its raw bytea.
    pub async fn raw_bytes(&self) -> Vec<u8> {
        if let Some(dir) = &self.dir {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                all.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            return all;
        }
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let mut all = Vec::new();
        for table in [
            "servers",
            "grants",
            "pending_authorizations",
            "audit_events",
        ] {
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text FROM {table} t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (r,) in rows {
                all.extend(r.into_bytes());
            }
        }
        for (table, col) in [
            ("servers", "auth_sealed"),
            ("grants", "tokens_sealed"),
            ("pending_authorizations", "sealed"),
        ] {
            let rows: Vec<(Vec<u8>,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {col} FROM {table}")))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for (r,) in rows {
                all.extend(r);
            }
        }
        all
    }

    /// Runs a raw statement with text binds (for tampering tests).
    pub async fn exec(&self, sql: &str, binds: &[&str]) -> u64 {
        if self.backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(&mut conn).await.unwrap().rows_affected()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(&mut conn).await.unwrap().rows_affected()
        }
    }

    /// Counts rows of a table.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any async context we can rely on; use a private runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A deterministic key from one byte.
pub fn key(byte: u8) -> MasterKey {
    use base64::Engine as _;
    MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
}

/// A keyring with one primary key from one byte.
pub fn keyring(byte: u8) -> Arc<Keyring> {
    Arc::new(Keyring::new(&key(byte), &[]))
}

/// Generates one `#[tokio::test]` per backend for an async test body `fn(TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::TestDb::sqlite().await).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::support::TestDb::postgres().await).await }) *
        }
    };
}
