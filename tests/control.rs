//! The Unix control socket, driven the way hosts drive it: real sockets, real MCP servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines, clippy::items_after_statements)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ControlDaemon, keyring};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use warden::client::{Client, ClientError};
use warden_testkit::{CredentialCheck, HttpServerConfig, Identities, spawn_http_server};

fn kind(r: &Result<Value, ClientError>) -> &str {
    match r {
        Err(e) => e.kind().unwrap_or("<no kind>"),
        Ok(_) => "<ok>",
    }
}

fn code(r: &Result<Value, ClientError>) -> i64 {
    match r {
        Err(ClientError::Rpc { code, .. }) => *code,
        _ => 0,
    }
}

async fn put_bearer(c: &mut Client, user: &str, name: &str, url: &str, token: &str) -> Value {
    c.call("servers.put", json!({"user": user, "name": name, "transport": {"type": "http", "url": url}, "auth": {"type": "bearer", "token": token}}))
        .await
        .unwrap()
}

async fn identity_server() -> warden_testkit::RunningServer {
    let ids = Identities::new().with("tok-a", "alice").with("tok-b", "bob");
    spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(ids))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_over_a_real_socket() {
    let server = identity_server().await;
    let d = ControlDaemon::start("").await;
    let mut c = d.client().await;
    assert_eq!(put_bearer(&mut c, "alice", "gh", &server.url(), "tok-a").await, json!({"name": "gh", "version": 1}));
    let listed = c.call("servers.list", json!({"user": "alice"})).await.unwrap();
    assert_eq!(listed["servers"][0]["name"], "gh");
    assert_eq!(listed["servers"][0]["auth_type"], "bearer");
    assert_eq!(listed["servers"][0]["status"], "configured");
    assert_eq!(listed["servers"][0]["transport"], json!({"type": "http", "url": server.url()}));
    assert!(!listed.to_string().contains("tok-a"), "servers.list shows no secret");
    let tools = c.call("tools.list", json!({"user": "alice"})).await.unwrap();
    let whoami = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "whoami").unwrap();
    assert_eq!(whoami["server"], "gh");
    assert!(whoami["input_schema"].is_object());
    let called = c.call("tools.call", json!({"user": "alice", "server": "gh", "tool": "whoami"})).await.unwrap();
    assert_eq!(called["content"][0]["text"], "alice");
    let echoed = c
        .call(
            "tools.call",
            json!({"user": "alice", "server": "gh", "tool": "echo", "arguments": {"text": "hi"}, "timeout_ms": 5000}),
        )
        .await
        .unwrap();
    assert_eq!(echoed["content"][0]["text"], "hi");
    assert_eq!(
        kind(&c.call("tools.call", json!({"user": "carol", "server": "gh", "tool": "whoami"})).await),
        "no_tools_available"
    );
    assert_eq!(
        kind(&c.call("tools.call", json!({"user": "alice", "server": "zz", "tool": "whoami"})).await),
        "unknown_server"
    );
    // The OAuth methods (the flow itself is tested against a real authorization server).
    assert_eq!(
        kind(&c.call("oauth.begin", json!({"user": "alice", "server": "gh"})).await),
        "invalid_request",
        "gh uses a bearer token"
    );
    assert_eq!(kind(&c.call("oauth.begin", json!({"user": "alice", "server": "nope"})).await), "unknown_server");
    let r = c.call("oauth.complete", json!({"callback_url": "http://127.0.0.1/cb?code=x&state=unknown"})).await;
    assert_eq!(kind(&r), "invalid_request");
    assert_eq!(kind(&c.call("oauth.complete", json!({"state": "s"})).await), "invalid_request");
    let status = c.call("status", json!({})).await.unwrap();
    assert_eq!(
        (status["sessions"].as_u64(), status["connections"].as_u64(), status["protocol_version"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(c.call("sessions.stop", json!({"user": "alice"})).await.unwrap(), json!({"stopped": true}));
    assert_eq!(c.call("sessions.stop", json!({"user": "alice"})).await.unwrap(), json!({"stopped": false}));
    let issued = c.call("capabilities.issue", json!({"user": "alice", "ttl_s": 60})).await.unwrap();
    assert_eq!(issued["user"], "alice");
    let mut bound = d.client().await;
    let authed = bound.call("auth", json!({"token": issued["token"]})).await.unwrap();
    assert_eq!(authed["user"], "alice");
    assert_eq!(
        bound.call("tools.call", json!({"user": "alice", "server": "gh", "tool": "whoami"})).await.unwrap()["content"]
            [0]["text"],
        "alice"
    );
    assert_eq!(
        c.call("servers.remove", json!({"user": "alice", "name": "gh"})).await.unwrap(),
        json!({"removed": true})
    );
    assert_eq!(
        c.call("servers.remove", json!({"user": "alice", "name": "gh"})).await.unwrap(),
        json!({"removed": false})
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pipelined_requests_answered_by_id() {
    let server = identity_server().await;
    let d = ControlDaemon::start("").await;
    let mut c = d.client().await;
    put_bearer(&mut c, "alice", "gh", &server.url(), "tok-a").await;
    let mut burst = Vec::new();
    for i in 0..200 {
        // Mixed id types; some calls sleep so answers come back out of order.
        let id = if i % 2 == 0 { json!(i) } else { json!(format!("req-{i}")) };
        let (tool, arguments) =
            if i % 10 == 0 { ("sleep", json!({"ms": 50})) } else { ("echo", json!({"text": format!("msg-{i}")})) };
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools.call", "params": {"user": "alice", "server": "gh", "tool": tool, "arguments": arguments}});
        burst.extend(serde_json::to_vec(&request).unwrap());
        burst.push(b'\n');
    }
    c.send_line(&burst).await.unwrap();
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    for _ in 0..200 {
        let response =
            tokio::time::timeout(Duration::from_secs(30), c.read_response()).await.unwrap().unwrap().unwrap();
        let id = response["id"].to_string();
        order.push(id.clone());
        assert!(answers.insert(id, response).is_none(), "an id was answered twice");
    }
    for i in 0..200 {
        let id = if i % 2 == 0 { json!(i) } else { json!(format!("req-{i}")) };
        let response = &answers[&id.to_string()];
        let expected = if i % 10 == 0 { "slept".to_owned() } else { format!("msg-{i}") };
        assert_eq!(response["result"]["content"][0]["text"], expected, "request {i}");
    }
    let in_order = order.iter().enumerate().all(|(i, id)| {
        id.as_str() == (if i % 2 == 0 { json!(i) } else { json!(format!("req-{i}")) }).to_string().as_str()
    });
    println!("pipelining: 200 requests on one connection, 200 answers by id (in request order: {in_order})");
    assert!(!in_order, "slow requests were answered after faster later ones");
    d.stop().await;
}

/// Every kind of bad input gets its typed error while a healthy client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_others_keep_working() {
    let server = identity_server().await;
    let d = ControlDaemon::start("").await;
    let mut setup = d.client().await;
    put_bearer(&mut setup, "alice", "gh", &server.url(), "tok-a").await;
    let socket = d.socket.clone();
    let stop_healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop_healthy.clone();
    let healthy = tokio::spawn(async move {
        let mut c = Client::connect(&socket).await.unwrap();
        let mut ok = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let r = c.call("tools.call", json!({"user": "alice", "server": "gh", "tool": "whoami"})).await.unwrap();
            assert_eq!(r["content"][0]["text"], "alice");
            ok += 1;
        }
        ok
    });

    async fn one(d: &ControlDaemon, bytes: &[u8]) -> Value {
        let mut c = d.client().await;
        c.send_line(bytes).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), c.read_response()).await.unwrap().unwrap().expect("an answer")
    }
    let expect = |r: &Value, code: i64, kind: &str| {
        assert_eq!(r["error"]["code"], code, "{r}");
        assert_eq!(r["error"]["data"]["kind"], kind, "{r}");
    };
    expect(&one(&d, b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \n").await, -32700, "invalid_request");
    expect(&one(&d, b"\"just a string\"\n").await, -32600, "invalid_request");
    expect(&one(&d, b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}]\n").await, -32600, "invalid_request");
    expect(&one(&d, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}\n").await, -32601, "invalid_request");
    let wrong_types = one(&d, b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools.call\",\"params\":{\"user\":1,\"server\":[],\"tool\":\"t\"}}\n").await;
    expect(&wrong_types, -32602, "invalid_request");
    assert_eq!(wrong_types["id"], 2);
    expect(
        &one(&d, b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"servers.list\",\"params\":{}}\n").await,
        -32602,
        "invalid_request",
    );
    expect(
        &one(&d, b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"servers.list\",\"params\":{\"user\":\"bad user!\"}}\n")
            .await,
        -32602,
        "invalid_request",
    );
    expect(&one(&d, b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"\xff\xfe\"}\n").await, -32700, "invalid_request");

    // A 10 MiB frame: refused after max_frame_bytes, and the connection closed without the
    // daemon reading the rest.
    {
        let mut raw = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
        let big = vec![b'a'; 10 * 1024 * 1024];
        let started = Instant::now();
        let _ = raw.write_all(&big).await; // may fail with EPIPE once the daemon closes
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await.unwrap();
        let response: Value = serde_json::from_slice(answer.split(|b| *b == b'\n').next().unwrap()).unwrap();
        expect(&response, -32600, "invalid_request");
        assert!(response["error"]["message"].as_str().unwrap().contains("frame larger"));
        println!("10 MiB frame refused and closed in {:?}", started.elapsed());
    }
    // A connection that half-closes mid-frame.
    {
        let mut c = d.client().await;
        c.send_line(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"meth").await.unwrap();
        c.shutdown_write().await.unwrap();
        let r = c.read_response().await.unwrap().unwrap();
        expect(&r, -32700, "invalid_request");
        assert!(c.read_response().await.unwrap().is_none(), "then closed");
    }
    // A half-close after complete requests still gets their answers.
    {
        let mut c = d.client().await;
        c.send_line(b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools.call\",\"params\":{\"user\":\"alice\",\"server\":\"gh\",\"tool\":\"sleep\",\"arguments\":{\"ms\":200}}}\n").await.unwrap();
        c.shutdown_write().await.unwrap();
        let r = c.read_response().await.unwrap().unwrap();
        assert_eq!(r["result"]["content"][0]["text"], "slept", "{r}");
    }
    // 500 concurrent connections, each served.
    let started = Instant::now();
    let many: Vec<_> = (0..500)
        .map(|i| {
            let socket = d.socket.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&socket).await.unwrap();
                let r = c.call("servers.list", json!({"user": format!("user-{i}")})).await.unwrap();
                assert_eq!(r, json!({"servers": []}));
                c
            })
        })
        .collect();
    let mut open = Vec::new();
    for t in many {
        open.push(t.await.unwrap());
    }
    println!("500 concurrent connections served in {:?}", started.elapsed());
    drop(open);

    stop_healthy.store(true, std::sync::atomic::Ordering::Relaxed);
    let ok = healthy.await.unwrap();
    println!("the healthy client made {ok} successful calls meanwhile");
    assert!(ok >= 1, "the healthy client was served throughout");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_binds_a_connection_to_one_user() {
    let server = identity_server().await;
    let d = ControlDaemon::start("").await;
    let mut admin = d.client().await;
    put_bearer(&mut admin, "alice", "gh", &server.url(), "tok-a").await;
    put_bearer(&mut admin, "bob", "gh", &server.url(), "tok-b").await;
    let token =
        admin.call("capabilities.issue", json!({"user": "alice", "ttl_s": 300})).await.unwrap()["token"].clone();
    let mut c = d.client().await;
    c.call("auth", json!({"token": token})).await.unwrap();
    let bob_requests = [
        ("servers.list", json!({"user": "bob"})),
        (
            "servers.put",
            json!({"user": "bob", "name": "x", "transport": {"type": "http", "url": server.url()}, "auth": {"type": "none"}}),
        ),
        ("servers.remove", json!({"user": "bob", "name": "gh"})),
        ("tools.list", json!({"user": "bob"})),
        ("tools.call", json!({"user": "bob", "server": "gh", "tool": "whoami"})),
        ("oauth.begin", json!({"user": "bob", "server": "gh"})),
        ("sessions.stop", json!({"user": "bob"})),
        ("status", json!({})),
        ("capabilities.issue", json!({"user": "bob"})),
        ("capabilities.issue", json!({"user": "alice"})),
    ];
    for (method, params) in &bob_requests {
        let r = c.call(method, params.clone()).await;
        assert_eq!(kind(&r), "forbidden", "{method} {params}");
    }
    // Nothing of bob's changed, and alice's own requests work.
    assert_eq!(
        admin.call("servers.list", json!({"user": "bob"})).await.unwrap()["servers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        c.call("tools.call", json!({"user": "alice", "server": "gh", "tool": "whoami"})).await.unwrap()["content"][0]["text"],
        "alice"
    );
    assert_eq!(
        kind(&c.call("auth", json!({"token": token})).await),
        "invalid_request",
        "auth only as the first request"
    );
    // The refusals are audited under the bound user.
    let audit = d.warden.handle.store().audit_events("alice", 100).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.event == "request.forbidden").count(), bob_requests.len());

    // Expired and tampered capabilities are refused.
    let caps = warden::control::Capabilities::new(keyring(1).signing_key());
    let (expired, _) = caps.issue("alice", 60, warden::store::now_unix() - 120).unwrap();
    let mut c2 = d.client().await;
    let r = c2.call("auth", json!({"token": expired.expose_secret()})).await;
    assert_eq!(kind(&r), "forbidden");
    let t = token.as_str().unwrap();
    let tampered = format!("{}{}", &t[..t.len() - 2], if t.ends_with("AA") { "BB" } else { "AA" });
    let r = d.client().await.call("auth", json!({"token": tampered})).await;
    assert_eq!(kind(&r), "forbidden");
    let (other_key, _) = warden::control::Capabilities::new(keyring(2).signing_key())
        .issue("alice", 60, warden::store::now_unix())
        .unwrap();
    assert_eq!(kind(&d.client().await.call("auth", json!({"token": other_key.expose_secret()})).await), "forbidden");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_peers_and_stale_sockets() {
    let server = identity_server().await;
    let d = ControlDaemon::start("[control]\nmax_in_flight = 2\nidle_timeout_s = 1\n").await;
    let mut c = d.client().await;
    put_bearer(&mut c, "alice", "gh", &server.url(), "tok-a").await;
    // In-flight limit: two slow calls run, the third is overloaded.
    let mut burst = Vec::new();
    for id in 1..=3 {
        let r = json!({"jsonrpc": "2.0", "id": id, "method": "tools.call", "params": {"user": "alice", "server": "gh", "tool": "sleep", "arguments": {"ms": 300}}});
        burst.extend(serde_json::to_vec(&r).unwrap());
        burst.push(b'\n');
    }
    c.send_line(&burst).await.unwrap();
    let first = c.read_response().await.unwrap().unwrap();
    assert_eq!(
        (first["id"].as_i64(), first["error"]["data"]["kind"].as_str()),
        (Some(3), Some("overloaded")),
        "{first}"
    );
    for _ in 0..2 {
        assert_eq!(c.read_response().await.unwrap().unwrap()["result"]["content"][0]["text"], "slept");
    }
    // Idle connections are closed.
    let mut idle = d.client().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_response()).await.unwrap().unwrap();
    assert!(closed.is_none(), "an idle connection was closed");
    // A live daemon's socket is never replaced; a non-socket file is never removed.
    assert!(matches!(
        warden::control::ControlSocket::bind(&d.socket).await,
        Err(warden::control::ControlError::AlreadyRunning(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    assert!(matches!(
        warden::control::ControlSocket::bind(&file).await,
        Err(warden::control::ControlError::NotASocket(_))
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // A stale socket (nobody listening) is replaced, with 0600 inside 0700.
    let stale = dir.path().join("run/stale.sock");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let fresh = warden::control::ControlSocket::bind(&stale).await.unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(stale.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    drop(fresh);
    d.stop().await;

    // A peer whose uid is not on the allow-list is refused.
    let d = ControlDaemon::start("[control]\nallowed_uids = [4242424]\n").await;
    let mut c = d.client().await;
    assert_eq!(kind(&c.call("status", json!({})).await), "forbidden");
    d.stop().await;
    // More connections than allowed: the extra one is refused as overloaded.
    let d = ControlDaemon::start("[control]\nmax_connections = 1\n").await;
    let mut first = d.client().await;
    first.call("status", json!({})).await.unwrap();
    let r = d.client().await.call("status", json!({})).await;
    assert_eq!(kind(&r), "overloaded");
    assert_eq!(code(&r), -32000);
    d.stop().await;
}

/// The stdlib-only Python client in examples/ works against a real daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_works() {
    let server = identity_server().await;
    let d = ControlDaemon::start("").await;
    let mut c = d.client().await;
    put_bearer(&mut c, "alice", "gh", &server.url(), "tok-a").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/client.py");
    let out = tokio::process::Command::new("python3").arg(&script).arg(&d.socket).arg("alice").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("gh/whoami"), "{stdout}");
    assert!(stdout.contains("whoami -> alice"), "{stdout}");
    assert!(stdout.contains("no_tools_available"), "{stdout}");
    d.stop().await;
}

mod connection_properties {
    //! The connection handler itself, fed random frames over an in-memory stream: whatever
    //! arrives, every request with an id gets exactly one response, and nothing panics.
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    use super::support::{TestWarden, keyring};

    fn shared() -> &'static (tokio::runtime::Runtime, Arc<warden::control::Context>) {
        static SHARED: OnceLock<(tokio::runtime::Runtime, Arc<warden::control::Context>)> = OnceLock::new();
        SHARED.get_or_init(|| {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let context = runtime.block_on(async {
                let w = TestWarden::start("").await;
                let context = warden::control::Context {
                    handle: w.handle.clone(),
                    capabilities: warden::control::Capabilities::new(keyring(1).signing_key()),
                    limits: warden::control::Limits::from_config(&w.handle.config().control),
                };
                // The warden lives as long as the test binary.
                std::mem::forget(w);
                Arc::new(context)
            });
            (runtime, context)
        })
    }

    fn frame() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec![
            "status",
            "servers.list",
            "tools.list",
            "sessions.stop",
            "auth",
            "nope",
            "tools.call",
        ]);
        let params = prop_oneof![
            Just(None),
            Just(Some(json!({}))),
            Just(Some(json!({"user": "alice"}))),
            Just(Some(json!({"user": 5}))),
            Just(Some(json!([1, 2]))),
            Just(Some(json!({"user": "alice", "extra": true}))),
        ];
        let shaped = (method, params, any::<bool>(), any::<bool>()).prop_map(|(m, p, with_id, good_version)| {
            let mut o = serde_json::Map::new();
            o.insert("jsonrpc".into(), json!(if good_version { "2.0" } else { "1.0" }));
            o.insert("method".into(), json!(m));
            if with_id {
                o.insert("id".into(), json!("placeholder"));
            }
            if let Some(p) = p {
                o.insert("params".into(), p);
            }
            serde_json::to_vec(&Value::Object(o)).unwrap()
        });
        let noise = prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64);
        prop_oneof![3 => shaped, 1 => noise, 1 => Just(b"[]".to_vec()), 1 => Just(b"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"status\"}".to_vec())]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn every_request_gets_exactly_one_response(frames in prop::collection::vec(frame(), 1..24)) {
            // Give each request a unique id so responses can be matched.
            let frames: Vec<Vec<u8>> = frames
                .into_iter()
                .enumerate()
                .map(|(i, f)| String::from_utf8(f.clone()).map_or(f, |s| s.replace("\"placeholder\"", &i.to_string()).into_bytes()))
                .collect();
            let mut expected_ids = Vec::new();
            let mut expected_errors = 0usize;
            for f in &frames {
                let trimmed = f.strip_suffix(b"\r").unwrap_or(f);
                if trimmed.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match warden::protocol::decode(trimmed) {
                    Ok(r) => expected_ids.extend(r.id),
                    Err(_) => expected_errors += 1,
                }
            }
            let (runtime, context) = shared();
            let responses: Vec<Value> = runtime.block_on(async {
                let (client, server) = tokio::io::duplex(1 << 20);
                let (_stop, rx) = tokio::sync::watch::channel(false);
                let conn = tokio::spawn(warden::control::serve_connection(server, context.clone(), rx));
                let (read, mut write) = tokio::io::split(client);
                for f in &frames {
                    write.write_all(f).await.unwrap();
                    write.write_all(b"\n").await.unwrap();
                }
                write.shutdown().await.unwrap();
                let mut lines = tokio::io::BufReader::new(read).lines();
                let mut out = Vec::new();
                while let Some(line) = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap() {
                    out.push(serde_json::from_str::<Value>(&line).unwrap());
                }
                conn.await.unwrap();
                out
            });
            let with_ids: Vec<&Value> = responses.iter().map(|r| &r["id"]).filter(|id| !id.is_null()).collect();
            for id in &expected_ids {
                prop_assert_eq!(with_ids.iter().filter(|x| **x == id).count(), 1, "id {} answered once", id);
            }
            // Errors for undecodable frames carry the id when one could be read, else null.
            prop_assert_eq!(responses.len(), expected_ids.len() + expected_errors);
        }
    }
}
