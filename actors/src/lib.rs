//! warden's supervision tree: the registry that routes by user id, one session actor per
//! user, and (later) the token refresher.
//!
//! This crate knows nothing of SQL, ciphers or wire formats: it reaches storage, MCP
//! connections and token endpoints through the small traits in [`backend`], which `warden`
//! implements, so the tree can be tested (and chaos-tested) on its own.
//!
//! # Layout
//! - [`error`] — the public error and its stable kinds.
//! - [`backend`] — `UserLoader`, `ServerHandle`, `Connection`: the tree's view of the world.
//! - [`registry`] — `Registry`: routes by user id, supervises sessions, evicts idle ones.
//! - [`session`] — `UserSession`: one user's credentials and connections; calls run as tasks.

pub mod backend;
pub mod error;
pub mod registry;
pub mod session;

pub use backend::{CallRequest, Connection, ServerHandle, ServerTool, ToolList, UnavailableServer, UserLoader};
pub use error::{Error, ErrorKind};
pub use registry::{Registry, RegistryArgs, RegistryMsg, RegistryStatus, SessionPolicy};
pub use session::{SessionMsg, UserSession};
