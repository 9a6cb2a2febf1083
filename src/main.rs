//! The `warden` binary: the daemon (`serve`) and the operator commands.
//!
//! Exit codes: 0 success, 64 bad configuration or keys (EX_USAGE), 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing::{info, warn};
use warden::config::{Config, ENV_MASTER_KEY, ENV_PREVIOUS_KEYS};
use warden::crypto::MasterKey;
use warden::keys::{self, KeySource};
use warden::store::MCPCredentialStore;

/// Exit code for configuration and key errors (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Per-user MCP credential and session supervisor"
)]
struct Cli {
    /// Config file. Default: ./config.toml if it exists, else built-in defaults.
    #[arg(long, global = true, env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Serve,
    /// Print a fresh random master key (base64) for WARDEN_MASTER_KEY.
    Keygen,
    /// Master key operations.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every stored secret under the primary key (safe while daemons serve).
    Rotate,
    /// Count stored rows per key id.
    Status,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self {
            code: 1,
            error: e.into(),
        }
    }
}

fn config_failure(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("warden: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Keygen = cli.command {
        let key = MasterKey::generate().map_err(anyhow::Error::from)?;
        println!("{}", key.to_base64().as_str());
        return Ok(());
    }
    let config = load_config(cli.config.as_deref())?;
    warden::logging::init(&config.log.filter);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Keys {
                command: KeysCommand::Rotate,
            } => rotate(config).await,
            Command::Keys {
                command: KeysCommand::Status,
            } => key_status(config).await,
            Command::Keygen => Ok(()),
        }
    })
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    let default = PathBuf::from("config.toml");
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None if default.exists() => Some(default),
        None => None,
    };
    Config::load(path.as_deref()).map_err(config_failure)
}

async fn open_store(config: &Config) -> Result<(MCPCredentialStore, KeySource), Failure> {
    let (keyring, source) = keys::load_keyring(&config.keys).map_err(config_failure)?;
    let store = MCPCredentialStore::connect(
        &config.database.url,
        config.database.max_connections,
        Arc::new(keyring),
    )
    .await
    .with_context(|| format!("opening database {}", config.database_display()))?;
    Ok((store, source))
}

async fn serve(config: Config) -> Result<(), Failure> {
    let (store, source) = open_store(&config).await?;
    match &source {
        KeySource::Environment => {
            info!(key_id = %store.keyring().primary(), "master key from {ENV_MASTER_KEY}");
        }
        KeySource::DevFile { path, created } => warn!(
            key_id = %store.keyring().primary(),
            path = %path.display(),
            created,
            "USING A DEVELOPMENT MASTER KEY FILE: do not use in production; set {ENV_MASTER_KEY} \
             (generate one with `warden keygen`) and keys.require_env_key = true"
        ),
    }
    info!(database = %config.database_display(), backend = ?store.backend(), "store ready");
    wait_for_signal().await?;
    info!("shutting down");
    store.close().await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}

async fn rotate(config: Config) -> Result<(), Failure> {
    let (store, _) = open_store(&config).await?;
    let report = store.rotate_keys().await?;
    println!(
        "re-sealed {} rows under key {}; {} rows could not be opened; {} rows remain under other keys",
        report.resealed,
        store.keyring().primary(),
        report.failed,
        report.remaining
    );
    if report.remaining == 0 {
        println!("older keys may now be removed from {ENV_PREVIOUS_KEYS}");
    }
    store.close().await;
    Ok(())
}

async fn key_status(config: Config) -> Result<(), Failure> {
    let (store, _) = open_store(&config).await?;
    println!("primary key {}", store.keyring().primary());
    for (key, rows) in store.rows_per_key().await? {
        println!("key {key:08x}: {rows} rows");
    }
    store.close().await;
    Ok(())
}
