//! OAuth for MCP servers, through rmcp's auth: discovery (RFC 9728, RFC 8414), client
//! identity (pre-registered, client-ID metadata document, or dynamic registration), PKCE S256,
//! RFC 8707 `resource`, RFC 9207 `iss`, refresh, scope step-up. warden adds the sealed stores
//! behind rmcp's `CredentialStore`/`StateStore` and the flow's start and finish.
//!
//! # Layout
//! - `oauth/stores.rs` — `GrantStore` and `PendingStore` (rmcp's store traits, sealed).
//! - `oauth/server.rs` — `OAuthServer`: one user's OAuth state for one server (its rmcp
//!   `AuthorizationManager` inside an `AuthClient`), living in that user's session.
//! - `oauth/callback.rs` — the loopback callback listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::transport::auth::AuthError;
use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::store::MCPCredentialStore;

pub mod callback;
mod server;
mod stores;

pub(crate) use server::{OAuthServer, RefreshOrigin};

/// Process-wide OAuth settings and counters, shared by every user's [`OAuthServer`]s.
#[derive(Debug)]
pub struct OAuth {
    pub(crate) store: MCPCredentialStore,
    pub(crate) redirect_uri: String,
    pub(crate) pending_ttl_s: i64,
    pub(crate) allow_private: bool,
    pub(crate) lead: RefreshLead,
    pub(crate) stats: OAuthStats,
}

pub use warden_actors::RefreshLead;

/// Refresh counters, for `status` and the tests.
#[derive(Debug, Default)]
pub struct OAuthStats {
    /// Every refresh stored (a compare-and-swap on the grant's generation succeeded).
    pub refreshes: AtomicU64,
    /// Of those, the refreshes performed ahead of expiry by the token refresher; the rest
    /// happened on a call's path (rmcp found the token expired during a call).
    pub background_refreshes: AtomicU64,
    /// Refresh tokens the authorization server rejected.
    pub rejected_refreshes: AtomicU64,
    /// Refreshes that failed transiently.
    pub failed_refreshes: AtomicU64,
    /// Authorizations completed.
    pub authorizations: AtomicU64,
}

/// A snapshot of [`OAuthStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OAuthCounts {
    /// See [`OAuthStats::background_refreshes`].
    pub background_refreshes: u64,
    /// Refreshes that happened on a call's path.
    pub call_path_refreshes: u64,
    /// See [`OAuthStats::rejected_refreshes`].
    pub rejected_refreshes: u64,
    /// See [`OAuthStats::failed_refreshes`].
    pub failed_refreshes: u64,
    /// See [`OAuthStats::authorizations`].
    pub authorizations: u64,
}

impl OAuthStats {
    /// The counts now.
    pub fn snapshot(&self) -> OAuthCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OAuthCounts {
            background_refreshes: get(&self.background_refreshes),
            call_path_refreshes: get(&self.refreshes).saturating_sub(get(&self.background_refreshes)),
            rejected_refreshes: get(&self.rejected_refreshes),
            failed_refreshes: get(&self.failed_refreshes),
            authorizations: get(&self.authorizations),
        }
    }
}

impl OAuth {
    /// Settings for a process.
    pub fn new(
        store: MCPCredentialStore,
        redirect_uri: String,
        pending_ttl_s: i64,
        allow_private: bool,
        lead: RefreshLead,
    ) -> Arc<Self> {
        Arc::new(Self { store, redirect_uri, pending_ttl_s, allow_private, lead, stats: OAuthStats::default() })
    }

    /// The redirect URI given to authorization servers.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The counters.
    pub fn stats(&self) -> &OAuthStats {
        &self.stats
    }
}

/// The parts of an authorization callback.
struct CallbackParts {
    code: crate::Secret,
    state: crate::Secret,
    iss: Option<String>,
}

fn callback_parts(callback: crate::warden::AuthorizationCallback) -> Result<CallbackParts, Error> {
    use crate::warden::AuthorizationCallback as C;
    match callback {
        C::Parts { state, code, iss } => Ok(CallbackParts { code, state, iss }),
        C::Url(url) => {
            let parsed =
                url::Url::parse(url.expose_secret()).map_err(|_| Error::invalid("callback_url", "not a URL"))?;
            let (mut code, mut state, mut iss, mut error) = (None, None, None, None);
            for (key, value) in parsed.query_pairs() {
                match key.as_ref() {
                    "code" => code = Some(crate::Secret::new(value.into_owned())),
                    "state" => state = Some(crate::Secret::new(value.into_owned())),
                    "iss" => iss = Some(value.into_owned()),
                    "error" => error = Some(value.into_owned()),
                    _ => {}
                }
            }
            if let Some(error) = error {
                // The error code is a registered OAuth value; the description is not repeated.
                let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
                return Err(Error::new(
                    ErrorKind::AuthorizationRequired,
                    format!("the authorization server refused the authorization ({code})"),
                ));
            }
            match (code, state) {
                (Some(code), Some(state)) => Ok(CallbackParts { code, state, iss }),
                _ => Err(Error::invalid("callback_url", "must carry code and state")),
            }
        }
    }
}

