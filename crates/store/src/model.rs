//! The rows of the store, as typed values. Times are Unix seconds (UTC).

use serde::{Deserialize, Serialize};

/// An Entra ID device object (Graph `/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntraDevice {
    /// `deviceId`, lower case: the join key.
    pub device_id: String,
    /// Directory object `id` (what delta's `@removed` names).
    pub object_id: String,
    pub display_name: Option<String>,
    pub account_enabled: Option<bool>,
    pub is_compliant: Option<bool>,
    pub is_managed: Option<bool>,
    pub trust_type: Option<String>,
    pub operating_system: Option<String>,
    pub os_version: Option<String>,
    pub compliance_expiration: Option<i64>,
    pub last_sign_in: Option<i64>,
    /// Soft-deleted in Entra.
    pub removed: bool,
    /// When a sync last confirmed this row.
    pub seen_at: i64,
}

/// Intune's `complianceState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ComplianceState {
    Unknown,
    Compliant,
    Noncompliant,
    Conflict,
    Error,
    InGracePeriod,
    ConfigManager,
}

impl ComplianceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Compliant => "compliant",
            Self::Noncompliant => "noncompliant",
            Self::Conflict => "conflict",
            Self::Error => "error",
            Self::InGracePeriod => "inGracePeriod",
            Self::ConfigManager => "configManager",
        }
    }

    /// Unknown values (a future enum member) read as `Unknown`, which never allows.
    pub fn parse(s: &str) -> Self {
        match s {
            "compliant" => Self::Compliant,
            "noncompliant" => Self::Noncompliant,
            "conflict" => Self::Conflict,
            "error" => Self::Error,
            "inGracePeriod" => Self::InGracePeriod,
            "configManager" => Self::ConfigManager,
            _ => Self::Unknown,
        }
    }
}

/// An Intune managed device (Graph `/deviceManagement/managedDevices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManagedDevice {
    pub intune_id: String,
    /// `azureADDeviceId` = Entra `deviceId`, lower case.
    pub azure_ad_device_id: Option<String>,
    pub compliance_state: ComplianceState,
    pub grace_end: Option<i64>,
    pub management_agent: Option<String>,
    pub last_sync: Option<i64>,
    pub serial: Option<String>,
    pub upn: Option<String>,
    pub seen_at: i64,
}

/// Kind of a macOS user account in Jamf inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AccountType {
    Local,
    Mobile,
    Network,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "LOCAL",
            Self::Mobile => "MOBILE",
            Self::Network => "NETWORK",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "LOCAL" => Some(Self::Local),
            "MOBILE" => Some(Self::Mobile),
            "NETWORK" => Some(Self::Network),
            _ => None,
        }
    }
}

/// Jamf's Entra registration state of a user on a computer (`azureActiveDirectoryId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RegistrationState {
    Activated,
    Deactivated,
    Unresponsive,
    Unknown,
}

impl RegistrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activated => "ACTIVATED",
            Self::Deactivated => "DEACTIVATED",
            Self::Unresponsive => "UNRESPONSIVE",
            Self::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "ACTIVATED" => Self::Activated,
            "DEACTIVATED" => Self::Deactivated,
            "UNRESPONSIVE" => Self::Unresponsive,
            _ => Self::Unknown,
        }
    }
}

/// A user account on a Jamf computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAccount {
    pub username: String,
    pub account_type: AccountType,
    /// `userAzureActiveDirectoryId`: the user's Entra object id.
    pub entra_user_id: Option<String>,
    /// `computerAzureActiveDirectoryId`: the Entra device id this user registered.
    pub entra_device_id: Option<String>,
    pub registration: RegistrationState,
}

/// A computer in Jamf Pro inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computer {
    pub jamf_id: String,
    pub udid: Option<String>,
    pub serial: Option<String>,
    pub name: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub os_build: Option<String>,
    pub managed: bool,
    pub filevault: Option<String>,
    pub last_inventory: Option<i64>,
    pub last_contact: Option<i64>,
    pub seen_at: i64,
    pub accounts: Vec<LocalAccount>,
}

/// Everything the store knows about one Entra device id, from every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceEvidence {
    pub entra: Option<EntraDevice>,
    pub intune: Option<ManagedDevice>,
    /// The Jamf computer whose user account carries this device id, and that account.
    pub jamf: Option<(Computer, LocalAccount)>,
    /// Last successful sync per source (`entra`, `intune`, `jamf`), Unix seconds.
    pub last_sync: SourceTimes,
}

/// When each source last synced successfully.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceTimes {
    pub entra: Option<i64>,
    pub intune: Option<i64>,
    pub jamf: Option<i64>,
}

/// One finished sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SyncRun {
    pub source: String,
    pub finished_at: i64,
    pub ok: bool,
    pub error: Option<String>,
    /// JSON with counts and details.
    pub detail: String,
}

/// What was sent to Microsoft for one computer and user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub jamf_id: String,
    pub username: String,
    pub entra_device_id: Option<String>,
    pub sent_at: i64,
    /// JSON of the attributes sent.
    pub payload: String,
    /// `ok`, or the error.
    pub result: String,
}

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    /// JSON with secrets masked.
    pub detail: String,
}

/// A lease held: its name, holder and term (the fencing token of the holder's writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub term: i64,
}

/// Where a background job (Send Update) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
    /// The node running it stopped before it finished (found so when that node started again).
    Interrupted,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "interrupted" => Some(Self::Interrupted),
            _ => None,
        }
    }
}

/// A background job started through the admin API, in the store so that every node can
/// report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    /// What it does: `send_update`.
    pub kind: String,
    pub status: JobStatus,
    /// The node that runs it.
    pub node: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The one computer it is about; `None`: every computer.
    pub computer: Option<String>,
    /// Its outcome as JSON, once finished.
    pub result: Option<String>,
}
