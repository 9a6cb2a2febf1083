//! The embedding API: [`Warden::start`] and the cheap-to-clone [`WardenHandle`] a Rust host
//! uses to drive the actors. Every method names its user; there is no ambient current user.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef, RpcReplyPort};
use rmcp::model::{CallToolResult, JsonObject};
use serde::Serialize;
use warden_actors::{
    CallRequest, GrantSource, RefreshLead, RefreshPolicy, RefresherArgs, RefresherMsg, RefresherStatus, RegistryArgs,
    RegistryMsg, ServerHandle, SessionMsg, SessionPolicy, SharedRef, Supervisor, SupervisorArgs, SupervisorMsg,
    ToolList, UserLoader,
};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::mcp::{ConnectSettings, McpServer};
use crate::model::{ServerAuth, ServerConfig, ServerName, Transport, UserId};
use crate::oauth::{OAuth, OAuthCounts, callback::CallbackListener};
use crate::policy;
use crate::store::{MCPCredentialStore, ServerSummary};

/// Longest deadline a caller may ask for.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Extra time the handle waits beyond a call's deadline before giving up on the session
/// (the session enforces the deadline itself; this only guards against a stuck mailbox).
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// A running warden: the actor tree over a store.
pub struct Warden {
    handle: WardenHandle,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: tokio::task::JoinHandle<()>,
    callback: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

/// A cheap-to-clone handle over a running warden.
#[derive(Clone)]
pub struct WardenHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: MCPCredentialStore,
    registry: SharedRef<RegistryMsg>,
    refresher: SharedRef<RefresherMsg>,
    config: Arc<Config>,
    settings: Arc<ConnectSettings>,
    oauth: Arc<OAuth>,
    closing: AtomicBool,
}

impl std::fmt::Debug for WardenHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WardenHandle").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

/// Counts for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Running user sessions.
    pub sessions: usize,
    /// Open MCP connections.
    pub connections: usize,
    /// Calls and listings in progress.
    pub in_flight: usize,
    /// Users whose session failed too often and is stopped.
    pub failed_sessions: usize,
    /// Grants by status.
    pub grants: GrantCounts,
    /// OAuth refreshes and authorizations since start.
    pub oauth: OAuthCounts,
    /// Grants on the token refresher's schedule.
    pub refresh_scheduled: usize,
}

/// Grants by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GrantCounts {
    /// Usable.
    pub active: i64,
    /// Waiting for the user to authorize again.
    pub reauthorization_required: i64,
}

/// A started authorization: the URL the user should open, and when the pending state expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationStart {
    /// The authorization server's URL, with PKCE challenge, state and resource.
    pub authorization_url: String,
    /// When the pending authorization expires (Unix seconds).
    pub expires_at: i64,
}

/// How an authorization comes back: the whole callback URL the browser was sent to, or its
/// parts (for hosts that own the redirect URI).
#[derive(Debug)]
pub enum AuthorizationCallback {
    /// The redirect URL with `code`, `state` and perhaps `iss` in its query.
    Url(crate::Secret),
    /// The parts.
    Parts {
        /// The `state` parameter.
        state: crate::Secret,
        /// The authorization code.
        code: crate::Secret,
        /// The RFC 9207 `iss` parameter, if the server sent one.
        iss: Option<String>,
    },
}

/// Reads the refresher's schedule from the sealed store.
struct StoreGrants(MCPCredentialStore);

#[async_trait::async_trait]
impl GrantSource for StoreGrants {
    async fn active_grants(&self) -> Result<Vec<(String, String, Option<i64>)>, Error> {
        Ok(self.0.active_grants().await?.into_iter().map(|g| (g.user, g.server, g.expires_at)).collect())
    }
}

/// Loads a user's servers from the sealed store.
struct StoreLoader {
    store: MCPCredentialStore,
    settings: Arc<ConnectSettings>,
}

#[async_trait::async_trait]
impl UserLoader for StoreLoader {
    async fn load(&self, user: &str) -> Result<Vec<Arc<dyn ServerHandle>>, Error> {
        let servers = self.store.load_servers(user).await?;
        Ok(servers
            .into_iter()
            .map(|s| {
                Arc::new(McpServer::new(user.to_owned(), s.config, self.settings.clone())) as Arc<dyn ServerHandle>
            })
            .collect())
    }
}

