//! The store: Jamf inventory, Entra and Intune device records, sync cursors and runs, inventory
//! history, settings, audit and sessions. Narrow traits per use; [`sqlite::SqliteStore`] is
//! the embedded default; every backend must pass [`conformance`].
//!
//! Depends on `base` only. Sessions are opaque sealed rows here ([`SessionRows`]); `identity`
//! seals and opens them.

pub mod conformance;
pub mod deadline;
pub mod model;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use model::*;

/// A store failure, classified once where the driver reports it. Messages never contain
/// connection strings or secrets. Cheap to clone (the caches hand one error to every waiter).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or the connection failed; worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// The caller's deadline passed before the store answered.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// Not asked: it failed moments ago, and callers give it a few seconds before trying again.
    #[error("store unavailable (it failed moments ago; not asked again yet)")]
    Away,
    /// The database refused a statement.
    #[error("store query failed: {0}")]
    Query(#[source] Arc<sqlx::Error>),
    /// An optimistic write lost: `what` is at version `current` now.
    #[error("stale write: {what} is at version {current}")]
    Conflict { what: String, current: i64 },
    /// A stored value the code cannot read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[source] Arc<sqlx::Error>),
    /// A stored enumeration value this version does not know.
    #[error("stored data is corrupt: {column} holds {value:?}")]
    UnknownValue { column: &'static str, value: String },
    /// The schema could not be brought to this version.
    #[error("store migrations failed: {0}")]
    Migration(#[source] Arc<sqlx::migrate::MigrateError>),
    /// The database was migrated by a newer version of Portcullis.
    #[error(
        "the database's schema is newer than this version of Portcullis knows (migration {found} is applied but \
         unknown here): upgrade this node, or point it at the database of its own version"
    )]
    SchemaTooNew { found: i64 },
    /// A fenced write from a term that is over: another node holds the lease now.
    #[error("refused: the {name} lease is no longer this node's term {term}")]
    Fenced { name: String, term: i64 },
    /// Another gateway process has this SQLite file open; one file serves one node.
    #[error(
        "{path} is in use by another gateway process: an SQLite store serves one node; use store.url = \
         \"postgres://…\" for several"
    )]
    InUse { path: String },
}

impl StoreError {
    /// Classifies a migration failure: a schema newer than this binary is its own case.
    pub(crate) fn migration(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => Self::SchemaTooNew { found: v },
            other => Self::Migration(Arc::new(other)),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(Arc::new(e))
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Self::Corrupt(Arc::new(e)),
            other => Self::Query(Arc::new(other)),
        }
    }
}

impl StoreError {
    /// Worth retrying later (the database is away or slow), as opposed to a refused or
    /// unreadable request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Timeout(_) | Self::Away => true,
            Self::Query(_)
            | Self::Conflict { .. }
            | Self::Corrupt(_)
            | Self::UnknownValue { .. }
            | Self::Migration(_)
            | Self::SchemaTooNew { .. }
            | Self::Fenced { .. }
            | Self::InUse { .. } => false,
        }
    }
}

/// Reads on the request path (and the admin API).
#[async_trait]
pub trait PostureStore: Send + Sync {
    /// Everything known about an Entra device id (lower case).
    async fn device_evidence(&self, device_id: &str) -> Result<DeviceEvidence, StoreError>;
    /// Jamf computers with an account of this user (by Entra object id, else by username).
    async fn computers_for_user(&self, object_id: &str, username: Option<&str>) -> Result<Vec<Computer>, StoreError>;
    async fn computer(&self, jamf_id: &str) -> Result<Option<Computer>, StoreError>;
    async fn computer_by_serial(&self, serial: &str) -> Result<Option<Computer>, StoreError>;
    async fn computers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Computer>, StoreError>;
    /// Devices whose evidence changed after change `after` (oldest first), with their change ids.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest change id (0 when none).
    async fn latest_change(&self) -> Result<i64, StoreError>;
    /// The oldest change id still kept (0 when none): a follower whose cursor is older has
    /// missed changes and must drop what it cached.
    async fn oldest_change(&self) -> Result<i64, StoreError>;
    /// The database's epoch, made when it was created: another value means another database.
    async fn epoch(&self) -> Result<String, StoreError>;
    /// Wakes a follower when the change log grows (PostgreSQL's LISTEN/NOTIFY); `None` when
    /// the backend has no such signal and followers poll only.
    fn change_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// Writes of the sync loop. Each call is one transaction.
#[async_trait]
pub trait InventoryWriter: Send + Sync {
    async fn upsert_entra_devices(&self, devices: &[EntraDevice]) -> Result<(), StoreError>;
    /// Delta `@removed`: `purge` deletes the row (`deleted`), otherwise it is marked removed
    /// (`changed`). Returns the device id the object had, if known.
    async fn remove_entra_device(&self, object_id: &str, purge: bool) -> Result<Option<String>, StoreError>;
    async fn upsert_managed_devices(&self, devices: &[ManagedDevice]) -> Result<(), StoreError>;
    /// Replaces each computer with its accounts.
    async fn upsert_computers(&self, computers: &[Computer]) -> Result<(), StoreError>;
    async fn remove_computer(&self, jamf_id: &str) -> Result<(), StoreError>;
}

/// Cursors (delta links) and the outcome of sync runs.
#[async_trait]
pub trait SyncState: Send + Sync {
    async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError>;
    async fn set_cursor(&self, source: &str, cursor: Option<&str>) -> Result<(), StoreError>;
    async fn record_run(&self, run: &SyncRun) -> Result<(), StoreError>;
    async fn last_runs(&self, source: &str, limit: u32) -> Result<Vec<SyncRun>, StoreError>;
    async fn last_success(&self) -> Result<SourceTimes, StoreError>;
    /// Takes or renews lease `name` for `holder` until `now + ttl` on the database's clock;
    /// `None` when another holder has it and it has not expired. A takeover (another holder,
    /// or the same one after expiry) starts a new term; a renewal keeps it.
    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<Option<Lease>, StoreError>;
    /// Who holds lease `name` now (by the database's clock) and for how many more seconds;
    /// `None` when nobody does.
    async fn lease_holder(&self, name: &str) -> Result<Option<(Lease, i64)>, StoreError>;
    /// This store with every inventory and sync-state write fenced by `lease`: each checks,
    /// inside its own transaction, that the lease is still this holder's in this term, and is
    /// refused with [`StoreError::Fenced`] once another holder took it over.
    fn fenced(&self, lease: &Lease) -> std::sync::Arc<dyn Store>;
    /// Marks removed the Entra devices not seen since `before` (after a full round); returns
    /// their device ids.
    async fn sweep_entra(&self, before: i64) -> Result<Vec<String>, StoreError>;
    /// Deletes the Intune records not seen since `before` (after a full listing).
    async fn sweep_managed(&self, before: i64) -> Result<u64, StoreError>;
}

/// Versioned settings documents (JSON).
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// The value and its version.
    async fn setting(&self, key: &str) -> Result<Option<(String, i64)>, StoreError>;
    /// Writes when the stored version equals `expected` (`None`: the key must not exist yet);
    /// returns the new version, or [`StoreError::Conflict`].
    async fn put_setting(&self, key: &str, value: &str, expected: Option<i64>) -> Result<i64, StoreError>;
}

