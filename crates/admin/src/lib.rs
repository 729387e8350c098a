//! The admin listener (axum on its own port), separate from the proxy listeners.
//!
//! Endpoints:
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once the configuration is loaded and every proxy listener accepts
//!   connections; 503 with the missing parts otherwise.
//! - `GET /metrics`: Prometheus text format.
//! - `POST /webhooks/jamf`: Jamf Pro webhooks (HTTP Basic), which queue targeted re-reads.
//! - `/api/v1/…`: the admin API (see [`api`]): conditional-access settings (GET, PUT with
//!   If-Match), `conditional-access/test`, `sync/status`, `sync/{source}/run`, `audit`,
//!   `computers` (filters, pagination), `computers/{id}`, `computers/{id}/history`,
//!   `devices/{deviceId}/posture`, `conditional-access/send-update`, `jobs/{id}` and `explain`.
//! - `GET /api/v1/openapi.json`: the OpenAPI 3 document, generated from the handlers ([`openapi`]).
//! - `/console/…`: the admin console in the browser ([`console`]), on top of the same API.
//! - [`cli`]: `portcullis admin …`, the same API from a shell.
//!
//! May depend on `access` (What If, through `access::explain::Explain`), `sync` (Run Test,
//! Send Update, the settings), `store` (its traits), `identity` (admin bearer tokens),
//! `device`, `config`, `metrics`, `policy` and `base`. Never on `proxy`: it knows no data plane.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use metrics::Metrics;

pub mod api;
pub mod body;
pub mod cli;
pub mod console;
pub mod openapi;
mod probe;

/// `segment` percent-encoded for a URL path (form encoding's `+` for a space is no space in a
/// path): for the CLI's and the console's calls of the API.
pub(crate) fn path_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
    /// Signing keys of every allowed tenant fetched (true when there is no identity).
    keys_loaded: AtomicBool,
}

impl Readiness {
    pub fn new(needs_keys: bool) -> Self {
        Self {
            listeners_bound: AtomicBool::new(false),
            keys_loaded: AtomicBool::new(!needs_keys),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire) && self.keys_loaded.load(Ordering::Acquire)
    }

    pub fn set_keys_loaded(&self) {
        self.keys_loaded.store(true, Ordering::Release);
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
    webhooks: Option<Arc<sync::webhook::JamfWebhooks>>,
    store: Arc<dyn store::Store>,
}

/// The admin router.
pub fn router(
    metrics: Metrics,
    readiness: Arc<Readiness>,
    webhooks: Option<Arc<sync::webhook::JamfWebhooks>>,
    api: api::Api,
) -> Router {
    let store = api.store.clone();
    let for_console = api.clone();
    let v1: Router = Router::new()
        .route(
            "/api/v1/conditional-access",
            get(api::get_settings).put(api::put_settings),
        )
        .route("/api/v1/conditional-access/test", axum::routing::post(api::run_test))
        .route("/api/v1/conditional-access/consent-url", get(api::consent_url))
        .route(
            "/api/v1/conditional-access/send-update",
            axum::routing::post(api::send_update),
        )
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/sync/status", get(api::sync_status))
        .route("/api/v1/sync/{source}/run", axum::routing::post(api::sync_now))
        .route("/api/v1/audit", get(api::audit))
        .route("/api/v1/computers", get(api::computers))
        .route("/api/v1/computers/{id}", get(api::computer))
        .route("/api/v1/computers/{id}/history", get(api::history))
        .route("/api/v1/devices/{device_id}/posture", get(api::posture))
        .route("/api/v1/explain", axum::routing::post(api::explain))
        .route("/api/v1/decisions", get(api::decisions))
        .route("/api/v1/reload", axum::routing::post(api::reload))
        // Wrong methods answer in the API's one error shape too (unknown paths: below).
        .method_not_allowed_fallback(|| async {
            api::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This operation does not take that method; see /api/v1/openapi.json.",
            )
        })
        .with_state(api)
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi::document()) }),
        );
    let console = Arc::new(console::Console::new(v1.clone(), for_console));
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/webhooks/jamf", axum::routing::post(jamf_webhook))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(AdminState {
            metrics,
            readiness,
            webhooks,
            store,
        })
        .merge(console::router(console.clone()))
        .merge(v1)
        // Unknown paths: a page under the console, problem+json anywhere else.
        .fallback(move |req: axum::extract::Request| async move {
            if req.uri().path().starts_with("/console/") {
                console::not_found(&console, req.headers()).await
            } else {
                api::problem(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No such operation; see /api/v1/openapi.json.",
                )
            }
        })
}

async fn jamf_webhook(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use sync::webhook::WebhookError;
    let Some(w) = &s.webhooks else {
        return api::problem(
            StatusCode::NOT_FOUND,
            "not_configured",
            "Jamf webhooks are not configured.",
        );
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match w.accept(auth, &body) {
        Ok(n) => (StatusCode::ACCEPTED, Json(serde_json::json!({ "queued": n }))).into_response(),
        Err(e @ WebhookError::Unauthorized) => api::problem(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
        Err(e @ WebhookError::Malformed) => api::problem(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
        Err(e @ WebhookError::Busy) => api::problem(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let r = &s.readiness;
    let ready = r.is_ready();
    // Reported, not required: every node shares the store, and through an outage the nodes keep
    // serving what they cached (a load balancer taking every node out would serve nobody).
    let store_ok = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), s.store.latest_change()).await,
        Ok(Ok(_))
    );
    s.metrics.store_up.set(i64::from(store_ok));
    let body = serde_json::json!({
        "ready": ready,
        "config_loaded": true,
        "listeners_bound": r.listeners_bound.load(Ordering::Acquire),
        "signing_keys_loaded": r.keys_loaded.load(Ordering::Acquire),
        "store": if store_ok { "ok" } else { "unavailable" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
}

/// Marks the listeners bound once each of `addrs` answers: a TCP connection for plain
/// listeners, a TLS handshake for TLS ones (`true`): readiness is what a client would see,
/// asked of the sockets themselves rather than taken from the data plane's word.
pub async fn watch_listeners(readiness: Arc<Readiness>, addrs: Vec<(SocketAddr, bool)>) {
    for (addr, tls) in addrs {
        let target = loopback_for(addr);
        loop {
            let up = if tls {
                matches!(
                    tokio::task::spawn_blocking(move || probe::tls_handshake(target)).await,
                    Ok(Ok(()))
                )
            } else {
                tokio::net::TcpStream::connect(target).await.is_ok()
            };
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    readiness.listeners_bound.store(true, Ordering::Release);
    tracing::info!("all listeners accept connections; ready");
}

/// A wildcard listen address is probed on the loopback address of the same family.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
