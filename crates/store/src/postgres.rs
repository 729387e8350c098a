//! The store for several gateway nodes: PostgreSQL through sqlx. The logical schema is
//! SQLite's (migrations in `migrations/postgres`); what differs is what several writers on
//! several hosts need:
//!
//! - every write that appends to the device change log first takes one transaction-scoped
//!   advisory lock, so change ids commit in the order they were given and a follower reading
//!   `id > cursor` never skips a late commit (identity values are handed out before commit);
//! - the same transaction sends `NOTIFY portcullis_changes` (no payload; delivered at commit),
//!   so listening nodes read the log at once instead of at their next poll;
//! - optimistic settings writes lock the row (`FOR UPDATE`), and the first insert of a key is
//!   `ON CONFLICT DO NOTHING`, so two nodes saving at once get one success and one conflict;
//! - leases run on the database's clock, never a node's.
//!
//! Migrations run under sqlx's advisory lock, so nodes starting together do not race; a
//! database migrated by a newer version is refused at start with a clear message.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{QueryBuilder, Row};

use super::*;

/// Sync runs kept per source (older ones are pruned as new ones are recorded).
const RUNS_KEPT: i64 = 1000;
/// Rows per multi-row statement: 13 columns × 400 stays far below PostgreSQL's 65,535
/// parameters.
const ROWS_PER_STATEMENT: usize = 400;
/// The advisory lock every change-log writer takes (a constant of this application).
const CHANGE_LOG_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"
/// The channel nodes listen on for change-log appends.
pub const CHANGES_CHANNEL: &str = "portcullis_changes";

/// How to reach the database; built by `config` from `[store]`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Connection options (host, port, database, user, password, TLS, `target_session_attrs`).
    pub connect: PgConnectOptions,
    /// Connections in this node's pool.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection, and a new connection for the server.
    pub acquire_timeout: Duration,
}

impl PgSettings {
    /// Settings from a `postgres://` URL (which may carry `sslmode`, `sslrootcert`,
    /// `target_session_attrs`, `options` …). The error never repeats the URL: it may hold a
    /// password.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| match e {
            sqlx::Error::Configuration(m) => format!("not a usable postgres:// URL ({m})"),
            _ => "not a usable postgres:// URL".to_string(),
        })?;
        Ok(Self {
            connect,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        })
    }
}

/// A store in one PostgreSQL database (the schema on the connection's `search_path`).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Notified on every `NOTIFY portcullis_changes` and after every (re)connection of the
    /// listener (notifications sent while it was away are lost: the follower catches up).
    signal: std::sync::Arc<tokio::sync::Notify>,
    /// Set on a [`SyncState::fenced`] view: its inventory writes check the lease first.
    fence: Option<std::sync::Arc<Lease>>,
}

