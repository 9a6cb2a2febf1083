//! The HTTP server seen through a real rmcp client: identities per credential, 401s, the tools,
//! stalls and shutdown.

use std::{collections::HashMap, error::Error, time::Duration};

use anyhow::{Context, bail, ensure};
use axum::http::{HeaderName, HeaderValue};
use rmcp::model::CallToolResult;
use rmcp::{
    RoleClient, ServiceExt,
    model::CallToolRequestParams,
    serve_client,
    service::{ClientInitializeError, RunningService},
    transport::{
        StreamableHttpClientTransport,
        streamable_http_client::{AuthRequiredError, StreamableHttpClientTransportConfig},
    },
};
use serde_json::json;
use warden_testkit::{
    CallRecord, CredentialCheck, FAILURE_TEXT, HttpServerConfig, Identities, RunningServer, spawn_http_server,
};

type Client = RunningService<RoleClient, ()>;

async fn bearer_server() -> anyhow::Result<RunningServer> {
    let ids = Identities::new().with("tok-a", "alice").with("tok-b", "bob");
    Ok(spawn_http_server(HttpServerConfig::new(CredentialCheck::bearer(ids))).await?)
}

async fn connect(server: &RunningServer, token: Option<&str>) -> Result<Client, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(server.url());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    ().serve(StreamableHttpClientTransport::from_config(config)).await
}

async fn call(client: &Client, tool: &'static str, args: serde_json::Value) -> anyhow::Result<CallToolResult> {
    let mut params = CallToolRequestParams::new(tool);
    if let serde_json::Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    Ok(client.call_tool(params).await?)
}

fn text(result: &CallToolResult) -> anyhow::Result<&str> {
    let [block] = result.content.as_slice() else {
        bail!("expected one content block, got {:?}", result.content);
    };
    Ok(&block.as_text().context("not text")?.text)
}

async fn whoami(client: &Client) -> anyhow::Result<String> {
    let result = call(client, "whoami", json!({})).await?;
    ensure!(result.is_error != Some(true), "whoami failed: {result:?}");
    Ok(text(&result)?.to_owned())
}

