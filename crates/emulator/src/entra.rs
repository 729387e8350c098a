//! The Entra ID emulator: v1/v2 discovery, JWKS (rotating), the authorize endpoint (a persona
//! picker standing in for Microsoft's sign-in page; `state`, `nonce`, PKCE and exact
//! `redirect_uri` matching honoured), the token endpoint (authorization_code with PKCE,
//! refresh_token, client_credentials) answering errors in Entra's real shape and codes, and
//! `/_emulator/token` minting access tokens for tests and benchmarks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::{Endpoint, Faults};
use super::keys::SigningKey;
use super::personas::{self, Persona};

/// An app registration in the emulated tenant.
#[derive(Clone)]
pub struct AppRegistration {
    pub client_id: String,
    pub secret: String,
    pub secret_expired: bool,
    pub redirect_uris: Vec<String>,
    /// Application permissions granted (show up as `roles` in app-only tokens).
    pub app_roles: Vec<String>,
    /// Registered certificates: `x5t#S256` thumbprint and public key.
    pub certificates: Vec<(String, Arc<jsonwebtoken::DecodingKey>)>,
    /// Federated credentials: (issuer, subject) of accepted external assertions.
    pub federated: Vec<(String, String)>,
}

impl std::fmt::Debug for AppRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRegistration")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: Option<String>,
    persona: Persona,
    expires: u64,
}

/// Everything the emulator knows and remembers.
pub struct EntraState {
    /// Where the emulator is reachable, e.g. `http://127.0.0.1:8900`; issuers and endpoints
    /// are built from it, as Entra builds them from its own host.
    pub base_url: String,
    apps: RwLock<HashMap<String, AppRegistration>>,
    keys: RwLock<Vec<Arc<SigningKey>>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    used_codes: Mutex<HashSet<String>>,
    refresh_tokens: Mutex<HashMap<String, (String, Persona)>>,
    /// Access tokens issued by client credentials, accepted by the Graph emulator.
    pub(super) app_tokens: Mutex<HashSet<String>>,
    pub faults: Faults,
    pub jwks_fetches: AtomicU64,
    /// Refresh-token grants answered (successfully).
    pub refresh_grants: AtomicU64,
    /// Lifetime of issued user tokens, seconds (default 3600).
    pub token_lifetime: AtomicU64,
    /// Incremental delta rounds send updated devices as partial objects (`/_emulator/settings`).
    pub partial_delta: std::sync::atomic::AtomicBool,
    /// App roles assigned to users on the gateway's app (object id → roles): the `roles`
    /// claim of their tokens, as Entra's app role assignments give it.
    user_roles: RwLock<HashMap<String, Vec<String>>>,
    key_serial: AtomicU64,
    /// Devices and managed devices served by the Graph emulator.
    pub directory: Mutex<super::directory::Directory>,
    /// Computers served by the Jamf Pro emulator.
    pub jamf: Mutex<super::jamf::JamfData>,
}

/// Random base64url text of `bytes` random bytes.
pub fn random_text(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails if the OS has no randomness; fall back to the clock then.
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        let n = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (n >> (i % 16 * 8)) as u8);
    }
    URL_SAFE_NO_PAD.encode(buf)
}

impl EntraState {
    /// A tenant with the gateway's app registration and one signing key.
    pub fn new(base_url: &str) -> Result<Self, super::keys::KeyError> {
        let gateway = AppRegistration {
            client_id: personas::GATEWAY_CLIENT_ID.into(),
            secret: personas::GATEWAY_CLIENT_SECRET.into(),
            secret_expired: false,
            redirect_uris: Vec::new(),
            app_roles: vec!["GroupMember.Read.All".into(), "Device.Read.All".into()],
            certificates: Vec::new(),
            federated: Vec::new(),
        };
        let state = Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            apps: RwLock::new(HashMap::from([(gateway.client_id.clone(), gateway)])),
            keys: RwLock::new(Vec::new()),
            codes: Mutex::new(HashMap::new()),
            used_codes: Mutex::new(HashSet::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            app_tokens: Mutex::new(HashSet::new()),
            faults: Faults::default(),
            jwks_fetches: AtomicU64::new(0),
            refresh_grants: AtomicU64::new(0),
            token_lifetime: AtomicU64::new(3600),
            partial_delta: std::sync::atomic::AtomicBool::new(false),
            user_roles: RwLock::new(HashMap::new()),
            key_serial: AtomicU64::new(0),
            directory: Mutex::new(super::directory::Directory::seeded(0)),
            jamf: Mutex::new(super::jamf::JamfData::seeded()),
        };
        state.rotate_key()?;
        Ok(state)
    }

