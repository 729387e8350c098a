//! Identity: Entra ID token validation against per-tenant signing keys (JWKS), producing a
//! verified [`Principal`]. Browser sign-in, sessions and group overage build on this.
//!
//! May depend on `base`, `config` (typed values) and `store` (only [`store::SessionRows`], the
//! opaque rows [`store_sessions`] seals sessions into); never on `access`, `proxy`, `admin` or
//! `sync`. The request path calls [`Validator::validate`], which needs no lock and, for a known
//! key, no I/O.

pub mod app_token;
pub mod credential;
mod current;
mod error;
pub mod groups;
pub mod jwks;
pub mod oidc;
mod principal;
pub mod session;
pub mod store_sessions;
mod validate;

use std::sync::Arc;
use std::time::Duration;

pub use current::CurrentIdentity;
pub use error::TokenError;
pub use jwks::{Jwks, JwksError, KeySet, TenantKeys, UNKNOWN_KID_INTERVAL};
pub use principal::{Principal, TokenVersion};
pub use validate::{Validator, ValidatorConfig};

/// Everything the request path needs to authenticate users: built at start, and again by a
/// reload of `[entra]` ([`Identity::with_entra`]), held in a [`CurrentIdentity`].
pub struct Identity {
    pub validator: Arc<Validator>,
    pub oidc: oidc::Oidc,
    pub sessions: Arc<dyn session::SessionStore>,
    pub groups: groups::GroupResolver,
    pub sealer: Arc<base::seal::Sealer>,
    /// Name of the session cookie; the in-flight sign-in cookie is `{cookie_name}-login`.
    pub cookie_name: String,
    pub login_cookie_name: String,
    pub session_lifetime: Duration,
}

impl Identity {
    /// Keeps sessions in `store` instead of this process's memory.
    pub fn with_sessions(mut self, store: Arc<dyn session::SessionStore>) -> Self {
        self.sessions = store;
        self
    }
}

/// Why identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("session.cookie_key: {0}")]
    CookieKey(String),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    Credential(String),
}

impl Identity {
    pub fn new(entra: &config::EntraConfig, session: &config::SessionConfig) -> Result<Self, IdentityError> {
        let sealer = Arc::new(match &session.cookie_key {
            Some(k) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k.expose())
                    .map_err(|_| IdentityError::CookieKey("not base64".into()))?;
                base::seal::Sealer::new(&bytes).map_err(|e| IdentityError::CookieKey(e.to_string()))?
            }
            None => {
                tracing::warn!("session.cookie_key is not set: using a random key; sessions end at restart and are not shared between nodes");
                base::seal::Sealer::random().map_err(|e| IdentityError::CookieKey(e.to_string()))?
            }
        });
        let sessions = Arc::new(session::MemorySessions::new(
            session.lifetime,
            session.idle_timeout,
            1_000_000,
        ));
        let kept = Kept {
            sessions,
            sealer,
            cookie_name: session.cookie_name.clone(),
            session_lifetime: session.lifetime,
        };
        Self::build(entra, kept, None)
    }

    /// The identity of `entra` (a reloaded file's), with this one's sessions, cookie key and
    /// cookie names — `[session]` applies only at start — and the signing keys this one holds
    /// for the tenants both trust, so a reload does not fetch them again.
    pub fn with_entra(&self, entra: &config::EntraConfig) -> Result<Self, IdentityError> {
        let kept = Kept {
            sessions: self.sessions.clone(),
            sealer: self.sealer.clone(),
            cookie_name: self.cookie_name.clone(),
            session_lifetime: self.session_lifetime,
        };
        Self::build(entra, kept, Some(self.validator.jwks()))
    }

    /// Fetches the signing keys of the tenants that have none yet (added by a reload); the
    /// tenants whose fetch failed, with why. Their tokens are refused until the keys arrive,
    /// which the first such token and the hourly refresh try again.
    pub async fn fetch_missing_keys(&self) -> Vec<(String, JwksError)> {
        let jwks = self.validator.jwks();
        let mut failed = Vec::new();
        for t in jwks.tenants().filter(|t| t.snapshot().is_empty()) {
            if let Err(e) = t.refresh(jwks.http()).await {
                failed.push((t.tenant.clone(), e));
            }
        }
        failed
    }

    fn build(entra: &config::EntraConfig, kept: Kept, previous: Option<&Jwks>) -> Result<Self, IdentityError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| IdentityError::Http(e.to_string()))?;
        let mut audiences = vec![entra.client_id.clone()];
        audiences.extend(entra.app_id_uris.iter().cloned());
        let vcfg = ValidatorConfig {
            allowed_tenants: entra.allowed_tenants.clone(),
            audiences,
            authority: entra.authority_url.clone(),
            v1_issuer_base: entra.v1_issuer_url.clone(),
            leeway: entra.clock_skew,
            max_token_bytes: 16 * 1024,
            cache_capacity: 100_000,
        };
        let authority = entra.authority_url.clone();
        let jwks = Jwks::new(
            &entra.allowed_tenants,
            |t| format!("{authority}/{t}/discovery/v2.0/keys"),
            entra.jwks_min_refresh_interval,
            http.clone(),
        );
        if let Some(previous) = previous {
            jwks.keep_keys_of(previous);
        }
        let validator = Arc::new(Validator::new(vcfg, Arc::new(jwks)));
        let credential = match &entra.credential {
            Some(c) => Some(Arc::new(
                credential::ClientCredential::load(c).map_err(|e| IdentityError::Credential(e.to_string()))?,
            )),
            None => None,
        };
        let oidc = oidc::Oidc::new(
            &entra.authority_url,
            &entra.tenant_id,
            &entra.client_id,
            credential.clone(),
            http.clone(),
            validator.clone(),
        );
        let groups = groups::GroupResolver::new(
            &entra.authority_url,
            &entra.tenant_id,
            &entra.client_id,
            credential,
            &entra.graph_url,
            entra.group_cache_ttl,
            http,
        );
        Ok(Self {
            validator,
            oidc,
            sessions: kept.sessions,
            groups,
            sealer: kept.sealer,
            login_cookie_name: format!("{}-login", kept.cookie_name),
            cookie_name: kept.cookie_name,
            session_lifetime: kept.session_lifetime,
        })
    }
}

/// What an identity keeps across a reload of `[entra]`.
struct Kept {
    sessions: Arc<dyn session::SessionStore>,
    sealer: Arc<base::seal::Sealer>,
    cookie_name: String,
    session_lifetime: Duration,
}