impl Warden {
    /// Starts warden with keys from the environment (see [`crate::keys`]) and the store named
    /// by `config.database.url`.
    pub async fn start(config: Config) -> Result<Warden, Error> {
        let (keyring, _) = crate::keys::load_keyring(&config.keys)
            .map_err(|e| Error::new(ErrorKind::InvalidRequest, e.to_string()))?;
        let store =
            MCPCredentialStore::connect(&config.database.url, config.database.max_connections, Arc::new(keyring))
                .await?;
        Self::start_with_store(config, store).await
    }

    /// Starts warden over an open store: the supervision tree (registry, token refresher) and,
    /// if `oauth.callback_listen` is set, the OAuth callback listener.
    pub async fn start_with_store(config: Config, store: MCPCredentialStore) -> Result<Warden, Error> {
        let config = Arc::new(config);
        let callback = match config.oauth.callback_listen.as_str() {
            "" => None,
            listen => Some(CallbackListener::bind(listen, &config.oauth.callback_path).await.map_err(|e| {
                Error::new(ErrorKind::InvalidRequest, format!("cannot listen for OAuth callbacks on {listen}: {e}"))
            })?),
        };
        let redirect_uri = match &callback {
            Some(listener) if config.oauth.redirect_uri.is_empty() => listener
                .redirect_uri()
                .map_err(|e| Error::internal(format!("the callback listener has no address: {e}")))?,
            _ => config.redirect_uri(),
        };
        let lead = RefreshLead { min_s: config.oauth.refresh_lead_s, fraction: config.oauth.refresh_lead_fraction };
        let oauth = OAuth::new(
            store.clone(),
            redirect_uri,
            i64::try_from(config.oauth.pending_ttl_s).unwrap_or(600),
            config.policy.allow_private,
            lead,
        );
        let settings = Arc::new(ConnectSettings {
            connect_timeout: Duration::from_millis(config.sessions.connect_timeout_ms),
            policy: config.policy.clone(),
            stdio_inherit_env: config.policy.stdio_inherit_env.clone(),
            oauth: oauth.clone(),
            lifecycle: crate::mcp::lifecycle(&config.sessions.lifecycle),
            max_concurrent_requests: config.sessions.max_concurrent_requests,
        });
        let policy = SessionPolicy {
            idle_timeout: (config.sessions.idle_timeout_s > 0)
                .then(|| Duration::from_secs(config.sessions.idle_timeout_s)),
            max_restarts: config.sessions.max_restarts,
            restart_window: Duration::from_secs(config.sessions.restart_window_s),
            list_timeout: config.sessions.call_timeout(),
        };
        let loader = Arc::new(StoreLoader { store: store.clone(), settings: settings.clone() });
        let (registry, refresher) = (SharedRef::default(), SharedRef::default());
        let refresher_args = config.oauth.background_refresh.then(|| RefresherArgs {
            source: Arc::new(StoreGrants(store.clone())),
            registry: registry.clone(),
            policy: RefreshPolicy { lead, ..RefreshPolicy::default() },
        });
        let args = SupervisorArgs {
            registry: RegistryArgs { loader, policy },
            refresher: refresher_args,
            registry_ref: registry.clone(),
            refresher_ref: refresher.clone(),
        };
        let (supervisor, supervisor_task) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| Error::internal(format!("starting the supervision tree failed: {e}")))?;
        let inner =
            Arc::new(Inner { store, registry, refresher, config, settings, oauth, closing: AtomicBool::new(false) });
        let handle = WardenHandle { inner };
        let callback = callback.map(|listener| {
            let (stop, mut stopped) = tokio::sync::watch::channel(false);
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            (stop, tokio::spawn(listener.serve(handle.clone(), shutdown)))
        });
        Ok(Warden { handle, supervisor, supervisor_task, callback })
    }

    /// A handle for callers.
    pub fn handle(&self) -> WardenHandle {
        self.handle.clone()
    }

    /// The redirect URI authorization servers send users back to.
    pub fn redirect_uri(&self) -> &str {
        self.handle.inner.oauth.redirect_uri()
    }

    /// Stops gracefully: refuses new requests, lets in-flight ones finish for up to `grace`,
    /// then stops every session (their credentials are wiped as their state drops), the
    /// refresher and the callback listener, and closes the store.
    pub async fn shutdown(self, grace: Duration) {
        let inner = &self.handle.inner;
        inner.closing.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            match self.handle.registry_status().await {
                Ok(s) if s.in_flight > 0 => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => break,
            }
        }
        if let Some((stop, task)) = self.callback {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        drop(self.supervisor.send_message(SupervisorMsg::Shutdown));
        // The registry's exit kills every session; wait for it so their state is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(15), self.supervisor_task).await;
        inner.store.close().await;
    }
}