impl PgStore {
    /// Connects and applies pending migrations (under sqlx's advisory lock).
    pub async fn open(s: &PgSettings) -> Result<Self, StoreError> {
        // A node that stops mid-transaction (paused, or cut off) must not hold the change-log
        // lock for everyone: the server ends such a session after 3 s (a write transaction is
        // a few statements sent back to back; it is never idle that long when healthy).
        let connect = s
            .connect
            .clone()
            .options([("idle_in_transaction_session_timeout", "3000")]);
        let pool = PgPoolOptions::new()
            .max_connections(s.max_connections.max(2))
            .acquire_timeout(s.acquire_timeout)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::migration)?;
        let signal = std::sync::Arc::new(tokio::sync::Notify::new());
        // The listener lives as long as the runtime the store was opened on.
        tokio::spawn(listen(pool.clone(), signal.clone()));
        Ok(Self {
            pool,
            signal,
            fence: None,
        })
    }

    /// The applied schema version (the newest migration).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// The pool, for the change listener and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction; commit it with [`Self::commit`].
    async fn write_tx(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a write. On a fenced view it first checks that the lease is still this holder's
    /// in this term, holding the lease row (`FOR SHARE`) for the instant until the commit, so
    /// a takeover waits for this write and a write lands in the old term or not at all. The
    /// check comes last so that a holder stalled in the middle of its writes (paused, cut off)
    /// does not hold the lease row meanwhile.
    async fn commit(&self, mut tx: Tx) -> Result<(), StoreError> {
        if let Some(lease) = &self.fence {
            let term: Option<i64> =
                sqlx::query_scalar("SELECT term FROM leases WHERE name = $1 AND holder = $2 FOR SHARE")
                    .bind(&lease.name)
                    .bind(&lease.holder)
                    .fetch_optional(&mut *tx)
                    .await?;
            if term != Some(lease.term) {
                return Err(StoreError::Fenced {
                    name: lease.name.clone(),
                    term: lease.term,
                });
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn with_accounts(&self, mut c: Computer) -> Result<Computer, StoreError> {
        let rows = sqlx::query("SELECT * FROM local_accounts WHERE jamf_id = $1 ORDER BY username")
            .bind(&c.jamf_id)
            .fetch_all(&self.pool)
            .await?;
        c.accounts = rows.iter().map(account_row).collect::<Result<_, _>>()?;
        Ok(c)
    }
}

/// How long the listener waits for a notification before it checks its connection.
const LISTENER_PING_EVERY: Duration = Duration::from_secs(5);

/// Keeps a `LISTEN portcullis_changes` connection and turns its notifications into
/// `signal.notify_one()`. The connection is pinged when it has been quiet for
/// [`LISTENER_PING_EVERY`], so a half-open socket is noticed (sqlx sets no TCP keepalive);
/// after any reconnection the follower is woken to catch up on what it missed. Ends when the
/// pool closes.
async fn listen(pool: PgPool, signal: std::sync::Arc<tokio::sync::Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(CHANGES_CHANNEL).await {
                Ok(()) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for store changes; polling meanwhile");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect the store change listener; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::debug!("listening for store changes");
        // Anything committed while no listener was connected is in the log: catch up.
        signal.notify_one();
        loop {
            match tokio::time::timeout(LISTENER_PING_EVERY, listener.try_recv()).await {
                Ok(Ok(Some(_))) => signal.notify_one(),
                // sqlx reconnected (and re-listened): notifications in between are lost.
                Ok(Ok(None)) => signal.notify_one(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the store change listener failed; reconnecting");
                    break;
                }
                Err(_quiet) => {
                    let ping =
                        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&mut listener));
                    if !matches!(ping.await, Ok(Ok(_))) {
                        tracing::warn!("the store change listener's connection does not answer; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

crate::rows::row_mappers!(PgRow);

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Takes the change-log lock for the rest of the transaction and asks PostgreSQL to notify
/// the listeners when it commits. Idempotent within a transaction.
async fn lock_change_log(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1), pg_notify($2, '')")
        .bind(CHANGE_LOG_LOCK)
        .bind(CHANGES_CHANNEL)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records that the devices' evidence changed (inside the caller's transaction).
async fn changed(tx: &mut sqlx::PgConnection, devices: &[String]) -> Result<(), StoreError> {
    if devices.is_empty() {
        return Ok(());
    }
    lock_change_log(&mut *tx).await?;
    let at = base::time::unix_now_i64();
    for chunk in devices.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<sqlx::Postgres>::new("INSERT INTO device_changes (device_id, at) ");
        q.push_values(chunk, |mut b, d| {
            b.push_bind(d.to_ascii_lowercase()).push_bind(at);
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Device ids named by a computer's accounts (before it is replaced or removed).
async fn account_devices(tx: &mut sqlx::PgConnection, jamf_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT entra_device_id FROM local_accounts WHERE jamf_id = $1 AND entra_device_id IS NOT NULL",
    )
    .bind(jamf_id)
    .fetch_all(tx)
    .await?)
}

/// Keeps the change log to its last 100,000 entries; followers are seconds behind at most.
async fn prune_changes(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM device_changes WHERE id <= (SELECT MAX(id) FROM device_changes) - 100000")
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl PostureStore for PgStore {
    async fn device_evidence(&self, device_id: &str) -> Result<DeviceEvidence, StoreError> {
        let id = device_id.to_ascii_lowercase();
        let mut conn = self.pool.acquire().await?;
        let entra = sqlx::query("SELECT * FROM entra_devices WHERE device_id = $1")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(entra_row)
            .transpose()?;
        let intune = sqlx::query(
            "SELECT * FROM managed_devices WHERE azure_ad_device_id = $1 \
             ORDER BY last_sync DESC NULLS LAST, seen_at DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(managed_row)
        .transpose()?;
        let account = sqlx::query("SELECT * FROM local_accounts WHERE entra_device_id = $1 ORDER BY jamf_id LIMIT 1")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
        drop(conn);
        let jamf = match account {
            Some(a) => {
                let jamf_id: String = a.try_get("jamf_id")?;
                let acct = account_row(&a)?;
                self.computer(&jamf_id).await?.map(|c| (c, acct))
            }
            None => None,
        };
        Ok(DeviceEvidence {
            entra,
            intune,
            jamf,
            last_sync: self.last_success().await?,
        })
    }

    async fn computers_for_user(&self, object_id: &str, username: Option<&str>) -> Result<Vec<Computer>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.* FROM computers c JOIN local_accounts a ON a.jamf_id = c.jamf_id \
             WHERE a.entra_user_id = $1 OR ($2::text IS NOT NULL AND lower(a.username) = lower($2::text)) \
             ORDER BY c.jamf_id",
        )
        .bind(object_id.to_ascii_lowercase())
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.with_accounts(computer_row(r)?).await?);
        }
        Ok(out)
    }

    async fn computer(&self, jamf_id: &str) -> Result<Option<Computer>, StoreError> {
        let row = sqlx::query("SELECT * FROM computers WHERE jamf_id = $1")
            .bind(jamf_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_accounts(computer_row(&r)?).await?)),
            None => Ok(None),
        }
    }

    async fn computer_by_serial(&self, serial: &str) -> Result<Option<Computer>, StoreError> {
        let row = sqlx::query("SELECT * FROM computers WHERE serial = $1 ORDER BY seen_at DESC LIMIT 1")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_accounts(computer_row(&r)?).await?)),
            None => Ok(None),
        }
    }

    async fn computers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Computer>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM computers WHERE $1::text IS NULL OR jamf_id > $1::text ORDER BY jamf_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.with_accounts(computer_row(r)?).await?);
        }
        Ok(out)
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, device_id FROM device_changes WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("device_id")?)))
            .collect()
    }

    async fn latest_change(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM device_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn oldest_change(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM device_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn epoch(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'epoch'")
            .fetch_one(&self.pool)
            .await?)
    }

    fn change_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.signal.clone())
    }
}