    /// Adds a redirect URI to an app registration.
    /// Assigns app role `role` of the gateway's app to user `object_id`.
    pub fn assign_app_role(&self, object_id: &str, role: &str) {
        let mut roles = self.user_roles.write().unwrap_or_else(|e| e.into_inner());
        let mine = roles.entry(object_id.to_string()).or_default();
        if !mine.iter().any(|r| r == role) {
            mine.push(role.to_string());
        }
    }

    pub fn register_redirect(&self, client_id: &str, uri: &str) -> bool {
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        match apps.get_mut(client_id) {
            Some(a) => {
                if !a.redirect_uris.iter().any(|u| u == uri) {
                    a.redirect_uris.push(uri.to_string());
                }
                true
            }
            None => false,
        }
    }

    /// Registers a certificate (PEM) on an app; returns its `x5t#S256` thumbprint.
    pub fn register_certificate(&self, client_id: &str, pem: &str) -> Result<String, String> {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let key = jsonwebtoken::DecodingKey::from_rsa_der(&cert.public_key().subject_public_key.data);
        let thumb = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()));
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        let app = apps.get_mut(client_id).ok_or("no such app")?;
        app.certificates.push((thumb.clone(), Arc::new(key)));
        Ok(thumb)
    }

    /// Accepts external assertions with this issuer and subject for an app.
    pub fn register_federated(&self, client_id: &str, issuer: &str, subject: &str) -> bool {
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        match apps.get_mut(client_id) {
            Some(a) => {
                a.federated.push((issuer.to_string(), subject.to_string()));
                true
            }
            None => false,
        }
    }

    /// A new signing key becomes current; older keys stay published.
    pub fn rotate_key(&self) -> Result<String, super::keys::KeyError> {
        let serial = self.key_serial.fetch_add(1, Ordering::Relaxed) + 1;
        let kid = format!("emu-key-{serial}-{}", &random_text(6));
        let key = Arc::new(SigningKey::generate(kid.clone())?);
        self.keys.write().unwrap_or_else(|e| e.into_inner()).push(key);
        Ok(kid)
    }

    fn current_key(&self) -> Arc<SigningKey> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        // new() always installs one key before the state is shared.
        keys.last().cloned().expect("at least one key")
    }

    fn key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
    }

    pub fn v2_issuer(&self) -> String {
        format!("{}/{}/v2.0", self.base_url, personas::TENANT_ID)
    }

    pub fn v1_issuer() -> String {
        format!("https://sts.windows.net/{}/", personas::TENANT_ID)
    }

    fn is_tenant(t: &str) -> bool {
        t.eq_ignore_ascii_case(personas::TENANT_ID) || t.eq_ignore_ascii_case(personas::TENANT_DOMAIN)
    }

    /// Signs `claims` with the current key, or with key `kid` when it exists; an unknown
    /// `kid` is put in the header of a token signed by the current key (for tests).
    fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let (key, kid) = match kid {
            Some(k) => match self.key(k) {
                Some(key) => (key, k.to_string()),
                None => (self.current_key(), k.to_string()),
            },
            None => {
                let k = self.current_key();
                let kid = k.kid.clone();
                (k, kid)
            }
        };
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid);
        h.typ = Some("JWT".into());
        // Signing a JSON value with a valid RSA key cannot fail.
        jsonwebtoken::encode(&h, claims, &key.encoding).unwrap_or_default()
    }

    /// The claims of a v2 (or v1) user token of `persona` for audience `aud`.
    pub fn user_claims(&self, p: &Persona, aud: &str, exp: u64, v1: bool, nonce: Option<&str>) -> Value {
        let t = base::time::unix_now();
        let mut c = json!({
            "aud": aud, "iat": t, "nbf": t, "exp": exp,
            "tid": personas::TENANT_ID, "oid": p.object_id, "name": p.display_name,
            "sub": URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, format!("{}{aud}", p.object_id).as_bytes())),
            "uti": random_text(16), "rh": "0.emulated",
        });
        if v1 {
            c["iss"] = json!(Self::v1_issuer());
            c["ver"] = json!("1.0");
            c["upn"] = json!(p.upn());
            c["unique_name"] = json!(p.upn());
            c["appid"] = json!(personas::GATEWAY_CLIENT_ID);
            c["scp"] = json!("access");
        } else {
            c["iss"] = json!(self.v2_issuer());
            c["ver"] = json!("2.0");
            c["preferred_username"] = json!(p.upn());
            c["azp"] = json!(personas::GATEWAY_CLIENT_ID);
            c["azpacr"] = json!("1");
            c["scp"] = json!("access");
        }
        if p.groups.len() > 200 {
            // Overage: Entra leaves the groups out and points at a Graph source instead.
            c["_claim_names"] = json!({ "groups": "src1" });
            c["_claim_sources"] = json!({ "src1": { "endpoint": format!("https://graph.windows.net/{}/users/{}/getMemberObjects", personas::TENANT_ID, p.object_id) } });
        } else {
            c["groups"] = json!(p.groups);
        }
        if let Some(d) = p.device_id {
            c["deviceid"] = json!(d);
        }
        if aud == personas::GATEWAY_CLIENT_ID {
            let roles = self.user_roles.read().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = roles.get(p.object_id).filter(|r| !r.is_empty()) {
                c["roles"] = json!(r);
            }
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    /// A signed access token for `persona` (defaults: v2, audience = the gateway, 1 h).
    pub fn mint(&self, p: &Persona, aud: Option<&str>, exp: Option<u64>, kid: Option<&str>, v1: bool) -> String {
        let aud = aud.unwrap_or(personas::GATEWAY_CLIENT_ID);
        let claims = self.user_claims(p, aud, exp.unwrap_or_else(|| base::time::unix_now() + 3600), v1, None);
        self.sign(&claims, kid)
    }
}

