//! Browser sign-in with Entra ID: authorization code flow with PKCE (S256), `state` and
//! `nonce`, `response_mode=form_post`, code redemption with the client secret, ID token
//! validation, and session renewal with the refresh token (reference §1.7).
//!
//! The in-flight sign-in (state, nonce, PKCE verifier, return path) travels in a sealed
//! short-lived cookie rather than in server memory, so any node can finish it. That cookie is
//! `SameSite=None` because Entra's form_post back to the gateway is a cross-site POST.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::credential::ClientCredential;
use super::session::Session;
use super::{TokenError, Validator};
use base::ct_eq;
use base::seal::{random_token, Sealer};
use base::time::unix_now;

/// How long a started sign-in may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Where Entra posts the result, on the gateway's own host.
pub const CALLBACK_PATH: &str = "/.portcullis/callback";
pub const SIGN_OUT_PATH: &str = "/.portcullis/sign_out";
/// Where Entra sends the browser back after ending its own session (register it as a
/// redirect URI of the app, as the callback is).
pub const SIGNED_OUT_PATH: &str = "/.portcullis/signed_out";
const LOGIN_PURPOSE: &str = "portcullis-login";

/// Sign-in settings.
pub struct Oidc {
    pub authority: String,
    pub tenant: String,
    pub client_id: String,
    credential: Option<Arc<ClientCredential>>,
    http: reqwest::Client,
    validator: Arc<Validator>,
}

/// What the login cookie carries.
#[derive(Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    redirect_uri: String,
    started: u64,
}

/// A started sign-in: where to send the browser and the cookie to set.
pub struct SignInStart {
    pub authorize_url: String,
    pub login_cookie: String,
}

/// Why a sign-in could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the sign-in was not started here or took too long (no valid login cookie)")]
    NoLoginState,
    #[error("the state parameter does not match the sign-in that was started")]
    StateMismatch,
    #[error("the identity provider refused the sign-in: {0}")]
    Provider(String),
    #[error("the response carries no authorization code")]
    NoCode,
    #[error("the token endpoint refused the code: {0}")]
    Redeem(String),
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the ID token is not valid: {0}")]
    IdToken(#[from] TokenError),
    #[error("no app credential (client secret, certificate or assertion file) is configured for browser sign-in")]
    NoSecret,
    #[error("the app credential could not be used: {0}")]
    Credential(String),
    #[error("no randomness available")]
    Random,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    error: Option<String>,
    error_codes: Option<Vec<u64>>,
}

