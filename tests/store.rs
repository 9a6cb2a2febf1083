//! The sealed credential store on both backends: one test body each, run on SQLite and on the
//! PostgreSQL at 127.0.0.1:5432 (which must be up: these fail, never skip, without it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use support::{TestDb, key, keyring};
use warden::Secret;
use warden::crypto::{CryptoError, Keyring, Purpose};
use warden::model::{AuthType, OAuthSettings, ServerAuth, ServerConfig, Transport};
use warden::store::{Expect, GrantStatus, GrantWrite, StoreError};

const CANARIES: &[&str] = &[
    "CANARY-bearer-7f3a",
    "CANARY-header-91bc",
    "CANARY-env-55de",
    "CANARY-client-secret-0a1b",
    "CANARY-grant-tokens-c0ff",
    "CANARY-pkce-verifier-beef",
    "CANARY-state-d00d",
];

fn http(url: &str) -> Transport {
    Transport::Http { url: url.into() }
}

fn configs() -> Vec<ServerConfig> {
    let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), Secret::from(v))]);
    vec![
        ServerConfig { name: "plain".into(), transport: http("https://mcp.example.com/mcp"), auth: ServerAuth::None },
        ServerConfig {
            name: "gh".into(),
            transport: http("https://api.example.com/mcp?x=1"),
            auth: ServerAuth::Bearer { token: CANARIES[0].into() },
        },
        ServerConfig {
            name: "linear".into(),
            transport: http("http://127.0.0.1:9/mcp"),
            auth: ServerAuth::Headers { headers: map("X-API-Key", CANARIES[1]) },
        },
        ServerConfig {
            name: "local".into(),
            transport: Transport::Stdio { command: "node".into(), args: vec!["server.js".into(), "--flag".into()] },
            auth: ServerAuth::Env { env: map("API_TOKEN", CANARIES[2]) },
        },
        ServerConfig {
            name: "notion".into(),
            transport: http("https://notion.example.com/mcp"),
            auth: ServerAuth::Oauth(OAuthSettings {
                client_id: Some("client-1".into()),
                client_secret: Some(CANARIES[3].into()),
                client_metadata_url: Some("https://app.example.com/client.json".into()),
                scopes: vec!["read".into(), "write".into()],
            }),
        },
    ]
}

/// The secret values of an auth, for comparison.
fn secrets(auth: &ServerAuth) -> Vec<String> {
    match auth {
        ServerAuth::None => vec![],
        ServerAuth::Bearer { token } => vec![token.expose_secret().into()],
        ServerAuth::Headers { headers: m } | ServerAuth::Env { env: m } => {
            m.iter().map(|(k, v)| format!("{k}={}", v.expose_secret())).collect()
        }
        ServerAuth::Oauth(o) => vec![
            format!("{:?}", o.client_id),
            o.client_secret.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default(),
            format!("{:?} {:?}", o.client_metadata_url, o.scopes),
        ],
    }
}

async fn round_trip_every_kind(db: TestDb) {
    let store = db.store(keyring(1)).await;
    for c in configs() {
        assert_eq!(store.put_server("alice", &c).await.unwrap(), 1, "{}", c.name);
    }
    let loaded = store.load_servers("alice").await.unwrap();
    let mut expected = configs();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(loaded.len(), expected.len());
    for (got, want) in loaded.iter().zip(&expected) {
        assert_eq!(got.config.name, want.name);
        assert_eq!(got.config.transport, want.transport);
        assert_eq!(got.config.auth.auth_type(), want.auth.auth_type());
        assert_eq!(secrets(&got.config.auth), secrets(&want.auth));
        assert_eq!(got.version, 1);
    }
    // Listing shows no secrets and needs no key.
    let listed = store.with_keyring(keyring(9)).list_servers("alice").await.unwrap();
    let types: Vec<_> = listed.iter().map(|s| s.auth_type).collect();
    assert_eq!(types, [AuthType::Bearer, AuthType::Headers, AuthType::Env, AuthType::Oauth, AuthType::None]);
    let names: Vec<_> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["gh", "linear", "local", "notion", "plain"]);
    // Put again: version increments, other users see nothing.
    assert_eq!(store.put_server("alice", &configs()[1]).await.unwrap(), 2);
    assert!(store.load_servers("bob").await.unwrap().is_empty());
    assert!(store.load_server("alice", "missing").await.unwrap().is_none());
    assert!(store.remove_server("alice", "gh").await.unwrap());
    assert!(!store.remove_server("alice", "gh").await.unwrap());
    assert_eq!(store.list_servers("alice").await.unwrap().len(), 4);
    let audit = store.audit_events("alice", 100).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.event == "server.put").count(), 6);
    assert_eq!(audit.last().unwrap().event, "server.remove");
}