#[async_trait]
impl InventoryWriter for PgStore {
    async fn upsert_entra_devices(&self, devices: &[EntraDevice]) -> Result<(), StoreError> {
        // One row per device id in a statement: PostgreSQL refuses an upsert that would touch
        // the same row twice (SQLite applies both). The last one in the page wins.
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<&EntraDevice> = devices
            .iter()
            .rev()
            .filter(|d| seen.insert(d.device_id.to_ascii_lowercase()))
            .collect();
        unique.reverse();
        let mut tx = self.write_tx().await?;
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            // A device id moved to another object (re-registration) replaces the old row.
            let mut del = QueryBuilder::<sqlx::Postgres>::new("DELETE FROM entra_devices WHERE object_id IN (");
            let mut ids = del.separated(",");
            for d in chunk {
                ids.push_bind(&d.object_id);
            }
            del.push(") AND (object_id, device_id) NOT IN (VALUES ");
            for (i, d) in chunk.iter().enumerate() {
                if i > 0 {
                    del.push(",");
                }
                del.push("(")
                    .push_bind(&d.object_id)
                    .push(",")
                    .push_bind(d.device_id.to_ascii_lowercase())
                    .push(")");
            }
            del.push(")");
            del.build().execute(&mut *tx).await?;

            let mut ins = QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO entra_devices (device_id, object_id, display_name, account_enabled, is_compliant, is_managed, \
                 trust_type, operating_system, os_version, compliance_expiration, last_sign_in, removed, seen_at) ",
            );
            ins.push_values(chunk, |mut b, d| {
                b.push_bind(d.device_id.to_ascii_lowercase())
                    .push_bind(&d.object_id)
                    .push_bind(&d.display_name)
                    .push_bind(d.account_enabled)
                    .push_bind(d.is_compliant)
                    .push_bind(d.is_managed)
                    .push_bind(&d.trust_type)
                    .push_bind(&d.operating_system)
                    .push_bind(&d.os_version)
                    .push_bind(d.compliance_expiration)
                    .push_bind(d.last_sign_in)
                    .push_bind(d.removed)
                    .push_bind(d.seen_at);
            });
            ins.push(
                " ON CONFLICT (device_id) DO UPDATE SET object_id = excluded.object_id, \
                 display_name = excluded.display_name, account_enabled = excluded.account_enabled, \
                 is_compliant = excluded.is_compliant, is_managed = excluded.is_managed, trust_type = excluded.trust_type, \
                 operating_system = excluded.operating_system, os_version = excluded.os_version, \
                 compliance_expiration = excluded.compliance_expiration, last_sign_in = excluded.last_sign_in, \
                 removed = excluded.removed, seen_at = excluded.seen_at",
            );
            ins.build().execute(&mut *tx).await?;
            let ids: Vec<String> = chunk.iter().map(|d| d.device_id.clone()).collect();
            changed(&mut tx, &ids).await?;
        }
        prune_changes(&mut tx).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn remove_entra_device(&self, object_id: &str, purge: bool) -> Result<Option<String>, StoreError> {
        let mut tx = self.write_tx().await?;
        let id: Option<String> = sqlx::query_scalar("SELECT device_id FROM entra_devices WHERE object_id = $1")
            .bind(object_id)
            .fetch_optional(&mut *tx)
            .await?;
        if purge {
            sqlx::query("DELETE FROM entra_devices WHERE object_id = $1")
                .bind(object_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE entra_devices SET removed = TRUE, seen_at = $1 WHERE object_id = $2")
                .bind(base::time::unix_now_i64())
                .bind(object_id)
                .execute(&mut *tx)
                .await?;
        }
        changed(&mut tx, id.as_slice()).await?;
        self.commit(tx).await?;
        Ok(id)
    }

    async fn upsert_managed_devices(&self, devices: &[ManagedDevice]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let mut touched = Vec::new();
        for d in devices {
            sqlx::query(
                "INSERT INTO managed_devices (intune_id, azure_ad_device_id, compliance_state, grace_end, management_agent, \
                 last_sync, serial, upn, seen_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (intune_id) DO UPDATE SET \
                 azure_ad_device_id = excluded.azure_ad_device_id, compliance_state = excluded.compliance_state, \
                 grace_end = excluded.grace_end, management_agent = excluded.management_agent, \
                 last_sync = excluded.last_sync, serial = excluded.serial, upn = excluded.upn, seen_at = excluded.seen_at",
            )
            .bind(&d.intune_id)
            .bind(d.azure_ad_device_id.as_ref().map(|s| s.to_ascii_lowercase()))
            .bind(d.compliance_state.as_str())
            .bind(d.grace_end)
            .bind(&d.management_agent)
            .bind(d.last_sync)
            .bind(&d.serial)
            .bind(&d.upn)
            .bind(d.seen_at)
            .execute(&mut *tx)
            .await?;
            touched.extend(d.azure_ad_device_id.clone());
        }
        changed(&mut tx, &touched).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn upsert_computers(&self, computers: &[Computer]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let mut touched = Vec::new();
        for c in computers {
            sqlx::query(
                "INSERT INTO computers (jamf_id, udid, serial, name, model, os_version, os_build, managed, filevault, \
                 last_inventory, last_contact, seen_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) \
                 ON CONFLICT (jamf_id) DO UPDATE SET \
                 udid = excluded.udid, serial = excluded.serial, name = excluded.name, model = excluded.model, \
                 os_version = excluded.os_version, os_build = excluded.os_build, managed = excluded.managed, \
                 filevault = excluded.filevault, last_inventory = excluded.last_inventory, \
                 last_contact = excluded.last_contact, seen_at = excluded.seen_at",
            )
            .bind(&c.jamf_id)
            .bind(&c.udid)
            .bind(&c.serial)
            .bind(&c.name)
            .bind(&c.model)
            .bind(&c.os_version)
            .bind(&c.os_build)
            .bind(c.managed)
            .bind(&c.filevault)
            .bind(c.last_inventory)
            .bind(c.last_contact)
            .bind(c.seen_at)
            .execute(&mut *tx)
            .await?;
            touched.extend(account_devices(&mut tx, &c.jamf_id).await?);
            touched.extend(c.accounts.iter().filter_map(|a| a.entra_device_id.clone()));
            sqlx::query("DELETE FROM local_accounts WHERE jamf_id = $1")
                .bind(&c.jamf_id)
                .execute(&mut *tx)
                .await?;
            for a in &c.accounts {
                sqlx::query(
                    "INSERT INTO local_accounts (jamf_id, username, account_type, entra_user_id, entra_device_id, registration) \
                     VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (jamf_id, username) DO NOTHING",
                )
                .bind(&c.jamf_id)
                .bind(&a.username)
                .bind(a.account_type.as_str())
                .bind(a.entra_user_id.as_ref().map(|s| s.to_ascii_lowercase()))
                .bind(a.entra_device_id.as_ref().map(|s| s.to_ascii_lowercase()))
                .bind(a.registration.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        touched.sort();
        touched.dedup();
        changed(&mut tx, &touched).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn remove_computer(&self, jamf_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let touched = account_devices(&mut tx, jamf_id).await?;
        changed(&mut tx, &touched).await?;
        sqlx::query("DELETE FROM computers WHERE jamf_id = $1")
            .bind(jamf_id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }
}

#[async_trait]
impl SyncState for PgStore {
    async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_cursor(&self, source: &str, cursor: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        match cursor {
            Some(c) => {
                sqlx::query(
                    "INSERT INTO sync_cursors (source, cursor, updated_at) VALUES ($1,$2,$3) \
                     ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )
                .bind(source)
                .bind(c)
                .bind(base::time::unix_now_i64())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM sync_cursors WHERE source = $1")
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn record_run(&self, run: &SyncRun) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO sync_runs (source, finished_at, ok, error, detail) VALUES ($1,$2,$3,$4,$5)")
            .bind(&run.source)
            .bind(run.finished_at)
            .bind(run.ok)
            .bind(&run.error)
            .bind(&run.detail)
            .execute(&mut *tx)
            .await?;
        // Keep the last RUNS_KEPT runs of the source, and always the successful run that
        // `last_success` reports (posture age rests on it).
        sqlx::query(
            "DELETE FROM sync_runs WHERE source = $1 \
             AND id <= (SELECT id FROM sync_runs WHERE source = $1 ORDER BY id DESC LIMIT 1 OFFSET $2) \
             AND id <> COALESCE((SELECT id FROM sync_runs WHERE source = $1 AND ok \
                                 ORDER BY finished_at DESC, id DESC LIMIT 1), -1)",
        )
        .bind(&run.source)
        .bind(RUNS_KEPT)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn last_runs(&self, source: &str, limit: u32) -> Result<Vec<SyncRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT source, finished_at, ok, error, detail FROM sync_runs WHERE source = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<Option<Lease>, StoreError> {
        // The database's clock decides, never a node's: two nodes whose clocks disagree still
        // agree on who holds the lease. A lease row locked by a stalled holder's write makes
        // this wait at most 2 s (an error: the next round tries again), never forever.
        let mut tx: Tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at, term) \
             VALUES ($1, $2, EXTRACT(EPOCH FROM clock_timestamp())::BIGINT + $3, 1) \
             ON CONFLICT (name) DO UPDATE SET \
             term = CASE WHEN leases.holder = excluded.holder \
                          AND leases.expires_at >= EXTRACT(EPOCH FROM clock_timestamp())::BIGINT \
                    THEN leases.term ELSE leases.term + 1 END, \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < EXTRACT(EPOCH FROM clock_timestamp())::BIGINT \
             RETURNING holder, term",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_secs)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            Some(r) => Some(Lease {
                name: name.to_string(),
                holder: r.try_get("holder")?,
                term: r.try_get("term")?,
            }),
            None => None,
        })
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<(Lease, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT holder, term, expires_at - EXTRACT(EPOCH FROM clock_timestamp())::BIGINT AS left_secs \
             FROM leases WHERE name = $1 AND expires_at >= EXTRACT(EPOCH FROM clock_timestamp())::BIGINT",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                Lease {
                    name: name.to_string(),
                    holder: r.try_get("holder")?,
                    term: r.try_get("term")?,
                },
                r.try_get("left_secs")?,
            ))
        })
        .transpose()
    }

    fn fenced(&self, lease: &Lease) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(Self {
            fence: Some(std::sync::Arc::new(lease.clone())),
            ..self.clone()
        })
    }

    async fn sweep_entra(&self, before: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE entra_devices SET removed = TRUE WHERE seen_at < $1 AND NOT removed RETURNING device_id",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        changed(&mut tx, &ids).await?;
        self.commit(tx).await?;
        Ok(ids)
    }

    async fn sweep_managed(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<Option<String>> =
            sqlx::query_scalar("DELETE FROM managed_devices WHERE seen_at < $1 RETURNING azure_ad_device_id")
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
        let n = ids.len() as u64;
        let touched: Vec<String> = ids.into_iter().flatten().collect();
        changed(&mut tx, &touched).await?;
        self.commit(tx).await?;
        Ok(n)
    }

    async fn last_success(&self) -> Result<SourceTimes, StoreError> {
        let r = sqlx::query(
            "SELECT \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'entra' AND ok) AS entra, \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'intune' AND ok) AS intune, \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'jamf' AND ok) AS jamf",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(SourceTimes {
            entra: r.try_get("entra")?,
            intune: r.try_get("intune")?,
            jamf: r.try_get("jamf")?,
        })
    }
}

#[async_trait]
impl SettingsStore for PgStore {
    async fn setting(&self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT value, version FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("value")?, r.try_get("version")?)))
            .transpose()
    }

    async fn put_setting(&self, key: &str, value: &str, expected: Option<i64>) -> Result<i64, StoreError> {
        let conflict = |current: Option<i64>| StoreError::Conflict {
            what: key.to_string(),
            current: current.unwrap_or(0),
        };
        let mut tx = self.write_tx().await?;
        // The row lock makes a concurrent save wait and then see the new version.
        let current: Option<i64> = sqlx::query_scalar("SELECT version FROM settings WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if current != expected {
            return Err(conflict(current));
        }
        let now = base::time::unix_now_i64();
        let next = match current {
            Some(v) => {
                sqlx::query("UPDATE settings SET value = $2, version = $3, updated_at = $4 WHERE key = $1")
                    .bind(key)
                    .bind(value)
                    .bind(v + 1)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                v + 1
            }
            None => {
                // Two first saves at once: one inserts, the other finds the row and conflicts.
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO settings (key, value, version, updated_at) VALUES ($1,$2,1,$3) \
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                )
                .bind(key)
                .bind(value)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if inserted.is_none() {
                    drop(tx);
                    return Err(conflict(self.setting(key).await?.map(|(_, v)| v)));
                }
                1
            }
        };
        tx.commit().await?;
        Ok(next)
    }
}