/// The `WWW-Authenticate` challenge of a 401, found anywhere in the error's source chain.
fn auth_challenge(error: &ClientInitializeError) -> Option<String> {
    let ClientInitializeError::TransportError { error, .. } = error else {
        return None;
    };
    let mut current: Option<&(dyn Error + 'static)> = Some(error.error.as_ref());
    while let Some(e) = current {
        if let Some(auth) = e.downcast_ref::<AuthRequiredError>() {
            return Some(auth.www_authenticate_header.clone());
        }
        current = e.source();
    }
    None
}

#[tokio::test]
async fn each_bearer_client_sees_its_own_identity() -> anyhow::Result<()> {
    let server = bearer_server().await?;
    let alice = connect(&server, Some("tok-a")).await?;
    let bob = connect(&server, Some("tok-b")).await?;

    // Interleave the calls so a per-session (or per-server) cache would show.
    for _ in 0..3 {
        assert_eq!(whoami(&alice).await?, "alice");
        assert_eq!(whoami(&bob).await?, "bob");
    }
    let seen: Vec<_> = server.calls().into_iter().map(|c| c.identity).collect();
    assert_eq!(seen.len(), 6);
    assert!(seen.chunks(2).all(|pair| pair == [Some("alice".to_owned()), Some("bob".to_owned())]));
    assert_eq!(server.rejected(), 0);

    alice.cancel().await?;
    bob.cancel().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401_before_mcp() -> anyhow::Result<()> {
    let server = bearer_server().await?;

    let error = connect(&server, Some("tok-wrong")).await.err().context("a wrong token connected")?;
    assert_eq!(auth_challenge(&error).as_deref(), Some("Bearer"), "{error}");

    let error = connect(&server, None).await.err().context("no token connected")?;
    assert_eq!(auth_challenge(&error).as_deref(), Some("Bearer"), "{error}");

    assert_eq!(server.rejected(), 2);
    assert!(server.requests() >= 2);
    assert!(server.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn identity_is_derived_per_request_not_per_session() -> anyhow::Result<()> {
    let server = bearer_server().await?;
    let client = connect(&server, Some("tok-a")).await?;
    assert_eq!(whoami(&client).await?, "alice");

    // Same session, same token, new meaning: the next request must see it.
    server.set_credentials(CredentialCheck::bearer(Identities::new().with("tok-a", "carol")));
    assert_eq!(whoami(&client).await?, "carol");

    // Revoked: the session survives on the server, but the request is refused.
    server.set_credentials(CredentialCheck::bearer(Identities::new()));
    let error = call(&client, "whoami", json!({})).await.err().context("a revoked token was served")?;
    let service_error = error.downcast_ref::<rmcp::ServiceError>().context("not a ServiceError")?;
    assert!(service_error.is_authorization_required(), "{service_error}");
    assert_eq!(service_error.auth_challenge(), Some("Bearer"));
    Ok(())
}

#[tokio::test]
async fn header_check_reads_the_named_header() -> anyhow::Result<()> {
    let ids = Identities::new().with("key-1", "dave");
    let server = spawn_http_server(HttpServerConfig::new(CredentialCheck::header("X-API-Key", ids))).await?;
    let headers = HashMap::from([(HeaderName::from_static("x-api-key"), HeaderValue::from_static("key-1"))]);
    let config = StreamableHttpClientTransportConfig::with_uri(server.url()).custom_headers(headers);
    let client = serve_client((), StreamableHttpClientTransport::from_config(config)).await?;
    assert_eq!(whoami(&client).await?, "dave");

    // A bearer token is not the header the server checks.
    let error = connect(&server, Some("key-1")).await.err().context("a bearer token passed a header check")?;
    assert!(auth_challenge(&error).is_some(), "{error}");
    Ok(())
}

#[tokio::test]
async fn no_check_is_anonymous_and_stateless_mode_works() -> anyhow::Result<()> {
    let server = spawn_http_server(HttpServerConfig::default().stateless()).await?;
    let client = connect(&server, None).await?;
    assert_eq!(whoami(&client).await?, "anonymous");
    assert_eq!(server.calls(), [CallRecord { tool: "whoami".to_owned(), identity: Some("anonymous".to_owned()) }]);
    Ok(())
}

#[tokio::test]
async fn tools_echo_sleep_fail_env() -> anyhow::Result<()> {
    let server = bearer_server().await?;
    let client = connect(&server, Some("tok-b")).await?;

    let mut names: Vec<_> = client.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["echo", "env", "fail", "sleep", "whoami"]);

    assert_eq!(text(&call(&client, "echo", json!({"text": "héllo"})).await?)?, "héllo");
    assert_eq!(text(&call(&client, "sleep", json!({"ms": 10})).await?)?, "slept");

    let failed = call(&client, "fail", json!({})).await?;
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text(&failed)?, FAILURE_TEXT);

    let unset = call(&client, "env", json!({"name": "WARDEN_TESTKIT_SURELY_UNSET"})).await?;
    assert_eq!(text(&unset)?, "<unset>");

    // rmcp 3.11 answers undeserializable arguments with a tool error result, not a JSON-RPC
    // error; an unknown tool is still a JSON-RPC error.
    let bad_args = call(&client, "echo", json!({"wrong": 1})).await?;
    assert_eq!(bad_args.is_error, Some(true), "{bad_args:?}");
    assert!(call(&client, "no-such-tool", json!({})).await.is_err());
    assert_eq!(whoami(&client).await?, "bob");
    Ok(())
}

#[tokio::test]
async fn stall_makes_calls_time_out() -> anyhow::Result<()> {
    let server = bearer_server().await?;
    let client = connect(&server, Some("tok-a")).await?;

    server.set_stall(Some(Duration::from_secs(30)));
    let stalled = tokio::time::timeout(Duration::from_millis(200), whoami(&client)).await;
    assert!(stalled.is_err(), "the stalled call answered: {stalled:?}");

    server.set_stall(None);
    assert_eq!(whoami(&client).await?, "alice");
    Ok(())
}

#[tokio::test]
async fn calls_fail_after_shutdown() -> anyhow::Result<()> {
    let server = bearer_server().await?;
    let client = connect(&server, Some("tok-a")).await?;
    assert_eq!(whoami(&client).await?, "alice");
    let url = server.url();

    server.shutdown().await;
    let after = tokio::time::timeout(Duration::from_secs(10), whoami(&client)).await;
    assert!(matches!(after, Ok(Err(_))), "expected a prompt error after shutdown of {url}, got {after:?}");
    Ok(())
}
