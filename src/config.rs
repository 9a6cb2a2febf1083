//! Configuration: `config.toml`, its defaults, and the environment overrides.
//!
//! Every setting has a default, so an empty file (or none) is a valid config. Unknown keys are an
//! error: a typo in a security setting must not silently fall back to a default. Relative paths
//! are resolved against the directory holding the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable that overrides `database.url`.
pub const ENV_DATABASE_URL: &str = "WARDEN_DATABASE_URL";
/// Environment variable holding the primary master key (base64, 32 bytes).
pub const ENV_MASTER_KEY: &str = "WARDEN_MASTER_KEY";
/// Environment variable holding older master keys during rotation (comma-separated base64).
pub const ENV_PREVIOUS_KEYS: &str = "WARDEN_PREVIOUS_KEYS";

/// A configuration problem; `warden serve` exits 64 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The path read.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config value {field}: {reason}")]
    Value {
        /// The setting, as `section.key`.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where durable state lives.
    pub database: DatabaseConfig,
    /// Master key sources.
    pub keys: KeysConfig,
    /// The Unix control socket.
    pub control: ControlConfig,
    /// Per-user sessions.
    pub sessions: SessionsConfig,
    /// OAuth flows and refresh.
    pub oauth: OAuthConfig,
    /// What user configs may reach.
    pub policy: PolicyConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (relative to the config file) or `postgres://...`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "sqlite:data/warden.db".into(), max_connections: 8 }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Refuse to start unless `WARDEN_MASTER_KEY` is set (production).
    pub require_env_key: bool,
    /// Where a development key is created when no key is in the environment.
    pub dev_key_file: PathBuf,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { require_env_key: false, dev_key_file: PathBuf::from("data/dev-master.key") }
    }
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// The socket path; its directory is created 0700.
    pub socket_path: PathBuf,
    /// Peer uids allowed to connect; empty means only the daemon's own uid.
    pub allowed_uids: Vec<u32>,
    /// Largest request line, in bytes.
    pub max_frame_bytes: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Most requests in flight on one connection.
    pub max_in_flight: usize,
    /// A connection idle this long is closed, in seconds.
    pub idle_timeout_s: u64,
    /// On shutdown, how long in-flight calls may finish, in seconds.
    pub shutdown_grace_s: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from("data/run/warden.sock"),
            allowed_uids: Vec::new(),
            max_frame_bytes: 1024 * 1024,
            max_connections: 1024,
            max_in_flight: 256,
            idle_timeout_s: 300,
            shutdown_grace_s: 10,
        }
    }
}

/// `[sessions]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Default deadline of one tool call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Deadline for connecting and initializing an MCP server, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A session with no request for this long is stopped, in seconds (0: never).
    pub idle_timeout_s: u64,
    /// Restarts allowed per session within `restart_window_s` before it is marked failed.
    pub max_restarts: u32,
    /// The restart-counting window, in seconds.
    pub restart_window_s: u64,
    /// Most requests in flight on one (user, server) connection; more wait their turn.
    pub max_concurrent_requests: usize,
    /// How connections start: `auto` (try the 2026-07-28 `server/discover`, fall back to the
    /// `initialize` handshake for older servers), `initialize` (older servers only) or
    /// `discover` (2026-07-28 servers only).
    pub lifecycle: String,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            call_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            idle_timeout_s: 900,
            max_restarts: 5,
            restart_window_s: 60,
            max_concurrent_requests: 128,
            lifecycle: "auto".into(),
        }
    }
}

