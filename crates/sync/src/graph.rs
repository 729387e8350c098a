//! Microsoft Graph, as the sync loop uses it: app-only tokens, GET with paging links, `429`
//! and `503` honoured with `Retry-After`, other server errors retried with exponential backoff
//! and jitter, a request budget well under Intune's 2000 requests per 20 s per app, and every
//! failure classified into [`GraphError`]. Bodies are parsed completely before anyone uses
//! them: a malformed page is an error, never half-applied.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use identity::app_token::{AppTokens, TokenRequestError};

pub use base::retry::RetryPolicy;
use base::retry::{BodyError, RetryError};

/// Why a Graph call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("{0}")]
    Token(#[from] TokenRequestError),
    /// 410: the delta or skip token expired; a full resync is needed.
    #[error("Graph: the sync token expired (410 Gone)")]
    Gone,
    #[error("Graph: forbidden (403): {0}")]
    Forbidden(String),
    #[error("Graph: {0} after {1} attempts")]
    Exhausted(String, u32),
    #[error("Graph: {0}")]
    Status(String),
    #[error("Graph: request failed: {0}")]
    Transport(String),
    #[error("Graph: unreadable response: {0}")]
    Body(String),
}

/// A fixed-window request budget.
struct Budget {
    limit: u32,
    window: Duration,
    state: Mutex<(tokio::time::Instant, u32)>,
}

impl Budget {
    async fn take(&self) {
        let mut s = self.state.lock().await;
        let now = tokio::time::Instant::now();
        if now >= s.0 + self.window {
            *s = (now, 0);
        }
        if s.1 >= self.limit {
            let wait = (s.0 + self.window).saturating_duration_since(now);
            tracing::debug!(?wait, "Graph request budget used up; waiting for the next window");
            tokio::time::sleep(wait).await;
            *s = (tokio::time::Instant::now(), 0);
        }
        s.1 += 1;
    }
}

/// A Graph client for one tenant.
pub struct GraphClient {
    pub base: String,
    tokens: Arc<AppTokens>,
    http: reqwest::Client,
    retry: RetryPolicy,
    budget: Budget,
}

impl GraphClient {
    /// `requests_per_20s` caps this client's request rate.
    pub fn new(
        base: &str,
        tokens: Arc<AppTokens>,
        http: reqwest::Client,
        retry: RetryPolicy,
        requests_per_20s: u32,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            tokens,
            http,
            retry,
            budget: Budget {
                limit: requests_per_20s.max(1),
                window: Duration::from_secs(20),
                state: Mutex::new((tokio::time::Instant::now(), 0)),
            },
        }
    }

    pub fn tokens(&self) -> &Arc<AppTokens> {
        &self.tokens
    }

    /// GET `url` (absolute, or a path under the Graph base) as JSON.
    pub async fn get(&self, url: &str) -> Result<serde_json::Value, GraphError> {
        self.send(reqwest::Method::GET, url, None).await
    }

    /// POST a JSON body (e.g. `$batch`), with the same retry rules.
    pub async fn post(&self, url: &str, body: &serde_json::Value) -> Result<serde_json::Value, GraphError> {
        self.send(reqwest::Method::POST, url, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, GraphError> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            // nextLink/deltaLink come from the response body: the app token goes only to Graph.
            if !same_origin(url, &self.base) {
                return Err(GraphError::Body(format!(
                    "a paging link points outside {}; refused",
                    self.base
                )));
            }
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let (this, url, method) = (self, url.as_str(), &method);
        let resp = self
            .retry
            .run(
                "graph",
                move || async move {
                    this.budget.take().await;
                    let token = this.tokens.token().await?;
                    let mut req = this
                        .http
                        .request(method.clone(), url)
                        .bearer_auth(&token)
                        .timeout(Duration::from_secs(60));
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    Ok::<_, GraphError>(req.send().await)
                },
                move || this.tokens.forget(),
            )
            .await
            .map_err(|e| match e {
                RetryError::Caller(e) => e,
                RetryError::Transport { message, attempts } => GraphError::Exhausted(message, attempts),
                RetryError::Exhausted { status, attempts } => {
                    GraphError::Exhausted(format!("status {status}"), attempts)
                }
            })?;
        match resp.status().as_u16() {
            200..=299 => base::retry::json_body(resp).await.map_err(|e| match e {
                BodyError::Transport(m) => GraphError::Transport(m),
                BodyError::Json(m) => GraphError::Body(m),
            }),
            410 => Err(GraphError::Gone),
            403 => Err(GraphError::Forbidden(error_message(resp).await)),
            status => Err(GraphError::Status(format!(
                "status {status}: {}",
                error_message(resp).await
            ))),
        }
    }
}

async fn error_message(resp: reqwest::Response) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<Body>(&bytes).ok().and_then(|b| b.error) {
        Some(Inner { code, message }) => {
            let m: String = message.unwrap_or_default().chars().take(300).collect();
            format!("{} {m}", code.unwrap_or_default()).trim().to_string()
        }
        None => String::new(),
    }
}

/// Whether `url` is on the scheme, host and port of `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(u), Ok(b)) => u.origin() == b.origin(),
        (Err(_), _) | (_, Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn paging_links_must_stay_on_the_graph_origin() {
        let base = "https://graph.microsoft.com";
        assert!(same_origin(
            "https://graph.microsoft.com/v1.0/devices/delta?$skiptoken=x",
            base
        ));
        for evil in [
            "https://evil.example/v1.0/devices/delta",
            "http://graph.microsoft.com/v1.0/devices",
            "https://graph.microsoft.com.evil.example/v1.0",
            "https://graph.microsoft.com:8443/v1.0",
            "not a url",
        ] {
            assert!(!same_origin(evil, base), "{evil}");
        }
    }
}
