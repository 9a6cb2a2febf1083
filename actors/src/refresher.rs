//! `TokenRefresher`: renews OAuth grants ahead of expiry, whether or not anyone is calling.
//!
//! One schedule for every grant: a binary heap of due times and a single timer armed for the
//! earliest (no task per grant). A due grant is refreshed by asking its user's session (through
//! the registry) to refresh that server: the session owns the grant's rmcp manager, so a
//! background refresh and a call that meets an expired token take the same lock, and whoever
//! comes second finds the token fresh and does not refresh again. At most one refresh per grant
//! is in flight, and at most `max_concurrent` overall. Transient failures back off
//! exponentially; a grant that needs re-authorization leaves the schedule.
//!
//! Messages: [`RefresherMsg`]. Children: none. Restart policy: the [`crate::Supervisor`]
//! restarts it; on start it rebuilds the schedule from the store ([`GrantSource`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::registry::RegistryMsg;
use crate::session::SessionMsg;
use crate::shared_ref::SharedRef;

/// Where the refresher reads the grants to schedule when it starts.
#[async_trait]
pub trait GrantSource: Send + Sync + 'static {
    /// Every active grant: (user, server, expiry in Unix seconds if known).
    async fn active_grants(&self) -> Result<Vec<(String, String, Option<i64>)>, Error>;
}

/// How long before expiry to refresh: `max(min_s, fraction × lifetime)`, but never before 40%
/// of the token's life has passed (short-lived tokens would otherwise refresh continuously).
#[derive(Debug, Clone, Copy)]
pub struct RefreshLead {
    /// At least this many seconds before expiry.
    pub min_s: u64,
    /// Or this fraction of the lifetime, whichever is larger.
    pub fraction: f64,
}

impl RefreshLead {
    /// The lead for a token living `lifetime_s` seconds.
    pub fn lead_s(&self, lifetime_s: u64) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let fraction = (self.fraction * lifetime_s as f64) as u64;
        self.min_s.max(fraction).min(lifetime_s * 6 / 10)
    }
}

/// The refresher's settings.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// When to refresh.
    pub lead: RefreshLead,
    /// Up to this fraction of the lead is taken off at random, so a fleet does not stampede.
    pub jitter: f64,
    /// First retry delay after a transient failure; doubles per failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long one refresh may take.
    pub refresh_timeout: Duration,
    /// Most refreshes in flight at once.
    pub max_concurrent: usize,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            lead: RefreshLead { min_s: 60, fraction: 0.1 },
            jitter: 0.1,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            refresh_timeout: Duration::from_secs(60),
            max_concurrent: 16,
        }
    }
}

/// A grant, by owner.
pub type GrantKey = (String, String);

/// Messages to the refresher.
pub enum RefresherMsg {
    /// (Re)schedule a grant expiring at `expires_at` (Unix seconds; `None` drops it).
    Schedule {
        /// The user.
        user: String,
        /// The server.
        server: String,
        /// Its expiry.
        expires_at: Option<i64>,
    },
    /// Stop refreshing a grant.
    Unschedule {
        /// The user.
        user: String,
        /// The server.
        server: String,
    },
    /// Refresh what is due (the refresher's own timer).
    Tick,
    /// A refresh finished (sent by the refresher's own tasks).
    Done {
        /// The grant.
        key: GrantKey,
        /// Its new expiry, or why it failed.
        result: Result<Option<i64>, Error>,
    },
    /// What is scheduled.
    Status(RpcReplyPort<RefresherStatus>),
}

/// The refresher's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefresherStatus {
    /// Grants on the schedule.
    pub scheduled: usize,
    /// Refreshes in flight.
    pub in_flight: usize,
    /// Refreshes that succeeded since start.
    pub refreshed: u64,
    /// Refreshes that failed transiently since start.
    pub failed: u64,
    /// Grants dropped because they need (re-)authorization, since start.
    pub dropped: u64,
}

/// Start-up arguments.
#[derive(Clone)]
pub struct RefresherArgs {
    /// Where the schedule comes from at start.
    pub source: Arc<dyn GrantSource>,
    /// The registry, to reach sessions.
    pub registry: SharedRef<RegistryMsg>,
    /// Settings.
    pub policy: RefreshPolicy,
}

/// The actor.
pub struct TokenRefresher;

struct Entry {
    seq: u64,
    failures: u32,
}

