//! Secrets never leak (issue 6, part 3; SC-002, FR-005). Canary values stand for every kind of
//! secret — bearer token, header value, env value, OAuth client secret, access and refresh
//! tokens issued by a real authorization server, the master key itself — while every flow runs
//! (success, wrong credentials, server down, OAuth failure, refresh rejected, a session stopped
//! mid-call, a panic inside a session) with warden's own modules logging at TRACE. Then
//! everything produced is scanned: the daemon's log, every socket reply, the `Debug` of every
//! public type that holds a secret, the environment a stdio child sees, the database on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod support;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::process::warden;
use support::{node22, server_everything};
use warden::client::Client;
use warden::crypto::{Binding, Keyring, MasterKey, Purpose};
use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, OAuthWorld, spawn_http_server};

const BEARER: &str = "CANARY-bearer-5b1f0e77a2";
const WRONG_BEARER: &str = "CANARY-wrong-bearer-0d9c33";
const HEADER: &str = "CANARY-header-8e4a19c6b0";
const ENV: &str = "CANARY-env-3f72d0a5e1";
const CLIENT_SECRET: &str = "CANARY-client-secret-c4d2e8";

/// Sends a request and keeps the raw reply line.
async fn call(client: &mut Client, replies: &mut Vec<String>, method: &str, params: Value) -> Value {
    let line = format!("{}\n", json!({"jsonrpc": "2.0", "id": replies.len() + 1, "method": method, "params": params}));
    client.send_line(line.as_bytes()).await.unwrap();
    let reply = client.read_response().await.unwrap().unwrap();
    replies.push(reply.to_string());
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_leak_from_the_daemon() {
    let bearer_server =
        spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with(BEARER, "alice"))))
            .await
            .unwrap();
    let header_server = spawn_http_server(HttpServerConfig::new(CredentialCheck::header(
        "X-API-Key",
        Identities::new().with(HEADER, "alice"),
    )))
    .await
    .unwrap();
    let world = OAuthWorld::start().await.unwrap();
    let down = format!(
        "http://127.0.0.1:{}/mcp",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let master = MasterKey::generate().unwrap();
    let master_text = master.to_base64().as_str().to_owned();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[policy]\nallow_loopback = true\nstdio_allowed_commands = [{:?}]\n[control]\nsocket_path = \"run/w.sock\"\n\
             [oauth]\ncallback_listen = \"127.0.0.1:0\"\n[keys]\nrequire_env_key = true\n",
            node22().display().to_string()
        ),
    )
    .unwrap();
    let mut child = warden(dir.path())
        .arg("serve")
        .env("WARDEN_MASTER_KEY", &master_text)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon's whole log, read on a thread, collected at the end.
    let mut stderr = child.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let socket = dir.path().join("run/w.sock");
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(std::time::Instant::now() < until, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = Client::connect(&socket).await.unwrap();
    let mut replies = Vec::new();
    let http = |url: &str| json!({"type": "http", "url": url});
    let configs = [
        ("bearer", http(&bearer_server.url()), json!({"type": "bearer", "token": BEARER})),
        ("wrong", http(&bearer_server.url()), json!({"type": "bearer", "token": WRONG_BEARER})),
        ("header", http(&header_server.url()), json!({"type": "headers", "headers": {"X-API-Key": HEADER}})),
        ("down", http(&down), json!({"type": "bearer", "token": BEARER})),
        (
            "local",
            json!({"type": "stdio", "command": node22().display().to_string(), "args": [server_everything().display().to_string(), "stdio"]}),
            json!({"type": "env", "env": {"API_KEY": ENV}}),
        ),
        ("notes", http(world.resource()), json!({"type": "oauth"})),
        (
            "confidential",
            http(world.resource()),
            json!({"type": "oauth", "client_id": "not-registered", "client_secret": CLIENT_SECRET}),
        ),
    ];
    for (name, transport, auth) in configs {
        let r = call(
            &mut c,
            &mut replies,
            "servers.put",
            json!({"user": "alice", "name": name, "transport": transport, "auth": auth}),
        )
        .await;
        assert!(r["result"].is_object(), "{r}");
    }
    call(&mut c, &mut replies, "servers.list", json!({"user": "alice"})).await;
    // Success, wrong credentials, a server that is down.
    for server in ["bearer", "header", "wrong", "down"] {
        call(&mut c, &mut replies, "tools.call", json!({"user": "alice", "server": server, "tool": "whoami"})).await;
    }
    // The stdio child's environment: only PATH and the intended variable.
    let env =
        call(&mut c, &mut replies, "tools.call", json!({"user": "alice", "server": "local", "tool": "get-env"})).await;
    let child_env: BTreeMap<String, String> =
        serde_json::from_str(env["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(child_env.keys().map(String::as_str).collect::<Vec<_>>(), ["API_KEY", "PATH"]);
    assert_eq!(child_env["API_KEY"], ENV, "the intended variable arrived");
    replies.pop(); // That reply is the server reporting the user's own variable back, by design.
    // OAuth: a successful authorization (tokens issued by the real authorization server)...
    let begun = call(&mut c, &mut replies, "oauth.begin", json!({"user": "alice", "server": "notes"})).await;
    let callback = world.login_via_http(begun["result"]["authorization_url"].as_str().unwrap(), "alice").await.unwrap();
    call(&mut c, &mut replies, "oauth.complete", json!({"callback_url": callback})).await;
    let ok =
        call(&mut c, &mut replies, "tools.call", json!({"user": "alice", "server": "notes", "tool": "whoami"})).await;
    assert_eq!(ok["result"]["content"][0]["text"], "alice", "{ok}");
    tokio::time::sleep(Duration::from_secs(4)).await; // a refresh or two
    // ...an OAuth failure (a client the authorization server does not know, with a secret)...
    let failed =
        call(&mut c, &mut replies, "tools.call", json!({"user": "alice", "server": "confidential", "tool": "whoami"}))
            .await;
    if let Some(url) = failed["error"]["data"]["authorization_url"].as_str() {
        assert!(
            world.login_via_http(url, "alice").await.is_err(),
            "the authorization server refuses the unknown client"
        );
    }
    call(&mut c, &mut replies, "oauth.complete", json!({"callback_url": format!("{callback}&error=access_denied")}))
        .await;
    // ...a session stopped in the middle of a call...
    let slow = json!({"jsonrpc": "2.0", "id": 9999, "method": "tools.call", "params": {"user": "alice", "server": "bearer", "tool": "sleep", "arguments": {"ms": 3000}}});
    c.send_line(format!("{slow}\n").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = Client::connect(&socket).await.unwrap();
    replies.push(
        admin.call("sessions.stop", json!({"user": "alice"})).await.map_or_else(|e| e.to_string(), |v| v.to_string()),
    );
    replies.push(c.read_response().await.unwrap().unwrap().to_string());
    // ...and a refresh token rejected: the grant is revoked at the authorization server.
    let (grant_access, grant_refresh) = {
        let store = warden::MCPCredentialStore::connect(
            &format!("sqlite:{}", dir.path().join("data/warden.db").display()),
            2,
            Arc::new(Keyring::new(&MasterKey::from_base64(&master_text).unwrap(), &[])),
        )
        .await
        .unwrap();
        let grant = store.load_grant("alice", "notes").await.unwrap().unwrap();
        let payload: Value = serde_json::from_slice(&grant.tokens).unwrap();
        store.close().await;
        let token = |k: &str| payload["credentials"]["token_response"][k].as_str().unwrap().to_owned();
        (token("access_token"), token("refresh_token"))
    };
    world.revoke("alice").await;
    for _ in 0..3 {
        call(&mut c, &mut replies, "tools.call", json!({"user": "alice", "server": "notes", "tool": "whoami"})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    call(&mut c, &mut replies, "status", json!({})).await;
    support::process::sigterm(&child);
    assert_eq!(support::process::wait_exit(&mut child), 0);
    let log = log_reader.join().unwrap();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the daemon logged verbosely");
    let mut disk = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with("dev-master.key") {
            disk.extend(std::fs::read(path).unwrap());
        }
    }
    let replies = replies.join("\n");
    let canaries: [(&str, &str); 8] = [
        ("bearer token", BEARER),
        ("wrong bearer token", WRONG_BEARER),
        ("header value", HEADER),
        ("env value", ENV),
        ("client secret", CLIENT_SECRET),
        ("access token", &grant_access),
        ("refresh token", &grant_refresh),
        ("master key", &master_text),
    ];
    let mut found = Vec::new();
    for (what, canary) in canaries {
        for (place, text) in
            [("the log", log.as_bytes()), ("a socket reply", replies.as_bytes()), ("the database files", &disk[..])]
        {
            if text.windows(canary.len()).any(|w| w == canary.as_bytes()) {
                found.push(format!("{what} in {place}"));
            }
        }
        if child_env.values().any(|v| v.contains(canary)) && canary != ENV {
            found.push(format!("{what} in the stdio child's environment"));
        }
    }
    println!(
        "leaks: scanned {} bytes of log, {} bytes of socket replies, {} bytes of database files and a child environment for {} canaries: {} occurrences",
        log.len(),
        replies.len(),
        disk.len(),
        canaries.len(),
        found.len()
    );
    assert!(found.is_empty(), "leaked: {found:?}");
}

/// `Debug` of every public type that holds a secret, and a panic inside a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_and_panics_hold_no_secret() {
    use warden::model::{OAuthSettings, ServerAuth, ServerConfig, Transport};
    let key = MasterKey::generate().unwrap();
    let key_text = key.to_base64().as_str().to_owned();
    let ring = Keyring::new(&key, &[]);
    let secret = warden::Secret::from(BEARER);
    let auth = ServerAuth::Headers { headers: BTreeMap::from([("X-API-Key".to_owned(), HEADER.into())]) };
    let config = ServerConfig {
        name: "s".into(),
        transport: Transport::Http { url: "https://x.example.com/mcp".into() },
        auth: auth.clone(),
    };
    let oauth = OAuthSettings {
        client_id: Some("c".into()),
        client_secret: Some(CLIENT_SECRET.into()),
        ..OAuthSettings::default()
    };
    let env = ServerAuth::Env { env: BTreeMap::from([("API_KEY".to_owned(), ENV.into())]) };
    let db = support::TestDb::sqlite().await;
    let store = db.store(Arc::new(Keyring::new(&key, &[]))).await;
    store.put_server("alice", &config).await.unwrap();
    let stored = store.load_server("alice", "s").await.unwrap().unwrap();
    store
        .put_server(
            "alice",
            &ServerConfig { name: "o".into(), auth: ServerAuth::Oauth(oauth.clone()), ..config.clone() },
        )
        .await
        .unwrap();
    let w = warden::store::GrantWrite { tokens: BEARER.as_bytes(), expires_at: None, client_id: None, issuer: None };
    store.save_grant("alice", "o", &w, warden::store::Expect::Any).await.unwrap();
    let grant = store.load_grant("alice", "o").await.unwrap().unwrap();
    store.put_pending("alice", "o", "state", HEADER.as_bytes(), i64::MAX).await.unwrap();
    let pending = store.load_pending("state").await.unwrap().unwrap();
    let caps = warden::control::Capabilities::new(ring.signing_key());
    let (token, _) = caps.issue("alice", 60, 0).unwrap();
    let sealed = ring.seal(Binding::new(Purpose::ServerAuth, "alice", "s"), BEARER.as_bytes()).unwrap();
    let opened = ring.open(Binding::new(Purpose::ServerAuth, "alice", "s"), &sealed).unwrap();
    let parsed: warden::protocol::PutParams = serde_json::from_value(json!({
        "user": "alice", "name": "s", "transport": {"type": "http", "url": "https://x.example.com/mcp"},
        "auth": {"type": "bearer", "token": BEARER}
    }))
    .unwrap();
    let debug = [
        format!("{secret:?}"),
        format!("{auth:?}"),
        format!("{config:?}"),
        format!("{oauth:?}"),
        format!("{env:?}"),
        format!("{key:?}"),
        format!("{ring:?}"),
        format!("{store:?}"),
        format!("{stored:?}"),
        format!("{grant:?}"),
        format!("{pending:?}"),
        format!("{caps:?}"),
        format!("{token:?}"),
        format!("{parsed:?}"),
        format!("{:?}", warden::AuthorizationCallback::Url(warden::Secret::from(CLIENT_SECRET))),
    ]
    .join("\n");
    assert_eq!(&opened[..], BEARER.as_bytes(), "the values were real");
    for canary in [BEARER, HEADER, ENV, CLIENT_SECRET, key_text.as_str(), token.expose_secret()] {
        assert!(!debug.contains(canary), "Debug shows a secret: {debug}");
    }

    // A panic inside a session (injected: a real session has no way to panic on command) with
    // secrets in its state: the panic's output and warden's logs hold none of them.
    let logs = support::captured_logs();
    let panics = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        use std::fmt::Write as _;
        let _ = writeln!(sink.lock().unwrap(), "{info}");
    }));
    {
        use warden_actors::{Registry, RegistryArgs, RegistryMsg, ServerHandle, SessionMsg, SessionPolicy, UserLoader};
        struct Panicking(Arc<warden::mcp::McpServer>);
        #[async_trait::async_trait]
        impl ServerHandle for Panicking {
            fn name(&self) -> &str {
                self.0.name()
            }
            async fn connect(&self) -> Result<Arc<dyn warden_actors::Connection>, warden::Error> {
                panic!("injected panic while connecting");
            }
        }
        struct Loader(Arc<warden::mcp::McpServer>);
        #[async_trait::async_trait]
        impl UserLoader for Loader {
            async fn load(&self, _user: &str) -> Result<Vec<Arc<dyn ServerHandle>>, warden::Error> {
                Ok(vec![Arc::new(Panicking(self.0.clone()))])
            }
        }
        let settings = Arc::new(warden::mcp::ConnectSettings {
            connect_timeout: Duration::from_secs(1),
            policy: warden::config::PolicyConfig::default(),
            stdio_inherit_env: vec![],
            oauth: warden::oauth::OAuth::new(
                store.clone(),
                "http://127.0.0.1:1/cb".into(),
                60,
                false,
                warden::oauth::RefreshLead { min_s: 1, fraction: 0.1 },
            ),
            lifecycle: warden::mcp::lifecycle("auto"),
            max_concurrent_requests: 16,
        });
        let server = Arc::new(warden::mcp::McpServer::new("alice".into(), config.clone(), settings));
        let (registry, _) = ractor::Actor::spawn(
            None,
            Registry,
            RegistryArgs { loader: Arc::new(Loader(server)), policy: SessionPolicy::default() },
        )
        .await
        .unwrap();
        let (tx, rx) = ractor::concurrency::oneshot();
        let request = warden_actors::CallRequest {
            server: "s".into(),
            tool: "t".into(),
            arguments: None,
            timeout: Duration::from_secs(2),
        };
        registry
            .send_message(RegistryMsg::Route { user: "alice".into(), msg: SessionMsg::Call(request, tx.into()) })
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("no hang after the panic");
        assert!(outcome.is_err(), "the caller learns the call failed");
        registry.stop(None);
    }
    std::panic::set_hook(previous);
    let panics = panics.lock().unwrap().clone();
    assert!(panics.contains("injected panic"), "the panic happened: {panics}");
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for canary in [BEARER, HEADER, ENV, CLIENT_SECRET, key_text.as_str()] {
        assert!(!panics.contains(canary) && !logs.contains(canary), "{canary} leaked through a panic or the logs");
    }
}
