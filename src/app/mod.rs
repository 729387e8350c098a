//! Wiring: builds every component from its own section of the [`Config`], in dependency
//! order, checks that the ports are free, starts the background tasks and the data plane
//! (`edge`), and drains both on SIGTERM/SIGINT. The only module that reads `Config` as a
//! whole; it decides nothing itself.
//!
//! - `keys`: every key taken from the environment or derived, in one place that
//!   `check-config` runs too;
//! - `services`: the background tasks (signing keys, posture changes, settings, sync, admin
//!   listener) and the signals;
//! - `reload`: SIGHUP and certificate renewals applied as new snapshots;
//! - `upgrade`: SIGUSR2, the binary upgrade that hands the listening sockets to a new process.

mod backend;
mod keys;
mod reload;
mod services;
mod upgrade;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use access::assertion::AssertionSigner;
use access::Access;
use config::{Config, ConfigError, ConfigErrors};
use device::Devices;
use identity::credential::ClientCredential;
use identity::store_sessions::StoreSessions;
use identity::{CurrentIdentity, Identity, IdentityError};
use landing::{Landings, ReturnSigner};
use metrics::Metrics;
use policy::Require;
use store::StoreError;
use sync::jamf::JamfClient;
use sync::settings::{ConditionalAccess, ConnectionType, Settings, SettingsError};
use sync::webhook::{JamfWebhooks, WebhookAuth};
use sync::{BuildError, SyncLoop};

