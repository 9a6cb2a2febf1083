//! MCP connections with a user's credentials, through rmcp: streamable HTTP with a bearer
//! token or secret headers, or a stdio child with secret env vars and an otherwise clean
//! environment. Implements the supervision tree's [`ServerHandle`] and [`Connection`].
//!
//! Errors are classified into the stable kinds without copying upstream text into messages,
//! except a server's own JSON-RPC error message, which is scrubbed of the user's secrets first
//! (a server may echo what it was sent).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::ClientServiceExt as _;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use warden_actors::{Connection, ServerHandle};

use crate::config::PolicyConfig;
use crate::error::{Error, ErrorKind};
use crate::model::{ServerAuth, ServerConfig, Transport};
use crate::oauth::{OAuthServer, RefreshOrigin};
use crate::policy;
use crate::secret::Secret;

/// What every connection needs besides the user's config.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Deadline for connecting and initializing.
    pub connect_timeout: Duration,
    /// Egress and execution policy.
    pub policy: PolicyConfig,
    /// Variables of the daemon's own environment passed to stdio children (e.g. `PATH`).
    pub stdio_inherit_env: Vec<String>,
    /// OAuth settings and counters.
    pub oauth: Arc<crate::oauth::OAuth>,
    /// How connections start (`sessions.lifecycle`).
    pub lifecycle: rmcp::service::ClientLifecycleMode,
    /// Most requests in flight on one HTTP connection (`sessions.max_concurrent_requests`).
    pub max_concurrent_requests: usize,
}

/// The rmcp lifecycle for a `sessions.lifecycle` setting (validated by the config).
pub fn lifecycle(setting: &str) -> rmcp::service::ClientLifecycleMode {
    use rmcp::model::ProtocolVersion;
    use rmcp::service::ClientLifecycleMode;
    let preferred_versions = ProtocolVersion::KNOWN_VERSIONS.iter().rev().cloned().collect::<Vec<_>>();
    match setting {
        "initialize" => ClientLifecycleMode::Initialize,
        "discover" => ClientLifecycleMode::Discover { preferred_versions },
        _ => ClientLifecycleMode::Auto { preferred_versions, legacy_version: None },
    }
}

/// One configured server of one user, with the user's decrypted credentials.
pub struct McpServer {
    user: String,
    config: ServerConfig,
    settings: Arc<ConnectSettings>,
    /// For an OAuth server: its OAuth state (the rmcp authorization manager), built on first use.
    oauth: tokio::sync::OnceCell<Arc<OAuthServer>>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `config` redacts its secrets in Debug; listed anyway only by name and kind.
        f.debug_struct("McpServer")
            .field("user", &self.user)
            .field("server", &self.config.name)
            .field("auth", &self.config.auth.auth_type())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server of `user` configured by `config`.
    pub fn new(user: String, config: ServerConfig, settings: Arc<ConnectSettings>) -> Self {
        Self { user, config, settings, oauth: tokio::sync::OnceCell::new() }
    }

    fn redactor(&self) -> Redactor {
        let mut secrets = Vec::new();
        match &self.config.auth {
            ServerAuth::None => {}
            ServerAuth::Bearer { token } => secrets.push(token.clone()),
            ServerAuth::Headers { headers: m } | ServerAuth::Env { env: m } => {
                secrets.extend(m.values().cloned());
            }
            ServerAuth::Oauth(o) => secrets.extend(o.client_secret.clone()),
        }
        Redactor { secrets }
    }

