//! The domain types a user configures — server configs with their transport and auth — and the
//! validation every one of them passes at the store's door.
//!
//! Nothing here touches the database or the cipher. Validation is strict because these values
//! come from less-trusted hosts: an id that could smuggle a path, a URL with a password in it, a
//! header that could split a request, or an env var that could hijack a child process is refused
//! with an [`ValidationError`] naming the field, before anything is written.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest server name, in bytes.
pub const MAX_SERVER_NAME_LEN: usize = 64;
/// Longest URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Largest single secret value (token, header value, env value, client secret), in bytes.
pub const MAX_SECRET_LEN: usize = 16 * 1024;
/// Most headers or env vars in one auth config.
pub const MAX_ENTRIES: usize = 64;
/// Most stdio arguments.
pub const MAX_ARGS: usize = 64;
/// Longest stdio command or argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// Most OAuth scopes.
pub const MAX_SCOPES: usize = 32;

/// A field failed validation. Names the field and why; never echoes a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field, as the socket protocol names it (e.g. `auth.headers`).
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// A validated user id: 1 to 256 bytes of ASCII letters, digits and `- _ . @ : + | =`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<Self, ValidationError> {
        let field = "user";
        if id.is_empty() || id.len() > MAX_USER_ID_LEN {
            return Err(ValidationError::new(field, format!("must be 1 to {MAX_USER_ID_LEN} bytes")));
        }
        if !id.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.@:+|=".contains(&c)) {
            return Err(ValidationError::new(field, "may contain only ASCII letters, digits and - _ . @ : + | ="));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// A validated server name: 1 to 64 bytes, ASCII letters, digits, `-` and `_`, starting with a
/// letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

impl ServerName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        let field = "name";
        if name.is_empty() || name.len() > MAX_SERVER_NAME_LEN {
            return Err(ValidationError::new(field, format!("must be 1 to {MAX_SERVER_NAME_LEN} bytes")));
        }
        let first_ok = name.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            return Err(ValidationError::new(
                field,
                "may contain only ASCII letters, digits, - and _, and must start with a letter or digit",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerName({})", self.0)
    }
}

/// How warden reaches an MCP server. Holds no secrets (those live in [`ServerAuth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Transport {
    /// Streamable HTTP at `url`.
    Http {
        /// The MCP endpoint, `http` or `https`, without user info or fragment.
        url: String,
    },
    /// A child process speaking MCP over stdio.
    Stdio {
        /// The program; the operator's allow-list decides which programs may run.
        command: String,
        /// Its arguments (not secret: secrets go in `auth.env`).
        #[serde(default)]
        args: Vec<String>,
    },
}

/// The kind of auth a server config uses; stored in the clear so listing needs no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// No credentials.
    None,
    /// `Authorization: Bearer`.
    Bearer,
    /// Secret request headers.
    Headers,
    /// Secret environment variables for a stdio child.
    Env,
    /// An OAuth grant obtained through the MCP authorization flow.
    Oauth,
}

impl AuthType {
    /// The stable name, as stored and as on the socket.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::Bearer => "bearer",
            AuthType::Headers => "headers",
            AuthType::Env => "env",
            AuthType::Oauth => "oauth",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => AuthType::None,
            "bearer" => AuthType::Bearer,
            "headers" => AuthType::Headers,
            "env" => AuthType::Env,
            "oauth" => AuthType::Oauth,
            _ => return None,
        })
    }
}

/// OAuth client settings for a server (the grant itself is stored separately).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// A pre-registered client id; preferred when present.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The pre-registered client's secret, for confidential clients.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A client-ID metadata document URL (https), used when the authorization server supports it.
    #[serde(default)]
    pub client_metadata_url: Option<String>,
    /// Scopes to request; empty means what the server advertises.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// How warden authenticates to a server. Secret values are [`Secret`]s; `Debug` redacts them.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerAuth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token, without the `Bearer ` prefix.
        token: Secret,
    },
    /// Arbitrary secret headers, e.g. `X-API-Key`.
    Headers {
        /// Header name to secret value.
        headers: BTreeMap<String, Secret>,
    },
    /// Secret environment variables for a stdio server.
    Env {
        /// Variable name to secret value.
        env: BTreeMap<String, Secret>,
    },
    /// The MCP OAuth flow.
    Oauth(OAuthSettings),
}

