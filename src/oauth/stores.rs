//! rmcp's `CredentialStore` and `StateStore`, backed by the sealed store, one instance per
//! (user, server).
//!
//! [`GrantStore`] keeps the grant in memory (rmcp loads credentials on every MCP request) and
//! goes to the database only around refreshes: under the refresh guard it reads the row anew,
//! remembers the generation it read, and saves with a compare-and-swap on that generation. A
//! rejected refresh token marks the grant only if it is still at that generation.
//!
//! [`PendingStore`] holds the PKCE verifier and state rmcp creates for an authorization URL in
//! memory until the flow's context is known, then seals everything needed to finish the flow
//! (after a restart, on any node) into the pending-authorizations table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rmcp::transport::auth::{
    AuthError, AuthorizationMetadata, CredentialRefreshGuard, CredentialStore, StateStore, StoredAuthorizationState,
    StoredCredentials,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::store::{Expect, GrantStatus, GrantWrite, MCPCredentialStore, StoreError, now_unix};

/// What a grant row seals: rmcp's credentials plus what refreshing them needs after a
/// restart (rmcp does not store the client secret, and re-discovery is avoidable).
#[derive(Serialize, Deserialize)]
pub(crate) struct GrantPayload {
    pub(crate) credentials: StoredCredentials,
    #[serde(default)]
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_uri: String,
    #[serde(default)]
    pub(crate) metadata: Option<AuthorizationMetadata>,
}

/// What a pending authorization seals.
#[derive(Serialize, Deserialize)]
pub(crate) struct PendingPayload {
    pub(crate) state: StoredAuthorizationState,
    pub(crate) client_id: String,
    #[serde(default)]
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_uri: String,
    pub(crate) metadata: AuthorizationMetadata,
    pub(crate) authorization_url: String,
    /// The server's `WWW-Authenticate` challenge that started the flow, to repeat the same
    /// discovery when finishing it (the RFC 8707 resource must match).
    #[serde(default)]
    pub(crate) challenge: Option<String>,
}

/// The context a grant is saved with (not part of rmcp's `StoredCredentials`).
#[derive(Default, Clone)]
pub(crate) struct GrantContext {
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_uri: String,
    pub(crate) metadata: Option<AuthorizationMetadata>,
}

/// The grant as last read or written, with its generation and expiry.
#[derive(Clone)]
pub(crate) struct CachedGrant {
    pub(crate) credentials: StoredCredentials,
    pub(crate) generation: i64,
    pub(crate) expires_at: Option<i64>,
}

#[derive(Default)]
struct Shared {
    cache: Mutex<Option<CachedGrant>>,
    context: Mutex<GrantContext>,
    /// The generation read under the refresh guard, while it is held.
    guarded_generation: Mutex<Option<i64>>,
    guard_held: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store_error(e: &StoreError) -> AuthError {
    // Kept distinct from "needs re-authorization", as rmcp asks. The text names user and
    // server only.
    AuthError::CredentialStoreError(e.to_string())
}

/// rmcp `CredentialStore` for one (user, server). Cheap to clone; clones share the cache.
#[derive(Clone)]
pub(crate) struct GrantStore {
    store: MCPCredentialStore,
    user: String,
    server: String,
    shared: Arc<Shared>,
    oauth: Arc<super::OAuth>,
}

/// Expiry in Unix seconds of rmcp credentials, if they say.
pub(crate) fn expires_at(credentials: &StoredCredentials) -> Option<i64> {
    use oauth2::TokenResponse as _;
    let lifetime = credentials.token_response.as_ref()?.expires_in()?;
    let received = credentials.token_received_at?;
    i64::try_from(received.saturating_add(lifetime.as_secs())).ok()
}

/// Token lifetime in seconds, if known.
pub(crate) fn lifetime_s(credentials: &StoredCredentials) -> Option<u64> {
    use oauth2::TokenResponse as _;
    Some(credentials.token_response.as_ref()?.expires_in()?.as_secs())
}

impl GrantStore {
    pub(crate) fn new(store: MCPCredentialStore, user: &str, server: &str, oauth: Arc<super::OAuth>) -> Self {
        Self { store, user: user.to_owned(), server: server.to_owned(), shared: Arc::default(), oauth }
    }

