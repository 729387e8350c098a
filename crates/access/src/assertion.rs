//! `X-Portcullis-Assertion`: a short-lived ES256 JWT in which the gateway states who the user
//! is, which device they use and what was decided, so an upstream can verify the identity
//! headers cryptographically instead of trusting the network. The public key is served at
//! `/.portcullis/jwks.json`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// Lifetime of one assertion.
pub const ASSERTION_TTL_SECS: u64 = 60;

/// Signs assertions with one P-256 key.
pub struct AssertionSigner {
    key: EncodingKey,
    kid: String,
    jwks: String,
}

impl AssertionSigner {
    /// A key from a PKCS#8 PEM file, or a fresh one (every node then has its own key; upstreams
    /// should fetch the JWKS of the node that signed, or configure a shared key file).
    pub fn new(key_file: Option<&std::path::Path>) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = match key_file {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
                    .map_err(|e| format!("{}: not a PKCS#8 PEM private key ({e})", path.display()))?;
                der.secret_pkcs8_der().to_vec()
            }
            None => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| "cannot generate a key".to_string())?
                .as_ref()
                .to_vec(),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| format!("not a P-256 key ({e})"))?;
        let public = pair.public_key().as_ref();
        // Uncompressed point: 0x04 || X (32) || Y (32).
        let (x, y) = (&public[1..33], &public[33..65]);
        let kid = URL_SAFE_NO_PAD.encode(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..12]);
        let jwks = serde_json::json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string();
        Ok(Self {
            key: EncodingKey::from_ec_der(&pkcs8),
            kid,
            jwks,
        })
    }

    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs `claims` (to which `iat`, `exp` and `iss` are added).
    pub fn sign(&self, mut claims: serde_json::Value, now: u64) -> Option<String> {
        let obj = claims.as_object_mut()?;
        obj.insert("iss".into(), "portcullis".into());
        obj.insert("iat".into(), now.into());
        obj.insert("exp".into(), (now + ASSERTION_TTL_SECS).into());
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_verify_with_the_published_key() {
        let s = AssertionSigner::new(None).unwrap();
        let jwt = s.sign(serde_json::json!({ "sub": "u", "aud": "app" }), 1_000).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(s.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["app"]);
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "u");
        assert_eq!(data.claims["exp"], 1_060);
    }
}
