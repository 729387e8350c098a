//! Keeps this node's posture cache in step with the store: polls the store's device change log
//! and invalidates every device written since the last poll, so a change made by any node (or
//! by the sync loop) reaches enforcement here within one poll interval.

use std::sync::Arc;
use std::time::Duration;

use super::cache::PostureCache;
use store::PostureStore;

/// Runs until `stop` turns true.
pub async fn follow_changes(
    store: Arc<dyn PostureStore>,
    cache: Arc<PostureCache>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Start from now: the cache starts empty, so older changes do not matter.
    let mut last = loop {
        match store.latest_change().await {
            Ok(id) => break id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the device change log yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        loop {
            match store.changes_since(last, 1000).await {
                Ok(changes) => {
                    let n = changes.len();
                    for (id, device) in changes {
                        cache.invalidate(&device).await;
                        last = id;
                    }
                    if n < 1000 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the device change log; cached postures may lag");
                    break;
                }
            }
        }
    }
}
