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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The inventory attributes shared onto Entra devices (`extensionAttributeN` → template);
    /// `None`: the configuration file's `[sync] share`.
    #[serde(default)]
    pub shared_attributes: Option<std::collections::BTreeMap<String, String>>,
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
        // An unreadable version is reported once, not every second until someone fixes it.
        let mut unreadable = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match store.setting(KEY).await {
                Ok(Some((json, v))) if v != self.version() && unreadable != Some(v) => {
                    match serde_json::from_str::<ConditionalAccess>(&json) {
                        Ok(doc) => {
                            tracing::info!(
                                version = v,
                                enabled = doc.enabled,
                                "Conditional Access settings changed; applying"
                            );
                            changed(&doc);
                            self.apply(doc, v);
                        }
                        Err(e) => {
                            tracing::error!(version = v, error = %e, "stored settings are unreadable; keeping the current ones");
                            unreadable = Some(v);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the settings"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// Settings rows in memory, as another node would write them; reads fail on demand.
    #[derive(Default)]
    struct Rows {
        rows: Mutex<HashMap<String, (String, i64)>>,
        reads: AtomicU32,
        failing: AtomicBool,
    }

    #[async_trait]
    impl SettingsStore for Rows {
        async fn setting(&self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Timeout(Duration::from_secs(1)));
            }
            Ok(self.rows.lock().unwrap().get(key).cloned())
        }
        async fn put_setting(&self, key: &str, value: &str, expected: Option<i64>) -> Result<i64, StoreError> {
            let mut rows = self.rows.lock().unwrap();
            let current = rows.get(key).map(|(_, v)| *v);
            if current != expected {
                return Err(StoreError::Conflict {
                    what: key.into(),
                    current: current.unwrap_or(0),
                });
            }
            let v = current.unwrap_or(0) + 1;
            rows.insert(key.into(), (value.into(), v));
            Ok(v)
        }
    }

    fn doc() -> ConditionalAccess {
        ConditionalAccess {
            enabled: true,
            connection: ConnectionType::Manual,
            cloud: "global".into(),
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            application_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            client_secret_sealed: None,
            secret_changed_at: None,
            landing: LandingChoice::Registration,
            shared_attributes: None,
        }
    }

    /// Another node's save.
    fn write(rows: &Rows, f: impl FnOnce(&mut ConditionalAccess)) {
        let mut r = rows.rows.lock().unwrap();
        let (json, v) = r.get(KEY).cloned().unwrap();
        let mut d: ConditionalAccess = serde_json::from_str(&json).unwrap();
        f(&mut d);
        r.insert(KEY.into(), (serde_json::to_string(&d).unwrap(), v + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_follower_applies_other_nodes_saves_within_an_interval() {
        let rows = Arc::new(Rows::default());
        let settings = Settings::load_or_seed(&*rows, doc(), Sealer::random().unwrap())
            .await
            .unwrap();
        assert_eq!(settings.version(), 1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let follower = {
            let (rows, settings, seen) = (rows.clone(), settings.clone(), seen.clone());
            tokio::spawn(async move {
                settings
                    .follow(&*rows, Duration::from_secs(1), stop, |d| {
                        seen.lock().unwrap().push(d.landing.clone())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(seen.lock().unwrap().is_empty(), "nothing changed, nothing applied");

        write(&rows, |d| d.landing = LandingChoice::AccessDenied);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*seen.lock().unwrap(), vec![LandingChoice::AccessDenied]);
        assert_eq!(
            (settings.version(), settings.current().landing.clone()),
            (2, LandingChoice::AccessDenied)
        );

        // The store is away for a while: the current settings stay; the save made meanwhile
        // is applied once it is back.
        rows.failing.store(true, Ordering::SeqCst);
        write(&rows, |d| d.enabled = false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(settings.current().enabled);
        rows.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!settings.current().enabled);
        assert_eq!(settings.version(), 3);

        // An unreadable row is skipped (and reported once); the next good save applies.
        rows.rows.lock().unwrap().insert(KEY.into(), ("{not json".into(), 4));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(settings.version(), 3, "the unreadable version is not applied");
        rows.rows
            .lock()
            .unwrap()
            .insert(KEY.into(), (serde_json::to_string(&doc()).unwrap(), 5));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!((settings.version(), settings.current().enabled), (5, true));

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), follower)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_save_is_refused_with_the_current_version() {
        let rows = Rows::default();
        let settings = Settings::load_or_seed(&rows, doc(), Sealer::random().unwrap())
            .await
            .unwrap();
        write(&rows, |d| d.enabled = false);
        match settings.put(&rows, doc(), 1).await {
            Err(SettingsError::Conflict { current }) => assert_eq!(current, 2),
            other => panic!("{other:?}"),
        }
    }
}