impl WardenHandle {
    /// Creates or replaces a server config of `user`; returns its version. The user's
    /// session drops what it holds for the old config.
    pub async fn put_server(&self, user: &str, config: ServerConfig) -> Result<i64, Error> {
        self.open()?;
        UserId::parse(user)?;
        config.validate()?;
        policy::precheck(&self.inner.config.policy, &config.transport)?;
        let version = self.inner.store.put_server(user, &config).await?;
        self.invalidate(user);
        Ok(version)
    }

    /// Lists `user`'s server configs (no secrets).
    pub async fn list_servers(&self, user: &str) -> Result<Vec<ServerSummary>, Error> {
        self.open()?;
        Ok(self.inner.store.list_servers(user).await?)
    }

    /// Removes a server config of `user`; returns whether it existed.
    pub async fn remove_server(&self, user: &str, name: &str) -> Result<bool, Error> {
        self.open()?;
        let removed = self.inner.store.remove_server(user, name).await?;
        self.invalidate(user);
        self.inner.refresher.send(RefresherMsg::Unschedule { user: user.to_owned(), server: name.to_owned() });
        Ok(removed)
    }

    /// Lists `user`'s tools across all their servers, each tagged with its server.
    pub async fn list_tools(&self, user: &str) -> Result<ToolList, Error> {
        self.open()?;
        UserId::parse(user)?;
        let wait = self.inner.config.sessions.call_timeout()
            + Duration::from_millis(self.inner.config.sessions.connect_timeout_ms);
        self.ask(user, SessionMsg::ListTools, wait).await
    }

    /// Calls `tool` on `user`'s server `server`, with `timeout` or the configured default.
    pub async fn call_tool(
        &self,
        user: &str,
        server: &str,
        tool: &str,
        arguments: Option<JsonObject>,
        timeout: Option<Duration>,
    ) -> Result<CallToolResult, Error> {
        self.open()?;
        UserId::parse(user)?;
        ServerName::parse(server)?;
        if tool.is_empty() || tool.len() > 256 {
            return Err(Error::invalid("tool", "must be 1 to 256 bytes"));
        }
        let timeout = timeout.unwrap_or_else(|| self.inner.config.sessions.call_timeout());
        if timeout.is_zero() || timeout > MAX_CALL_TIMEOUT {
            return Err(Error::invalid(
                "timeout_ms",
                format!("must be between 1 and {} ms", MAX_CALL_TIMEOUT.as_millis()),
            ));
        }
        let request = CallRequest { server: server.to_owned(), tool: tool.to_owned(), arguments, timeout };
        self.ask(user, |reply| SessionMsg::Call(request, reply), timeout).await.map_err(|e| match e.kind() {
            // The handle's own wait ran out: report it as the call's timeout.
            ErrorKind::Timeout if e.message().starts_with("no answer") => Error::timeout(user, server, timeout),
            _ => e,
        })
    }

    /// Starts a fresh OAuth authorization for `user`'s server `server` and returns the URL the
    /// user should open.
    pub async fn begin_authorization(&self, user: &str, server: &str) -> Result<AuthorizationStart, Error> {
        self.open()?;
        let stored =
            self.inner.store.load_server(user, server).await?.ok_or_else(|| Error::unknown_server(user, server))?;
        if !matches!((&stored.config.transport, &stored.config.auth), (Transport::Http { .. }, ServerAuth::Oauth(_))) {
            return Err(Error::invalid("server", format!("server {server} of user {user} does not use OAuth")));
        }
        McpServer::new(user.to_owned(), stored.config, self.inner.settings.clone()).begin_authorization().await
    }

    /// Finishes an authorization from its callback; returns the (user, server) it was for.
    pub async fn complete_authorization(&self, callback: AuthorizationCallback) -> Result<(String, String), Error> {
        self.complete_authorization_for(callback, None).await
    }

