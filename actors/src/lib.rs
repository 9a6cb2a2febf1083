//! warden's supervision tree: the registry that routes by user id, one session actor per
//! user, and the token refresher, under one supervisor.
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
//! - [`refresher`] — `TokenRefresher`: one schedule of OAuth grants, refreshed ahead of expiry.
//! - [`supervisor`] — `Supervisor`: the root; restarts the registry and the refresher.
//! - [`shared_ref`] — `SharedRef`: the live instance of a restartable actor.

pub mod backend;
pub mod error;
pub mod refresher;
pub mod registry;
pub mod session;
pub mod shared_ref;
pub mod supervisor;

pub use backend::{CallRequest, Connection, ServerHandle, ServerTool, ToolList, UnavailableServer, UserLoader};
pub use error::{Error, ErrorKind};
pub use refresher::{
    GrantSource, RefreshLead, RefreshPolicy, RefresherArgs, RefresherMsg, RefresherStatus, TokenRefresher,
};
pub use registry::{Registry, RegistryArgs, RegistryMsg, RegistryStatus, SessionPolicy};
pub use session::{SessionMsg, UserSession};
pub use shared_ref::SharedRef;
pub use supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
