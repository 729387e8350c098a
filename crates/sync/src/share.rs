//! Inventory out to Entra ("share inventory with Intune/Entra"): admin-mapped Jamf attributes
//! written to each registered Mac's Entra device as `extensionAttributes`, through `$batch`
//! (at most 20 requests, each inner status checked, inner 429s retried after their
//! `Retry-After`), only when the values changed since the last successful send. Only macOS
//! 10.11 or later with local or mobile accounts is shared; others are recorded as unsupported.
//! Every send is recorded per computer and username (the computer history).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::graph::GraphClient;
use super::SyncError;
use store::{AccountType, Computer, HistoryEntry, HistoryStore, PostureStore};

pub const SOURCE: &str = "share";
const BATCH: usize = 20;
const MAX_BATCH_ROUNDS: u32 = 4;

/// What to share: `extensionAttributeN` → template. Placeholders: `{managed}`, `{os_version}`,
/// `{os_build}`, `{filevault}`, `{serial}`, `{model}`, `{name}`, `{last_inventory}`,
/// `{jamf_id}`, `{username}`; anything else is literal text.
#[derive(Debug, Clone, Default)]
pub struct ShareSettings {
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareStats {
    pub sent: u64,
    pub unchanged: u64,
    pub unsupported: u64,
    pub failed: u64,
}

/// The attribute values for one computer and user.
pub fn render(settings: &ShareSettings, c: &Computer, username: &str) -> BTreeMap<String, String> {
    let date = |t: Option<i64>| t.and_then(base::time::rfc3339).unwrap_or_default();
    let vars: [(&str, String); 10] = [
        ("{managed}", if c.managed { "managed" } else { "unmanaged" }.to_string()),
        ("{os_version}", c.os_version.clone().unwrap_or_default()),
        ("{os_build}", c.os_build.clone().unwrap_or_default()),
        ("{filevault}", c.filevault.clone().unwrap_or_default()),
        ("{serial}", c.serial.clone().unwrap_or_default()),
        ("{model}", c.model.clone().unwrap_or_default()),
        ("{name}", c.name.clone().unwrap_or_default()),
        ("{last_inventory}", date(c.last_inventory)),
        ("{jamf_id}", c.jamf_id.clone()),
        ("{username}", username.to_string()),
    ];
    settings
        .attributes
        .iter()
        .map(|(k, template)| {
            let mut v = template.clone();
            for (name, value) in &vars {
                v = v.replace(name, value);
            }
            (k.clone(), v)
        })
        .collect()
}

/// Why a computer/user pair is not shared, if it is not.
fn unsupported(c: &Computer, kind: AccountType) -> Option<String> {
    if kind == AccountType::Network {
        return Some("network accounts are not supported".into());
    }
    match c.os_version.as_deref() {
        Some(v) if device::posture::macos_older_than_10_11(v) => Some(format!("macOS {v} is older than 10.11")),
        Some(_) | None => None,
    }
}

struct Pending {
    jamf_id: String,
    username: String,
    device_id: String,
    payload: String,
    values: BTreeMap<String, String>,
}

/// Shares the inventory of every computer, or of `only` (a Jamf id); `force` sends even
/// unchanged values (Send Update).
pub async fn share<S: PostureStore + HistoryStore + ?Sized>(
    graph: &GraphClient,
    store: &S,
    settings: &ShareSettings,
    only: Option<&str>,
    force: bool,
) -> Result<ShareStats, SyncError> {
    let mut stats = ShareStats::default();
    if settings.attributes.is_empty() {
        return Ok(stats);
    }
    let mut pending = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = match only {
            Some(id) => store.computer(id).await?.into_iter().collect::<Vec<_>>(),
            None => store.computers(after.as_deref(), 500).await?,
        };
        let Some(last) = batch.last().map(|c| c.jamf_id.clone()) else {
            break;
        };
        let history = |c: &Computer| {
            let id = c.jamf_id.clone();
            async move { store.history(&id, 50).await }
        };
        for c in &batch {
            let past = history(c).await?;
            for a in &c.accounts {
                let last_for_user = past.iter().find(|h| h.username == a.username);
                if let Some(why) = unsupported(c, a.account_type) {
                    let result = format!("unsupported: {why}");
                    if last_for_user.map(|h| h.result.as_str()) != Some(result.as_str()) {
                        store
                            .record_send(&HistoryEntry {
                                jamf_id: c.jamf_id.clone(),
                                username: a.username.clone(),
                                entra_device_id: a.entra_device_id.clone(),
                                sent_at: base::time::unix_now_i64(),
                                payload: "{}".into(),
                                result,
                            })
                            .await?;
                    }
                    stats.unsupported += 1;
                    continue;
                }
                let Some(device_id) = a.entra_device_id.clone() else {
                    continue;
                };
                let values = render(settings, c, &a.username);
                let payload = serde_json::to_string(&values).unwrap_or_default();
                let same = last_for_user.is_some_and(|h| h.result == "ok" && h.payload == payload);
                if same && !force {
                    stats.unchanged += 1;
                    continue;
                }
                pending.push(Pending {
                    jamf_id: c.jamf_id.clone(),
                    username: a.username.clone(),
                    device_id,
                    payload,
                    values,
                });
            }
        }
        if only.is_some() {
            break;
        }
        after = Some(last);
    }
    for chunk in pending.chunks(BATCH) {
        send_batch(graph, store, chunk, &mut stats).await?;
    }
    Ok(stats)
}

