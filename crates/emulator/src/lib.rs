//! Stand-ins for the services Portcullis talks to, served on loopback for the demo, the tests
//! and the benchmarks (DESIGN.md §5): Entra ID, Microsoft Graph (growing with the sync loop),
//! the demo upstream app, and a control API under `/_emulator/`. Production code talks to
//! them through base URLs only.
//!
//! Never part of a production build: the `portcullis` binary has it only with the `demo`
//! feature. Depends on `base` (HTML escaping, GUIDs) and on `store`'s model types, in which the
//! emulated Jamf Pro keeps its inventory; it never opens or writes a store.

// Handlers answer refusals with a ready axum `Response` as the error: it is built once per
// refused call, so its size does not matter here.
#![allow(clippy::result_large_err)]

pub mod directory;
pub mod entra;
pub mod faults;
pub mod fixtures;
pub mod graph;
pub mod jamf;
pub mod keys;
pub mod personas;
pub mod upstream;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

pub use entra::EntraState;

/// The emulator's router: Entra (`/{tenant}/...`), Graph (`/v1.0/...`) and control
/// (`/_emulator/...`).
pub fn router(state: Arc<EntraState>) -> Router {
    Router::new()
        // Browsers ask every origin for one; login.microsoftonline.com has one too.
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(entra::discovery_v2),
        )
        .route("/{tenant}/.well-known/openid-configuration", get(entra::discovery_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(entra::jwks_v2))
        .route("/{tenant}/discovery/keys", get(entra::jwks_v1))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(entra::authorize_page).post(entra::authorize_pick),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        .route("/{tenant}/oauth2/v2.0/logout", get(entra::logout))
        .route("/v1.0/users/{id}/getMemberObjects", post(graph::get_member_objects))
        .route("/v1.0/devices/delta", get(graph::devices_delta))
        // The function-call form Microsoft's Graph SDKs send.
        .route("/v1.0/devices/delta()", get(graph::devices_delta))
        .route("/v1.0/devices", get(graph::devices_list))
        .route("/v1.0/devices/{id}", get(graph::device_by_id))
        .route("/v1.0/{segment}", get(graph::device_by_key))
        .route("/v1.0/$batch", post(graph::batch))
        .route("/_emulator/devices/{device_id}", get(graph::device_state))
        .route("/v1.0/deviceManagement/managedDevices", get(graph::managed_devices))
        .route(
            "/v1.0/deviceManagement/complianceManagementPartners",
            get(graph::compliance_partners),
        )
        .route("/_emulator/devices", post(graph::add_device))
        .route("/_emulator/devices/{device_id}/compliance", post(graph::set_compliance))
        .route("/_emulator/devices/{device_id}/remove", post(graph::remove_device))
        .route("/_emulator/delta/expire", post(graph::expire_delta))
        .route("/_emulator/directory/seed", post(graph::seed_directory))
        // The current token path, and the deprecated one Jamf Pro still serves.
        .route("/api/v1/oauth/token", post(jamf::token))
        .route("/api/oauth/token", post(jamf::token))
        .route("/api/{version}/computers-inventory", get(jamf::inventory))
        .route("/api/v3/computers-inventory-detail/{id}", get(jamf::detail))
        .route("/_emulator/token", get(entra::mint_token))
        .route("/_emulator/keys/rotate", post(entra::rotate))
        .route("/_emulator/apps/{client_id}/redirect_uris", post(entra::add_redirect))
        .route("/_emulator/apps/{client_id}/certificates", post(entra::add_certificate))
        .route("/_emulator/users/{object_id}/app-roles", post(entra::assign_role))
        .route("/_emulator/stats", get(entra::stats))
        .route("/_emulator/settings", post(entra::settings))
        .route("/_emulator/faults", post(set_fault).delete(clear_faults))
        .fallback(unknown)
        .with_state(state)
}

/// A path nothing here serves, answered in the shape of the service it belongs to: Graph's
/// OData error (400 `BadRequest`, "Resource not found for the segment …", as Graph answers an
/// unknown segment) under `/v1.0/` and `/beta/`; Jamf Pro's error body under `/api/`; an empty
/// 404 elsewhere.
async fn unknown(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/v1.0/").or_else(|| path.strip_prefix("/beta/")) {
        let segment = rest.split('/').next().unwrap_or_default();
        let body = serde_json::json!({ "error": {
            "code": "BadRequest",
            "message": format!("Resource not found for the segment '{segment}'."),
            "innerError": { "request-id": entra::random_text(12) },
        }});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    if path.starts_with("/api/") {
        let body = serde_json::json!({ "httpStatus": 404, "errors": [
            { "code": "INVALID_PATH", "description": "The requested resource was not found", "id": "0", "field": null }
        ]});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn set_fault(State(s): State<Arc<EntraState>>, Json(f): Json<faults::Fault>) -> StatusCode {
    s.faults.set(f);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(s): State<Arc<EntraState>>) -> StatusCode {
    s.faults.clear();
    StatusCode::NO_CONTENT
}

/// Serves the emulator on `listener` (its address must be `state.base_url`).
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<EntraState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// A TLS configuration for [`serve_tls`] from a PEM certificate chain and its PKCS#8 key.
pub fn tls_config(cert_pem: &std::path::Path, key_pem: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| format!("{}: {e}", key_pem.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves the emulator over TLS on `listener`; `state.base_url` must be its `https://` address,
/// so that discovery documents, links and issuers name it (MSAL refuses an http authority and
/// a discovery document with http endpoints). A failed handshake ends only that connection.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: Arc<EntraState>,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(state);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors or the like: keep serving the connections that work.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
