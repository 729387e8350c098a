//! The sync built from its configuration sections: the Graph connection for a settings
//! document (tenant, application, secret, cloud) and the loop with its schedule.

use std::sync::Arc;
use std::time::Duration;

use config::{ClientCredentialConfig, EntraConfig, JamfConfig, SyncConfig};
use identity::app_token::AppTokens;
use identity::credential::{ClientCredential, CredentialError};

use crate::graph::{GraphClient, RetryPolicy};
use crate::jamf::JamfClient;
use crate::settings::{ConditionalAccess, Settings};
use crate::{Connect, SyncLoop, SyncSettings};

/// Why the sync could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("entra: the app credential cannot be loaded: {0}")]
    Credential(#[from] CredentialError),
    #[error("the Conditional Access settings name an unknown national cloud")]
    UnknownCloud,
}

/// The file's `[entra]` as the sync uses it: the configured cloud's endpoints, and the
/// credential used while the settings hold no secret.
pub struct FileEntra {
    pub entra: EntraConfig,
    pub credential: Option<Arc<ClientCredential>>,
}

/// The file's `[entra]` in force; a reload replaces it (and asks the sync to reconnect).
pub type SharedFileEntra = Arc<arc_swap::ArcSwap<FileEntra>>;

impl FileEntra {
    /// Loads the credential `entra` names (a certificate's key is read from its file).
    pub fn load(entra: &EntraConfig) -> Result<Self, CredentialError> {
        let credential = match &entra.credential {
            Some(c) => Some(Arc::new(ClientCredential::load(c)?)),
            None => None,
        };
        Ok(Self {
            entra: entra.clone(),
            credential,
        })
    }
}

/// Builds Graph clients for settings documents: the document's tenant, application and secret
/// (else the file's credential); the configured endpoints while the cloud is the configured
/// one, else that cloud's own. The file's `[entra]` is read at each build.
pub fn graph_connector(
    file: SharedFileEntra,
    sync: &SyncConfig,
    settings: Arc<Settings>,
    http: reqwest::Client,
) -> Connect {
    let budget = sync.requests_per_20s;
    Box::new(move |doc: &ConditionalAccess| -> Option<GraphClient> {
        let file = file.load();
        let entra = &file.entra;
        let cloud: base::cloud::NationalCloud = doc.cloud.parse().ok()?;
        let (authority, graph_url) = if cloud == entra.cloud {
            (entra.authority_url.clone(), entra.graph_url.clone())
        } else {
            (
                format!("https://{}", cloud.hosts().login),
                format!("https://{}", cloud.hosts().graph),
            )
        };
        let credential = match settings.client_secret(doc) {
            Some(secret) => Some(Arc::new(
                ClientCredential::load(&ClientCredentialConfig::Secret(base::Secret::new(secret))).ok()?,
            )),
            None => file.credential.clone(),
        };
        let scope = format!("{graph_url}/.default");
        let tokens = Arc::new(AppTokens::new(
            &authority,
            &doc.tenant_id,
            &doc.application_id,
            &scope,
            credential,
            http.clone(),
        ));
        Some(GraphClient::new(
            &graph_url,
            tokens,
            http.clone(),
            RetryPolicy::default(),
            budget,
        ))
    })
}

impl SyncSettings {
    /// The schedule of `[sync]` (and `[jamf]`'s interval and page size).
    pub fn from_config(s: &SyncConfig, jamf: Option<&JamfConfig>) -> Self {
        Self {
            interval: s.interval,
            intune: s.intune,
            intune_interval: s.intune_interval,
            full_reconcile: s.full_reconcile,
            page_size: s.page_size,
            lease_ttl: s.lease_ttl,
            jamf_interval: jamf.map_or(Duration::from_secs(900), |j| j.interval),
            jamf_page_size: jamf.map_or(100, |j| j.page_size),
            share: crate::share::ShareSettings {
                attributes: s.share.clone(),
            },
        }
    }
}

impl<S: store::Store + ?Sized> SyncLoop<S> {
    /// The sync of `[sync]` against the file's `[entra]` and the live settings, with the Jamf
    /// client (shared with the webhooks) when `[jamf]` is set.
    pub fn from_config(
        file: SharedFileEntra,
        cfg: &SyncConfig,
        jamf: Option<(&JamfConfig, Arc<JamfClient>)>,
        store: Arc<S>,
        settings: Arc<Settings>,
        metrics: metrics::Metrics,
        http: reqwest::Client,
    ) -> Result<Self, BuildError> {
        let connect = graph_connector(file, cfg, settings.clone(), http);
        let graph = connect(&settings.current()).ok_or(BuildError::UnknownCloud)?;
        Ok(Self {
            graph: arc_swap::ArcSwap::from_pointee(graph),
            connect,
            reconnect: std::sync::atomic::AtomicBool::new(false),
            ca: Some(settings),
            settings: SyncSettings::from_config(cfg, jamf.as_ref().map(|(c, _)| *c)),
            jamf: jamf.map(|(_, client)| client),
            store,
            node: cfg.node_name.clone(),
            metrics,
            now: Arc::new(tokio::sync::Notify::new()),
        })
    }
}
