//! The OAuth world without warden: registration, authorization code + PKCE by hand, the resource
//! server through a real rmcp client, refresh rotation and reuse detection, revocation, the 401
//! and 403 challenges, and a Chromium login.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, bail, ensure};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{StatusCode, Url, header::WWW_AUTHENTICATE};
use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_testkit::OAuthWorld;

/// What the tests need of the authorization server's metadata.
struct Endpoints {
    authorization: String,
    token: String,
    registration: String,
}

/// A registered public client plus one PKCE authorization request.
struct Authorization {
    client_id: String,
    redirect_uri: String,
    verifier: String,
    state: String,
    url: String,
}

/// Tokens from the token endpoint.
struct Tokens {
    access: String,
    refresh: String,
    scope: String,
}

async fn endpoints(world: &OAuthWorld) -> anyhow::Result<Endpoints> {
    let url = format!("{}/.well-known/openid-configuration", world.issuer());
    let meta: Value = reqwest::get(url).await?.error_for_status()?.json().await?;
    let field = |name: &str| meta[name].as_str().map(str::to_owned).with_context(|| format!("no {name} in {meta}"));
    Ok(Endpoints {
        authorization: field("authorization_endpoint")?,
        token: field("token_endpoint")?,
        registration: field("registration_endpoint")?,
    })
}

/// A loopback redirect URI on a port where nothing listens.
fn unused_redirect_uri() -> anyhow::Result<String> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    Ok(format!("http://127.0.0.1:{port}/cb"))
}

/// Registers a public native client the way rmcp does, and builds a PKCE authorization URL.
async fn authorize(world: &OAuthWorld, ep: &Endpoints, scope: Option<&str>) -> anyhow::Result<Authorization> {
    let redirect_uri = unused_redirect_uri()?;
    let registration = json!({
        "client_name": "oauth-world-test",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "response_types": ["code"],
        "scope": "mcp mcp:admin",
        "application_type": "native",
    });
    let response = reqwest::Client::new().post(&ep.registration).json(&registration).send().await?;
    ensure!(response.status() == StatusCode::CREATED, "registration answered {}", response.status());
    let client: Value = response.json().await?;
    let client_id = client["client_id"].as_str().context("no client_id")?.to_owned();

    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let mut url = Url::parse(&ep.authorization)?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("resource", world.resource());
    if let Some(scope) = scope {
        url.query_pairs_mut().append_pair("scope", scope);
    }
    Ok(Authorization { client_id, redirect_uri, verifier, state, url: url.into() })
}

/// The `code` of a redirect to the authorization's redirect_uri, after checking `state` and `iss`.
fn code_from(world: &OAuthWorld, auth: &Authorization, location: &str) -> anyhow::Result<String> {
    ensure!(location.starts_with(&format!("{}?", auth.redirect_uri)), "redirected to {location}");
    let url = Url::parse(location)?;
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    ensure!(param("state").as_deref() == Some(auth.state.as_str()), "state mismatch in {location}");
    ensure!(param("iss").as_deref() == Some(world.issuer()), "iss mismatch in {location}");
    param("code").with_context(|| format!("no code in {location}"))
}

async fn token_request(ep: &Endpoints, params: &[(&str, &str)]) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new().post(&ep.token).form(params).send().await?;
    Ok((response.status(), response.json().await?))
}

fn tokens(status: StatusCode, body: &Value) -> anyhow::Result<Tokens> {
    ensure!(status == StatusCode::OK, "token endpoint answered {status}: {body}");
    let field = |name: &str| body[name].as_str().map(str::to_owned).with_context(|| format!("no {name} in {body}"));
    Ok(Tokens { access: field("access_token")?, refresh: field("refresh_token")?, scope: field("scope")? })
}

/// Registration, HTTP login as `username`, and the code exchange with PKCE and the resource.
async fn log_in(
    world: &OAuthWorld,
    ep: &Endpoints,
    username: &str,
    scope: Option<&str>,
) -> anyhow::Result<(Authorization, Tokens)> {
    let auth = authorize(world, ep, scope).await?;
    let location = world.login_via_http(&auth.url, username).await?;
    let code = code_from(world, &auth, &location)?;
    let (status, body) = token_request(
        ep,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &auth.redirect_uri),
            ("code_verifier", &auth.verifier),
            ("client_id", &auth.client_id),
            ("resource", world.resource()),
        ],
    )
    .await?;
    let tokens = tokens(status, &body)?;
    Ok((auth, tokens))
}

