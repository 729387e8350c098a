//! Turning store rows into a [`Posture`] (reference "Design implications" 10): only an
//! enabled Entra device with `isCompliant = true` (and compliance not expired) is compliant;
//! Intune's grace period lets a device through until it ends; a computer Jamf knows without a
//! usable Entra registration is "not registered"; network accounts and macOS older than 10.11
//! are unsupported; anything unclear is non-compliant, with the reasons known.

use policy::{EvidenceSource, Posture, PostureState};
use store::{AccountType, ComplianceState, DeviceEvidence, RegistrationState};

/// `None` when no source knows the device at all.
pub fn posture_from(e: &DeviceEvidence, now: i64) -> Option<Posture> {
    if e.entra.is_none() && e.intune.is_none() && e.jamf.is_none() {
        return None;
    }
    let computer_name: Option<Box<str>> = e.jamf.as_ref().and_then(|(c, _)| c.name.as_deref().map(Box::from));
    let as_of = |seen: i64, sync: Option<i64>| seen.max(sync.unwrap_or(0)).max(0) as u64;
    let entra_as_of = e.entra.as_ref().map(|d| as_of(d.seen_at, e.last_sync.entra));
    let jamf_as_of = e.jamf.as_ref().map(|(c, _)| as_of(c.seen_at, e.last_sync.jamf));
    let intune_as_of = e.intune.as_ref().map(|m| as_of(m.seen_at, e.last_sync.intune));
    let make = |state, source, as_of: Option<u64>| Posture {
        state,
        source,
        as_of: as_of.unwrap_or(0),
        computer_name: computer_name.clone(),
    };

    if let Some((c, acct)) = &e.jamf {
        if acct.account_type == AccountType::Network {
            let reason = format!(
                "{} is a network account; only local and mobile accounts are supported",
                acct.username
            );
            return Some(make(
                PostureState::Unsupported { reason },
                EvidenceSource::JamfInventory,
                jamf_as_of,
            ));
        }
        if let Some(v) = c.os_version.as_deref().filter(|v| macos_older_than_10_11(v)) {
            let reason = format!("macOS {v} is older than 10.11");
            return Some(make(
                PostureState::Unsupported { reason },
                EvidenceSource::JamfInventory,
                jamf_as_of,
            ));
        }
    }
    let jamf_managed = e.jamf.as_ref().is_some_and(|(c, _)| c.managed);
    let deactivated = e
        .jamf
        .as_ref()
        .is_some_and(|(_, a)| a.registration == RegistrationState::Deactivated);
    let entra = match &e.entra {
        Some(d) if !d.removed && !deactivated => d,
        Some(_) | None => {
            let (source, at) = match (jamf_as_of, intune_as_of) {
                (Some(t), _) => (EvidenceSource::JamfInventory, Some(t)),
                (None, Some(t)) => (EvidenceSource::IntuneManagedDevice, Some(t)),
                (None, None) => (EvidenceSource::EntraDevice, entra_as_of),
            };
            return Some(make(PostureState::NotRegistered { jamf_managed }, source, at));
        }
    };
    if entra.account_enabled == Some(false) {
        return Some(make(PostureState::Disabled, EvidenceSource::EntraDevice, entra_as_of));
    }
    if let Some(m) = &e.intune {
        if let (ComplianceState::InGracePeriod, Some(until)) = (m.compliance_state, m.grace_end) {
            let at = entra_as_of.max(intune_as_of);
            return Some(make(
                PostureState::InGrace {
                    until: until.max(0) as u64,
                },
                EvidenceSource::IntuneManagedDevice,
                at,
            ));
        }
    }
    let expired = entra.compliance_expiration.is_some_and(|t| t <= now);
    if entra.is_compliant == Some(true) && !expired {
        return Some(make(PostureState::Compliant, EvidenceSource::EntraDevice, entra_as_of));
    }
    let mut reasons = Vec::new();
    match entra.is_compliant {
        Some(true) if expired => reasons.push("the device's compliance has expired".to_string()),
        Some(true) => {}
        Some(false) => reasons.push("Entra ID reports this device as not compliant".to_string()),
        None => reasons.push("no compliance state has been reported for this device".to_string()),
    }
    if let Some(m) = &e.intune {
        match m.compliance_state {
            ComplianceState::Compliant | ComplianceState::InGracePeriod => {}
            ComplianceState::Noncompliant => reasons.push("Intune: not compliant with its compliance policies".into()),
            ComplianceState::Conflict => reasons.push("Intune: conflicting compliance policies".into()),
            ComplianceState::Error => reasons.push("Intune: compliance evaluation failed".into()),
            ComplianceState::Unknown => reasons.push("Intune: compliance state unknown".into()),
            ComplianceState::ConfigManager => {
                reasons.push("Intune: compliance managed by Configuration Manager".into())
            }
        }
    }
    if let Some((c, a)) = &e.jamf {
        if c.filevault
            .as_deref()
            .is_some_and(|f| f != "ALL_ENCRYPTED" && f != "BOOT_ENCRYPTED")
        {
            reasons.push("FileVault disk encryption is not complete".into());
        }
        if a.registration == RegistrationState::Unresponsive {
            reasons.push("the Entra registration stopped responding: re-register from Self Service".into());
        }
    }
    Some(make(
        PostureState::NonCompliant { reasons },
        EvidenceSource::EntraDevice,
        entra_as_of,
    ))
}

