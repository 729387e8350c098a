//! The access decision, as a pure function: [`decide`] takes the route's policy, what is known
//! about the user and the device, and the current time, and returns a [`Decision`] with a
//! reason code. No I/O, no async, no clock reads; depends on std only. Every row of the
//! decision table (DESIGN.md §2) is a case in the tests below.

mod posture;

pub use posture::{EvidenceSource, Posture, PostureState};

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// Nobody is asked anything (an explicit, logged fail-open).
    Nothing,
    /// A signed-in user.
    Authenticated,
    /// A signed-in user on a device registered with Entra (compliance not required).
    RegisteredDevice,
    /// A signed-in user on a compliant device (the default).
    CompliantDevice,
}

impl Require {
    /// Every value, in the order the configuration documents them.
    pub const ALL: [Self; 4] = [
        Self::CompliantDevice,
        Self::RegisteredDevice,
        Self::Authenticated,
        Self::Nothing,
    ];

    /// The configuration's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nothing => "none",
            Self::Authenticated => "authenticated",
            Self::RegisteredDevice => "registered_device",
            Self::CompliantDevice => "compliant_device",
        }
    }
}

/// What to do when the posture data is older than `max_posture_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    Deny,
    /// Use the last known posture (logged as `posture_stale`).
    AllowLastKnown,
}

impl OnStale {
    /// Every value, in the order the configuration documents them.
    pub const ALL: [Self; 2] = [Self::Deny, Self::AllowLastKnown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowLastKnown => "allow_last_known",
        }
    }
}

/// Enforce, or only report what enforcement would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    ReportOnly,
}

impl Mode {
    /// Every value, in the order the configuration documents them.
    pub const ALL: [Self; 2] = [Self::Enforce, Self::ReportOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::ReportOnly => "report_only",
        }
    }
}

/// A route's access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub require: Require,
    pub allow_grace_period: bool,
    /// Seconds.
    pub max_posture_age: u64,
    pub on_stale: OnStale,
    pub mode: Mode,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            require: Require::CompliantDevice,
            allow_grace_period: true,
            max_posture_age: 24 * 3600,
            on_stale: OnStale::Deny,
            mode: Mode::Enforce,
        }
    }
}

/// The user, as far as authentication got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// No credential at all.
    Anonymous,
    /// A credential that failed validation.
    InvalidCredential,
    Authenticated,
}

/// The outcome of the route's group requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    NotRequired,
    Member,
    NotMember,
    /// Overage that Graph could not resolve.
    Unresolved,
}

impl Groups {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequired => "not_required",
            Self::Member => "member",
            Self::NotMember => "not_member",
            Self::Unresolved => "unresolved",
        }
    }
}

/// Where the device identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSource {
    TokenClaim,
    ClientCertificate,
    Session,
}

impl DeviceSource {
    /// Every value, in the order the configuration documents them.
    pub const ALL: [Self; 3] = [Self::TokenClaim, Self::ClientCertificate, Self::Session];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenClaim => "token",
            Self::ClientCertificate => "certificate",
            Self::Session => "session",
        }
    }
}

/// What is known about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device<'a> {
    /// The request identifies no device.
    Unidentified,
    /// Identified; `posture` is `None` when the store has no record of the id.
    Identified {
        source: DeviceSource,
        posture: Option<&'a Posture>,
    },
    /// The posture could not be read (store unavailable): never allows.
    Unavailable { source: DeviceSource },
}

/// Everything `decide` looks at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub user: User,
    pub groups: Groups,
    pub device: Device<'a>,
    /// Unix seconds.
    pub now: u64,
}

/// Why the decision is what it is; the stable codes of DESIGN.md §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    OpenRoute,
    Authenticated,
    Unauthenticated,
    TokenInvalid,
    GroupDenied,
    GroupsUnresolved,
    DeviceUnidentified,
    DeviceUnknown,
    DeviceNotRegistered,
    DeviceDisabled,
    DeviceNoncompliant,
    DeviceInGrace,
    DeviceRegistered,
    Compliant,
    PostureStale,
    PostureUnavailable,
    DeviceUnsupported,
}

