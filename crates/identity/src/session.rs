//! Browser sessions: server-side state behind a small sealed cookie. The store is a trait so
//! that the SQLite/PostgreSQL store can back it; [`MemorySessions`] keeps them in memory,
//! bounded, ending them after the configured lifetime or idle time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Principal;

/// One signed-in browser.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub principal: Arc<Principal>,
    /// Used to renew the session before the ID token expires; never logged.
    pub refresh_token: Option<String>,
    /// Unix seconds of the sign-in.
    pub signed_in_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.principal.object_id)
            .field("expires_at", &self.principal.expires_at)
            .field("signed_in_at", &self.signed_in_at)
            .finish_non_exhaustive()
    }
}

/// The sessions cannot be read or written right now (the store is away or slow): not the same
/// as "no session", which would send a signed-in user to sign in again, in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sessions are unavailable for a moment")]
pub struct SessionsUnavailable;

/// A won claim on a session's renewal (see [`SessionStore::claim_renewal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalClaim(pub String);

/// Where sessions live.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session, `None` when there is none (or it ended).
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionsUnavailable>;
    /// Stores a session; an error means it was not stored (the sign-in must not pretend it was).
    async fn put(&self, id: &str, session: Session) -> Result<(), SessionsUnavailable>;
    async fn remove(&self, id: &str);
    /// Claims the renewal of a session that is due: true for one request across every node;
    /// the others keep using the current tokens (still valid: renewal starts two minutes before
    /// they expire) or wait for the renewed ones.
    async fn claim_renewal(&self, _id: &str) -> Option<RenewalClaim> {
        Some(RenewalClaim(String::new()))
    }
    /// Ends a claim once the renewal is done (or failed).
    async fn release_renewal(&self, _id: &str, _claim: RenewalClaim) {}
    /// The session as stored now, past any cached copy (after another node renewed it).
    async fn reload(&self, id: &str) -> Result<Option<Session>, SessionsUnavailable> {
        self.get(id).await
    }
}

/// In-process sessions (one node; lost at restart).
pub struct MemorySessions {
    cache: moka::sync::Cache<String, Session>,
}

impl MemorySessions {
    pub fn new(lifetime: Duration, idle: Duration, capacity: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(lifetime)
                .time_to_idle(idle)
                .build(),
        }
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionsUnavailable> {
        Ok(self.cache.get(id))
    }

    async fn put(&self, id: &str, session: Session) -> Result<(), SessionsUnavailable> {
        self.cache.insert(id.to_string(), session);
        Ok(())
    }

    async fn remove(&self, id: &str) {
        self.cache.invalidate(id);
    }
}
