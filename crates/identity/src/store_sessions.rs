//! Browser sessions kept in the store, so that they survive restarts and every node sees them.
//! Session data (including the refresh token) is sealed with the cookie key before it is
//! written: the database never holds it in clear. A short in-memory cache spares a database
//! read on every request; a session removed on one node ends on the others within
//! [`CACHE_TTL`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use base::seal::Sealer;
use store::SessionRows;

use crate::session::{Session, SessionStore};

/// How long a node trusts its cached copy of a session.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
const PURPOSE: &str = "portcullis-session-row";

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    session: Session,
    /// Unix seconds of the last time a request used the session (coarse: per cache refresh).
    last_seen: i64,
}

/// A [`SessionStore`] over the store's session rows.
pub struct StoreSessions<S: SessionRows + ?Sized> {
    rows: Arc<S>,
    sealer: Arc<Sealer>,
    lifetime: Duration,
    idle: Duration,
    cache: moka::future::Cache<String, Session>,
}

impl<S: SessionRows + ?Sized> StoreSessions<S> {
    pub fn new(rows: Arc<S>, sealer: Arc<Sealer>, lifetime: Duration, idle: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(CACHE_TTL)
            .build();
        Self {
            rows,
            sealer,
            lifetime,
            idle,
            cache,
        }
    }

    async fn write(&self, id: &str, row: &Row) {
        let Ok(json) = serde_json::to_vec(row) else { return };
        let Ok(sealed) = self.sealer.seal(PURPOSE, &json) else {
            return;
        };
        let expires = (row.session.signed_in_at + self.lifetime.as_secs()) as i64;
        if let Err(e) = self.rows.put_session(id, &sealed, expires).await {
            tracing::warn!(error = %e, "cannot store a session");
        }
    }
}

#[async_trait]
impl<S: SessionRows + ?Sized + 'static> SessionStore for StoreSessions<S> {
    async fn get(&self, id: &str) -> Option<Session> {
        if let Some(s) = self.cache.get(id).await {
            return Some(s);
        }
        let sealed = match self.rows.session(id, base::time::unix_now_i64()).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session; treating it as absent");
                return None;
            }
        };
        // Rows sealed with another key (rotated cookie key) or corrupt ones are simply absent.
        let row: Row = serde_json::from_slice(&self.sealer.open(PURPOSE, &sealed)?).ok()?;
        if base::time::unix_now_i64() - row.last_seen > self.idle.as_secs() as i64 {
            let _ = self.rows.remove_session(id).await;
            return None;
        }
        let session = row.session;
        self.write(
            id,
            &Row {
                session: session.clone(),
                last_seen: base::time::unix_now_i64(),
            },
        )
        .await;
        self.cache.insert(id.to_string(), session.clone()).await;
        Some(session)
    }

    async fn put(&self, id: &str, session: Session) {
        self.write(
            id,
            &Row {
                session: session.clone(),
                last_seen: base::time::unix_now_i64(),
            },
        )
        .await;
        self.cache.insert(id.to_string(), session).await;
    }

    async fn remove(&self, id: &str) {
        self.cache.invalidate(id).await;
        if let Err(e) = self.rows.remove_session(id).await {
            tracing::warn!(error = %e, "cannot remove a session");
        }
    }
}
