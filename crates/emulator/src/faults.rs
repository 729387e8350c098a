//! Fault injection for the emulators: per endpoint, the next N requests get an error status
//! (with `Retry-After` if asked), extra latency, or a malformed body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Endpoints that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Jwks,
    Token,
    Graph,
    /// Intune's managedDevices.
    Intune,
    /// Jamf Pro's API.
    Jamf,
    /// Each request inside a Graph `$batch` (inner statuses).
    BatchItem,
}

/// What to do to the next requests of one endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub endpoint: Endpoint,
    /// Answer with this status (e.g. 429, 500); absent: answer normally after the latency.
    pub status: Option<u16>,
    /// How many requests are affected; absent: all until cleared.
    pub count: Option<u32>,
    pub retry_after: Option<u64>,
    pub latency_ms: Option<u64>,
    /// Answer 200 with a truncated JSON body.
    #[serde(default)]
    pub malformed: bool,
    /// Let this many requests through normally before the fault starts.
    #[serde(default)]
    pub after: u32,
}

#[derive(Default)]
pub struct Faults {
    active: Mutex<HashMap<Endpoint, Fault>>,
}

impl Faults {
    pub fn set(&self, f: Fault) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(f.endpoint, f);
    }

    pub fn clear(&self) {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Applies the fault of `e`, if any: waits out its latency and returns the response to
    /// send instead of the real one (`None`: answer normally).
    pub async fn take(&self, e: Endpoint) -> Option<Response> {
        let fault = {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            let f = active.get_mut(&e)?;
            if f.after > 0 {
                f.after -= 1;
                return None;
            }
            let out = f.clone();
            match &mut f.count {
                Some(0) => {
                    active.remove(&e);
                    return None;
                }
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&e);
                    }
                }
                None => {}
            }
            out
        };
        if let Some(ms) = fault.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.malformed {
            return Some(
                (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    "{\"value\": [{\"id\": \"trunc",
                )
                    .into_response(),
            );
        }
        let status = StatusCode::from_u16(fault.status?).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "code": "EmulatedFault", "message": format!("injected {status}") } });
        let mut r = (status, axum::Json(body)).into_response();
        if let Some(s) = fault.retry_after {
            if let Ok(v) = s.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
        }
        Some(r)
    }
}
