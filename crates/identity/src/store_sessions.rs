//! Browser sessions kept in the store, so that they survive restarts and every node sees them.
//! Session data (including the refresh token) is sealed with the cookie key before it is
//! written: the database never holds it in clear. A short in-memory cache spares a database
//! read on every request; a session removed on one node ends on the others within
//! [`CACHE_TTL`]. Every store read and write runs under a timeout: the request path never waits
//! on the store without one, and "the store is away" is reported as such, never as "no
//! session".
//!
//! Through a store outage a node keeps the sessions it has cached (as the posture cache keeps
//! postures): once a read fails, the store counts as away for [`AWAY_FOR`], cached sessions are
//! served as they are without asking it, and only sessions this node never saw answer
//! "unavailable" — at once, not after a timeout each. The price: a sign-out on another node
//! reaches this one only when the store is back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use base::seal::Sealer;
use store::SessionRows;

use crate::session::{RenewalClaim, Session, SessionStore, SessionsUnavailable};

/// How long a node trusts its cached copy of a session while the store answers.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// After a failed read, how long the store counts as away (no read is tried; cached sessions
/// are served as they are).
pub const AWAY_FOR: Duration = Duration::from_secs(5);
/// The longest a cached session is kept (the session's own idle limit ends it sooner).
const CACHE_KEEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
struct Cached {
    session: Session,
    /// When it was last read from (or written to) the store.
    read_at: tokio::time::Instant,
}
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
    timeout: Duration,
    cache: moka::future::Cache<String, Cached>,
    /// Milliseconds after `epoch` until which the store counts as away (0: it answers).
    away_until: std::sync::atomic::AtomicU64,
    epoch: tokio::time::Instant,
}

/// How long a request waits for the store to read or write a session.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

