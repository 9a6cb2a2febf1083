//! OAuth against a real authorization server (npm `oidc-provider`: 5-second JWT access tokens,
//! refresh-token rotation with reuse detection, dynamic registration, PKCE, resource
//! indicators) and a real MCP resource server that verifies its JWTs (npm
//! `@modelcontextprotocol/sdk`), both run by the test kit's `OAuthWorld`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod support;

use std::time::{Duration, Instant};

use support::{TestWarden, captured_logs, text_of};
use warden::{AuthorizationCallback, ErrorKind, OAuthSettings, Secret, ServerAuth, ServerConfig, Transport};
use warden_testkit::OAuthWorld;

fn oauth_config(name: &str, url: &str) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        transport: Transport::Http { url: url.into() },
        auth: ServerAuth::Oauth(OAuthSettings::default()),
    }
}

/// Calls whoami, expects `authorization_required` with a URL, logs in at the authorization
/// server as `username` (plain HTTP, the dev login form) and hands the callback to warden.
async fn authorize(w: &TestWarden, world: &OAuthWorld, user: &str, server: &str, username: &str) -> String {
    let err = w.handle.call_tool(user, server, "whoami", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthorizationRequired, "{err}");
    let url = err.authorization_url().expect("an authorization URL").to_owned();
    let callback = world.login_via_http(&url, username).await.unwrap();
    let (u, s) =
        w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(callback.clone()))).await.unwrap();
    assert_eq!((u.as_str(), s.as_str()), (user, server));
    callback
}

async fn whoami(w: &TestWarden, user: &str, server: &str) -> Result<String, warden::Error> {
    w.handle.call_tool(user, server, "whoami", None, None).await.map(|r| text_of(&r))
}

fn stat(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_flow_then_calls() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    // tools.list also reports the authorization URL.
    let err = w.handle.list_tools("alice").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthorizationRequired);
    let first_url = err.authorization_url().unwrap().to_owned();
    assert!(first_url.starts_with(world.issuer()), "{first_url}");
    for param in ["code_challenge_method=S256", "code_challenge=", "state=", "resource=", "redirect_uri="] {
        assert!(first_url.contains(param), "{param} in {first_url}");
    }
    // A second call reuses the pending authorization instead of registering another client.
    let again = w.handle.call_tool("alice", "notes", "whoami", None, None).await.unwrap_err();
    assert_eq!(again.authorization_url(), Some(first_url.as_str()));
    assert_eq!(stat(&world.stats().await, "registrations"), 1);
    // oauth.begin gives a fresh URL on demand.
    let fresh = w.handle.begin_authorization("alice", "notes").await.unwrap();
    assert_ne!(fresh.authorization_url, first_url);

    // Finish the first flow (the fresh one stays pending).
    let callback = world.login_via_http(&first_url, "alice").await.unwrap();
    w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(callback))).await.unwrap();
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    let listed = w.handle.list_tools("alice").await.unwrap();
    assert!(listed.tools.iter().any(|t| t.tool.name == "whoami"));
    let status = w.handle.status().await.unwrap();
    assert_eq!((status.grants.active, status.oauth.authorizations), (1, 1));
    // A callback cannot be replayed: its state was used.
    let fresh_cb = world.login_via_http(&fresh.authorization_url, "alice").await.unwrap();
    w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(fresh_cb.clone()))).await.unwrap();
    let replay = w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(fresh_cb))).await.unwrap_err();
    assert_eq!(replay.kind(), ErrorKind::InvalidRequest);
    w.shutdown().await;
}

