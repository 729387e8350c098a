use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

use super::*;
use crate::jwks::KeySet;
use base::cloud::CONSUMER_TENANT;

const TID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const AUTHORITY: &str = "https://login.microsoftonline.com";

struct TestKey {
    enc: EncodingKey,
    jwk: serde_json::Value,
}

fn key(kid: &str, slot: usize) -> &'static TestKey {
    static KEYS: OnceLock<Vec<rsa::RsaPrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let mut rng = rsa::rand_core::OsRng;
        (0..2)
            .map(|_| rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap())
            .collect()
    });
    let k = &keys[slot];
    let tk = TestKey {
        enc: EncodingKey::from_rsa_der(k.to_pkcs1_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "RSA", "use": "sig", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()),
            "issuer": format!("{AUTHORITY}/{{tenantid}}/v2.0"),
        }),
    };
    Box::leak(Box::new(tk))
}

fn validator() -> Validator {
    let cfg = ValidatorConfig {
        allowed_tenants: vec![TID.to_string(), CONSUMER_TENANT.to_string()],
        audiences: vec![CLIENT.to_string(), "api://portcullis".to_string()],
        authority: AUTHORITY.to_string(),
        v1_issuer_base: "https://sts.windows.net".to_string(),
        leeway: Duration::from_secs(60),
        max_token_bytes: 16 * 1024,
        cache_capacity: 1000,
    };
    // Nothing listens on port 1: an unknown-kid refresh fails fast and the old keys remain.
    let jwks = Jwks::new(
        &cfg.allowed_tenants,
        |t| format!("http://127.0.0.1:1/{t}/keys"),
        crate::UNKNOWN_KID_INTERVAL,
        reqwest::Client::new(),
    );
    let doc = json!({ "keys": [key("k1", 0).jwk] });
    for t in jwks.tenants() {
        t.install(KeySet::from_jwks(doc.to_string().as_bytes(), unix_now()).unwrap());
    }
    Validator::new(cfg, Arc::new(jwks))
}

fn claims() -> serde_json::Value {
    let now = unix_now();
    json!({
        "aud": CLIENT, "iss": format!("{AUTHORITY}/{TID}/v2.0"), "tid": TID, "ver": "2.0",
        "oid": "0A0A0A0A-0000-0000-0000-000000000001", "preferred_username": "alice@contoso.test",
        "name": "Alice", "groups": ["g1", "g2"], "roles": ["Portcullis.Admin"], "deviceid": "DEV-1",
        "iat": now, "nbf": now, "exp": now + 3600,
    })
}

fn sign(claims: &serde_json::Value, kid: &str, slot: usize) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key(kid, slot).enc).unwrap()
}

fn with(f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut c = claims();
    f(&mut c);
    sign(&c, "k1", 0)
}

#[tokio::test]
async fn valid_v2_token_gives_a_principal_and_is_cached() {
    let v = validator();
    let t = sign(&claims(), "k1", 0);
    let p = v.validate(&t).await.unwrap();
    assert_eq!(&*p.tenant, TID);
    assert_eq!(&*p.object_id, "0a0a0a0a-0000-0000-0000-000000000001");
    assert_eq!(p.username.as_deref(), Some("alice@contoso.test"));
    assert_eq!(p.groups.len(), 2);
    assert_eq!(p.device_id.as_deref(), Some("dev-1"));
    assert_eq!(p.version, TokenVersion::V2);
    assert!(!p.groups_overage);
    let again = v.validate(&t).await.unwrap();
    assert!(Arc::ptr_eq(&p, &again), "second validation must come from the cache");
}

#[tokio::test]
async fn valid_v1_token_with_app_id_uri_audience() {
    let v = validator();
    let t = with(|c| {
        c["ver"] = json!("1.0");
        c["iss"] = json!(format!("https://sts.windows.net/{TID}/"));
        c["aud"] = json!("api://portcullis");
        c["upn"] = json!("alice@contoso.test");
    });
    let p = v.validate(&t).await.unwrap();
    assert_eq!(p.version, TokenVersion::V1);
}

