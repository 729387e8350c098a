//! The gateway's background tasks as pingora services: one adapter ([`Task`]) for every task
//! that runs until shutdown, the admin listener, the drain timer and the shutdown signals.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService, GenBackgroundService};

use admin::Readiness;
use config::LandingConfig;
use device::PostureCache;
use identity::Identity;
use landing::{Landings, ReturnSigner};
use metrics::Metrics;
use store::Store;
use sync::settings::{ConditionalAccess, Settings};
use sync::SyncLoop;

/// Run when the gateway exits after draining.
pub type ExitHook = Box<dyn FnOnce() + Send>;

/// A background task that runs until shutdown: `F` is called once with the shutdown watch.
pub struct Task<F>(F);

#[async_trait]
impl<F, Fut> BackgroundService for Task<F>
where
    F: Fn(ShutdownWatch) -> Fut + Send + Sync,
    Fut: Future<Output = ()> + Send,
{
    async fn start(&self, shutdown: ShutdownWatch) {
        (self.0)(shutdown).await;
    }
}

fn task<F, Fut>(name: &str, f: F) -> GenBackgroundService<Task<F>>
where
    F: Fn(ShutdownWatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    background_service(name, Task(f))
}

/// Keeps the posture cache in step with the store's change log.
pub fn follow_changes(
    store: Arc<dyn Store>,
    cache: Arc<PostureCache>,
    interval: Duration,
) -> GenBackgroundService<impl BackgroundService> {
    task("posture changes", move |shutdown| {
        device::changes::follow_changes(store.clone(), cache.clone(), interval, shutdown)
    })
}

/// Runs the sync loop.
pub fn sync(sync: Arc<SyncLoop<dyn Store>>) -> GenBackgroundService<impl BackgroundService> {
    task("sync", move |shutdown| {
        let sync = sync.clone();
        async move { sync.run(shutdown).await }
    })
}

/// Rebuilds the landings when the settings' landing choice changes, always with the one
/// `return_to` key of the process, so URLs signed before a change still verify after it.
pub struct LandingFollower {
    pub landing: LandingConfig,
    pub return_key: Arc<[u8]>,
    pub landings: Arc<ArcSwap<Landings>>,
}

impl LandingFollower {
    pub fn apply(&self, doc: &ConditionalAccess) {
        if self.landings.load().config().unrecognized == doc.landing {
            return;
        }
        let mut l = self.landing.clone();
        l.unrecognized = doc.landing.clone();
        match Landings::new(l, ReturnSigner::new(&self.return_key)) {
            Ok(l) => self.landings.store(Arc::new(l)),
            Err(e) => tracing::error!(error = %e, "the new landing choice cannot be applied; keeping the previous one"),
        }
    }
}

/// Applies settings changed by any node.
pub fn follow_settings(
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    landings: LandingFollower,
) -> GenBackgroundService<impl BackgroundService> {
    let landings = Arc::new(landings);
    task("settings", move |shutdown| {
        let (settings, store, landings) = (settings.clone(), store.clone(), landings.clone());
        async move {
            settings
                .follow(&*store, Duration::from_secs(1), shutdown, |doc| landings.apply(doc))
                .await;
        }
    })
}

/// Fetches every tenant's signing keys at start (readiness waits for them), retrying with
/// backoff, then refreshes them hourly with jitter.
pub fn signing_keys(
    identity: Arc<Identity>,
    readiness: Arc<Readiness>,
) -> GenBackgroundService<impl BackgroundService> {
    task("signing keys", move |shutdown| {
        let (identity, readiness) = (identity.clone(), readiness.clone());
        async move {
            let jwks = identity.validator.jwks().clone();
            let mut delay = Duration::from_millis(200);
            loop {
                let results = jwks.refresh_all().await;
                let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
                for (tenant, r) in &failed {
                    if let Err(e) = r {
                        tracing::warn!(%tenant, error = %e, "cannot fetch signing keys yet; retrying");
                    }
                }
                if failed.is_empty() {
                    tracing::info!(tenants = results.len(), "signing keys loaded");
                    readiness.set_keys_loaded();
                    break;
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            jwks.run_refresh(shutdown).await;
        }
    })
}

/// Serves the admin router on the listener bound at start.
pub fn admin(
    listener: TcpListener,
    router: axum::Router,
    readiness: Arc<Readiness>,
    proxy_addrs: Vec<(SocketAddr, bool)>,
) -> GenBackgroundService<impl BackgroundService> {
    // Taken once, by the one start of the service.
    let listener = Mutex::new(Some(listener));
    task("admin", move |mut shutdown| {
        let taken = listener.lock().ok().and_then(|mut l| l.take());
        let (router, readiness, proxy_addrs) = (router.clone(), readiness.clone(), proxy_addrs.clone());
        async move {
            let Some(std_listener) = taken else { return };
            let listener = match std_listener
                .set_nonblocking(true)
                .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "admin listener unusable");
                    return;
                }
            };
            tokio::spawn(admin::watch_listeners(readiness, proxy_addrs));
            let stop = async move {
                let _ = shutdown.changed().await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }
    })
}

/// Ends the process as soon as no request is in flight after shutdown began, instead of
/// always sleeping the whole grace period as pingora does; pingora's own timer still ends it
/// after `grace_period` at the latest. Runs `on_exit` first.
pub fn drain(
    metrics: Metrics,
    grace: Duration,
    on_exit: Vec<ExitHook>,
) -> GenBackgroundService<impl BackgroundService> {
    let on_exit = Mutex::new(on_exit);
    task("drain", move |mut shutdown| {
        let metrics = metrics.clone();
        let hooks = on_exit.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + grace;
            while metrics.requests_in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let left = metrics.requests_in_flight.get();
            if left > 0 {
                tracing::warn!(requests = left, "grace period over; closing the remaining requests");
            } else {
                tracing::info!("drained; exiting");
            }
            for hook in hooks {
                hook();
            }
            // Nothing else holds state that needs flushing; pingora would otherwise sleep out
            // the rest of its grace period.
            std::process::exit(0);
        }
    })
}

/// SIGTERM and SIGINT both drain gracefully (pingora's default treats SIGINT as fast exit).
pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!("{name} received: no new connections; draining in-flight requests");
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch signals; the gateway can only be killed");
                std::future::pending::<()>().await;
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}
