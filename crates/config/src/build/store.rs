//! Builder for `[store]`: `url = "sqlite://PATH"` (the default, `portcullis.db` next to the
//! file; `sqlite_path` is the older spelling) or `url = "postgres://…"` for several nodes. The
//! URL is checked here without printing it back: it may carry a password.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn build_store(raw: RawStore, base: &Path, c: &mut Collector) -> StoreConfig {
    let sqlite = |c: &mut Collector, path: &str| {
        if path.is_empty() {
            c.push(
                "store.url",
                "sqlite:// needs a file path, e.g. sqlite:///var/lib/portcullis/portcullis.db",
            );
        }
        StoreConfig::Sqlite {
            path: resolve(base, path),
        }
    };
    let postgres_only = [
        ("store.password", raw.password.is_some()),
        ("store.password_file", raw.password_file.is_some()),
        ("store.pool_size", raw.pool_size.is_some()),
        ("store.connect_timeout", raw.connect_timeout.is_some()),
        ("store.query_timeout", raw.query_timeout.is_some()),
    ];
    let url = match (raw.url, raw.sqlite_path) {
        (Some(_), Some(_)) => {
            c.push("store.sqlite_path", "give store.url or store.sqlite_path, not both");
            return StoreConfig::Sqlite {
                path: resolve(base, "portcullis.db"),
            };
        }
        (None, path) => {
            for (key, set) in postgres_only {
                if set {
                    c.push(key, "is for a postgres:// store.url only");
                }
            }
            return sqlite(c, path.as_deref().unwrap_or("portcullis.db"));
        }
        (Some(url), None) => url,
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        for (key, set) in postgres_only {
            if set {
                c.push(key, "is for a postgres:// store.url only");
            }
        }
        return sqlite(c, path);
    }
    let display = match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some_and(|h| !h.is_empty()) => {
            let user = if u.username().is_empty() {
                String::new()
            } else {
                format!("{}@", u.username())
            };
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{user}{}{port}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.path()
            )
        }
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            c.push("store.url", "a postgres:// URL needs a host");
            String::new()
        }
        // The URL itself is never repeated: it may hold a password.
        Ok(_) | Err(_) => {
            c.push(
                "store.url",
                "must be sqlite://PATH or postgres://USER@HOST:PORT/DATABASE (the value is not shown: it may hold a password)",
            );
            String::new()
        }
    };
    if raw.password.is_some() && raw.password_file.is_some() {
        c.push(
            "store.password_file",
            "give store.password or store.password_file, not both",
        );
    }
    let pool_size = positive(c, "store.pool_size", raw.pool_size, 8, 1000) as u32;
    let connect_timeout = dur(
        c,
        "store.connect_timeout".into(),
        raw.connect_timeout,
        Duration::from_secs(5),
    );
    let query_timeout = dur(
        c,
        "store.query_timeout".into(),
        raw.query_timeout,
        Duration::from_secs(10),
    );
    if query_timeout <= connect_timeout {
        c.push(
            "store.query_timeout",
            "must be longer than store.connect_timeout (a call includes waiting for a connection)",
        );
    }
    StoreConfig::Postgres(PostgresConfig {
        url: Secret::new(url),
        display,
        password: raw.password.filter(|p| !p.is_empty()).map(Secret::new),
        password_file: raw.password_file.map(|p| resolve(base, &p)),
        pool_size,
        connect_timeout,
        query_timeout,
    })
}
