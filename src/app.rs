//! Wiring: builds every component from a [`Config`], checks that the ports are free, runs
//! the pingora server and drains it on SIGTERM/SIGINT. The only module that reads `Config`
//! as a whole.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use access::assertion::AssertionSigner;
use access::Access;
use admin::{self, Readiness};
use config::{Config, ConfigError, ConfigErrors};
use device::changes::follow_changes;
use device::{CacheSettings, Devices, PostureCache};
use identity::app_token::AppTokens;
use identity::credential::ClientCredential;
use identity::store_sessions::StoreSessions;
use identity::Identity;
use landing::{Landings, ReturnSigner};
use metrics::Metrics;
use policy::Require;
use proxy::{self, upstream::PendingPool};
use store::sqlite::SqliteStore;
use sync::graph::{GraphClient, RetryPolicy};
use sync::jamf::{ApiVersion, JamfClient};
use sync::settings::{ConditionalAccess, ConnectionType, LandingChoice, Settings};
use sync::webhook::{JamfWebhooks, WebhookAuth};
use sync::{SyncLoop, SyncSettings};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{0}")]
    Config(ConfigErrors),
    #[error("{what} {addr}: cannot listen: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pool(#[from] proxy::upstream::PoolError),
    #[error("proxy set-up failed: {0}")]
    Pingora(String),
    #[error("identity set-up failed: {0}")]
    Identity(String),
    #[error("store: {0}")]
    Store(String),
    #[error("no key: {0}")]
    Random(String),
}

