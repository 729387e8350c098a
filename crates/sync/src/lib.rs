//! The sync loop: compliance in from Microsoft Graph (Entra devices by delta, Intune managed
//! devices as enrichment) into the store, on a schedule, by one node at a time (a leader lease
//! in the store). Every write invalidates the posture cache of every node through the store's
//! change log. Jamf Pro inventory and sharing inventory back to Entra follow.
//!
//! The sync is built from its configuration sections by [`SyncLoop::from_config`]; its
//! schedule is [`schedule`]; the Conditional Access settings document it follows is
//! [`settings`].
//!
//! May depend on `store` (traits), `identity` (app tokens and credentials), `device` (the
//! posture rules it shares), `config` types, `metrics` and `base`; never on `access`, `proxy`
//! or `admin`.

mod build;
pub mod entra;
pub mod graph;
pub mod intune;
pub mod jamf;
pub mod schedule;
pub mod settings;
pub mod share;
pub mod test_connection;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

pub use build::{graph_connector, BuildError, FileEntra, SharedFileEntra};
use graph::{GraphClient, GraphError};
use store::{StoreError, SyncRun};

/// Why a sync run failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// Schedule and limits.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    pub intune: bool,
    pub intune_interval: Duration,
    /// A full Entra round (with sweep) at least this often.
    pub full_reconcile: Duration,
    pub page_size: u32,
    pub lease_ttl: Duration,
    pub jamf_interval: Duration,
    pub jamf_page_size: u32,
    /// What to share back to Entra after each Jamf run (nothing when empty).
    pub share: share::ShareSettings,
}

/// Builds a Graph client for a settings document, or `None` when it is not usable.
pub type Connect = Box<dyn Fn(&crate::settings::ConditionalAccess) -> Option<GraphClient> + Send + Sync>;

/// Runs the sync sources on their schedules while this node holds the lease.
pub struct SyncLoop<S: store::Store + ?Sized> {
    /// Rebuilt when the connection settings change.
    pub graph: arc_swap::ArcSwap<GraphClient>,
    /// Builds a Graph client for a settings document (tenant, application id, secret, cloud).
    pub connect: Connect,
    /// Set when what `connect` builds from changed outside the settings (a reload of the
    /// file's `[entra]`): the next run builds the connection again.
    pub reconnect: std::sync::atomic::AtomicBool,
    /// The live Conditional Access settings (enabled, connection).
    pub ca: Option<Arc<crate::settings::Settings>>,
    pub jamf: Option<Arc<jamf::JamfClient>>,
    pub store: Arc<S>,
    pub settings: SyncSettings,
    pub node: String,
    pub metrics: metrics::Metrics,
    /// Wakes the loop for an immediate run (admin "sync now").
    pub now: Arc<tokio::sync::Notify>,
}

/// What the Graph connection depends on.
fn fingerprint(doc: &crate::settings::ConditionalAccess) -> (String, String, String, Option<String>) {
    (
        doc.cloud.clone(),
        doc.tenant_id.clone(),
        doc.application_id.clone(),
        doc.client_secret_sealed.clone(),
    )
}

/// An RFC 3339 time from a Graph or Jamf body (fractions and offsets honoured), as Unix seconds.
pub(crate) fn parse_time(v: Option<&serde_json::Value>) -> Option<i64> {
    base::time::parse_rfc3339(v?.as_str()?)
}

