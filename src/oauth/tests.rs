//! The grant store's compare-and-swap against rmcp's refresh, with a fault-injecting token
//! endpoint (a test double: a real authorization server cannot be made to answer late on
//! command). Two stores on one database stand for two nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use rmcp::transport::auth::{
    AuthorizationManager, AuthorizationMetadata, CredentialStore as _, OAuthClientConfig, StoredCredentials,
};
use serde_json::json;
use tokio::sync::Notify;

use super::OAuth;
use super::stores::GrantStore;
use crate::crypto::{Keyring, MasterKey};
use crate::model::{OAuthSettings, ServerAuth, ServerConfig, Transport};
use crate::store::{GrantStatus, MCPCredentialStore};
use warden_actors::RefreshLead;

/// The double: the first refresh with `R1` is held until released, then rejected
/// (`invalid_grant`, as a late failure); any other refresh with `R1` succeeds with `R2`;
/// refreshing with `R2` is rejected.
struct TokenEndpoint {
    r1_requests: AtomicUsize,
    first_arrived: Notify,
    release: Notify,
}

async fn token(State(double): State<Arc<TokenEndpoint>>, body: String) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let refresh =
        url::form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == "refresh_token").map(|(_, v)| v.into_owned());
    let json_response = |status: axum::http::StatusCode, body: serde_json::Value| {
        (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    };
    let rejected = || json_response(axum::http::StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
    match refresh.as_deref() {
        Some("R1") if double.r1_requests.fetch_add(1, Ordering::SeqCst) == 0 => {
            double.first_arrived.notify_one();
            double.release.notified().await;
            rejected()
        }
        Some("R1") => json_response(
            axum::http::StatusCode::OK,
            json!({"access_token": "A2", "token_type": "bearer", "expires_in": 5, "refresh_token": "R2"}),
        ),
        _ => rejected(),
    }
}

fn manager_config(url: &str) -> (AuthorizationMetadata, OAuthClientConfig) {
    let mut metadata = AuthorizationMetadata::default();
    metadata.authorization_endpoint = format!("{url}/authorize");
    metadata.token_endpoint = format!("{url}/token");
    (metadata, OAuthClientConfig::new("client-1", "http://127.0.0.1:1/cb"))
}

async fn manager(url: &str, grants: GrantStore) -> AuthorizationManager {
    let mut m = AuthorizationManager::new(format!("{url}/mcp")).await.unwrap();
    m.set_credential_store(grants);
    let (metadata, config) = manager_config(url);
    m.set_metadata(metadata);
    m.configure_client(config).unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_failure_never_touches_a_newer_grant() {
    let double = Arc::new(TokenEndpoint {
        r1_requests: AtomicUsize::new(0),
        first_arrived: Notify::new(),
        release: Notify::new(),
    });
    let app = axum::Router::new().route("/token", axum::routing::post(token)).with_state(double.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("w.db").display());
    let keyring = Arc::new(Keyring::new(&MasterKey::generate().unwrap(), &[]));
    // Two stores on one database: two nodes, each with its own in-process refresh lock (on
    // SQLite there is no cross-process lock, which is exactly the race to survive).
    let node_a = MCPCredentialStore::connect(&db, 4, keyring.clone()).await.unwrap();
    let node_b = MCPCredentialStore::connect(&db, 4, keyring).await.unwrap();
    let config = ServerConfig {
        name: "notes".into(),
        transport: Transport::Http { url: format!("{url}/mcp") },
        auth: ServerAuth::Oauth(OAuthSettings::default()),
    };
    node_a.put_server("alice", &config).await.unwrap();
    let oauth = |store: &MCPCredentialStore| {
        OAuth::new(store.clone(), "http://127.0.0.1:1/cb".into(), 600, true, RefreshLead { min_s: 1, fraction: 0.1 })
    };
    let grants_a = GrantStore::new(node_a.clone(), "alice", "notes", oauth(&node_a));
    let grants_b = GrantStore::new(node_b.clone(), "alice", "notes", oauth(&node_b));
    let response = serde_json::from_value(
        json!({"access_token": "A1", "token_type": "bearer", "expires_in": 5, "refresh_token": "R1"}),
    )
    .unwrap();
    grants_a.save(StoredCredentials::new("client-1".into(), Some(response), vec![], Some(1))).await.unwrap();
    assert_eq!(node_a.load_grant("alice", "notes").await.unwrap().unwrap().generation, 1);

    // Node A starts refreshing generation 1; its answer is held back.
    let manager_a = manager(&url, grants_a.clone()).await;
    let a = tokio::spawn(async move { manager_a.refresh_token().await });
    double.first_arrived.notified().await;
    // Node B refreshes the same grant and succeeds: generation 2.
    let manager_b = manager(&url, grants_b).await;
    manager_b.refresh_token().await.unwrap();
    assert_eq!(node_b.load_grant("alice", "notes").await.unwrap().unwrap().generation, 2);
    // Node A's late rejection arrives.
    double.release.notify_one();
    let late = a.await.unwrap();
    assert!(matches!(late, Err(rmcp::transport::auth::AuthError::TokenRefreshRejected(_))), "{late:?}");
    let grant = node_a.load_grant("alice", "notes").await.unwrap().unwrap();
    assert_eq!((grant.status, grant.generation), (GrantStatus::Active, 2), "the newer grant is intact");
    let payload: serde_json::Value = serde_json::from_slice(&grant.tokens).unwrap();
    assert_eq!(payload["credentials"]["token_response"]["refresh_token"], "R2");

    // Whereas a rejection of the current generation does mark it.
    let manager_c = manager(&url, GrantStore::new(node_a.clone(), "alice", "notes", oauth(&node_a))).await;
    assert!(manager_c.refresh_token().await.is_err());
    assert_eq!(
        node_a.load_grant("alice", "notes").await.unwrap().unwrap().status,
        GrantStatus::ReauthorizationRequired
    );
}