/// Checks what can be checked without starting anything: the file's values and the files it
/// names (certificates, keys, CA bundles are read by `serve` too).
pub fn check(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = proxy::load_tls(cfg) {
        errors.extend(e);
    }
    if let Err(e) = Landings::new(cfg.landing.clone(), ReturnSigner::new(b"check")) {
        errors.push(ConfigError {
            key: "landing.templates_dir".into(),
            message: e.detail().to_string(),
        });
    }
    if let Some(c) = cfg.entra.as_ref().and_then(|e| e.credential.as_ref()) {
        if let Err(e) = ClientCredential::load(c) {
            let key = match c {
                config::ClientCredentialConfig::Secret(_) => "entra.client_secret",
                config::ClientCredentialConfig::Certificate { .. } => "entra.client_certificate",
                config::ClientCredentialConfig::AssertionFile(_) => "entra.client_assertion_file",
            };
            errors.push(ConfigError {
                key: key.into(),
                message: e.to_string(),
            });
        }
    }
    if let Err(message) = AssertionSigner::new(cfg.landing.assertion_key_file.as_deref()) {
        errors.push(ConfigError {
            key: "landing.assertion_key_file".into(),
            message,
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Runs the gateway until SIGTERM/SIGINT, then drains. Blocks the calling thread; must not
/// be called from inside a tokio runtime.
pub fn serve(cfg: Config) -> Result<(), StartError> {
    // The first rustls config built picks the process-wide provider; make it ring, always.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let resolvers = proxy::load_tls(&cfg).map_err(|e| StartError::Config(ConfigErrors(e)))?;

    // pingora retries a failed bind for 30 s and then panics inside its service while the
    // process lives on (reference/pingora-0.9.md §6.3): find taken ports first.
    let admin_listener = TcpListener::bind(cfg.admin.listen).map_err(|source| StartError::Bind {
        what: "admin.listen".into(),
        addr: cfg.admin.listen,
        source,
    })?;
    for (i, l) in cfg.listeners.iter().enumerate() {
        TcpListener::bind(l.address).map_err(|source| StartError::Bind {
            what: format!("listeners[{i}] ({})", l.name),
            addr: l.address,
            source,
        })?;
    }

    let metrics = Metrics::new();
    let tmp = std::env::temp_dir();
    let conf = ServerConf {
        threads: cfg.server.threads,
        // One runtime per thread, like nginx's workers: with work stealing the threads kept
        // waking each other for connections already being served (futex traffic in perf);
        // without it, interleaved wrk runs against the demo served 24-27 % more requests per
        // second (docs/benchmarks.md). The proxy itself runs one single-threaded service per
        // worker (`proxy::services`).
        work_stealing: false,
        grace_period_seconds: Some(cfg.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.server.graceful_shutdown_timeout.as_secs()),
        pid_file: tmp
            .join(format!("portcullis-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: tmp
            .join(format!("portcullis-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut pools = Vec::new();
    for u in &cfg.upstreams {
        let pending = PendingPool::build(u)?;
        let has_health_check = pending.has_health_check;
        let (lb, rest) = pending.into_parts();
        let lb = if has_health_check {
            // The health-check service owns the balancer; the request path shares it.
            let bg = background_service(&format!("health check {}", u.name), lb);
            let shared = bg.task();
            server.add_service(bg);
            shared
        } else {
            Arc::new(lb)
        };
        pools.push(Arc::new(rest.finish(lb)));
    }
    let routes = Arc::new(ArcSwap::from_pointee(proxy::route_table(&cfg, &pools, &metrics)));
    for r in cfg.routes.iter().filter(|r| r.policy.require == Require::Nothing) {
        tracing::warn!(route = %r.name, "route is open: no sign-in required (require = \"none\")");
    }
    // The store's pool lives on its own long-lived runtime; every other runtime uses it.
    let store_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-store")
        .enable_all()
        .build()
        .map_err(|e| StartError::Store(e.to_string()))?;
    let store = Arc::new(
        store_rt
            .block_on(SqliteStore::open(&cfg.store.sqlite_path))
            .map_err(|e| StartError::Store(format!("{}: {e}", cfg.store.sqlite_path.display())))?,
    );
    tracing::info!(path = %cfg.store.sqlite_path.display(), "store open (SQLite)");
    let identity = match &cfg.entra {
        Some(e) => {
            let id = Identity::new(e, &cfg.session).map_err(|e| StartError::Identity(e.to_string()))?;
            let sessions = StoreSessions::new(
                store.clone(),
                id.sealer.clone(),
                cfg.session.lifetime,
                cfg.session.idle_timeout,
            );
            Some(Arc::new(id.with_sessions(Arc::new(sessions))))
        }
        None => None,
    };
    let d = &cfg.device;
    let cache = Arc::new(PostureCache::new(
        store.clone(),
        CacheSettings {
            positive_ttl: d.posture_cache_ttl,
            negative_ttl: d.unknown_cache_ttl,
            lookup_timeout: d.lookup_timeout,
            capacity: 1_000_000,
        },
    ));
    let devices = Arc::new(Devices::new(store.clone(), cache.clone(), d.sources.clone()));
    server.add_service(background_service(
        "posture changes",
        FollowChanges {
            store: store.clone(),
            cache,
            interval: d.change_poll_interval,
        },
    ));
    let ca = match &cfg.entra {
        Some(_) => Some(
            store_rt
                .block_on(Settings::load_or_seed(
                    &*store,
                    initial_settings(&cfg),
                    settings_sealer(&cfg)?,
                ))
                .map_err(|e| StartError::Store(e.to_string()))?,
        ),
        None => None,
    };
    let mut sync_control: Option<Arc<dyn sync::SyncControl>> = None;
    if let (true, Some(ca)) = (cfg.sync.enabled, &ca) {
        let sync = Arc::new(build_sync(&cfg, store.clone(), metrics.clone(), ca.clone())?);
        sync_control = Some(sync.clone() as Arc<dyn sync::SyncControl>);
        server.add_service(background_service("sync", SyncService(sync)));
    } else {
        tracing::warn!("the sync with Microsoft Graph is off: postures come only from what the store already holds");
    }
    // One key for the process: the settings follower rebuilds the landings with it, so return
    // URLs signed before a landing change still verify after it.
    let return_key: Arc<[u8]> = return_key(&cfg)?.into();
    let landings = Arc::new(
        Landings::new(cfg.landing.clone(), ReturnSigner::new(&return_key)).map_err(|e| {
            StartError::Config(ConfigErrors(vec![ConfigError {
                key: String::new(),
                message: e.to_string(),
            }]))
        })?,
    );
    let assertions = Arc::new(
        AssertionSigner::new(cfg.landing.assertion_key_file.as_deref()).map_err(|e| {
            StartError::Config(ConfigErrors(vec![ConfigError {
                key: "landing.assertion_key_file".into(),
                message: e,
            }]))
        })?,
    );
    let landings = Arc::new(arc_swap::ArcSwap::new(landings));
    if let Some(ca) = &ca {
        // The stored landing choice wins over the file's from the start.
        if let Some(l) = landings_for(&cfg, &ca.current(), &return_key) {
            landings.store(l);
        }
        server.add_service(background_service(
            "settings",
            FollowSettings {
                ca: ca.clone(),
                store: store.clone(),
                landings: landings.clone(),
                cfg: cfg.clone(),
                return_key: return_key.clone(),
            },
        ));
    }
    let access = Arc::new(Access {
        identity: identity.clone(),
        devices: Some(devices),
        landings,
        assertions,
    });
    let explainer = Arc::new(access::explain::Explainer {
        routes: routes.clone(),
        access: access.clone(),
    });
    let services = proxy::services(&cfg, &server.configuration, routes, resolvers, &metrics, access)
        .map_err(|e| StartError::Pingora(e.to_string()))?;
    for service in services {
        server.add_service(service);
    }

    let webhooks = match cfg.jamf.as_ref().and_then(|j| j.webhook.clone().map(|w| (j, w))) {
        Some((j, (username, password))) => {
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| StartError::Store(e.to_string()))?;
            let version = if j.api_version == 1 {
                ApiVersion::V1
            } else {
                ApiVersion::V3
            };
            let client = Arc::new(JamfClient::new(
                &j.url,
                &j.client_id,
                j.client_secret.clone(),
                version,
                http,
                RetryPolicy::default(),
            ));
            // The re-read worker lives on the store's runtime, which lasts as long as the process.
            let _rt = store_rt.enter();
            Some(JamfWebhooks::start(
                WebhookAuth { username, password },
                client,
                store.clone(),
            ))
        }
        None => None,
    };
    let readiness = Arc::new(Readiness::new(identity.is_some()));
    if let Some(id) = &identity {
        server.add_service(background_service(
            "signing keys",
            KeyRefresh {
                identity: id.clone(),
                readiness: readiness.clone(),
            },
        ));
    }
    let admin = AdminService {
        listener: Mutex::new(Some(admin_listener)),
        router: admin::router(
            metrics.clone(),
            readiness.clone(),
            webhooks,
            admin::api::Api {
                auth: Arc::new(admin::api::ApiAuth {
                    token_sha256: cfg.admin.token_sha256,
                    read_only_token_sha256: cfg.admin.read_only_token_sha256,
                    validator: identity.as_ref().map(|i| i.validator.clone()),
                    admin_role: cfg.admin.admin_role.clone(),
                    reader_role: cfg.admin.reader_role.clone(),
                }),
                store: store.clone(),
                settings: ca.clone(),
                sync: sync_control.clone(),
                jobs: Arc::new(admin::api::Jobs::default()),
                file_credential: cfg.entra.as_ref().and_then(|e| e.credential.as_ref()).map(|c| match c {
                    config::ClientCredentialConfig::Secret(_) => "client_secret",
                    config::ClientCredentialConfig::Certificate { .. } => "certificate",
                    config::ClientCredentialConfig::AssertionFile(_) => "assertion_file",
                }),
                explainer: Some(explainer),
            },
        ),
        readiness,
        proxy_addrs: cfg.listeners.iter().map(|l| (l.address, l.tls.is_some())).collect(),
    };
    server.add_service(background_service("admin", admin));
    server.add_service(background_service(
        "drain",
        Drain {
            metrics: metrics.clone(),
            grace: cfg.server.grace_period,
        },
    ));

    tracing::info!(summary = %cfg.summary(), "portcullis starting");
    for l in &cfg.listeners {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        tracing::info!(listener = %l.name, "listening on {scheme}://{}", l.address);
    }
    tracing::info!("admin API on http://{}", cfg.admin.listen);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    Ok(())
}

/// SIGTERM and SIGINT both drain gracefully (pingora's default treats SIGINT as fast exit).
struct Signals;

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

/// Serves the admin router on the listener bound at start.
struct AdminService {
    listener: Mutex<Option<TcpListener>>,
    router: axum::Router,
    readiness: Arc<Readiness>,
    proxy_addrs: Vec<(SocketAddr, bool)>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
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
        tokio::spawn(admin::watch_listeners(self.readiness.clone(), self.proxy_addrs.clone()));
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    }
}

/// Ends the process as soon as no request is in flight after shutdown began, instead of
/// always sleeping the whole grace period as pingora does; pingora's own timer still ends
/// it after `grace_period` at the latest.
struct Drain {
    metrics: Metrics,
    grace: Duration,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.metrics.requests_in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let left = self.metrics.requests_in_flight.get();
        if left > 0 {
            tracing::warn!(requests = left, "grace period over; closing the remaining requests");
        } else {
            tracing::info!("drained; exiting");
        }
        run_exit_hooks();
        // Nothing else holds state that needs flushing; pingora would otherwise sleep out
        // the rest of its grace period.
        std::process::exit(0);
    }
}

type ExitHook = Box<dyn FnOnce() + Send>;
static EXIT_HOOKS: Mutex<Vec<ExitHook>> = Mutex::new(Vec::new());

/// Runs `f` when the gateway exits after draining (it ends the process itself, so code after
/// [`serve`] does not run then). The demo removes its temporary directory this way.
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    if let Ok(mut hooks) = EXIT_HOOKS.lock() {
        hooks.push(Box::new(f));
    }
}

fn run_exit_hooks() {
    let hooks = EXIT_HOOKS
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    for hook in hooks {
        hook();
    }
}

/// Fetches every tenant's signing keys at start (readiness waits for them), then refreshes
/// them hourly with jitter.
struct KeyRefresh {
    identity: Arc<Identity>,
    readiness: Arc<Readiness>,
}

#[async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        let jwks = self.identity.validator.jwks().clone();
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
                self.readiness.set_keys_loaded();
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
}

/// The key that signs `return_to` URLs: derived from the session cookie key when one is set
/// (so every node agrees), else random for this process. A failed random source stops the
/// start: an empty key would let anyone sign a return URL.
fn return_key(cfg: &Config) -> Result<Vec<u8>, StartError> {
    match &cfg.session.cookie_key {
        Some(k) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.expose().as_bytes());
            Ok(ring::hmac::sign(&key, b"portcullis return_to").as_ref().to_vec())
        }
        None => base::seal::random_token(32)
            .map(String::into_bytes)
            .map_err(|e| StartError::Random(e.to_string())),
    }
}

/// Keeps the posture cache in step with the store's change log.
struct FollowChanges {
    store: Arc<SqliteStore>,
    cache: Arc<PostureCache>,
    interval: Duration,
}

#[async_trait]
impl BackgroundService for FollowChanges {
    async fn start(&self, shutdown: ShutdownWatch) {
        follow_changes(self.store.clone(), self.cache.clone(), self.interval, shutdown).await;
    }
}

fn build_sync(
    cfg: &Config,
    store: Arc<SqliteStore>,
    metrics: Metrics,
    ca: Arc<Settings>,
) -> Result<SyncLoop<SqliteStore>, StartError> {
    let Some(entra) = &cfg.entra else {
        return Err(StartError::Identity("the sync needs an [entra] section".into()));
    };
    let configured = match &entra.credential {
        Some(c) => Some(Arc::new(
            ClientCredential::load(c).map_err(|e| StartError::Identity(e.to_string()))?,
        )),
        None => None,
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError::Identity(e.to_string()))?;
    let (entra_cfg, budget, settings, conn_http) = (entra.clone(), cfg.sync.requests_per_20s, ca.clone(), http.clone());
    // A Graph client for a settings document: its tenant, application and secret; the
    // configured endpoints while the cloud is the configured one, else the cloud's own.
    let connect = move |doc: &sync::settings::ConditionalAccess| -> Option<GraphClient> {
        let cloud: base::cloud::NationalCloud = doc.cloud.parse().ok()?;
        let (authority, graph_url): (String, String) = if cloud == entra_cfg.cloud {
            (entra_cfg.authority_url.clone(), entra_cfg.graph_url.clone())
        } else {
            (
                format!("https://{}", cloud.hosts().login),
                format!("https://{}", cloud.hosts().graph),
            )
        };
        let credential = match settings.client_secret(doc) {
            Some(secret) => Some(Arc::new(
                ClientCredential::load(&config::ClientCredentialConfig::Secret(base::Secret::new(secret))).ok()?,
            )),
            None => configured.clone(),
        };
        let scope = format!("{graph_url}/.default");
        let tokens = Arc::new(AppTokens::new(
            &authority,
            &doc.tenant_id,
            &doc.application_id,
            &scope,
            credential,
            conn_http.clone(),
        ));
        Some(GraphClient::new(
            &graph_url,
            tokens,
            conn_http.clone(),
            RetryPolicy::default(),
            budget,
        ))
    };
    let graph = connect(&ca.current())
        .ok_or_else(|| StartError::Identity("the Conditional Access settings name an unknown cloud".into()))?;
    let jamf = cfg.jamf.as_ref().map(|j| {
        let version = if j.api_version == 1 {
            ApiVersion::V1
        } else {
            ApiVersion::V3
        };
        Arc::new(JamfClient::new(
            &j.url,
            &j.client_id,
            j.client_secret.clone(),
            version,
            http.clone(),
            RetryPolicy::default(),
        ))
    });
    let s = &cfg.sync;
    Ok(SyncLoop {
        graph: arc_swap::ArcSwap::from_pointee(graph),
        connect: Box::new(connect),
        ca: Some(ca),
        jamf,
        store,
        settings: SyncSettings {
            interval: s.interval,
            intune: s.intune,
            intune_interval: s.intune_interval,
            full_reconcile: s.full_reconcile,
            page_size: s.page_size,
            lease_ttl: (s.interval * 3).max(Duration::from_secs(30)),
            jamf_interval: cfg.jamf.as_ref().map_or(Duration::from_secs(900), |j| j.interval),
            jamf_page_size: cfg.jamf.as_ref().map_or(100, |j| j.page_size),
            share: sync::share::ShareSettings {
                attributes: s.share.clone(),
            },
        },
        node: s.node_name.clone(),
        metrics,
        now: Arc::new(tokio::sync::Notify::new()),
    })
}

/// Runs the sync loop as a pingora background service.
struct SyncService(Arc<SyncLoop<SqliteStore>>);

#[async_trait]
impl BackgroundService for SyncService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// The first settings document, from the configuration file.
fn initial_settings(cfg: &Config) -> ConditionalAccess {
    let e = cfg.entra.as_ref();
    ConditionalAccess {
        enabled: cfg.sync.enabled,
        connection: match e.and_then(|e| e.credential.as_ref()) {
            Some(config::ClientCredentialConfig::AssertionFile(_)) => ConnectionType::Secretless,
            Some(_) | None => ConnectionType::Manual,
        },
        cloud: e.map_or("global".to_string(), |e| e.cloud.as_str().to_string()),
        tenant_id: e.map(|e| e.tenant_id.clone()).unwrap_or_default(),
        application_id: e.map(|e| e.client_id.clone()).unwrap_or_default(),
        // The file's secret stays in the file (or the environment); a secret set through the
        // settings is sealed here.
        client_secret_sealed: None,
        secret_changed_at: None,
        landing: match &cfg.landing.unrecognized {
            config::UnrecognizedLanding::Registration => LandingChoice::Registration,
            config::UnrecognizedLanding::AccessDenied => LandingChoice::AccessDenied,
            config::UnrecognizedLanding::Custom(url) => LandingChoice::Custom { url: url.clone() },
        },
    }
}

/// The key sealing secrets inside settings: `PORTCULLIS_SETTINGS_KEY_FILE` or
/// `PORTCULLIS_SETTINGS_KEY` (32 bytes, base64), else
/// derived from the session cookie key, else random (stored secrets then do not survive a
/// restart: logged).
fn settings_sealer(cfg: &Config) -> Result<base::seal::Sealer, StartError> {
    use base64::Engine;
    let bad = |m: &str| {
        StartError::Config(ConfigErrors(vec![ConfigError {
            key: "PORTCULLIS_SETTINGS_KEY".into(),
            message: m.into(),
        }]))
    };
    if let Ok(path) = std::env::var("PORTCULLIS_SETTINGS_KEY_FILE") {
        let k =
            std::fs::read_to_string(&path).map_err(|e| bad(&format!("PORTCULLIS_SETTINGS_KEY_FILE {path}: {e}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .map_err(|_| bad("the key file is not base64"))?;
        return base::seal::Sealer::new(&bytes).map_err(|_| bad("the key file must hold 32 bytes"));
    }
    if let Ok(k) = std::env::var("PORTCULLIS_SETTINGS_KEY") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .map_err(|_| bad("not base64"))?;
        return base::seal::Sealer::new(&bytes).map_err(|_| bad("must be 32 bytes"));
    }
    if let Some(k) = &cfg.session.cookie_key {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.expose().as_bytes());
        let derived = ring::hmac::sign(&key, b"portcullis settings");
        return base::seal::Sealer::new(derived.as_ref()).map_err(|_| bad("cannot derive"));
    }
    tracing::warn!("no PORTCULLIS_SETTINGS_KEY (or session.cookie_key): a client secret set at run time will not survive a restart");
    base::seal::Sealer::random().map_err(|_| bad("no randomness"))
}

/// The landings for a settings document's landing choice; `None` when they cannot be built.
fn landings_for(cfg: &Config, doc: &ConditionalAccess, return_key: &[u8]) -> Option<Arc<Landings>> {
    let mut l = cfg.landing.clone();
    l.unrecognized = match &doc.landing {
        LandingChoice::Registration => config::UnrecognizedLanding::Registration,
        LandingChoice::AccessDenied => config::UnrecognizedLanding::AccessDenied,
        LandingChoice::Custom { url } => config::UnrecognizedLanding::Custom(url.clone()),
    };
    Landings::new(l, ReturnSigner::new(return_key)).ok().map(Arc::new)
}

/// Applies settings changed by any node.
struct FollowSettings {
    ca: Arc<Settings>,
    store: Arc<SqliteStore>,
    landings: Arc<arc_swap::ArcSwap<Landings>>,
    cfg: Config,
    return_key: Arc<[u8]>,
}

#[async_trait]
impl BackgroundService for FollowSettings {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.ca
            .follow(&*self.store, Duration::from_secs(1), shutdown, |doc| {
                if let Some(l) = landings_for(&self.cfg, doc, &self.return_key) {
                    self.landings.store(l);
                }
            })
            .await;
    }
}
