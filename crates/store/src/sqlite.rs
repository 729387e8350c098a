//! The embedded store: SQLite through sqlx. sqlx runs each SQLite connection on its own
//! thread, so no query blocks the async runtime; WAL journaling lets readers proceed while the
//! sync loop writes, and `synchronous = FULL` makes every committed transaction survive a
//! crash of the process or the machine. Migrations live in `migrations/sqlite`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::*;

/// Sync runs kept per source (older ones are pruned as new ones are recorded).
const RUNS_KEPT: i64 = 1000;

/// A store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held while a gateway node uses the file ([`SqliteStore::open_for_node`]).
    _node_lock: Option<std::sync::Arc<std::fs::File>>,
    /// Set on a [`SyncState::fenced`] view: its inventory writes check the lease first.
    fence: Option<std::sync::Arc<Lease>>,
}

impl SqliteStore {
    /// Opens the file for a gateway node: refused with [`StoreError::InUse`] while another
    /// process's node has it (an exclusive lock on `PATH-lock`, released when the process
    /// ends, however it ends). Tools and tests that read a node's file use [`Self::open`].
    ///
    /// `inherited`: the lock file handed over by the process a binary upgrade replaces. A
    /// lock belongs to the open file, not the process, so both hold it until the old one
    /// exits; it is checked to be this path's lock and held.
    pub async fn open_for_node(path: &Path, inherited: Option<std::fs::File>) -> Result<Self, StoreError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push("-lock");
        let io = |e: std::io::Error| StoreError::Unavailable(std::sync::Arc::new(sqlx::Error::Io(e)));
        let lock = match inherited {
            Some(file) => {
                use std::os::unix::fs::MetadataExt;
                let (held, named) = (file.metadata().map_err(io)?, std::fs::metadata(&lock_path).map_err(io)?);
                if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
                    return Err(io(std::io::Error::other(format!(
                        "the lock handed over is not {}",
                        std::path::Path::new(&lock_path).display()
                    ))));
                }
                file
            }
            None => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io)?,
        };
        // On the handed-over file this succeeds because the lock is already its own.
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    path: path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut s = Self::open(path).await?;
        s._node_lock = Some(std::sync::Arc::new(lock));
        Ok(s)
    }

    /// The node lock's file, for a binary upgrade to hand over.
    pub fn node_lock(&self) -> Option<&std::fs::File> {
        self._node_lock.as_deref()
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        Self::connect(opts).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(StoreError::from)?
            .foreign_keys(true);
        // One connection: every connection to :memory: would be a different database.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        Self::migrate(pool).await
    }

    async fn connect(opts: SqliteConnectOptions) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    async fn migrate(pool: SqlitePool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::migration)?;
        Ok(Self {
            pool,
            _node_lock: None,
            fence: None,
        })
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock at the start, so a writer
    /// that finds another one busy waits for it (`busy_timeout`). A plain (deferred) `BEGIN`
    /// that reads first cannot upgrade to a write once another connection has committed since
    /// its read: SQLite answers SQLITE_BUSY at once, without waiting ("database is locked"),
    /// which the admin API met under load.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(lease) = &self.fence {
            // Under BEGIN IMMEDIATE nobody else writes until this commits: the check holds.
            let term: Option<i64> = sqlx::query_scalar("SELECT term FROM leases WHERE name = ? AND holder = ?")
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
        Ok(tx)
    }

    /// The applied schema version (the newest migration).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

crate::rows::row_mappers!(SqliteRow);

/// Rows per multi-row statement: 13 columns × 400 stays far below SQLite's variable limit.
const ROWS_PER_STATEMENT: usize = 400;

/// Records that `device_id`'s evidence changed (inside the caller's transaction).
async fn changed(tx: &mut sqlx::SqliteConnection, device_id: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO device_changes (device_id, at) VALUES (?, ?)")
        .bind(device_id.to_ascii_lowercase())
        .bind(base::time::unix_now_i64())
        .execute(tx)
        .await?;
    Ok(())
}

/// Device ids named by a computer's accounts (before it is replaced or removed).
async fn account_devices(tx: &mut sqlx::SqliteConnection, jamf_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT entra_device_id FROM local_accounts WHERE jamf_id = ? AND entra_device_id IS NOT NULL",
    )
    .bind(jamf_id)
    .fetch_all(tx)
    .await?)
}