async fn sealed_columns_hold_no_plaintext(db: TestDb) {
    let store = db.store(keyring(1)).await;
    for c in configs() {
        store.put_server("alice", &c).await.unwrap();
    }
    let grant =
        GrantWrite { tokens: CANARIES[4].as_bytes(), expires_at: Some(100), client_id: Some("client-1"), issuer: None };
    store.save_grant("alice", "notion", &grant, Expect::Absent).await.unwrap();
    let payload = format!("{}|{}", CANARIES[5], CANARIES[6]);
    store.put_pending("alice", "notion", CANARIES[6], payload.as_bytes(), i64::MAX).await.unwrap();
    store.close().await;
    let raw = db.raw_bytes().await;
    assert!(raw.len() > 1000, "read the database ({} bytes)", raw.len());
    for canary in CANARIES {
        let found = raw.windows(canary.len()).any(|w| w == canary.as_bytes());
        assert!(!found, "{canary} found in the {} database", db.backend);
    }
    // The test would notice plaintext: the non-secret client id is visible.
    assert!(raw.windows(8).any(|w| w == b"client-1"));
}

async fn swapped_blobs_fail_to_open(db: TestDb) {
    let store = db.store(keyring(1)).await;
    let cfg = |name: &str, token: &str| ServerConfig {
        name: name.into(),
        transport: http("https://x.example.com/mcp"),
        auth: ServerAuth::Bearer { token: token.into() },
    };
    store.put_server("alice", &cfg("a", "alice-a")).await.unwrap();
    store.put_server("alice", &cfg("b", "alice-b")).await.unwrap();
    store.put_server("bob", &cfg("a", "bob-a")).await.unwrap();
    let grant = GrantWrite { tokens: b"{}", expires_at: None, client_id: None, issuer: None };
    store.save_grant("alice", "a", &grant, Expect::Absent).await.unwrap();

    // bob's row gets alice's blob: another user.
    db.exec("UPDATE servers SET auth_sealed = (SELECT auth_sealed FROM servers WHERE user_id = 'alice' AND name = 'a') WHERE user_id = 'bob' AND name = 'a'", &[]).await;
    let err = store.load_server("bob", "a").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Sealed { source: CryptoError::Decrypt, purpose: Purpose::ServerAuth, .. }),
        "{err:?}"
    );
    // alice/b gets alice/a's blob: another server.
    db.exec("UPDATE servers SET auth_sealed = (SELECT auth_sealed FROM servers WHERE user_id = 'alice' AND name = 'a') WHERE user_id = 'alice' AND name = 'b'", &[]).await;
    let err = store.load_server("alice", "b").await.unwrap_err();
    assert!(matches!(err, StoreError::Sealed { source: CryptoError::Decrypt, .. }), "{err:?}");
    // alice/a's grant column gets its server-auth blob: another column.
    db.exec("UPDATE grants SET tokens_sealed = (SELECT auth_sealed FROM servers WHERE user_id = 'alice' AND name = 'a') WHERE user_id = 'alice' AND server = 'a'", &[]).await;
    let err = store.load_grant("alice", "a").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Sealed { source: CryptoError::Decrypt, purpose: Purpose::GrantTokens, .. }),
        "{err:?}"
    );
    // The untouched row still opens.
    assert!(store.load_server("alice", "a").await.unwrap().is_some());
    // The error names user and server, not the secret.
    assert!(!err.to_string().contains("alice-a") && err.to_string().contains("alice"));
}

