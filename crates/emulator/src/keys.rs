//! The emulated Entra signing keys: RSA 2048, rotated on command. The newest key signs; all
//! keys stay published in the JWKS, as Entra publishes several at once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

/// One signing key.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    /// Base64url modulus and exponent, as in a JWK.
    pub n: String,
    pub e: String,
}

#[derive(Debug, thiserror::Error)]
#[error("key generation failed: {0}")]
pub struct KeyError(String);

impl SigningKey {
    pub fn generate(kid: String) -> Result<Self, KeyError> {
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| KeyError(e.to_string()))?;
        let der = key.to_pkcs1_der().map_err(|e| KeyError(e.to_string()))?;
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        })
    }

    /// The JWK, with Entra's per-key `issuer` property when given.
    pub fn jwk(&self, issuer: Option<&str>) -> serde_json::Value {
        let mut j = serde_json::json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": self.n, "e": self.e,
        });
        if let Some(i) = issuer {
            j["issuer"] = serde_json::Value::String(i.to_string());
        }
        j
    }
}