/// Entra's error body (reference §3): `error`, `error_description` starting with the
/// AADSTS code, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
pub fn aad_error(status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let trace = random_text(12);
    let ts = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ");
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {trace} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, Json(body)).into_response()
}

fn unknown_tenant(t: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!("Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
    )
}

pub async fn discovery_v2(State(s): State<Arc<EntraState>>, Path(tenant): Path<String>) -> Response {
    if !EntraState::is_tenant(&tenant) {
        return unknown_tenant(&tenant);
    }
    let b = &s.base_url;
    let t = personas::TENANT_ID;
    Json(json!({
        "issuer": format!("{b}/{t}/v2.0"),
        "authorization_endpoint": format!("{b}/{t}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{b}/{t}/oauth2/v2.0/token"),
        "jwks_uri": format!("{b}/{t}/discovery/v2.0/keys"),
        "end_session_endpoint": format!("{b}/{t}/oauth2/v2.0/logout"),
        "userinfo_endpoint": format!("{b}/oidc/userinfo"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        // Only what `authorize` accepts (it refuses `plain`).
        "code_challenge_methods_supported": ["S256"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_response()
}

pub async fn discovery_v1(State(s): State<Arc<EntraState>>, Path(tenant): Path<String>) -> Response {
    if !EntraState::is_tenant(&tenant) {
        return unknown_tenant(&tenant);
    }
    let b = &s.base_url;
    let t = personas::TENANT_ID;
    Json(json!({
        "issuer": EntraState::v1_issuer(),
        "authorization_endpoint": format!("{b}/{t}/oauth2/authorize"),
        "token_endpoint": format!("{b}/{t}/oauth2/token"),
        "jwks_uri": format!("{b}/{t}/discovery/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(s: &EntraState, tenant: &str, issuer: Option<String>) -> Response {
    // Entra signs every tenant's tokens with the same keys, published under each tenant.
    if !EntraState::is_tenant(tenant) && !tenant.eq_ignore_ascii_case(personas::PARTNER_TENANT_ID) {
        return unknown_tenant(tenant);
    }
    s.jwks_fetches.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = s.faults.take(Endpoint::Jwks).await {
        return r;
    }
    let keys: Vec<Value> = s
        .keys
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|k| k.jwk(issuer.as_deref()))
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

pub async fn jwks_v2(State(s): State<Arc<EntraState>>, Path(tenant): Path<String>) -> Response {
    let issuer = format!("{}/{{tenantid}}/v2.0", s.base_url);
    jwks(&s, &tenant, Some(issuer)).await
}

pub async fn jwks_v1(State(s): State<Arc<EntraState>>, Path(tenant): Path<String>) -> Response {
    jwks(&s, &tenant, None).await
}

#[derive(Deserialize)]
pub struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    response_mode: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    /// Set by the picker form: who signs in.
    persona: Option<String>,
}

fn error_page(status: StatusCode, code: u32, text: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Sign in error</title><h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS{code}: {}</p>",
        base::html::escape(text)
    );
    (status, Html(body)).into_response()
}

/// Checks client and redirect URI; returns the error page to show otherwise.
fn check_client(s: &EntraState, p: &AuthorizeParams) -> Result<(), Response> {
    let (Some(client_id), Some(redirect_uri)) = (&p.client_id, &p.redirect_uri) else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            900144,
            "The request body must contain the following parameter: 'client_id' and 'redirect_uri'.",
        ));
    };
    let apps = s.apps.read().unwrap_or_else(|e| e.into_inner());
    let Some(app) = apps.get(client_id) else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                personas::TENANT_DOMAIN
            ),
        ));
    };
    if !app.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(error_page(StatusCode::BAD_REQUEST, 50011, &format!("The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'.")));
    }
    if p.response_type.as_deref() != Some("code") {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            700054,
            "response_type 'code' is required here.",
        ));
    }
    if p.code_challenge.is_some() && p.code_challenge_method.as_deref().unwrap_or("plain") != "S256" {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            501491,
            "Only the S256 code challenge method is accepted by this emulator.",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct LogoutParams {
    post_logout_redirect_uri: Option<String>,
    client_id: Option<String>,
}

/// GET logout (`end_session_endpoint`): the emulated Entra session ends (the persona picker
/// keeps none); the browser goes back to `post_logout_redirect_uri` when it is a redirect URI of
/// the app named by `client_id` (of any app without one), else Entra's own signed-out page.
pub async fn logout(
    State(s): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    Query(p): Query<LogoutParams>,
) -> Response {
    if !EntraState::is_tenant(&tenant) {
        return unknown_tenant(&tenant);
    }
    let registered = {
        let apps = s.apps.read().unwrap_or_else(|e| e.into_inner());
        let listed = |a: &AppRegistration, uri: &str| a.redirect_uris.iter().any(|u| u == uri);
        p.post_logout_redirect_uri.filter(|uri| match &p.client_id {
            Some(c) => apps.get(c).is_some_and(|a| listed(a, uri)),
            None => apps.values().any(|a| listed(a, uri)),
        })
    };
    match registered {
        Some(uri) => Redirect::to(&uri).into_response(),
        None => Html(
            "<!doctype html><meta charset=utf-8><title>Sign out</title><h1>You signed out of your account</h1>\
             <p>It's a good idea to close all browser windows.</p>",
        )
        .into_response(),
    }
}

/// GET authorize: the persona picker.
pub async fn authorize_page(
    State(s): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    if !EntraState::is_tenant(&tenant) {
        return error_page(StatusCode::BAD_REQUEST, 90002, &format!("Tenant '{tenant}' not found."));
    }
    if let Err(r) = check_client(&s, &p) {
        return r;
    }
    let hidden = |name: &str, v: &Option<String>| match v {
        Some(v) => format!(
            "<input type=hidden name=\"{name}\" value=\"{}\">",
            base::html::escape(v)
        ),
        None => String::new(),
    };
    let fields: String = [
        hidden("client_id", &p.client_id),
        hidden("redirect_uri", &p.redirect_uri),
        hidden("response_type", &p.response_type),
        hidden("response_mode", &p.response_mode),
        hidden("scope", &p.scope),
        hidden("state", &p.state),
        hidden("nonce", &p.nonce),
        hidden("code_challenge", &p.code_challenge),
        hidden("code_challenge_method", &p.code_challenge_method),
    ]
    .concat();
    let buttons: String = personas::all()
        .iter()
        .map(|per| {
            format!(
                "<li><button name=persona value=\"{}\"><strong>{}</strong> &lt;{}&gt;<br><small>{}</small></button></li>",
                per.name, per.display_name, per.upn(), per.summary
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>Sign in - Entra ID emulator</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         ul{{list-style:none;padding:0}}button{{width:100%;text-align:left;padding:.75rem;margin:.25rem 0;font-size:1rem;cursor:pointer}}</style></head>\
         <body><h1>Pick an account</h1><p>Entra ID emulator, tenant {}. Choose who signs in:</p>\
         <form method=post>{fields}<ul>{buttons}</ul></form></body></html>",
        personas::TENANT_DOMAIN
    ))
    .into_response()
}

/// POST authorize: the chosen persona signs in; a code goes back to the app.
pub async fn authorize_pick(
    State(s): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    Form(p): Form<AuthorizeParams>,
) -> Response {
    if !EntraState::is_tenant(&tenant) {
        return error_page(StatusCode::BAD_REQUEST, 90002, &format!("Tenant '{tenant}' not found."));
    }
    if let Err(r) = check_client(&s, &p) {
        return r;
    }
    let Some(persona) = p.persona.as_deref().and_then(personas::find) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            50034,
            "The user account does not exist in this directory.",
        );
    };
    let code = format!("0.emu.{}", random_text(32));
    let redirect_uri = p.redirect_uri.clone().unwrap_or_default();
    s.codes.lock().unwrap_or_else(|e| e.into_inner()).insert(
        code.clone(),
        CodeGrant {
            client_id: p.client_id.clone().unwrap_or_default(),
            redirect_uri: redirect_uri.clone(),
            nonce: p.nonce.clone(),
            challenge: p.code_challenge.clone(),
            persona,
            expires: base::time::unix_now() + 600,
        },
    );
    let state = p.state.clone().unwrap_or_default();
    if p.response_mode.as_deref() == Some("form_post") {
        let esc = base::html::escape;
        Html(format!(
            "<!doctype html><html><head><meta charset=utf-8><title>Working...</title></head><body onload=\"document.forms[0].submit()\">\
             <form method=post action=\"{}\"><input type=hidden name=code value=\"{}\"><input type=hidden name=state value=\"{}\">\
             <noscript><button>Continue</button></noscript></form></body></html>",
            esc(&redirect_uri),
            esc(&code),
            esc(&state)
        ))
        .into_response()
    } else {
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &state)
            .finish();
        Redirect::to(&format!("{redirect_uri}{sep}{q}")).into_response()
    }
}