impl Reason {
    pub const ALL: [Self; 17] = [
        Self::OpenRoute,
        Self::Authenticated,
        Self::Unauthenticated,
        Self::TokenInvalid,
        Self::GroupDenied,
        Self::GroupsUnresolved,
        Self::DeviceUnidentified,
        Self::DeviceUnknown,
        Self::DeviceNotRegistered,
        Self::DeviceDisabled,
        Self::DeviceNoncompliant,
        Self::DeviceInGrace,
        Self::DeviceRegistered,
        Self::Compliant,
        Self::PostureStale,
        Self::PostureUnavailable,
        Self::DeviceUnsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenRoute => "open_route",
            Self::Authenticated => "authenticated",
            Self::Unauthenticated => "unauthenticated",
            Self::TokenInvalid => "token_invalid",
            Self::GroupDenied => "group_denied",
            Self::GroupsUnresolved => "groups_unresolved",
            Self::DeviceUnidentified => "device_unidentified",
            Self::DeviceUnknown => "device_unknown",
            Self::DeviceNotRegistered => "device_not_registered",
            Self::DeviceDisabled => "device_disabled",
            Self::DeviceNoncompliant => "device_noncompliant",
            Self::DeviceInGrace => "device_in_grace",
            Self::DeviceRegistered => "device_registered",
            Self::Compliant => "compliant",
            Self::PostureStale => "posture_stale",
            Self::PostureUnavailable => "posture_unavailable",
            Self::DeviceUnsupported => "device_unsupported",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Which page (or status) a refused request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Sign in (browser) or 401 (API).
    SignIn,
    /// The admin's choice for devices Entra does not recognise: registration page, access
    /// denied, or a custom URL.
    Unrecognized,
    /// 403 with the non-compliance reasons.
    Remediation,
    /// 403: the device may not be used (disabled, unsupported).
    AccessDenied,
    /// 403: the user is not allowed (groups).
    Forbidden,
    /// The posture data is too old, or could not be read.
    Stale,
}

impl Landing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Unrecognized => "unrecognized",
            Self::Remediation => "remediation",
            Self::AccessDenied => "access_denied",
            Self::Forbidden => "forbidden",
            Self::Stale => "stale",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(Landing),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What happens to the request.
    pub outcome: Outcome,
    pub reason: Reason,
    /// Set in report-only mode when enforcement would have refused the request.
    pub would_deny: Option<Landing>,
}

impl Decision {
    fn allow(reason: Reason) -> Self {
        Self {
            outcome: Outcome::Allow,
            reason,
            would_deny: None,
        }
    }

    fn deny(landing: Landing, reason: Reason) -> Self {
        Self {
            outcome: Outcome::Deny(landing),
            reason,
            would_deny: None,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// The access decision for one request.
pub fn decide(policy: &RoutePolicy, facts: &Facts<'_>) -> Decision {
    let enforced = decide_enforced(policy, facts);
    match (policy.mode, enforced.outcome) {
        // Authentication is never report-only: there is no user to report on.
        (Mode::ReportOnly, Outcome::Deny(Landing::SignIn))
        | (Mode::Enforce, _)
        | (Mode::ReportOnly, Outcome::Allow) => enforced,
        (Mode::ReportOnly, Outcome::Deny(landing)) => Decision {
            outcome: Outcome::Allow,
            reason: enforced.reason,
            would_deny: Some(landing),
        },
    }
}

fn decide_enforced(policy: &RoutePolicy, f: &Facts<'_>) -> Decision {
    if policy.require == Require::Nothing {
        return Decision::allow(Reason::OpenRoute);
    }
    match f.user {
        User::Anonymous => return Decision::deny(Landing::SignIn, Reason::Unauthenticated),
        User::InvalidCredential => return Decision::deny(Landing::SignIn, Reason::TokenInvalid),
        User::Authenticated => {}
    }
    match f.groups {
        Groups::NotMember => return Decision::deny(Landing::Forbidden, Reason::GroupDenied),
        Groups::Unresolved => return Decision::deny(Landing::Forbidden, Reason::GroupsUnresolved),
        Groups::NotRequired | Groups::Member => {}
    }
    if policy.require == Require::Authenticated {
        return Decision::allow(Reason::Authenticated);
    }
    let posture = match f.device {
        Device::Unidentified => return Decision::deny(Landing::Unrecognized, Reason::DeviceUnidentified),
        Device::Unavailable { .. } => return Decision::deny(Landing::Stale, Reason::PostureUnavailable),
        Device::Identified { posture: None, .. } => {
            return Decision::deny(Landing::Unrecognized, Reason::DeviceUnknown)
        }
        Device::Identified { posture: Some(p), .. } => p,
    };
    let candidate = match (&posture.state, policy.require) {
        (PostureState::Unknown, _) => return Decision::deny(Landing::Unrecognized, Reason::DeviceUnknown),
        (PostureState::NotRegistered { .. }, _) => {
            return Decision::deny(Landing::Unrecognized, Reason::DeviceNotRegistered)
        }
        (PostureState::Disabled, _) => return Decision::deny(Landing::AccessDenied, Reason::DeviceDisabled),
        (PostureState::Unsupported { .. }, _) => {
            return Decision::deny(Landing::AccessDenied, Reason::DeviceUnsupported)
        }
        (
            PostureState::Compliant | PostureState::InGrace { .. } | PostureState::NonCompliant { .. },
            Require::RegisteredDevice,
        ) => Reason::DeviceRegistered,
        (PostureState::Compliant, _) => Reason::Compliant,
        (PostureState::InGrace { until }, _) if policy.allow_grace_period && *until > f.now => Reason::DeviceInGrace,
        (PostureState::InGrace { .. } | PostureState::NonCompliant { .. }, _) => {
            return Decision::deny(Landing::Remediation, Reason::DeviceNoncompliant)
        }
    };
    // Allowing rests on the posture data: it must be fresh enough.
    let age = f.now.saturating_sub(posture.as_of);
    if age > policy.max_posture_age {
        return match policy.on_stale {
            OnStale::Deny => Decision::deny(Landing::Stale, Reason::PostureStale),
            OnStale::AllowLastKnown => Decision::allow(Reason::PostureStale),
        };
    }
    Decision::allow(candidate)
}

#[cfg(test)]
mod tests;
