//! `warden-conformance`: the MCP conformance suite's client, played through warden's own path.
//!
//! The suite runs `warden-conformance <server-url>` per scenario. This program starts an
//! embedded warden on a temporary SQLite database, stores an `oauth` server config for the URL
//! (client id and secret from `MCP_CONFORMANCE_CONTEXT` when the scenario provides them, and the
//! suite's client-ID metadata document URL), then calls the scenario's tool through warden. When
//! warden answers `authorization_required`, it plays the user's browser: it GETs the
//! authorization URL without following redirects and hands the `Location` to warden's callback
//! handling. At most three authorizations per run (the suite's retry-limit scenario never grants
//! enough scope; stopping there is the expected behaviour, not an error).
//!
//! Exit code 0 when the tool call succeeded or the authorization limit was reached; 1 otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use warden::crypto::{Keyring, MasterKey};
use warden::{
    AuthorizationCallback, Config, ErrorKind, MCPCredentialStore, OAuthSettings, Secret, ServerAuth, ServerConfig,
    Transport, Warden,
};

/// The client-ID metadata document URL the suite expects (it never fetches it).
const CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";
/// The suite's tool.
const TOOL: &str = "test-tool";
/// Most authorizations per run.
const MAX_AUTHORIZATIONS: usize = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-conformance: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::args().next_back().context("usage: warden-conformance <server-url>")?;
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: BTreeMap<String, serde_json::Value> = match std::env::var("MCP_CONFORMANCE_CONTEXT") {
        Ok(json) => serde_json::from_str(&json).context("MCP_CONFORMANCE_CONTEXT is not a JSON object")?,
        Err(_) => BTreeMap::new(),
    };
    let text = |key: &str| context.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
    eprintln!("warden-conformance: scenario {scenario} against {url}");

    let dir = tempfile::tempdir()?;
    // The suite's servers run on localhost; nothing listens on the redirect URI (the suite
    // answers /authorize with a redirect that this program reads instead of following).
    let config = Config::from_toml(&format!(
        "[database]\nurl = \"sqlite:{}\"\n[policy]\nallow_loopback = true\n\
         [oauth]\ncallback_listen = \"\"\nredirect_uri = \"http://127.0.0.1:9/callback\"\nbackground_refresh = false\n",
        dir.path().join("warden.db").display()
    ))?;
    let keyring = Arc::new(Keyring::new(&MasterKey::generate()?, &[]));
    let store = MCPCredentialStore::connect(&config.database.url, 4, keyring).await?;
    let warden = Warden::start_with_store(config, store).await?;
    let handle = warden.handle();

    let settings = OAuthSettings {
        client_id: text("client_id"),
        client_secret: text("client_secret").map(Secret::new),
        client_metadata_url: Some(CLIENT_METADATA_URL.into()),
        scopes: Vec::new(),
    };
    let server =
        ServerConfig { name: "server".into(), transport: Transport::Http { url }, auth: ServerAuth::Oauth(settings) };
    handle.put_server("conformance", server).await?;

    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut authorizations = 0;
    let outcome = loop {
        match handle.call_tool("conformance", "server", TOOL, None, Some(Duration::from_secs(20))).await {
            Ok(result) => {
                eprintln!("warden-conformance: {TOOL} answered (is_error: {:?})", result.is_error);
                break Ok(());
            }
            Err(e) if matches!(e.kind(), ErrorKind::AuthorizationRequired | ErrorKind::ReauthorizationRequired) => {
                let Some(authorization_url) = e.authorization_url() else { break Err(anyhow::anyhow!("{e}")) };
                if authorizations == MAX_AUTHORIZATIONS {
                    eprintln!("warden-conformance: stopping after {MAX_AUTHORIZATIONS} authorizations ({e})");
                    break Ok(());
                }
                authorizations += 1;
                let response = browser.get(authorization_url).send().await.context("GET the authorization URL")?;
                let Some(location) = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok())
                else {
                    break Err(anyhow::anyhow!(
                        "the authorization server answered {} without a redirect",
                        response.status()
                    ));
                };
                let callback = AuthorizationCallback::Url(Secret::new(location.to_owned()));
                if let Err(e) = handle.complete_authorization(callback).await {
                    break Err(anyhow::anyhow!("completing the authorization failed: {e}"));
                }
            }
            Err(e) => break Err(anyhow::anyhow!("{e}")),
        }
    };
    warden.shutdown(Duration::from_secs(2)).await;
    if let Err(e) = outcome {
        bail!("{e}");
    }
    Ok(())
}