#[async_trait]
impl HistoryStore for PgStore {
    async fn record_send(&self, e: &HistoryEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO inventory_history (jamf_id, username, entra_device_id, sent_at, payload, result) \
             VALUES ($1,$2,$3,$4,$5,$6)",
        )
        .bind(&e.jamf_id)
        .bind(&e.username)
        .bind(&e.entra_device_id)
        .bind(e.sent_at)
        .bind(&e.payload)
        .bind(&e.result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn history(&self, jamf_id: &str, limit: u32) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT jamf_id, username, entra_device_id, sent_at, payload, result FROM inventory_history \
             WHERE jamf_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(jamf_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn record_audit(&self, actor: &str, action: &str, detail: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("INSERT INTO audit (at, actor, action, detail) VALUES ($1,$2,$3,$4) RETURNING id")
                .bind(base::time::unix_now_i64())
                .bind(actor)
                .bind(action)
                .bind(detail)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, action, detail FROM audit WHERE $1::bigint IS NULL OR id < $1::bigint \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn put_job(&self, j: &Job) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM jobs WHERE started_at < $1")
            .bind(j.started_at - JOB_RETENTION_SECS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, node, started_at, finished_at, computer, result) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, \
             status = excluded.status, node = excluded.node, started_at = excluded.started_at, \
             finished_at = excluded.finished_at, computer = excluded.computer, result = excluded.result",
        )
        .bind(&j.id)
        .bind(&j.kind)
        .bind(j.status.as_str())
        .bind(&j.node)
        .bind(j.started_at)
        .bind(j.finished_at)
        .bind(&j.computer)
        .bind(&j.result)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn start_job(&self, j: &Job) -> Result<Option<Job>, StoreError> {
        // A conflict is the same work running (or, never in practice, a reused id); when that
        // job ends between the insert and the look, the insert is tried again.
        for _ in 0..3 {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM jobs WHERE started_at < $1")
                .bind(j.started_at - JOB_RETENTION_SECS)
                .execute(&mut *tx)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO jobs (id, kind, status, node, started_at, finished_at, computer, result) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING",
            )
            .bind(&j.id)
            .bind(&j.kind)
            .bind(j.status.as_str())
            .bind(&j.node)
            .bind(j.started_at)
            .bind(j.finished_at)
            .bind(&j.computer)
            .bind(&j.result)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if inserted == 1 {
                return Ok(None);
            }
            if let Some(running) = self.running_job(&j.kind, j.computer.as_deref()).await? {
                return Ok(Some(running));
            }
        }
        Err(StoreError::Conflict {
            what: format!("job {}", j.id),
            current: 0,
        })
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_row)
            .transpose()
    }

