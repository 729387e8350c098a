//! Enrichment from Intune: `/deviceManagement/managedDevices` (compliance state with its seven
//! values, grace period end, management agent, last sync), listed in full each run. A 403
//! (no permission, no licence) is reported, not fatal: Entra stays the source of truth.

use serde_json::Value;

use super::graph::{GraphClient, GraphError};
use super::SyncError;
use store::{ComplianceState, InventoryWriter, ManagedDevice, SyncState};

pub const SOURCE: &str = "intune";
const SELECT: &str = "id,azureADDeviceId,complianceState,complianceGracePeriodExpirationDateTime,managementAgent,\
lastSyncDateTime,serialNumber,userPrincipalName";

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntuneStats {
    pub devices: u64,
    pub swept: u64,
    /// Set when Graph refused (403): the reason.
    pub not_permitted: Option<String>,
}

pub async fn sync<S: InventoryWriter + SyncState + ?Sized>(
    graph: &GraphClient,
    store: &S,
) -> Result<IntuneStats, SyncError> {
    let started = base::time::unix_now_i64();
    let mut url = format!(
        "{}/v1.0/deviceManagement/managedDevices?$select={SELECT}&$top=999",
        graph.base
    );
    let mut stats = IntuneStats::default();
    loop {
        let v = match graph.get(&url).await {
            Ok(v) => v,
            Err(GraphError::Forbidden(why)) => {
                tracing::warn!(%why, "Intune managed devices are not readable (permission or licence); continuing with Entra only");
                stats.not_permitted = Some(why);
                return Ok(stats);
            }
            Err(e) => return Err(e.into()),
        };
        let items = v
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| SyncError::Malformed("managedDevices: no value array".into()))?;
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            let s = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
            let id = s("id").ok_or_else(|| SyncError::Malformed("managedDevices: an object without id".into()))?;
            let state =
                ComplianceState::parse(item.get("complianceState").and_then(Value::as_str).unwrap_or("unknown"));
            rows.push(ManagedDevice {
                intune_id: id,
                azure_ad_device_id: s("azureADDeviceId")
                    .filter(|d| !d.is_empty() && d != "00000000-0000-0000-0000-000000000000"),
                compliance_state: state,
                grace_end: super::parse_time(item.get("complianceGracePeriodExpirationDateTime")),
                management_agent: s("managementAgent"),
                last_sync: super::parse_time(item.get("lastSyncDateTime")),
                serial: s("serialNumber"),
                upn: s("userPrincipalName"),
                seen_at: started,
            });
        }
        store.upsert_managed_devices(&rows).await?;
        stats.devices += rows.len() as u64;
        match v.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    stats.swept = store.sweep_managed(started).await?;
    Ok(stats)
}
