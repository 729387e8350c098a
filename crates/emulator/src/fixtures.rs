//! The demo personas' devices as rows of the store's model (DESIGN.md §8), as the sync loop would
//! write them from the emulated Graph and Jamf Pro; the emulated Jamf Pro serves its inventory
//! from them. Nothing here opens or writes a store: alice compliant, bob not compliant, carol's Mac managed by Jamf
//! but not registered, dave unknown everywhere, erin in Intune's grace period, olivia compliant.

use super::personas;
use store::{
    AccountType, ComplianceState, Computer, EntraDevice, LocalAccount, ManagedDevice, RegistrationState, SyncRun,
};

/// Rows for every persona, confirmed at `now` (Unix seconds).
pub struct PersonaRows {
    pub entra: Vec<EntraDevice>,
    pub intune: Vec<ManagedDevice>,
    pub jamf: Vec<Computer>,
    /// Successful runs of each source at `now`.
    pub runs: Vec<SyncRun>,
}

pub fn persona_rows(now: i64) -> PersonaRows {
    let mut entra = Vec::new();
    let mut intune = Vec::new();
    let mut jamf = Vec::new();
    for (i, p) in personas::all().iter().enumerate() {
        let jamf_id = format!("{}", 101 + i);
        let (registered, compliant, managed) = match p.name {
            "alice" | "olivia" => (true, Some(true), true),
            "bob" => (true, Some(false), true),
            "carol" => (false, None, true),
            "erin" => (true, Some(false), true),
            _ => (false, None, false),
        };
        if let (true, Some(device)) = (registered, p.device_id) {
            entra.push(EntraDevice {
                device_id: device.to_string(),
                object_id: format!("0b{}", &device[2..]),
                display_name: Some(format!(
                    "{}'s MacBook Pro",
                    p.display_name.split(' ').next().unwrap_or(p.name)
                )),
                account_enabled: Some(true),
                is_compliant: compliant,
                is_managed: Some(true),
                trust_type: Some("Workplace".into()),
                operating_system: Some("MacMDM".into()),
                os_version: Some("14.5".into()),
                compliance_expiration: None,
                last_sign_in: Some(now - 3600),
                removed: false,
                seen_at: now,
            });
        }
        if p.name == "erin" {
            intune.push(ManagedDevice {
                intune_id: "1e000000-0000-4000-8000-00000000000e".into(),
                azure_ad_device_id: p.device_id.map(str::to_string),
                compliance_state: ComplianceState::InGracePeriod,
                grace_end: Some(now + 3 * 86_400),
                management_agent: Some("jamf".into()),
                last_sync: Some(now - 600),
                serial: Some(serial(p.name)),
                upn: Some(p.upn()),
                seen_at: now,
            });
        }
        if managed {
            jamf.push(Computer {
                jamf_id,
                udid: Some(format!("0000FE00-{:04X}-4000-8000-00000000{:04X}", i, i)),
                serial: Some(serial(p.name)),
                name: Some(format!(
                    "{}'s MacBook Pro",
                    p.display_name.split(' ').next().unwrap_or(p.name)
                )),
                model: Some("MacBook Pro (14-inch, 2023)".into()),
                os_version: Some("14.5".into()),
                os_build: Some("23F79".into()),
                managed: true,
                filevault: Some(
                    if p.name == "bob" {
                        "NOT_ENCRYPTED"
                    } else {
                        "ALL_ENCRYPTED"
                    }
                    .into(),
                ),
                last_inventory: Some(now - 7200),
                last_contact: Some(now - 300),
                seen_at: now,
                accounts: vec![LocalAccount {
                    username: p.name.to_string(),
                    account_type: AccountType::Local,
                    entra_user_id: Some(p.object_id.to_string()),
                    entra_device_id: if registered {
                        p.device_id.map(str::to_string)
                    } else {
                        None
                    },
                    registration: if registered {
                        RegistrationState::Activated
                    } else {
                        RegistrationState::Unknown
                    },
                }],
            });
        }
    }
    let runs = ["entra", "intune", "jamf"]
        .iter()
        .map(|s| SyncRun {
            source: s.to_string(),
            finished_at: now,
            ok: true,
            error: None,
            detail: "{\"fixture\":true}".into(),
        })
        .collect();
    PersonaRows {
        entra,
        intune,
        jamf,
        runs,
    }
}

/// The persona's Mac serial number, e.g. `C02ALICE0001`.
pub fn serial(name: &str) -> String {
    format!("C02{:0<5}0001", name.to_ascii_uppercase())
        .chars()
        .take(12)
        .collect()
}
