//! Run Test: what Jamf Pro's "Test" button does, step by step, with each failure explained in
//! plain words: the token request (Entra's `error_codes[0]` mapped to a cause and a fix, table
//! from reference §3), then Graph probes (devices → `Device.Read.All`; managed devices →
//! Intune permission or licence; compliance partners → is a Jamf compliance partner enabled,
//! and its last heartbeat), then Jamf Pro (token and one inventory page).

use serde_json::Value;

use super::graph::{GraphClient, GraphError};
use super::jamf::JamfClient;

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepStatus {
    Ok,
    /// Works, with a caveat (optional permission missing, partner not enabled…).
    Warning,
    Failed,
    /// Not run because an earlier step failed, or not configured.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    pub name: &'static str,
    pub status: StepStatus,
    pub message: String,
}

/// Every step, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestReport {
    pub ok: bool,
    pub steps: Vec<Step>,
}

/// The plain-language cause of a token error (reference §3).
pub fn explain_token_error(code: Option<u64>, http_status: Option<u16>) -> String {
    match code {
        Some(7000215) => "The client secret is wrong. Paste the secret's value, not its ID.".into(),
        Some(7000222) => "The client secret has expired. Create a new one in the app registration.".into(),
        Some(7000218) => "No client secret or certificate was sent. Configure the app credential.".into(),
        Some(700027) => "The certificate is not registered on the app, or the key does not match it.".into(),
        Some(700016) => "The application (client) ID was not found in this tenant: check the ID, or consent to the app in this tenant.".into(),
        Some(90002) => "The tenant was not found. Check the tenant ID, and that the right national cloud is selected.".into(),
        Some(900023) => "The tenant ID is malformed: use the tenant's GUID or verified domain.".into(),
        Some(90038) => "The tenant lives in another national cloud: select that cloud.".into(),
        Some(70011) => "The scope is not valid for this cloud: it must be the cloud's Graph host followed by /.default.".into(),
        Some(500011) => "The resource (Microsoft Graph) is not available in this tenant.".into(),
        Some(7000112) | Some(70001) => "The application is disabled in this tenant.".into(),
        Some(65001) | Some(90094) => "Admin consent is missing: open the admin consent URL as an administrator.".into(),
        Some(90055) => "Entra is throttling this tenant: try again later.".into(),
        Some(70021) => "No federated credential on the app matches the presented assertion (issuer and subject).".into(),
        Some(other) => format!("Entra refused the token request (AADSTS{other})."),
        None => match http_status {
            Some(s) => format!("The token endpoint answered {s}."),
            None => "The token endpoint could not be reached (network, DNS or TLS).".into(),
        },
    }
}

fn step(name: &'static str, status: StepStatus, message: impl Into<String>) -> Step {
    Step {
        name,
        status,
        message: message.into(),
    }
}

/// Runs every step; never fails itself.
pub async fn run_test(graph: &GraphClient, jamf: Option<&JamfClient>) -> TestReport {
    let mut steps = Vec::new();
    let token_ok = match graph.tokens().request().await {
        Ok(_) => {
            steps.push(step("token", StepStatus::Ok, "Entra issued an app token."));
            true
        }
        Err(e) => {
            steps.push(step("token", StepStatus::Failed, explain_token_error(e.code, e.status)));
            false
        }
    };
    if token_ok {
        steps.push(match graph.get("/v1.0/devices?$top=1&$select=id").await {
            Ok(_) => step(
                "graph_devices",
                StepStatus::Ok,
                "Devices can be read (Device.Read.All).",
            ),
            Err(GraphError::Forbidden(_)) => step(
                "graph_devices",
                StepStatus::Failed,
                "Graph refused to list devices: grant the application permission Device.Read.All and admin consent.",
            ),
            Err(e) => step(
                "graph_devices",
                StepStatus::Failed,
                format!("Devices could not be read: {e}"),
            ),
        });
        steps.push(match graph.get("/v1.0/deviceManagement/managedDevices?$top=1&$select=id").await {
            Ok(_) => step("intune_managed_devices", StepStatus::Ok, "Intune managed devices can be read."),
            Err(GraphError::Forbidden(_)) => step(
                "intune_managed_devices",
                StepStatus::Warning,
                "Intune managed devices cannot be read: grant DeviceManagementManagedDevices.Read.All, or the tenant has no Intune licence. Grace periods will not be known.",
            ),
            Err(e) => step("intune_managed_devices", StepStatus::Warning, format!("Intune could not be read: {e}")),
        });
        steps.push(
            match graph.get("/v1.0/deviceManagement/complianceManagementPartners").await {
                Ok(v) => partner_step(&v),
                Err(GraphError::Forbidden(_)) => step(
                    "compliance_partner",
                    StepStatus::Warning,
                    "The compliance partners cannot be read (DeviceManagementServiceConfig.Read.All).",
                ),
                Err(e) => step(
                    "compliance_partner",
                    StepStatus::Warning,
                    format!("The compliance partners could not be read: {e}"),
                ),
            },
        );
    } else {
        for name in ["graph_devices", "intune_managed_devices", "compliance_partner"] {
            steps.push(step(name, StepStatus::Skipped, "Skipped: no token."));
        }
    }
    steps.push(match jamf {
        None => step("jamf", StepStatus::Skipped, "Jamf Pro is not configured."),
        Some(j) => match j
            .get("/api/v3/computers-inventory?page=0&page-size=1&section=GENERAL")
            .await
        {
            Ok(v) => step(
                "jamf",
                StepStatus::Ok,
                format!(
                    "Jamf Pro answered: {} computers in inventory.",
                    v.get("totalCount").and_then(Value::as_u64).unwrap_or(0)
                ),
            ),
            Err(e) => step(
                "jamf",
                StepStatus::Failed,
                format!(
                    "{e}. Check the Jamf Pro URL, and that the API client exists with the Read Computers privilege."
                ),
            ),
        },
    });
    let ok = steps
        .iter()
        .all(|s| matches!(s.status, StepStatus::Ok | StepStatus::Warning | StepStatus::Skipped))
        && steps.iter().any(|s| s.status == StepStatus::Ok);
    TestReport { ok, steps }
}

fn partner_step(v: &Value) -> Step {
    let partners = v.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
    let jamf = partners.iter().find(|p| {
        p.get("displayName")
            .and_then(Value::as_str)
            .is_some_and(|n| n.to_ascii_lowercase().contains("jamf"))
    });
    match jamf {
        Some(p) => {
            let state = p.get("partnerState").and_then(Value::as_str).unwrap_or("unknown");
            let beat = p
                .get("lastHeartbeatDateTime")
                .and_then(Value::as_str)
                .unwrap_or("never");
            let status = if state == "enabled" {
                StepStatus::Ok
            } else {
                StepStatus::Warning
            };
            step(
                "compliance_partner",
                status,
                format!("Jamf compliance partner is {state}; last heartbeat {beat}."),
            )
        }
        None => step(
            "compliance_partner",
            StepStatus::Warning,
            "No Jamf compliance partner is set up in Intune.",
        ),
    }
}
