//! Shared by the benchmarks: a validator with an in-memory signing key (no network) and a
//! token for alice's Mac as Entra would issue it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::identity::{Jwks, KeySet, Validator, ValidatorConfig, UNKNOWN_KID_INTERVAL};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

pub const TID: &str = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10";
pub const CLIENT: &str = "5f0c8a9e-3b2d-4e6f-8a1c-9d7e6b5a4c3f";
pub const AUTHORITY: &str = "https://login.microsoftonline.com";

pub fn setup() -> (Validator, String) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key");
    let jwk = json!({ "keys": [{
        "kty": "RSA", "use": "sig", "kid": "k1",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        "issuer": format!("{AUTHORITY}/{{tenantid}}/v2.0"),
    }]});
    let cfg = ValidatorConfig {
        allowed_tenants: vec![TID.into()],
        audiences: vec![CLIENT.into()],
        authority: AUTHORITY.into(),
        v1_issuer_base: "https://sts.windows.net".into(),
        leeway: Duration::from_secs(60),
        max_token_bytes: 16 * 1024,
        cache_capacity: 100_000,
    };
    let jwks = Jwks::new(
        &cfg.allowed_tenants,
        |_| "http://127.0.0.1:1/".into(),
        UNKNOWN_KID_INTERVAL,
        reqwest::Client::new(),
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    for t in jwks.tenants() {
        t.install(KeySet::from_jwks(jwk.to_string().as_bytes(), now).expect("jwks"));
    }
    let claims = json!({
        "aud": CLIENT, "iss": format!("{AUTHORITY}/{TID}/v2.0"), "tid": TID, "ver": "2.0",
        "oid": "a1000000-0000-4000-8000-000000000001", "preferred_username": "alice@contoso.test",
        "name": "Alice Adams", "groups": ["6a000000-0000-4000-8000-000000000001"], "deviceid": "d1000000-0000-4000-8000-00000000000a",
        "iat": now, "nbf": now, "exp": now + 3600,
    });
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    let enc = EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("der").as_bytes());
    let token = jsonwebtoken::encode(&h, &claims, &enc).expect("sign");
    (Validator::new(cfg, Arc::new(jwks)), token)
}
