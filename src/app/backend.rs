//! Opening the store the configuration names: SQLite (one node; the file is locked for it) or
//! PostgreSQL (several nodes). The only code that names a backend; everything else takes the
//! store through its traits. The password comes from `store.password` (the environment) or
//! `store.password_file`, never from a log line or an error message.

use std::sync::Arc;

use config::{ConfigError, PostgresConfig, StoreConfig};
use store::deadline::Deadline;
use store::postgres::{PgSettings, PgStore};
use store::sqlite::SqliteStore;
use store::{Store, StoreError};

/// Checks what can be checked without connecting: the URL's options and the password file.
pub fn check(cfg: &StoreConfig) -> Vec<ConfigError> {
    match cfg {
        StoreConfig::Sqlite { .. } => Vec::new(),
        StoreConfig::Postgres(p) => pg_settings(p).err().into_iter().collect(),
    }
}

/// An open store, with its SQLite node lock (a duplicate, for a binary upgrade to hand over).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub lock: Option<std::fs::File>,
}

/// Opens the store (applying migrations) on `rt`, the runtime whose threads serve it;
/// `inherited_lock`: the SQLite node lock a binary upgrade handed over.
pub fn open(
    cfg: &StoreConfig,
    rt: &tokio::runtime::Runtime,
    inherited_lock: Option<std::fs::File>,
) -> Result<Opened, super::StartError> {
    let failed = |source: StoreError| super::StartError::Store {
        path: cfg.describe(),
        source,
    };
    Ok(match cfg {
        StoreConfig::Sqlite { path } => {
            let s = rt
                .block_on(SqliteStore::open_for_node(path, inherited_lock))
                .map_err(failed)?;
            let lock = s.node_lock().and_then(|f| f.try_clone().ok());
            Opened {
                store: Arc::new(s),
                lock,
            }
        }
        StoreConfig::Postgres(p) => {
            let settings = pg_settings(p).map_err(|e| super::StartError::Config(config::ConfigErrors(vec![e])))?;
            let pg: Arc<dyn Store> = Arc::new(rt.block_on(PgStore::open(&settings)).map_err(failed)?);
            // sqlx bounds taking a connection (and pings it first), not a statement once sent:
            // a network that black-holes mid-statement would hang the call for minutes.
            Opened {
                store: Arc::new(Deadline::new(pg, p.query_timeout)),
                lock: None,
            }
        }
    })
}

fn pg_settings(p: &PostgresConfig) -> Result<PgSettings, ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        key: key.into(),
        message,
    };
    let mut s = PgSettings::from_url(p.url.expose()).map_err(|m| error("store.url", m))?;
    let password = match (&p.password, &p.password_file) {
        (Some(pw), _) => Some(pw.expose().to_string()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| error("store.password_file", format!("{}: {e}", file.display())))?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => None,
    };
    if let Some(pw) = password {
        s.connect = s.connect.password(&pw);
    }
    s.max_connections = p.pool_size;
    s.acquire_timeout = p.connect_timeout;
    Ok(s)
}
