//! Building typed values from the file's tables: one builder per section (in the files of this
//! module), the helpers they share, and the checks across sections (ports used twice, routes
//! that could never match). Every problem is collected with its key; nothing stops at the
//! first.

mod device;
mod entra;
mod network;
mod routes;
mod server;
mod store;
mod sync;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::errors::Collector;
use crate::raw::*;
use crate::*;
use device::{build_device, build_landing};
use entra::{build_entra, build_session};
use network::{build_listener, build_upstream};
use routes::build_route;
use server::{build_admin, build_server};
use store::build_store;
use sync::{build_jamf, build_sync};

pub(crate) fn toml_message(e: &toml::de::Error) -> String {
    // toml's Display repeats the offending source line; the message plus line/column is enough.
    e.message().to_string()
}

/// Reads `v`, the value at `key`, as `T`. Every key in it that `T` has no field for is an error
/// of its own — all of them, not only the first.
pub(crate) fn item<T: DeserializeOwned>(c: &mut Collector, key: &str, v: toml::Value) -> Option<T> {
    let mut unknown = Vec::new();
    let read = serde_ignored::deserialize(v, |path| unknown.push(path_text(&path)));
    for u in unknown {
        let at = if key.is_empty() { u } else { format!("{key}.{u}") };
        c.push(
            &at,
            "unknown key: no setting of this name here (see docs/configuration.md)".to_string(),
        );
    }
    match read {
        Ok(t) => Some(t),
        Err(e) => {
            c.push(key, e.message().to_string());
            None
        }
    }
}

/// `a.b[2].c`, as every other error names its key.
fn path_text(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_text(parent)),
        Path::Map { parent, key } => match path_text(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => path_text(parent),
    }
}

pub(super) fn dur(c: &mut Collector, key: String, v: Option<String>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => c.take(&key, values::duration(&s)).unwrap_or(default),
    }
}

pub(super) fn positive(c: &mut Collector, key: &str, v: Option<i64>, default: i64, max: i64) -> i64 {
    match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            c.push(key, format!("{n} is out of range (1 to {max})"));
            default
        }
    }
}

/// The value named `name` among `all` (by their configuration names), or an error at `key`
/// that lists the names: one implementation for every enumerated setting, from the type's own
/// table of names.
pub(super) fn named<T: Copy>(
    c: &mut Collector,
    key: &str,
    name: &str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Option<T> {
    match all.iter().copied().find(|v| as_str(*v) == name) {
        Some(v) => Some(v),
        None => {
            let names: Vec<String> = all.iter().map(|v| format!("{:?}", as_str(*v))).collect();
            c.push(key, format!("{name:?} is not one of {}", names.join(", ")));
            None
        }
    }
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(crate) fn build(file: RawFile, base: &Path, host_name: &str, c: &mut Collector) -> Option<Config> {
    let server = build_server(file.server, c);
    let admin = build_admin(file.admin, c);
    let entra = file
        .entra
        .and_then(|v| item::<RawEntra>(c, "entra", v))
        .and_then(|raw| build_entra(raw, base, c));
    let device = build_device(
        file.device
            .and_then(|v| item::<RawDevice>(c, "device", v))
            .unwrap_or_default(),
        c,
    );
    let landing = build_landing(
        file.landing
            .and_then(|v| item::<RawLanding>(c, "landing", v))
            .unwrap_or_default(),
        base,
        c,
    );
    let store = build_store(
        file.store
            .and_then(|v| item::<RawStore>(c, "store", v))
            .unwrap_or_default(),
        base,
        c,
    );
    let has_credential = entra.as_ref().is_some_and(|e| e.credential.is_some());
    let sync = build_sync(
        file.sync
            .and_then(|v| item::<RawSync>(c, "sync", v))
            .unwrap_or_default(),
        has_credential,
        host_name,
        c,
    );
    let jamf = file
        .jamf
        .and_then(|v| item::<RawJamf>(c, "jamf", v))
        .and_then(|raw| build_jamf(raw, c));
    let session = build_session(
        file.session
            .and_then(|v| item::<RawSession>(c, "session", v))
            .unwrap_or_default(),
        c,
    );

    let mut listeners = Vec::new();
    if file.listeners.is_empty() {
        c.push("listeners", "at least one listener is required");
    }
    for (i, v) in file.listeners.into_iter().enumerate() {
        let key = format!("listeners[{i}]");
        if let Some(raw) = item::<RawListener>(c, &key, v) {
            if let Some(l) = build_listener(raw, &key, base, c) {
                listeners.push(l);
            }
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|o| o.address == l.address) || l.address == admin.listen {
            c.push(
                format!("listeners[{i}].address"),
                format!("{} is used twice", l.address),
            );
        }
    }

    let mut upstreams = Vec::new();
    for (name, v) in file.upstreams {
        let key = format!("upstreams.{name}");
        if let Some(raw) = item::<RawUpstream>(c, &key, v) {
            if let Some(u) = build_upstream(name, raw, &key, base, c) {
                upstreams.push(u);
            }
        }
    }

    let mut routes = Vec::new();
    if file.routes.is_empty() {
        c.push("routes", "at least one route is required");
    }
    for (i, v) in file.routes.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some(raw) = item::<RawRoute>(c, &key, v) {
            if let Some(r) = build_route(raw, &key, &upstreams, entra.is_some(), c) {
                routes.push((i, r));
            }
        }
    }
    for (n, (i, r)) in routes.iter().enumerate() {
        if let Some((j, _)) = routes[..n]
            .iter()
            .find(|(_, o)| o.host == r.host && o.path_prefix == r.path_prefix)
        {
            c.push(
                format!("routes[{i}]"),
                format!("same host and path_prefix as routes[{j}]; one of them could never match"),
            );
        }
        if routes[..n].iter().any(|(_, o)| o.name == r.name) {
            c.push(format!("routes[{i}].name"), format!("{:?} is used twice", r.name));
        }
    }

    Some(Config {
        server: server?,
        admin,
        entra,
        session,
        device,
        landing,
        store,
        sync,
        jamf,
        listeners,
        upstreams,
        routes: routes.into_iter().map(|(_, r)| r).collect(),
        source: None,
    })
}
