//! The `warden` binary as an operator runs it: `serve` on a fresh directory with no key in the
//! environment, SIGTERM, exit codes, `keygen`, `keys rotate`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;

use support::process::{sigterm, wait_exit, wait_for_line, warden};

#[test]
fn serve_starts_on_a_fresh_directory_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped config, with the callback listener on an ephemeral port (tests run in parallel).
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let config = shipped.replace("callback_listen = \"127.0.0.1:8765\"", "callback_listen = \"127.0.0.1:0\"");
    assert_ne!(config, shipped);
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let mut child = warden(dir.path()).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let lines = wait_for_line(&mut child, "store ready");
    let all = lines.join("\n");
    assert!(all.contains("DEVELOPMENT MASTER KEY") && all.contains("WARDEN_MASTER_KEY"), "{all}");
    assert!(all.contains(&dir.path().join("data/dev-master.key").display().to_string()), "key path logged: {all}");
    assert!(all.contains(&dir.path().join("data/warden.db").display().to_string()), "database logged: {all}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    let key = std::fs::read_to_string(dir.path().join("data/dev-master.key")).unwrap();

    // A second start reuses the key file.
    let mut child = warden(dir.path()).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let all = wait_for_line(&mut child, "store ready").join("\n");
    assert!(all.contains("created=false"), "{all}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(std::fs::read_to_string(dir.path().join("data/dev-master.key")).unwrap(), key);
}

#[test]
fn required_env_key_missing_or_malformed_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "[keys]\nrequire_env_key = true\n").unwrap();
    let out = warden(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_MASTER_KEY is not set"));
    let out = warden(dir.path()).arg("serve").env("WARDEN_MASTER_KEY", "bm90LWEta2V5").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARDEN_MASTER_KEY is invalid") && !stderr.contains("bm90LWEta2V5"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing created on a key error");
    // A bad config is exit 64 too.
    std::fs::write(dir.path().join("config.toml"), "[keys]\nrequire_env_keys = true\n").unwrap();
    assert_eq!(warden(dir.path()).arg("serve").output().unwrap().status.code(), Some(64));
}

#[test]
fn keygen_then_rotate_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "[oauth]\ncallback_listen = \"127.0.0.1:0\"\n").unwrap();
    let keygen = || {
        let out = warden(dir.path()).arg("keygen").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (k1, k2) = (keygen(), keygen());
    assert_ne!(k1, k2);
    assert_eq!(k1.len(), 44);
    // Start under k1 so the schema exists, then rotate to k2 with k1 as previous.
    let mut child =
        warden(dir.path()).arg("serve").env("WARDEN_MASTER_KEY", &k1).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_line(&mut child, "store ready");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    let out = warden(dir.path())
        .args(["keys", "rotate"])
        .env("WARDEN_MASTER_KEY", &k2)
        .env("WARDEN_PREVIOUS_KEYS", &k1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("re-sealed 0 rows") && stdout.contains("0 rows remain"), "{stdout}");
}