    /// An HTTP client for this server: the policy-checked addresses pinned, same-origin
    /// redirects only (credentials never follow a redirect to another origin).
    async fn http_client(&self, url: &str) -> Result<reqwest::Client, Error> {
        let (user, server) = (self.user.as_str(), self.config.name.as_str());
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid("transport.url", e))?;
        let (host, addrs) = policy::resolve_allowed(&self.settings.policy, &parsed, user, server).await?;
        let origin = parsed.origin();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() < 5 && attempt.url().origin() == origin {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .connect_timeout(self.settings.connect_timeout)
            // The addresses the policy checked are the ones used: no second DNS answer.
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|_| Error::internal(format!("building the HTTP client for server {server} of user {user} failed")))
    }

    /// Starts a fresh OAuth authorization for this (OAuth) server.
    pub(crate) async fn begin_authorization(&self) -> Result<crate::warden::AuthorizationStart, Error> {
        self.oauth_server().await?.begin(None, false).await
    }

    /// The OAuth state of this (OAuth) server, built on first use.
    async fn oauth_server(&self) -> Result<Arc<OAuthServer>, Error> {
        let (Transport::Http { url }, ServerAuth::Oauth(settings)) = (&self.config.transport, &self.config.auth) else {
            return Err(Error::invalid("auth", "not an OAuth server"));
        };
        self.oauth
            .get_or_try_init(|| async {
                let http = self.http_client(url).await?;
                Ok(Arc::new(OAuthServer::new(
                    self.settings.oauth.clone(),
                    &self.user,
                    &self.config.name,
                    url,
                    settings.clone(),
                    http,
                )))
            })
            .await
            .cloned()
    }

    async fn connect_http(
        &self,
        url: &str,
    ) -> Result<(RunningService<RoleClient, ()>, Option<Arc<OAuthServer>>), Error> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
        // rmcp's default is 16: a user's calls beyond that would queue inside the transport.
        config.max_concurrent_requests = self.settings.max_concurrent_requests;
        match &self.config.auth {
            ServerAuth::Oauth(_) => {
                let oauth = self.oauth_server().await?;
                let client = oauth.auth_client().await?;
                let transport = StreamableHttpClientTransport::with_client(client, config);
                return match self.initialize(().serve_with_lifecycle(transport, self.settings.lifecycle.clone())).await
                {
                    Ok(running) => Ok((running, Some(oauth))),
                    Err(Failure::Auth(failure)) => Err(failure.resolve(&oauth).await),
                    Err(Failure::Other(e)) => Err(e),
                };
            }
            ServerAuth::None => {}
            // rmcp keeps the header value in a String for the transport's life; it is dropped
            // with the connection (best effort: rmcp does not zeroize).
            ServerAuth::Bearer { token } => config = config.auth_header(token.expose_secret().to_owned()),
            ServerAuth::Headers { headers } => config = config.custom_headers(header_map(headers)?),
            ServerAuth::Env { .. } => return Err(Error::invalid("auth", "env auth applies only to stdio servers")),
        }
        let client = self.http_client(url).await?;
        let transport = StreamableHttpClientTransport::with_client(client, config);
        let running = self
            .initialize(().serve_with_lifecycle(transport, self.settings.lifecycle.clone()))
            .await
            .map_err(|f| f.static_credentials(&self.user, &self.config.name))?;
        Ok((running, None))
    }

    async fn connect_stdio(&self, command: &str, args: &[String]) -> Result<RunningService<RoleClient, ()>, Error> {
        let (user, server) = (self.user.as_str(), self.config.name.as_str());
        policy::check_command(&self.settings.policy, command)?;
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(args).env_clear();
        for name in &self.settings.stdio_inherit_env {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        if let ServerAuth::Env { env } = &self.config.auth {
            for (name, value) in env {
                cmd.env(name, value.expose_secret());
            }
        }
        let mut wrapped = process_wrap::tokio::CommandWrap::from(cmd);
        // Its own process group, so killing it reaches grandchildren too.
        wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
        let (child, _) = TokioChildProcess::builder(wrapped).stderr(Stdio::null()).spawn().map_err(|e| {
            Error::unreachable(user, server, &format!("its command could not be started ({})", e.kind()))
        })?;
        self.initialize(().serve_with_lifecycle(child, self.settings.lifecycle.clone()))
            .await
            .map_err(|f| f.static_credentials(user, server))
    }

    async fn initialize<F>(&self, serve: F) -> Result<RunningService<RoleClient, ()>, Failure>
    where
        F: Future<Output = Result<RunningService<RoleClient, ()>, rmcp::service::ClientInitializeError>>,
    {
        let (user, server) = (self.user.as_str(), self.config.name.as_str());
        match tokio::time::timeout(self.settings.connect_timeout, serve).await {
            Ok(Ok(running)) => Ok(running),
            Ok(Err(e)) => Err(classify_init(user, server, &e)),
            Err(_) => Err(Failure::Other(Error::new(
                ErrorKind::Timeout,
                format!(
                    "connecting to server {server} of user {user} took longer than {} ms",
                    self.settings.connect_timeout.as_millis()
                ),
            ))),
        }
    }
}

