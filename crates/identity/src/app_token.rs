//! App-only access tokens (client credentials) for one resource, cached until shortly before
//! they expire; shared by the group look-ups and the sync loop's Graph client.

use std::sync::Arc;
use std::time::Duration;

use base::token::TokenCache;
use serde::Deserialize;

use super::credential::ClientCredential;

/// Where and how to get tokens.
pub struct AppTokens {
    token_url: String,
    client_id: String,
    scope: String,
    credential: Option<Arc<ClientCredential>>,
    http: reqwest::Client,
    cached: TokenCache,
}

/// Why no token could be had; `code` is Entra's AADSTS number when it sent one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TokenRequestError {
    pub status: Option<u16>,
    pub code: Option<u64>,
    pub error: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_codes: Option<Vec<u64>>,
}

impl AppTokens {
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        scope: &str,
        credential: Option<Arc<ClientCredential>>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            token_url: format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/')),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            credential,
            http,
            cached: TokenCache::default(),
        }
    }

    /// A valid token, from the cache or a new request.
    pub async fn token(&self) -> Result<String, TokenRequestError> {
        self.cached.get(|| self.request()).await
    }

    /// Forgets the cached token (after a 401 from the resource).
    pub async fn forget(&self) {
        self.cached.forget().await;
    }

    /// One token request, uncached (Run Test uses it to report Entra's answer as is).
    pub async fn request(&self) -> Result<(String, Duration), TokenRequestError> {
        let fail = |status: Option<u16>, code, error, message: String| TokenRequestError {
            status,
            code,
            error,
            message,
        };
        let credential = self
            .credential
            .as_ref()
            .ok_or_else(|| fail(None, None, None, "no app credential is configured".into()))?;
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("grant_type", "client_credentials".into()),
            ("scope", self.scope.clone()),
        ];
        form.extend(
            credential
                .form_fields(&self.token_url, &self.client_id)
                .map_err(|e| fail(None, None, None, e.to_string()))?,
        );
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| {
                fail(
                    None,
                    None,
                    None,
                    format!("token endpoint unreachable: {}", e.without_url()),
                )
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(Some(status.as_u16()), None, None, e.without_url().to_string()))?;
        if !status.is_success() {
            let e: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let (error, code) = e
                .map(|e| (e.error, e.error_codes.and_then(|c| c.first().copied())))
                .unwrap_or((None, None));
            let message = match (&error, code) {
                (Some(err), Some(c)) => format!("token request refused ({status}): {err} AADSTS{c}"),
                (Some(err), None) => format!("token request refused ({status}): {err}"),
                (None, _) => format!("token request refused ({status})"),
            };
            return Err(fail(Some(status.as_u16()), code, error, message));
        }
        let t: TokenBody = serde_json::from_slice(&body).map_err(|e| {
            fail(
                Some(status.as_u16()),
                None,
                None,
                format!("unreadable token response: {e}"),
            )
        })?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(300).saturating_sub(300).max(30));
        Ok((t.access_token, life))
    }
}
