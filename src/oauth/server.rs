//! `OAuthServer`: one user's OAuth state for one MCP server. It lives in the user's session
//! (inside that server's `McpServer`) and owns the rmcp `AuthorizationManager` for
//! (user, server), wrapped in the `AuthClient` the MCP transport sends requests through, so a
//! background refresh and a call that finds its token expired take the same lock: one refresh
//! at a time, and whoever comes second sees the fresh token instead of refreshing again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession, OAuthClientConfig,
};

use super::stores::{GrantStore, PendingFlow, PendingStore};
use super::{OAuth, map_auth_error};
use crate::error::{Error, ErrorKind};
use crate::model::OAuthSettings;
use crate::store::{AuditEvent, GrantStatus, now_unix};
use crate::warden::AuthorizationStart;

/// One user's OAuth state for one server.
pub(crate) struct OAuthServer {
    oauth: Arc<OAuth>,
    user: String,
    server: String,
    url: String,
    settings: OAuthSettings,
    http: reqwest::Client,
    grants: GrantStore,
    pending: PendingStore,
    client: tokio::sync::Mutex<Option<AuthClient<reqwest::Client>>>,
}

impl OAuthServer {
    /// State for (user, server) at `url`; `http` is the policy-checked client MCP requests use.
    pub(crate) fn new(
        oauth: Arc<OAuth>,
        user: &str,
        server: &str,
        url: &str,
        settings: OAuthSettings,
        http: reqwest::Client,
    ) -> Self {
        let grants = GrantStore::new(oauth.store.clone(), user, server, oauth.clone());
        let pending = PendingStore::new(oauth.store.clone(), user, server);
        Self {
            oauth,
            user: user.to_owned(),
            server: server.to_owned(),
            url: url.to_owned(),
            settings,
            http,
            grants,
            pending,
            client: tokio::sync::Mutex::new(None),
        }
    }

    fn auth_error(&self, e: &AuthError) -> Error {
        map_auth_error(&self.user, &self.server, e)
    }

    async fn new_manager(&self) -> Result<AuthorizationManager, Error> {
        let manager = if self.oauth.allow_private {
            AuthorizationManager::new_allowing_private_addresses(self.url.as_str()).await
        } else {
            AuthorizationManager::new(self.url.as_str()).await
        };
        let mut manager = manager.map_err(|e| self.auth_error(&e))?;
        manager.set_credential_store(self.grants.clone());
        manager.set_state_store(self.pending.clone());
        Ok(manager)
    }

    fn client_secret(&self) -> Option<String> {
        self.settings.client_secret.as_ref().map(|s| s.expose_secret().to_owned())
    }

    /// The `AuthClient` for the MCP transport, built from the stored grant. Without a usable
    /// grant it sends requests unauthenticated, so the server's 401 brings the challenge that
    /// seeds discovery (its `resource_metadata` and `scope`); that client is not kept.
    pub(crate) async fn auth_client(&self) -> Result<AuthClient<reqwest::Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let Some(Ok(grant)) = self.grants.read().await? else {
            return Ok(AuthClient::new(self.http.clone(), self.new_manager().await?));
        };
        let context = self.grants.context();
        let mut manager = self.new_manager().await?;
        let metadata = match context.metadata {
            Some(metadata) => metadata,
            None => manager.resolve_metadata().await.map_err(|e| self.auth_error(&e))?.metadata,
        };
        manager.set_metadata(metadata);
        let mut config = OAuthClientConfig::new(grant.credentials.client_id.clone(), context.redirect_uri.clone())
            .with_scopes(grant.credentials.granted_scopes.clone());
        if let Some(secret) = self.client_secret().or(context.client_secret) {
            config = config.with_client_secret(secret);
        }
        manager.configure_client(config).map_err(|e| self.auth_error(&e))?;
        let client = AuthClient::new(self.http.clone(), manager);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops the built client (after the server refused its token), so the next connection
    /// starts again from the database.
    pub(crate) async fn reset(&self) {
        self.client.lock().await.take();
        self.grants.forget();
    }

    /// The server refused the token (HTTP 401): authorize again, or anew.
    pub(crate) async fn unauthorized(&self, challenge: Option<&str>) -> Error {
        self.reset().await;
        match self.grants.read().await {
            Ok(Some(Err(_))) => self.reauthorization_required(challenge).await,
            Ok(_) => self.authorization_required(challenge).await,
            Err(e) => e.into(),
        }
    }

    /// `authorization_required`, with a URL (reusing a pending authorization that is still
    /// good for at least a minute, so repeated calls do not register new clients).
    pub(crate) async fn authorization_required(&self, challenge: Option<&str>) -> Error {
        let message = format!("server {} of user {} needs authorization: open the URL", self.server, self.user);
        match self.begin(challenge, true).await {
            Ok(start) => {
                Error::new(ErrorKind::AuthorizationRequired, message).with_authorization_url(start.authorization_url)
            }
            Err(e) => e,
        }
    }

