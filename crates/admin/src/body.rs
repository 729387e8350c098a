//! The admin API's request and response bodies and query strings, as typed values. The handlers
//! in [`super::api`] read and build these, and the OpenAPI document ([`super::openapi`]) is
//! derived from the same types, so what it publishes is what is sent. Times are Unix seconds
//! (UTC). Two bodies are built elsewhere and only described here: [`Problem`] (by
//! `base::problem`) and [`ExplainAnswer`] (by `access::explain`); tests keep them in step.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use store::{AccountType, AuditEntry, EntraDevice, JobStatus, ManagedDevice, RegistrationState};
use sync::settings::{ConditionalAccess, ConnectionType, LandingChoice};
use sync::test_connection::TestReport;

/// Page sizes the list operations take.
pub const MIN_LIMIT: u32 = 1;
pub const MAX_LIMIT: u32 = 500;
pub const DEFAULT_LIMIT: u32 = 50;

/// An error (RFC 9457), `application/problem+json`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Written by `base::problem::Problem::json`; described here.
pub struct Problem {
    /// `urn:portcullis:problem:{reason}`.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    status: u16,
    /// A stable, machine-readable code (`unauthenticated`, `invalid_query`, `stale_write`, …).
    reason: String,
    /// What went wrong, in words; never a secret.
    detail: String,
}

/// The Conditional Access settings as the API shows them: the secret only as "set, and when".
#[derive(Serialize, ToSchema)]
pub struct Settings {
    /// Off: the sync stops; every other setting is kept.
    pub enabled: bool,
    pub connection_type: ConnectionType,
    /// `global`, `us_gov_high`, `us_gov_dod` or `china`.
    pub national_cloud: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub application_id: String,
    pub client_secret: SecretState,
    /// Where computers Entra does not recognise are sent.
    pub landing: LandingChoice,
    pub shared_attributes: SharedAttributes,
}

/// The inventory attributes shared onto Entra devices, and where they are set.
#[derive(Serialize, ToSchema)]
pub struct SharedAttributes {
    /// `extensionAttributeN` → the value's template (`{managed}`, `{os_version}`, …).
    pub attributes: std::collections::BTreeMap<String, String>,
    /// `settings` (set through the API) or `file` (the configuration file's `[sync] share`).
    pub from: &'static str,
}

impl Settings {
    pub fn of(
        doc: &ConditionalAccess,
        file_credential: Option<&'static str>,
        file_share: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self {
            enabled: doc.enabled,
            connection_type: doc.connection,
            national_cloud: doc.cloud.clone(),
            tenant_id: doc.tenant_id.clone(),
            application_id: doc.application_id.clone(),
            client_secret: SecretState {
                set: doc.client_secret_sealed.is_some(),
                changed_at: doc.secret_changed_at,
                file_credential,
            },
            landing: doc.landing.clone(),
            shared_attributes: match &doc.shared_attributes {
                Some(attributes) => SharedAttributes {
                    attributes: attributes.clone(),
                    from: "settings",
                },
                None => SharedAttributes {
                    attributes: file_share.clone(),
                    from: "file",
                },
            },
        }
    }
}

/// The client secret, write-only: whether one is stored, never its value.
#[derive(Serialize, ToSchema)]
pub struct SecretState {
    /// A secret saved through the API is in force.
    pub set: bool,
    /// When it was last replaced.
    pub changed_at: Option<i64>,
    /// The credential the configuration file gives (`client_secret`, `certificate`,
    /// `assertion_file`), used while no secret is set here.
    pub file_credential: Option<&'static str>,
}

/// `PUT /api/v1/conditional-access`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    pub enabled: bool,
    pub connection_type: ConnectionType,
    /// `global`, `us_gov_high`, `us_gov_dod` or `china` (and their aliases: `gcc_high`, `dod`…).
    pub national_cloud: String,
    /// The tenant's GUID.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// The application (client) ID, a GUID.
    #[schema(format = "uuid")]
    pub application_id: String,
    /// Write-only: a new secret; absent keeps the current one. Never shown again.
    #[schema(min_length = 1, format = Password)]
    pub client_secret: Option<String>,
    pub landing: LandingChoice,
    /// The inventory attributes to share onto Entra devices: `extensionAttribute1` to
    /// `extensionAttribute15` → a template of at most 256 characters. Absent keeps the
    /// current ones; `{}` shares nothing.
    pub shared_attributes: Option<std::collections::BTreeMap<String, String>>,
}