impl ServerAuth {
    /// The kind of this auth.
    pub fn auth_type(&self) -> AuthType {
        match self {
            ServerAuth::None => AuthType::None,
            ServerAuth::Bearer { .. } => AuthType::Bearer,
            ServerAuth::Headers { .. } => AuthType::Headers,
            ServerAuth::Env { .. } => AuthType::Env,
            ServerAuth::Oauth(_) => AuthType::Oauth,
        }
    }

    /// The JSON form of this auth, secrets included, in a buffer that is zeroized on drop.
    /// Used only to hand the value to the cipher.
    pub(crate) fn to_sealable_json(&self) -> Zeroizing<Vec<u8>> {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Exposed<'a> {
            None,
            Bearer {
                token: &'a str,
            },
            Headers {
                headers: BTreeMap<&'a str, &'a str>,
            },
            Env {
                env: BTreeMap<&'a str, &'a str>,
            },
            Oauth {
                client_id: Option<&'a str>,
                client_secret: Option<&'a str>,
                client_metadata_url: Option<&'a str>,
                scopes: &'a [String],
            },
        }
        fn expose(m: &BTreeMap<String, Secret>) -> BTreeMap<&str, &str> {
            m.iter().map(|(k, v)| (k.as_str(), v.expose_secret())).collect()
        }
        let exposed = match self {
            ServerAuth::None => Exposed::None,
            ServerAuth::Bearer { token } => Exposed::Bearer { token: token.expose_secret() },
            ServerAuth::Headers { headers } => Exposed::Headers { headers: expose(headers) },
            ServerAuth::Env { env } => Exposed::Env { env: expose(env) },
            ServerAuth::Oauth(o) => Exposed::Oauth {
                client_id: o.client_id.as_deref(),
                client_secret: o.client_secret.as_ref().map(Secret::expose_secret),
                client_metadata_url: o.client_metadata_url.as_deref(),
                scopes: &o.scopes,
            },
        };
        // Reserve enough up front that serialization does not reallocate and leave unzeroized
        // copies of secrets behind in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(self.size_hint() * 2 + 256));
        // Serializing borrowed strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &exposed);
        buf
    }

    fn size_hint(&self) -> usize {
        let map_len = |m: &BTreeMap<String, Secret>| m.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
        match self {
            ServerAuth::None => 0,
            ServerAuth::Bearer { token } => token.len(),
            ServerAuth::Headers { headers } => map_len(headers),
            ServerAuth::Env { env } => map_len(env),
            ServerAuth::Oauth(o) => {
                o.client_id.as_ref().map_or(0, String::len)
                    + o.client_secret.as_ref().map_or(0, Secret::len)
                    + o.client_metadata_url.as_ref().map_or(0, String::len)
                    + o.scopes.iter().map(|s| s.len() + 4).sum::<usize>()
            }
        }
    }
}

/// One MCP server config of one user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's name, unique per user.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// How to authenticate.
    pub auth: ServerAuth,
}

impl ServerConfig {
    /// Checks every field; the first problem found is returned, naming its field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        ServerName::parse(&self.name)?;
        match &self.transport {
            Transport::Http { url } => validate_url("transport.url", url, false)?,
            Transport::Stdio { command, args } => {
                if command.is_empty() || command.len() > MAX_ARG_LEN || command.contains('\0') {
                    return Err(ValidationError::new(
                        "transport.command",
                        format!("must be 1 to {MAX_ARG_LEN} bytes with no NUL"),
                    ));
                }
                if args.len() > MAX_ARGS {
                    return Err(ValidationError::new("transport.args", format!("at most {MAX_ARGS} arguments")));
                }
                if args.iter().any(|a| a.len() > MAX_ARG_LEN || a.contains('\0')) {
                    return Err(ValidationError::new(
                        "transport.args",
                        format!("each argument must be at most {MAX_ARG_LEN} bytes with no NUL"),
                    ));
                }
            }
        }
        match (&self.auth, &self.transport) {
            (ServerAuth::Env { .. }, Transport::Http { .. }) => {
                return Err(ValidationError::new("auth", "env auth applies only to stdio servers"));
            }
            (
                ServerAuth::Bearer { .. } | ServerAuth::Headers { .. } | ServerAuth::Oauth(_),
                Transport::Stdio { .. },
            ) => {
                return Err(ValidationError::new("auth", "stdio servers take env or none auth"));
            }
            _ => {}
        }
        match &self.auth {
            ServerAuth::None => Ok(()),
            ServerAuth::Bearer { token } => validate_header_value("auth.token", token),
            ServerAuth::Headers { headers } => validate_headers(headers),
            ServerAuth::Env { env } => validate_env(env),
            ServerAuth::Oauth(o) => validate_oauth(o),
        }
    }
}