    /// Sets the context the next save writes (before a code exchange).
    pub(crate) fn set_context(&self, context: GrantContext) {
        *lock(&self.shared.context) = context;
    }

    pub(crate) fn context(&self) -> GrantContext {
        lock(&self.shared.context).clone()
    }

    /// The grant as cached, if any.
    pub(crate) fn cached(&self) -> Option<CachedGrant> {
        lock(&self.shared.cache).clone()
    }

    /// Reads the grant from the database, refreshing the cache and context. `None` when there
    /// is no usable grant; `Some(Err(status))` when the grant needs re-authorization.
    pub(crate) async fn read(&self) -> Result<Option<Result<CachedGrant, GrantStatus>>, StoreError> {
        let Some(grant) = self.store.load_grant(&self.user, &self.server).await? else {
            *lock(&self.shared.cache) = None;
            return Ok(None);
        };
        if grant.status != GrantStatus::Active {
            *lock(&self.shared.cache) = None;
            return Ok(Some(Err(grant.status)));
        }
        let payload: GrantPayload =
            serde_json::from_slice(&grant.tokens).map_err(|_| StoreError::Corrupt { what: "grant" })?;
        let cached = CachedGrant {
            expires_at: expires_at(&payload.credentials),
            credentials: payload.credentials,
            generation: grant.generation,
        };
        *lock(&self.shared.context) = GrantContext {
            client_secret: payload.client_secret,
            redirect_uri: payload.redirect_uri,
            metadata: payload.metadata,
        };
        *lock(&self.shared.cache) = Some(cached.clone());
        Ok(Some(Ok(cached)))
    }

    /// Forgets the cached grant (after a rejection or a revocation).
    pub(crate) fn forget(&self) {
        *lock(&self.shared.cache) = None;
    }
}

struct GuardHolder {
    _lock: crate::store::GrantLock,
    shared: Arc<Shared>,
}

impl Drop for GuardHolder {
    fn drop(&mut self) {
        *lock(&self.shared.guarded_generation) = None;
        self.shared.guard_held.store(false, Ordering::SeqCst);
    }
}

#[async_trait]
impl CredentialStore for GrantStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let guarded = self.shared.guard_held.load(Ordering::SeqCst);
        if !guarded && let Some(cached) = lock(&self.shared.cache).as_ref() {
            return Ok(Some(cached.credentials.clone()));
        }
        // Under the guard, always read the database: another node may have rotated the grant.
        match self.read().await.map_err(|e| store_error(&e))? {
            Some(Ok(cached)) => {
                if guarded {
                    *lock(&self.shared.guarded_generation) = Some(cached.generation);
                }
                Ok(Some(cached.credentials))
            }
            _ => Ok(None),
        }
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let context = self.context();
        let payload = GrantPayload {
            credentials,
            client_secret: context.client_secret,
            redirect_uri: context.redirect_uri,
            metadata: context.metadata,
        };
        let bytes =
            Zeroizing::new(serde_json::to_vec(&payload).map_err(|e| AuthError::CredentialStoreError(e.to_string()))?);
        // Under the guard this is a refresh replacing exactly what it read; otherwise a new
        // authorization, which supersedes whatever grant there was.
        let expect = match *lock(&self.shared.guarded_generation) {
            Some(generation) if self.shared.guard_held.load(Ordering::SeqCst) => Expect::Generation(generation),
            _ => Expect::Any,
        };
        let expires = expires_at(&payload.credentials);
        let write = GrantWrite {
            tokens: &bytes,
            expires_at: expires,
            client_id: Some(&payload.credentials.client_id),
            issuer: payload.credentials.issuer.as_deref(),
        };
        let generation =
            self.store.save_grant(&self.user, &self.server, &write, expect).await.map_err(|e| store_error(&e))?;
        if let Expect::Generation(_) = expect {
            *lock(&self.shared.guarded_generation) = Some(generation);
            self.oauth.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.shared.cache) =
            Some(CachedGrant { credentials: payload.credentials, generation, expires_at: expires });
        Ok(())
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.forget();
        self.store.delete_grant(&self.user, &self.server).await.map_err(|e| store_error(&e))?;
        Ok(())
    }

    async fn on_refresh_token_rejected(&self, _credentials: &StoredCredentials) -> Result<(), AuthError> {
        self.forget();
        self.oauth.stats.rejected_refreshes.fetch_add(1, Ordering::Relaxed);
        let generation = *lock(&self.shared.guarded_generation);
        if let Some(generation) = generation {
            // Only the generation that failed: a newer grant stays untouched.
            let marked = self
                .store
                .mark_reauthorization_required(&self.user, &self.server, generation)
                .await
                .map_err(|e| store_error(&e))?;
            tracing::warn!(user = %self.user, server = %self.server, generation, marked, "refresh token rejected by the authorization server");
        }
        Ok(())
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let lock = self.store.lock_grant(&self.user, &self.server).await.map_err(|e| store_error(&e))?;
        self.shared.guard_held.store(true, Ordering::SeqCst);
        *lock_guarded(&self.shared) = None;
        Ok(Some(CredentialRefreshGuard::new(GuardHolder { _lock: lock, shared: self.shared.clone() })))
    }
}

