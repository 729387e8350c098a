//! The gateway's background tasks, each a future that runs until the shutdown watch turns
//! true (the admin listener, posture changes, settings, sync, signing keys), and the signals
//! that start the drain.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use admin::Readiness;
use config::LandingConfig;
use device::PostureCache;
use identity::CurrentIdentity;
use landing::{Landings, ReturnSigner};
use store::Store;
use sync::settings::{ConditionalAccess, Settings};
use sync::SyncLoop;

/// Run when the gateway exits after draining.
pub type ExitHook = Box<dyn FnOnce() + Send>;

/// The shutdown watch every task gets: `true` once the drain began.
pub type Shutdown = watch::Receiver<bool>;

/// Keeps the posture cache in step with the store's change log.
pub fn follow_changes(
    store: Arc<dyn Store>,
    cache: Arc<PostureCache>,
    interval: Duration,
    shutdown: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    device::changes::follow_changes(store, cache, interval, shutdown)
}

/// Closes a minute of the decision history every minute, until the drain.
pub async fn decision_history(history: Arc<metrics::DecisionHistory>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => history.sample(base::time::unix_now_i64()),
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the sync loop.
pub async fn sync(sync: Arc<SyncLoop<dyn Store>>, shutdown: Shutdown) {
    sync.run(shutdown).await;
}

/// Rebuilds the landings when the settings' landing choice changes, always with the one
/// `return_to` key of the process, so URLs signed before a change still verify after it.
pub struct LandingFollower {
    /// The file's `[landing]`, replaced by a reload.
    pub landing: Arc<ArcSwap<LandingConfig>>,
    pub return_key: Arc<[u8]>,
    pub landings: Arc<ArcSwap<Landings>>,
}

impl LandingFollower {
    pub fn apply(&self, doc: &ConditionalAccess) {
        if self.landings.load().config().unrecognized == doc.landing {
            return;
        }
        let mut l = LandingConfig::clone(&self.landing.load());
        l.unrecognized = doc.landing.clone();
        match Landings::new(l, ReturnSigner::new(&self.return_key)) {
            Ok(l) => self.landings.store(Arc::new(l)),
            Err(e) => tracing::error!(error = %e, "the new landing choice cannot be applied; keeping the previous one"),
        }
    }
}

/// Applies settings changed by any node.
pub async fn follow_settings(
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    landings: LandingFollower,
    shutdown: Shutdown,
) {
    settings
        .follow(&*store, Duration::from_secs(1), shutdown, |doc| landings.apply(doc))
        .await;
}

/// Fetches every tenant's signing keys at start (readiness waits for them), retrying with
/// backoff, then refreshes them hourly with jitter.
pub async fn signing_keys(identity: Arc<CurrentIdentity>, readiness: Arc<Readiness>, shutdown: Shutdown) {
    let mut delay = Duration::from_millis(200);
    loop {
        // A reload may replace the identity meanwhile: its tenants are the ones to wait for.
        let jwks = identity.load().validator.jwks().clone();
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
    identity.run_key_refresh(shutdown).await;
}

/// Serves the admin router on the listener bound at start.
pub async fn admin(
    listener: TcpListener,
    router: axum::Router,
    readiness: Arc<Readiness>,
    proxy_addrs: Vec<(SocketAddr, bool)>,
    mut shutdown: Shutdown,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    tokio::spawn(admin::watch_listeners(readiness, proxy_addrs));
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// What a signal asks of the process.
pub enum Signal {
    /// SIGTERM or SIGINT (named): drain and exit.
    Stop(&'static str),
    /// SIGUSR2: a binary upgrade (`upgrade`).
    Upgrade,
}

/// The signals the process acts on (SIGHUP, a reload, has its own task).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call it before serving: a signal that comes earlier would kill
    /// the process.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.usr2.recv() => Signal::Upgrade,
        }
    }
}
