//! Per-user sessions against real MCP servers: the testkit's rmcp servers (which report the
//! identity behind each request's credential) over HTTP and stdio, and npm's
//! `@modelcontextprotocol/server-everything` over stdio.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use support::{TestWarden, bearer_config, captured_logs, node22, server_everything, text_of};
use warden::{ErrorKind, RegistryMsg, ServerAuth, ServerConfig, Transport};
use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

fn args(json: serde_json::Value) -> Option<rmcp::model::JsonObject> {
    json.as_object().cloned()
}

fn stdio_config(name: &str, token: &str, identities: &Identities) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        transport: Transport::Stdio {
            command: warden_testkit::stdio_server_binary().display().to_string(),
            args: vec![],
        },
        auth: ServerAuth::Env {
            env: BTreeMap::from([
                (warden_testkit::TOKEN_ENV.to_owned(), token.into()),
                (warden_testkit::IDENTITIES_ENV.to_owned(), identities.to_json().into()),
            ]),
        },
    }
}

/// SC-001 / FR-006: many users, one URL, different credentials, calls interleaved at random.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_over_http_many_users_one_url() {
    const USERS: usize = 50;
    const CALLS: usize = 20_000;
    let token = |i: usize| format!("tok-{i:03}-{:016x}", 0x5eed_u64.wrapping_mul(i as u64 + 7));
    let identities: Identities = (0..USERS).map(|i| (token(i), format!("identity-{i}"))).collect();
    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(identities))).await.unwrap();
    let w = TestWarden::start("").await;
    for i in 0..USERS {
        w.handle.put_server(&format!("user-{i}"), bearer_config("shared", &server.url(), &token(i))).await.unwrap();
    }
    let mut order: Vec<usize> = (0..CALLS).map(|c| c % USERS).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x0150_1a7e));
    let started = Instant::now();
    let results: Vec<(usize, Result<String, warden::Error>)> =
        futures::stream::iter(order)
            .map(|i| {
                let h = w.handle.clone();
                async move {
                    (i, h.call_tool(&format!("user-{i}"), "shared", "whoami", None, None).await.map(|r| text_of(&r)))
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    let elapsed = started.elapsed();
    let own = results.iter().filter(|(i, r)| r.as_ref().is_ok_and(|t| *t == format!("identity-{i}"))).count();
    let crossings = results.iter().filter(|(i, r)| r.as_ref().is_ok_and(|t| *t != format!("identity-{i}"))).count();
    let errors: Vec<_> = results.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    println!(
        "isolation/http: {} calls by {USERS} users to one URL in {elapsed:.1?}: {own} answered with the caller's own identity, {crossings} crossings, {} errors",
        results.len(),
        errors.len()
    );
    assert_eq!(results.len(), CALLS);
    assert_eq!(crossings, 0, "a call was answered with another user's identity");
    assert!(errors.is_empty(), "errors: {:?}", errors.iter().take(3).collect::<Vec<_>>());
    // The server saw exactly those calls, each under the identity of the token it carried.
    assert_eq!(server.calls().iter().filter(|c| c.tool == "whoami").count(), CALLS);
    let status = w.handle.status().await.unwrap();
    assert_eq!((status.sessions, status.connections), (USERS, USERS), "one session and one connection per user");
    w.shutdown().await;
}

/// The same over stdio: one child process per (user, server), each with its own env token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_over_stdio_env_credentials() {
    const USERS: usize = 8;
    const CALLS: usize = 1_600;
    let identities: Identities =
        (0..USERS).map(|i| (format!("env-token-{i}"), format!("stdio-identity-{i}"))).collect();
    let w = TestWarden::start("").await;
    for i in 0..USERS {
        w.handle
            .put_server(&format!("user-{i}"), stdio_config("local", &format!("env-token-{i}"), &identities))
            .await
            .unwrap();
    }
    let mut order: Vec<usize> = (0..CALLS).map(|c| c % USERS).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let results: Vec<(usize, Result<String, warden::Error>)> =
        futures::stream::iter(order)
            .map(|i| {
                let h = w.handle.clone();
                async move {
                    (i, h.call_tool(&format!("user-{i}"), "local", "whoami", None, None).await.map(|r| text_of(&r)))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
    let crossings =
        results.iter().filter(|(i, r)| r.as_ref().is_ok_and(|t| *t != format!("stdio-identity-{i}"))).count();
    let errors = results.iter().filter(|(_, r)| r.is_err()).count();
    println!("isolation/stdio: {} calls by {USERS} users: {crossings} crossings, {errors} errors", results.len());
    assert_eq!((crossings, errors), (0, 0));
    assert_eq!(w.handle.status().await.unwrap().connections, USERS);
    w.shutdown().await;
}

/// A third-party server from npm, over stdio, sees only PATH and the user's own variable:
/// nothing of the daemon's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_stdio_gets_a_clean_environment() {
    assert!(node22().exists(), "run scripts/install-tools first");
    let w = TestWarden::start("").await;
    let config = ServerConfig {
        name: "everything".into(),
        transport: Transport::Stdio {
            command: node22().display().to_string(),
            args: vec![server_everything().display().to_string(), "stdio".into()],
        },
        auth: ServerAuth::Env { env: BTreeMap::from([("API_SECRET".to_owned(), "CANARY-everything-env-31f9".into())]) },
    };
    w.handle.put_server("alice", config).await.unwrap();
    let tools = w.handle.list_tools("alice").await.unwrap();
    assert!(tools.tools.iter().any(|t| t.server == "everything" && t.tool.name == "echo"), "{tools:?}");
    let echo = w
        .handle
        .call_tool("alice", "everything", "echo", args(serde_json::json!({"message": "hi"})), None)
        .await
        .unwrap();
    assert_eq!(text_of(&echo), "Echo: hi");
    let env = w.handle.call_tool("alice", "everything", "get-env", None, None).await.unwrap();
    let env: BTreeMap<String, String> = serde_json::from_str(&text_of(&env)).unwrap();
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(names, ["API_SECRET", "PATH"], "the child sees only PATH and the user's variable");
    assert_eq!(env["API_SECRET"], "CANARY-everything-env-31f9");
    // This test process has CARGO_* variables (and a daemon would have WARDEN_MASTER_KEY): none
    // of them reach the child.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config_means_no_tools_and_unknown_servers_are_named() {
    let w = TestWarden::start("").await;
    let err = w.handle.list_tools("nobody").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoToolsAvailable);
    let err = w.handle.call_tool("nobody", "gh", "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoToolsAvailable);
    assert!(err.message().contains("nobody"));
    let server = spawn_http_server(HttpServerConfig::default()).await.unwrap();
    w.handle
        .put_server(
            "alice",
            ServerConfig {
                name: "open".into(),
                transport: Transport::Http { url: server.url() },
                auth: ServerAuth::None,
            },
        )
        .await
        .unwrap();
    let err = w.handle.call_tool("alice", "missing", "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownServer);
    assert!(err.message().contains("alice") && err.message().contains("missing"));
    // Bad input is refused before anything runs.
    assert_eq!(
        w.handle.call_tool("bad user", "x", "t", None, None).await.unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        w.handle.call_tool("alice", "open", "whoami", None, Some(Duration::ZERO)).await.unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_rejected_without_leaking_them() {
    let logs = captured_logs();
    const WRONG: &str = "CANARY-wrong-bearer-8c1d2e3f4a5b";
    const WRONG_HEADER: &str = "CANARY-wrong-header-77aa99bbcc";
    let server =
        spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with("right", "alice"))))
            .await
            .unwrap();
    let header_server = spawn_http_server(HttpServerConfig::new(CredentialCheck::header(
        "X-API-Key",
        Identities::new().with("right", "alice"),
    )))
    .await
    .unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", bearer_config("gh", &server.url(), WRONG)).await.unwrap();
    let headers = ServerConfig {
        name: "linear".into(),
        transport: Transport::Http { url: header_server.url() },
        auth: ServerAuth::Headers { headers: BTreeMap::from([("X-API-Key".to_owned(), WRONG_HEADER.into())]) },
    };
    w.handle.put_server("alice", headers).await.unwrap();
    let mut texts = Vec::new();
    for server_name in ["gh", "linear"] {
        let err = w.handle.call_tool("alice", server_name, "whoami", None, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CredentialsRejected, "{err}");
        assert!(err.message().contains("alice") && err.message().contains(server_name), "{err}");
        texts.push(format!("{err} {err:?}"));
    }
    let list = w.handle.list_tools("alice").await.unwrap_err();
    assert_eq!(list.kind(), ErrorKind::CredentialsRejected);
    texts.push(format!("{list} {list:?}"));
    assert!(
        server.rejected() >= 1 && header_server.rejected() >= 1,
        "the servers really saw and refused the credentials"
    );
    // The right credential then works: the session picks up the new config.
    w.handle.put_server("alice", bearer_config("gh", &server.url(), "right")).await.unwrap();
    let ok = w.handle.call_tool("alice", "gh", "whoami", None, None).await.unwrap();
    assert_eq!(text_of(&ok), "alice");
    w.shutdown().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("alice"), "logs were captured");
    for secret in [WRONG, WRONG_HEADER] {
        for part in [secret, &secret[..12], &secret[secret.len() - 12..]] {
            assert!(!logs.contains(part), "{part} leaked into the logs");
            assert!(!texts.iter().any(|t| t.contains(part)), "{part} leaked into an error");
        }
    }
}

/// Killing a session mid-call: the call fails at once with a typed error, other users are
/// unaffected, and the user's next call works with no human action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_session_mid_call() {
    let identities: Identities = (0..4).map(|i| (format!("t{i}"), format!("id-{i}"))).collect();
    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(identities))).await.unwrap();
    let w = TestWarden::start("").await;
    for i in 0..4 {
        w.handle.put_server(&format!("u{i}"), bearer_config("s", &server.url(), &format!("t{i}"))).await.unwrap();
    }
    // Warm the victim's session, then start a slow call.
    w.handle.call_tool("u0", "s", "whoami", None, None).await.unwrap();
    let h = w.handle.clone();
    let deadline = Duration::from_secs(10);
    let slow = tokio::spawn(async move {
        h.call_tool("u0", "s", "sleep", args(serde_json::json!({"ms": 8000})), Some(deadline)).await
    });
    let others: Vec<_> = (1..4)
        .map(|i| {
            let h = w.handle.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    seen.push(text_of(&h.call_tool(&format!("u{i}"), "s", "whoami", None, None).await.unwrap()));
                }
                (i, seen)
            })
        })
        .collect();
    let poll_until = Instant::now() + Duration::from_secs(10);
    while !server.calls().iter().any(|c| c.tool == "sleep") {
        assert!(Instant::now() < poll_until, "the slow call never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let registry = w.handle.registry().unwrap();
    let session =
        ractor::call_t!(registry, |reply| RegistryMsg::Lookup { user: "u0".into(), reply }, 1000).unwrap().unwrap();
    let killed_at = Instant::now();
    session.kill();
    let err = tokio::time::timeout(deadline, slow).await.expect("the call hung").unwrap().unwrap_err();
    let waited = killed_at.elapsed();
    println!("kill: the in-flight call failed {waited:?} after the kill with {:?}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(waited < Duration::from_secs(2), "failed promptly, not at its deadline");
    for other in others {
        let (i, seen) = other.await.unwrap();
        assert!(seen.iter().all(|s| *s == format!("id-{i}")), "user {i} saw {seen:?}");
    }
    let again = w.handle.call_tool("u0", "s", "whoami", None, None).await.unwrap();
    assert_eq!(text_of(&again), "id-0");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_evicted_and_restart_transparently() {
    let server =
        spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with("t", "alice"))))
            .await
            .unwrap();
    let w = TestWarden::start("[sessions]\nidle_timeout_s = 1\n").await;
    w.handle.put_server("alice", bearer_config("s", &server.url(), "t")).await.unwrap();
    assert_eq!(text_of(&w.handle.call_tool("alice", "s", "whoami", None, None).await.unwrap()), "alice");
    assert_eq!(w.handle.status().await.unwrap().sessions, 1);
    let until = Instant::now() + Duration::from_secs(10);
    while w.handle.status().await.unwrap().sessions > 0 {
        assert!(Instant::now() < until, "the idle session was never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = w.handle.status().await.unwrap();
    assert_eq!((status.sessions, status.connections), (0, 0), "eviction dropped the session and its connection");
    assert_eq!(text_of(&w.handle.call_tool("alice", "s", "whoami", None, None).await.unwrap()), "alice");
    assert_eq!(w.handle.status().await.unwrap().sessions, 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_unreachable_servers_and_tool_errors() {
    let server =
        spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with("t", "alice"))))
            .await
            .unwrap();
    let fast = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with("t", "alice"))))
        .await
        .unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", bearer_config("slow", &server.url(), "t")).await.unwrap();
    w.handle.put_server("alice", bearer_config("fast", &fast.url(), "t")).await.unwrap();
    w.handle.call_tool("alice", "slow", "whoami", None, None).await.unwrap();

    // A stalled server: the call ends at its deadline with `timeout`, and the same user's other
    // server answers meanwhile.
    server.set_stall(Some(Duration::from_secs(3)));
    let h = w.handle.clone();
    let started = Instant::now();
    let stalled =
        tokio::spawn(
            async move { h.call_tool("alice", "slow", "whoami", None, Some(Duration::from_millis(700))).await },
        );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = w.handle.call_tool("alice", "fast", "whoami", None, None).await.unwrap();
    let other_done = started.elapsed();
    assert_eq!(text_of(&other), "alice");
    assert!(other_done < Duration::from_millis(650), "the fast server waited for the slow one ({other_done:?})");
    let err = stalled.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.set_stall(None);

    // The server's own error result passes through as a result; a JSON-RPC error is tool_error.
    let failed = w.handle.call_tool("alice", "fast", "fail", None, None).await.unwrap();
    assert_eq!(failed.is_error, Some(true));
    let err = w.handle.call_tool("alice", "fast", "no-such-tool", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ToolError, "{err}");

    // Nothing listening: server_unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    w.handle.put_server("alice", bearer_config("down", &format!("http://127.0.0.1:{port}/mcp"), "t")).await.unwrap();
    let err = w.handle.call_tool("alice", "down", "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerUnreachable, "{err}");
    // A server that goes away after connecting: the call fails typed, the next one reconnects.
    let url = fast.url();
    fast.shutdown().await;
    let err = w.handle.call_tool("alice", "fast", "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerUnreachable, "{err}");
    let tools = w.handle.list_tools("alice").await.unwrap();
    assert!(tools.unavailable.iter().any(|u| u.server == "down" && u.error.kind() == ErrorKind::ServerUnreachable));
    assert!(tools.tools.iter().any(|t| t.server == "slow" && t.tool.name == "whoami"));
    drop(url);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_and_execution_policy() {
    let db = support::TestDb::sqlite().await;
    let store = db.store(support::keyring(1)).await;
    let config = warden::Config::from_toml(
        "[policy]\nstdio_allowed_commands = [\"/usr/bin/env\"]\n[oauth]\ncallback_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let warden = warden::Warden::start_with_store(config, store).await.unwrap();
    let h = warden.handle();
    for url in [
        "http://127.0.0.1:1/mcp",
        "http://[::1]:1/mcp",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/mcp",
        "http://0.0.0.0/mcp",
    ] {
        let err = h.put_server("alice", bearer_config("x", url, "t")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{url}: {err}");
    }
    // A name that resolves to loopback passes the put (no DNS at put time) but not the connect.
    h.put_server("alice", bearer_config("named", "http://localhost:1/mcp", "t")).await.unwrap();
    let err = h.call_tool("alice", "named", "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
    assert!(err.message().contains("Loopback"), "{err}");
    let sh = ServerConfig {
        name: "sh".into(),
        transport: Transport::Stdio { command: "/bin/sh".into(), args: vec![] },
        auth: ServerAuth::None,
    };
    assert_eq!(h.put_server("alice", sh).await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    assert_eq!(h.list_servers("alice").await.unwrap().len(), 1, "refused configs were not stored");
    warden.shutdown(Duration::from_secs(1)).await;
}