/// Keeps the change log to its last 100,000 entries; pollers are seconds behind at most.
async fn prune_changes(tx: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM device_changes WHERE id <= (SELECT MAX(id) FROM device_changes) - 100000")
        .execute(tx)
        .await?;
    Ok(())
}

impl SqliteStore {
    async fn with_accounts(&self, mut c: Computer) -> Result<Computer, StoreError> {
        let rows = sqlx::query("SELECT * FROM local_accounts WHERE jamf_id = ? ORDER BY username")
            .bind(&c.jamf_id)
            .fetch_all(&self.pool)
            .await?;
        c.accounts = rows.iter().map(account_row).collect::<Result<_, _>>()?;
        Ok(c)
    }
}

#[async_trait]
impl PostureStore for SqliteStore {
    async fn device_evidence(&self, device_id: &str) -> Result<DeviceEvidence, StoreError> {
        let id = device_id.to_ascii_lowercase();
        // One connection for the three look-ups: each pool acquisition is a round trip to
        // sqlx's worker thread, and this runs on every posture cache miss.
        let mut conn = self.pool.acquire().await?;
        let entra = sqlx::query("SELECT * FROM entra_devices WHERE device_id = ?")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(entra_row)
            .transpose()?;
        let intune = sqlx::query(
            "SELECT * FROM managed_devices WHERE azure_ad_device_id = ? ORDER BY last_sync DESC, seen_at DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(managed_row)
        .transpose()?;
        let account = sqlx::query("SELECT * FROM local_accounts WHERE entra_device_id = ? ORDER BY jamf_id LIMIT 1")
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
             WHERE a.entra_user_id = ?1 OR (?2 IS NOT NULL AND lower(a.username) = lower(?2)) ORDER BY c.jamf_id",
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
        let row = sqlx::query("SELECT * FROM computers WHERE jamf_id = ?")
            .bind(jamf_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_accounts(computer_row(&r)?).await?)),
            None => Ok(None),
        }
    }

    async fn computer_by_serial(&self, serial: &str) -> Result<Option<Computer>, StoreError> {
        let row = sqlx::query("SELECT * FROM computers WHERE serial = ? ORDER BY seen_at DESC LIMIT 1")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.with_accounts(computer_row(&r)?).await?)),
            None => Ok(None),
        }
    }

    async fn computers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Computer>, StoreError> {
        let rows = sqlx::query("SELECT * FROM computers WHERE ?1 IS NULL OR jamf_id > ?1 ORDER BY jamf_id LIMIT ?2")
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
        let rows = sqlx::query("SELECT id, device_id FROM device_changes WHERE id > ? ORDER BY id LIMIT ?")
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
}

