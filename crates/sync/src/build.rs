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

/// Builds Graph clients for settings documents: the document's tenant, application and secret
/// (else the file's credential); the configured endpoints while the cloud is the configured
/// one, else that cloud's own.
pub fn graph_connector(
    entra: &EntraConfig,
    sync: &SyncConfig,
    settings: Arc<Settings>,
    http: reqwest::Client,
) -> Result<Connect, BuildError> {
    let configured = match &entra.credential {
        Some(c) => Some(Arc::new(ClientCredential::load(c)?)),
        None => None,
    };
    let (entra, budget) = (entra.clone(), sync.requests_per_20s);
    Ok(Box::new(move |doc: &ConditionalAccess| -> Option<GraphClient> {
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
            None => configured.clone(),
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
    }))
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
    /// The sync of `[sync]` against `[entra]`'s tenant and the live settings, with the Jamf
    /// client (shared with the webhooks) when `[jamf]` is set.
    pub fn from_config(
        entra: &EntraConfig,
        cfg: &SyncConfig,
        jamf: Option<(&JamfConfig, Arc<JamfClient>)>,
        store: Arc<S>,
        settings: Arc<Settings>,
        metrics: metrics::Metrics,
        http: reqwest::Client,
    ) -> Result<Self, BuildError> {
        let connect = graph_connector(entra, cfg, settings.clone(), http)?;
        let graph = connect(&settings.current()).ok_or(BuildError::UnknownCloud)?;
        Ok(Self {
            graph: arc_swap::ArcSwap::from_pointee(graph),
            connect,
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
