//! The Unix control socket: hosts in any language (and the CLI) drive warden through it with
//! the JSON-RPC protocol of [`crate::protocol`].
//!
//! The socket is created 0600 inside a 0700 directory; a stale socket from a crashed run is
//! replaced, but never one a live daemon still answers on, and never a file that is not a
//! socket. Each peer's uid (`SO_PEERCRED`) must be on the allow-list. A connection may bind
//! itself to one user with a capability (`auth` as its first request); after that any request
//! naming another user is refused with `forbidden` and audited.
//!
//! # Layout
//! - `control/connection.rs` — one connection: frames, limits, in-flight tracking, shutdown.
//! - `control/dispatch.rs` — the methods, mapped onto [`WardenHandle`].
//! - `control/capability.rs` — issuing and verifying per-user capabilities.

use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::WardenHandle;
use crate::config::ControlConfig;

pub mod capability;
mod connection;
mod dispatch;

pub use capability::Capabilities;
pub use connection::serve_connection;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another daemon answers on the socket.
    #[error("another warden is already serving on {0}")]
    AlreadyRunning(PathBuf),
    /// The path exists and is not a socket: it is not ours to remove.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The socket's directory is owned by another user.
    #[error("socket directory {0} is owned by another user")]
    ForeignDirectory(PathBuf),
    /// Any other I/O failure.
    #[error("control socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Everything a connection needs.
pub struct Context {
    /// The warden it drives.
    pub handle: WardenHandle,
    /// Issues and verifies capabilities.
    pub capabilities: Capabilities,
    /// Limits.
    pub limits: Limits,
}

/// Connection limits (from `[control]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request line.
    pub max_frame_bytes: usize,
    /// Most requests in flight per connection.
    pub max_in_flight: usize,
    /// A connection with nothing in flight and no request for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long in-flight requests may finish.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The limits of a `[control]` section.
    pub fn from_config(c: &ControlConfig) -> Self {
        Self {
            max_frame_bytes: c.max_frame_bytes,
            max_in_flight: c.max_in_flight,
            idle_timeout: Duration::from_secs(c.idle_timeout_s),
            shutdown_grace: Duration::from_secs(c.shutdown_grace_s),
        }
    }
}

/// A bound control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Creates the socket at `path`: its directory 0700, the socket 0600, a stale socket
    /// replaced.
    pub async fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
            }
            let meta = std::fs::metadata(dir).map_err(io)?;
            if meta.uid() != rustix::process::getuid().as_raw() {
                return Err(ControlError::ForeignDirectory(dir.to_owned()));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(ControlError::AlreadyRunning(path.to_owned()));
                }
                warn!(path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(io)?;
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` turns true: then stops accepting, lets in-flight requests finish
    /// for up to the grace period (answering any left with an error), closes every connection
    /// and removes the socket file.
    pub async fn serve(
        self,
        context: Arc<Context>,
        allowed_uids: Vec<u32>,
        max_connections: usize,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let own_uid = rustix::process::getuid().as_raw();
        let allowed: Vec<u32> = if allowed_uids.is_empty() { vec![own_uid] } else { allowed_uids };
        let slots = Arc::new(Semaphore::new(max_connections));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    while connections.try_join_next().is_some() {}
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    let permit = slots.clone().try_acquire_owned().ok();
                    let (context, shutdown) = (context.clone(), shutdown.clone());
                    let refusal = match uid {
                        Some(uid) if allowed.contains(&uid) => None,
                        Some(uid) => Some(format!("uid {uid} is not allowed to use this socket")),
                        None => Some("peer credentials unavailable".to_owned()),
                    };
                    connections.spawn(async move {
                        if let Some(reason) = refusal {
                            debug!(%reason, "refusing a control connection");
                            connection::refuse(stream, crate::ErrorKind::Forbidden, &reason).await;
                        } else if permit.is_none() {
                            connection::refuse(stream, crate::ErrorKind::Overloaded, "too many connections").await;
                        } else {
                            serve_connection(stream, context, shutdown).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
        info!("control socket: no longer accepting; finishing in-flight requests");
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
        let limit = context.limits.shutdown_grace + Duration::from_secs(2);
        let _ = tokio::time::timeout(limit, async { while connections.join_next().await.is_some() {} }).await;
        connections.abort_all();
    }
}