/// SIGTERM while 100 calls are in flight: every call gets a response (a result if it finished
/// within the grace period, a typed error if not), the socket file is removed, exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_100_in_flight_calls() {
    use serde_json::{Value, json};
    use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

    let server =
        spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(Identities::new().with("tok", "alice"))))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[policy]\nallow_loopback = true\n[control]\nsocket_path = \"run/w.sock\"\nshutdown_grace_s = 2\n[oauth]\ncallback_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = warden(dir.path()).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let lines = wait_for_line(&mut child, "control socket listening");
        (child, lines)
    });
    let (child, _) = lines.await.unwrap();
    let socket = dir.path().join("run/w.sock");
    let mut admin = warden::client::Client::connect(&socket).await.unwrap();
    admin
        .call("servers.put", json!({"user": "alice", "name": "s", "transport": {"type": "http", "url": server.url()}, "auth": {"type": "bearer", "token": "tok"}}))
        .await
        .unwrap();
    // 4 connections x 25 calls: the even ones (13 per connection) finish within the grace
    // period, the odd ones would not.
    let mut connections = Vec::new();
    for c in 0..4 {
        let mut client = warden::client::Client::connect(&socket).await.unwrap();
        let mut burst = Vec::new();
        for i in 0..25 {
            let ms = if i % 2 == 0 { 300 } else { 20_000 };
            let r = json!({"jsonrpc": "2.0", "id": c * 100 + i, "method": "tools.call",
                "params": {"user": "alice", "server": "s", "tool": "sleep", "arguments": {"ms": ms}, "timeout_ms": 60_000}});
            burst.extend(serde_json::to_vec(&r).unwrap());
            burst.push(b'\n');
        }
        client.send_line(&burst).await.unwrap();
        connections.push(client);
    }
    let until = Instant::now() + Duration::from_secs(20);
    while server.calls().iter().filter(|c| c.tool == "sleep").count() < 100 {
        assert!(Instant::now() < until, "the calls never all reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&child);
    let (mut results, mut errors) = (0, 0);
    for (c, mut client) in connections.into_iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..25 {
            let r: Value =
                tokio::time::timeout(Duration::from_secs(20), client.read_response()).await.unwrap().unwrap().unwrap();
            assert!(seen.insert(r["id"].as_i64().unwrap()), "answered twice: {r}");
            if r["result"]["content"][0]["text"] == "slept" {
                assert_eq!(r["id"].as_i64().unwrap() % 2, 0, "only the short calls finish: {r}");
                results += 1;
            } else {
                assert!(r["error"]["data"]["kind"].is_string(), "a typed error: {r}");
                errors += 1;
            }
        }
        assert_eq!(seen.len(), 25, "connection {c}");
    }
    let mut child = child;
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child)).await.unwrap();
    println!("SIGTERM with 100 calls in flight: {results} results, {errors} typed errors, exit code {code}");
    assert_eq!(results + errors, 100);
    assert_eq!(results, 4 * 13, "the calls that fit in the grace period (13 per connection) finished");
    assert_eq!(code, 0);
    assert!(!socket.exists(), "the socket file was removed");
}

/// The CLI against a running daemon, as an operator uses it: the config JSON (with its secret)
/// goes in on stdin, never on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_the_daemon() {
    use std::io::Write as _;
    use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(
        Identities::new().with("CANARY-cli-tok", "alice"),
    )))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[policy]\nallow_loopback = true\n[control]\nsocket_path = \"run/w.sock\"\n[oauth]\ncallback_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = warden(dir.path()).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let child = tokio::task::spawn_blocking(move || {
        wait_for_line(&mut child, "control socket listening");
        child
    })
    .await
    .unwrap();
    let d = dir.path().to_owned();
    let url = server.url();
    let outputs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str], stdin: Option<String>| {
            let mut cmd = warden(&d);
            cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::piped());
            let mut p = cmd.spawn().unwrap();
            if let Some(input) = stdin {
                p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            } else {
                drop(p.stdin.take());
            }
            let out = p.wait_with_output().unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let config = format!(r#"{{"name":"gh","transport":{{"type":"http","url":"{url}"}},"auth":{{"type":"bearer","token":"CANARY-cli-tok"}}}}"#);
        vec![
            run(&["servers", "put", "--user", "alice"], Some(config)),
            run(&["servers", "list", "--user", "alice"], None),
            run(&["tools", "call", "--user", "alice", "--server", "gh", "--tool", "echo", "--args", r#"{"text":"hello"}"#], None),
            run(&["--json", "tools", "call", "--user", "alice", "--server", "gh", "--tool", "whoami"], None),
            run(&["tools", "list", "--user", "nobody"], None),
            run(&["--json", "status"], None),
            run(&["capabilities", "issue", "--user", "alice", "--ttl-s", "60"], None),
            run(&["--socket", "/nonexistent/w.sock", "status"], None),
        ]
    })
    .await
    .unwrap();
    assert_eq!(outputs[0].0, Some(0), "{outputs:?}");
    assert!(outputs[1].1.contains("gh\tbearer\tconfigured"), "{:?}", outputs[1]);
    assert_eq!(outputs[2].1.trim(), "hello");
    assert!(outputs[3].1.contains(r#""text":"alice""#), "{:?}", outputs[3]);
    assert_eq!(outputs[4].0, Some(1));
    assert!(outputs[4].2.contains("no_tools_available"), "{:?}", outputs[4]);
    assert!(outputs[5].1.contains(r#""sessions":1"#), "{:?}", outputs[5]);
    assert_eq!(outputs[6].1.trim().split('.').count(), 2, "a capability token");
    assert_eq!(outputs[7].0, Some(69), "unreachable socket: {:?}", outputs[7]);
    for (_, stdout, stderr) in &outputs {
        assert!(!stdout.contains("CANARY-cli-tok") && !stderr.contains("CANARY-cli-tok"));
    }
    sigterm(&child);
    let mut child = child;
    assert_eq!(tokio::task::spawn_blocking(move || wait_exit(&mut child)).await.unwrap(), 0);
}
