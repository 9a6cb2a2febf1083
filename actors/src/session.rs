//! `UserSession`: one actor per user (the seed's `UserMCPSession`). It alone holds the user's
//! decrypted credentials (inside the [`ServerHandle`]s its loader returns) and the user's live
//! MCP connections, one per server, opened lazily and reopened after a drop.
//!
//! Messages: [`SessionMsg::ListTools`], [`SessionMsg::Call`], [`SessionMsg::Refresh`] (from the
//! token refresher), [`SessionMsg::Retire`], [`SessionMsg::Done`] (internal). Children: none; calls run as tasks in a `JoinSet` owned by
//! the state, so a call never blocks the mailbox (calls for one user run concurrently, and a
//! slow server does not delay another) and killing the actor drops the state, which aborts
//! every task, which drops every reply port: callers get an error at once, never a hang.
//! Restart policy: none of its own; the registry respawns it on the next request.
//! Credentials are wiped by `Drop` of the state (never in `post_stop`, which a kill skips).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rmcp::model::CallToolResult;
use tokio::task::JoinSet;

use crate::backend::{CallRequest, Connection, ServerHandle, ServerTool, ToolList, UnavailableServer, UserLoader};
use crate::error::{Error, ErrorKind};

/// Counters a session shares with the registry for status and idle eviction.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Calls and listings in progress.
    pub in_flight: AtomicUsize,
    /// Open MCP connections.
    pub connections: AtomicUsize,
}

/// Messages to a user session.
pub enum SessionMsg {
    /// List the user's tools across all servers.
    ListTools(RpcReplyPort<Result<ToolList, Error>>),
    /// Call a tool.
    Call(CallRequest, RpcReplyPort<Result<CallToolResult, Error>>),
    /// Refresh a server's OAuth grant if it is due; replies with its expiry.
    Refresh {
        /// The server.
        server: String,
        /// The new expiry (Unix seconds), `None` if the server has nothing to refresh.
        reply: RpcReplyPort<Result<Option<i64>, Error>>,
    },
    /// Finish in-flight work, then stop (the user's config changed).
    Retire,
    /// A task finished (sent by the session's own tasks).
    Done,
}

impl SessionMsg {
    /// Answers the request inside with `error` (used when it cannot be delivered).
    pub fn fail(self, error: Error) {
        // A caller that went away does not need the answer.
        match self {
            SessionMsg::ListTools(reply) => drop(reply.send(Err(error))),
            SessionMsg::Call(_, reply) => drop(reply.send(Err(error))),
            SessionMsg::Refresh { reply, .. } => drop(reply.send(Err(error))),
            SessionMsg::Retire | SessionMsg::Done => {}
        }
    }
}

/// Start-up arguments.
pub struct SessionArgs {
    /// The user this session serves; it serves nobody else.
    pub user: String,
    /// Loads the user's servers and credentials.
    pub loader: Arc<dyn UserLoader>,
    /// Shared with the registry.
    pub counters: Arc<SessionCounters>,
    /// Deadline for listing one server's tools.
    pub list_timeout: Duration,
}

/// The actor.
pub struct UserSession;

/// One server of the user: its credentials and, once opened, its connection.
struct Slot {
    user: String,
    handle: Arc<dyn ServerHandle>,
    conn: tokio::sync::Mutex<Option<Arc<dyn Connection>>>,
    counters: Arc<SessionCounters>,
}

