//! The control methods, each mapped onto [`crate::WardenHandle`], and the capability checks
//! of connections bound to one user.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Context;
use super::capability::DEFAULT_TTL_S;
use crate::ErrorKind;
use crate::model::{AuthType, ServerConfig};
use crate::protocol::{
    self, AuthParams, CallParams, IssueParams, NoParams, PutParams, RemoveParams, Request, RpcError, UserParams,
    UserServerParams, codes,
};
use crate::store::{AuditEvent, now_unix};

/// The user a connection is bound to by its capability.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    user: String,
    expires_at: i64,
}

fn params<T: DeserializeOwned>(request: &Request) -> Result<T, RpcError> {
    serde_json::from_value(request.params.clone()).map_err(|e| RpcError::invalid_params(&request.method, &e))
}

/// Handles `auth {token}`: verifies the capability and returns the binding and the reply.
pub(super) fn authenticate(context: &Context, request: &Request) -> Result<(Binding, Value), RpcError> {
    let p: AuthParams = params(request)?;
    let (user, expires_at) = context.capabilities.verify(&p.token, now_unix())?;
    let reply = json!({ "user": user, "expires_at": expires_at });
    Ok((Binding { user, expires_at }, reply))
}

/// Refuses what a bound connection may not do: anything naming another user, anything
/// naming no user (status, issuing capabilities), or anything after the capability expired.
/// Refusals are audited under the bound user.
async fn check_binding(context: &Context, binding: &Binding, request: &Request) -> Result<(), RpcError> {
    let forbidden = |why: String| RpcError::new(codes::SERVER_ERROR, ErrorKind::Forbidden, why);
    if binding.expires_at <= now_unix() {
        return Err(forbidden("this connection's capability has expired".into()));
    }
    let refusal = match (request.method.as_str(), protocol::named_user(&request.params)) {
        ("status" | "capabilities.issue", _) => {
            Some(format!("{} is not available to a connection bound to one user", request.method))
        }
        // oauth.complete names no user: the pending authorization it completes does, and the
        // OAuth layer checks it against the binding.
        ("oauth.complete", _) => None,
        (_, Some(user)) if user != binding.user => {
            Some(format!("this connection is bound to user {}; the request names another user", binding.user))
        }
        _ => None,
    };
    if let Some(why) = refusal {
        let detail = format!(
            "method={} named_user={}",
            request.method,
            protocol::named_user(&request.params).is_some_and(|u| u != binding.user)
        );
        if let Err(e) = context.handle.store().audit(&binding.user, None, AuditEvent::Forbidden, &detail).await {
            tracing::warn!(error = %e, "auditing a refused request failed");
        }
        tracing::info!(user = %binding.user, method = %request.method, "refused a request outside the connection's capability");
        return Err(forbidden(why));
    }
    Ok(())
}