impl<S: SessionRows + ?Sized> StoreSessions<S> {
    pub fn new(rows: Arc<S>, sealer: Arc<Sealer>, lifetime: Duration, idle: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(idle.clamp(CACHE_TTL, CACHE_KEEP))
            .build();
        Self {
            rows,
            sealer,
            lifetime,
            idle,
            timeout: STORE_TIMEOUT,
            cache,
            away_until: std::sync::atomic::AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn store_away(&self) -> bool {
        self.now_ms() < self.away_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_away(&self) {
        let until = self.now_ms().saturating_add(AWAY_FOR.as_millis() as u64);
        self.away_until.store(until, std::sync::atomic::Ordering::Relaxed);
    }

    async fn remember(&self, id: &str, session: Session) {
        let read_at = tokio::time::Instant::now();
        self.cache.insert(id.to_string(), Cached { session, read_at }).await;
    }

    async fn write(&self, id: &str, row: &Row) -> Result<(), SessionsUnavailable> {
        let json = serde_json::to_vec(row).map_err(|_| SessionsUnavailable)?;
        let sealed = self.sealer.seal(PURPOSE, &json).map_err(|_| SessionsUnavailable)?;
        let expires = (row.session.signed_in_at + self.lifetime.as_secs()) as i64;
        match tokio::time::timeout(self.timeout, self.rows.put_session(id, &sealed, expires)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot store a session");
                Err(SessionsUnavailable)
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "cannot store a session: the store did not answer in time");
                Err(SessionsUnavailable)
            }
        }
    }
}

#[async_trait]
impl<S: SessionRows + ?Sized + 'static> SessionStore for StoreSessions<S> {
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionsUnavailable> {
        let cached = self.cache.get(id).await;
        match &cached {
            Some(c) if c.read_at.elapsed() < CACHE_TTL => return Ok(Some(c.session.clone())),
            Some(c) if self.store_away() => return Ok(Some(c.session.clone())),
            Some(_) => {}
            None if self.store_away() => return Err(SessionsUnavailable),
            None => {}
        }
        let read = tokio::time::timeout(self.timeout, self.rows.session(id, base::time::unix_now_i64())).await;
        let sealed = match read {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                self.cache.invalidate(id).await;
                return Ok(None);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read a session; serving cached sessions as they are for now");
                self.mark_away();
                return cached.map(|c| Some(c.session)).ok_or(SessionsUnavailable);
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "cannot read a session: the store did not answer in time; serving cached sessions as they are for now");
                self.mark_away();
                return cached.map(|c| Some(c.session)).ok_or(SessionsUnavailable);
            }
        };
        // Rows sealed with another key (rotated cookie key) or corrupt ones are simply absent.
        let Some(row) = self
            .sealer
            .open(PURPOSE, &sealed)
            .and_then(|plain| serde_json::from_slice::<Row>(&plain).ok())
        else {
            self.cache.invalidate(id).await;
            return Ok(None);
        };
        if base::time::unix_now_i64() - row.last_seen > self.idle.as_secs() as i64 {
            self.remove(id).await;
            return Ok(None);
        }
        let session = row.session;
        // The last-seen refresh is best effort, and only over the row as read: a renewal
        // stored by another node meanwhile must not be overwritten with the old tokens (their
        // refresh token is spent; using it again would sign the user out).
        let touched = Row {
            session: session.clone(),
            last_seen: base::time::unix_now_i64(),
        };
        if let (Ok(json), expires) = (
            serde_json::to_vec(&touched),
            (session.signed_in_at + self.lifetime.as_secs()) as i64,
        ) {
            if let Ok(data) = self.sealer.seal(PURPOSE, &json) {
                let _ =
                    tokio::time::timeout(self.timeout, self.rows.replace_session(id, &sealed, &data, expires)).await;
            }
        }
        self.remember(id, session.clone()).await;
        Ok(Some(session))
    }

    async fn put(&self, id: &str, session: Session) -> Result<(), SessionsUnavailable> {
        self.write(
            id,
            &Row {
                session: session.clone(),
                last_seen: base::time::unix_now_i64(),
            },
        )
        .await?;
        self.remember(id, session).await;
        Ok(())
    }

    async fn claim_renewal(&self, id: &str) -> Option<RenewalClaim> {
        // A claimant of its own per attempt, so two requests on one node do not both win.
        let claimant = base::seal::random_token(12).ok()?;
        match tokio::time::timeout(self.timeout, self.rows.claim_session_renewal(id, &claimant, 30)).await {
            Ok(Ok(true)) => Some(RenewalClaim(claimant)),
            Ok(Ok(false)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot claim a session renewal");
                None
            }
            Err(_) => None,
        }
    }

    async fn release_renewal(&self, id: &str, claim: RenewalClaim) {
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(self.timeout, self.rows.release_session_renewal(id, &claim.0))
            .await
            .map_err(|_| store::StoreError::Timeout(self.timeout))
        {
            tracing::debug!(error = %e, "cannot release a session renewal claim (it expires by itself)");
        }
    }

    async fn reload(&self, id: &str) -> Result<Option<Session>, SessionsUnavailable> {
        self.cache.invalidate(id).await;
        self.get(id).await
    }

    async fn remove(&self, id: &str) {
        self.cache.invalidate(id).await;
        match tokio::time::timeout(self.timeout, self.rows.remove_session(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove a session"),
            Err(_) => tracing::warn!("cannot remove a session: the store did not answer in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering};

    use store::StoreError;

    use super::*;
    use crate::{Principal, TokenVersion};

    /// Session rows in memory that can be made slow (`1`) or failing (`2`).
    #[derive(Default)]
    struct Rows {
        rows: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
        mode: AtomicU8,
    }

    impl Rows {
        async fn behave(&self) -> Result<(), StoreError> {
            match self.mode.load(Ordering::SeqCst) {
                1 => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
                2 => Err(StoreError::Timeout(Duration::from_secs(1))),
                _ => Ok(()),
            }
        }
    }

    #[async_trait]
    impl SessionRows for Rows {
        async fn session(&self, id: &str, now: i64) -> Result<Option<String>, StoreError> {
            self.behave().await?;
            let rows = self.rows.lock().unwrap();
            Ok(rows.get(id).filter(|(_, exp)| *exp > now).map(|(d, _)| d.clone()))
        }
        async fn put_session(&self, id: &str, data: &str, expires_at: i64) -> Result<(), StoreError> {
            self.behave().await?;
            self.rows.lock().unwrap().insert(id.into(), (data.into(), expires_at));
            Ok(())
        }
        async fn remove_session(&self, id: &str) -> Result<(), StoreError> {
            self.behave().await?;
            self.rows.lock().unwrap().remove(id);
            Ok(())
        }
        async fn claim_session_renewal(&self, _: &str, _: &str, _: i64) -> Result<bool, StoreError> {
            self.behave().await?;
            Ok(true)
        }
        async fn release_session_renewal(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn replace_session(&self, id: &str, expected: &str, data: &str, exp: i64) -> Result<bool, StoreError> {
            self.behave().await?;
            let mut rows = self.rows.lock().unwrap();
            match rows.get(id) {
                Some((d, _)) if d == expected => {
                    rows.insert(id.into(), (data.into(), exp));
                    Ok(true)
                }
                Some(_) | None => Ok(false),
            }
        }
    }

    /// One node's sessions over `rows`, hour-long lifetime and idle limit.
    fn node(rows: &Arc<Rows>, sealer: &Arc<Sealer>) -> StoreSessions<Rows> {
        StoreSessions::new(
            rows.clone(),
            sealer.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )
    }

    fn session() -> Session {
        Session {
            principal: Arc::new(Principal {
                tenant: "t".into(),
                object_id: "o".into(),
                username: None,
                name: None,
                groups: Arc::new([]),
                groups_overage: false,
                roles: Arc::new([]),
                device_id: None,
                version: TokenVersion::V2,
                expires_at: base::time::unix_now() + 3600,
                delegated: true,
            }),
            refresh_token: Some("rt".into()),
            signed_in_at: base::time::unix_now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_away_store_is_unavailable_within_the_timeout_never_no_session() {
        let rows = Arc::new(Rows::default());
        let sealer = Arc::new(Sealer::random().unwrap());
        let new = || node(&rows, &sealer);
        let (a, b) = (new(), new());
        a.put("s1", session()).await.unwrap();
        assert!(
            b.get("s1").await.unwrap().is_some(),
            "another node reads it from the store"
        );
        assert!(matches!(b.get("nope").await, Ok(None)));

        // The store hangs: a node without the session cached answers "unavailable" after the
        // timeout, not "no session"; a write fails the same way.
        rows.mode.store(1, Ordering::SeqCst);
        let c = new();
        let started = tokio::time::Instant::now();
        assert_eq!(c.get("s1").await.map(|s| s.is_some()), Err(SessionsUnavailable));
        assert_eq!(started.elapsed(), STORE_TIMEOUT);
        assert_eq!(c.put("s2", session()).await, Err(SessionsUnavailable));
        // A node that has it cached keeps serving it.
        assert!(b.get("s1").await.unwrap().is_some());

        // The store fails fast: the same answer at once.
        rows.mode.store(2, Ordering::SeqCst);
        assert_eq!(c.get("s1").await.map(|s| s.is_some()), Err(SessionsUnavailable));
        rows.mode.store(0, Ordering::SeqCst);
        tokio::time::advance(AWAY_FOR).await;
        assert!(
            c.get("s1").await.unwrap().is_some(),
            "back when the store is (tried again after AWAY_FOR)"
        );
    }

    /// Through an outage longer than the cache's freshness, cached sessions keep working; a
    /// session this node never saw is unavailable at once (the store counts as away, no timeout
    /// per request); when the store is back, a session removed meanwhile ends.
    #[tokio::test(start_paused = true)]
    async fn cached_sessions_outlive_their_freshness_while_the_store_is_away() {
        let rows = Arc::new(Rows::default());
        let sealer = Arc::new(Sealer::random().unwrap());
        let new = || node(&rows, &sealer);
        let (a, b) = (new(), new());
        a.put("s1", session()).await.unwrap();
        a.put("s2", session()).await.unwrap();
        assert!(b.get("s1").await.unwrap().is_some());

        rows.mode.store(1, Ordering::SeqCst); // hangs
        tokio::time::advance(CACHE_TTL + Duration::from_secs(1)).await;
        let started = tokio::time::Instant::now();
        assert!(b.get("s1").await.unwrap().is_some(), "stale but served");
        assert_eq!(started.elapsed(), STORE_TIMEOUT, "the first read finds out");
        let started = tokio::time::Instant::now();
        assert!(b.get("s1").await.unwrap().is_some());
        assert_eq!(
            b.get("s2").await.map(|s| s.is_some()),
            Err(SessionsUnavailable),
            "never seen here"
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "while away, nobody waits");
        for _ in 0..20 {
            tokio::time::advance(AWAY_FOR).await;
            assert!(b.get("s1").await.unwrap().is_some(), "a minute on, still served");
        }

        // Back, with s1 signed out on another node meanwhile.
        rows.mode.store(0, Ordering::SeqCst);
        rows.rows.lock().unwrap().remove("s1");
        tokio::time::advance(AWAY_FOR).await;
        assert_eq!(
            b.get("s1").await.map(|s| s.is_some()),
            Ok(false),
            "ended once the store answers"
        );
        assert!(b.get("s2").await.unwrap().is_some());
    }

    /// Two nodes over one store: a due renewal is claimed by one request only, across nodes and
    /// within one node; the claim is the store's, so it holds for every node.
    #[tokio::test]
    async fn one_renewal_claim_per_session_across_nodes() {
        let store = Arc::new(store::sqlite::SqliteStore::in_memory().await.unwrap());
        let sealer = Arc::new(Sealer::random().unwrap());
        let node = || {
            StoreSessions::new(
                store.clone(),
                sealer.clone(),
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            )
        };
        let (a, b) = (node(), node());
        a.put("s1", session()).await.unwrap();
        let won = a.claim_renewal("s1").await.expect("the first claim wins");
        assert_eq!(b.claim_renewal("s1").await, None, "not on another node");
        assert_eq!(
            a.claim_renewal("s1").await,
            None,
            "not by another request on the same node"
        );
        assert!(
            b.claim_renewal("s2").await.is_some(),
            "another session is claimed on its own"
        );
        a.release_renewal("s1", won).await;
        assert!(
            b.claim_renewal("s1").await.is_some(),
            "released: the next renewal can be claimed"
        );
        // The winner's renewed session reaches the other node by reload (past its cache).
        let mut renewed = session();
        renewed.refresh_token = Some("rotated".into());
        a.put("s1", renewed).await.unwrap();
        let seen = b.reload("s1").await.unwrap().unwrap();
        assert_eq!(seen.refresh_token.as_deref(), Some("rotated"));
    }
}