#[async_trait]
impl InventoryWriter for SqliteStore {
    async fn upsert_entra_devices(&self, devices: &[EntraDevice]) -> Result<(), StoreError> {
        // A sync page is up to 999 devices: write it in a few multi-row statements rather than
        // thousands of single-row ones (the statement count, not the data, is the cost).
        let mut tx = self.write_tx().await?;
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            // A device id moved to another object (re-registration) replaces the old row.
            let pairs = vec!["(?,?)"; chunk.len()].join(",");
            let mut del = sqlx::query_builder::QueryBuilder::<sqlx::Sqlite>::new(
                "DELETE FROM entra_devices WHERE object_id IN (",
            );
            let mut ids = del.separated(",");
            for d in chunk {
                ids.push_bind(&d.object_id);
            }
            del.push(format!(") AND (object_id, device_id) NOT IN (VALUES {pairs})"));
            let mut q = del.build();
            for d in chunk {
                q = q.bind(&d.object_id).bind(d.device_id.to_ascii_lowercase());
            }
            q.execute(&mut *tx).await?;

            let mut ins = sqlx::query_builder::QueryBuilder::<sqlx::Sqlite>::new(
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
                " ON CONFLICT(device_id) DO UPDATE SET object_id = excluded.object_id, \
                 display_name = excluded.display_name, account_enabled = excluded.account_enabled, \
                 is_compliant = excluded.is_compliant, is_managed = excluded.is_managed, trust_type = excluded.trust_type, \
                 operating_system = excluded.operating_system, os_version = excluded.os_version, \
                 compliance_expiration = excluded.compliance_expiration, last_sign_in = excluded.last_sign_in, \
                 removed = excluded.removed, seen_at = excluded.seen_at",
            );
            ins.build().execute(&mut *tx).await?;

            let at = base::time::unix_now_i64();
            let mut log =
                sqlx::query_builder::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO device_changes (device_id, at) ");
            log.push_values(chunk, |mut b, d| {
                b.push_bind(d.device_id.to_ascii_lowercase()).push_bind(at);
            });
            log.build().execute(&mut *tx).await?;
        }
        prune_changes(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_entra_device(&self, object_id: &str, purge: bool) -> Result<Option<String>, StoreError> {
        let mut tx = self.write_tx().await?;
        let id: Option<String> = sqlx::query_scalar("SELECT device_id FROM entra_devices WHERE object_id = ?")
            .bind(object_id)
            .fetch_optional(&mut *tx)
            .await?;
        if purge {
            sqlx::query("DELETE FROM entra_devices WHERE object_id = ?")
                .bind(object_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE entra_devices SET removed = 1, seen_at = ? WHERE object_id = ?")
                .bind(base::time::unix_now_i64())
                .bind(object_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(d) = &id {
            changed(&mut tx, d).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn upsert_managed_devices(&self, devices: &[ManagedDevice]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for d in devices {
            sqlx::query(
                "INSERT INTO managed_devices (intune_id, azure_ad_device_id, compliance_state, grace_end, management_agent, \
                 last_sync, serial, upn, seen_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(intune_id) DO UPDATE SET \
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
            if let Some(dev) = &d.azure_ad_device_id {
                changed(&mut tx, dev).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_computers(&self, computers: &[Computer]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for c in computers {
            sqlx::query(
                "INSERT INTO computers (jamf_id, udid, serial, name, model, os_version, os_build, managed, filevault, \
                 last_inventory, last_contact, seen_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(jamf_id) DO UPDATE SET \
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
            let mut touched = account_devices(&mut tx, &c.jamf_id).await?;
            touched.extend(c.accounts.iter().filter_map(|a| a.entra_device_id.clone()));
            sqlx::query("DELETE FROM local_accounts WHERE jamf_id = ?")
                .bind(&c.jamf_id)
                .execute(&mut *tx)
                .await?;
            for a in &c.accounts {
                sqlx::query(
                    "INSERT INTO local_accounts (jamf_id, username, account_type, entra_user_id, entra_device_id, registration) \
                     VALUES (?,?,?,?,?,?) ON CONFLICT(jamf_id, username) DO NOTHING",
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
            touched.sort();
            touched.dedup();
            for d in &touched {
                changed(&mut tx, d).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn remove_computer(&self, jamf_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for d in account_devices(&mut tx, jamf_id).await? {
            changed(&mut tx, &d).await?;
        }
        sqlx::query("DELETE FROM computers WHERE jamf_id = ?")
            .bind(jamf_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl SyncState for SqliteStore {
    async fn cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE source = ?")
            .bind(source)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_cursor(&self, source: &str, cursor: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        match cursor {
            Some(c) => {
                sqlx::query(
                    "INSERT INTO sync_cursors (source, cursor, updated_at) VALUES (?,?,?) \
                     ON CONFLICT(source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )
                .bind(source)
                .bind(c)
                .bind(base::time::unix_now_i64())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM sync_cursors WHERE source = ?")
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_run(&self, run: &SyncRun) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO sync_runs (source, finished_at, ok, error, detail) VALUES (?,?,?,?,?)")
            .bind(&run.source)
            .bind(run.finished_at)
            .bind(run.ok)
            .bind(&run.error)
            .bind(&run.detail)
            .execute(&mut *tx)
            .await?;
        // Keep the last RUNS_KEPT runs of the source, and always the successful run that
        // `last_success` reports (posture age rests on it): the table would otherwise grow by
        // ~600,000 rows a year.
        sqlx::query(
            "DELETE FROM sync_runs WHERE source = ?1 \
             AND id <= (SELECT id FROM sync_runs WHERE source = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2) \
             AND id <> COALESCE((SELECT id FROM sync_runs WHERE source = ?1 AND ok = 1 \
                                 ORDER BY finished_at DESC, id DESC LIMIT 1), -1)",
        )
        .bind(&run.source)
        .bind(RUNS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn last_runs(&self, source: &str, limit: u32) -> Result<Vec<SyncRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT source, finished_at, ok, error, detail FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<Option<Lease>, StoreError> {
        // One node on one file: its clock is the database's.
        let now = base::time::unix_now_i64();
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at, term) VALUES (?1, ?2, ?3, 1) ON CONFLICT(name) DO UPDATE SET \
             term = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= ?4 THEN leases.term ELSE leases.term + 1 END, \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?4 RETURNING holder, term",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_secs)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
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
        let now = base::time::unix_now_i64();
        let row = sqlx::query("SELECT holder, term, expires_at FROM leases WHERE name = ? AND expires_at >= ?")
            .bind(name)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let expires_at: i64 = r.try_get("expires_at")?;
            Ok((
                Lease {
                    name: name.to_string(),
                    holder: r.try_get("holder")?,
                    term: r.try_get("term")?,
                },
                expires_at - now,
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
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT device_id FROM entra_devices WHERE seen_at < ? AND removed = 0")
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("UPDATE entra_devices SET removed = 1 WHERE seen_at < ? AND removed = 0")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        for d in &ids {
            changed(&mut tx, d).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn sweep_managed(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<Option<String>> =
            sqlx::query_scalar("SELECT azure_ad_device_id FROM managed_devices WHERE seen_at < ?")
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
        let r = sqlx::query("DELETE FROM managed_devices WHERE seen_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        for d in ids.iter().flatten() {
            changed(&mut tx, d).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    async fn last_success(&self) -> Result<SourceTimes, StoreError> {
        // One indexed MAX per source (sync_runs_success), not a scan of every run.
        let r = sqlx::query(
            "SELECT \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'entra' AND ok = 1) AS entra, \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'intune' AND ok = 1) AS intune, \
             (SELECT MAX(finished_at) FROM sync_runs WHERE source = 'jamf' AND ok = 1) AS jamf",
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
impl SettingsStore for SqliteStore {
    async fn setting(&self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT value, version FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("value")?, r.try_get("version")?)))
            .transpose()
    }

    async fn put_setting(&self, key: &str, value: &str, expected: Option<i64>) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT version FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if current != expected {
            return Err(StoreError::Conflict {
                what: key.to_string(),
                current: current.unwrap_or(0),
            });
        }
        let next = current.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO settings (key, value, version, updated_at) VALUES (?,?,?,?) ON CONFLICT(key) DO UPDATE SET \
             value = excluded.value, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(next)
        .bind(base::time::unix_now_i64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn record_send(&self, e: &HistoryEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO inventory_history (jamf_id, username, entra_device_id, sent_at, payload, result) VALUES (?,?,?,?,?,?)",
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
             WHERE jamf_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(jamf_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, actor: &str, action: &str, detail: &str) -> Result<i64, StoreError> {
        let r = sqlx::query("INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)")
            .bind(base::time::unix_now_i64())
            .bind(actor)
            .bind(action)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(r.last_insert_rowid())
    }

    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, action, detail FROM audit WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn put_job(&self, j: &Job) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM jobs WHERE started_at < ?")
            .bind(j.started_at - JOB_RETENTION_SECS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, node, started_at, finished_at, computer, result) \
             VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, \
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
            sqlx::query("DELETE FROM jobs WHERE started_at < ?")
                .bind(j.started_at - JOB_RETENTION_SECS)
                .execute(&mut *tx)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO jobs (id, kind, status, node, started_at, finished_at, computer, result) \
                 VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
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
        sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job_row)
            .transpose()
    }

    async fn running_job(&self, kind: &str, computer: Option<&str>) -> Result<Option<Job>, StoreError> {
        sqlx::query(
            "SELECT * FROM jobs WHERE kind = ? AND status = 'running' AND computer IS ? \
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
            "UPDATE jobs SET status = 'interrupted', finished_at = ? WHERE node = ? AND status = 'running' AND started_at <= ?",
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
impl SessionRows for SqliteStore {
    async fn session(&self, id: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT data FROM sessions WHERE id = ? AND expires_at > ?")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_session(&self, id: &str, data: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET \
             data = excluded.data, expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        // Expired sessions (and stale renewal claims) are swept opportunistically.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(base::time::unix_now_i64())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM leases WHERE name LIKE 'renew-session:%' AND expires_at < ?")
            .bind(base::time::unix_now_i64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn replace_session(&self, id: &str, expected: &str, data: &str, expires_at: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE sessions SET data = ?, expires_at = ? WHERE id = ? AND data = ?")
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
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(format!("renew-session:{id}"))
            .bind(claimant)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
