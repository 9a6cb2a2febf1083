//! The `Registry`: routes every request by user id to that user's [`UserSession`], spawning it
//! (linked, supervised) on first use. Isolation is structural: a request for user A is
//! delivered to A's session or to nobody.
//!
//! Messages: [`RegistryMsg`]. Children: one `UserSession` per active user.
//! Restart policy: a session that dies is forgotten and respawned by the next request for its
//! user. A session that *fails* (panics or returns `Err`) more than `max_restarts` times within
//! `restart_window` is marked failed: its user's requests get an `internal` error until the
//! user's config changes or the session is stopped explicitly. A kill is not a failure (it
//! comes from outside) and never marks a user failed. Idle sessions (no request for
//! `idle_timeout`, nothing in flight) are stopped, dropping their decrypted credentials.
//! The registry only routes: it never waits for a session's work, so no call holds it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use crate::backend::UserLoader;
use crate::error::Error;
use crate::session::{SessionArgs, SessionCounters, SessionMsg, UserSession};

/// Session supervision settings.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Stop sessions with no request for this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// Failures tolerated within `restart_window` before a user's session is marked failed.
    pub max_restarts: u32,
    /// The failure-counting window.
    pub restart_window: Duration,
    /// Deadline for listing one server's tools.
    pub list_timeout: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(900)),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            list_timeout: Duration::from_secs(30),
        }
    }
}

/// Messages to the registry.
pub enum RegistryMsg {
    /// Deliver `msg` to `user`'s session, starting it if needed.
    Route {
        /// The user; validated by the caller.
        user: String,
        /// What to deliver.
        msg: SessionMsg,
    },
    /// `user`'s config changed: retire the current session (it finishes in-flight calls with
    /// the old config), clear any failed mark; the next request starts a fresh session.
    Invalidate {
        /// The user.
        user: String,
    },
    /// Stop `user`'s session now and clear any failed mark. Replies whether one was running.
    Stop {
        /// The user.
        user: String,
        /// Whether a session was running.
        reply: RpcReplyPort<bool>,
    },
    /// Counts for `status`.
    Status(RpcReplyPort<RegistryStatus>),
    /// The running session of `user`, if any (for hosts that speak ractor, and chaos tests).
    Lookup {
        /// The user.
        user: String,
        /// The session.
        reply: RpcReplyPort<Option<ActorRef<SessionMsg>>>,
    },
    /// Stop idle sessions (sent by the registry's own timer).
    EvictIdle,
}

/// What the registry knows about its sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStatus {
    /// Running sessions.
    pub sessions: usize,
    /// Open MCP connections across them.
    pub connections: usize,
    /// Calls and listings in progress.
    pub in_flight: usize,
    /// Users whose session is marked failed.
    pub failed: usize,
}

/// Start-up arguments.
#[derive(Clone)]
pub struct RegistryArgs {
    /// How sessions load their users' servers.
    pub loader: Arc<dyn UserLoader>,
    /// Supervision settings.
    pub policy: SessionPolicy,
}

/// The actor.
pub struct Registry;

struct Entry {
    actor: ActorRef<SessionMsg>,
    counters: Arc<SessionCounters>,
    last_used: Instant,
}

/// The registry's state: derived entirely from what it has spawned; rebuilt empty on restart.
pub struct RegistryState {
    loader: Arc<dyn UserLoader>,
    policy: SessionPolicy,
    sessions: HashMap<String, Entry>,
    owners: HashMap<ActorId, String>,
    failures: HashMap<String, VecDeque<Instant>>,
    failed: HashSet<String>,
}

impl RegistryState {
    async fn spawn(&mut self, myself: &ActorRef<RegistryMsg>, user: &str) -> Result<&mut Entry, Error> {
        let counters = Arc::new(SessionCounters::default());
        let args = SessionArgs {
            user: user.to_owned(),
            loader: self.loader.clone(),
            counters: counters.clone(),
            list_timeout: self.policy.list_timeout,
        };
        let (actor, _) = Actor::spawn_linked(None, UserSession, args, myself.get_cell())
            .await
            .map_err(|e| Error::internal(format!("starting the session of user {user} failed: {e}")))?;
        self.owners.insert(actor.get_id(), user.to_owned());
        let entry = Entry { actor, counters, last_used: Instant::now() };
        Ok(self.sessions.entry(user.to_owned()).insert_entry(entry).into_mut())
    }

    /// Forgets a session that ended; returns its user.
    fn forget(&mut self, id: ActorId) -> Option<String> {
        let user = self.owners.remove(&id)?;
        if self.sessions.get(&user).is_some_and(|e| e.actor.get_id() == id) {
            self.sessions.remove(&user);
        }
        Some(user)
    }