    /// `reauthorization_required`, with a URL.
    pub(crate) async fn reauthorization_required(&self, challenge: Option<&str>) -> Error {
        let message = format!(
            "the grant of user {} for server {} was rejected; authorize again at the URL",
            self.user, self.server
        );
        match self.begin(challenge, true).await {
            Ok(start) => {
                Error::new(ErrorKind::ReauthorizationRequired, message).with_authorization_url(start.authorization_url)
            }
            Err(e) => Error::new(ErrorKind::ReauthorizationRequired, format!("{message} ({})", e.message())),
        }
    }

    /// Starts an authorization: discovery (seeded by the server's challenge if there is one),
    /// client identity (pre-registered, then a client-ID metadata document, then dynamic
    /// registration), PKCE; the pending state is sealed in the database.
    pub(crate) async fn begin(&self, challenge: Option<&str>, reuse: bool) -> Result<AuthorizationStart, Error> {
        let reusable = if reuse { self.oauth.store.latest_pending(&self.user, &self.server).await? } else { None };
        if let Some(pending) = reusable
            && pending.expires_at - now_unix() > 60
            && let Ok(payload) = serde_json::from_slice::<super::stores::PendingPayload>(&pending.payload)
        {
            return Ok(AuthorizationStart {
                authorization_url: payload.authorization_url,
                expires_at: pending.expires_at,
            });
        }
        let mut manager = self.new_manager().await?;
        let resolution = manager.resolve_metadata_from_challenge(challenge).await.map_err(|e| self.auth_error(&e))?;
        let metadata = resolution.metadata.clone();
        manager.set_metadata(resolution.metadata);
        let redirect_uri = self.oauth.redirect_uri.clone();
        let mut request = AuthorizationRequest::new(redirect_uri.clone()).with_client_name("warden");
        if !self.settings.scopes.is_empty() {
            request = request.with_scopes(self.settings.scopes.clone());
        }
        if let Some(challenge) = challenge {
            request = request.with_challenge(challenge.to_owned());
        }
        // Client identity, in the MCP order: a pre-registered client; a client-ID metadata
        // document if the authorization server supports them; dynamic registration. warden
        // registers itself (rather than leaving it to the session) to keep any client secret
        // the server issues: finishing the flow, and every refresh, need it.
        let supports_cimd = metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let mut client_secret = self.client_secret();
        if let Some(client_id) = &self.settings.client_id {
            request = request.with_preregistered_client(client_id.clone());
            if let Some(secret) = &client_secret {
                request = request.with_client_secret(secret.clone());
            }
        } else if let Some(url) = self.settings.client_metadata_url.as_ref().filter(|_| supports_cimd) {
            request = request.with_client_metadata_url(url.clone());
        } else if metadata.registration_endpoint.is_some() {
            let scopes = if self.settings.scopes.is_empty() {
                manager.select_scopes(None, &[])
            } else {
                self.settings.scopes.clone()
            };
            let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let registered =
                manager.register_client("warden", &redirect_uri, &scope_refs).await.map_err(|e| self.auth_error(&e))?;
            request = request.with_preregistered_client(registered.client_id);
            client_secret = registered.client_secret;
            if let Some(secret) = &client_secret {
                request = request.with_client_secret(secret.clone());
            }
        }
        let session = AuthorizationSession::new(manager, request).await.map_err(|(_, e)| self.auth_error(&e))?;
        let (client_id, _) = session.get_credentials().await.map_err(|e| self.auth_error(&e))?;
        let authorization_url = session.get_authorization_url().to_owned();
        let flow = PendingFlow {
            client_id,
            client_secret,
            redirect_uri,
            metadata,
            authorization_url: authorization_url.clone(),
            challenge: challenge.map(str::to_owned),
        };
        let expires_at = self.pending.persist(flow, self.oauth.pending_ttl_s).await?;
        let _ = self.oauth.store.audit(&self.user, Some(&self.server), AuditEvent::AuthorizationStarted, "").await;
        Ok(AuthorizationStart { authorization_url, expires_at })
    }