async fn wrong_key_fails_typed(db: TestDb) {
    let store = db.store(keyring(1)).await;
    store.put_server("alice", &configs()[1]).await.unwrap();
    let other = store.with_keyring(keyring(2));
    let err = other.load_servers("alice").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Sealed { source: CryptoError::UnknownKey(id), .. } if id == key(1).id()),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(CANARIES[0]));
}

async fn grant_compare_and_swap(db: TestDb) {
    let store = db.store(keyring(1)).await;
    store.put_server("alice", &configs()[4]).await.unwrap();
    let w = |t: &'static str| GrantWrite {
        tokens: t.as_bytes(),
        expires_at: Some(1000),
        client_id: Some("c"),
        issuer: Some("https://as"),
    };
    let err = store.save_grant("alice", "nope", &w("x"), Expect::Any).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownServer { .. }), "{err:?}");
    assert_eq!(store.save_grant("alice", "notion", &w("g1"), Expect::Absent).await.unwrap(), 1);
    assert!(matches!(
        store.save_grant("alice", "notion", &w("x"), Expect::Absent).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.save_grant("alice", "notion", &w("g2"), Expect::Generation(1)).await.unwrap(), 2);
    // A stale writer (it read generation 1) is refused and changes nothing.
    assert!(matches!(
        store.save_grant("alice", "notion", &w("stale"), Expect::Generation(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let g = store.load_grant("alice", "notion").await.unwrap().unwrap();
    assert_eq!((&g.tokens[..], g.generation, g.status), (&b"g2"[..], 2, GrantStatus::Active));
    assert!(!format!("{g:?}").contains("g2\""));
    // A late failure for generation 1 leaves generation 2 alone.
    assert!(!store.mark_reauthorization_required("alice", "notion", 1).await.unwrap());
    assert_eq!(store.load_grant("alice", "notion").await.unwrap().unwrap().status, GrantStatus::Active);
    assert!(store.mark_reauthorization_required("alice", "notion", 2).await.unwrap());
    assert_eq!(
        store.load_grant("alice", "notion").await.unwrap().unwrap().status,
        GrantStatus::ReauthorizationRequired
    );
    assert!(store.active_grants().await.unwrap().is_empty());
    assert_eq!(store.grant_counts().await.unwrap(), (0, 1));
    // A fresh authorization supersedes whatever is there.
    assert_eq!(store.save_grant("alice", "notion", &w("g3"), Expect::Any).await.unwrap(), 3);
    let sched = store.active_grants().await.unwrap();
    assert_eq!(sched.len(), 1);
    assert_eq!((sched[0].expires_at, sched[0].generation), (Some(1000), 3));
    // Changing the server's transport drops its grant (it must never reach another server).
    let mut moved = configs()[4].clone();
    moved.transport = http("https://elsewhere.example.com/mcp");
    store.put_server("alice", &moved).await.unwrap();
    assert!(store.load_grant("alice", "notion").await.unwrap().is_none());
}

async fn concurrent_cas_has_one_winner(db: TestDb) {
    let store = db.store(keyring(1)).await;
    store.put_server("alice", &configs()[4]).await.unwrap();
    let w = GrantWrite { tokens: b"g1", expires_at: None, client_id: None, issuer: None };
    store.save_grant("alice", "notion", &w, Expect::Absent).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let t = format!("writer-{i}");
            let w = GrantWrite { tokens: t.as_bytes(), expires_at: None, client_id: None, issuer: None };
            store.save_grant("alice", "notion", &w, Expect::Generation(1)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(2) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn rotation_reseals_everything(db: TestDb) {
    let store = db.store(keyring(1)).await;
    for user in ["alice", "bob"] {
        for c in configs() {
            store.put_server(user, &c).await.unwrap();
        }
        let w = GrantWrite { tokens: b"tokens", expires_at: None, client_id: None, issuer: None };
        store.save_grant(user, "notion", &w, Expect::Absent).await.unwrap();
        store.put_pending(user, "notion", &format!("state-{user}"), b"verifier", i64::MAX).await.unwrap();
    }
    let rows = 2 * (configs().len() + 2) as u64;
    // Key 2 becomes primary, key 1 stays readable.
    let rotating = store.with_keyring(Arc::new(Keyring::new(&key(2), &[key(1)])));
    let report = rotating.rotate_keys().await.unwrap();
    assert_eq!((report.resealed, report.failed, report.remaining), (rows, 0, 0));
    assert_eq!(rotating.rows_per_key().await.unwrap(), vec![(i64::from(key(2).id().0), rows.cast_signed())]);
    // Idempotent.
    assert_eq!(rotating.rotate_keys().await.unwrap().resealed, 0);
    // Key 1 can now be dropped: everything opens with key 2 alone.
    let new_only = store.with_keyring(keyring(2));
    for user in ["alice", "bob"] {
        let servers = new_only.load_servers(user).await.unwrap();
        assert_eq!(secrets(&servers[0].config.auth), vec![CANARIES[0].to_owned()]);
        assert_eq!(&new_only.load_grant(user, "notion").await.unwrap().unwrap().tokens[..], b"tokens");
        assert_eq!(&new_only.take_pending(&format!("state-{user}")).await.unwrap().unwrap().payload[..], b"verifier");
    }
    // And the old key alone no longer opens anything.
    assert!(matches!(
        store.load_servers("alice").await,
        Err(StoreError::Sealed { source: CryptoError::UnknownKey(_), .. })
    ));
}

async fn rotation_reports_unopenable_rows(db: TestDb) {
    let store = db.store(keyring(1)).await;
    store.put_server("alice", &configs()[1]).await.unwrap();
    store.with_keyring(keyring(3)).put_server("bob", &configs()[1]).await.unwrap();
    // Key 3 is unknown to this ring: bob's row cannot be re-sealed, alice's can.
    let report = store.with_keyring(Arc::new(Keyring::new(&key(2), &[key(1)]))).rotate_keys().await.unwrap();
    assert_eq!((report.resealed, report.failed, report.remaining), (1, 1, 1));
}

#[allow(clippy::too_many_lines)] // one case per line: splitting would hide the list
async fn invalid_input_writes_nothing(db: TestDb) {
    let store = db.store(keyring(1)).await;
    let bad: Vec<(&str, ServerConfig, &str)> = vec![
        ("", configs()[0].clone(), "user"),
        ("alice/../bob", configs()[0].clone(), "user"),
        ("alice", ServerConfig { name: "has space".into(), ..configs()[0].clone() }, "name"),
        ("alice", ServerConfig { name: "x".repeat(65), ..configs()[0].clone() }, "name"),
        ("alice", ServerConfig { transport: http("ftp://x.example.com"), ..configs()[0].clone() }, "transport.url"),
        (
            "alice",
            ServerConfig { transport: http("https://u:p@x.example.com"), ..configs()[0].clone() },
            "transport.url",
        ),
        ("alice", ServerConfig { transport: http("not a url"), ..configs()[0].clone() }, "transport.url"),
        (
            "alice",
            ServerConfig { auth: ServerAuth::Bearer { token: "a\r\nX-Evil: 1".into() }, ..configs()[1].clone() },
            "auth.token",
        ),
        (
            "alice",
            ServerConfig { auth: ServerAuth::Bearer { token: "a".repeat(20_000).into() }, ..configs()[1].clone() },
            "auth.token",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Headers { headers: BTreeMap::from([("Bad Name".into(), "v".into())]) },
                ..configs()[2].clone()
            },
            "auth.headers",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Headers { headers: BTreeMap::from([("Mcp-Session-Id".into(), "v".into())]) },
                ..configs()[2].clone()
            },
            "auth.headers",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Env { env: BTreeMap::from([("LD_PRELOAD".into(), "/x.so".into())]) },
                ..configs()[3].clone()
            },
            "auth.env",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Env { env: BTreeMap::from([("1BAD".into(), "v".into())]) },
                ..configs()[3].clone()
            },
            "auth.env",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Env { env: BTreeMap::from([("A".into(), "v".into())]) },
                ..configs()[1].clone()
            },
            "auth",
        ),
        ("alice", ServerConfig { auth: configs()[1].auth.clone(), ..configs()[3].clone() }, "auth"),
        (
            "alice",
            ServerConfig {
                transport: Transport::Stdio { command: String::new(), args: vec![] },
                ..configs()[3].clone()
            },
            "transport.command",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Oauth(OAuthSettings {
                    client_metadata_url: Some("http://insecure.example.com/c.json".into()),
                    ..Default::default()
                }),
                ..configs()[4].clone()
            },
            "auth.client_metadata_url",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Oauth(OAuthSettings { scopes: vec!["bad scope".into()], ..Default::default() }),
                ..configs()[4].clone()
            },
            "auth.scopes",
        ),
        (
            "alice",
            ServerConfig {
                auth: ServerAuth::Oauth(OAuthSettings { client_secret: Some("s".into()), ..Default::default() }),
                ..configs()[4].clone()
            },
            "auth.client_secret",
        ),
    ];
    for (user, config, field) in &bad {
        let err = store.put_server(user, config).await.unwrap_err();
        match err {
            StoreError::Invalid(v) => assert_eq!(&v.field, field, "{v}"),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    let big = ServerAuth::Headers {
        headers: (0..10).map(|i| (format!("X-H{i}"), Secret::from("v".repeat(16_000)))).collect(),
    };
    assert!(
        matches!(store.put_server("alice", &ServerConfig { auth: big, ..configs()[2].clone() }).await, Err(StoreError::Invalid(v)) if v.field == "auth")
    );
    assert!(matches!(store.load_servers("bad user").await, Err(StoreError::Invalid(_))));
    let w = GrantWrite { tokens: b"t", expires_at: None, client_id: None, issuer: None };
    assert!(matches!(store.save_grant("alice", "a b", &w, Expect::Any).await, Err(StoreError::Invalid(_))));
    store.close().await;
    for table in ["servers", "grants", "pending_authorizations", "audit_events"] {
        assert_eq!(db.count(table).await, 0, "{table} after invalid input");
    }
    // Nothing leaked into the validation messages either.
    let err = store.put_server("alice", &bad[7].1).await;
    assert!(err.is_err());
}

async fn pending_taken_once_and_expires(db: TestDb) {
    let store = db.store(keyring(1)).await;
    store.put_server("alice", &configs()[4]).await.unwrap();
    store.put_pending("alice", "notion", "state-1", b"payload", i64::MAX).await.unwrap();
    store.put_pending("alice", "notion", "state-old", b"old", 1).await.unwrap();
    assert!(store.load_pending("nope").await.unwrap().is_none());
    let p = store.take_pending("state-1").await.unwrap().unwrap();
    assert_eq!((p.user.as_str(), p.server.as_str(), &p.payload[..]), ("alice", "notion", &b"payload"[..]));
    assert!(!format!("{p:?}").contains("payload\""));
    assert!(store.take_pending("state-1").await.unwrap().is_none());
    assert!(store.load_pending("state-old").await.unwrap().is_none());
    assert_eq!(store.purge_expired_pending().await.unwrap(), 1);
    // Removing the server removes its pending authorizations.
    store.put_pending("alice", "notion", "state-2", b"p", i64::MAX).await.unwrap();
    store.remove_server("alice", "notion").await.unwrap();
    assert!(store.take_pending("state-2").await.unwrap().is_none());
}

both_backends!(
    round_trip_every_kind,
    sealed_columns_hold_no_plaintext,
    swapped_blobs_fail_to_open,
    wrong_key_fails_typed,
    grant_compare_and_swap,
    concurrent_cas_has_one_winner,
    rotation_reseals_everything,
    rotation_reports_unopenable_rows,
    invalid_input_writes_nothing,
    pending_taken_once_and_expires,
);
