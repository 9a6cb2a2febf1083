//! The control protocol, shared by the daemon and its clients (the CLI, tests, other
//! languages): JSON-RPC 2.0, one JSON object per line (UTF-8, `\n`-terminated), several
//! requests in flight per connection, answered by `id` in any order.
//!
//! Errors are JSON-RPC error objects whose `data.kind` is one of the stable kinds of
//! [`ErrorKind`] (plus `authorization_url` when there is one). Codes: -32700 parse error,
//! -32600 invalid request (not an object, a batch, no method, a frame too large), -32601
//! unknown method, -32602 invalid params (`invalid_request`), -32000 every other kind.
//!
//! Nothing here ever echoes a secret: parameter errors name the field but string values in
//! them are elided, and the raw line is never quoted.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind};

/// The protocol's version, reported by `status`.
pub const PROTOCOL_VERSION: u32 = 1;

/// JSON-RPC codes.
pub mod codes {
    /// The line is not JSON (or not UTF-8, or incomplete).
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Any other warden error; `data.kind` says which.
    pub const SERVER_ERROR: i64 = -32000;
}

/// Every method, by name.
pub const METHODS: &[&str] = &[
    "auth",
    "capabilities.issue",
    "oauth.begin",
    "oauth.complete",
    "servers.list",
    "servers.put",
    "servers.remove",
    "sessions.stop",
    "status",
    "tools.call",
    "tools.list",
];

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its id (a number or a string); `None` for a notification.
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// Its params (`{}` if absent).
    pub params: Value,
}

/// A protocol-level error (before or outside warden's own kinds).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC code.
    pub code: i64,
    /// A message with no secret in it.
    pub message: String,
    /// The warden kind.
    pub kind: ErrorKind,
    /// An authorization URL, for the authorization kinds.
    pub authorization_url: Option<String>,
}

impl RpcError {
    /// An error with a code and kind.
    pub fn new(code: i64, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), kind, authorization_url: None }
    }

    /// Invalid params for `method`, from a serde error, with string values elided.
    pub fn invalid_params(method: &str, error: &serde_json::Error) -> Self {
        Self::new(
            codes::INVALID_PARAMS,
            ErrorKind::InvalidRequest,
            format!("invalid params for {method}: {}", elide_strings(&error.to_string())),
        )
    }

    /// The JSON-RPC error object.
    pub fn to_json(&self) -> Value {
        let mut data = json!({ "kind": self.kind.as_str() });
        if let Some(url) = &self.authorization_url {
            data["authorization_url"] = Value::String(url.clone());
        }
        json!({ "code": self.code, "message": self.message, "data": data })
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        let code = if e.kind() == ErrorKind::InvalidRequest { codes::INVALID_PARAMS } else { codes::SERVER_ERROR };
        Self {
            code,
            message: e.message().to_owned(),
            kind: e.kind(),
            authorization_url: e.authorization_url().map(str::to_owned),
        }
    }
}

/// Replaces every double-quoted string in `text` with `"…"` (serde's messages quote the
/// offending value, which could be a secret put in the wrong place).
pub fn elide_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push_str("…\"");
            }
        } else {
            out.push(c);
            if c == '"' {
                in_string = true;
            }
        }
    }
    if in_string {
        out.push_str("…\"");
    }
    out
}

/// Decodes one line. On failure returns the error to send, with the id if one could be read.
pub fn decode(line: &[u8]) -> Result<Request, (Value, RpcError)> {
    let text = std::str::from_utf8(line).map_err(|_| {
        (Value::Null, RpcError::new(codes::PARSE_ERROR, ErrorKind::InvalidRequest, "the line is not valid UTF-8"))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            RpcError::new(
                codes::PARSE_ERROR,
                ErrorKind::InvalidRequest,
                format!("not JSON (line {}, column {})", e.line(), e.column()),
            ),
        )
    })?;
    let invalid =
        |id: Value, why: &str| (id, RpcError::new(codes::INVALID_REQUEST, ErrorKind::InvalidRequest, why.to_owned()));
    let mut object = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(invalid(Value::Null, "batches are not supported; send one request per line"));
        }
        _ => return Err(invalid(Value::Null, "a request must be a JSON object")),
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => return Err(invalid(Value::Null, "id must be a number or a string")),
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid(reply_id, "jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(invalid(reply_id, "method must be a string"));
    };
    let params = match object.remove("params") {
        None => Value::Object(serde_json::Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(invalid(reply_id, "params must be an object")),
    };
    object.remove("jsonrpc");
    if let Some(extra) = object.keys().next() {
        return Err(invalid(reply_id, &format!("unexpected member {}", elide_strings(&format!("{extra:?}")))));
    }
    Ok(Request { id, method, params })
}

/// A success response line (without the trailing newline).
pub fn encode_result(id: &Value, result: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail.
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "result": result })).unwrap_or_default()
}

/// An error response line (without the trailing newline).
pub fn encode_error(id: &Value, error: &RpcError) -> Vec<u8> {
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })).unwrap_or_default()
}

/// `servers.put` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    /// The user.
    pub user: String,
    /// The server's name.
    pub name: String,
    /// How to reach it.
    pub transport: crate::model::Transport,
    /// How to authenticate (secrets inside are [`crate::Secret`]s).
    pub auth: crate::model::ServerAuth,
}

/// Params naming only a user.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    /// The user.
    pub user: String,
}

/// Params naming a user and a server.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserServerParams {
    /// The user.
    pub user: String,
    /// The server.
    #[serde(alias = "name")]
    pub server: String,
}

/// `servers.remove` params.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// The user.
    pub user: String,
    /// The server's name.
    pub name: String,
}

/// `tools.call` params.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallParams {
    /// The user.
    pub user: String,
    /// The server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// The call's deadline in milliseconds (default: `sessions.call_timeout_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `oauth.complete` params: the whole callback URL, or its parts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteParams {
    /// The URL the authorization server redirected the browser to.
    #[serde(default)]
    pub callback_url: Option<crate::Secret>,
    /// The `state` parameter.
    #[serde(default)]
    pub state: Option<crate::Secret>,
    /// The `code` parameter.
    #[serde(default)]
    pub code: Option<crate::Secret>,
    /// The `iss` parameter (RFC 9207), if the server sent one.
    #[serde(default)]
    pub iss: Option<String>,
}

/// `capabilities.issue` params.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssueParams {
    /// The user the capability binds to.
    pub user: String,
    /// Its lifetime in seconds (default 3600, at most 86400).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `auth` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthParams {
    /// A capability from `capabilities.issue`.
    pub token: crate::Secret,
}

/// `status` params (none).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The user a request names, if its params have a `user` string (for capability checks, before
/// the params are fully parsed).
pub fn named_user(params: &Value) -> Option<&str> {
    params.get("user").and_then(Value::as_str)
}

#[cfg(test)]
mod tests;