/// Inventory sent to Microsoft, per computer and user.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    async fn record_send(&self, entry: &HistoryEntry) -> Result<(), StoreError>;
    /// Newest first.
    async fn history(&self, jamf_id: &str, limit: u32) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// Who changed what.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, actor: &str, action: &str, detail: &str) -> Result<i64, StoreError>;
    /// Newest first, entries with `id < before` (all when `None`).
    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Background jobs (Send Update), kept for [`JOB_RETENTION_SECS`] after they start.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts or replaces job `job.id`; drops jobs older than the retention on the way. A job
    /// is started with [`JobStore::start_job`]; this records what became of it.
    async fn put_job(&self, job: &Job) -> Result<(), StoreError>;
    /// Stores `job` (running) unless the same work — its kind, for its computer — is running on
    /// some node already: then `Some` of that job, and `job` is not stored. Atomic across nodes
    /// (a unique index on the running jobs), so simultaneous requests start one job.
    async fn start_job(&self, job: &Job) -> Result<Option<Job>, StoreError>;
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// The newest job of `kind` for `computer` (`None`: for every computer) still running on
    /// any node, so a second request for the same work can be given it instead of a new one.
    async fn running_job(&self, kind: &str, computer: Option<&str>) -> Result<Option<Job>, StoreError>;
    /// Marks `node`'s jobs still running that started at or before `started_by` as interrupted
    /// (called when `node` starts: whatever it ran before is gone; after a binary upgrade, the
    /// old process's jobs, not the new one's); returns how many.
    async fn interrupt_jobs(&self, node: &str, started_by: i64, now: i64) -> Result<u64, StoreError>;
}

/// How long a job stays readable.
pub const JOB_RETENTION_SECS: i64 = 7 * 24 * 3600;

/// Server-side browser sessions as opaque JSON.
#[async_trait]
pub trait SessionRows: Send + Sync {
    async fn session(&self, id: &str, now: i64) -> Result<Option<String>, StoreError>;
    async fn put_session(&self, id: &str, data: &str, expires_at: i64) -> Result<(), StoreError>;
    async fn remove_session(&self, id: &str) -> Result<(), StoreError>;
    /// Replaces session `id`'s data only if it is still `expected` (a last-seen refresh must
    /// never overwrite a renewal another node stored meanwhile); false when it was not.
    async fn replace_session(&self, id: &str, expected: &str, data: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Claims the renewal of session `id` for `claimant` for `ttl_secs`: true for exactly one
    /// claimant across every node until the claim expires, so a rotated refresh token is used
    /// once (two uses log the user out).
    async fn claim_session_renewal(&self, id: &str, claimant: &str, ttl_secs: i64) -> Result<bool, StoreError>;
    /// Ends `claimant`'s claim (the renewal is done, or failed).
    async fn release_session_renewal(&self, id: &str, claimant: &str) -> Result<(), StoreError>;
}

/// Everything a backend provides.
pub trait Store:
    PostureStore + InventoryWriter + SyncState + SettingsStore + HistoryStore + AuditStore + SessionRows + JobStore
{
}

impl<T> Store for T where
    T: PostureStore + InventoryWriter + SyncState + SettingsStore + HistoryStore + AuditStore + SessionRows + JobStore
{
}