/// The settings saved and applied.
#[derive(Serialize, ToSchema)]
pub struct Saved {
    /// The new version (also the ETag).
    pub version: i64,
    pub settings: Settings,
    /// Run Test with the new values; absent when the sync is off on this node.
    pub test: Option<TestReport>,
}

/// `GET /api/v1/sync/status`.
#[derive(Serialize, ToSchema)]
pub struct SyncStatus {
    /// Entra ID devices (Graph `/devices`).
    pub entra: SourceStatus,
    /// Intune managed devices.
    pub intune: SourceStatus,
    /// Jamf Pro inventory.
    pub jamf: SourceStatus,
    /// Inventory sent to Microsoft.
    pub share: SourceStatus,
    /// The node running the sync now; none while no node holds the lease.
    pub leader: Option<Leader>,
    pub this_node: String,
}

#[derive(Serialize, ToSchema)]
pub struct SourceStatus {
    pub last_success: Option<i64>,
    /// Seconds since the last success.
    pub lag_seconds: Option<i64>,
    /// The newest failure among the last 50 runs.
    pub last_error: Option<SourceError>,
    /// The last success's counts (per source: seen, changed, removed, …).
    #[schema(value_type = Option<Object>)]
    pub last_counts: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SourceError {
    pub at: i64,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Leader {
    pub node: String,
    /// The lease's term, which fences the leader's writes.
    pub term: i64,
    /// Seconds left of the lease, by the database's clock.
    pub lease_left_seconds: i64,
}

/// What `POST /api/v1/sync/{source}/run` wakes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Described only: the handler matches the path's text.
pub enum SyncSource {
    Entra,
    Intune,
    Jamf,
    All,
}

/// `POST /api/v1/sync/{source}/run`.
#[derive(Serialize, ToSchema)]
pub struct Triggered {
    pub triggered: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries older than this id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
}

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// The next page's `before`; none on the last page.
    pub next_before: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComputerQuery {
    /// Keyset cursor: the previous page's `next_after`.
    pub after: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    /// A substring of the name, serial or a username (case-insensitive).
    pub filter: Option<String>,
    /// Computers with an account in this registration state.
    #[param(value_type = Option<RegistrationState>)]
    pub state: Option<String>,
}

/// A page of computers, by Jamf id.
#[derive(Serialize, ToSchema)]
pub struct ComputerPage {
    pub items: Vec<Computer>,
    /// The next page's `after`; none on the last page.
    pub next_after: Option<String>,
}

/// A computer in Jamf Pro inventory and its accounts' Conditional Access inventory state.
#[derive(Serialize, ToSchema)]
pub struct Computer {
    /// The Jamf computer id.
    pub id: String,
    pub name: Option<String>,
    pub serial: Option<String>,
    pub udid: Option<String>,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub os_build: Option<String>,
    pub managed: bool,
    /// FileVault state as Jamf reports it.
    pub filevault: Option<String>,
    pub last_inventory: Option<i64>,
    pub last_contact: Option<i64>,
    /// When a sync last saw it.
    pub seen_at: i64,
    pub local_user_accounts: Vec<Account>,
}

/// One user account on a computer: its Conditional Access inventory state.
#[derive(Serialize, ToSchema)]
pub struct Account {
    pub username: String,
    pub account_type: AccountType,
    /// The user's Entra object id.
    pub entra_user_id: Option<String>,
    /// The Entra device id this user registered.
    pub entra_device_id: Option<String>,
    pub registration_state: RegistrationState,
    /// The device's compliance as the gateway would use it now; none when unknown.
    pub compliance: Option<Compliance>,
}

#[derive(Serialize, ToSchema)]
pub struct Compliance {
    /// `compliant`, `noncompliant`, `in_grace`, `not_registered`, `disabled`, `unsupported`
    /// or `unknown`.
    pub state: &'static str,
    /// Where the posture came from: `entra`, `intune`, `jamf` or `none`.
    pub source: &'static str,
    pub as_of: u64,
    pub age_seconds: u64,
}

/// Inventory sent to Microsoft for one computer, newest first.
#[derive(Serialize, ToSchema)]
pub struct History {
    pub computer: String,
    pub items: Vec<HistoryItem>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    pub username: String,
    pub entra_device_id: Option<String>,
    pub sent_at: i64,
    /// The attributes sent, by name.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
    /// `ok`, or the error.
    pub result: String,
}

/// `GET /api/v1/devices/{device_id}/posture`.
#[derive(Serialize, ToSchema)]
pub struct Posture {
    pub device_id: String,
    /// Some source knows the device.
    pub known: bool,
    pub posture: Option<PostureNow>,
    pub evidence: Evidence,
}

/// The posture the gateway would use now.
#[derive(Serialize, ToSchema)]
pub struct PostureNow {
    /// `compliant`, `noncompliant`, `in_grace`, `not_registered`, `disabled`, `unsupported`
    /// or `unknown`.
    pub state: &'static str,
    /// `entra`, `intune`, `jamf` or `none`.
    pub source: &'static str,
    pub as_of: u64,
    pub age_seconds: u64,
    /// Why it is not compliant, or until when it is in grace.
    pub reasons: Vec<String>,
}

/// What every source says of the device.
#[derive(Serialize, ToSchema)]
pub struct Evidence {
    pub entra: Option<EntraDevice>,
    pub intune: Option<ManagedDevice>,
    pub jamf: Option<JamfEvidence>,
    pub last_sync: LastSync,
}

/// The Jamf computer and account that registered the device.
#[derive(Serialize, ToSchema)]
pub struct JamfEvidence {
    pub computer: String,
    pub name: Option<String>,
    pub account: String,
    pub registration_state: RegistrationState,
}

/// The last successful sync of each source.
#[derive(Serialize, ToSchema)]
pub struct LastSync {
    pub entra: Option<i64>,
    pub intune: Option<i64>,
    pub jamf: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsentQuery {
    /// Where Entra returns after consent (a redirect URI of the app).
    pub redirect_uri: Option<String>,
}

/// The v2 admin-consent URL for the configured cloud, tenant and application.
#[derive(Serialize, ToSchema)]
pub struct ConsentUrl {
    pub url: String,
    /// A fresh `state`, to match on return.
    pub state: String,
}

/// `POST /api/v1/conditional-access/send-update` (an empty body: every computer).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendUpdate {
    /// A Jamf computer id; absent: every computer.
    pub computer: Option<String>,
}

/// A Send Update job started.
#[derive(Serialize, ToSchema)]
pub struct JobStarted {
    pub job: String,
}

/// The same work is already running: that job, not a new one.
#[derive(Serialize, ToSchema)]
pub struct JobAlreadyRunning {
    pub job: String,
    /// Always true.
    pub already_running: bool,
    /// The node running it.
    pub node: String,
}

/// A background job (`GET /api/v1/jobs/{id}`).
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// `send_update`.
    pub kind: String,
    pub status: JobStatus,
    pub node: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The one computer it is about; none: every computer.
    pub computer: Option<String>,
    /// Once finished: the counts (`sent`, `unchanged`, `unsupported`, `failed`) or `{"error"}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

impl Job {
    pub fn of(j: &store::Job) -> Self {
        Self {
            id: j.id.clone(),
            kind: j.kind.clone(),
            status: j.status,
            node: j.node.clone(),
            started_at: j.started_at,
            finished_at: j.finished_at,
            computer: j.computer.clone(),
            // Written by this code as JSON; a row that is not reads as its text.
            result: j
                .result
                .as_deref()
                .map(|r| serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::from(r))),
        }
    }
}

/// `POST /api/v1/reload`: what the reload did.
#[derive(Serialize, ToSchema, Default)]
pub struct Reloaded {
    /// The file was valid and is in force now.
    pub applied: bool,
    /// The configuration's summary once applied.
    pub summary: Option<String>,
    /// Sections that changed in the file but apply only at the next start.
    pub need_restart: Vec<String>,
    /// In force, but not whole yet: e.g. a tenant the reload added whose signing keys could
    /// not be fetched (its tokens are refused until they are).
    pub warnings: Vec<String>,
    /// Why the file was refused, key by key (nothing changed then).
    pub errors: Vec<KeyError>,
    /// The configuration was not read from a file (never sent: a 409).
    #[serde(skip)]
    pub no_file: bool,
}

#[derive(Serialize, ToSchema)]
pub struct KeyError {
    /// The key, e.g. `routes[2].upstream` (empty for the file as a whole).
    pub key: String,
    pub message: String,
}

/// `GET /api/v1/decisions`: what this node decided in the last hour.
#[derive(Serialize, ToSchema)]
pub struct Decisions {
    /// The node that answers (each node counts its own).
    pub node: String,
    /// Minute by minute, oldest first; the last one is the minute running now.
    pub minutes: Vec<DecisionMinute>,
    /// The hour's decisions by outcome and reason, most first.
    pub by_reason: Vec<ReasonCount>,
    /// The posture with the oldest evidence that this node enforces now; none while it holds
    /// none.
    pub oldest_posture: Option<OldestPosture>,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionMinute {
    /// When the minute ended (or now, for the running one).
    pub at: i64,
    pub allow: u64,
    pub deny: u64,
    /// Allowed by a report-only route that would have refused.
    pub report_only: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReasonCount {
    /// `allow`, `deny` or `report_only`.
    pub outcome: String,
    /// The reason code (`authenticated`, `device_noncompliant`, …).
    pub reason: String,
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OldestPosture {
    pub device_id: String,
    pub state: &'static str,
    pub source: &'static str,
    pub as_of: u64,
    pub age_seconds: u64,
}

/// `POST /api/v1/explain`: a "What If" question. Give `url`, or `route` (with `path`); `token`,
/// or `user`; and optionally a device.
#[derive(ToSchema)]
#[allow(dead_code)] // Read by `access::explain::Question::from_json`; described here.
pub struct ExplainQuestion {
    /// The URL a client would ask for.
    #[schema(format = "uri")]
    url: Option<String>,
    /// A route by name.
    route: Option<String>,
    /// With `route`: the path (default: the route's prefix).
    path: Option<String>,
    /// An Entra access token, validated as a bearer token would be.
    token: Option<String>,
    /// A user (object id or UPN), without a token: groups then come from Graph.
    user: Option<String>,
    /// The Entra device id.
    #[schema(format = "uuid")]
    device_id: Option<String>,
    /// How the device is identified (default `token`).
    device_source: Option<DeviceSource>,
    /// Answer as for a browser navigation (pages and redirects).
    browser: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Described only.
pub enum DeviceSource {
    Token,
    Certificate,
    Session,
}

/// The answer to a "What If" question.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Built by `access::explain`; described here.
pub struct ExplainAnswer {
    url: String,
    /// The route that matched; none when none did.
    route: Option<String>,
    outcome: Outcome,
    /// The reason code (`authenticated`, `device_noncompliant`, `no_route`, …).
    reason: String,
    /// For a denial: `sign_in`, `registration`, `remediation`, `access_denied`, `custom`, ….
    landing: Option<String>,
    /// What the client would get: `status`, `location`, `content_type`, `body`,
    /// `identity_headers`, `forwarded_upstream`, `grace_notice`, ….
    #[schema(value_type = Object)]
    response: Value,
    /// The route policy, the credential, groups, the device and how it was identified, the
    /// posture look-up and the posture; none when the gateway answered before a policy applied.
    #[schema(value_type = Option<Object>)]
    evidence: Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Described only.
pub enum Outcome {
    Allow,
    Deny,
    /// The gateway answers the path itself (`/.portcullis/…`).
    Gateway,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The schema's property names of `name` in the published document.
    fn properties(name: &str) -> Vec<String> {
        let doc: Value = serde_json::from_str(crate::openapi::document()).unwrap();
        let mut keys: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn the_problem_schema_is_what_base_writes() {
        let p = base::problem::Problem::new(401, "unauthenticated", "Unauthorized", "no token");
        let written: Value = serde_json::from_str(&p.json()).unwrap();
        assert_eq!(keys(&written), properties("Problem"));
    }

    #[test]
    fn the_question_schema_is_what_explain_reads() {
        let fields = properties("ExplainQuestion");
        assert_eq!(fields.len(), 8);
        for f in &fields {
            let value = if f == "browser" { "true" } else { "\"x\"" };
            let body = format!("{{\"{f}\": {value}}}");
            assert!(access::explain::Question::from_json(body.as_bytes()).is_ok(), "{f}");
        }
        assert!(access::explain::Question::from_json(br#"{"nope": "x"}"#).is_err());
    }
}
