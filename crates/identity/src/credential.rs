//! The gateway's app credential at Entra's token endpoint: a client secret, a certificate
//! (an RS256 client assertion with the `x5t#S256` thumbprint), or secretless workload identity
//! federation (a client assertion issued by the platform, read from a file on every use).

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use base::seal::random_token;
use base::time::unix_now;
use config::{ClientCredentialConfig, Secret};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A loaded credential.
pub enum ClientCredential {
    Secret(Secret),
    Certificate { key: EncodingKey, thumbprint: String },
    AssertionFile(PathBuf),
}

/// Why a credential could not be loaded or used. Messages never contain secret material.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    #[error("entra.client_certificate: {0}")]
    Certificate(String),
    #[error("entra.client_certificate_key: {0}")]
    Key(String),
    #[error("entra.client_assertion_file: {0}")]
    AssertionFile(String),
    #[error("client assertion could not be signed: {0}")]
    Sign(String),
}

impl ClientCredential {
    pub fn load(cfg: &ClientCredentialConfig) -> Result<Self, CredentialError> {
        match cfg {
            ClientCredentialConfig::Secret(s) => Ok(Self::Secret(s.clone())),
            ClientCredentialConfig::Certificate { cert, key } => {
                let certs = base::pem::read_certs(cert).map_err(CredentialError::Certificate)?;
                let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, certs[0].as_ref()));
                let pem = std::fs::read(key).map_err(|e| CredentialError::Key(format!("{}: {e}", key.display())))?;
                let key = EncodingKey::from_rsa_pem(&pem)
                    .map_err(|e| CredentialError::Key(format!("{}: not an RSA private key ({e})", key.display())))?;
                Ok(Self::Certificate { key, thumbprint })
            }
            ClientCredentialConfig::AssertionFile(path) => {
                std::fs::metadata(path)
                    .map_err(|e| CredentialError::AssertionFile(format!("{}: {e}", path.display())))?;
                Ok(Self::AssertionFile(path.clone()))
            }
        }
    }

    /// The form fields that authenticate the app in a token request to `token_url`.
    pub fn form_fields(
        &self,
        token_url: &str,
        client_id: &str,
    ) -> Result<Vec<(&'static str, String)>, CredentialError> {
        match self {
            Self::Secret(s) => Ok(vec![("client_secret", s.expose().to_string())]),
            Self::Certificate { key, thumbprint } => {
                let mut h = Header::new(Algorithm::RS256);
                h.x5t_s256 = Some(thumbprint.clone());
                let now = unix_now();
                let claims = serde_json::json!({
                    "aud": token_url, "iss": client_id, "sub": client_id,
                    "jti": random_token(16).map_err(|e| CredentialError::Sign(e.to_string()))?,
                    "nbf": now, "iat": now, "exp": now + 600,
                });
                let jwt = jsonwebtoken::encode(&h, &claims, key).map_err(|e| CredentialError::Sign(e.to_string()))?;
                Ok(vec![
                    ("client_assertion_type", ASSERTION_TYPE.into()),
                    ("client_assertion", jwt),
                ])
            }
            Self::AssertionFile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CredentialError::AssertionFile(format!("{}: {e}", path.display())))?;
                let jwt = text.trim();
                if jwt.is_empty() {
                    return Err(CredentialError::AssertionFile(format!("{} is empty", path.display())));
                }
                Ok(vec![
                    ("client_assertion_type", ASSERTION_TYPE.into()),
                    ("client_assertion", jwt.to_string()),
                ])
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret(_) => "client secret",
            Self::Certificate { .. } => "certificate",
            Self::AssertionFile(_) => "federated assertion",
        }
    }
}