#[async_trait]
impl ServerHandle for McpServer {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn connect(&self) -> Result<Arc<dyn Connection>, Error> {
        let (running, oauth) = match &self.config.transport {
            Transport::Http { url } => self.connect_http(url).await?,
            Transport::Stdio { command, args } => (self.connect_stdio(command, args).await?, None),
        };
        Ok(Arc::new(McpConnection {
            user: self.user.clone(),
            server: self.config.name.clone(),
            running,
            redactor: self.redactor(),
            oauth,
        }))
    }

    async fn refresh(&self) -> Result<Option<i64>, Error> {
        match &self.config.auth {
            ServerAuth::Oauth(_) => self.oauth_server().await?.refresh_detached(RefreshOrigin::Background).await,
            _ => Ok(None),
        }
    }
}

fn header_map(
    headers: &std::collections::BTreeMap<String, Secret>,
) -> Result<HashMap<http::HeaderName, http::HeaderValue>, Error> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::invalid("auth.headers", "invalid header name"))?;
            let mut value = http::HeaderValue::from_str(value.expose_secret())
                .map_err(|_| Error::invalid("auth.headers", "invalid header value"))?;
            // Sensitive values print as "Sensitive" in Debug and are not HPACK-indexed.
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

/// Removes a user's secrets from text that came from upstream.
struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            // Short values would garble ordinary text and are not worth hiding by substring.
            if secret.len() >= 4 && out.contains(secret.expose_secret()) {
                out = out.replace(secret.expose_secret(), "[REDACTED]");
            }
        }
        out
    }
}

/// A live rmcp client of one (user, server).
struct McpConnection {
    user: String,
    server: String,
    running: RunningService<RoleClient, ()>,
    redactor: Redactor,
    /// For an OAuth server, its OAuth state (to turn a 401/403 into an authorization URL).
    oauth: Option<Arc<OAuthServer>>,
}

#[async_trait]
impl Connection for McpConnection {
    async fn list_tools(&self) -> Result<Vec<Tool>, Error> {
        self.refresh_if_due().await?;
        match self.running.list_all_tools().await {
            Ok(tools) => Ok(tools),
            Err(e) => Err(self.resolve(self.classify(&e)).await),
        }
    }

    async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        _timeout: Duration,
    ) -> Result<CallToolResult, Error> {
        self.refresh_if_due().await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        match self.running.call_tool(params).await {
            Ok(result) => Ok(result),
            Err(e) => Err(self.resolve(self.classify(&e)).await),
        }
    }

    fn is_closed(&self) -> bool {
        self.running.peer().is_transport_closed()
    }
}

impl McpConnection {
    /// For OAuth: a token that is due is refreshed before the call, in a task the call's
    /// cancellation cannot stop (see `OAuthServer::refresh_detached`), so rmcp never has to
    /// refresh inside the request itself, where a timeout or a killed session would drop it.
    async fn refresh_if_due(&self) -> Result<(), Error> {
        match &self.oauth {
            Some(oauth) if oauth.due() => oauth.refresh_detached(RefreshOrigin::Call).await.map(drop),
            _ => Ok(()),
        }
    }

    fn classify(&self, e: &ServiceError) -> Failure {
        let (user, server) = (self.user.as_str(), self.server.as_str());
        Failure::Other(match e {
            ServiceError::McpError(data) => Error::new(
                ErrorKind::ToolError,
                format!(
                    "server {server} of user {user} answered with error {}: {}",
                    data.code.0,
                    self.redactor.redact(&data.message)
                ),
            ),
            ServiceError::Timeout { .. } => {
                Error::new(ErrorKind::Timeout, format!("server {server} of user {user} did not answer in time"))
            }
            ServiceError::TransportSend(inner) => return classify_transport(user, server, inner),
            ServiceError::TransportClosed => Error::unreachable(user, server, "the connection closed"),
            _ => Error::unreachable(user, server, "unexpected response"),
        })
    }

