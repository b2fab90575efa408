//! Fault injection, configured at run time through `POST /_emulator/faults`.
//!
//! Faults are counted per platform: every *data* request that passed authentication (Google
//! Ads searchStream, Meta entity and insights reads, GA4 runReport) — or, for `oauth`, every
//! token request — increments that platform's counter `n`, and the configuration decides what
//! the n-th request gets, checked in this order:
//!
//! 1. `throttle_every: k` — when `n % k == 0`, the platform's rate-limit error;
//! 2. `server_error_every: k` — a 5xx;
//! 3. `expire_token_every: k` — the presented token is marked expired (it stays expired, as a
//!    real one would) and the request fails as with any expired token (for `oauth`: the refresh
//!    token is rejected with `invalid_grant`);
//! 4. `malformed_every: k` — the response is cut in the middle (invalid JSON, status 200).
//!
//! `malformed_field` rewrites one field in every row of one endpoint's responses to a given
//! (wrong-typed) JSON value, for testing schema validation. `token_ttl_secs` overrides the TTL
//! of tokens issued from then on. The top-level `delay_ms` makes every platform request (data and
//! token endpoints alike, not `/_emulator/*`) wait that long before it is served: a slow
//! platform, for runs that outlast a consumer's poll interval. Posting a configuration replaces the previous one and resets
//! the counters; `DELETE` removes every fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Platforms that faults (and counters) are kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPlatform {
    GoogleAds,
    MetaAds,
    Ga4,
    Oauth,
}

impl FaultPlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultPlatform::GoogleAds => "google_ads",
            FaultPlatform::MetaAds => "meta_ads",
            FaultPlatform::Ga4 => "ga4",
            FaultPlatform::Oauth => "oauth",
        }
    }
}

/// Rewrites `field` of every row returned by `endpoint` to `value`.
///
/// Endpoints and field names: `searchStream` with a GAQL field name (`metrics.cost_micros`);
/// `insights`, `campaigns`, `adsets`, `ads` with a Meta field name (`spend`); `runReport` with
/// a GA4 dimension or metric name (`sessions`); `token` with a token response field
/// (`access_token`, `expires_in`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MalformedField {
    pub endpoint: String,
    pub field: String,
    pub value: serde_json::Value,
}

/// One malformed-field rule or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(MalformedField),
    Many(Vec<MalformedField>),
}

/// Faults of one platform.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_error_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_token_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_field: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
}

/// The whole fault configuration (the body of `POST /_emulator/faults`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Milliseconds every platform request waits before it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_ads: Option<PlatformFaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_ads: Option<PlatformFaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga4: Option<PlatformFaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<PlatformFaults>,
}

impl FaultConfig {
    pub fn get(&self, p: FaultPlatform) -> Option<&PlatformFaults> {
        match p {
            FaultPlatform::GoogleAds => self.google_ads.as_ref(),
            FaultPlatform::MetaAds => self.meta_ads.as_ref(),
            FaultPlatform::Ga4 => self.ga4.as_ref(),
            FaultPlatform::Oauth => self.oauth.as_ref(),
        }
    }

