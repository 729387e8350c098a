//! The identity in force. A reload of the file's `[entra]` replaces it whole: a request loads
//! it once and finishes on the one it loaded; the next request, sign-in or admin call uses the
//! new one. Loading is one atomic pointer read, never a lock.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::jwks::REFRESH_INTERVAL;
use crate::Identity;

pub struct CurrentIdentity(ArcSwap<Identity>);

impl CurrentIdentity {
    pub fn new(id: Identity) -> Self {
        Self(ArcSwap::from_pointee(id))
    }

    /// The identity in force now.
    pub fn load(&self) -> Arc<Identity> {
        self.0.load_full()
    }

    /// Puts `id` in force (a reload, once its new tenants' keys were fetched).
    pub fn store(&self, id: Identity) {
        self.0.store(Arc::new(id));
    }

    /// Refreshes the signing keys of the identity in force hourly, with jitter, until `stop`.
    pub async fn run_key_refresh(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let jitter = Duration::from_millis(base::time::jitter_ms(REFRESH_INTERVAL.as_millis() as u64 / 10));
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_INTERVAL + jitter) => {}
                _ = stop.changed() => return,
            }
            let jwks = self.load().validator.jwks().clone();
            jwks.refresh_logged().await;
        }
    }
}
