//! Compliance in from Entra ID: `GET /devices/delta` with `$select` on the first call, paging
//! by `@odata.nextLink`, the cursor (next or delta link) persisted only after its page was
//! applied, `@removed` (`changed`: marked removed; `deleted`: purged), a full resync when the
//! token expired (410), and a sweep after every full round for devices that vanished.

use serde_json::Value;

use super::graph::{GraphClient, GraphError};
use super::SyncError;
use store::{EntraDevice, InventoryWriter, SyncState};

pub const SOURCE: &str = "entra";
const SELECT: &str = "id,deviceId,displayName,accountEnabled,isCompliant,isManaged,trustType,operatingSystem,\
operatingSystemVersion,approximateLastSignInDateTime,complianceExpirationDateTime";

/// What one sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EntraStats {
    pub pages: u32,
    pub upserted: u64,
    pub removed: u64,
    pub swept: u64,
    /// This run started from scratch (first sync, expired token, or reconcile).
    pub full: bool,
    pub resynced_after_410: bool,
}

/// One page, parsed completely before anything is written.
struct Page {
    upserts: Vec<EntraDevice>,
    removals: Vec<(String, bool)>,
    partial: Vec<String>,
    next: Option<String>,
    delta: Option<String>,
}

fn parse_page(v: &Value, seen_at: i64) -> Result<Page, SyncError> {
    let bad = |m: &str| SyncError::Malformed(format!("devices/delta: {m}"));
    let items = v
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no value array"))?;
    let mut page = Page {
        upserts: Vec::new(),
        removals: Vec::new(),
        partial: Vec::new(),
        next: None,
        delta: None,
    };
    for item in items {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("an object without id"))?
            .to_string();
        if let Some(removed) = item.get("@removed") {
            let purge = removed.get("reason").and_then(Value::as_str) == Some("deleted");
            page.removals.push((id, purge));
            continue;
        }
        let Some(device_id) = item.get("deviceId").and_then(Value::as_str) else {
            // Delta may send only the changed properties: re-read the whole object.
            page.partial.push(id);
            continue;
        };
        page.upserts.push(device_from(item, id, device_id, seen_at));
    }
    page.next = v.get("@odata.nextLink").and_then(Value::as_str).map(str::to_string);
    page.delta = v.get("@odata.deltaLink").and_then(Value::as_str).map(str::to_string);
    if page.next.is_none() && page.delta.is_none() {
        return Err(bad("a page with neither nextLink nor deltaLink"));
    }
    Ok(page)
}

fn device_from(item: &Value, id: String, device_id: &str, seen_at: i64) -> EntraDevice {
    let s = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
    let b = |k: &str| item.get(k).and_then(Value::as_bool);
    EntraDevice {
        device_id: device_id.to_ascii_lowercase(),
        object_id: id,
        display_name: s("displayName"),
        account_enabled: b("accountEnabled"),
        is_compliant: b("isCompliant"),
        is_managed: b("isManaged"),
        trust_type: s("trustType"),
        operating_system: s("operatingSystem"),
        os_version: s("operatingSystemVersion"),
        compliance_expiration: super::parse_time(item.get("complianceExpirationDateTime")),
        last_sign_in: super::parse_time(item.get("approximateLastSignInDateTime")),
        removed: false,
        seen_at,
    }
}

/// Runs one delta round (or more pages of an interrupted one) to its delta link.
pub async fn sync<S: InventoryWriter + SyncState + ?Sized>(
    graph: &GraphClient,
    store: &S,
    page_size: u32,
) -> Result<EntraStats, SyncError> {
    let initial = format!("{}/v1.0/devices/delta?$select={SELECT}&$top={page_size}", graph.base);
    let mut stats = EntraStats::default();
    let mut url = match store.cursor(SOURCE).await? {
        Some(c) => c,
        None => {
            stats.full = true;
            initial.clone()
        }
    };
    let round_started = base::time::unix_now_i64();
    loop {
        let value = match graph.get(&url).await {
            Ok(v) => v,
            Err(GraphError::Gone) if !stats.resynced_after_410 => {
                tracing::warn!("Entra delta token expired (410): starting a full resync");
                store.set_cursor(SOURCE, None).await?;
                stats.resynced_after_410 = true;
                stats.full = true;
                url = initial.clone();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let seen_at = base::time::unix_now_i64();
        let mut page = parse_page(&value, seen_at)?;
        for id in std::mem::take(&mut page.partial) {
            let full = graph.get(&format!("/v1.0/devices/{id}?$select={SELECT}")).await?;
            let device_id = full
                .get("deviceId")
                .and_then(Value::as_str)
                .ok_or_else(|| SyncError::Malformed(format!("device {id} has no deviceId")))?;
            page.upserts.push(device_from(&full, id.clone(), device_id, seen_at));
        }
        store.upsert_entra_devices(&page.upserts).await?;
        for (id, purge) in &page.removals {
            store.remove_entra_device(id, *purge).await?;
        }
        stats.pages += 1;
        stats.upserted += page.upserts.len() as u64;
        stats.removed += page.removals.len() as u64;
        // The cursor moves only now that the page is in the store.
        match (page.next, page.delta) {
            (Some(next), _) => {
                store.set_cursor(SOURCE, Some(&next)).await?;
                url = next;
            }
            (None, Some(delta)) => {
                store.set_cursor(SOURCE, Some(&delta)).await?;
                break;
            }
            (None, None) => return Err(SyncError::Malformed("page without links".into())),
        }
    }
    if stats.full {
        stats.swept = store.sweep_entra(round_started).await?.len() as u64;
    }
    Ok(stats)
}
