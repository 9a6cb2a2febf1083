//! `Supervisor`: the root of the tree. It starts the [`Registry`] and the [`TokenRefresher`]
//! linked to itself and restarts either when it dies, publishing the new instance through a
//! [`SharedRef`] so the embedding handle and the refresher always reach the live one.
//!
//! Messages: [`SupervisorMsg`]. Children: the registry, the refresher.
//! Restart policy: a dead child is restarted at once; after more than 10 restarts of a child in
//! a minute, restarts wait a second each (a child that cannot start does not spin the CPU).
//! Nothing is lost by a restart: sessions and the schedule are rebuilt from the store.

use std::collections::VecDeque;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use crate::refresher::{RefresherArgs, RefresherMsg, TokenRefresher};
use crate::registry::{Registry, RegistryArgs, RegistryMsg};
use crate::shared_ref::SharedRef;

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// Start the registry again.
    RestartRegistry,
    /// Start the refresher again.
    RestartRefresher,
    /// Stop both children for good (shutdown); they are not restarted.
    Shutdown,
}

/// Start-up arguments.
pub struct SupervisorArgs {
    /// The registry's arguments (reused for every restart).
    pub registry: RegistryArgs,
    /// The refresher's arguments; `None` runs no refresher.
    pub refresher: Option<RefresherArgs>,
    /// Where the live registry is published.
    pub registry_ref: SharedRef<RegistryMsg>,
    /// Where the live refresher is published.
    pub refresher_ref: SharedRef<RefresherMsg>,
}

/// The actor.
pub struct Supervisor;

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    registry: Option<ActorId>,
    refresher: Option<ActorId>,
    registry_restarts: VecDeque<Instant>,
    refresher_restarts: VecDeque<Instant>,
    stopping: bool,
}

/// Whether another restart now stays within 10 per minute (recording it).
fn restart_now(restarts: &mut VecDeque<Instant>) -> bool {
    let now = Instant::now();
    while restarts.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
        restarts.pop_front();
    }
    restarts.push_back(now);
    restarts.len() <= 10
}

impl SupervisorState {
    async fn start_registry(&mut self, myself: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        let (registry, _) = Actor::spawn_linked(None, Registry, self.args.registry.clone(), myself.get_cell()).await?;
        self.registry = Some(registry.get_id());
        self.args.registry_ref.set(Some(registry));
        Ok(())
    }

    async fn start_refresher(&mut self, myself: &ActorRef<SupervisorMsg>) -> Result<(), ActorProcessingErr> {
        let Some(args) = self.args.refresher.clone() else { return Ok(()) };
        let (refresher, _) = Actor::spawn_linked(None, TokenRefresher, args, myself.get_cell()).await?;
        self.refresher = Some(refresher.get_id());
        self.args.refresher_ref.set(Some(refresher));
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            args,
            registry: None,
            refresher: None,
            registry_restarts: VecDeque::new(),
            refresher_restarts: VecDeque::new(),
            stopping: false,
        };
        state.start_registry(&myself).await?;
        state.start_refresher(&myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.stopping {
            return Ok(());
        }
        match msg {
            SupervisorMsg::RestartRegistry => {
                if let Err(e) = state.start_registry(&myself).await {
                    tracing::error!(error = %e, "restarting the registry failed; retrying");
                    myself.send_after(Duration::from_secs(1), || SupervisorMsg::RestartRegistry);
                }
            }
            SupervisorMsg::RestartRefresher => {
                if let Err(e) = state.start_refresher(&myself).await {
                    tracing::error!(error = %e, "restarting the token refresher failed; retrying");
                    myself.send_after(Duration::from_secs(1), || SupervisorMsg::RestartRefresher);
                }
            }
            SupervisorMsg::Shutdown => {
                state.stopping = true;
                if let Some(refresher) = state.args.refresher_ref.get() {
                    refresher.stop(Some("shutdown".into()));
                }
                if let Some(registry) = state.args.registry_ref.get() {
                    let _ = registry.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
                }
                state.args.registry_ref.set(None);
                state.args.refresher_ref.set(None);
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failure) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell.get_id(), reason.clone()),
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error.to_string())),
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        if state.registry == Some(id) {
            state.registry = None;
            state.args.registry_ref.set(None);
            tracing::error!(
                reason = failure.as_deref().unwrap_or(""),
                "the registry died; restarting it (every session restarts on its next request)"
            );
            if restart_now(&mut state.registry_restarts) {
                drop(myself.send_message(SupervisorMsg::RestartRegistry));
            } else {
                myself.send_after(Duration::from_secs(1), || SupervisorMsg::RestartRegistry);
            }
        } else if state.refresher == Some(id) {
            state.refresher = None;
            state.args.refresher_ref.set(None);
            tracing::warn!(reason = failure.as_deref().unwrap_or(""), "the token refresher died; restarting it");
            if restart_now(&mut state.refresher_restarts) {
                drop(myself.send_message(SupervisorMsg::RestartRefresher));
            } else {
                myself.send_after(Duration::from_secs(1), || SupervisorMsg::RestartRefresher);
            }
        }
        Ok(())
    }
}
