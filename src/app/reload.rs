//! Reload: SIGHUP (`systemctl reload`), or a changed certificate file, reads the configuration
//! file again and checks it whole; a good one is applied as new snapshots — every listener's
//! TLS configuration (certificates, the SNI set, the client-certificate CA), the routes with
//! their upstream pools and health checks, the landing pages (URLs, support text, templates,
//! allowed return hosts), the trusted proxies and the file's `[entra]` identity (the added
//! tenants' signing keys fetched first) — so requests in flight finish on the old ones, new
//! requests and handshakes use the new ones, and no connection is dropped. A bad one changes
//! nothing: every error is logged with its key. Settings only a restart applies are named in
//! the log when they changed, never silently ignored.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use config::Config;
use edge::serve::TlsSlot;
use edge::RouteTable;
use identity::{CurrentIdentity, Identity};
use metrics::Metrics;
use tokio::sync::watch;

use super::services::Shutdown;

/// How long a reload waits for the signing keys of tenants it adds.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the certificate files are looked at for a renewal.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What a reload replaces.
pub struct Snapshots {
    /// Each listener's TLS configuration, in the configuration's order.
    pub slots: Vec<Option<TlsSlot>>,
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// The file's `[landing]`, which the settings follower builds the landings from.
    pub landing_file: Arc<ArcSwap<config::LandingConfig>>,
    pub landings: Arc<ArcSwap<landing::Landings>>,
    pub return_key: Arc<[u8]>,
    /// The run-time settings, whose landing choice wins over the file's.
    pub settings: Option<Arc<sync::settings::Settings>>,
    /// `server.trusted_proxies`, read once per request.
    pub trusted_proxies: Arc<ArcSwap<Vec<config::IpNet>>>,
    /// The identity of the file's `[entra]`: the gateway's tokens and sign-in, the admin
    /// API's bearer tokens and the console's sign-in.
    pub identity: Option<Arc<CurrentIdentity>>,
    /// The sync's view of the file's `[entra]`, and the sync to reconnect when it changes.
    pub file_entra: Option<sync::SharedFileEntra>,
    pub sync: Option<Arc<dyn sync::SyncControl>>,
}

/// A reloaded `[entra]`, ready to put in force.
struct NewEntra {
    identity: Identity,
    file: sync::FileEntra,
}

pub struct Reloader {
    /// One reload at a time (SIGHUP, the API and a renewal may coincide).
    reloading: Mutex<()>,
    /// The configuration in force.
    current: Mutex<Config>,
    s: Snapshots,
    metrics: Metrics,
    /// Stops the health checks of the pools in force (a reload starts the new pools' own).
    checks: Mutex<watch::Sender<bool>>,
    bg: tokio::runtime::Handle,
    shutdown: Shutdown,
}

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    Applied {
        /// Sections that changed in the file but only apply at the next start.
        need_restart: Vec<&'static str>,
        /// What is in force but not whole yet (a new tenant's signing keys not fetched).
        warnings: Vec<String>,
    },
    /// The file is not valid: nothing changed.
    Refused(config::ConfigErrors),
    /// The configuration did not come from a file (the demo).
    NoFile,
}

impl Reloader {
    /// Holds `cfg` (in force), the listeners' TLS slots in its order, and the route table;
    /// starts the health checks of `pools`.
    pub fn new(
        cfg: Config,
        s: Snapshots,
        pools: &[Arc<edge::UpstreamPool>],
        metrics: Metrics,
        bg: tokio::runtime::Handle,
        shutdown: Shutdown,
    ) -> Self {
        let checks = start_checks(&bg, pools, shutdown.clone());
        Self {
            reloading: Mutex::new(()),
            current: Mutex::new(cfg),
            s,
            metrics,
            checks: Mutex::new(checks),
            bg,
            shutdown,
        }
    }

