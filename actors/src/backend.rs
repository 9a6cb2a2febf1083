//! The traits through which the supervision tree reaches everything outside it: loading a
//! user's servers (with their decrypted credentials) and talking MCP to one server.
//!
//! `warden` implements them over the sealed store and rmcp; tests implement them with fault
//! injection. Nothing here knows about SQL, ciphers or the socket's wire format.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolResult, JsonObject, Tool};

use crate::error::Error;

/// Loads one user's servers, each holding that user's decrypted credentials for it.
#[async_trait]
pub trait UserLoader: Send + Sync + 'static {
    /// The user's configured servers, in name order. An empty list means "no tools".
    async fn load(&self, user: &str) -> Result<Vec<Arc<dyn ServerHandle>>, Error>;
}

/// One configured server of one user. It holds that user's credentials for the server and is
/// owned by the user's session; only `connect` uses them, briefly, to open a connection.
#[async_trait]
pub trait ServerHandle: Send + Sync + 'static {
    /// The server's name within the user's configs.
    fn name(&self) -> &str;

    /// Opens and initializes an MCP connection with the user's credentials.
    async fn connect(&self) -> Result<Arc<dyn Connection>, Error>;

    /// Refreshes the server's OAuth grant if it is due, and returns its expiry (Unix seconds).
    /// `Ok(None)`: nothing to refresh (static credentials, or no expiry).
    async fn refresh(&self) -> Result<Option<i64>, Error> {
        Ok(None)
    }
}

/// A live MCP connection of one (user, server).
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// Every tool the server offers.
    async fn list_tools(&self) -> Result<Vec<Tool>, Error>;

    /// Calls `tool`. The session enforces the deadline; `timeout` is passed so an
    /// implementation can forward it (e.g. as an MCP request timeout).
    async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        timeout: Duration,
    ) -> Result<CallToolResult, Error>;

    /// Whether the connection is known to be unusable (its transport closed).
    fn is_closed(&self) -> bool;
}

/// What a call asks for.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The server, by name.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// Its arguments.
    pub arguments: Option<JsonObject>,
    /// The call's deadline, from when the session receives it.
    pub timeout: Duration,
}

/// A tool and the server that offers it.
#[derive(Debug, Clone)]
pub struct ServerTool {
    /// The server's name.
    pub server: String,
    /// The tool as the server describes it.
    pub tool: Tool,
}

/// A server whose tools could not be listed, and why.
#[derive(Debug, Clone)]
pub struct UnavailableServer {
    /// The server's name.
    pub server: String,
    /// Why its tools are missing (e.g. `authorization_required` with its URL).
    pub error: Error,
}

/// A user's tools across all their servers.
#[derive(Debug, Clone, Default)]
pub struct ToolList {
    /// Tools of the servers that answered, each tagged with its server.
    pub tools: Vec<ServerTool>,
    /// Servers that did not.
    pub unavailable: Vec<UnavailableServer>,
}