impl<S: store::Store + ?Sized> SyncLoop<S> {
    /// Runs until `stop` turns true.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut schedule = schedule::Schedule::new(&self.settings, self.jamf.is_some(), tokio::time::Instant::now());
        let mut leader_term = None;
        let mut connected_for = self.ca.as_ref().map(|c| fingerprint(&c.current()));
        loop {
            if *stop.borrow() {
                return;
            }
            let enabled = self.ca.as_ref().is_none_or(|c| c.current().enabled);
            if let Some(ca) = &self.ca {
                let doc = ca.current();
                let fp = fingerprint(&doc);
                let file_changed = self.reconnect.swap(false, std::sync::atomic::Ordering::AcqRel);
                if connected_for.as_ref() != Some(&fp) || file_changed {
                    match (self.connect)(&doc) {
                        Some(g) => {
                            tracing::info!(tenant = %doc.tenant_id, application = %doc.application_id, "sync connection settings changed; reconnecting");
                            self.graph.store(Arc::new(g));
                        }
                        None => tracing::error!(
                            "the new connection settings cannot be used; keeping the previous connection"
                        ),
                    }
                    connected_for = Some(fp);
                }
            }
            // The lease is good until `acquired + ttl` on the database's clock; this node stops
            // writing a margin before that by its own monotonic clock, and the term fences any
            // write that is late anyway (a process paused past its lease).
            let acquired = tokio::time::Instant::now();
            let lease = if enabled {
                self.store
                    .try_lease("sync", &self.node, self.settings.lease_ttl.as_secs() as i64)
                    .await
            } else {
                tracing::debug!("the sync is disabled in the Conditional Access settings");
                Ok(None)
            };
            match lease {
                Ok(Some(lease)) => {
                    if leader_term != Some(lease.term) {
                        tracing::info!(node = %self.node, term = lease.term, "this node leads the sync");
                        leader_term = Some(lease.term);
                    }
                    let deadline = acquired + self.settings.lease_ttl.mul_f64(0.8);
                    let store = self.store.fenced(&lease);
                    self.round(&*store, &mut schedule, deadline).await;
                }
                Ok(None) => {
                    if leader_term.take().is_some() {
                        tracing::info!(node = %self.node, "another node leads the sync now");
                    }
                    tracing::debug!("another node holds the sync lease");
                }
                Err(e) => tracing::warn!(error = %e, "cannot take the sync lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(schedule.pause(base::time::jitter_ms(1000))) => {}
                _ = self.now.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One round of the sources due, on the fenced store, while the lease is surely held.
    async fn round(&self, store: &dyn store::Store, schedule: &mut schedule::Schedule, deadline: tokio::time::Instant) {
        let held = || {
            let ok = tokio::time::Instant::now() < deadline;
            if !ok {
                tracing::warn!("the sync lease may expire before the next source finishes; stopping this round");
            }
            ok
        };
        let due = schedule.round(tokio::time::Instant::now());
        if due.full {
            // Dropping the cursor makes this round a full one, with a sweep.
            if let Err(e) = store.set_cursor(entra::SOURCE, None).await {
                tracing::warn!(error = %e, "cannot start the full reconcile");
            }
        }
        // Failures are recorded and logged by each run; the schedule goes on.
        let _ = self.entra_on(store).await;
        if due.intune && held() {
            let _ = self.intune_on(store).await;
        }
        if due.jamf && held() && self.jamf_on(store).await.is_ok() {
            let _ = self.run_share(None, false).await;
        }
    }

    /// Run Test with the current connection.
    pub async fn test_connection(&self) -> test_connection::TestReport {
        test_connection::run_test(&self.graph.load_full(), self.jamf.as_deref()).await
    }

    /// Saves new Conditional Access settings as Jamf Pro's Save does: stores them (optimistic
    /// concurrency on `expected`), switches the connection at once, and runs Run Test with them.
    pub async fn save_settings(
        &self,
        doc: crate::settings::ConditionalAccess,
        expected: i64,
    ) -> Result<(i64, test_connection::TestReport), crate::settings::SettingsError> {
        let Some(ca) = &self.ca else {
            return Err(crate::settings::SettingsError::Corrupt(
                "no settings on this node".into(),
            ));
        };
        let version = ca.put(&*self.store, doc.clone(), expected).await?;
        let report = match (self.connect)(&doc) {
            Some(g) => {
                let g = Arc::new(g);
                self.graph.store(g.clone());
                test_connection::run_test(&g, self.jamf.as_deref()).await
            }
            None => test_connection::TestReport {
                ok: false,
                steps: vec![test_connection::Step {
                    name: "settings",
                    status: test_connection::StepStatus::Failed,
                    message: format!("{:?} is not a national cloud", doc.cloud),
                }],
            },
        };
        Ok((version, report))
    }

    /// One Entra run, recorded in the store and the metrics.
    pub async fn run_entra(&self) -> Result<entra::EntraStats, SyncError> {
        self.entra_on(&*self.store).await
    }

    async fn entra_on<T: store::Store + ?Sized>(&self, store: &T) -> Result<entra::EntraStats, SyncError> {
        let graph = self.graph.load_full();
        let r = entra::sync(&graph, store, self.settings.page_size).await;
        let detail = match &r {
            Ok(s) => serde_json::to_string(s).unwrap_or_default(),
            Err(_) => "{}".into(),
        };
        self.record(store, entra::SOURCE, r.as_ref().err().map(ToString::to_string), detail)
            .await;
        if let Ok(s) = &r {
            self.metrics
                .sync_objects(entra::SOURCE, s.upserted, s.removed + s.swept);
        }
        r
    }

    pub async fn run_intune(&self) -> Result<intune::IntuneStats, SyncError> {
        self.intune_on(&*self.store).await
    }

    async fn intune_on<T: store::Store + ?Sized>(&self, store: &T) -> Result<intune::IntuneStats, SyncError> {
        let graph = self.graph.load_full();
        let r = intune::sync(&graph, store).await;
        let detail = match &r {
            Ok(s) => serde_json::to_string(s).unwrap_or_default(),
            Err(_) => "{}".into(),
        };
        self.record(store, intune::SOURCE, r.as_ref().err().map(ToString::to_string), detail)
            .await;
        if let Ok(s) = &r {
            self.metrics.sync_objects(intune::SOURCE, s.devices, s.swept);
        }
        r
    }

    pub async fn run_jamf(&self) -> Result<jamf::JamfStats, SyncError> {
        self.jamf_on(&*self.store).await
    }

    async fn jamf_on<T: store::Store + ?Sized>(&self, store: &T) -> Result<jamf::JamfStats, SyncError> {
        let Some(client) = &self.jamf else {
            return Ok(jamf::JamfStats::default());
        };
        let r = jamf::sync(client, store, self.settings.jamf_page_size).await;
        let detail = match &r {
            Ok(s) => serde_json::to_string(s).unwrap_or_default(),
            Err(_) => "{}".into(),
        };
        self.record(store, jamf::SOURCE, r.as_ref().err().map(ToString::to_string), detail)
            .await;
        if let Ok(s) = &r {
            self.metrics.sync_objects(jamf::SOURCE, s.computers, s.removed);
        }
        r
    }

    /// Shares inventory with Entra (all computers, or one; `force` for Send Update).
    pub async fn run_share(&self, only: Option<&str>, force: bool) -> Result<share::ShareStats, SyncError> {
        // The settings' attributes when an admin set them, else the configuration file's.
        let chosen = self.ca.as_ref().and_then(|ca| ca.current().shared_attributes.clone());
        let settings = match chosen {
            Some(attributes) => share::ShareSettings { attributes },
            None => self.settings.share.clone(),
        };
        if settings.attributes.is_empty() {
            return Ok(share::ShareStats::default());
        }
        let graph = self.graph.load_full();
        let r = share::share(&graph, &*self.store, &settings, only, force).await;
        let detail = match &r {
            Ok(s) => serde_json::to_string(s).unwrap_or_default(),
            Err(_) => "{}".into(),
        };
        self.record(
            &*self.store,
            share::SOURCE,
            r.as_ref().err().map(ToString::to_string),
            detail,
        )
        .await;
        r
    }

    async fn record<T: store::SyncState + ?Sized>(
        &self,
        store: &T,
        source: &str,
        error: Option<String>,
        detail: String,
    ) {
        let ok = error.is_none();
        match &error {
            None => tracing::debug!(source, %detail, "sync run finished"),
            Some(e) => tracing::warn!(source, error = %e, "sync run failed"),
        }
        self.metrics.sync_run(source, ok, base::time::unix_now_i64());
        let run = SyncRun {
            source: source.to_string(),
            finished_at: base::time::unix_now_i64(),
            ok,
            error,
            detail,
        };
        if let Err(e) = store.record_run(&run).await {
            tracing::warn!(error = %e, "cannot record the sync run");
        }
    }
}

/// What the admin API may ask of the sync loop.
#[async_trait::async_trait]
pub trait SyncControl: Send + Sync {
    async fn save_settings(
        &self,
        doc: crate::settings::ConditionalAccess,
        expected: i64,
    ) -> Result<(i64, test_connection::TestReport), crate::settings::SettingsError>;
    async fn test_connection(&self) -> test_connection::TestReport;
    /// Wakes the loop for an immediate run.
    fn run_now(&self);
    /// The file's `[entra]` was reloaded: the loop builds its Graph connection again before
    /// its next run.
    fn reconnect(&self);
    /// Send Update: shares inventory now, unchanged values included, for all computers or one.
    async fn send_update(&self, only: Option<String>) -> Result<share::ShareStats, SyncError>;
}

#[async_trait::async_trait]
impl<S: store::Store + ?Sized + 'static> SyncControl for SyncLoop<S> {
    async fn save_settings(
        &self,
        doc: crate::settings::ConditionalAccess,
        expected: i64,
    ) -> Result<(i64, test_connection::TestReport), crate::settings::SettingsError> {
        SyncLoop::save_settings(self, doc, expected).await
    }

    async fn test_connection(&self) -> test_connection::TestReport {
        SyncLoop::test_connection(self).await
    }

    fn run_now(&self) {
        self.now.notify_one();
    }

    fn reconnect(&self) {
        self.reconnect.store(true, std::sync::atomic::Ordering::Release);
    }

    async fn send_update(&self, only: Option<String>) -> Result<share::ShareStats, SyncError> {
        self.run_share(only.as_deref(), true).await
    }
}