/// FR-004 / SC-003: with no tool call at all, the refresher keeps a grant alive through many
/// rotations of 5-second tokens; a call afterwards needs no refresh of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresher_keeps_a_grant_alive_without_calls() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    authorize(&w, &world, "alice", "notes", "alice").await;
    world.reset_stats().await;
    let started = Instant::now();
    // At least 60 s of 5-second tokens and at least 10 rotations, with no call in between.
    while started.elapsed() < Duration::from_secs(60) || stat(&world.stats().await, "refreshes") < 10 {
        assert!(started.elapsed() < Duration::from_secs(120), "too few refreshes: {}", world.stats().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = world.stats().await;
    let ours = w.handle.status().await.unwrap().oauth;
    println!(
        "refresher: {} rotations in {:.0?} with no call; authorization server: {stats}; warden: {ours:?}",
        stat(&stats, "refreshes"),
        started.elapsed()
    );
    assert!(stat(&stats, "refreshes") >= 10);
    assert_eq!(stats["refresh_errors"], serde_json::json!({}), "no refresh was rejected");
    assert_eq!(stat(&stats, "reuse_detected"), 0);
    assert_eq!(ours.call_path_refreshes, 0);
    let before = w.handle.status().await.unwrap().oauth.call_path_refreshes;
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    assert_eq!(w.handle.status().await.unwrap().oauth.call_path_refreshes, before, "no refresh on the call path");
    w.shutdown().await;
}

/// Invariant 5: 50 calls at the moment the access token expires share one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_at_expiry_make_one_refresh() {
    let world = OAuthWorld::start().await.unwrap();
    // No background refresh here: the calls themselves must meet the expired token.
    let w = TestWarden::start("[oauth]\nbackground_refresh = false\n").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    authorize(&w, &world, "alice", "notes", "alice").await;
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    world.reset_stats().await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let h = w.handle.clone();
            tokio::spawn(async move { h.call_tool("alice", "notes", "whoami", None, None).await.map(|r| text_of(&r)) })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), "alice");
        ok += 1;
    }
    let stats = world.stats().await;
    println!("50 calls at expiry: {ok} succeeded; authorization server saw {stats}");
    assert_eq!(stat(&stats, "refreshes"), 1, "exactly one refresh at the authorization server");
    assert_eq!(stats["refresh_errors"], serde_json::json!({}), "no invalid_grant");
    w.shutdown().await;
}

/// The daemon stops mid-life of a grant and starts again: the schedule is rebuilt from the
/// store and the grant stays alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_the_schedule() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    authorize(&w, &world, "alice", "notes", "alice").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = w.shutdown_keep_db().await;
    // Down for longer than a token lives.
    tokio::time::sleep(Duration::from_secs(6)).await;
    world.reset_stats().await;
    let w = TestWarden::start_on(db, "").await;
    let until = Instant::now() + Duration::from_secs(30);
    while stat(&world.stats().await, "refreshes") < 3 {
        assert!(Instant::now() < until, "the restarted refresher did not refresh: {}", world.stats().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scheduled = w.handle.status().await.unwrap().refresh_scheduled;
    assert_eq!(scheduled, 1);
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    assert_eq!(world.stats().await["refresh_errors"], serde_json::json!({}));
    w.shutdown().await;
}

/// A grant revoked at the authorization server turns into `reauthorization_required` with a
/// fresh URL, and authorizing again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_asks_for_reauthorization() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    authorize(&w, &world, "alice", "notes", "alice").await;
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    assert!(world.revoke("alice").await >= 1);
    let until = Instant::now() + Duration::from_secs(20);
    let err = loop {
        match whoami(&w, "alice", "notes").await {
            Err(e) if e.kind() == ErrorKind::ReauthorizationRequired => break e,
            other => {
                assert!(Instant::now() < until, "still {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(err.authorization_url().is_some_and(|u| u.starts_with(world.issuer())), "{err:?}");
    let status = w.handle.status().await.unwrap();
    assert_eq!((status.grants.active, status.grants.reauthorization_required), (0, 1));
    // The next call reports the same; authorizing again restores the grant.
    let url = whoami(&w, "alice", "notes").await.unwrap_err().authorization_url().unwrap().to_owned();
    let callback = world.login_via_http(&url, "alice").await.unwrap();
    w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(callback))).await.unwrap();
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    w.shutdown().await;
}

/// Headless Chromium logs in on the authorization server's page and lands on warden's callback
/// listener; each user then sees their own identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_through_the_callback_listener() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    for (user, login) in [("user-a", "alice"), ("user-b", "bob")] {
        w.handle.put_server(user, oauth_config("notes", world.resource())).await.unwrap();
        let err = whoami(&w, user, "notes").await.unwrap_err();
        let url = err.authorization_url().unwrap().to_owned();
        let report = world.login_via_browser(&url, login).await.unwrap();
        let redirect = w.warden.as_ref().unwrap().redirect_uri().to_owned();
        assert!(report["final_url"].as_str().unwrap().starts_with(&redirect), "{report}");
        assert_eq!(report["status"], 200, "{report}");
        assert!(report["body_text"].as_str().unwrap().contains("You can close this tab"), "{report}");
    }
    assert_eq!(whoami(&w, "user-a", "notes").await.unwrap(), "alice");
    assert_eq!(whoami(&w, "user-b", "notes").await.unwrap(), "bob");
    w.shutdown().await;
}