#[tokio::test]
async fn overage_is_flagged() {
    let v = validator();
    let t = with(|c| {
        c.as_object_mut().unwrap().remove("groups");
        c["_claim_names"] = json!({ "groups": "src1" });
        c["_claim_sources"] = json!({ "src1": { "endpoint": "https://graph.windows.net/x" } });
    });
    assert!(v.validate(&t).await.unwrap().groups_overage);
    let t = with(|c| c["hasgroups"] = json!(true));
    assert!(v.validate(&t).await.unwrap().groups_overage);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_right_reason() {
    let v = validator();
    let now = unix_now();
    let good = sign(&claims(), "k1", 0);
    let (h, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut tampered_claims = claims();
    tampered_claims["oid"] = json!("0a0a0a0a-0000-0000-0000-00000000beef");
    let tampered = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(tampered_claims.to_string()));
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#));
    let hs = {
        let mut hh = Header::new(Algorithm::HS256);
        hh.kid = Some("k1".into());
        let secret = key("k1", 0).jwk["n"].as_str().unwrap().as_bytes().to_vec();
        jsonwebtoken::encode(&hh, &claims(), &EncodingKey::from_secret(&secret)).unwrap()
    };
    let cases: Vec<(&str, String, TokenError)> = vec![
        ("empty", String::new(), TokenError::Missing),
        ("not three parts", "abc.def".into(), TokenError::Malformed),
        ("bad base64", "!!!.@@@.###".into(), TokenError::Malformed),
        (
            "bad json",
            format!("{}.{}.x", URL_SAFE_NO_PAD.encode("{"), URL_SAFE_NO_PAD.encode("{")),
            TokenError::Malformed,
        ),
        ("alg none", none, TokenError::Algorithm("none".into())),
        (
            "hs256 with public key as secret",
            hs,
            TokenError::Algorithm("HS256".into()),
        ),
        ("unknown kid", sign(&claims(), "k-unknown", 1), TokenError::UnknownKey),
        ("signed by another key", sign(&claims(), "k1", 1), TokenError::Signature),
        ("tampered payload", tampered, TokenError::Signature),
        ("empty signature", format!("{h}.{payload}."), TokenError::Signature),
        (
            "signature not base64url",
            format!("{h}.{payload}.{sig}*"),
            TokenError::Malformed,
        ),
        (
            "expired and signed by another key: the signature is judged first",
            {
                let mut c = claims();
                c["exp"] = json!(now - 600);
                sign(&c, "k1", 1)
            },
            TokenError::Signature,
        ),
        ("expired", with(|c| c["exp"] = json!(now - 600)), TokenError::Expired),
        (
            "not yet valid",
            with(|c| c["nbf"] = json!(now + 600)),
            TokenError::NotYetValid,
        ),
        (
            "wrong audience",
            with(|c| c["aud"] = json!("someone-else")),
            TokenError::Audience,
        ),
        (
            "wrong issuer",
            with(|c| c["iss"] = json!("https://evil.test/x/v2.0")),
            TokenError::Issuer,
        ),
        (
            "v2 with v1 issuer",
            with(|c| c["iss"] = json!(format!("https://sts.windows.net/{TID}/"))),
            TokenError::Issuer,
        ),
        (
            "tenant not allowed",
            with(|c| c["tid"] = json!("99999999-2222-3333-4444-555555555555")),
            TokenError::TenantNotAllowed,
        ),
        (
            "consumer tenant",
            with(|c| c["tid"] = json!(CONSUMER_TENANT)),
            TokenError::ConsumerTenant,
        ),
        (
            "tenant not a guid",
            with(|c| c["tid"] = json!("contoso")),
            TokenError::TenantFormat,
        ),
        (
            "no version",
            with(|c| {
                c.as_object_mut().unwrap().remove("ver");
            }),
            TokenError::MissingClaim("ver"),
        ),
        ("64 KB token", "a".repeat(64 * 1024), TokenError::TooLarge),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.validate(&token).await.unwrap_err(), want, "{name}");
    }
    // The unknown kid caused one refresh attempt; a flood within 5 minutes causes none.
    let tenant = v.jwks().tenant(TID).unwrap();
    let before = tenant.fetch_count();
    for _ in 0..50 {
        assert_eq!(
            v.validate(&sign(&claims(), "k-other", 1)).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(
        tenant.fetch_count(),
        before,
        "unknown-kid refreshes are limited to one per 5 minutes"
    );
    // Failed refreshes keep the last good keys.
    assert!(v.validate(&good).await.is_ok());
}

#[test]
fn guids() {
    assert!(is_guid(TID));
    assert!(!is_guid("1111111-2222-3333-4444-5555555555555"));
    assert!(!is_guid("common"));
}

#[test]
fn tokens_that_end_alike_share_a_hash_but_never_an_entry() {
    use std::hash::BuildHasher;
    let h = TailHash::default();
    let tail = "x".repeat(TailHash::TAIL);
    let (a, b) = (format!("aaaa.{tail}"), format!("bbbb.{tail}"));
    assert_eq!(
        h.hash_one(a.as_str()),
        h.hash_one(b.as_str()),
        "only the tail is hashed"
    );
    assert_ne!(h.hash_one(a.as_str()), h.hash_one(format!("aaaa.{tail}y").as_str()));
    let cache: moka::sync::Cache<String, u32, TailHash> = moka::sync::Cache::builder().build_with_hasher(h);
    cache.insert(a.clone(), 1);
    cache.insert(b.clone(), 2);
    assert_eq!(cache.get(a.as_str()), Some(1));
    assert_eq!(cache.get(b.as_str()), Some(2), "equality still compares whole tokens");
}