async fn refresh(ep: &Endpoints, auth: &Authorization, refresh_token: &str) -> anyhow::Result<(StatusCode, Value)> {
    token_request(
        ep,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", &auth.client_id)],
    )
    .await
}

/// Calls `tool` on the resource server through an rmcp client using `access_token`.
async fn call_tool(world: &OAuthWorld, access_token: &str, tool: &'static str) -> anyhow::Result<String> {
    let config = StreamableHttpClientTransportConfig::with_uri(world.resource()).auth_header(access_token);
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await?;
    let result = client.call_tool(CallToolRequestParams::new(tool)).await;
    client.cancel().await?;
    let result = result?;
    ensure!(result.is_error != Some(true), "{tool} failed: {result:?}");
    let [block] = result.content.as_slice() else {
        bail!("expected one content block, got {:?}", result.content);
    };
    Ok(block.as_text().context("not text")?.text.clone())
}

/// POSTs a JSON-RPC message to the resource server with plain HTTP.
async fn raw_post(world: &OAuthWorld, bearer: Option<&str>, message: &Value) -> anyhow::Result<reqwest::Response> {
    let mut request = reqwest::Client::new()
        .post(world.resource())
        .header("accept", "application/json, text/event-stream")
        .json(message);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?)
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn count(stats: &Value, path: &[&str]) -> u64 {
    path.iter().fold(stats, |v, key| &v[*key]).as_u64().unwrap_or(0)
}

#[tokio::test]
async fn code_flow_refresh_rotation_and_reuse_detection() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let ep = endpoints(&world).await?;
    let (auth, first) = log_in(&world, &ep, "alice", None).await?;
    assert_eq!(first.scope, "mcp", "the default scope");
    assert_eq!(call_tool(&world, &first.access, "whoami").await?, "alice");

    let as_stats = world.stats().await;
    assert_eq!(count(&as_stats, &["code_exchanges"]), 1, "{as_stats}");
    assert_eq!(count(&as_stats, &["registrations"]), 1, "{as_stats}");

    let (status, body) = refresh(&ep, &auth, &first.refresh).await?;
    let second = tokens(status, &body)?;
    assert_ne!(second.refresh, first.refresh, "the refresh token rotates");
    assert_eq!(call_tool(&world, &second.access, "whoami").await?, "alice", "refresh keeps the audience");
    assert_eq!(count(&world.stats().await, &["refreshes"]), 1);

    // The rotated token again: reuse detection revokes the grant...
    let (status, body) = refresh(&ep, &auth, &first.refresh).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let as_stats = world.stats().await;
    assert!(count(&as_stats, &["reuse_detected"]) >= 1, "{as_stats}");
    // ...so the newest refresh token is dead too, and so is its access token.
    let (status, body) = refresh(&ep, &auth, &second.refresh).await?;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    let as_stats = world.stats().await;
    assert_eq!(count(&as_stats, &["refresh_errors", "invalid_grant"]), 2, "{as_stats}");
    assert_eq!(count(&as_stats, &["refreshes"]), 1, "{as_stats}");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let response = raw_post(&world, Some(&second.access), &initialize).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    world.reset_stats().await;
    assert_eq!(count(&world.stats().await, &["refreshes"]), 0);
    assert_eq!(count(&world.rs_stats().await, &["requests"]), 0);
    Ok(())
}

