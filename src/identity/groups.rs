//! Group membership for users whose token could not carry their groups (overage, reference
//! §1.4): resolved through Microsoft Graph `getMemberObjects` with the gateway's app
//! credentials, single-flight per user and cached. A failure is an error for the caller to
//! turn into `groups_unresolved`, never an empty list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::credential::ClientCredential;

/// Resolves and caches group memberships.
pub struct GroupResolver {
    authority: String,
    tenant: String,
    client_id: String,
    credential: Option<Arc<ClientCredential>>,
    graph_url: String,
    http: reqwest::Client,
    cache: moka::future::Cache<String, Arc<[Arc<str>]>>,
    app_token: Mutex<Option<(String, Instant)>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    #[error("no app credential configured for Graph look-ups")]
    NoSecret,
    #[error("app token request failed: {0}")]
    Token(String),
    #[error("Graph getMemberObjects failed: {0}")]
    Graph(String),
}

#[derive(Deserialize)]
struct AppToken {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Members {
    value: Vec<String>,
}

impl GroupResolver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        credential: Option<Arc<ClientCredential>>,
        graph_url: &str,
        ttl: Duration,
        http: reqwest::Client,
    ) -> Self {
        Self {
            authority: authority.trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            credential,
            graph_url: graph_url.trim_end_matches('/').to_string(),
            http,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            app_token: Mutex::new(None),
        }
    }

    /// The user's group object ids (transitive), from the cache or Graph.
    pub async fn groups(&self, object_id: &str) -> Result<Arc<[Arc<str>]>, GroupError> {
        self.cache
            .try_get_with(object_id.to_string(), self.fetch(object_id))
            .await
            .map_err(|e: Arc<GroupError>| (*e).clone())
    }

    async fn fetch(&self, object_id: &str) -> Result<Arc<[Arc<str>]>, GroupError> {
        let token = self.app_token().await?;
        let url = format!("{}/v1.0/users/{object_id}/getMemberObjects", self.graph_url);
        let resp = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(&serde_json::json!({ "securityEnabledOnly": false }))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| GroupError::Graph(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(GroupError::Graph(format!("status {}", resp.status())));
        }
        let m: Members = resp
            .json()
            .await
            .map_err(|e| GroupError::Graph(format!("unreadable body: {e}")))?;
        Ok(m.value.into_iter().map(|g| Arc::from(g.to_ascii_lowercase())).collect())
    }

    /// The app-only Graph token, reused until shortly before it expires.
    async fn app_token(&self) -> Result<String, GroupError> {
        let mut slot = self.app_token.lock().await;
        if let Some((t, until)) = slot.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let credential = self.credential.as_ref().ok_or(GroupError::NoSecret)?;
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant);
        let scope = format!("{}/.default", self.graph_url);
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("grant_type", "client_credentials".into()),
            ("scope", scope),
        ];
        form.extend(
            credential
                .form_fields(&url, &self.client_id)
                .map_err(|e| GroupError::Token(e.to_string()))?,
        );
        let resp = self
            .http
            .post(&url)
            .form(&form)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| GroupError::Token(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(GroupError::Token(format!("status {}", resp.status())));
        }
        let t: AppToken = resp
            .json()
            .await
            .map_err(|e| GroupError::Token(format!("unreadable body: {e}")))?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(300).saturating_sub(300).max(30));
        *slot = Some((t.access_token.clone(), Instant::now() + life));
        Ok(t.access_token)
    }
}