#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    /// `1`: the response carries `client_info` (MSAL always asks).
    client_info: Option<String>,
}

/// POST token.
pub async fn token(
    State(s): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(req): Form<TokenRequest>,
) -> Response {
    if let Some(r) = s.faults.take(Endpoint::Token).await {
        return r;
    }
    if !EntraState::is_tenant(&tenant) {
        return unknown_tenant(&tenant);
    }
    let _ = headers;
    let Some(client_id) = req.client_id.as_deref() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let app = s.apps.read().unwrap_or_else(|e| e.into_inner()).get(client_id).cloned();
    let Some(app) = app else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", personas::TENANT_DOMAIN),
        );
    };
    if let Err(r) = authenticate_client(&s, &app, &req, &tenant) {
        return r;
    }
    match req.grant_type.as_deref() {
        Some("authorization_code") => redeem_code(&s, &app, &req),
        Some("refresh_token") => redeem_refresh(&s, &app, &req),
        Some("client_credentials") => client_credentials(&s, &app, &req),
        Some(other) => aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
        None => aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
    }
}

/// Checks the client secret or client assertion of a token request.
fn authenticate_client(
    s: &EntraState,
    app: &AppRegistration,
    req: &TokenRequest,
    tenant: &str,
) -> Result<(), Response> {
    if let (Some(kind), Some(assertion)) = (req.client_assertion_type.as_deref(), req.client_assertion.as_deref()) {
        if kind != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
            return Err(aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "Invalid client_assertion_type.",
            ));
        }
        return verify_assertion(s, app, assertion, tenant);
    }
    match req.client_secret.as_deref() {
        None | Some("") => Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
        Some(sec) if sec != app.secret => Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        )),
        Some(_) if app.secret_expired => Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app.",
        )),
        Some(_) => Ok(()),
    }
}

