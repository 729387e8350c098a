//! Keeps this node's posture cache in step with the store: follows the store's device change
//! log and invalidates every device written since the last read, so a change made by any node
//! (or by the sync loop) reaches enforcement here at once when the store signals changes
//! (PostgreSQL's LISTEN/NOTIFY), and within one poll interval otherwise — the poll is always
//! the fallback.
//!
//! The follower keeps `(epoch, cursor)`. It drops the whole cache when it cannot be sure it saw
//! every change: the database's epoch changed (another or a re-created database), the log no
//! longer reaches back to the cursor (pruned while this node was away), or the log is behind
//! the cursor (a restored database).

use std::sync::Arc;
use std::time::Duration;

use super::cache::PostureCache;
use store::PostureStore;

/// Changes read per page.
const PAGE: u32 = 1000;

/// Runs until `stop` turns true.
pub async fn follow_changes(
    store: Arc<dyn PostureStore>,
    cache: Arc<PostureCache>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let signal = store.change_signal();
    // Start from now: the cache starts empty, so older changes do not matter.
    let (mut epoch, mut last) = loop {
        match (store.epoch().await, store.latest_change().await) {
            (Ok(epoch), Ok(id)) => break (epoch, id),
            (Err(e), _) | (_, Err(e)) => {
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
            _ = async { match &signal { Some(s) => s.notified().await, None => std::future::pending().await } } => {}
            _ = stop.changed() => return,
        }
        match catch_up(&*store, &cache, &mut epoch, &mut last).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the device change log; cached postures may lag"),
        }
    }
}

/// Reads every change after `last` and invalidates its device; resets the cache when the log
/// cannot prove nothing was missed.
async fn catch_up(
    store: &dyn PostureStore,
    cache: &PostureCache,
    epoch: &mut String,
    last: &mut i64,
) -> Result<(), store::StoreError> {
    let now_epoch = store.epoch().await?;
    if now_epoch != *epoch {
        tracing::warn!("the store is another database than before (epoch changed); dropping every cached posture");
        cache.invalidate_all();
        *epoch = now_epoch;
        *last = store.latest_change().await?;
        return Ok(());
    }
    loop {
        let changes = store.changes_since(*last, PAGE).await?;
        if changes.is_empty() {
            let latest = store.latest_change().await?;
            if latest < *last {
                tracing::warn!(
                    cursor = *last,
                    latest,
                    "the change log is behind this node (restored database?); dropping every cached posture"
                );
                cache.invalidate_all();
                *last = latest;
            }
            return Ok(());
        }
        if *last > 0 && store.oldest_change().await? > *last + 1 && changes[0].0 > *last + 1 {
            tracing::warn!(
                cursor = *last,
                "changes were pruned before this node read them; dropping every cached posture"
            );
            cache.invalidate_all();
        }
        let n = changes.len();
        for (id, device) in changes {
            cache.invalidate(&device).await;
            *last = id;
        }
        if n < PAGE as usize {
            return Ok(());
        }
    }
}
