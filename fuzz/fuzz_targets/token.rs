//! Bearer tokens are attacker-controlled: whatever the bytes, validation answers with a
//! `TokenError` (never a panic), and nothing unsigned by the tenant's key is ever accepted.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis::identity::{Jwks, KeySet, Validator, ValidatorConfig, UNKNOWN_KID_INTERVAL};

const TID: &str = "11111111-2222-3333-4444-555555555555";
/// The modulus of a 2048-bit key whose private half was thrown away: no input can carry a
/// valid signature, so every token must be refused.
const N: &str = "6sWKZjH8Zd1o47iseooOUkxFJsJw0Y-d2JnhLrYigGAL40t4dxMuxS25ghF-eoHtugaD2glfEjCQs8UBbSNQyzwSLT2qwOXqFwx3IW-YUmtB219G4MW5PGV-UPKUalcmoWzywPPv-zmhc6hFtQY35GXeUqIWfADHcRDv79qRbDvpzEQpdpzONAmg7dGfzS_gSGF_zm_D3H7HZVbUPC5-lDl8OHFhodM5QRrrj1xiIpg0JWL372cWl1W8K51lao58XuECsrA7WzrRdMDw4ZzDaHSmrOfJuH6Rj42nUYZKTeqmNERSByUZdHAwAN-E4vebf132wtj5gFh0wrxfmnrXYQ";

fn world() -> &'static (tokio::runtime::Runtime, Validator) {
    static W: OnceLock<(tokio::runtime::Runtime, Validator)> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg = ValidatorConfig {
            allowed_tenants: vec![TID.to_string()],
            audiences: vec!["api://portcullis".to_string()],
            authority: "https://login.microsoftonline.com".to_string(),
            v1_issuer_base: "https://sts.windows.net".to_string(),
            leeway: Duration::from_secs(60),
            max_token_bytes: 16 * 1024,
            cache_capacity: 1000,
        };
        // Nothing listens on port 1: an unknown key id refreshes once, fails fast, and is refused.
        let jwks = Jwks::new(
            &cfg.allowed_tenants,
            |t| format!("http://127.0.0.1:1/{t}/keys"),
            UNKNOWN_KID_INTERVAL,
            reqwest::Client::new(),
        );
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","use":"sig","kid":"k1","n":"{N}","e":"AQAB"}}]}}"#);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for t in jwks.tenants() {
            t.install(KeySet::from_jwks(doc.as_bytes(), now).unwrap());
        }
        (rt, Validator::new(cfg, Arc::new(jwks)))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let (rt, v) = world();
        assert!(rt.block_on(v.validate(token)).is_err());
    }
});