fn validate_url(field: &str, text: &str, require_https: bool) -> Result<(), ValidationError> {
    if text.len() > MAX_URL_LEN {
        return Err(ValidationError::new(field, format!("must be at most {MAX_URL_LEN} bytes")));
    }
    let url = url::Url::parse(text).map_err(|e| ValidationError::new(field, format!("not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if !require_https => {}
        _ if require_https => return Err(ValidationError::new(field, "must be an https URL")),
        _ => return Err(ValidationError::new(field, "must be an http or https URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new(field, "must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL would be stored in the clear; they belong in `auth`.
        return Err(ValidationError::new(field, "must not contain user info; put credentials in auth"));
    }
    if url.fragment().is_some() {
        return Err(ValidationError::new(field, "must not have a fragment"));
    }
    Ok(())
}

/// Header names warden or the MCP transport sets itself; a user config may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

fn validate_headers(headers: &BTreeMap<String, Secret>) -> Result<(), ValidationError> {
    let field = "auth.headers";
    if headers.is_empty() || headers.len() > MAX_ENTRIES {
        return Err(ValidationError::new(field, format!("must have 1 to {MAX_ENTRIES} headers")));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        let is_token = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
        if !is_token {
            return Err(ValidationError::new(field, format!("header name {name:?} is not a valid HTTP header name")));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(ValidationError::new(
                field,
                format!("header {name:?} is set by warden and cannot be configured"),
            ));
        }
        if !seen.insert(lower) {
            return Err(ValidationError::new(field, format!("header {name:?} appears twice")));
        }
        validate_header_value(&format!("auth.headers.{name}"), value)?;
    }
    Ok(())
}

fn validate_header_value(field: &str, value: &Secret) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_SECRET_LEN {
        return Err(ValidationError::new(field, format!("must be 1 to {MAX_SECRET_LEN} bytes")));
    }
    // Visible ASCII and spaces/tabs only: no CR/LF (request splitting), no control bytes.
    if !value.expose_secret().bytes().all(|c| c == b'\t' || (b' '..=b'~').contains(&c)) {
        return Err(ValidationError::new(field, "must be printable ASCII with no line breaks"));
    }
    Ok(())
}

/// Variables a user may not set for a child: they change how the program is loaded or found.
fn env_name_forbidden(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("LD_")
        || upper.starts_with("DYLD_")
        || ["PATH", "NODE_OPTIONS", "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "ENV"].contains(&upper.as_str())
}

fn validate_env(env: &BTreeMap<String, Secret>) -> Result<(), ValidationError> {
    let field = "auth.env";
    if env.is_empty() || env.len() > MAX_ENTRIES {
        return Err(ValidationError::new(field, format!("must have 1 to {MAX_ENTRIES} variables")));
    }
    for (name, value) in env {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !valid {
            return Err(ValidationError::new(
                field,
                format!("variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"),
            ));
        }
        if env_name_forbidden(name) {
            return Err(ValidationError::new(field, format!("variable {name:?} may not be set by a user config")));
        }
        if value.len() > MAX_SECRET_LEN || value.expose_secret().contains('\0') {
            return Err(ValidationError::new(
                format!("auth.env.{name}"),
                format!("must be at most {MAX_SECRET_LEN} bytes with no NUL"),
            ));
        }
    }
    Ok(())
}

fn validate_oauth(o: &OAuthSettings) -> Result<(), ValidationError> {
    if let Some(id) = &o.client_id
        && (id.is_empty() || id.len() > 512 || id.chars().any(char::is_control))
    {
        return Err(ValidationError::new("auth.client_id", "must be 1 to 512 characters with no control characters"));
    }
    if let Some(secret) = &o.client_secret {
        if o.client_id.is_none() {
            return Err(ValidationError::new("auth.client_secret", "needs a client_id"));
        }
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(ValidationError::new("auth.client_secret", format!("must be 1 to {MAX_SECRET_LEN} bytes")));
        }
    }
    if let Some(url) = &o.client_metadata_url {
        validate_url("auth.client_metadata_url", url, true)?;
    }
    if o.scopes.len() > MAX_SCOPES {
        return Err(ValidationError::new("auth.scopes", format!("at most {MAX_SCOPES} scopes")));
    }
    for scope in &o.scopes {
        // RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E.
        let ok = !scope.is_empty()
            && scope.len() <= 256
            && scope.bytes().all(|c| c == 0x21 || (0x23..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c));
        if !ok {
            return Err(ValidationError::new("auth.scopes", format!("{scope:?} is not a valid scope token")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