#[tokio::test]
async fn revoke_ends_every_grant_of_the_account() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let ep = endpoints(&world).await?;
    let (auth_a, bob_a) = log_in(&world, &ep, "bob", None).await?;
    let (auth_b, bob_b) = log_in(&world, &ep, "bob", None).await?;
    let (auth_c, carol) = log_in(&world, &ep, "carol", None).await?;
    assert_eq!(call_tool(&world, &bob_a.access, "whoami").await?, "bob");

    assert_eq!(world.revoke("bob").await, 2);
    assert_eq!(world.revoke("bob").await, 0, "nothing left to revoke");
    for (auth, tokens) in [(&auth_a, &bob_a), (&auth_b, &bob_b)] {
        let (status, body) = refresh(&ep, auth, &tokens.refresh).await?;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    }
    assert!(call_tool(&world, &bob_a.access, "whoami").await.is_err(), "revoked access token still accepted");

    // Carol is untouched.
    let (status, body) = refresh(&ep, &auth_c, &carol.refresh).await?;
    let carol = tokens(status, &body)?;
    assert_eq!(call_tool(&world, &carol.access, "whoami").await?, "carol");
    let rs = world.rs_stats().await;
    assert!(count(&rs, &["by_sub", "carol"]) >= 1 && count(&rs, &["unauthorized"]) >= 1, "{rs}");
    Ok(())
}

#[tokio::test]
async fn unauthenticated_request_gets_401_with_resource_metadata() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let response = raw_post(&world, None, &message).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let header = challenge(&response);
    assert!(header.starts_with("Bearer "), "{header}");
    let metadata_url = header
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("no resource_metadata in {header}"))?;
    let metadata: Value = reqwest::get(metadata_url).await?.error_for_status()?.json().await?;
    assert_eq!(metadata["resource"], world.resource(), "{metadata}");
    assert_eq!(metadata["authorization_servers"], json!([world.issuer()]), "{metadata}");

    let response = raw_post(&world, Some("not-a-jwt"), &message).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains("error=\"invalid_token\""));
    let rs = world.rs_stats().await;
    assert_eq!((count(&rs, &["requests"]), count(&rs, &["unauthorized"])), (2, 2), "{rs}");
    Ok(())
}

#[tokio::test]
async fn admin_tool_needs_the_admin_scope() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let ep = endpoints(&world).await?;
    let (_, plain) = log_in(&world, &ep, "dave", Some("mcp")).await?;
    let call_admin =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "admin", "arguments": {}}});
    let response = raw_post(&world, Some(&plain.access), &call_admin).await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let header = challenge(&response);
    assert!(header.contains("error=\"insufficient_scope\""), "{header}");
    assert!(header.contains("scope=\"mcp mcp:admin\""), "{header}");
    assert!(header.contains("resource_metadata=\""), "{header}");
    assert_eq!(call_tool(&world, &plain.access, "whoami").await?, "dave", "other tools still work");

    let (_, admin) = log_in(&world, &ep, "dave", Some("mcp mcp:admin")).await?;
    assert_eq!(admin.scope, "mcp mcp:admin");
    assert_eq!(call_tool(&world, &admin.access, "admin").await?, "admin ok for dave");
    assert_eq!(count(&world.rs_stats().await, &["forbidden"]), 1);
    Ok(())
}

#[tokio::test]
async fn browser_login_lands_on_the_redirect_uri() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let ep = endpoints(&world).await?;
    let auth = authorize(&world, &ep, None).await?;
    let report = world.login_via_browser(&auth.url, "erin").await?;
    let final_url = report["final_url"].as_str().with_context(|| format!("no final_url in {report}"))?;
    let code = code_from(&world, &auth, final_url)?;
    assert!(!code.is_empty());
    // Nothing listens at the redirect_uri.
    assert!(report["status"].is_null(), "{report}");
    // The code is good: it exchanges for erin's tokens.
    let (status, body) = token_request(
        &ep,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &auth.redirect_uri),
            ("code_verifier", &auth.verifier),
            ("client_id", &auth.client_id),
        ],
    )
    .await?;
    let tokens = tokens(status, &body)?;
    assert_eq!(call_tool(&world, &tokens.access, "whoami").await?, "erin");
    Ok(())
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_kill_the_grant() -> anyhow::Result<()> {
    let world = OAuthWorld::start().await?;
    let ep = endpoints(&world).await?;
    let (auth, first) = log_in(&world, &ep, "frank", None).await?;
    let (a, b) = tokio::join!(refresh(&ep, &auth, &first.refresh), refresh(&ep, &auth, &first.refresh));
    let mut statuses = [a?.0, b?.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    let as_stats = world.stats().await;
    assert_eq!((count(&as_stats, &["refreshes"]), count(&as_stats, &["reuse_detected"])), (1, 1), "{as_stats}");
    Ok(())
}