    /// Like [`Self::complete_authorization`], refused with `forbidden` unless the authorization
    /// belongs to `expected_user` (for connections bound to one user).
    pub async fn complete_authorization_for(
        &self,
        callback: AuthorizationCallback,
        expected_user: Option<&str>,
    ) -> Result<(String, String), Error> {
        self.open()?;
        // In a task of its own: once the code is exchanged, the grant is stored even if the
        // caller goes away (the code cannot be used twice).
        let (oauth, expected) = (self.inner.oauth.clone(), expected_user.map(str::to_owned));
        let (user, server) = tokio::spawn(async move { oauth.complete(callback, expected.as_deref()).await })
            .await
            .map_err(|_| Error::internal("finishing the authorization failed"))??;
        // The session picks up the new grant; the refresher schedules it.
        self.invalidate(&user);
        let expires_at = self
            .inner
            .store
            .active_grants()
            .await?
            .into_iter()
            .find(|g| g.user == user && g.server == server)
            .and_then(|g| g.expires_at);
        self.inner.refresher.send(RefresherMsg::Schedule { user: user.clone(), server: server.clone(), expires_at });
        Ok((user, server))
    }

    /// Stops `user`'s session now (dropping its credentials and connections); returns whether
    /// one was running. Also clears a failed mark.
    pub async fn stop_session(&self, user: &str) -> Result<bool, Error> {
        UserId::parse(user)?;
        let registry = self.live_registry()?;
        ractor::call_t!(registry, |reply| RegistryMsg::Stop { user: user.to_owned(), reply }, 5000)
            .map_err(|_| Error::internal("the registry did not answer"))
    }

    /// Counts of sessions, connections and grants.
    pub async fn status(&self) -> Result<Status, Error> {
        let registry = self.registry_status().await?;
        let (active, reauthorization_required) = self.inner.store.grant_counts().await?;
        let refresher = self.refresher_status().await;
        Ok(Status {
            sessions: registry.sessions,
            connections: registry.connections,
            in_flight: registry.in_flight,
            failed_sessions: registry.failed,
            grants: GrantCounts { active, reauthorization_required },
            oauth: self.inner.oauth.stats().snapshot(),
            refresh_scheduled: refresher.map_or(0, |r| r.scheduled),
        })
    }

    /// The token refresher's counts, if it runs.
    pub async fn refresher_status(&self) -> Option<RefresherStatus> {
        let refresher = self.inner.refresher.get()?;
        ractor::call_t!(refresher, RefresherMsg::Status, 5000).ok()
    }

    /// The registry actor, for hosts that speak ractor directly (`None` only while it is being
    /// restarted or after shutdown).
    pub fn registry(&self) -> Option<ActorRef<RegistryMsg>> {
        self.inner.registry.get()
    }

    /// The token refresher actor, if it runs.
    pub fn refresher(&self) -> Option<ActorRef<RefresherMsg>> {
        self.inner.refresher.get()
    }

    fn live_registry(&self) -> Result<ActorRef<RegistryMsg>, Error> {
        self.inner.registry.get().ok_or_else(|| Error::internal("the registry is not running"))
    }

    /// The store (sealed; for hosts that manage configs in bulk).
    pub fn store(&self) -> &MCPCredentialStore {
        &self.inner.store
    }

    /// The configuration warden runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    async fn registry_status(&self) -> Result<warden_actors::RegistryStatus, Error> {
        let registry = self.live_registry()?;
        ractor::call_t!(registry, RegistryMsg::Status, 5000).map_err(|_| Error::internal("the registry did not answer"))
    }

    fn open(&self) -> Result<(), Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            Err(Error::new(ErrorKind::Overloaded, "warden is shutting down"))
        } else {
            Ok(())
        }
    }

    fn invalidate(&self, user: &str) {
        // If the registry is gone there is no session to invalidate.
        self.inner.registry.send(RegistryMsg::Invalidate { user: user.to_owned() });
    }

    /// Sends a request to `user`'s session through the registry and waits for the answer.
    async fn ask<T>(
        &self,
        user: &str,
        make: impl FnOnce(RpcReplyPort<Result<T, Error>>) -> SessionMsg,
        wait: Duration,
    ) -> Result<T, Error> {
        let (tx, rx) = ractor::concurrency::oneshot();
        let msg = RegistryMsg::Route { user: user.to_owned(), msg: make(tx.into()) };
        if !self.inner.registry.send(msg) {
            return Err(Error::internal("the registry is not running"));
        }
        match tokio::time::timeout(wait + REPLY_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::internal(format!("the session of user {user} stopped before answering"))),
            Err(_) => Err(Error::new(ErrorKind::Timeout, format!("no answer from the session of user {user}"))),
        }
    }
}