/// The schedule.
pub struct RefresherState {
    args: RefresherArgs,
    heap: BinaryHeap<Reverse<(Instant, u64, GrantKey)>>,
    entries: HashMap<GrantKey, Entry>,
    in_flight: HashSet<GrantKey>,
    next_seq: u64,
    timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<RefresherMsg>>>>,
    status: RefresherStatus,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl RefresherState {
    /// When a grant expiring at `expires_at` should be refreshed.
    fn due_for(&self, expires_at: i64) -> Instant {
        let remaining = u64::try_from(expires_at - unix_now()).unwrap_or(0);
        let lead = self.args.policy.lead.lead_s(remaining);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let jitter_ms = (rand::random::<f64>() * self.args.policy.jitter * lead as f64 * 1000.0) as u64;
        let wait = Duration::from_secs(remaining.saturating_sub(lead)).saturating_sub(Duration::from_millis(jitter_ms));
        Instant::now() + wait
    }

    fn schedule_at(&mut self, key: GrantKey, due: Instant, failures: u32) {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.entries.insert(key.clone(), Entry { seq, failures });
        self.heap.push(Reverse((due, seq, key)));
    }

    /// Arms the one timer for the earliest entry.
    fn arm(&mut self, myself: &ActorRef<RefresherMsg>) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        // Drop stale heap entries (rescheduled or removed) from the top.
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.entries.get(key).is_some_and(|e| e.seq == *seq) {
                break;
            }
            self.heap.pop();
        }
        if let Some(Reverse((due, _, _))) = self.heap.peek() {
            let wait = due.saturating_duration_since(Instant::now());
            self.timer = Some(myself.send_after(wait, || RefresherMsg::Tick));
        }
    }

    fn start_due(&mut self, myself: &ActorRef<RefresherMsg>) {
        let now = Instant::now();
        let mut deferred = Vec::new();
        while self.in_flight.len() < self.args.policy.max_concurrent {
            let Some(Reverse((due, seq, key))) = self.heap.peek().cloned() else { break };
            if due > now {
                break;
            }
            self.heap.pop();
            if self.entries.get(&key).is_none_or(|e| e.seq != seq) {
                continue;
            }
            if self.in_flight.contains(&key) {
                deferred.push(Reverse((due, seq, key)));
                continue;
            }
            self.in_flight.insert(key.clone());
            let (registry, timeout, me) =
                (self.args.registry.clone(), self.args.policy.refresh_timeout, myself.clone());
            tokio::spawn(async move {
                let result = refresh(&registry, &key, timeout).await;
                drop(me.send_message(RefresherMsg::Done { key, result }));
            });
        }
        self.heap.extend(deferred);
    }

    fn done(&mut self, key: GrantKey, result: Result<Option<i64>, Error>) {
        self.in_flight.remove(&key);
        let failures = self.entries.get(&key).map_or(0, |e| e.failures);
        match result {
            Ok(Some(expires_at)) => {
                self.status.refreshed += 1;
                let due = self.due_for(expires_at);
                self.schedule_at(key, due, 0);
            }
            Ok(None) => {
                self.entries.remove(&key);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::AuthorizationRequired
                        | ErrorKind::ReauthorizationRequired
                        | ErrorKind::UnknownServer
                        | ErrorKind::NoToolsAvailable
                        | ErrorKind::InvalidRequest
                        | ErrorKind::Forbidden
                ) =>
            {
                tracing::info!(user = %key.0, server = %key.1, kind = %e.kind(), "grant leaves the refresh schedule");
                self.status.dropped += 1;
                self.entries.remove(&key);
            }
            Err(e) => {
                self.status.failed += 1;
                let policy = &self.args.policy;
                let backoff = policy.backoff_min.saturating_mul(1 << failures.min(16)).min(policy.backoff_max);
                tracing::warn!(user = %key.0, server = %key.1, kind = %e.kind(), retry_in = ?backoff, "refresh failed; retrying");
                self.schedule_at(key, Instant::now() + backoff, failures + 1);
            }
        }
    }
}

/// Asks the grant's session to refresh it.
async fn refresh(registry: &SharedRef<RegistryMsg>, key: &GrantKey, timeout: Duration) -> Result<Option<i64>, Error> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let msg = RegistryMsg::Route {
        user: key.0.clone(),
        msg: SessionMsg::Refresh { server: key.1.clone(), reply: tx.into() },
    };
    if !registry.send(msg) {
        return Err(Error::internal("the registry is not running"));
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::internal("the session stopped during the refresh")),
        Err(_) => Err(Error::new(ErrorKind::Timeout, "the refresh did not finish in time")),
    }
}

impl Actor for TokenRefresher {
    type Msg = RefresherMsg;
    type State = RefresherState;
    type Arguments = RefresherArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RefresherMsg>,
        args: RefresherArgs,
    ) -> Result<RefresherState, ActorProcessingErr> {
        Ok(RefresherState {
            args,
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            in_flight: HashSet::new(),
            next_seq: 0,
            timer: None,
            status: RefresherStatus::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RefresherMsg>,
        state: &mut RefresherState,
    ) -> Result<(), ActorProcessingErr> {
        // Rebuild the schedule from the store. If the store is down, retry soon.
        match state.args.source.active_grants().await {
            Ok(grants) => {
                let count = grants.len();
                for (user, server, expires_at) in grants {
                    let due = expires_at.map_or_else(Instant::now, |e| state.due_for(e));
                    state.schedule_at((user, server), due, 0);
                }
                tracing::info!(grants = count, "token refresher: schedule rebuilt from the store");
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresher: loading the schedule failed; retrying in 5 s");
                return Err(format!("loading the schedule failed: {e}").into());
            }
        }
        state.arm(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RefresherMsg>,
        msg: RefresherMsg,
        state: &mut RefresherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RefresherMsg::Schedule { user, server, expires_at: Some(expires_at) } => {
                let due = state.due_for(expires_at);
                state.schedule_at((user, server), due, 0);
            }
            RefresherMsg::Schedule { user, server, expires_at: None } | RefresherMsg::Unschedule { user, server } => {
                state.entries.remove(&(user, server));
            }
            RefresherMsg::Tick => state.start_due(&myself),
            RefresherMsg::Done { key, result } => {
                state.done(key, result);
                state.start_due(&myself);
            }
            RefresherMsg::Status(reply) => {
                let status = RefresherStatus {
                    scheduled: state.entries.len(),
                    in_flight: state.in_flight.len(),
                    ..state.status.clone()
                };
                drop(reply.send(status));
            }
        }
        state.arm(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RefresherMsg>,
        state: &mut RefresherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }
}

impl Drop for RefresherState {
    fn drop(&mut self) {
        // Also on kill, where post_stop does not run.
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RefreshLead;

    #[test]
    fn lead_times() {
        let lead = RefreshLead { min_s: 60, fraction: 0.1 };
        assert_eq!(lead.lead_s(3600), 360);
        assert_eq!(lead.lead_s(300), 60);
        assert_eq!(lead.lead_s(5), 3, "short tokens refresh after 40% of their life");
        assert_eq!(lead.lead_s(0), 0);
    }
}