impl SessionsConfig {
    /// `call_timeout_ms` as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// `[oauth]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Refresh at least this many seconds before expiry.
    pub refresh_lead_s: u64,
    /// ...or this fraction of the token's lifetime before expiry, whichever is larger.
    pub refresh_lead_fraction: f64,
    /// Address of the OAuth callback listener (loopback).
    pub callback_listen: String,
    /// Path of the callback on that listener.
    pub callback_path: String,
    /// The redirect URI registered with authorization servers; empty means
    /// `http://<callback_listen><callback_path>`.
    pub redirect_uri: String,
    /// Pending authorizations expire after this many seconds.
    pub pending_ttl_s: u64,
    /// Refresh grants ahead of expiry in the background (the token refresher). Without it,
    /// tokens are refreshed only when a call finds them expired.
    pub background_refresh: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            refresh_lead_s: 60,
            refresh_lead_fraction: 0.1,
            callback_listen: "127.0.0.1:8765".into(),
            callback_path: "/oauth/callback".into(),
            redirect_uri: String::new(),
            pending_ttl_s: 600,
            background_refresh: true,
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Programs a user's stdio config may name (exact strings). Empty: no stdio servers.
    pub stdio_allowed_commands: Vec<String>,
    /// Variables of the daemon's own environment passed on to stdio children; nothing else of
    /// the daemon's environment (e.g. `WARDEN_MASTER_KEY`) ever reaches a child.
    pub stdio_inherit_env: Vec<String>,
    /// Allow HTTP servers on loopback addresses.
    pub allow_loopback: bool,
    /// Allow HTTP servers on private, link-local and unique-local addresses.
    pub allow_private: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            stdio_allowed_commands: Vec::new(),
            stdio_inherit_env: vec!["PATH".into()],
            allow_loopback: false,
            allow_private: false,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter; `RUST_LOG` overrides it. rmcp's own debug logs carry secrets, so
    /// warden always caps `rmcp` at `info` whatever this says.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".into() }
    }
}

impl Config {
    /// Reads `path`, or returns the defaults if `path` is `None`. Relative paths in the file
    /// are resolved against its directory; then environment overrides are applied.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (mut config, base) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let config: Config = toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (config, base)
            }
            None => (Config::default(), PathBuf::new()),
        };
        // Log lines name absolute paths, so an operator sees where the files really are.
        let base =
            if base.is_absolute() { base } else { std::env::current_dir().map(|cwd| cwd.join(&base)).unwrap_or(base) };
        if let Ok(url) = std::env::var(ENV_DATABASE_URL)
            && !url.is_empty()
        {
            config.database.url = url;
        }
        config.resolve_paths(&base);
        config.check()?;
        Ok(config)
    }

    /// Parses TOML text (no file, no env), for tests.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<inline>"), message: e.to_string() })?;
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() || base.as_os_str().is_empty() { p.to_path_buf() } else { base.join(p) }
        };
        self.keys.dev_key_file = abs(&self.keys.dev_key_file);
        self.control.socket_path = abs(&self.control.socket_path);
        if let Some(rest) = self.database.url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let (file, query) = rest.split_once('?').map_or((rest, None), |(f, q)| (f, Some(q)));
            if !file.is_empty() && file != ":memory:" {
                let path = abs(Path::new(file));
                self.database.url = match query {
                    Some(q) => format!("sqlite:{}?{q}", path.display()),
                    None => format!("sqlite:{}", path.display()),
                };
            }
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let value = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return value("database.url", "must start with sqlite: or postgres://");
        }
        if self.database.max_connections < 2 {
            return value("database.max_connections", "must be at least 2");
        }
        if self.sessions.call_timeout_ms == 0 || self.sessions.connect_timeout_ms == 0 {
            return value("sessions.call_timeout_ms", "timeouts must be positive");
        }
        if !(0.0..1.0).contains(&self.oauth.refresh_lead_fraction) {
            return value("oauth.refresh_lead_fraction", "must be in [0, 1)");
        }
        if !self.oauth.callback_path.starts_with('/') {
            return value("oauth.callback_path", "must start with /");
        }
        if self.sessions.max_concurrent_requests == 0 {
            return value("sessions.max_concurrent_requests", "must be at least 1");
        }
        if !["auto", "initialize", "discover"].contains(&self.sessions.lifecycle.as_str()) {
            return value("sessions.lifecycle", "must be auto, initialize or discover");
        }
        if self.policy.stdio_inherit_env.iter().any(|v| v.starts_with("WARDEN_")) {
            return value("policy.stdio_inherit_env", "WARDEN_* variables are never passed to children");
        }
        if self.control.max_frame_bytes < 1024 {
            return value("control.max_frame_bytes", "must be at least 1024");
        }
        Ok(())
    }

    /// The redirect URI given to authorization servers.
    pub fn redirect_uri(&self) -> String {
        if self.oauth.redirect_uri.is_empty() {
            format!("http://{}{}", self.oauth.callback_listen, self.oauth.callback_path)
        } else {
            self.oauth.redirect_uri.clone()
        }
    }

    /// The database URL with nothing secret in it (a PostgreSQL password is masked), for logs.
    pub fn database_display(&self) -> String {
        match url::Url::parse(&self.database.url) {
            Ok(mut u) if u.password().is_some() => {
                // Setting a password on a URL that already has one cannot fail.
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.database.url.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
