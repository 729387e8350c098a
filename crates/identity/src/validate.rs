//! Entra access- and ID-token validation (reference §1.2–1.6, design implication 5): RS256
//! only, key by `kid` from the tenant's own key set, issuer by version and tenant, the key's
//! own issuer, audience, `nbf`/`exp` with leeway, tenant allow-list, the consumer tenant
//! refused. Successful results are cached by token until they expire, so a repeated token
//! costs a hash lookup instead of an RSA verification.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use serde::Deserialize;

use super::jwks::Jwks;
use super::{Principal, TokenError, TokenVersion};
use base::is_guid;
use base::time::unix_now;

/// What tokens must look like.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// Lower-case tenant GUIDs whose users are accepted.
    pub allowed_tenants: Vec<String>,
    /// Accepted `aud` values: the client id, and for v1 tokens the App ID URI(s).
    pub audiences: Vec<String>,
    /// Base of v2 issuers and endpoints, e.g. `https://login.microsoftonline.com`.
    pub authority: String,
    /// Base of v1 issuers, e.g. `https://sts.windows.net`.
    pub v1_issuer_base: String,
    /// Allowed clock skew for `nbf` and `exp`.
    pub leeway: Duration,
    /// Larger tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Validated tokens kept in memory.
    pub cache_capacity: u64,
}

impl ValidatorConfig {
    pub fn v2_issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.authority.trim_end_matches('/'))
    }

    pub fn v1_issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/", self.v1_issuer_base.trim_end_matches('/'))
    }
}

/// Validates bearer tokens into principals.
pub struct Validator {
    cfg: ValidatorConfig,
    jwks: Arc<Jwks>,
    /// Claims only: the signature is verified before, against the parsed JWKS key.
    validation: Validation,
    /// jsonwebtoken's `decode` takes a key even with signature checks off; never used.
    unused_key: jsonwebtoken::DecodingKey,
    cache: Cache<String, Arc<Principal>, TailHash>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    exp: u64,
    tid: Option<String>,
    oid: Option<String>,
    ver: Option<String>,
    upn: Option<String>,
    preferred_username: Option<String>,
    unique_name: Option<String>,
    name: Option<String>,
    groups: Option<Vec<String>>,
    #[serde(rename = "_claim_names")]
    claim_names: Option<serde_json::Value>,
    hasgroups: Option<bool>,
    roles: Option<Vec<String>>,
    /// Delegated scopes: present in user access tokens only.
    scp: Option<String>,
    deviceid: Option<String>,
    nonce: Option<String>,
}

/// Time-to-live of a cache entry: until the token expires.
struct UntilExpiry;

impl moka::Expiry<String, Arc<Principal>> for UntilExpiry {
    fn expire_after_create(&self, _k: &String, p: &Arc<Principal>, _now: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_secs(p.expires_at.saturating_sub(unix_now())))
    }
}

impl Validator {
    /// The tenants whose users are accepted (the first is the home tenant).
    pub fn tenants(&self) -> &[String] {
        &self.cfg.allowed_tenants
    }

    pub fn new(cfg: ValidatorConfig, jwks: Arc<Jwks>) -> Self {
        // (See [`TailHash`] for why the cache hashes only the end of a token.)
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_audience(&cfg.audiences);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.insecure_disable_signature_validation();
        let cache = Cache::builder()
            .max_capacity(cfg.cache_capacity)
            .expire_after(UntilExpiry)
            .build_with_hasher(TailHash::default());
        Self {
            cfg,
            jwks,
            validation,
            unused_key: jsonwebtoken::DecodingKey::from_secret(&[]),
            cache,
        }
    }

