//! Real MCP servers for warden's integration tests, built to prove which credential each call used.
//!
//! The same five tools are served two ways:
//!
//! - over streamable HTTP by [`spawn_http_server`], which checks each request's credential
//!   ([`CredentialCheck`]) in an axum layer and answers 401 before rmcp sees a bad one;
//! - over stdio by the `testkit-stdio` binary ([`stdio_server_binary`], [`stdio_command`]),
//!   whose one credential comes from its environment ([`TOKEN_ENV`], [`IDENTITIES_ENV`]).
//!
//! | tool     | arguments       | result                                                   |
//! |----------|-----------------|----------------------------------------------------------|
//! | `whoami` | none            | the identity of the credential on *this* request         |
//! | `echo`   | `text: string`  | `text`                                                   |
//! | `sleep`  | `ms: u64`       | `"slept"`, after `ms` milliseconds                       |
//! | `fail`   | none            | a tool error (`isError: true`), text [`FAILURE_TEXT`]     |
//! | `env`    | `name: string`  | the server process's variable `name`, or [`UNSET_TEXT`]  |
//!
//! # Layout
//!
//! - `identities`: [`Identities`] (credential -> identity) and [`CredentialCheck`].
//! - `tools`: the rmcp handler with the tools, the call log and the stall switch.
//! - `http`: [`spawn_http_server`] and [`RunningServer`].
//! - `stdio`: the stdio server's environment contract, [`serve_stdio`] and the binary's locator.
//! - `oauth`: [`OAuthWorld`], a real OAuth authorization server (oidc-provider) plus an MCP
//!   resource server checking its tokens, run by `tools/oauth/world.mjs` under Node 22.
//!
//! **Invariant:** on HTTP the identity is derived from the headers of each request (rmcp hands
//! the request's `http::request::Parts` to the handler), never remembered per session, so a
//! client that changes credentials mid-session is seen doing so.

mod http;
mod identities;
pub mod oauth;
mod stdio;
mod tools;

pub use http::{HttpServerConfig, MCP_PATH, RunningServer, spawn_http_server};
pub use identities::{ANONYMOUS, CredentialCheck, Identities};
pub use oauth::{DEFAULT_ACCESS_TOKEN_TTL_S, OAuthWorld};
pub use stdio::{
    EXIT_BAD_ENVIRONMENT, IDENTITIES_ENV, STALL_ENV, STDIO_BINARY_NAME, StdioConfigError, StdioSettings, TOKEN_ENV,
    serve_stdio, stdio_command, stdio_server_binary,
};
pub use tools::{CallRecord, FAILURE_TEXT, UNSET_TEXT};