pub use keys::{Env, Keys, ProcessEnv};
pub use services::ExitHook;

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
    Pool(#[from] edge::upstream::PoolError),
    #[error("{0}")]
    Serve(#[from] edge::serve::ServeError),
    #[error("cannot watch SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    #[error("identity set-up failed: {0}")]
    Identity(#[from] IdentityError),
    #[error("store ({path}): {source}")]
    Store { path: String, source: StoreError },
    #[error("the Conditional Access settings cannot be loaded: {0}")]
    Settings(#[from] SettingsError),
    #[error("sync set-up failed: {0}")]
    Sync(#[from] BuildError),
    #[error("the sync needs an [entra] section")]
    SyncWithoutEntra,
    #[error("HTTP client set-up failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the store's runtime cannot start: {0}")]
    Runtime(std::io::Error),
    #[error("upgrade: {0}")]
    Upgrade(#[from] upgrade::ReceiveError),
}

/// Checks what can be checked without starting anything: the file's values, the files it
/// names (certificates, keys, CA bundles, templates; `serve` reads them too) and the keys from
/// the environment.
pub fn check(cfg: &Config, env: &dyn Env) -> Result<(), ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = edge::tls::load(cfg) {
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
            errors.push(ConfigError {
                key: c.key().into(),
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
    if let Err(e) = Keys::load(cfg, env) {
        errors.extend(e);
    }
    errors.extend(backend::check(&cfg.store));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Runs the gateway until SIGTERM/SIGINT, then drains. Blocks the calling thread; must not
/// be called from inside a tokio runtime.
pub fn serve(cfg: Config) -> Result<(), StartError> {
    serve_with(cfg, &ProcessEnv, Vec::new(), Upgrades::Allowed)
}

/// Whether SIGUSR2 may start this process's binary again with its arguments (`serve`), or
/// those arguments would start something else (the demo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrades {
    Allowed,
    NotForThisCommand,
}

/// [`serve`], with the environment the keys come from and hooks run when the gateway exits
/// after draining (it ends the process itself, so code after this call does not run then).
/// Opens the store `cfg` names, migrated (the demo seeds it before the gateway starts).
pub fn open_store(
    cfg: &config::StoreConfig,
    rt: &tokio::runtime::Runtime,
) -> Result<Arc<dyn store::Store>, StartError> {
    backend::open(cfg, rt, None).map(|o| o.store)
}

pub fn serve_with(cfg: Config, env: &dyn Env, on_exit: Vec<ExitHook>, upgrades: Upgrades) -> Result<(), StartError> {
    // The first rustls config built picks the process-wide provider; make it ring, always.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upgrader = upgrade::Upgrader::new(upgrades == Upgrades::Allowed);
    // First: the process this one replaces is waiting to hand its sockets over.
    let mut inherited = upgrade::Inherited::receive()?;
    if inherited.is_upgrade() {
        tracing::info!("upgrade: started by the process this one replaces; taking its listening sockets over");
    }

    let tls = edge::tls::load(&cfg).map_err(|e| StartError::Config(ConfigErrors(e)))?;
    let keys = Keys::load(&cfg, env).map_err(|e| StartError::Config(ConfigErrors(e)))?;
    if !keys.settings_persistent {
        tracing::warn!(
            "no {} (or session.cookie_key): a client secret set at run time will not survive a restart",
            keys::SETTINGS_KEY
        );
    }
    let admin_listener = check_ports(&cfg, &mut inherited)?;
    let admin_socket = admin_listener.try_clone().map_err(|source| StartError::Bind {
        what: "admin.listen".into(),
        addr: cfg.admin.listen,
        source,
    })?;

    let metrics = Metrics::new();
    // Background tasks (admin, sync, followers, health checks) run here; the data plane has
    // its own threads.
    let bg = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("portcullis-bg")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let mut signals = {
        let _rt = bg.enter();
        services::Signals::install().map_err(StartError::Signals)?
    };
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();

    let pools = edge::build_pools(&cfg.upstreams)?;
    let routes = Arc::new(ArcSwap::from_pointee(edge::route_table(&cfg, &pools, &metrics)));
    // Each listener's TLS configuration sits in a slot a reload replaces.
    let slots: Vec<Option<edge::serve::TlsSlot>> =
        tls.into_iter().map(|t| t.map(|c| Arc::new(ArcSwap::new(c)))).collect();
    for r in cfg.routes.iter().filter(|r| r.policy.require == Require::Nothing) {
        tracing::warn!(route = %r.name, "route is open: no sign-in required (require = \"none\")");
    }

    // The store's pool lives on its own long-lived runtime; every other runtime uses it.
    let store_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-store")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let backend::Opened { store, lock } = backend::open(&cfg.store, &store_rt, inherited.lock.take())?;
    // Jobs this node was running when it last stopped will never finish: say so — after an
    // upgrade, once the old process (which may be running them) has exited.
    let interrupt_jobs = {
        let (store, node, rt) = (store.clone(), cfg.sync.node_name.clone(), store_rt.handle().clone());
        // Jobs started by the time this process serves (only then can it start its own).
        move |started_by: i64| match rt.block_on(store.interrupt_jobs(&node, started_by, base::time::unix_now_i64())) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "jobs this node ran before it restarted are marked interrupted"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot mark the jobs interrupted by the last restart"),
        }
    };
    let interrupt_jobs = if inherited.is_upgrade() {
        Some(interrupt_jobs)
    } else {
        interrupt_jobs(base::time::unix_now_i64());
        None
    };
    tracing::info!(store = %cfg.store.describe(), "store open");

    let identity = match &cfg.entra {
        Some(e) => {
            let id = Identity::new(e, &cfg.session)?;
            let sessions = StoreSessions::new(
                store.clone(),
                id.sealer.clone(),
                cfg.session.lifetime,
                cfg.session.idle_timeout,
            );
            Some(Arc::new(CurrentIdentity::new(id.with_sessions(Arc::new(sessions)))))
        }
        None => None,
    };
    let file_entra: Option<sync::SharedFileEntra> = match &cfg.entra {
        Some(e) => Some(Arc::new(ArcSwap::from_pointee(
            sync::FileEntra::load(e).map_err(sync::BuildError::from)?,
        ))),
        None => None,
    };
    let devices = Arc::new(Devices::from_config(&cfg.device, store.clone()));
    let postures = devices.cache.clone();
    tasks.push(bg.spawn(services::follow_changes(
        store.clone(),
        devices.cache.clone(),
        cfg.device.change_poll_interval,
        shutdown.clone(),
    )));

    let settings = match &cfg.entra {
        Some(_) => Some(store_rt.block_on(Settings::load_or_seed(&*store, initial_settings(&cfg), keys.settings))?),
        None => None,
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    // One Jamf client for the sync and the webhooks: they share its token.
    let jamf = cfg
        .jamf
        .as_ref()
        .map(|j| (j, Arc::new(JamfClient::from_config(j, http.clone()))));
    let mut sync_control: Option<Arc<dyn sync::SyncControl>> = None;
    match (cfg.sync.enabled, &settings, &file_entra) {
        (true, Some(settings), Some(file)) => {
            let sync = Arc::new(SyncLoop::from_config(
                file.clone(),
                &cfg.sync,
                jamf.as_ref().map(|(c, client)| (*c, client.clone())),
                store.clone(),
                settings.clone(),
                metrics.clone(),
                http.clone(),
            )?);
            sync_control = Some(sync.clone() as Arc<dyn sync::SyncControl>);
            tasks.push(bg.spawn(services::sync(sync, shutdown.clone())));
        }
        (true, _, None) => return Err(StartError::SyncWithoutEntra),
        (true, None, Some(_)) | (false, _, _) => {
            tracing::warn!("the sync with Microsoft Graph is off: postures come only from what the store already holds")
        }
    }

    let landings = Landings::new(cfg.landing.clone(), ReturnSigner::new(&keys.return_to)).map_err(|e| {
        StartError::Config(ConfigErrors(vec![ConfigError {
            key: "landing.templates_dir".into(),
            message: e.to_string(),
        }]))
    })?;
    let assertions = AssertionSigner::new(cfg.landing.assertion_key_file.as_deref()).map_err(|message| {
        StartError::Config(ConfigErrors(vec![ConfigError {
            key: "landing.assertion_key_file".into(),
            message,
        }]))
    })?;
    let landings = Arc::new(ArcSwap::from_pointee(landings));
    let landing_file = Arc::new(ArcSwap::from_pointee(cfg.landing.clone()));
    if let Some(s) = &settings {
        // The stored landing choice wins over the file's from the start.
        let follower = services::LandingFollower {
            landing: landing_file.clone(),
            return_key: keys.return_to.clone(),
            landings: landings.clone(),
        };
        follower.apply(&s.current());
        tasks.push(bg.spawn(services::follow_settings(
            s.clone(),
            store.clone(),
            follower,
            shutdown.clone(),
        )));
    }
    let (serve_settings, proxy_settings) = edge::settings(&cfg.server, &metrics);
    let reloader = Arc::new(reload::Reloader::new(
        cfg.clone(),
        reload::Snapshots {
            slots: slots.clone(),
            routes: routes.clone(),
            landing_file,
            landings: landings.clone(),
            return_key: keys.return_to.clone(),
            settings: settings.clone(),
            trusted_proxies: proxy_settings.trusted_proxies.clone(),
            identity: identity.clone(),
            file_entra: file_entra.clone(),
            sync: sync_control.clone(),
        },
        &pools,
        metrics.clone(),
        bg.handle().clone(),
        shutdown.clone(),
    ));
    tasks.push(bg.spawn(reload::on_sighup(reloader.clone(), shutdown.clone())));
    tasks.push(bg.spawn(reload::watch_certificates(reloader.clone(), shutdown.clone())));
    // Open WebSockets follow their device's posture as the cache learns of changes.
    let live = Arc::new(access::live::LiveConnections::default());
    tasks.push(bg.spawn(access::live::follow(live.clone(), postures.clone(), shutdown.clone())));
    if let Some(id) = &identity {
        // ... and their browser session.
        tasks.push(bg.spawn(access::live::follow_sessions(
            live.clone(),
            id.clone(),
            shutdown.clone(),
        )));
    }
    let access = Arc::new(Access {
        identity: identity.clone(),
        devices: Some(devices),
        landings,
        assertions: Arc::new(assertions),
        live: live.clone(),
    });
    let explainer = Arc::new(access::explain::Explainer {
        routes: routes.clone(),
        access: access.clone(),
    });
    let gateway = Arc::new(
        edge::Gateway::new(routes, proxy_settings, metrics.clone(), access)
            .with_forward_auth(cfg.listeners.iter().map(|l| l.forward_auth.clone()).collect()),
    );

    let webhooks = match (&jamf, cfg.jamf.as_ref().and_then(|j| j.webhook.clone())) {
        (Some((_, client)), Some((username, password))) => {
            // The re-read worker lives on the store's runtime, which lasts as long as the process.
            let _rt = store_rt.enter();
            Some(JamfWebhooks::start(
                WebhookAuth { username, password },
                client.clone(),
                store.clone(),
            ))
        }
        (Some(_), None) | (None, _) => None,
    };
    let readiness = Arc::new(admin::Readiness::new(identity.is_some()));
    if let Some(id) = &identity {
        tasks.push(bg.spawn(services::signing_keys(id.clone(), readiness.clone(), shutdown.clone())));
    }
    let decisions = Arc::new(metrics::DecisionHistory::new(
        metrics.clone(),
        base::time::unix_now_i64(),
    ));
    tasks.push(bg.spawn(services::decision_history(decisions.clone(), shutdown.clone())));
    let api = admin::api::Api {
        auth: Arc::new(admin::api::ApiAuth::from_config(&cfg.admin, identity.clone())),
        store: store.clone(),
        settings,
        sync: sync_control,
        node: cfg.sync.node_name.clone(),
        file_entra: file_entra.clone(),
        explainer: Some(explainer),
        send_update_budget: Arc::default(),
        file_share: cfg.sync.share.clone(),
        decisions: Some(decisions),
        postures: Some(postures),
        reload: Some(reloader),
    };
    tasks.push(bg.spawn(services::admin(
        admin_listener,
        admin::router(metrics.clone(), readiness.clone(), webhooks, api),
        readiness,
        cfg.listeners.iter().map(|l| (l.address, l.tls.is_some())).collect(),
        shutdown.clone(),
    )));

    tracing::info!(summary = %cfg.summary(), "portcullis starting");
    let listeners: Vec<edge::serve::Listener> = cfg
        .listeners
        .iter()
        .zip(slots)
        .map(|(l, tls)| edge::serve::Listener {
            address: l.address,
            tls,
        })
        .collect();
    let mut running = edge::serve::start(serve_settings, &listeners, gateway, shutdown, inherited.take_sockets())?;
    for l in &cfg.listeners {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        tracing::info!(listener = %l.name, "listening on {scheme}://{}", l.address);
    }
    tracing::info!("admin API on http://{}", cfg.admin.listen);
    let serving_since = base::time::unix_now_i64();
    inherited.serving(move || {
        if let Some(f) = interrupt_jobs {
            f(serving_since);
        }
    });

    // Kept until the process exits: the new process of an upgrade learns from its end of the
    // link closing that this one is gone.
    let mut _successor = None;
    loop {
        match bg.block_on(signals.next()) {
            services::Signal::Stop(signal) => {
                tracing::info!("{signal} received: no new connections; draining in-flight requests");
                break;
            }
            services::Signal::Upgrade => {
                tracing::info!("SIGUSR2 received: upgrading to the binary at this process's path");
                let sockets = running.sockets();
                let handoff = upgrade::Handoff {
                    sockets: sockets
                        .iter()
                        .chain([&admin_socket])
                        .map(std::os::fd::AsFd::as_fd)
                        .collect(),
                    lock: lock.as_ref().map(std::os::fd::AsFd::as_fd),
                };
                // SIGTERM meanwhile wins: the new process is stopped and this one drains.
                let outcome = bg.block_on(async {
                    let run = upgrader.run(&handoff);
                    tokio::pin!(run);
                    loop {
                        tokio::select! {
                            done = &mut run => return Ok(done),
                            signal = signals.next() => match signal {
                                services::Signal::Stop(name) => return Err(name),
                                services::Signal::Upgrade => tracing::warn!("SIGUSR2 received during an upgrade: ignored"),
                            },
                        }
                    }
                });
                match outcome {
                    Ok(Ok(successor)) => {
                        tracing::info!(
                            pid = successor.pid,
                            "upgrade: the new process is serving; this one drains its connections and exits"
                        );
                        _successor = Some(successor);
                        break;
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "upgrade failed; this process goes on serving"),
                    Err(signal) => {
                        tracing::info!("{signal} received during the upgrade: the new process is stopped; draining in-flight requests");
                        break;
                    }
                }
            }
        }
    }
    // Sockets are closed as the workers stop accepting: refused from now on, unless a new
    // process holds them too.
    drop(admin_socket);
    drop(running.take_sockets());
    // The workers stop accepting and give open requests `grace_period`; the background tasks
    // stop with them.
    let _ = stop.send(true);
    if running.join() {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("grace period over; the remaining connections were closed");
    }
    // The background tasks saw the same signal; give them `graceful_shutdown_timeout` to end.
    let all_stopped = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    let stopped = bg.block_on(async { tokio::time::timeout(cfg.server.graceful_shutdown_timeout, all_stopped).await });
    if stopped.is_err() {
        tracing::warn!("background tasks still running after server.graceful_shutdown_timeout; stopping them");
    }
    bg.shutdown_timeout(Duration::from_millis(100));
    for hook in on_exit {
        hook();
    }
    // The store's runtime and what it holds need no flushing (every write is committed).
    std::process::exit(0);
}

/// Binds the admin listener and test-binds every proxy listener, so that a taken port is
/// reported with its key before the store is opened or anything starts.
fn check_ports(cfg: &Config, inherited: &mut upgrade::Inherited) -> Result<TcpListener, StartError> {
    let admin = match inherited.take(cfg.admin.listen) {
        Some(socket) => socket,
        None => TcpListener::bind(cfg.admin.listen).map_err(|source| StartError::Bind {
            what: "admin.listen".into(),
            addr: cfg.admin.listen,
            source,
        })?,
    };
    for (i, l) in cfg
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| !inherited.has(l.address))
    {
        TcpListener::bind(l.address).map_err(|source| StartError::Bind {
            what: format!("listeners[{i}] ({})", l.name),
            addr: l.address,
            source,
        })?;
    }
    Ok(admin)
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
        landing: cfg.landing.unrecognized.clone(),
        shared_attributes: None,
    }
}