    /// Reads the file again and applies it, or leaves everything as it is.
    /// Call from a blocking thread: it may wait for new tenants' signing keys.
    pub fn apply_file(&self) -> Outcome {
        let _one = lock(&self.reloading);
        let source = lock(&self.current).source.clone();
        let Some(path) = source else {
            return Outcome::NoFile;
        };
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => return Outcome::Refused(errors),
        };
        let tls = match edge::tls::load(&new) {
            Ok(t) => t,
            Err(errors) => return Outcome::Refused(config::ConfigErrors(errors)),
        };
        let pools = match edge::build_pools(&new.upstreams) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Refused(config::ConfigErrors(vec![config::ConfigError {
                    key: "upstreams".into(),
                    message: e.to_string(),
                }]))
            }
        };
        // The landings with the settings' landing choice, as the follower builds them.
        let mut landing = new.landing.clone();
        if let Some(settings) = &self.s.settings {
            landing.unrecognized = settings.current().landing.clone();
        }
        let landings = match landing::Landings::new(landing, landing::ReturnSigner::new(&self.s.return_key)) {
            Ok(l) => l,
            Err(e) => {
                return Outcome::Refused(config::ConfigErrors(vec![config::ConfigError {
                    key: "landing.templates_dir".into(),
                    message: e.to_string(),
                }]))
            }
        };
        let old_entra = lock(&self.current).entra.clone();
        let entra = match (&old_entra, &new.entra) {
            // A certificate's files may be renewed in place: read again at every reload.
            (Some(old), Some(next)) if old != next || reads_files(next) => match self.prepare_entra(next) {
                Ok(e) => e,
                Err(errors) => return Outcome::Refused(errors),
            },
            // Added or removed: what depends on it (the sync, the settings) is set up at start.
            (Some(_), Some(_)) | (None, _) | (_, None) => None,
        };
        // A new tenant's keys before its first token, so that it is not refused meanwhile.
        let mut warnings = Vec::new();
        if let Some(e) = &entra {
            let fetched = self
                .bg
                .block_on(async { tokio::time::timeout(KEY_FETCH_TIMEOUT, e.identity.fetch_missing_keys()).await });
            match fetched {
                Ok(failed) => {
                    for (tenant, error) in failed {
                        warnings.push(format!(
                            "tenant {tenant}: signing keys cannot be fetched yet ({error}); its tokens are refused until they are"
                        ));
                    }
                }
                Err(_) => warnings.push(format!(
                    "new tenants' signing keys not fetched within {} s; their tokens are refused until they are",
                    KEY_FETCH_TIMEOUT.as_secs()
                )),
            }
        }
        let mut current = lock(&self.current);
        let need_restart = restart_only_changes(&current, &new);
        // Listeners are bound at start: with one added or removed, which certificates belong
        // to which socket is not known until the restart.
        if new.listeners.len() == self.s.slots.len() {
            for (slot, config) in self.s.slots.iter().zip(tls) {
                if let (Some(slot), Some(config)) = (slot, config) {
                    slot.store(config);
                }
            }
        }
        self.s
            .routes
            .store(Arc::new(edge::route_table(&new, &pools, &self.metrics)));
        let next = start_checks(&self.bg, &pools, self.shutdown.clone());
        let old = std::mem::replace(&mut *lock(&self.checks), next);
        let _ = old.send(true);
        self.s
            .trusted_proxies
            .store(Arc::new(new.server.trusted_proxies.clone()));
        self.s.landing_file.store(Arc::new(new.landing.clone()));
        self.s.landings.store(Arc::new(landings));
        if let Some(e) = entra {
            if let Some(id) = &self.s.identity {
                id.store(e.identity);
            }
            if let Some(file) = &self.s.file_entra {
                file.store(Arc::new(e.file));
            }
            if let Some(sync) = &self.s.sync {
                sync.reconnect();
            }
        }
        *current = new;
        Outcome::Applied { need_restart, warnings }
    }

    /// The identity and the sync's view of a changed `[entra]`, with the sessions, cookie key
    /// and signing keys of the one in force.
    fn prepare_entra(&self, entra: &config::EntraConfig) -> Result<Option<NewEntra>, config::ConfigErrors> {
        let Some(current) = &self.s.identity else {
            return Ok(None);
        };
        let credential_error = |message: String| {
            config::ConfigErrors(vec![config::ConfigError {
                key: entra
                    .credential
                    .as_ref()
                    .map_or("entra", config::ClientCredentialConfig::key)
                    .into(),
                message,
            }])
        };
        let identity = current
            .load()
            .with_entra(entra)
            .map_err(|e| credential_error(e.to_string()))?;
        let file = sync::FileEntra::load(entra).map_err(|e| credential_error(e.to_string()))?;
        Ok(Some(NewEntra { identity, file }))
    }

    /// Reloads and logs what happened (every trigger's way): what the admin API answers.
    pub fn reload_and_log(&self, why: &str) -> admin::body::Reloaded {
        match self.apply_file() {
            Outcome::Applied { need_restart, warnings } => {
                let summary = lock(&self.current).summary();
                tracing::info!(trigger = why, %summary, "configuration reloaded");
                for section in &need_restart {
                    tracing::warn!(section, "changed in the file, but applies only at the next start");
                }
                for w in &warnings {
                    tracing::warn!(trigger = why, "reloaded, but {w}");
                }
                admin::body::Reloaded {
                    applied: true,
                    summary: Some(summary),
                    need_restart: need_restart.into_iter().map(str::to_string).collect(),
                    warnings,
                    ..Default::default()
                }
            }
            Outcome::Refused(errors) => {
                for e in &errors.0 {
                    tracing::error!(trigger = why, key = %e.key, error = %e.message, "reload refused; the running configuration stays");
                }
                admin::body::Reloaded {
                    errors: errors
                        .0
                        .into_iter()
                        .map(|e| admin::body::KeyError {
                            key: e.key,
                            message: e.message,
                        })
                        .collect(),
                    ..Default::default()
                }
            }
            Outcome::NoFile => {
                tracing::warn!(
                    trigger = why,
                    "nothing to reload: the configuration was not read from a file"
                );
                admin::body::Reloaded {
                    no_file: true,
                    ..Default::default()
                }
            }
        }
    }

    /// The certificate, key and client-CA files of the configuration in force, with their
    /// modification times.
    fn watched(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        let cfg = lock(&self.current);
        let mut files: Vec<PathBuf> = Vec::new();
        for t in cfg.listeners.iter().filter_map(|l| l.tls.as_ref()) {
            for c in &t.certificates {
                files.push(c.cert.clone());
                files.push(c.key.clone());
            }
            files.extend(t.client_ca.clone());
        }
        files
            .into_iter()
            .map(|f| {
                let modified = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
                (f, modified)
            })
            .collect()
    }
}