impl OAuth {
    /// Finishes an authorization from its callback: finds the pending authorization by its
    /// state, rebuilds the flow's rmcp manager from what was sealed (so this works after a
    /// restart, on any node), exchanges the code (PKCE verifier, `resource`, `iss` check) and
    /// stores the grant. A connection bound to `expected_user` may only finish that user's
    /// authorizations. Returns (user, server).
    pub(crate) async fn complete(
        self: &Arc<Self>,
        callback: crate::warden::AuthorizationCallback,
        expected_user: Option<&str>,
    ) -> Result<(String, String), Error> {
        use rmcp::transport::auth::{AuthorizationManager, OAuthClientConfig};

        let parts = callback_parts(callback)?;
        let unknown = || Error::invalid("state", "unknown or expired authorization (start again)");
        let pending = self.store.load_pending(parts.state.expose_secret()).await?.ok_or_else(unknown)?;
        if expected_user.is_some_and(|u| u != pending.user) {
            return Err(Error::new(ErrorKind::Forbidden, "this authorization belongs to another user"));
        }
        let (user, server) = (pending.user.clone(), pending.server.clone());
        let payload: stores::PendingPayload = serde_json::from_slice(&pending.payload)
            .map_err(|_| Error::internal("a pending authorization is corrupt"))?;
        let stored =
            self.store.load_server(&user, &server).await?.ok_or_else(|| Error::unknown_server(&user, &server))?;
        let (crate::model::Transport::Http { url }, crate::model::ServerAuth::Oauth(settings)) =
            (&stored.config.transport, &stored.config.auth)
        else {
            return Err(Error::invalid(
                "server",
                format!("server {server} of user {user} is no longer an OAuth server"),
            ));
        };
        let grants = stores::GrantStore::new(self.store.clone(), &user, &server, self.clone());
        let client_secret =
            settings.client_secret.as_ref().map(|s| s.expose_secret().to_owned()).or(payload.client_secret.clone());
        grants.set_context(stores::GrantContext {
            client_secret: payload.client_secret.clone(),
            redirect_uri: payload.redirect_uri.clone(),
            metadata: Some(payload.metadata.clone()),
        });
        let manager = if self.allow_private {
            AuthorizationManager::new_allowing_private_addresses(url.as_str()).await
        } else {
            AuthorizationManager::new(url.as_str()).await
        };
        let mut manager = manager.map_err(|e| map_auth_error(&user, &server, &e))?;
        manager.set_credential_store(grants);
        manager.set_state_store(stores::PendingStore::new(self.store.clone(), &user, &server));
        // Discovery again, from the same challenge (best effort), so the token request names the
        // same RFC 8707 resource as the authorization request did; then the endpoints exactly
        // as they were.
        let _ = manager.resolve_metadata_from_challenge(payload.challenge.as_deref()).await;
        manager.set_metadata(payload.metadata.clone());
        let mut config = OAuthClientConfig::new(payload.client_id.clone(), payload.redirect_uri.clone())
            .with_scopes(payload.state.requested_scopes.clone());
        if let Some(secret) = client_secret {
            config = config.with_client_secret(secret);
        }
        manager.configure_client(config).map_err(|e| map_auth_error(&user, &server, &e))?;
        manager
            .exchange_code_for_token_with_issuer(
                parts.code.expose_secret(),
                parts.state.expose_secret(),
                parts.iss.as_deref(),
            )
            .await
            .map_err(|e| map_auth_error(&user, &server, &e))?;
        self.stats.authorizations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%user, %server, "authorization complete; grant stored");
        Ok((user, server))
    }
}

/// Maps an rmcp auth error onto warden's kinds, without its text (which may quote a server's
/// response).
pub(crate) fn map_auth_error(user: &str, server: &str, e: &AuthError) -> Error {
    let what = match e {
        AuthError::TokenRefreshRejected(_) => {
            return Error::new(
                ErrorKind::ReauthorizationRequired,
                format!("the grant of user {user} for server {server} was rejected; authorize again"),
            );
        }
        AuthError::AuthorizationRequired => {
            return Error::new(
                ErrorKind::AuthorizationRequired,
                format!("server {server} of user {user} needs authorization"),
            );
        }
        AuthError::CredentialStoreError(_) => {
            return Error::internal(format!("the grant store failed for server {server} of user {user}"));
        }
        AuthError::AuthorizationServerMismatch { .. } | AuthError::AuthorizationServerMissingIssuer { .. } => {
            return Error::new(
                ErrorKind::InvalidRequest,
                format!("the authorization response for server {server} of user {user} came from an unexpected issuer"),
            );
        }
        AuthError::TokenRefreshFailed(_) => "refreshing the token failed",
        AuthError::TokenExchangeFailed(_) => "exchanging the authorization code failed",
        AuthError::RegistrationFailed(_) => "client registration failed",
        AuthError::PkceUnsupported => "the authorization server does not support PKCE S256",
        AuthError::NoAuthorizationSupport => "the server does not support OAuth",
        AuthError::AuthorizationFailed(_) => "the authorization failed",
        AuthError::InvalidScope(_) => "the scope upgrade was refused (too many attempts?)",
        AuthError::HttpError(_) => "the authorization server could not be reached",
        _ => "OAuth discovery or configuration failed",
    };
    Error::new(ErrorKind::ServerUnreachable, format!("OAuth for server {server} of user {user}: {what}"))
}

#[cfg(test)]
mod tests;