/// No token, code, verifier or state reaches the logs (TRACE for warden) or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_secrets_stay_out_of_logs_and_errors() {
    let logs = captured_logs();
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    let mut texts = Vec::new();
    let err = w.handle.call_tool("alice", "notes", "whoami", None, None).await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    let callback = world.login_via_http(err.authorization_url().unwrap(), "alice").await.unwrap();
    // The PKCE verifier, sealed in the pending authorization, before the exchange uses it.
    let state = url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let pending = w.handle.store().load_pending(&state).await.unwrap().unwrap();
    let pending: serde_json::Value = serde_json::from_slice(&pending.payload).unwrap();
    let verifier = pending["state"]["pkce_verifier"].as_str().unwrap().to_owned();
    let code = url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    w.handle.complete_authorization(AuthorizationCallback::Url(Secret::new(callback))).await.unwrap();
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    // Let the refresher rotate a few times, then fail on purpose.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let grant = w.handle.store().load_grant("alice", "notes").await.unwrap().unwrap();
    let grant: serde_json::Value = serde_json::from_slice(&grant.tokens).unwrap();
    let access = grant["credentials"]["token_response"]["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["credentials"]["token_response"]["refresh_token"].as_str().unwrap().to_owned();
    world.revoke("alice").await;
    for _ in 0..3 {
        if let Err(e) = whoami(&w, "alice", "notes").await {
            texts.push(format!("{e} {e:?}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let bad = w
        .handle
        .complete_authorization(AuthorizationCallback::Url(Secret::new(format!(
            "http://x/cb?code={code}&state={state}"
        ))))
        .await;
    texts.push(format!("{bad:?}"));
    w.shutdown().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("authorization complete"), "warden's logs were captured");
    for (what, secret) in
        [("access token", &access), ("refresh token", &refresh), ("code", &code), ("verifier", &verifier)]
    {
        assert!(secret.len() >= 16, "{what} looks real");
        assert!(!logs.contains(secret.as_str()), "the {what} reached the logs");
        assert!(!texts.iter().any(|t| t.contains(secret.as_str())), "the {what} reached an error");
    }
    // The state is part of the authorization URL an `authorization_required` error hands the
    // user (that is its purpose), but it is never logged.
    assert!(!logs.contains(state.as_str()), "the state reached the logs");
}

/// The refresher is killed: its supervisor restarts it, it rebuilds its schedule from the
/// store, and the grant keeps being refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_refresher_is_restarted_and_rebuilds_its_schedule() {
    let world = OAuthWorld::start().await.unwrap();
    let w = TestWarden::start("").await;
    w.handle.put_server("alice", oauth_config("notes", world.resource())).await.unwrap();
    authorize(&w, &world, "alice", "notes", "alice").await;
    let first = w.handle.refresher().unwrap();
    first.kill();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match w.handle.refresher() {
            Some(r) if r.get_id() != first.get_id() => break,
            _ => {
                assert!(Instant::now() < until, "the refresher was not restarted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    world.reset_stats().await;
    let until = Instant::now() + Duration::from_secs(20);
    while stat(&world.stats().await, "refreshes") < 3 {
        assert!(Instant::now() < until, "no refreshes after the restart: {}", world.stats().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.handle.status().await.unwrap().refresh_scheduled, 1);
    assert_eq!(whoami(&w, "alice", "notes").await.unwrap(), "alice");
    w.shutdown().await;
}