impl admin::api::Reload for Reloader {
    fn reload(&self) -> admin::body::Reloaded {
        self.reload_and_log("admin API")
    }
}

/// Reloads on SIGHUP until the drain.
pub async fn on_sighup(reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP: reload only by certificate changes");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let r = reloader.clone();
                // Reading files and building pools blocks: off the async workers.
                let _ = tokio::task::spawn_blocking(move || r.reload_and_log("SIGHUP")).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Reloads when a certificate, key or client-CA file changes (an ACME client's renewal), so
/// that no signal is needed.
pub async fn watch_certificates(reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    let mut seen = reloader.watched();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let now = reloader.watched();
        if now != seen {
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload_and_log("certificate files changed")).await;
            seen = reloader.watched();
        }
    }
}

/// Starts the health checks of `pools`; the sender stops them (so does the drain).
fn start_checks(
    bg: &tokio::runtime::Handle,
    pools: &[Arc<edge::UpstreamPool>],
    mut shutdown: Shutdown,
) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    for pool in pools {
        if let Some(hc) = pool.health_check.clone() {
            bg.spawn(pool.clone().run_checks(hc, stopped.clone()));
        }
    }
    // The drain stops this generation too; a reload stops it first.
    let forward = stop.clone();
    let mut replaced = stopped;
    bg.spawn(async move {
        tokio::select! {
            _ = shutdown.changed() => { let _ = forward.send(true); }
            _ = replaced.changed() => {}
        }
    });
    stop
}

/// Whether `entra`'s credential is a certificate, whose files a renewal replaces in place.
fn reads_files(entra: &config::EntraConfig) -> bool {
    matches!(
        entra.credential,
        Some(config::ClientCredentialConfig::Certificate { .. })
    )
}

/// The sections of `new` that differ from `old` and that only a restart applies.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let addresses = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address, l.tls.is_some(), l.forward_auth.clone()))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (name, changed) in [
        (
            "listeners (addresses, names, TLS on or off, forward_auth)",
            addresses(old) != addresses(new),
        ),
        // Trusted proxies reload; the rest of [server] does not.
        ("[server]", {
            let mut was = old.server.clone();
            was.trusted_proxies = new.server.trusted_proxies.clone();
            differs(&was, &new.server)
        }),
        ("[admin]", differs(&old.admin, &new.admin)),
        // A changed [entra] reloads; only its coming or going needs a start.
        ("[entra] (added or removed)", old.entra.is_some() != new.entra.is_some()),
        ("[session]", differs(&old.session, &new.session)),
        ("[device]", differs(&old.device, &new.device)),
        (
            "landing.assertion_key_file",
            old.landing.assertion_key_file != new.landing.assertion_key_file,
        ),
        ("[store]", differs(&old.store, &new.store)),
        ("[sync]", differs(&old.sync, &new.sync)),
        ("[jamf]", differs(&old.jamf, &new.jamf)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere mid-update leaves a whole value behind: still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
