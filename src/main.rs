//! The `warden` binary: the daemon (`serve`) and the operator commands.
//!
//! Exit codes: 0 success, 64 bad configuration, keys or socket path (EX_USAGE), 69 the control socket is
//! unreachable (EX_UNAVAILABLE), 1 anything else (including an error answered by the daemon).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tracing::{info, warn};
use warden::client::{Client, ClientError};
use warden::config::{Config, ENV_MASTER_KEY, ENV_PREVIOUS_KEYS};
use warden::control::{Capabilities, ControlSocket, Limits};
use warden::crypto::MasterKey;
use warden::keys::{self, KeySource};
use warden::store::MCPCredentialStore;

/// Exit code for configuration and key errors (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the control socket cannot be reached (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(name = "warden", version, about = "Per-user MCP credential and session supervisor")]
struct Cli {
    /// Config file. Default: ./config.toml if it exists, else built-in defaults.
    #[arg(long, global = true, env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Control socket (client commands). Default: control.socket_path from the config.
    #[arg(long, global = true, env = "WARDEN_SOCKET")]
    socket: Option<PathBuf>,
    /// Print the daemon's JSON result instead of text (client commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Serve,
    /// Print a fresh random master key (base64) for WARDEN_MASTER_KEY.
    Keygen,
    /// Master key operations (these open the database directly).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Users' MCP server configs.
    Servers {
        #[command(subcommand)]
        command: ServersCommand,
    },
    /// Users' tools.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// OAuth authorization.
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// User sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Counts of sessions, connections and grants.
    Status,
    /// Per-user capabilities for the control socket.
    Capabilities {
        #[command(subcommand)]
        command: CapabilitiesCommand,
    },
}