impl Slot {
    /// The open connection, opening one if there is none or the last one closed. Concurrent
    /// callers for the same server wait for one connect instead of each opening their own.
    async fn connection(&self) -> Result<Arc<dyn Connection>, Error> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            *guard = None;
            self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        }
        let conn = self.handle.connect().await?;
        *guard = Some(conn.clone());
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Forgets `conn` if it is still the current connection, so the next call reopens.
    async fn discard(&self, conn: &Arc<dyn Connection>) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *guard = None;
            self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn call(&self, request: CallRequest) -> Result<CallToolResult, Error> {
        let conn = self.connection().await?;
        let result = conn.call_tool(&request.tool, request.arguments, request.timeout).await;
        if let Err(e) = &result
            && e.breaks_connection()
        {
            self.discard(&conn).await;
        }
        result
    }

    async fn list(&self) -> Result<Vec<rmcp::model::Tool>, Error> {
        let conn = self.connection().await?;
        let result = conn.list_tools().await;
        if let Err(e) = &result
            && e.breaks_connection()
        {
            self.discard(&conn).await;
        }
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.conn.get_mut().take().is_some() {
            self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The session's state. Dropping it drops the credentials (zeroized by their own `Drop`), the
/// connections, and aborts every task.
pub struct SessionState {
    user: String,
    loader: Arc<dyn UserLoader>,
    counters: Arc<SessionCounters>,
    list_timeout: Duration,
    servers: Option<BTreeMap<String, Arc<Slot>>>,
    tasks: JoinSet<()>,
    retiring: bool,
}

impl SessionState {
    /// Loads the user's servers if they are not loaded yet.
    async fn ensure_loaded(&mut self) -> Result<&BTreeMap<String, Arc<Slot>>, Error> {
        if self.servers.is_none() {
            let handles = self.loader.load(&self.user).await?;
            let slots = handles
                .into_iter()
                .map(|handle| {
                    let slot = Slot {
                        user: self.user.clone(),
                        handle: handle.clone(),
                        conn: tokio::sync::Mutex::new(None),
                        counters: self.counters.clone(),
                    };
                    (handle.name().to_owned(), Arc::new(slot))
                })
                .collect();
            self.servers = Some(slots);
        }
        // Just loaded or already present.
        Ok(self.servers.get_or_insert_with(BTreeMap::new))
    }
}

/// Decrements `in_flight` when a task ends, however it ends (including abort).
struct InFlight(Arc<SessionCounters>);

impl InFlight {
    fn new(counters: &Arc<SessionCounters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(counters.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Actor for UserSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        // Cheap on purpose: the registry waits for pre_start. Loading happens in post_start.
        Ok(SessionState {
            user: args.user,
            loader: args.loader,
            counters: args.counters,
            list_timeout: args.list_timeout,
            servers: None,
            tasks: JoinSet::new(),
            retiring: false,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // A failure here is retried on the first request, which reports it.
        if let Err(e) = state.ensure_loaded().await {
            tracing::warn!(user = %state.user, error = %e, "loading the user's servers failed; will retry on the next request");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        while state.tasks.try_join_next().is_some() {}
        match msg {
            SessionMsg::Call(request, reply) => {
                match state.servers_for(Some(&request.server)).await {
                    Ok(mut slots) => {
                        // `servers_for(Some(_))` returns exactly the one slot asked for.
                        let Some(slot) = slots.pop() else {
                            return Ok(());
                        };
                        let guard = InFlight::new(&state.counters);
                        let me = myself.clone();
                        state.tasks.spawn(async move {
                            let (server, timeout) = (request.server.clone(), request.timeout);
                            let result = match tokio::time::timeout(timeout, slot.call(request)).await {
                                Ok(result) => result,
                                Err(_) => Err(Error::timeout(&slot.user, &server, timeout)),
                            };
                            drop(reply.send(result));
                            // In-flight drops before Done, so Done sees the count without this task.
                            drop(guard);
                            drop(me.send_message(SessionMsg::Done));
                        });
                    }
                    Err(e) => state.refuse(&myself, e, reply),
                }
            }
            SessionMsg::ListTools(reply) => match state.servers_for(None).await {
                Ok(slots) => {
                    let guard = InFlight::new(&state.counters);
                    let (user, list_timeout, me) = (state.user.clone(), state.list_timeout, myself.clone());
                    state.tasks.spawn(async move {
                        drop(reply.send(list_all(&user, slots, list_timeout).await));
                        drop(guard);
                        drop(me.send_message(SessionMsg::Done));
                    });
                }
                Err(e) => state.refuse(&myself, e, reply),
            },
            SessionMsg::Refresh { server, reply } => match state.servers_for(Some(&server)).await {
                Ok(mut slots) => {
                    let Some(slot) = slots.pop() else { return Ok(()) };
                    let guard = InFlight::new(&state.counters);
                    let me = myself.clone();
                    state.tasks.spawn(async move {
                        drop(reply.send(slot.handle.refresh().await));
                        drop(guard);
                        drop(me.send_message(SessionMsg::Done));
                    });
                }
                Err(e) => state.refuse(&myself, e, reply),
            },
            SessionMsg::Retire => state.retiring = true,
            SessionMsg::Done => {}
        }
        if state.retiring && state.counters.in_flight.load(Ordering::Relaxed) == 0 {
            myself.stop(Some("retired".into()));
        }
        Ok(())
    }
}

impl SessionState {
    /// The slots a request needs: the named server's, or all of them. Errors:
    /// `no_tools_available`, `unknown_server`, or the loader's error.
    async fn servers_for(&mut self, server: Option<&str>) -> Result<Vec<Arc<Slot>>, Error> {
        let user = self.user.clone();
        let servers = self.ensure_loaded().await?;
        if servers.is_empty() {
            return Err(Error::no_tools(&user));
        }
        match server {
            None => Ok(servers.values().cloned().collect()),
            Some(name) => {
                servers.get(name).map(|slot| vec![slot.clone()]).ok_or_else(|| Error::unknown_server(&user, name))
            }
        }
    }

    /// Answers a request that cannot run. A user with no servers keeps no session: any id can
    /// be asked about, and sessions for ids that will never have tools would only cost memory
    /// until eviction.
    fn refuse<T>(&self, myself: &ActorRef<SessionMsg>, error: Error, reply: RpcReplyPort<Result<T, Error>>) {
        let unconfigured = error.kind() == ErrorKind::NoToolsAvailable;
        drop(reply.send(Err(error)));
        if unconfigured && self.counters.in_flight.load(Ordering::Relaxed) == 0 {
            myself.stop(Some("no servers configured".into()));
        }
    }
}

/// Lists every server's tools concurrently. If every server failed, the first failure is the
/// answer (it may carry an authorization URL); otherwise failures are listed as unavailable.
async fn list_all(user: &str, slots: Vec<Arc<Slot>>, list_timeout: Duration) -> Result<ToolList, Error> {
    let results = futures::future::join_all(slots.iter().map(|slot| async move {
        let server = slot.handle.name().to_owned();
        let result = match tokio::time::timeout(list_timeout, slot.list()).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(user, &server, list_timeout)),
        };
        (server, result)
    }))
    .await;
    let mut list = ToolList::default();
    for (server, result) in results {
        match result {
            Ok(tools) => list.tools.extend(tools.into_iter().map(|tool| ServerTool { server: server.clone(), tool })),
            Err(error) => list.unavailable.push(UnavailableServer { server, error }),
        }
    }
    if list.unavailable.len() == slots.len() && !list.unavailable.is_empty() {
        return Err(list.unavailable.swap_remove(0).error);
    }
    Ok(list)
}
