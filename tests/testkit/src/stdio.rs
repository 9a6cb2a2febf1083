//! The stdio server: its environment contract, its serve loop, and how tests find its binary.

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    sync::{Arc, OnceLock},
    time::Duration,
};

use rmcp::ServiceExt;

use crate::{
    identities::Identities,
    tools::{Shared, ToolServer},
};

/// Environment variable holding the credential the stdio server was started with.
pub const TOKEN_ENV: &str = "TESTKIT_TOKEN";
/// Environment variable holding the JSON object credential -> identity (see [`Identities`]).
pub const IDENTITIES_ENV: &str = "TESTKIT_IDENTITIES";
/// Optional environment variable: milliseconds every tool call sleeps before it runs.
pub const STALL_ENV: &str = "TESTKIT_STALL_MS";
/// The exit code of `testkit-stdio` when its environment is wrong (missing or unknown token,
/// malformed identities or stall). It exits before serving, having written why to stderr.
pub const EXIT_BAD_ENVIRONMENT: u8 = 3;
/// The name of the stdio server binary.
pub const STDIO_BINARY_NAME: &str = "testkit-stdio";

/// Why the stdio server refuses to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioConfigError {
    /// `TESTKIT_TOKEN` is not set (or not UTF-8).
    #[error("{TOKEN_ENV} is not set")]
    MissingToken,
    /// `TESTKIT_TOKEN` is not a key of `TESTKIT_IDENTITIES`.
    #[error("{TOKEN_ENV} is not a known credential")]
    UnknownToken,
    /// `TESTKIT_IDENTITIES` is not a JSON object of strings.
    #[error("{IDENTITIES_ENV} is not a JSON object of strings: {0}")]
    BadIdentities(#[source] serde_json::Error),
    /// `TESTKIT_STALL_MS` is not a whole number of milliseconds.
    #[error("{STALL_ENV} is not a whole number of milliseconds")]
    BadStall,
}

/// What the stdio server needs to run, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioSettings {
    /// The identity `whoami` answers.
    pub identity: String,
    /// How long every tool call sleeps before it runs.
    pub stall: Option<Duration>,
}

impl StdioSettings {
    /// Reads `TESTKIT_TOKEN`, `TESTKIT_IDENTITIES` and `TESTKIT_STALL_MS`.
    pub fn from_env() -> Result<Self, StdioConfigError> {
        let var = |name| std::env::var(name).ok();
        Self::from_vars(var(TOKEN_ENV).as_deref(), var(IDENTITIES_ENV).as_deref(), var(STALL_ENV).as_deref())
    }

    /// The settings for these variable values (`None`: unset). Missing identities mean none.
    pub fn from_vars(
        token: Option<&str>,
        identities: Option<&str>,
        stall_ms: Option<&str>,
    ) -> Result<Self, StdioConfigError> {
        let identities = match identities {
            Some(json) => Identities::from_json(json).map_err(StdioConfigError::BadIdentities)?,
            None => Identities::new(),
        };
        let token = token.ok_or(StdioConfigError::MissingToken)?;
        let identity = identities.identity_of(token).ok_or(StdioConfigError::UnknownToken)?.to_owned();
        let stall = stall_ms
            .map(|ms| ms.trim().parse().map(Duration::from_millis))
            .transpose()
            .map_err(|_| StdioConfigError::BadStall)?;
        Ok(Self { identity, stall })
    }
}

/// Serves the testkit tools on stdin/stdout until the client closes stdin.
pub async fn serve_stdio(settings: StdioSettings) -> io::Result<()> {
    let shared = Arc::new(Shared::default());
    shared.set_stall(settings.stall);
    let running =
        ToolServer::fixed(settings.identity, shared).serve(rmcp::transport::stdio()).await.map_err(io::Error::other)?;
    running.waiting().await.map_err(io::Error::other)?;
    Ok(())
}

/// A command that starts the stdio server with a clean environment holding only `token` (if
/// any) and `identities`.
pub fn stdio_command(token: Option<&str>, identities: &Identities) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(stdio_server_binary());
    command.env_clear().env(IDENTITIES_ENV, identities.to_json());
    if let Some(token) = token {
        command.env(TOKEN_ENV, token);
    }
    command
}

/// The path of the built `testkit-stdio` binary.
///
/// The first call in a process runs `cargo build -q -p warden-testkit --bin testkit-stdio` (the
/// cargo in `$CARGO`, else on `PATH`) with the profile of the running test binary, so the binary
/// is fresh; later calls reuse the answer. If cargo is unavailable, an already-built binary next
/// to the test binary's profile directory is used.
///
/// # Panics
///
/// If the binary can be neither built nor found: a test harness cannot go on without it.
pub fn stdio_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| match locate_or_build() {
            Ok(path) => path,
            Err(message) => panic!("cannot provide the {STDIO_BINARY_NAME} binary: {message}"),
        })
        .clone()
}

fn locate_or_build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // Test binaries live in target/<profile>/deps/, examples in target/<profile>/examples/, and
    // bins (ours, and warden's own) directly in target/<profile>/.
    let mut profile_dir = exe.parent().ok_or("the current exe has no directory")?;
    if matches!(dir_name(profile_dir).as_deref(), Some("deps" | "examples")) {
        profile_dir = profile_dir.parent().ok_or("deps/ has no parent")?;
    }
    let expected = profile_dir.join(format!("{STDIO_BINARY_NAME}{}", std::env::consts::EXE_SUFFIX));

    match build(dir_name(profile_dir).as_deref()) {
        Ok(Some(built)) => return Ok(built),
        Ok(None) => {}
        Err(error) if expected.is_file() => {
            tracing::warn!(%error, "cannot build {STDIO_BINARY_NAME}; using the existing binary");
        }
        Err(error) => return Err(error),
    }
    if expected.is_file() { Ok(expected) } else { Err(format!("{} does not exist", expected.display())) }
}

fn dir_name(dir: &Path) -> Option<String> {
    dir.file_name().map(|name| name.to_string_lossy().into_owned())
}

/// Builds the binary; returns its path as cargo reports it, if cargo reported one.
fn build(profile_dir_name: Option<&str>) -> Result<Option<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut command = StdCommand::new(&cargo);
    command
        .args(["build", "-q", "-p", env!("CARGO_PKG_NAME"), "--bin", STDIO_BINARY_NAME])
        .arg("--manifest-path")
        .arg(&manifest)
        // The JSON messages name the executable wherever the target dir is; diagnostics still
        // go, rendered, to stderr.
        .arg("--message-format=json-render-diagnostics");
    match profile_dir_name {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!("cargo build failed: {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == STDIO_BINARY_NAME)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from)))
}

#[cfg(test)]
mod tests;
