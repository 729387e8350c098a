//! Retrying HTTP calls to Microsoft Graph and Jamf Pro, one implementation for both: transport
//! failures and `429`/`5xx` answers are retried with exponential backoff and jitter, a server's
//! `Retry-After` is honoured (capped), and one `401` gets a fresh token without counting as a
//! retry. What the final answer means is the caller's to say.

use std::future::Future;
use std::time::Duration;

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
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

/// Why a call gave up.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The caller's own step failed (no token, say); not retried here.
    #[error(transparent)]
    Caller(E),
    /// Every try failed in transport; the last failure.
    #[error("{message} (after {attempts} tries)")]
    Transport { message: String, attempts: u32 },
    /// Every try was answered with a retryable status; the last one.
    #[error("status {status} (after {attempts} tries)")]
    Exhausted { status: u16, attempts: u32 },
}

/// Why a successful answer's body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Json(String),
}

/// The whole body of an answer as JSON, read completely before anyone uses it: a body cut short
/// or malformed is an error, never half a page.
pub async fn json_body(resp: reqwest::Response) -> Result<serde_json::Value, BodyError> {
    let body = resp
        .bytes()
        .await
        .map_err(|e| BodyError::Transport(e.without_url().to_string()))?;
    serde_json::from_slice(&body).map_err(|e| BodyError::Json(e.to_string()))
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

    /// Exponential backoff with ±50 % jitter for retry number `n` (0-based), never over `max`
    /// by more than the jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(n)).min(self.max);
        let jitter = crate::time::jitter_ms(1000) as f64 / 1000.0; // 0..1
        exp.mul_f64(0.5 + jitter)
    }

    /// Runs `send` until it gets an answer worth returning: any status but `429`/`5xx` (and
    /// the first `401`, after which `forget_token` runs and the call is made again), or a
    /// `429`/`5xx` when the tries are used up. `service` names the other side in the log.
    pub async fn run<E, S, SF, F, FF>(
        &self,
        service: &'static str,
        mut send: S,
        mut forget_token: F,
    ) -> Result<reqwest::Response, RetryError<E>>
    where
        S: FnMut() -> SF,
        SF: Future<Output = Result<Result<reqwest::Response, reqwest::Error>, E>>,
        F: FnMut() -> FF,
        FF: Future<Output = ()>,
    {
        let mut retries = 0u32;
        let mut renewed = false;
        loop {
            let last = retries + 1 >= self.attempts;
            let wait = match send().await.map_err(RetryError::Caller)? {
                Err(e) if last => {
                    return Err(RetryError::Transport {
                        message: e.without_url().to_string(),
                        attempts: retries + 1,
                    })
                }
                Err(_) => self.backoff(retries),
                Ok(r) => match r.status().as_u16() {
                    401 if !renewed => {
                        forget_token().await;
                        renewed = true;
                        continue;
                    }
                    status @ (429 | 500 | 502 | 503 | 504) => {
                        if last {
                            return Err(RetryError::Exhausted {
                                status,
                                attempts: retries + 1,
                            });
                        }
                        let after = self.retry_after(r.headers());
                        if status == 429 {
                            tracing::info!(service, ?after, "throttled (429); waiting");
                        }
                        after.unwrap_or_else(|| self.backoff(retries))
                    }
                    _ => return Ok(r),
                },
            };
            retries += 1;
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        for n in 0..10 {
            let want = (Duration::from_millis(100) * 2u32.pow(n)).min(Duration::from_secs(1));
            let got = p.backoff(n);
            assert!(got >= want / 2 && got <= want * 3 / 2, "retry {n}: {got:?} vs {want:?}");
        }
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(p.retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(p.retry_after(&h), Some(Duration::from_secs(5)), "capped");
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(p.retry_after(&h), None, "HTTP dates fall back to the backoff");
    }

    type Scripted = Result<Result<reqwest::Response, reqwest::Error>, &'static str>;

    fn answer(status: u16, retry_after: Option<&str>) -> Scripted {
        let mut b = http::Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header("retry-after", v);
        }
        Ok(Ok(reqwest::Response::from(b.body("").unwrap())))
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// Runs the policy over scripted answers; returns the outcome, the tries made, the tokens
    /// forgotten and the (paused) time it took.
    async fn script(answers: Vec<Scripted>) -> (Result<u16, String>, usize, usize, Duration) {
        let answers = std::sync::Mutex::new(answers.into_iter());
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let forgotten = std::sync::atomic::AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let out = policy()
            .run(
                "test",
                || {
                    tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let next = answers.lock().unwrap().next().expect("no more scripted answers");
                    async move { next }
                },
                || {
                    forgotten.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {}
                },
            )
            .await;
        (
            out.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
            tries.into_inner(),
            forgotten.into_inner(),
            start.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_backoff_fills_the_gaps() {
        let (out, tries, forgotten, took) =
            script(vec![answer(503, Some("7")), answer(429, None), answer(200, None)]).await;
        assert_eq!((out, tries, forgotten), (Ok(200), 3, 0));
        // 7 s from Retry-After, then backoff(1) = 2 s ± 50 %.
        assert!(
            took >= Duration::from_secs(8) && took <= Duration::from_secs(10),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_401_renews_the_token_without_waiting_a_second_is_the_answer() {
        let (out, tries, forgotten, took) = script(vec![answer(401, None), answer(200, None)]).await;
        assert_eq!((out, tries, forgotten, took), (Ok(200), 2, 1, Duration::ZERO));
        let (out, tries, forgotten, _) = script(vec![answer(401, None), answer(401, None)]).await;
        assert_eq!((out, tries, forgotten), (Ok(401), 2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_statuses_give_up_after_the_attempts_and_others_return_at_once() {
        let (out, tries, _, took) = script((0..4).map(|_| answer(502, None)).collect()).await;
        assert_eq!((out.unwrap_err().as_str(), tries), ("status 502 (after 4 tries)", 4));
        // Three waits: 1, 2 and 4 s, each ± 50 %.
        assert!(
            took >= Duration::from_millis(3500) && took <= Duration::from_millis(10500),
            "{took:?}"
        );
        let (out, tries, _, took) = script(vec![answer(404, None)]).await;
        assert_eq!((out, tries, took), (Ok(404), 1, Duration::ZERO));
        let (out, tries, _, _) = script(vec![Err("no token")]).await;
        assert_eq!((out, tries), (Err("no token".to_string()), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn transport_failures_are_retried_then_reported() {
        // A refused connection on loopback: a real transport error, no network needed.
        let refused = || async { reqwest::Client::new().get("http://127.0.0.1:9/").send().await };
        let mut answers = Vec::new();
        for _ in 0..2 {
            answers.push(Ok(refused().await));
        }
        answers.push(answer(200, None));
        let (out, tries, _, _) = script(answers).await;
        assert_eq!((out, tries), (Ok(200), 3));
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(Ok(refused().await));
        }
        let (out, tries, _, _) = script(answers).await;
        assert_eq!(tries, 4);
        assert!(out.unwrap_err().contains("(after 4 tries)"));
    }
}
