//! The streamable HTTP server: an axum app whose credential layer answers 401 before rmcp runs.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    identities::CredentialCheck,
    tools::{CallRecord, Shared, ToolServer},
};

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";

/// How long [`RunningServer::shutdown`] waits for open connections before it aborts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How [`spawn_http_server`] sets up its server.
#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    /// How each request's credential is checked (and so which identity `whoami` reports).
    pub credentials: CredentialCheck,
    /// Whether rmcp keeps a session per client (`Mcp-Session-Id`, rmcp's "legacy session mode")
    /// for protocol versions that have sessions. Default `true`. Either way the identity is
    /// derived from each request, never from the session.
    pub stateful: bool,
}

impl HttpServerConfig {
    /// A stateful server checking `credentials`.
    pub fn new(credentials: CredentialCheck) -> Self {
        Self { credentials, stateful: true }
    }

    /// The same server without rmcp sessions.
    #[must_use]
    pub fn stateless(mut self) -> Self {
        self.stateful = false;
        self
    }
}

impl Default for HttpServerConfig {
    /// A stateful server that accepts everyone as `anonymous`.
    fn default() -> Self {
        Self::new(CredentialCheck::None)
    }
}

/// A running HTTP MCP server. It shuts down when dropped, or gracefully with [`Self::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
    stateful: bool,
}

/// Starts the HTTP MCP server on `127.0.0.1` at an ephemeral port, serving [`MCP_PATH`].
///
/// Must be called inside a Tokio runtime; the server runs as a task of that runtime.
pub async fn spawn_http_server(cfg: HttpServerConfig) -> io::Result<RunningServer> {
    let shared = Arc::new(Shared::default());
    shared.set_check(cfg.credentials.clone());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (cancel, task) = serve(listener, Arc::clone(&shared), cfg.stateful);
    tracing::debug!(%addr, "testkit HTTP MCP server listening");
    Ok(RunningServer { addr, shared, cancel, task: Some(task), stateful: cfg.stateful })
}

/// Serves the MCP endpoint on `listener` until the returned token is cancelled.
fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stateful: bool,
) -> (CancellationToken, JoinHandle<io::Result<()>>) {
    let cancel = CancellationToken::new();
    let factory_shared = Arc::clone(&shared);
    let mcp = StreamableHttpService::new(
        move || Ok(ToolServer::http(Arc::clone(&factory_shared))),
        Arc::new(LocalSessionManager::default()),
        // The default allowed hosts (`localhost`, `127.0.0.1`, `::1`, any port) fit our bind.
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(stateful)
            .with_cancellation_token(cancel.child_token()),
    );
    let app = Router::new().route_service(MCP_PATH, mcp).layer(middleware::from_fn_with_state(shared, authenticate));
    let signal = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(signal).await });
    (cancel, task)
}

/// Counts the request, and answers 401 unless it carries a credential the check knows.
async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.count_request();
    if shared.identify(request.headers()).is_some() {
        return next.run(request).await;
    }
    shared.count_rejection();
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or unknown credential").into_response()
}

impl RunningServer {
    /// The MCP endpoint, e.g. `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// HTTP requests that reached the server, accepted or rejected.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// HTTP requests answered 401 because the credential was missing or unknown.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Every `tools/call` so far, in arrival order, with the identity of its request.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.calls()
    }

    /// Makes every later tool call sleep this long before it runs (`None`: no stall). A call
    /// the client cancels stops stalling at once.
    pub fn set_stall(&self, stall: Option<Duration>) {
        self.shared.set_stall(stall);
    }

    /// The credential check in force.
    pub fn credentials(&self) -> CredentialCheck {
        self.shared.check()
    }

    /// Replaces the credential check, e.g. to revoke or rotate a token. It applies to the next
    /// request, including requests on existing sessions.
    pub fn set_credentials(&self, credentials: CredentialCheck) {
        self.shared.set_check(credentials);
    }

    /// Drops every connection and MCP session at once and listens again on the same address
    /// (a server restart, as clients see it). Counters, credentials and the stall are kept.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // The old listener is closed once its task is gone; the port is free again.
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "rebinding the testkit server");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (cancel, task) = serve(listener, Arc::clone(&self.shared), self.stateful);
        self.cancel = cancel;
        self.task = Some(task);
        Ok(())
    }

    /// Stops accepting connections, ends the MCP sessions, and waits (up to a few seconds) for
    /// open connections to finish before aborting them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "testkit HTTP server failed"),
                Ok(Err(error)) => tracing::warn!(%error, "testkit HTTP server task failed"),
                Err(_) => abort.abort(),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Cancelling ends the rmcp sessions and tells axum's connection tasks to shut down;
        // aborting stops the accept loop at once. Both work outside a runtime too.
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