    async fn running_job(&self, kind: &str, computer: Option<&str>) -> Result<Option<Job>, StoreError> {
        sqlx::query(
            "SELECT * FROM jobs WHERE kind = $1 AND status = 'running' AND computer IS NOT DISTINCT FROM $2 \
             ORDER BY started_at DESC LIMIT 1",
        )
        .bind(kind)
        .bind(computer)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(job_row)
        .transpose()
    }

    async fn interrupt_jobs(&self, node: &str, started_by: i64, now: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'interrupted', finished_at = $1 WHERE node = $2 AND status = 'running' AND started_at <= $3",
        )
        .bind(now)
        .bind(node)
        .bind(started_by)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

#[async_trait]
impl SessionRows for PgStore {
    async fn session(&self, id: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT data FROM sessions WHERE id = $1 AND expires_at > $2")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_session(&self, id: &str, data: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1,$2,$3) ON CONFLICT (id) DO UPDATE SET \
             data = excluded.data, expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(base::time::unix_now_i64())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM leases WHERE name LIKE 'renew-session:%' AND expires_at < $1")
            .bind(base::time::unix_now_i64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn replace_session(&self, id: &str, expected: &str, data: &str, expires_at: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE sessions SET data = $1, expires_at = $2 WHERE id = $3 AND data = $4")
            .bind(data)
            .bind(expires_at)
            .bind(id)
            .bind(expected)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn claim_session_renewal(&self, id: &str, claimant: &str, ttl_secs: i64) -> Result<bool, StoreError> {
        // A lease of its own per session, on the same clock as the sync's.
        Ok(self
            .try_lease(&format!("renew-session:{id}"), claimant, ttl_secs)
            .await?
            .is_some_and(|l| l.holder == claimant))
    }

    async fn release_session_renewal(&self, id: &str, claimant: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(format!("renew-session:{id}"))
            .bind(claimant)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Test support: a fresh schema of its own on a shared database, so parallel test runs never
/// see each other's rows. Only with the `test-support` feature (dev-dependencies).
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use super::PgSettings;
    use crate::StoreError;

    /// The database the tests use: `PORTCULLIS_TEST_POSTGRES`, else the local default.
    pub fn url() -> String {
        std::env::var("PORTCULLIS_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Creates a new, empty schema and returns settings whose connections use it, and the
    /// schema's name. Fails with a message that says how to get a database.
    pub async fn fresh_schema() -> Result<(PgSettings, String), StoreError> {
        let url = url();
        let opts = PgConnectOptions::from_str(&url).map_err(StoreError::from)?;
        let mut conn = opts.connect().await.map_err(|e| {
            eprintln!(
                "PostgreSQL at PORTCULLIS_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test) \
                 is not reachable: {e}. scripts/test.sh starts one when none is installed."
            );
            StoreError::from(e)
        })?;
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            base::seal::random_token(9)
                .map_err(|_| StoreError::UnknownValue {
                    column: "random",
                    value: "no randomness".into()
                })?
                .to_ascii_lowercase()
                .replace(['-', '_'], "x")
        );
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&mut conn).await?;
        conn.close().await?;
        let mut s = PgSettings::from_url(&url).map_err(|m| StoreError::UnknownValue {
            column: "PORTCULLIS_TEST_POSTGRES",
            value: m,
        })?;
        s.connect = s.connect.options([("search_path", name.as_str())]);
        Ok((s, name))
    }

    /// The URL of `fresh_schema`'s schema, for a gateway process's `[store] url`.
    pub fn url_for_schema(schema: &str) -> String {
        let base = url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{schema}")
    }
}
