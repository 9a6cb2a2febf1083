//! warden: makes MCP tool calls on behalf of many end users, each with their own credentials.
//!
//! Each user's MCP server configs and credentials are kept sealed in a database; at runtime a
//! supervised actor per user alone holds that user's decrypted credentials and live MCP
//! connections, and a registry routes every request by user id.
//!
//! # Layout
//! - [`config`] — `config.toml`, its defaults and environment overrides.
//! - [`secret`] — secret newtypes: zeroized on drop, redacted under Debug.
//! - [`crypto`] — the keyring and AES-256-GCM-SIV sealing bound to (purpose, user, server, key).
//! - [`keys`] — where master keys come from (environment, development key file).
//! - [`model`] — server configs, transports, auth kinds, and their validation.
//! - [`store`] — `MCPCredentialStore`, the sealed store on SQLite or PostgreSQL.
//! - [`logging`] — tracing setup that keeps secret-bearing crates capped at info.
//! - [`policy`] — egress and execution policy: which addresses and commands a config may reach.
//! - [`mcp`] — rmcp connections with a user's credentials (HTTP bearer/headers, stdio env).
//! - `warden` — [`Warden::start`] and [`WardenHandle`], the embedding API.
//! - [`client`] — a minimal control-socket client (the CLI uses it).
//! - [`protocol`] — the control socket's wire format, shared by daemon and clients.
//! - [`control`] — the Unix control socket server and per-user capabilities.
//! - [`error`] — the public error and its stable kinds.

pub mod client;
pub mod config;
pub mod control;
pub mod crypto;
pub mod error;
pub mod keys;
pub mod logging;
pub mod mcp;
pub mod model;
pub mod oauth;
pub mod policy;
pub mod protocol;
pub mod secret;
pub mod store;
mod warden;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use model::{AuthType, OAuthSettings, ServerAuth, ServerConfig, Transport};
pub use secret::Secret;
pub use store::MCPCredentialStore;
pub use warden::{
    AuthorizationCallback, AuthorizationStart, GrantCounts, MAX_CALL_TIMEOUT, Status, Warden, WardenHandle,
};
pub use warden_actors::{RegistryMsg, ServerTool, ToolList, UnavailableServer};