#[derive(Subcommand)]
enum ServersCommand {
    /// Create or replace a server config. The config JSON ({"name", "transport", "auth"}) is
    /// read from --file or stdin, never from the command line, where other processes could
    /// read its secrets.
    Put {
        /// The user.
        #[arg(long)]
        user: String,
        /// A file holding the config JSON; default stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List a user's server configs (no secrets).
    List {
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Remove a server config.
    Remove {
        /// The user.
        #[arg(long)]
        user: String,
        /// The server's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// List a user's tools across their servers.
    List {
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Call a tool.
    Call {
        /// The user.
        #[arg(long)]
        user: String,
        /// The server.
        #[arg(long)]
        server: String,
        /// The tool.
        #[arg(long)]
        tool: String,
        /// The arguments as a JSON object.
        #[arg(long)]
        args: Option<String>,
        /// Deadline in milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Start an authorization: prints the URL for the user to open.
    Begin {
        /// The user.
        #[arg(long)]
        user: String,
        /// The server.
        #[arg(long)]
        server: String,
    },
    /// Finish an authorization with the callback URL (read from stdin: it carries the code).
    Complete,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Stop a user's session (dropping its decrypted credentials).
    Stop {
        /// The user.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum CapabilitiesCommand {
    /// Issue a capability binding a connection to one user.
    Issue {
        /// The user.
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
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
        Self { code: 1, error: e.into() }
    }
}

fn config_failure(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: EXIT_CONFIG, error: error.into() }
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
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let socket = cli.socket.clone().unwrap_or_else(|| config.control.socket_path.clone());
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => {
                warden::logging::init(&config.log.filter);
                serve(config).await
            }
            Command::Keys { command: KeysCommand::Rotate } => rotate(config).await,
            Command::Keys { command: KeysCommand::Status } => key_status(config).await,
            Command::Keygen => Ok(()),
            command => client_command(&socket, cli.json, command).await,
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
    let store = MCPCredentialStore::connect(&config.database.url, config.database.max_connections, Arc::new(keyring))
        .await
        .with_context(|| format!("opening database {}", config.database_display()))?;
    Ok((store, source))
}

async fn serve(config: Config) -> Result<(), Failure> {
    let signals = Signals::install()?;
    let (store, source) = open_store(&config).await?;
    let socket = ControlSocket::bind(&config.control.socket_path).await.map_err(config_failure)?;
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
    let capabilities = Capabilities::new(store.keyring().signing_key());
    let (allowed_uids, max_connections) = (config.control.allowed_uids.clone(), config.control.max_connections);
    let limits = Limits::from_config(&config.control);
    let warden = warden::Warden::start_with_store(config, store).await.map_err(config_failure)?;
    info!(redirect_uri = warden.redirect_uri(), "OAuth callbacks");
    let context = Arc::new(warden::control::Context { handle: warden.handle(), capabilities, limits });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    info!(socket = %socket.path().display(), "control socket listening");
    let control = tokio::spawn(socket.serve(context, allowed_uids, max_connections, stop_rx));
    signals.wait().await;
    info!("shutting down: no new requests; in-flight requests may finish");
    // The control task stops accepting, drains in-flight requests within the grace period,
    // answers any left, and removes the socket file.
    let _ = stop_tx.send(true);
    let _ = control.await;
    warden.shutdown(std::time::Duration::from_secs(1)).await;
    info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment this is built (so a signal during start-up is
/// not lost to the default action).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(Self { term, int })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
        }
    }
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

/// Runs one client command against the daemon's control socket.
async fn client_command(socket: &std::path::Path, as_json: bool, command: Command) -> Result<(), Failure> {
    let (method, params) = match command {
        Command::Servers { command: ServersCommand::Put { user, file } } => {
            let text = match file {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => std::io::read_to_string(std::io::stdin()).context("reading the config JSON from stdin")?,
            };
            // Kept in a zeroizing buffer: it holds the secrets.
            let text = zeroize::Zeroizing::new(text);
            let mut params: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the config is not JSON (line {}, column {})", e.line(), e.column()))?;
            let Some(object) = params.as_object_mut() else {
                return Err(anyhow::anyhow!("the config must be a JSON object with name, transport and auth").into());
            };
            object.insert("user".into(), Value::String(user));
            ("servers.put", params)
        }
        Command::Servers { command: ServersCommand::List { user } } => ("servers.list", json!({ "user": user })),
        Command::Servers { command: ServersCommand::Remove { user, name } } => {
            ("servers.remove", json!({ "user": user, "name": name }))
        }
        Command::Tools { command: ToolsCommand::List { user } } => ("tools.list", json!({ "user": user })),
        Command::Tools { command: ToolsCommand::Call { user, server, tool, args, timeout_ms } } => {
            let arguments: Option<Value> =
                args.map(|a| serde_json::from_str(&a)).transpose().context("--args must be a JSON object")?;
            (
                "tools.call",
                json!({ "user": user, "server": server, "tool": tool, "arguments": arguments, "timeout_ms": timeout_ms }),
            )
        }
        Command::Oauth { command: OauthCommand::Begin { user, server } } => {
            ("oauth.begin", json!({ "user": user, "server": server }))
        }
        Command::Oauth { command: OauthCommand::Complete } => {
            let url = zeroize::Zeroizing::new(
                std::io::read_to_string(std::io::stdin()).context("reading the callback URL from stdin")?,
            );
            ("oauth.complete", json!({ "callback_url": url.trim() }))
        }
        Command::Sessions { command: SessionsCommand::Stop { user } } => ("sessions.stop", json!({ "user": user })),
        Command::Status => ("status", json!({})),
        Command::Capabilities { command: CapabilitiesCommand::Issue { user, ttl_s } } => {
            ("capabilities.issue", json!({ "user": user, "ttl_s": ttl_s }))
        }
        Command::Serve | Command::Keygen | Command::Keys { .. } => return Ok(()),
    };
    let mut client = Client::connect(socket).await.map_err(|e| Failure {
        code: EXIT_UNAVAILABLE,
        error: anyhow::anyhow!("cannot reach the daemon at {}: {e}", socket.display()),
    })?;
    match client.call(method, params).await {
        Ok(result) => {
            print_result(method, &result, as_json);
            Ok(())
        }
        Err(ClientError::Rpc { kind, message, authorization_url, .. }) => {
            if as_json {
                println!(
                    "{}",
                    json!({ "error": { "kind": kind, "message": message, "authorization_url": authorization_url } })
                );
            }
            let url = authorization_url.map(|u| format!("\nopen this URL to authorize: {u}")).unwrap_or_default();
            Err(anyhow::anyhow!("{kind}: {message}{url}").into())
        }
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

/// Prints a result for a person (or as JSON).
fn print_result(method: &str, result: &Value, as_json: bool) {
    if as_json {
        println!("{result}");
        return;
    }
    let text = |v: &Value, key: &str| {
        v.get(key).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).unwrap_or_default()
    };
    match method {
        "servers.list" => {
            for s in result["servers"].as_array().into_iter().flatten() {
                let target = s["transport"]
                    .get("url")
                    .or_else(|| s["transport"].get("command"))
                    .map(|v| text(&json!({ "v": v }), "v"))
                    .unwrap_or_default();
                println!("{}\t{}\t{}\t{}", text(s, "name"), text(s, "auth_type"), text(s, "status"), target);
            }
        }
        "tools.list" => {
            for t in result["tools"].as_array().into_iter().flatten() {
                println!("{}/{}\t{}", text(t, "server"), text(t, "name"), text(t, "description"));
            }
            for u in result["unavailable"].as_array().into_iter().flatten() {
                println!("{} unavailable: {}", text(u, "server"), text(u, "message"));
            }
        }
        "tools.call" => {
            for c in result["content"].as_array().into_iter().flatten() {
                match c.get("text").and_then(Value::as_str) {
                    Some(t) => println!("{t}"),
                    None => println!("{c}"),
                }
            }
            if result["isError"] == json!(true) {
                eprintln!("(the tool reported an error)");
            }
        }
        "capabilities.issue" => println!("{}", text(result, "token")),
        "oauth.begin" => println!("{}", text(result, "authorization_url")),
        _ => println!("{}", serde_json::to_string_pretty(result).unwrap_or_default()),
    }
}