    /// Step-up after a 403 `insufficient_scope`: a new authorization URL for the union of the
    /// granted scopes and the required ones.
    pub(crate) async fn step_up(&self, required_scope: Option<&str>, challenge: &str) -> Error {
        let message = format!("server {} of user {} needs a larger scope: open the URL", self.server, self.user);
        let client = match self.auth_client().await {
            Ok(client) => client,
            Err(e) => return e,
        };
        let granted = self.grants.cached().map(|g| g.credentials.granted_scopes).unwrap_or_default();
        let mut wanted: Vec<String> = granted;
        for scope in required_scope.unwrap_or_default().split_whitespace() {
            if !wanted.iter().any(|s| s == scope) {
                wanted.push(scope.to_owned());
            }
        }
        let manager = client.auth_manager.clone();
        let url = {
            let manager = manager.lock().await;
            match manager.request_scope_upgrade(&wanted.join(" ")).await {
                Ok(url) => url,
                Err(e) => return self.auth_error(&e),
            }
        };
        let context = self.grants.context();
        let Some(metadata) = context.metadata else {
            return self.authorization_required(Some(challenge)).await;
        };
        let client_id = self.grants.cached().map(|g| g.credentials.client_id).unwrap_or_default();
        let flow = PendingFlow {
            client_id,
            client_secret: self.client_secret().or(context.client_secret),
            redirect_uri: context.redirect_uri,
            metadata,
            authorization_url: url.clone(),
            challenge: Some(challenge.to_owned()),
        };
        match self.pending.persist(flow, self.oauth.pending_ttl_s).await {
            Ok(_) => Error::new(ErrorKind::AuthorizationRequired, message).with_authorization_url(url),
            Err(e) => e.into(),
        }
    }

    /// Whether the cached grant must be refreshed before a call: when rmcp itself would refresh
    /// inside the request (less than `max(1 s, min(30 s, lifetime / 2))` left). That is later
    /// than the refresher's lead, so with the refresher running a call only refreshes if the
    /// refresher fell behind. No database access: this is on every call's path.
    pub(crate) fn due(&self) -> bool {
        let Some(grant) = self.grants.cached() else { return false };
        let (Some(expires_at), Some(lifetime)) = (grant.expires_at, super::stores::lifetime_s(&grant.credentials))
        else {
            return false;
        };
        let buffer = i64::try_from((lifetime / 2).clamp(1, 30)).unwrap_or(30);
        expires_at - now_unix() < buffer
    }

    /// Refreshes in a task of its own, which a caller's cancellation cannot stop: once the
    /// authorization server has rotated the refresh token, the new one is stored even if the
    /// session that asked is killed or the call times out (a dropped refresh would lose it,
    /// and the next refresh would present a used token).
    pub(crate) async fn refresh_detached(self: &Arc<Self>, origin: RefreshOrigin) -> Result<Option<i64>, Error> {
        let me = self.clone();
        tokio::spawn(async move { me.refresh(origin).await }).await.unwrap_or_else(|_| {
            Err(Error::internal(format!("the refresh of server {} of user {} failed", self.server, self.user)))
        })
    }

    /// Refreshes the grant if it is due (another refresh may just have happened; then this
    /// returns the new expiry without a request). Returns the expiry. Use
    /// [`Self::refresh_detached`].
    async fn refresh(&self, origin: RefreshOrigin) -> Result<Option<i64>, Error> {
        let client = self.auth_client().await?;
        let manager = client.auth_manager.clone();
        let manager = manager.lock().await;
        let grant = match self.grants.read().await? {
            None => {
                return Err(Error::new(
                    ErrorKind::AuthorizationRequired,
                    format!("server {} of user {} has no grant", self.server, self.user),
                ));
            }
            Some(Err(GrantStatus::ReauthorizationRequired | GrantStatus::Active)) => {
                return Err(self.reauthorization_required(None).await);
            }
            Some(Ok(grant)) => grant,
        };
        let lifetime = super::stores::lifetime_s(&grant.credentials).unwrap_or(0);
        if let Some(expires_at) = grant.expires_at {
            // A fifth of the lead as tolerance: the refresher comes early by up to 10% jitter.
            let lead = i64::try_from(self.oauth.lead.lead_s(lifetime)).unwrap_or(i64::MAX);
            if expires_at - now_unix() > lead + lead / 5 + 1 {
                return Ok(Some(expires_at));
            }
        }
        match manager.refresh_token().await {
            Ok(_) => {
                if origin == RefreshOrigin::Background {
                    self.oauth.stats.background_refreshes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(self.grants.cached().and_then(|g| g.expires_at))
            }
            Err(AuthError::TokenRefreshRejected(_) | AuthError::AuthorizationRequired) => {
                drop(manager);
                self.reset().await;
                Err(self.reauthorization_required(None).await)
            }
            Err(e) => {
                self.oauth.stats.failed_refreshes.fetch_add(1, Ordering::Relaxed);
                Err(self.auth_error(&e))
            }
        }
    }
}

/// Who asked for a refresh (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshOrigin {
    /// The token refresher, ahead of expiry.
    Background,
    /// A call that found its token due.
    Call,
}