/// A certificate assertion is verified against the app's registered certificates; a federated
/// one is accepted when its issuer and subject are registered (the emulator does not fetch the
/// external issuer's keys).
fn verify_assertion(s: &EntraState, app: &AppRegistration, jwt: &str, tenant: &str) -> Result<(), Response> {
    let failed = |code: u32, text: &str| aad_error(StatusCode::UNAUTHORIZED, "invalid_client", code, text);
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| failed(50027, "JWT token is invalid or malformed."))?;
    if let Some(thumb) = header.x5t_s256.as_deref() {
        let Some((_, key)) = app.certificates.iter().find(|(t, _)| t == thumb) else {
            return Err(failed(
                700027,
                "Client assertion failed signature validation. The key was not found.",
            ));
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[
            format!("{}/{tenant}/oauth2/v2.0/token", s.base_url),
            format!("{}/{}/oauth2/v2.0/token", s.base_url, personas::TENANT_ID),
        ]);
        v.set_issuer(&[app.client_id.as_str()]);
        v.sub = Some(app.client_id.clone());
        return match jsonwebtoken::decode::<Value>(jwt, key, &v) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(failed(700024, "Client assertion is not within its valid time range."))
            }
            Err(_) => Err(failed(700027, "Client assertion failed signature validation.")),
        };
    }
    let claims: Option<Value> = jwt
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let pair = claims
        .as_ref()
        .and_then(|c| Some((c.get("iss")?.as_str()?, c.get("sub")?.as_str()?)));
    match pair {
        Some((iss, sub)) if app.federated.iter().any(|(i, s)| i == iss && s == sub) => Ok(()),
        Some(_) | None => Err(failed(
            70021,
            "No matching federated identity record found for presented assertion.",
        )),
    }
}

