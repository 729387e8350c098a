//! Microsoft Graph, as the sync loop uses it: app-only tokens, GET with paging links, `429`
//! and `503` honoured with `Retry-After`, other server errors retried with exponential backoff
//! and jitter, a request budget well under Intune's 2000 requests per 20 s per app, and every
//! failure classified into [`GraphError`]. Bodies are parsed completely before anyone uses
//! them: a malformed page is an error, never half-applied.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use identity::app_token::{AppTokens, TokenRequestError};

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// Longest `Retry-After` honoured; longer values are capped.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The server's `Retry-After` (delay seconds), capped: a hostile or broken value must not
    /// stall the loop for hours.
    pub fn retry_after(&self, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
        headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(self.max_retry_after))
    }

    /// Exponential backoff with ±50 % jitter for retry number `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(n)).min(self.max);
        let jitter = base::time::jitter_ms(1000) as f64 / 1000.0; // 0..1
        exp.mul_f64(0.5 + jitter)
    }
}

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
        let mut refreshed_token = false;
        let mut retries = 0u32;
        loop {
            self.budget.take().await;
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(60));
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await;
            let wait = match resp {
                Err(e) => {
                    let msg = e.without_url().to_string();
                    if retries + 1 >= self.retry.attempts {
                        return Err(GraphError::Exhausted(msg, retries + 1));
                    }
                    self.retry.backoff(retries)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = self.retry.retry_after(resp.headers());
                    match status {
                        200..=299 => {
                            let body = resp
                                .bytes()
                                .await
                                .map_err(|e| GraphError::Transport(e.without_url().to_string()))?;
                            return serde_json::from_slice(&body).map_err(|e| GraphError::Body(e.to_string()));
                        }
                        401 if !refreshed_token => {
                            self.tokens.forget().await;
                            refreshed_token = true;
                            continue;
                        }
                        410 => return Err(GraphError::Gone),
                        403 => return Err(GraphError::Forbidden(error_message(resp).await)),
                        429 | 503 | 500 | 502 | 504 => {
                            if retries + 1 >= self.retry.attempts {
                                return Err(GraphError::Exhausted(format!("status {status}"), retries + 1));
                            }
                            if status == 429 {
                                tracing::info!(?retry_after, "Graph throttled the sync (429)");
                            }
                            retry_after.unwrap_or_else(|| self.retry.backoff(retries))
                        }
                        _ => {
                            return Err(GraphError::Status(format!(
                                "status {status}: {}",
                                error_message(resp).await
                            )))
                        }
                    }
                }
            };
            retries += 1;
            tokio::time::sleep(wait).await;
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