    pub fn config(&self) -> &ValidatorConfig {
        &self.cfg
    }

    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Validates `token`. A cached token or a known key needs no I/O; an unknown key id may
    /// refresh the tenant's keys once (rate-limited, single-flight).
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > self.cfg.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        if let Some(p) = self.cache.get(token) {
            if p.expires_at + self.cfg.leeway.as_secs() > unix_now() {
                return Ok(p);
            }
        }
        let (principal, _nonce) = self.verify(token).await?;
        let principal = Arc::new(principal);
        self.cache.insert(token.to_string(), principal.clone());
        Ok(principal)
    }

    /// Validates an ID token from a sign-in: everything `validate` checks, plus the `nonce`
    /// sent with the authorization request. Never cached.
    pub async fn validate_id_token(&self, token: &str, nonce: &str) -> Result<Principal, TokenError> {
        if token.len() > self.cfg.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let (principal, token_nonce) = self.verify(token).await?;
        match token_nonce {
            Some(n) if base::ct_eq(n.as_bytes(), nonce.as_bytes()) => Ok(principal),
            Some(_) | None => Err(TokenError::Nonce),
        }
    }

    /// Full validation without the token cache (ID tokens; benchmarks of the uncached path).
    /// Returns the principal and the token's `nonce`, if any.
    pub async fn verify(&self, token: &str) -> Result<(Principal, Option<String>), TokenError> {
        let now = unix_now();
        let header = jsonwebtoken::decode_header(token).map_err(|_| unparsable_header(token))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let tid = unverified_tenant(token)?;
        check_tenant(&tid, &self.cfg.allowed_tenants)?;
        let keys = self.jwks.tenant(&tid).ok_or(TokenError::TenantNotAllowed)?;
        let key = match keys.snapshot().get(&kid, now) {
            Some(k) => k.clone(),
            None => {
                if !keys.refresh_for_unknown(self.jwks.http(), &kid).await {
                    return Err(TokenError::UnknownKey);
                }
                keys.snapshot()
                    .get(&kid, unix_now())
                    .cloned()
                    .ok_or(TokenError::UnknownKey)?
            }
        };
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        key.verifier
            .verify_sig(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        // The signature is verified above; jsonwebtoken checks the claims (exp, nbf, aud, iss).
        let data = jsonwebtoken::decode::<Claims>(token, &self.unused_key, &self.validation).map_err(map_jwt_error)?;
        let c = data.claims;
        if c.tid.as_deref() != Some(tid.as_str()) {
            return Err(TokenError::TenantNotAllowed);
        }
        let version = match c.ver.as_deref() {
            Some("2.0") => TokenVersion::V2,
            Some("1.0") => TokenVersion::V1,
            Some(v) => return Err(TokenError::Version(v.to_string())),
            None => return Err(TokenError::MissingClaim("ver")),
        };
        let v2_issuer = self.cfg.v2_issuer(&tid);
        let expected = match version {
            TokenVersion::V2 => v2_issuer.clone(),
            TokenVersion::V1 => self.cfg.v1_issuer(&tid),
        };
        if c.iss != expected {
            return Err(TokenError::Issuer);
        }
        if let Some(template) = &key.issuer {
            let key_issuer = template.replace("{tenantid}", &tid);
            // The v2 key set also signs v1 tokens; its keys carry the v2 issuer form.
            let ok = key_issuer == c.iss || (version == TokenVersion::V1 && key_issuer == v2_issuer);
            if !ok {
                return Err(TokenError::KeyIssuer);
            }
        }
        let oid = c.oid.ok_or(TokenError::MissingClaim("oid"))?;
        let arcs =
            |v: Option<Vec<String>>| -> Arc<[Arc<str>]> { v.unwrap_or_default().into_iter().map(Arc::from).collect() };
        let overage = c.hasgroups == Some(true) || c.claim_names.as_ref().and_then(|n| n.get("groups")).is_some();
        let principal = Principal {
            tenant: Arc::from(tid.as_str()),
            object_id: Arc::from(oid.to_ascii_lowercase()),
            username: c.upn.or(c.preferred_username).or(c.unique_name).map(Arc::from),
            name: c.name.map(Arc::from),
            groups: arcs(c.groups),
            groups_overage: overage,
            roles: arcs(c.roles),
            device_id: c.deviceid.map(|d| Arc::from(d.to_ascii_lowercase())),
            version,
            expires_at: c.exp,
            delegated: c.scp.is_some_and(|s| !s.trim().is_empty()),
        };
        Ok((principal, c.nonce))
    }
}

/// Reads `tid` from the payload before verification, only to choose the tenant's key set;
/// nothing else is trusted until the signature verified.
fn unverified_tenant(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Tid {
        tid: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let t: Tid = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    Ok(t.tid.ok_or(TokenError::MissingClaim("tid"))?.to_ascii_lowercase())
}

/// jsonwebtoken refuses headers with algorithms it does not know (`none`); name the
/// algorithm in the error when the header is otherwise readable.
fn unparsable_header(token: &str) -> TokenError {
    #[derive(Deserialize)]
    struct Alg {
        alg: Option<String>,
    }
    let alg = token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|b| serde_json::from_slice::<Alg>(&b).ok())
        .and_then(|a| a.alg);
    match alg {
        Some(a) if a != "RS256" => TokenError::Algorithm(a),
        Some(_) | None => TokenError::Malformed,
    }
}

fn check_tenant(tid: &str, allowed: &[String]) -> Result<(), TokenError> {
    if !is_guid(tid) {
        return Err(TokenError::TenantFormat);
    }
    if tid == base::cloud::CONSUMER_TENANT {
        return Err(TokenError::ConsumerTenant);
    }
    if !allowed.iter().any(|a| a == tid) {
        return Err(TokenError::TenantNotAllowed);
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm("mismatch".into()),
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "iss" => "iss",
            _ => "required",
        }),
        // ErrorKind is #[non_exhaustive]: every remaining kind (bad base64, JSON, UTF-8, key
        // format, crypto) means the token cannot be what it claims.
        _ => TokenError::Malformed,
    }
}

/// Hashes a token by its length and its last [`TailHash::TAIL`] bytes (inside the signature),
/// with the process's random SipHash keys: hashing a whole token (about 1 KB) with SipHash was
/// the largest single cost of a cached lookup. Equality still compares the whole token. Only
/// tokens whose signature verified are ever inserted, and no one but the issuer can make two
/// such tokens end alike, so the shorter input gives an attacker no way to crowd one bucket.
#[derive(Clone, Default)]
pub struct TailHash(std::collections::hash_map::RandomState);

impl TailHash {
    const TAIL: usize = 48;
}

impl std::hash::BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

/// The hasher of [`TailHash`].
pub struct TailHasher(std::collections::hash_map::DefaultHasher);

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0.write(&bytes[bytes.len().saturating_sub(TailHash::TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests;