/// What user-token responses carry for `client_info=1`: base64url JSON of the user's object id
/// (`uid`) and tenant id (`utid`), from which MSAL keys its account cache.
fn client_info(p: &Persona) -> String {
    URL_SAFE_NO_PAD.encode(json!({ "uid": p.object_id, "utid": personas::TENANT_ID }).to_string())
}

fn user_tokens(
    s: &EntraState,
    app: &AppRegistration,
    p: &Persona,
    nonce: Option<&str>,
    req: &TokenRequest,
) -> Response {
    let scope = req.scope.as_deref().unwrap_or("openid profile offline_access");
    let lifetime = s.token_lifetime.load(Ordering::Relaxed);
    let exp = base::time::unix_now() + lifetime;
    let id_token = s.sign(&s.user_claims(p, &app.client_id, exp, false, nonce), None);
    let access_token = s.sign(&s.user_claims(p, &app.client_id, exp, false, None), None);
    let refresh = format!("0.emu-rt.{}", random_text(32));
    s.refresh_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(refresh.clone(), (app.client_id.clone(), p.clone()));
    let mut body = json!({
        "token_type": "Bearer", "scope": scope, "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": access_token, "refresh_token": refresh, "id_token": id_token,
    });
    if req.client_info.as_deref() == Some("1") {
        body["client_info"] = json!(client_info(p));
    }
    Json(body).into_response()
}