    async fn resolve(&self, failure: Failure) -> Error {
        match (failure, &self.oauth) {
            (Failure::Auth(auth), Some(oauth)) => auth.resolve(oauth).await,
            (failure, _) => failure.static_credentials(&self.user, &self.server),
        }
    }
}

/// Why an MCP exchange failed: the server refused the request's authorization, or anything
/// else (already classified).
enum Failure {
    Auth(AuthFailure),
    Other(Error),
}

/// A 401 or 403 from the server, with its challenge.
struct AuthFailure {
    status: u16,
    challenge: Option<String>,
    required_scope: Option<String>,
}

impl Failure {
    /// For static credentials a refusal means they are wrong: `credentials_rejected`.
    fn static_credentials(self, user: &str, server: &str) -> Error {
        match self {
            Failure::Auth(auth) => Error::new(
                ErrorKind::CredentialsRejected,
                format!("server {server} of user {user} rejected its credentials (HTTP {})", auth.status),
            ),
            Failure::Other(e) => e,
        }
    }
}

impl AuthFailure {
    /// For OAuth a refusal means: authorize (again), or authorize a larger scope.
    async fn resolve(self, oauth: &OAuthServer) -> Error {
        match (self.status, self.challenge) {
            (403, Some(challenge)) => oauth.step_up(self.required_scope.as_deref(), &challenge).await,
            (_, challenge) => oauth.unauthorized(challenge.as_deref()).await,
        }
    }
}

fn classify_init(user: &str, server: &str, e: &rmcp::service::ClientInitializeError) -> Failure {
    use rmcp::service::ClientInitializeError as E;
    Failure::Other(match e {
        E::TransportError { error, .. } => return classify_transport(user, server, error),
        E::ConnectionClosed(_) => Error::unreachable(user, server, "the connection closed during initialization"),
        E::JsonRpcError(_) => Error::unreachable(user, server, "it refused to initialize"),
        _ => Error::unreachable(user, server, "initialization failed"),
    })
}

/// Classifies a transport error by walking its source chain.
fn classify_transport(user: &str, server: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let refused = |status, challenge: Option<&String>, required_scope: Option<&String>| {
        Failure::Auth(AuthFailure { status, challenge: challenge.cloned(), required_scope: required_scope.cloned() })
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(http) = err.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            return match http {
                StreamableHttpError::AuthRequired(a) => refused(401, Some(&a.www_authenticate_header), None),
                StreamableHttpError::InsufficientScope(s) => {
                    refused(403, Some(&s.www_authenticate_header), s.required_scope.as_ref())
                }
                StreamableHttpError::UnexpectedServerResponse(text) if text.starts_with("HTTP 401") => {
                    refused(401, None, None)
                }
                StreamableHttpError::UnexpectedServerResponse(text) if text.starts_with("HTTP 403") => {
                    refused(403, None, None)
                }
                StreamableHttpError::HttpStatus(status) => {
                    Failure::Other(Error::unreachable(user, server, &format!("HTTP {}", status.status)))
                }
                StreamableHttpError::Client(client) => {
                    Failure::Other(Error::unreachable(user, server, reqwest_category(client)))
                }
                StreamableHttpError::UnexpectedServerResponse(_) | StreamableHttpError::UnexpectedContentType(_) => {
                    Failure::Other(Error::unreachable(user, server, "it answered with something other than MCP"))
                }
                _ => Failure::Other(Error::unreachable(user, server, "transport error")),
            };
        }
        if let Some(client) = err.downcast_ref::<reqwest::Error>() {
            return Failure::Other(Error::unreachable(user, server, reqwest_category(client)));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Failure::Other(Error::unreachable(user, server, &format!("I/O error ({})", io.kind())));
        }
        current = err.source();
    }
    Failure::Other(Error::unreachable(user, server, "transport error"))
}

fn reqwest_category(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "the request timed out"
    } else if e.is_redirect() {
        "it redirected to another origin"
    } else if e.is_status() {
        "HTTP error status"
    } else {
        "the request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_scrubs_secrets() {
        let r = Redactor { secrets: vec![Secret::from("tok-abcdef"), Secret::from("ab")] };
        assert_eq!(r.redact("bad token tok-abcdef here"), "bad token [REDACTED] here");
        assert_eq!(r.redact("ab cd"), "ab cd");
    }
}