    fn clear_failures(&mut self, user: &str) {
        self.failed.remove(user);
        self.failures.remove(user);
    }

    async fn route(&mut self, myself: &ActorRef<RegistryMsg>, user: String, msg: SessionMsg) {
        if self.failed.contains(&user) {
            msg.fail(Error::internal(format!(
                "the session of user {user} failed repeatedly and is stopped until its config changes or it is restarted"
            )));
            return;
        }
        let mut msg = msg;
        // Two tries: a session can die between lookup and delivery; its replacement gets the
        // message.
        for _ in 0..2 {
            let entry = match self.sessions.get_mut(&user) {
                Some(entry) => entry,
                None => match self.spawn(myself, &user).await {
                    Ok(entry) => entry,
                    Err(e) => return msg.fail(e),
                },
            };
            entry.last_used = Instant::now();
            match entry.actor.send_message(msg) {
                Err(MessagingErr::SendErr(back)) => {
                    let id = entry.actor.get_id();
                    self.forget(id);
                    msg = back;
                }
                // Delivered; or a failure that does not hand the message back (not possible
                // for a typed ref), whose dropped reply port tells the caller the session is gone.
                Ok(()) | Err(_) => return,
            }
        }
        msg.fail(Error::internal(format!("the session of user {user} could not be started")));
    }
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        Ok(RegistryState {
            loader: args.loader,
            policy: args.policy,
            sessions: HashMap::new(),
            owners: HashMap::new(),
            failures: HashMap::new(),
            failed: HashSet::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(idle) = state.policy.idle_timeout {
            let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            // The timer ends by itself when the registry stops (its sends start failing).
            myself.send_interval(period, || RegistryMsg::EvictIdle);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Route { user, msg } => state.route(&myself, user, msg).await,
            RegistryMsg::Invalidate { user } => {
                state.clear_failures(&user);
                if let Some(entry) = state.sessions.remove(&user) {
                    drop(entry.actor.send_message(SessionMsg::Retire));
                }
            }
            RegistryMsg::Stop { user, reply } => {
                state.clear_failures(&user);
                let running = state.sessions.remove(&user);
                if let Some(entry) = &running {
                    entry.actor.stop(Some("stopped on request".into()));
                }
                drop(reply.send(running.is_some()));
            }
            RegistryMsg::Status(reply) => {
                let mut status =
                    RegistryStatus { sessions: state.sessions.len(), failed: state.failed.len(), ..Default::default() };
                for entry in state.sessions.values() {
                    status.connections += entry.counters.connections.load(Ordering::Relaxed);
                    status.in_flight += entry.counters.in_flight.load(Ordering::Relaxed);
                }
                drop(reply.send(status));
            }
            RegistryMsg::Lookup { user, reply } => {
                drop(reply.send(state.sessions.get(&user).map(|e| e.actor.clone())));
            }
            RegistryMsg::EvictIdle => {
                let Some(idle) = state.policy.idle_timeout else {
                    return Ok(());
                };
                let now = Instant::now();
                let idle_users: Vec<String> = state
                    .sessions
                    .iter()
                    .filter(|(_, e)| {
                        now.duration_since(e.last_used) >= idle && e.counters.in_flight.load(Ordering::Relaxed) == 0
                    })
                    .map(|(user, _)| user.clone())
                    .collect();
                for user in idle_users {
                    if let Some(entry) = state.sessions.remove(&user) {
                        tracing::debug!(%user, "stopping idle session");
                        entry.actor.stop(Some("idle".into()));
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegistryMsg>,
        event: SupervisionEvent,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden on purpose: ractor's default stops the supervisor when any child ends.
        match event {
            SupervisionEvent::ActorTerminated(cell, _last_state, reason) => {
                // `_last_state` holds the session's credentials; it is dropped (and wiped) here.
                if let Some(user) = state.forget(cell.get_id()) {
                    tracing::debug!(%user, reason = reason.as_deref().unwrap_or(""), "session ended");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(user) = state.forget(cell.get_id()) {
                    let now = Instant::now();
                    let window = state.policy.restart_window;
                    let failures = state.failures.entry(user.clone()).or_default();
                    failures.push_back(now);
                    while failures.front().is_some_and(|t| now.duration_since(*t) > window) {
                        failures.pop_front();
                    }
                    let count = failures.len();
                    if count > state.policy.max_restarts as usize {
                        state.failed.insert(user.clone());
                        tracing::error!(%user, failures = count, "session failed too often; marked failed");
                    } else {
                        tracing::warn!(%user, failures = count, %error, "session failed; the next request restarts it");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
