//! The emulated directory behind the Graph emulator: Entra device objects and Intune managed
//! devices, with a change version per object so that `/devices/delta` can answer "what changed
//! since this token" like Graph does (nextLink pages within a round, a deltaLink at its end,
//! `@removed` for deletions, 410 for expired tokens). Seeded with the personas' Macs plus any
//! number of synthetic devices (deterministic, up to 1,000,000).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::personas;

/// An Entra device object.
#[derive(Debug, Clone)]
pub struct Device {
    pub object_id: String,
    pub device_id: String,
    pub display_name: String,
    pub account_enabled: bool,
    pub is_compliant: Option<bool>,
    pub is_managed: bool,
    pub os_version: String,
    pub extension_attributes: BTreeMap<String, String>,
    /// Version of the last change.
    pub version: u64,
    /// `Some("changed" | "deleted")` once removed.
    pub removed: Option<&'static str>,
}

impl Device {
    /// A last sign-in that differs per device (deterministic: from its id), as a real tenant's do.
    fn last_sign_in(&self) -> String {
        let n: u32 = self.device_id.bytes().map(u32::from).sum();
        format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + n % 28, n % 24, (n / 24) % 60)
    }

    /// What an incremental delta round sends for an updated object: its id and the changed
    /// properties only (Graph does; a client re-reads the object for the rest). The emulator
    /// does not track which changed, so it sends the one a compliance flip changes.
    pub fn to_partial_json(&self) -> Value {
        json!({ "id": self.object_id, "isCompliant": self.is_compliant })
    }

    pub fn to_json(&self) -> Value {
        if let Some(reason) = self.removed {
            return json!({ "id": self.object_id, "@removed": { "reason": reason } });
        }
        let mut ext = serde_json::Map::new();
        for i in 1..=15 {
            let k = format!("extensionAttribute{i}");
            ext.insert(
                k.clone(),
                self.extension_attributes.get(&k).map_or(Value::Null, |v| json!(v)),
            );
        }
        json!({
            "id": self.object_id,
            "deviceId": self.device_id,
            "displayName": self.display_name,
            "accountEnabled": self.account_enabled,
            "isCompliant": self.is_compliant,
            "isManaged": self.is_managed,
            "trustType": "Workplace",
            "operatingSystem": "MacMDM",
            "operatingSystemVersion": self.os_version,
            "approximateLastSignInDateTime": self.last_sign_in(),
            "complianceExpirationDateTime": null,
            "extensionAttributes": ext,
        })
    }
}

/// An Intune managed device.
#[derive(Debug, Clone)]
pub struct ManagedDevice {
    pub id: String,
    pub azure_ad_device_id: String,
    pub compliance_state: &'static str,
    /// RFC 3339.
    pub grace_end: Option<String>,
    pub serial: String,
    pub upn: String,
}

impl ManagedDevice {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "azureADDeviceId": self.azure_ad_device_id,
            "complianceState": self.compliance_state,
            "complianceGracePeriodExpirationDateTime": self.grace_end.clone().unwrap_or_else(|| "9999-12-31T23:59:59Z".into()),
            "managementAgent": "jamf",
            "lastSyncDateTime": "2026-11-26T08:00:00Z",
            "serialNumber": self.serial,
            "userPrincipalName": self.upn,
            "operatingSystem": "macOS",
            "osVersion": "14.5",
            "deviceName": format!("{}'s Mac", self.upn),
        })
    }
}

/// The directory.
#[derive(Debug, Default)]
pub struct Directory {
    /// By object id.
    pub devices: BTreeMap<String, Device>,
    pub managed: Vec<ManagedDevice>,
    pub version: u64,
    /// Bumped to invalidate every delta token (410 on their next use).
    pub generation: u64,
}

impl Directory {
    /// The personas' registered Macs plus `synthetic` generated devices.
    pub fn seeded(synthetic: usize) -> Self {
        let mut d = Self::default();
        for p in personas::all() {
            let (Some(device), compliant) = (p.device_id, matches!(p.name, "alice" | "olivia")) else {
                continue;
            };
            if p.name == "carol" || p.name == "dave" {
                continue;
            }
            d.insert(Device {
                object_id: format!("0b{}", &device[2..]),
                device_id: device.to_string(),
                display_name: format!("{}'s MacBook Pro", p.display_name.split(' ').next().unwrap_or(p.name)),
                account_enabled: true,
                is_compliant: Some(compliant),
                is_managed: true,
                os_version: "14.5".into(),
                extension_attributes: BTreeMap::new(),
                version: 0,
                removed: None,
            });
            if p.name == "erin" {
                d.managed.push(ManagedDevice {
                    id: "1e000000-0000-4000-8000-00000000000e".into(),
                    azure_ad_device_id: device.to_string(),
                    compliance_state: "inGracePeriod",
                    grace_end: Some(
                        humantime::format_rfc3339_seconds(
                            std::time::SystemTime::now() + std::time::Duration::from_secs(3 * 86_400),
                        )
                        .to_string(),
                    ),
                    serial: super::fixtures::serial(p.name),
                    upn: p.upn(),
                });
            }
        }
        for i in 0..synthetic {
            let i = i as u64;
            d.insert(Device {
                object_id: format!("0c000000-0000-4000-8000-{i:012x}"),
                device_id: format!("dc000000-0000-4000-8000-{i:012x}"),
                display_name: format!("MAC-{i:07}"),
                account_enabled: !i.is_multiple_of(97),
                is_compliant: Some(!i.is_multiple_of(7)),
                is_managed: true,
                os_version: "14.5".into(),
                extension_attributes: BTreeMap::new(),
                version: 0,
                removed: None,
            });
        }
        d
    }

    pub fn insert(&mut self, mut device: Device) {
        self.version += 1;
        device.version = self.version;
        self.devices.insert(device.object_id.clone(), device);
    }

    /// Applies `f` to the device with this `deviceId`; false when there is none.
    pub fn update_by_device_id(&mut self, device_id: &str, f: impl FnOnce(&mut Device)) -> bool {
        let id = device_id.to_ascii_lowercase();
        let Some(d) = self
            .devices
            .values_mut()
            .find(|d| d.device_id == id && d.removed.is_none())
        else {
            return false;
        };
        f(d);
        self.version += 1;
        d.version = self.version;
        true
    }

    pub fn remove(&mut self, object_id: &str, reason: &'static str) -> bool {
        let Some(d) = self.devices.get_mut(object_id) else {
            return false;
        };
        d.removed = Some(reason);
        self.version += 1;
        d.version = self.version;
        true
    }

    /// Objects changed after `since` (all live ones when `since` is 0), in object-id order,
    /// from position `offset`; at most `top`.
    /// With `partial`, a later round (`since` > 0) sends live objects as [`Device::to_partial_json`].
    pub fn changes(&self, since: u64, offset: usize, top: usize, partial: bool) -> (Vec<Value>, bool) {
        let mut it = self
            .devices
            .values()
            .filter(|d| {
                if since == 0 {
                    d.removed.is_none()
                } else {
                    d.version > since
                }
            })
            .skip(offset);
        let page: Vec<Value> = it
            .by_ref()
            .take(top)
            .map(|d| match (partial && since > 0, d.removed) {
                (true, None) => d.to_partial_json(),
                (true, Some(_)) | (false, _) => d.to_json(),
            })
            .collect();
        let more = it.next().is_some();
        (page, more)
    }
}