fn redeem_code(s: &EntraState, app: &AppRegistration, req: &TokenRequest) -> Response {
    let Some(code) = req.code.as_deref() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
        );
    };
    if s.used_codes.lock().unwrap_or_else(|e| e.into_inner()).contains(code) {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.");
    }
    let grant = s.codes.lock().unwrap_or_else(|e| e.into_inner()).remove(code);
    let Some(grant) = grant.filter(|g| g.expires > base::time::unix_now()) else {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.");
    };
    s.used_codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(code.to_string());
    if grant.client_id != app.client_id || req.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70002,
            "The redirect URI or client of the token request does not match the authorization request.",
        );
    }
    if let Some(challenge) = &grant.challenge {
        let ok = req.code_verifier.as_deref().is_some_and(|v| {
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, v.as_bytes())) == *challenge
        });
        if !ok {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
    }
    user_tokens(s, app, &grant.persona, grant.nonce.as_deref(), req)
}

fn redeem_refresh(s: &EntraState, app: &AppRegistration, req: &TokenRequest) -> Response {
    let entry = req
        .refresh_token
        .as_deref()
        .and_then(|t| s.refresh_tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(t));
    match entry {
        Some((client, persona)) if client == app.client_id => {
            s.refresh_grants.fetch_add(1, Ordering::Relaxed);
            user_tokens(s, app, &persona, None, req)
        }
        Some(_) | None => aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        ),
    }
}

fn client_credentials(s: &EntraState, app: &AppRegistration, req: &TokenRequest) -> Response {
    let scope = req.scope.as_deref().unwrap_or("");
    let Some(resource) = scope.strip_suffix("/.default") else {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: '{scope}'. The scope must end in /.default."));
    };
    let t = base::time::unix_now();
    let claims = json!({
        "aud": resource, "iss": s.v2_issuer(), "iat": t, "nbf": t, "exp": t + 3599,
        "tid": personas::TENANT_ID, "oid": "5e000000-0000-4000-8000-000000000001", "sub": "5e000000-0000-4000-8000-000000000001",
        "azp": app.client_id, "azpacr": "1", "idtyp": "app", "roles": app.app_roles, "ver": "2.0", "uti": random_text(16),
    });
    let token = s.sign(&claims, None);
    s.app_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone());
    Json(json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token }))
        .into_response()
}

#[derive(Deserialize)]
pub struct MintParams {
    persona: Option<String>,
    exp: Option<u64>,
    aud: Option<String>,
    kid: Option<String>,
    ver: Option<String>,
    /// Test-only overrides, for tokens a real Entra would never issue.
    nbf: Option<u64>,
    iss: Option<String>,
    tid: Option<String>,
    /// A `deviceid` claim to carry instead of the persona's (`none` removes it).
    deviceid: Option<String>,
}

