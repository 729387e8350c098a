//! Jamf Pro webhooks (`ComputerInventoryCompleted`, `SmartGroupComputerMembershipChange`):
//! authenticated with HTTP Basic credentials compared in constant time, used only as a poke —
//! the named computers are re-read from the Jamf Pro API, the webhook body is never trusted as
//! data. Re-reads happen off the request that delivered the webhook, through a bounded queue.

use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use tokio::sync::mpsc;

use super::jamf::{computer_from, JamfClient};
use base::Secret;
use store::Store;

/// How webhooks authenticate.
#[derive(Debug, Clone)]
pub struct WebhookAuth {
    pub username: String,
    pub password: Secret,
}

/// Why a webhook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or wrong credentials")]
    Unauthorized,
    #[error("not a Jamf Pro webhook body")]
    Malformed,
    #[error("the re-read queue is full; Jamf Pro will retry")]
    Busy,
}

/// Receives webhooks and queues the re-reads.
pub struct JamfWebhooks {
    auth: WebhookAuth,
    queue: mpsc::Sender<String>,
}

impl JamfWebhooks {
    /// Starts the worker that re-reads computers; returns the receiver side's handle.
    pub fn start<S: Store + ?Sized + 'static>(auth: WebhookAuth, jamf: Arc<JamfClient>, store: Arc<S>) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                match reread(&jamf, &*store, &id).await {
                    Ok(()) => tracing::info!(computer = %id, "Jamf webhook: computer re-read"),
                    Err(e) => tracing::warn!(computer = %id, error = %e, "Jamf webhook: re-read failed"),
                }
            }
        });
        Arc::new(Self { auth, queue: tx })
    }

    /// Checks the credentials and queues the computers the event names; returns how many.
    pub fn accept(&self, authorization: Option<&str>, body: &[u8]) -> Result<usize, WebhookError> {
        if !self.authorized(authorization) {
            return Err(WebhookError::Unauthorized);
        }
        let v: Value = serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)?;
        let event = v
            .get("webhook")
            .and_then(|w| w.get("webhookEvent"))
            .and_then(Value::as_str)
            .ok_or(WebhookError::Malformed)?;
        let e = v.get("event").ok_or(WebhookError::Malformed)?;
        let id_of = |x: &Value| match x {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
            Value::Null | Value::Bool(_) | Value::String(_) | Value::Array(_) | Value::Object(_) => None,
        };
        let ids: Vec<String> = match event {
            "ComputerInventoryCompleted" | "ComputerAdded" | "ComputerCheckIn" => {
                e.get("jssID").and_then(id_of).into_iter().collect()
            }
            "SmartGroupComputerMembershipChange" => ["groupAddedDevicesIds", "groupRemovedDevicesIds"]
                .iter()
                .flat_map(|k| e.get(*k).and_then(Value::as_array).cloned().unwrap_or_default())
                .filter_map(|x| id_of(&x))
                .collect(),
            _ => Vec::new(),
        };
        for id in &ids {
            self.queue.try_send(id.clone()).map_err(|_| WebhookError::Busy)?;
        }
        Ok(ids.len())
    }

    fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(b64) = authorization.and_then(|h| h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic ")))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.auth.username, self.auth.password.expose());
        base::ct_eq(&raw, expected.as_bytes())
    }
}

/// Re-reads one computer from the API and stores it (or removes it when Jamf no longer has it).
pub async fn reread<S: Store + ?Sized>(jamf: &JamfClient, store: &S, id: &str) -> Result<(), String> {
    let now = base::time::unix_now_i64();
    match jamf.computer(id).await {
        Ok(v) => {
            let c = computer_from(&v, now).map_err(|e| e.to_string())?;
            store.upsert_computers(&[c]).await.map_err(|e| e.to_string())
        }
        Err(super::jamf::JamfError::Status(404)) => store.remove_computer(id).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
