//! A device's compliance posture as the decision sees it: a state, the source that decided it,
//! and how old the evidence is. Computed from store rows by `device::posture`.

/// The state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostureState {
    Compliant,
    /// Non-compliant but in Intune's grace period until this time (Unix seconds).
    InGrace {
        until: u64,
    },
    NonCompliant {
        reasons: Vec<String>,
    },
    /// Jamf or Intune knows the computer but Entra does not (or the registration was
    /// deactivated); `jamf_managed` tells which landing step applies.
    NotRegistered {
        jamf_managed: bool,
    },
    /// Entra `accountEnabled = false`.
    Disabled,
    /// No source knows the device.
    Unknown,
    /// macOS older than 10.11, or a network account.
    Unsupported {
        reason: String,
    },
}

impl PostureState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Compliant => "compliant",
            Self::InGrace { .. } => "in_grace",
            Self::NonCompliant { .. } => "noncompliant",
            Self::NotRegistered { .. } => "not_registered",
            Self::Disabled => "disabled",
            Self::Unknown => "unknown",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// Which record decided the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceSource {
    EntraDevice,
    IntuneManagedDevice,
    JamfInventory,
    None,
}

impl EvidenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EntraDevice => "entra",
            Self::IntuneManagedDevice => "intune",
            Self::JamfInventory => "jamf",
            Self::None => "none",
        }
    }
}

/// The posture of one device. Kept small: the gateway caches one per device it has seen (a
/// million of them fit in its memory budget); the device id is the cache's key, not a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    pub state: PostureState,
    pub source: EvidenceSource,
    /// When the evidence was last confirmed by a sync (Unix seconds).
    pub as_of: u64,
    /// The Jamf computer name, when known (shown on landing pages).
    pub computer_name: Option<Box<str>>,
}
