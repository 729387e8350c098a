//! Group membership for users whose token could not carry their groups (overage, reference
//! §1.4): resolved through Microsoft Graph `getMemberObjects` with the gateway's app
//! credentials, single-flight per user and cached. A failure is an error for the caller to
//! turn into `groups_unresolved`, never an empty list.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::app_token::AppTokens;
use super::credential::ClientCredential;

/// Resolves and caches group memberships.
pub struct GroupResolver {
    graph_url: String,
    http: reqwest::Client,
    cache: moka::future::Cache<String, Arc<[Arc<str>]>>,
    tokens: AppTokens,
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
        let scope = format!("{}/.default", graph_url.trim_end_matches('/'));
        Self {
            graph_url: graph_url.trim_end_matches('/').to_string(),
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            tokens: AppTokens::new(authority, tenant, client_id, &scope, credential, http.clone()),
            http,
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
        // The id is a token claim or an admin's input: one path segment, whatever it holds
        // ("." and ".." would still walk the path, and are no user).
        if object_id.is_empty() || object_id.bytes().all(|b| b == b'.') {
            return Err(GroupError::Graph("not a user id".into()));
        }
        let segment: String = url::form_urlencoded::byte_serialize(object_id.as_bytes()).collect();
        let url = format!("{}/v1.0/users/{segment}/getMemberObjects", self.graph_url);
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

    async fn app_token(&self) -> Result<String, GroupError> {
        self.tokens.token().await.map_err(|e| GroupError::Token(e.to_string()))
    }
}
