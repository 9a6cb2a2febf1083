//! The MCP tools the testkit serves over HTTP and stdio, and the state they share with the test.
//!
//! Tools: `whoami`, `echo`, `sleep`, `fail`, `env`. Every call is recorded (tool name and the
//! identity of the credential it carried) and may be stalled first, so tests can prove which
//! credential each call used and provoke timeouts.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::http::request::Parts;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters},
    model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Extensions},
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::identities::CredentialCheck;

/// The text of the `fail` tool's error result.
pub const FAILURE_TEXT: &str = "requested failure";
/// What the `env` tool answers for a variable that is not set (or not valid UTF-8).
pub const UNSET_TEXT: &str = "<unset>";

/// One `tools/call` as the server saw it, before the tool ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The tool's name as the client sent it.
    pub tool: String,
    /// The identity of the credential on that very request; `None` if it had none the server
    /// knows (only possible if the credential check changed while the request was in flight).
    pub identity: Option<String>,
}

/// State shared by every session of one server and by the test that owns it.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The HTTP credential check; unused by the stdio server, whose identity is fixed.
    pub(crate) check: RwLock<CredentialCheck>,
    /// How long each tool call sleeps before it runs.
    pub(crate) stall: Mutex<Option<Duration>>,
    /// HTTP requests seen by the authentication layer, accepted or not.
    pub(crate) requests: AtomicU64,
    /// HTTP requests answered 401.
    pub(crate) rejected: AtomicU64,
    /// Every tool call, in arrival order.
    pub(crate) calls: Mutex<Vec<CallRecord>>,
}

// A poisoned lock only means a test thread panicked while holding it; the data (plain values)
// is still consistent, so every accessor below recovers it instead of propagating the panic.
impl Shared {
    pub(crate) fn check(&self) -> CredentialCheck {
        self.check.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn identify(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        self.check.read().unwrap_or_else(PoisonError::into_inner).identify(headers)
    }

    pub(crate) fn set_check(&self, check: CredentialCheck) {
        *self.check.write().unwrap_or_else(PoisonError::into_inner) = check;
    }

    pub(crate) fn stall(&self) -> Option<Duration> {
        *self.stall.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_stall(&self, stall: Option<Duration>) {
        *self.stall.lock().unwrap_or_else(PoisonError::into_inner) = stall;
    }

    pub(crate) fn calls(&self) -> Vec<CallRecord> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, record: CallRecord) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(record);
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where `whoami` gets its answer.
#[derive(Debug, Clone)]
enum IdentitySource {
    /// Re-derived on every request from that request's HTTP headers, which rmcp's streamable HTTP
    /// server puts into the request extensions as `http::request::Parts`.
    Headers,
    /// Fixed for the life of the process (stdio: the credential came from the environment).
    Fixed(String),
}

/// The MCP server handler. One instance is made per HTTP session (they share [`Shared`]).
#[derive(Debug, Clone)]
pub(crate) struct ToolServer {
    tool_router: ToolRouter<Self>,
    identity: IdentitySource,
    shared: Arc<Shared>,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct EnvArgs {
    /// The environment variable to read.
    name: String,
}

impl ToolServer {
    /// A server whose identity comes from each HTTP request's headers.
    pub(crate) fn http(shared: Arc<Shared>) -> Self {
        Self { tool_router: Self::tool_router(), identity: IdentitySource::Headers, shared }
    }

    /// A server with one fixed identity (the stdio server).
    pub(crate) fn fixed(identity: String, shared: Arc<Shared>) -> Self {
        Self { tool_router: Self::tool_router(), identity: IdentitySource::Fixed(identity), shared }
    }

    /// The identity of the request whose extensions these are.
    fn identity(&self, extensions: &Extensions) -> Option<String> {
        match &self.identity {
            IdentitySource::Fixed(identity) => Some(identity.clone()),
            IdentitySource::Headers => extensions.get::<Parts>().and_then(|parts| self.shared.identify(&parts.headers)),
        }
    }
}

#[tool_router]
impl ToolServer {
    /// Answers the identity of the credential carried by this very request.
    #[tool(description = "Returns the identity of the credential this request carried")]
    fn whoami(&self, RequestContext { extensions, .. }: RequestContext<RoleServer>) -> CallToolResult {
        match self.identity(&extensions) {
            Some(identity) => CallToolResult::success(vec![ContentBlock::text(identity)]),
            None => CallToolResult::error(vec![ContentBlock::text("no known credential")]),
        }
    }

    /// Answers its argument.
    #[tool(description = "Returns its text argument unchanged")]
    fn echo(Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Sleeps, then answers "slept".
    #[tool(description = "Sleeps for ms milliseconds, then returns \"slept\"")]
    async fn sleep(Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "slept".to_owned()
    }

    /// Always answers a tool error (`isError: true`).
    #[tool(description = "Always returns a tool error result")]
    fn fail() -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(FAILURE_TEXT)])
    }

    /// Answers the server process's value of an environment variable.
    #[tool(description = "Returns the value of an environment variable of the server process")]
    fn env(Parameters(EnvArgs { name }): Parameters<EnvArgs>) -> String {
        std::env::var(&name).unwrap_or_else(|_| UNSET_TEXT.to_owned())
    }
}

#[tool_handler(router = self.tool_router, name = "warden-testkit")]
impl ServerHandler for ToolServer {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.shared.record(CallRecord { tool: request.name.to_string(), identity: self.identity(&context.extensions) });
        if let Some(stall) = self.shared.stall() {
            tokio::select! {
                () = tokio::time::sleep(stall) => {}
                () = context.ct.cancelled() => {
                    return Err(ErrorData::internal_error("cancelled while stalled", None));
                }
            }
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }
}