/// Runs one request.
pub(crate) async fn dispatch(
    context: &Context,
    binding: Option<&Binding>,
    request: &Request,
) -> Result<Value, RpcError> {
    if let Some(binding) = binding {
        check_binding(context, binding, request).await?;
    }
    let handle = &context.handle;
    tracing::debug!(method = %request.method, user = protocol::named_user(&request.params).unwrap_or(""), "control request");
    match request.method.as_str() {
        "servers.put" => {
            let p: PutParams = params(request)?;
            let name = p.name.clone();
            let version =
                handle.put_server(&p.user, ServerConfig { name: p.name, transport: p.transport, auth: p.auth }).await?;
            Ok(json!({ "name": name, "version": version }))
        }
        "servers.list" => servers_list(context, request).await,
        "servers.remove" => {
            let p: RemoveParams = params(request)?;
            Ok(json!({ "removed": handle.remove_server(&p.user, &p.name).await? }))
        }
        "tools.list" => tools_list(context, request).await,
        "tools.call" => {
            let p: CallParams = params(request)?;
            let timeout = p.timeout_ms.map(Duration::from_millis);
            let result = handle.call_tool(&p.user, &p.server, &p.tool, p.arguments, timeout).await?;
            serde_json::to_value(&result)
                .map_err(|_| RpcError::new(codes::SERVER_ERROR, ErrorKind::Internal, "encoding the tool result failed"))
        }
        "oauth.begin" => {
            let p: UserServerParams = params(request)?;
            let start = handle.begin_authorization(&p.user, &p.server).await?;
            Ok(json!({ "authorization_url": start.authorization_url, "expires_at": start.expires_at }))
        }
        "oauth.complete" => {
            let p: protocol::CompleteParams = params(request)?;
            let callback = match (p.callback_url, p.state, p.code) {
                (Some(url), None, None) => crate::AuthorizationCallback::Url(url),
                (None, Some(state), Some(code)) => crate::AuthorizationCallback::Parts { state, code, iss: p.iss },
                _ => {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMS,
                        ErrorKind::InvalidRequest,
                        "oauth.complete takes either callback_url or state and code",
                    ));
                }
            };
            let expected = binding.map(|b| b.user.as_str());
            let (user, server) = handle.complete_authorization_for(callback, expected).await?;
            Ok(json!({ "user": user, "server": server }))
        }
        "sessions.stop" => {
            let p: UserParams = params(request)?;
            let stopped = handle.stop_session(&p.user).await?;
            if stopped {
                let _ = handle.store().audit(&p.user, None, AuditEvent::SessionStopped, "").await;
            }
            Ok(json!({ "stopped": stopped }))
        }
        "status" => {
            let _: NoParams = params(request)?;
            let s = handle.status().await?;
            Ok(json!({
                "protocol_version": protocol::PROTOCOL_VERSION,
                "sessions": s.sessions,
                "connections": s.connections,
                "in_flight": s.in_flight,
                "failed_sessions": s.failed_sessions,
                "grants": s.grants,
            }))
        }
        "capabilities.issue" => {
            let p: IssueParams = params(request)?;
            crate::model::UserId::parse(&p.user).map_err(crate::Error::from)?;
            let (token, expires_at) =
                context.capabilities.issue(&p.user, p.ttl_s.unwrap_or(DEFAULT_TTL_S), now_unix())?;
            // The token is the reply's purpose: this is where it leaves for its holder.
            Ok(json!({ "token": token.expose_secret(), "user": p.user, "expires_at": expires_at }))
        }
        "auth" => Err(RpcError::new(
            codes::INVALID_REQUEST,
            ErrorKind::InvalidRequest,
            "auth must be the first request on a connection",
        )),
        other => {
            let shown =
                if other.len() <= 64 && other.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_') {
                    other
                } else {
                    "(not shown)"
                };
            Err(RpcError::new(codes::METHOD_NOT_FOUND, ErrorKind::InvalidRequest, format!("unknown method {shown}")))
        }
    }
}

/// `servers.list`: configs without secrets, each with its status.
async fn servers_list(context: &Context, request: &Request) -> Result<Value, RpcError> {
    let handle = &context.handle;
    let p: UserParams = params(request)?;
    let servers = handle.list_servers(&p.user).await?;
    let grants = handle.store().grant_statuses(&p.user).await.map_err(crate::Error::from)?;
    let servers: Vec<Value> = servers
        .into_iter()
        .map(|s| {
            let status = match s.auth_type {
                AuthType::Oauth => grants.get(&s.name).map_or("authorization_required", |g| g.as_str()),
                _ => "configured",
            };
            json!({ "name": s.name, "transport": s.transport, "auth_type": s.auth_type, "status": status, "version": s.version })
        })
        .collect();
    Ok(json!({ "servers": servers }))
}

/// `tools.list`: every tool tagged with its server, and the servers that did not answer.
async fn tools_list(context: &Context, request: &Request) -> Result<Value, RpcError> {
    let handle = &context.handle;
    let p: UserParams = params(request)?;
    let list = handle.list_tools(&p.user).await?;
    let tools: Vec<Value> = list
        .tools
        .iter()
        .map(|t| json!({ "server": t.server, "name": t.tool.name, "description": t.tool.description, "input_schema": t.tool.input_schema }))
        .collect();
    let unavailable: Vec<Value> = list
        .unavailable
        .iter()
        .map(|u| RpcError::from(u.error.clone()).to_json())
        .zip(&list.unavailable)
        .map(|(mut e, u)| {
            e["server"] = Value::String(u.server.clone());
            e
        })
        .collect();
    Ok(json!({ "tools": tools, "unavailable": unavailable }))
}