/// `10.10.5` → true; `10.11`, `11.2`, `14.5` → false; unparsable → false (not our call).
pub fn macos_older_than_10_11(v: &str) -> bool {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => major < 10 || (major == 10 && minor < 11),
        (Some(Ok(major)), None) => major < 10,
        (Some(Ok(_)), Some(Err(_))) | (Some(Err(_)), _) | (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Computer, EntraDevice, LocalAccount, ManagedDevice, SourceTimes};

    fn entra(compliant: Option<bool>) -> EntraDevice {
        EntraDevice {
            device_id: "d".into(),
            object_id: "o".into(),
            display_name: None,
            account_enabled: Some(true),
            is_compliant: compliant,
            is_managed: Some(true),
            trust_type: None,
            operating_system: None,
            os_version: None,
            compliance_expiration: None,
            last_sign_in: None,
            removed: false,
            seen_at: 100,
        }
    }

    fn jamf(kind: AccountType, reg: RegistrationState, os: &str) -> (Computer, LocalAccount) {
        (
            Computer {
                jamf_id: "1".into(),
                udid: None,
                serial: None,
                name: Some("Carol's Mac".into()),
                model: None,
                os_version: Some(os.into()),
                os_build: None,
                managed: true,
                filevault: Some("ALL_ENCRYPTED".into()),
                last_inventory: None,
                last_contact: None,
                seen_at: 50,
                accounts: vec![],
            },
            LocalAccount {
                username: "carol".into(),
                account_type: kind,
                entra_user_id: None,
                entra_device_id: Some("d".into()),
                registration: reg,
            },
        )
    }

    fn ev(
        entra: Option<EntraDevice>,
        intune: Option<ManagedDevice>,
        jamf: Option<(Computer, LocalAccount)>,
    ) -> DeviceEvidence {
        DeviceEvidence {
            entra,
            intune,
            jamf,
            last_sync: SourceTimes {
                entra: Some(500),
                intune: None,
                jamf: None,
            },
        }
    }

    fn state(e: &DeviceEvidence) -> PostureState {
        posture_from(e, 1_000).unwrap().state
    }

    #[test]
    fn states_from_evidence() {
        assert!(posture_from(&DeviceEvidence::default(), 0).is_none());
        let p = posture_from(&ev(Some(entra(Some(true))), None, None), 1_000).unwrap();
        assert_eq!(
            (p.state, p.as_of),
            (PostureState::Compliant, 500),
            "as_of includes the last sync"
        );
        assert!(matches!(
            state(&ev(Some(entra(Some(false))), None, None)),
            PostureState::NonCompliant { .. }
        ));
        assert!(matches!(
            state(&ev(Some(entra(None)), None, None)),
            PostureState::NonCompliant { .. }
        ));
        let mut expired = entra(Some(true));
        expired.compliance_expiration = Some(999);
        assert!(matches!(
            state(&ev(Some(expired), None, None)),
            PostureState::NonCompliant { .. }
        ));
        let mut off = entra(Some(true));
        off.account_enabled = Some(false);
        assert_eq!(state(&ev(Some(off), None, None)), PostureState::Disabled);
        let mut removed = entra(Some(true));
        removed.removed = true;
        assert_eq!(
            state(&ev(Some(removed), None, None)),
            PostureState::NotRegistered { jamf_managed: false }
        );
        let carol = jamf(AccountType::Local, RegistrationState::Unknown, "14.5");
        assert_eq!(
            state(&ev(None, None, Some(carol))),
            PostureState::NotRegistered { jamf_managed: true }
        );
        let deactivated = jamf(AccountType::Mobile, RegistrationState::Deactivated, "14.5");
        assert_eq!(
            state(&ev(Some(entra(Some(true))), None, Some(deactivated))),
            PostureState::NotRegistered { jamf_managed: true }
        );
        let network = jamf(AccountType::Network, RegistrationState::Activated, "14.5");
        assert!(matches!(
            state(&ev(Some(entra(Some(true))), None, Some(network))),
            PostureState::Unsupported { .. }
        ));
        let old = jamf(AccountType::Local, RegistrationState::Activated, "10.10.5");
        assert!(matches!(
            state(&ev(Some(entra(Some(true))), None, Some(old))),
            PostureState::Unsupported { .. }
        ));
        let grace = ManagedDevice {
            intune_id: "i".into(),
            azure_ad_device_id: Some("d".into()),
            compliance_state: ComplianceState::InGracePeriod,
            grace_end: Some(5_000),
            management_agent: Some("jamf".into()),
            last_sync: None,
            serial: None,
            upn: None,
            seen_at: 600,
        };
        let p = posture_from(&ev(Some(entra(Some(false))), Some(grace.clone()), None), 1_000).unwrap();
        assert_eq!(
            (p.state, p.source),
            (
                PostureState::InGrace { until: 5_000 },
                EvidenceSource::IntuneManagedDevice
            )
        );
        let mut conflict = grace;
        conflict.compliance_state = ComplianceState::Conflict;
        let PostureState::NonCompliant { reasons } = state(&ev(Some(entra(Some(false))), Some(conflict), None)) else {
            panic!("conflict is not compliant")
        };
        assert_eq!(reasons.len(), 2, "{reasons:?}");
    }

    #[test]
    fn macos_versions() {
        assert!(macos_older_than_10_11("10.10.5"));
        assert!(macos_older_than_10_11("9.2"));
        assert!(!macos_older_than_10_11("10.11"));
        assert!(!macos_older_than_10_11("14.5.1"));
        assert!(!macos_older_than_10_11("garbage"));
    }
}
