//! A cached bearer token, fetched by one caller at a time (the others wait for its result)
//! and kept until shortly before it expires. One implementation for Entra app tokens and
//! Jamf Pro API-client tokens.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The token and the instant it stops being used.
#[derive(Default)]
pub struct TokenCache {
    slot: Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (token and how long to keep it). While one
    /// caller fetches, the others wait for it instead of fetching too.
    pub async fn get<E, F, Fut>(&self, fetch: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((t, until)) = slot.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let (t, keep) = fetch().await?;
        *slot = Some((t.clone(), Instant::now() + keep));
        Ok(t)
    }

    /// Forgets the token (the resource answered 401).
    pub async fn forget(&self) {
        *self.slot.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_fetch_for_concurrent_callers_until_expiry_or_forget() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicU32::new(0));
        let fetch = |fetches: Arc<AtomicU32>| async move {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, ()>((format!("t{n}"), Duration::from_secs(60)))
        };
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move { cache.get(|| fetch(fetches)).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok("t1".to_string()));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(cache.get(|| fetch(fetches.clone())).await, Ok("t1".to_string()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get(|| fetch(fetches.clone())).await,
            Ok("t2".to_string()),
            "expired"
        );
        cache.forget().await;
        assert_eq!(
            cache.get(|| fetch(fetches.clone())).await,
            Ok("t3".to_string()),
            "forgotten"
        );
        let failed: Result<String, &str> = {
            cache.forget().await;
            cache.get(|| async { Err("down") }).await
        };
        assert_eq!(failed, Err("down"));
        assert_eq!(
            cache.get(|| fetch(fetches.clone())).await,
            Ok("t4".to_string()),
            "a failure is not cached"
        );
    }
}