    /// Rejects zero periods (a request number is never divisible by 0).
    pub fn validate(&self) -> Result<(), String> {
        for p in [
            FaultPlatform::GoogleAds,
            FaultPlatform::MetaAds,
            FaultPlatform::Ga4,
            FaultPlatform::Oauth,
        ] {
            if let Some(f) = self.get(p) {
                for (name, v) in [
                    ("throttle_every", f.throttle_every),
                    ("server_error_every", f.server_error_every),
                    ("expire_token_every", f.expire_token_every),
                    ("malformed_every", f.malformed_every),
                ] {
                    if v == Some(0) {
                        return Err(format!("{}.{name} must be at least 1", p.as_str()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the current request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Proceed,
    /// The platform's rate-limit error; `nth` counts throttles so far (Meta alternates codes).
    Throttle {
        nth: u64,
    },
    ServerError,
    ExpireToken,
}

/// The decision for one request.
#[derive(Clone, Debug)]
pub struct Decision {
    /// 1-based number of this request on its platform.
    pub n: u64,
    pub action: Action,
    /// Cut the response body in the middle.
    pub malformed: bool,
    pub fields: Vec<MalformedField>,
}

impl Decision {
    /// The replacement for `field` at `endpoint`, if a rule asks for one.
    pub fn field_override(&self, endpoint: &str, field: &str) -> Option<&serde_json::Value> {
        self.fields
            .iter()
            .find(|f| f.endpoint == endpoint && f.field == field)
            .map(|f| &f.value)
    }

    /// All rules for `endpoint`.
    pub fn overrides_for<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> impl Iterator<Item = &'a MalformedField> {
        self.fields.iter().filter(move |f| f.endpoint == endpoint)
    }
}

/// Fault configuration plus per-platform counters.
#[derive(Debug, Default)]
pub struct FaultState {
    pub config: FaultConfig,
    counters: BTreeMap<FaultPlatform, u64>,
    throttles: BTreeMap<FaultPlatform, u64>,
    /// Injected faults per platform and kind (reported by `/_emulator/stats`).
    pub injected: BTreeMap<FaultPlatform, BTreeMap<&'static str, u64>>,
}

impl FaultState {
    /// Replaces the configuration and resets counters.
    pub fn set(&mut self, config: FaultConfig) {
        self.config = config;
        self.counters.clear();
        self.throttles.clear();
    }

    /// Decides the fate of the next request on `p`.
    pub fn next(&mut self, p: FaultPlatform) -> Decision {
        let n = {
            let c = self.counters.entry(p).or_insert(0);
            *c += 1;
            *c
        };
        let Some(f) = self.config.get(p).cloned() else {
            return Decision {
                n,
                action: Action::Proceed,
                malformed: false,
                fields: Vec::new(),
            };
        };
        let hit = |every: Option<u64>| every.is_some_and(|k| k > 0 && n % k == 0);
        let action = if hit(f.throttle_every) {
            let t = self.throttles.entry(p).or_insert(0);
            *t += 1;
            Action::Throttle { nth: *t }
        } else if hit(f.server_error_every) {
            Action::ServerError
        } else if hit(f.expire_token_every) {
            Action::ExpireToken
        } else {
            Action::Proceed
        };
        let malformed = action == Action::Proceed && hit(f.malformed_every);
        let kind = match action {
            Action::Throttle { .. } => Some("throttle"),
            Action::ServerError => Some("server_error"),
            Action::ExpireToken => Some("expire_token"),
            Action::Proceed if malformed => Some("malformed"),
            Action::Proceed => None,
        };
        if let Some(kind) = kind {
            *self.injected.entry(p).or_default().entry(kind).or_insert(0) += 1;
        }
        let fields = match f.malformed_field {
            Some(OneOrMany::One(m)) => vec![m],
            Some(OneOrMany::Many(v)) => v,
            None => Vec::new(),
        };
        Decision {
            n,
            action,
            malformed,
            fields,
        }
    }

    /// TTL override for tokens issued for `p` (platform-specific first, then `oauth`).
    pub fn token_ttl(&self, p: FaultPlatform) -> Option<u64> {
        self.config
            .get(p)
            .and_then(|f| f.token_ttl_secs)
            .or_else(|| self.config.oauth.as_ref().and_then(|f| f.token_ttl_secs))
    }
}

/// Middleware: holds every platform request for the configured `delay_ms`.
pub async fn delay(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let platform = crate::stats::classify(req.uri().path()).0;
    let delay = crate::lock(&state.faults).config.delay_ms;
    if let (Some(ms), "oauth" | "google_ads" | "ga4" | "meta_ads") = (delay, platform) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    next.run(req).await
}

/// Cuts a body in the middle: what a client sees when a connection drops mid-response.
pub fn truncate(mut body: Vec<u8>) -> Vec<u8> {
    let keep = (body.len() / 2).max(1).min(body.len());
    body.truncate(keep);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_request_in_priority_order() {
        let mut s = FaultState::default();
        s.set(FaultConfig {
            google_ads: Some(PlatformFaults {
                throttle_every: Some(2),
                server_error_every: Some(3),
                malformed_every: Some(5),
                ..PlatformFaults::default()
            }),
            ..FaultConfig::default()
        });
        let actions: Vec<_> = (0..6).map(|_| s.next(FaultPlatform::GoogleAds)).collect();
        assert_eq!(actions[0].action, Action::Proceed);
        assert_eq!(actions[1].action, Action::Throttle { nth: 1 });
        assert_eq!(actions[2].action, Action::ServerError);
        assert_eq!(actions[3].action, Action::Throttle { nth: 2 });
        assert!(actions[4].malformed);
        // 6 is both a throttle and a server error: throttling wins.
        assert_eq!(actions[5].action, Action::Throttle { nth: 3 });
        assert_eq!(s.next(FaultPlatform::MetaAds).action, Action::Proceed);
    }

    #[test]
    fn config_parses_and_validates() {
        let cfg: FaultConfig = serde_json::from_str(
            r#"{"meta_ads":{"throttle_every":3,"malformed_field":{"endpoint":"insights","field":"spend","value":"abc"}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            cfg.meta_ads.as_ref().and_then(|m| m.throttle_every),
            Some(3)
        );
        assert!(cfg.validate().is_ok());
        let bad: FaultConfig =
            serde_json::from_str(r#"{"ga4":{"throttle_every":0}}"#).unwrap_or_default();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<FaultConfig>(r#"{"ga4":{"throttle":1}}"#).is_err());
    }
}