async fn send_batch<S: HistoryStore + ?Sized>(
    graph: &GraphClient,
    store: &S,
    items: &[Pending],
    stats: &mut ShareStats,
) -> Result<(), SyncError> {
    let mut todo: Vec<usize> = (0..items.len()).collect();
    for round in 0..MAX_BATCH_ROUNDS {
        if todo.is_empty() {
            break;
        }
        let requests: Vec<Value> = todo
            .iter()
            .map(|i| {
                let p = &items[*i];
                json!({
                    "id": i.to_string(),
                    "method": "PATCH",
                    "url": format!("/devices(deviceId='{}')", p.device_id),
                    "headers": { "Content-Type": "application/json" },
                    "body": { "extensionAttributes": p.values },
                })
            })
            .collect();
        let resp = graph.post("/v1.0/$batch", &json!({ "requests": requests })).await?;
        let responses = resp
            .get("responses")
            .and_then(Value::as_array)
            .ok_or_else(|| SyncError::Malformed("$batch: no responses array".into()))?;
        let mut retry = Vec::new();
        let mut wait = Duration::ZERO;
        for r in responses {
            let Some(i) = r
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|i| *i < items.len())
            else {
                continue;
            };
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
            let p = &items[i];
            let result = match status {
                200..=299 => "ok".to_string(),
                429 if round + 1 < MAX_BATCH_ROUNDS => {
                    let after = r
                        .get("headers")
                        .and_then(|h| h.get("Retry-After").or_else(|| h.get("retry-after")))
                        .and_then(Value::as_str)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(2);
                    wait = wait.max(Duration::from_secs(after.min(60)));
                    retry.push(i);
                    continue;
                }
                s => {
                    let msg = r
                        .get("body")
                        .and_then(|b| b.get("error"))
                        .and_then(|e| e.get("code"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    format!("error: status {s} {msg}").trim().to_string()
                }
            };
            if result == "ok" {
                stats.sent += 1;
            } else {
                stats.failed += 1;
            }
            store
                .record_send(&HistoryEntry {
                    jamf_id: p.jamf_id.clone(),
                    username: p.username.clone(),
                    entra_device_id: Some(p.device_id.clone()),
                    sent_at: base::time::unix_now_i64(),
                    payload: p.payload.clone(),
                    result,
                })
                .await?;
        }
        todo = retry;
        if !todo.is_empty() {
            tracing::info!(
                ?wait,
                items = todo.len(),
                "Graph throttled part of a $batch; retrying those items"
            );
            tokio::time::sleep(wait).await;
        }
    }
    Ok(())
}