fn lock_guarded(shared: &Shared) -> std::sync::MutexGuard<'_, Option<i64>> {
    lock(&shared.guarded_generation)
}

/// What a started flow needs to be finished, besides rmcp's state.
pub(crate) struct PendingFlow {
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_uri: String,
    pub(crate) metadata: AuthorizationMetadata,
    pub(crate) authorization_url: String,
    pub(crate) challenge: Option<String>,
}

/// rmcp `StateStore` for one (user, server).
#[derive(Clone)]
pub(crate) struct PendingStore {
    store: MCPCredentialStore,
    user: String,
    server: String,
    stash: Arc<Mutex<Option<(String, StoredAuthorizationState)>>>,
}

impl PendingStore {
    pub(crate) fn new(store: MCPCredentialStore, user: &str, server: &str) -> Self {
        Self { store, user: user.to_owned(), server: server.to_owned(), stash: Arc::default() }
    }

    /// Seals the state rmcp just created, with the flow's context, into the database.
    pub(crate) async fn persist(&self, flow: PendingFlow, ttl_s: i64) -> Result<i64, StoreError> {
        let Some((csrf, state)) = lock(&self.stash).take() else {
            return Err(StoreError::Corrupt { what: "authorization state (none was created)" });
        };
        let PendingFlow { client_id, client_secret, redirect_uri, metadata, authorization_url, challenge } = flow;
        let payload =
            PendingPayload { state, client_id, client_secret, redirect_uri, metadata, authorization_url, challenge };
        let bytes = Zeroizing::new(
            serde_json::to_vec(&payload).map_err(|_| StoreError::Corrupt { what: "authorization state" })?,
        );
        let expires_at = now_unix() + ttl_s;
        self.store.put_pending(&self.user, &self.server, &csrf, &bytes, expires_at).await?;
        Ok(expires_at)
    }
}

#[async_trait]
impl StateStore for PendingStore {
    async fn save(&self, csrf_token: &str, state: StoredAuthorizationState) -> Result<(), AuthError> {
        *lock(&self.stash) = Some((csrf_token.to_owned(), state));
        Ok(())
    }

    async fn load(&self, csrf_token: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        if let Some((csrf, state)) = lock(&self.stash).as_ref()
            && csrf == csrf_token
        {
            return Ok(Some(state.clone()));
        }
        let Some(pending) = self.store.load_pending(csrf_token).await.map_err(|e| store_error(&e))? else {
            return Ok(None);
        };
        if pending.user != self.user || pending.server != self.server {
            return Ok(None);
        }
        let payload: PendingPayload =
            serde_json::from_slice(&pending.payload).map_err(|e| AuthError::CredentialStoreError(e.to_string()))?;
        Ok(Some(payload.state))
    }

    async fn delete(&self, csrf_token: &str) -> Result<(), AuthError> {
        lock(&self.stash).take();
        self.store.delete_pending(csrf_token).await.map_err(|e| store_error(&e))?;
        Ok(())
    }
}
