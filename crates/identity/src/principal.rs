//! The verified identity of a request's user, built only by the validator.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Entra token format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenVersion {
    V1,
    V2,
}

/// A user whose token was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Tenant id (lower-case GUID).
    pub tenant: Arc<str>,
    /// Object id of the user (or service principal) in the tenant.
    pub object_id: Arc<str>,
    /// `upn`, else `preferred_username`, else `unique_name`: for display and headers only.
    pub username: Option<Arc<str>>,
    pub name: Option<Arc<str>>,
    /// Group object ids from the `groups` claim.
    pub groups: Arc<[Arc<str>]>,
    /// Entra signalled more groups than fit in the token (`_claim_names` or `hasgroups`).
    pub groups_overage: bool,
    pub roles: Arc<[Arc<str>]>,
    /// The undocumented `deviceid` claim, when the token carries one.
    pub device_id: Option<Arc<str>>,
    pub version: TokenVersion,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// The token carried delegated scopes (`scp`): a user's access token. App-only tokens and
    /// ID tokens do not, and are refused as bearer tokens.
    pub delegated: bool,
}
