//! The public error and its stable, machine-readable kinds (the same strings on the socket as
//! `error.data.kind`). Messages name the user and server, never a credential.

use std::fmt;

/// The stable kinds of error a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The user has no MCP server configured.
    NoToolsAvailable,
    /// The user has no server by that name.
    UnknownServer,
    /// The server needs an OAuth grant; carries the authorization URL when one can be made.
    AuthorizationRequired,
    /// The grant's refresh token was rejected; the user must authorize again.
    ReauthorizationRequired,
    /// The server answered 401/403 to static credentials.
    CredentialsRejected,
    /// The server could not be reached (connection refused, DNS, TLS, dropped).
    ServerUnreachable,
    /// The server answered the call with an error.
    ToolError,
    /// The call's deadline passed.
    Timeout,
    /// The request is malformed or a field is invalid; nothing was changed.
    InvalidRequest,
    /// A request names a user its connection is not bound to.
    Forbidden,
    /// Too many requests in flight.
    Overloaded,
    /// Not implemented yet.
    NotImplemented,
    /// Anything else: a bug, a database failure, a sealed value that does not open.
    Internal,
}

impl ErrorKind {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoToolsAvailable => "no_tools_available",
            ErrorKind::UnknownServer => "unknown_server",
            ErrorKind::AuthorizationRequired => "authorization_required",
            ErrorKind::ReauthorizationRequired => "reauthorization_required",
            ErrorKind::CredentialsRejected => "credentials_rejected",
            ErrorKind::ServerUnreachable => "server_unreachable",
            ErrorKind::ToolError => "tool_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from warden: a stable kind, a human message (no secrets), and for the
/// authorization kinds the URL the user should open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    authorization_url: Option<String>,
}

impl Error {
    /// An error of `kind` with `message`. The message must not contain a secret.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), authorization_url: None }
    }

    /// Attaches the authorization URL the user should open.
    #[must_use]
    pub fn with_authorization_url(mut self, url: impl Into<String>) -> Self {
        self.authorization_url = Some(url.into());
        self
    }

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The authorization URL, for `authorization_required` and `reauthorization_required`.
    pub fn authorization_url(&self) -> Option<&str> {
        self.authorization_url.as_deref()
    }

    /// `invalid_request` for a field.
    pub fn invalid(field: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidRequest, format!("invalid {field}: {reason}"))
    }

    /// `internal` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// `no_tools_available` for `user`.
    pub fn no_tools(user: &str) -> Self {
        Self::new(ErrorKind::NoToolsAvailable, format!("user {user} has no MCP servers configured"))
    }

    /// `unknown_server` for (user, server).
    pub fn unknown_server(user: &str, server: &str) -> Self {
        Self::new(ErrorKind::UnknownServer, format!("user {user} has no server named {server}"))
    }

    /// `timeout` for a call to (user, server) that ran past `after`.
    pub fn timeout(user: &str, server: &str, after: std::time::Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("call to server {server} of user {user} did not finish within {} ms", after.as_millis()),
        )
    }

    /// `server_unreachable` for (user, server); `why` is a short category, never upstream text.
    pub fn unreachable(user: &str, server: &str, why: &str) -> Self {
        Self::new(ErrorKind::ServerUnreachable, format!("server {server} of user {user} is unreachable: {why}"))
    }

    /// Whether a connection that produced this error should be dropped and reopened.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ServerUnreachable | ErrorKind::CredentialsRejected | ErrorKind::AuthorizationRequired
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}
