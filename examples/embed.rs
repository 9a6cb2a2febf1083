//! Embedding warden in a Rust host.
//!
//! Starts warden in-process on a temporary SQLite database, gives two users their own bearer
//! token for the *same* MCP server, and calls a tool for each: each call goes out with its own
//! user's credential. The MCP server is the test kit's, which answers `whoami` with the
//! identity behind the token it received.
//!
//! Run it with `cargo run --example embed`.

use std::sync::Arc;
use std::time::Duration;

use warden::crypto::{Keyring, MasterKey};
use warden::{Config, ErrorKind, MCPCredentialStore, ServerAuth, ServerConfig, Transport, Warden};
use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An MCP server that knows two tokens.
    let identities = Identities::new().with("alice-token", "alice@example.com").with("bob-token", "bob@example.com");
    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(identities))).await?;

    // warden's configuration: a fresh SQLite file; loopback allowed because the demo server
    // runs on 127.0.0.1 (production keeps the default: refused).
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(&format!(
        "[database]\nurl = \"sqlite:{}\"\n[policy]\nallow_loopback = true\n",
        dir.path().join("warden.db").display()
    ))?;

    // The master key. A daemon reads WARDEN_MASTER_KEY (`Warden::start` does); a host may also
    // build the keyring itself, as here.
    let keyring = Arc::new(Keyring::new(&MasterKey::generate()?, &[]));
    let store = MCPCredentialStore::connect(&config.database.url, 4, keyring).await?;
    let warden = Warden::start_with_store(config, store).await?;
    let handle = warden.handle();

    // Each user connects the same server with their own credential (sealed at rest).
    for (user, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
        let version = handle
            .put_server(
                user,
                ServerConfig {
                    name: "demo".into(),
                    transport: Transport::Http { url: server.url() },
                    auth: ServerAuth::Bearer { token: token.into() },
                },
            )
            .await?;
        println!("{user}: stored server 'demo' (version {version})");
    }

    let tools = handle.list_tools("alice").await?;
    let names: Vec<String> = tools.tools.iter().map(|t| format!("{}/{}", t.server, t.tool.name)).collect();
    println!("alice's tools: {}", names.join(", "));

    for user in ["alice", "bob"] {
        let result = handle.call_tool(user, "demo", "whoami", None, Some(Duration::from_secs(5))).await?;
        let identity = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default();
        println!("{user}: whoami -> {identity}");
        anyhow::ensure!(identity.starts_with(user), "{user}'s call used someone else's credential");
    }

    // A user with no servers gets a typed error, not someone else's tools.
    match handle.list_tools("carol").await {
        Err(err) if err.kind() == ErrorKind::NoToolsAvailable => println!("carol: {err}"),
        other => anyhow::bail!("carol should have no tools, got {other:?}"),
    }

    println!("status: {:?}", handle.status().await?);
    warden.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
