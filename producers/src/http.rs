//! Polite, persistent HTTP: a token bucket per platform account, and retries with exponential
//! backoff and jitter that honour the server's own retry hints.
//!
//! Each platform module turns a response into an [`Attempt`]; [`Api::call`] does the waiting and
//! the counting, so throttling and retry policy live in one place.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ExtractError, Where};

/// The outcome of one attempt at a request.
pub enum Attempt<T> {
    Done(T),
    /// Throttled or a transient failure: try again, after `after` if the server said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The access token was rejected: it has been invalidated; try again with a fresh one.
    Reauthenticate {
        reason: String,
    },
    Fail(ExtractError),
}

/// Shared by every request of a process: one HTTP connection pool, one limiter keyed by account.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    max_attempts: u32,
    retry_base: Duration,
}

const RETRY_CAP: Duration = Duration::from_secs(30);

impl Api {
    pub fn new(requests_per_second: u32, max_attempts: u32, retry_base: Duration) -> Self {
        let rate = NonZeroU32::new(requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "marketing-iq-producers/",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        Self {
            http,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))),
            max_attempts: max_attempts.max(1),
            retry_base,
        }
    }

    /// Runs `attempt` until it is done, fails, or the retry budget is spent. Waits for the
    /// account's token bucket before every attempt.
    pub async fn call<T, F, Fut>(&self, at: &Where, mut attempt: F) -> Result<T, ExtractError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut last = String::new();
        for n in 0..self.max_attempts {
            self.limiter.until_key_ready(&at.account).await;
            match attempt().await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(e) => return Err(e),
                Attempt::Reauthenticate { reason } => {
                    tracing::info!(%at, %reason, "access token rejected; refreshing");
                    last = reason;
                }
                Attempt::Retry { after, reason } => {
                    let delay = after.unwrap_or_else(|| self.backoff(n)).min(RETRY_CAP);
                    tracing::warn!(%at, %reason, attempt = n + 1, delay_ms = delay.as_millis() as u64, "retrying");
                    last = reason;
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Err(ExtractError::Exhausted {
            at: at.clone(),
            attempts: self.max_attempts,
            last,
        })
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so that many clients
    /// throttled at once do not come back at once.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1 << attempt.min(16))
            .min(RETRY_CAP);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// A whole HTTP response: status, the server's retry hint, and the body.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<Duration>,
    pub body: bytes::Bytes,
}

/// Sends a request and reads its body. A transport failure (connection refused or reset, a
/// timeout, a body cut short) is worth retrying: `Err` carries the reason, URL-free so that
/// tokens in query strings never reach the logs.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// `Retry-After` in seconds (the form every platform here uses), if present.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A protobuf `Duration` in JSON (`"3s"`, `"0.5s"`), as Google's `retryDelay` carries it.
pub fn proto_duration(s: &str) -> Option<Duration> {
    s.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mi_common::Platform;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn at() -> Where {
        Where::new(Platform::GoogleAds, "1", "test")
    }

    #[tokio::test]
    async fn retries_until_done_and_gives_up_after_the_budget() {
        let api = Api::new(1000, 3, Duration::from_millis(1));
        let calls = AtomicU32::new(0);
        let ok = api
            .call(&at(), || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Attempt::Retry {
                        after: None,
                        reason: "429".into(),
                    },
                    1 => Attempt::Reauthenticate {
                        reason: "401".into(),
                    },
                    _ => Attempt::Done(7),
                }
            })
            .await;
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let err = api
            .call(&at(), || async {
                Attempt::<()>::Retry {
                    after: Some(Duration::ZERO),
                    reason: "503".into(),
                }
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "google_ads account 1 endpoint test: gave up after 3 attempts; last: 503"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let api = Api::new(1, 3, Duration::from_millis(100));
        for attempt in 0..20 {
            let d = api.backoff(attempt);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(RETRY_CAP);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn server_hints_parse() {
        assert_eq!(proto_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(proto_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(proto_duration("abc"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }
}