impl Oidc {
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        credential: Option<Arc<ClientCredential>>,
        http: reqwest::Client,
        validator: Arc<Validator>,
    ) -> Self {
        Self {
            authority: authority.trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            credential,
            http,
            validator,
        }
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}/{}/oauth2/v2.0/{name}", self.authority, self.tenant)
    }

    /// Entra's end-session URL (the tenant's `end_session_endpoint`): it ends the user's Entra
    /// session too, then sends the browser to `post_logout_redirect_uri`.
    pub fn logout_url(&self, post_logout_redirect_uri: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
            .append_pair("client_id", &self.client_id)
            .finish();
        format!("{}?{query}", self.endpoint("logout"))
    }

    /// Starts a sign-in that comes back to `redirect_uri` and then to `return_to` (a path on
    /// the same host, already validated by the caller).
    pub fn start(&self, sealer: &Sealer, redirect_uri: &str, return_to: &str) -> Result<SignInStart, SignInError> {
        let rnd = |n| random_token(n).map_err(|_| SignInError::Random);
        let login = LoginState {
            state: rnd(24)?,
            nonce: rnd(24)?,
            verifier: rnd(48)?,
            return_to: return_to.to_string(),
            redirect_uri: redirect_uri.to_string(),
            started: unix_now(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, login.verifier.as_bytes()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "form_post")
            .append_pair("scope", "openid profile offline_access")
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let json = serde_json::to_vec(&login).map_err(|_| SignInError::Random)?;
        let login_cookie = sealer.seal(LOGIN_PURPOSE, &json).map_err(|_| SignInError::Random)?;
        Ok(SignInStart {
            authorize_url: format!("{}?{query}", self.endpoint("authorize")),
            login_cookie,
        })
    }

    /// Finishes a sign-in from the callback's parameters and the login cookie; returns the
    /// new session and the path to go back to.
    pub async fn finish(
        &self,
        sealer: &Sealer,
        login_cookie: Option<&str>,
        params: &[(String, String)],
    ) -> Result<(Session, String), SignInError> {
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let login: LoginState = login_cookie
            .and_then(|c| sealer.open(LOGIN_PURPOSE, c))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|l: &LoginState| unix_now().saturating_sub(l.started) <= LOGIN_TTL.as_secs())
            .ok_or(SignInError::NoLoginState)?;
        if !param("state").is_some_and(|s| ct_eq(s.as_bytes(), login.state.as_bytes())) {
            return Err(SignInError::StateMismatch);
        }
        if let Some(err) = param("error") {
            let desc = param("error_description").unwrap_or("");
            return Err(SignInError::Provider(format!(
                "{err}: {}",
                desc.chars().take(200).collect::<String>()
            )));
        }
        let code = param("code").ok_or(SignInError::NoCode)?;
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", login.redirect_uri.as_str()),
            ("code_verifier", login.verifier.as_str()),
            ("scope", "openid profile offline_access"),
        ];
        let tokens = self.token_request(&form).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| SignInError::Redeem("no id_token in the response".into()))?;
        let principal = self.validator.validate_id_token(&id_token, &login.nonce).await?;
        let session = Session {
            principal: Arc::new(principal),
            refresh_token: tokens.refresh_token,
            signed_in_at: unix_now(),
        };
        Ok((session, login.return_to))
    }

    /// Renews a session's identity with its refresh token.
    pub async fn refresh(&self, session: &Session) -> Result<Session, SignInError> {
        let rt = session.refresh_token.as_deref().ok_or(SignInError::NoCode)?;
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "openid profile offline_access"),
        ];
        let tokens = self.token_request(&form).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| SignInError::Redeem("no id_token in the response".into()))?;
        // Refreshed ID tokens carry no nonce; validate everything else.
        let principal = self.validator.validate(&id_token).await?;
        Ok(Session {
            principal,
            refresh_token: tokens.refresh_token.or_else(|| session.refresh_token.clone()),
            signed_in_at: session.signed_in_at,
        })
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenResponse, SignInError> {
        let credential = self.credential.as_ref().ok_or(SignInError::NoSecret)?;
        let url = self.endpoint("token");
        let auth = credential
            .form_fields(&url, &self.client_id)
            .map_err(|e| SignInError::Credential(e.to_string()))?;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.extend(auth.iter().map(|(k, v)| (*k, v.as_str())));
        let form = &fields;
        let resp = self
            .http
            .post(&url)
            .form(form)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SignInError::Unreachable(e.without_url().to_string()))?;
        if !status.is_success() {
            // Report the error and its AADSTS code, never the body (it echoes request details).
            let e: Option<TokenErrorBody> = serde_json::from_slice(&body).ok();
            let what = match e {
                Some(TokenErrorBody {
                    error: Some(err),
                    error_codes,
                }) => {
                    let code = error_codes
                        .and_then(|c| c.first().copied())
                        .map(|c| format!(" (AADSTS{c})"))
                        .unwrap_or_default();
                    format!("{status}: {err}{code}")
                }
                Some(_) | None => status.to_string(),
            };
            return Err(SignInError::Redeem(what));
        }
        serde_json::from_slice(&body).map_err(|e| SignInError::Redeem(format!("unreadable token response: {e}")))
    }
}

/// Accepts only a path on this host as a place to return to after sign-in: `/…`, not `//…`
/// (scheme-relative), no backslashes or control characters.
pub fn safe_return_path(candidate: &str) -> Option<&str> {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.starts_with("/\\")
        && !candidate.bytes().any(|b| b == b'\\' || b.is_ascii_control())
        && candidate.len() <= 2048;
    ok.then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_cannot_leave_the_site() {
        assert_eq!(safe_return_path("/app?x=1"), Some("/app?x=1"));
        for bad in [
            "//evil.test/",
            "/\\evil.test",
            "https://evil.test/",
            "javascript:alert(1)",
            "",
            "/a\r\nb",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