/// `GET /_emulator/token?persona=alice[&exp=UNIX][&aud=..][&kid=..][&ver=1]`
pub async fn mint_token(State(s): State<Arc<EntraState>>, Query(q): Query<MintParams>) -> Response {
    let name = q.persona.as_deref().unwrap_or("alice");
    let Some(p) = personas::find(name) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no persona {name:?}"), "personas": personas::all().iter().map(|p| p.name).collect::<Vec<_>>() }))).into_response();
    };
    let v1 = q.ver.as_deref() == Some("1");
    let aud = q.aud.as_deref().unwrap_or(personas::GATEWAY_CLIENT_ID);
    let mut claims = s.user_claims(
        &p,
        aud,
        q.exp.unwrap_or_else(|| base::time::unix_now() + 3600),
        v1,
        None,
    );
    if let Some(nbf) = q.nbf {
        claims["nbf"] = json!(nbf);
    }
    if let Some(iss) = &q.iss {
        claims["iss"] = json!(iss);
    }
    if let Some(tid) = &q.tid {
        claims["tid"] = json!(tid);
    }
    match q.deviceid.as_deref() {
        Some("none") => {
            if let Some(o) = claims.as_object_mut() {
                o.remove("deviceid");
            }
        }
        Some(d) => claims["deviceid"] = json!(d),
        None => {}
    }
    let token = s.sign(&claims, q.kid.as_deref());
    Json(json!({
        "access_token": token, "token_type": "Bearer", "persona": p.name, "upn": p.upn(),
        "object_id": p.object_id, "device_id": p.device_id,
    }))
    .into_response()
}

/// POST /_emulator/keys/rotate
pub async fn rotate(State(s): State<Arc<EntraState>>) -> Response {
    // Key generation is CPU work; keep it off the async workers.
    let st = s.clone();
    match tokio::task::spawn_blocking(move || st.rotate_key()).await {
        Ok(Ok(kid)) => Json(json!({ "kid": kid })).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
pub struct RedirectBody {
    uri: String,
}

/// POST /_emulator/apps/{client_id}/redirect_uris {"uri": "..."}
pub async fn add_redirect(
    State(s): State<Arc<EntraState>>,
    Path(client_id): Path<String>,
    Json(b): Json<RedirectBody>,
) -> Response {
    if s.register_redirect(&client_id, &b.uri) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such app").into_response()
    }
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

/// POST /_emulator/users/{object_id}/app-roles {"role": "Portcullis.Admin"}
pub async fn assign_role(
    State(s): State<Arc<EntraState>>,
    Path(object_id): Path<String>,
    Json(b): Json<RoleBody>,
) -> Response {
    s.assign_app_role(&object_id, &b.role);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
pub struct CertBody {
    pem: String,
}

/// POST /_emulator/apps/{client_id}/certificates {"pem": "..."}
pub async fn add_certificate(
    State(s): State<Arc<EntraState>>,
    Path(client_id): Path<String>,
    Json(b): Json<CertBody>,
) -> Response {
    match s.register_certificate(&client_id, &b.pem) {
        Ok(thumb) => Json(json!({ "thumbprint": thumb })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// GET /_emulator/stats
pub async fn stats(State(s): State<Arc<EntraState>>) -> Response {
    let keys: Vec<String> = s
        .keys
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|k| k.kid.clone())
        .collect();
    Json(json!({
        "jwks_fetches": s.jwks_fetches.load(Ordering::Relaxed),
        "refresh_grants": s.refresh_grants.load(Ordering::Relaxed),
        "token_lifetime": s.token_lifetime.load(Ordering::Relaxed),
        "keys": keys,
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct Settings {
    token_lifetime: Option<u64>,
    partial_delta: Option<bool>,
}

/// POST /_emulator/settings {"token_lifetime": SECONDS, "partial_delta": BOOL}
pub async fn settings(State(s): State<Arc<EntraState>>, Json(b): Json<Settings>) -> StatusCode {
    if let Some(t) = b.token_lifetime {
        s.token_lifetime.store(t.clamp(1, 86_400), Ordering::Relaxed);
    }
    if let Some(p) = b.partial_delta {
        s.partial_delta.store(p, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}
