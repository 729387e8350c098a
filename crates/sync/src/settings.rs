//! The Conditional Access settings an admin changes at run time (what Jamf Pro's Conditional
//! Access page holds): enabled, connection type, national cloud, tenant, application id, the
//! client secret (write-only; sealed at rest with the settings key), and the landing choice.
//! They live in the store as one versioned document; every node polls its version and applies
//! a change within a second, without a restart. The configuration file provides the first
//! version.
//!
//! May depend on `config` types, `store` and `identity::cookie` (sealing).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use base::seal::Sealer;
use store::{SettingsStore, StoreError};

/// The store key of the document.
pub const KEY: &str = "conditional_access";
const SECRET_PURPOSE: &str = "portcullis-settings-secret";

/// How the gateway authenticates to Entra.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// Application id + client secret (or certificate, from the configuration file).
    Manual,
    /// Workload identity federation: a client assertion file (configuration file).
    Secretless,
}

pub use config::LandingChoice;

/// The document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalAccess {
    /// Off: the sync stops; every other setting is kept.
    pub enabled: bool,
    pub connection: ConnectionType,
    pub cloud: String,
    pub tenant_id: String,
    pub application_id: String,
    /// The client secret sealed with the settings key; `None`: the configured credential.
    #[serde(default)]
    pub client_secret_sealed: Option<String>,
    /// Unix seconds of the last secret change.
    #[serde(default)]
    pub secret_changed_at: Option<i64>,
    pub landing: LandingChoice,
}

/// Why settings could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettingsError {
    /// Another save won: the stored document is at version `current`.
    #[error("the settings changed meanwhile (now version {current})")]
    Conflict { current: i64 },
    #[error(transparent)]
    Store(StoreError),
    #[error("stored settings are unreadable: {0}")]
    Corrupt(String),
    #[error("the client secret cannot be sealed")]
    Seal,
}

impl From<StoreError> for SettingsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current, .. } => Self::Conflict { current },
            other => Self::Store(other),
        }
    }
}

/// The live settings of this node.
pub struct Settings {
    current: ArcSwap<ConditionalAccess>,
    version: std::sync::atomic::AtomicI64,
    sealer: Sealer,
}

impl Settings {
    /// Loads the stored document, or stores `initial` as version 1.
    pub async fn load_or_seed<S: SettingsStore + ?Sized>(
        store: &S,
        initial: ConditionalAccess,
        sealer: Sealer,
    ) -> Result<Arc<Self>, SettingsError> {
        let (doc, version) = match store.setting(KEY).await? {
            Some((json, v)) => (
                serde_json::from_str(&json).map_err(|e| SettingsError::Corrupt(e.to_string()))?,
                v,
            ),
            None => {
                let json = serde_json::to_string(&initial).map_err(|e| SettingsError::Corrupt(e.to_string()))?;
                match store.put_setting(KEY, &json, None).await {
                    Ok(v) => (initial, v),
                    // Another node seeded first: take theirs.
                    Err(StoreError::Conflict { .. }) => {
                        let (json, v) = store
                            .setting(KEY)
                            .await?
                            .ok_or_else(|| SettingsError::Corrupt("vanished".into()))?;
                        (
                            serde_json::from_str(&json).map_err(|e| SettingsError::Corrupt(e.to_string()))?,
                            v,
                        )
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(doc),
            version: version.into(),
            sealer,
        }))
    }

    /// The settings now (a snapshot; no lock).
    pub fn current(&self) -> Arc<ConditionalAccess> {
        self.current.load_full()
    }

    pub fn version(&self) -> i64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The client secret in clear, when one is stored (for the token request only).
    pub fn client_secret(&self, doc: &ConditionalAccess) -> Option<String> {
        let sealed = doc.client_secret_sealed.as_deref()?;
        String::from_utf8(self.sealer.open(SECRET_PURPOSE, sealed)?).ok()
    }

    /// Seals a new client secret into `doc`.
    pub fn set_client_secret(&self, doc: &mut ConditionalAccess, secret: &str) -> Result<(), SettingsError> {
        doc.client_secret_sealed = Some(
            self.sealer
                .seal(SECRET_PURPOSE, secret.as_bytes())
                .map_err(|_| SettingsError::Seal)?,
        );
        doc.secret_changed_at = Some(base::time::unix_now_i64());
        Ok(())
    }

    /// Writes a new version (optimistic concurrency on `expected`), and applies it here.
    pub async fn put<S: SettingsStore + ?Sized>(
        &self,
        store: &S,
        doc: ConditionalAccess,
        expected: i64,
    ) -> Result<i64, SettingsError> {
        let json = serde_json::to_string(&doc).map_err(|e| SettingsError::Corrupt(e.to_string()))?;
        let v = store.put_setting(KEY, &json, Some(expected)).await?;
        self.apply(doc, v);
        Ok(v)
    }

    fn apply(&self, doc: ConditionalAccess, version: i64) {
        self.current.store(Arc::new(doc));
        self.version.store(version, std::sync::atomic::Ordering::Release);
    }

    /// Follows changes made by other nodes (or the admin API) until `stop`; calls `changed`
    /// with each new document.
    pub async fn follow<S: SettingsStore + ?Sized>(
        &self,
        store: &S,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        changed: impl Fn(&ConditionalAccess),
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match store.setting(KEY).await {
                Ok(Some((json, v))) if v != self.version() => match serde_json::from_str::<ConditionalAccess>(&json) {
                    Ok(doc) => {
                        tracing::info!(
                            version = v,
                            enabled = doc.enabled,
                            "Conditional Access settings changed; applying"
                        );
                        changed(&doc);
                        self.apply(doc, v);
                    }
                    Err(e) => tracing::error!(error = %e, "stored settings are unreadable; keeping the current ones"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the settings"),
            }
        }
    }
}
