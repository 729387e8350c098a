//! Rows to model values, one implementation for every backend: the column names and types are
//! the same in SQLite and PostgreSQL (text, 64-bit integers, booleans), so the mappers are
//! written once and instantiated per backend's row type.

/// Defines `entra_row`, `managed_row`, `computer_row`, `account_row` and `job_row` for a row type.
macro_rules! row_mappers {
    ($row:ty) => {
        fn entra_row(r: &$row) -> Result<EntraDevice, StoreError> {
            Ok(EntraDevice {
                device_id: r.try_get("device_id")?,
                object_id: r.try_get("object_id")?,
                display_name: r.try_get("display_name")?,
                account_enabled: r.try_get("account_enabled")?,
                is_compliant: r.try_get("is_compliant")?,
                is_managed: r.try_get("is_managed")?,
                trust_type: r.try_get("trust_type")?,
                operating_system: r.try_get("operating_system")?,
                os_version: r.try_get("os_version")?,
                compliance_expiration: r.try_get("compliance_expiration")?,
                last_sign_in: r.try_get("last_sign_in")?,
                removed: r.try_get("removed")?,
                seen_at: r.try_get("seen_at")?,
            })
        }

        fn managed_row(r: &$row) -> Result<ManagedDevice, StoreError> {
            let state: String = r.try_get("compliance_state")?;
            Ok(ManagedDevice {
                intune_id: r.try_get("intune_id")?,
                azure_ad_device_id: r.try_get("azure_ad_device_id")?,
                compliance_state: ComplianceState::parse(&state),
                grace_end: r.try_get("grace_end")?,
                management_agent: r.try_get("management_agent")?,
                last_sync: r.try_get("last_sync")?,
                serial: r.try_get("serial")?,
                upn: r.try_get("upn")?,
                seen_at: r.try_get("seen_at")?,
            })
        }

        fn computer_row(r: &$row) -> Result<Computer, StoreError> {
            Ok(Computer {
                jamf_id: r.try_get("jamf_id")?,
                udid: r.try_get("udid")?,
                serial: r.try_get("serial")?,
                name: r.try_get("name")?,
                model: r.try_get("model")?,
                os_version: r.try_get("os_version")?,
                os_build: r.try_get("os_build")?,
                managed: r.try_get("managed")?,
                filevault: r.try_get("filevault")?,
                last_inventory: r.try_get("last_inventory")?,
                last_contact: r.try_get("last_contact")?,
                seen_at: r.try_get("seen_at")?,
                accounts: Vec::new(),
            })
        }

        fn account_row(r: &$row) -> Result<LocalAccount, StoreError> {
            let kind: String = r.try_get("account_type")?;
            let reg: String = r.try_get("registration")?;
            Ok(LocalAccount {
                username: r.try_get("username")?,
                account_type: AccountType::parse(&kind).ok_or_else(|| StoreError::UnknownValue {
                    column: "local_accounts.account_type",
                    value: kind.clone(),
                })?,
                entra_user_id: r.try_get("entra_user_id")?,
                entra_device_id: r.try_get("entra_device_id")?,
                registration: RegistrationState::parse(&reg),
            })
        }

        fn job_row(r: &$row) -> Result<Job, StoreError> {
            let status: String = r.try_get("status")?;
            Ok(Job {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                status: JobStatus::parse(&status).ok_or_else(|| StoreError::UnknownValue {
                    column: "jobs.status",
                    value: status.clone(),
                })?,
                node: r.try_get("node")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                computer: r.try_get("computer")?,
                result: r.try_get("result")?,
            })
        }
    };
}

pub(crate) use row_mappers;
