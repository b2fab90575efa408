//! The query API's settings: the shared infrastructure plus the `[api]` section.

use mi_common::Settings;
use mi_common::secret::SecretRef;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    #[serde(flatten)]
    pub infra: Settings,
    pub api: ApiSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSection {
    pub auth: AuthSettings,
    /// Seconds a cached response lives (invalidation by load events usually comes first).
    pub cache_ttl_secs: u64,
    /// Requests per tenant per `rate_window_secs` before 429.
    pub rate_limit: u32,
    pub rate_window_secs: u64,
    /// Origins allowed by CORS; empty means any origin (tokens travel in headers, not cookies).
    pub cors_origins: Vec<String>,
    /// Longest date range a query may ask for, in days.
    pub max_range_days: u32,
    /// Largest page a query may ask for.
    pub max_limit: u32,
    /// Consumer group that follows `mi.events.loads.v1` to invalidate the cache. Every API
    /// instance must see every event, so instances append their own id.
    pub loads_group_prefix: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            auth: AuthSettings::default(),
            cache_ttl_secs: 300,
            rate_limit: 600,
            rate_window_secs: 60,
            cors_origins: Vec::new(),
            max_range_days: 731,
            max_limit: 10_000,
            loads_group_prefix: "mi-query-api-loads".into(),
        }
    }
}

/// How tokens are signed and checked. One algorithm, fixed here: a token that names another is
/// refused before its signature is looked at.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// `HS256` (shared secret) or `RS256`/`ES256`/`EdDSA` (key pair, PEM files).
    pub algorithm: String,
    pub issuer: String,
    pub audience: String,
    /// HMAC secret for `HS256`.
    pub secret: Option<SecretRef>,
    /// PEM private key (only needed where tokens are minted) and public key (to verify).
    pub private_key: Option<SecretRef>,
    pub public_key: Option<SecretRef>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Lifetime of an access token (and of the access tokens a refresh hands out).
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token; each rotation starts a new one.
    pub refresh_ttl_secs: u64,
    /// Lifetime of a service (agent) token when `query-api token --service` is not given one.
    pub service_ttl_secs: u64,
    /// Longest lifetime a service token may be minted with: a leaked agent token must still die.
    pub service_max_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithm: "HS256".into(),
            issuer: "marketing-iq".into(),
            audience: "marketing-iq-api".into(),
            secret: Some(SecretRef::Env("MI_JWT_SECRET".into())),
            private_key: None,
            public_key: None,
            leeway_secs: 30,
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            service_ttl_secs: 90 * 24 * 3600,
            service_max_ttl_secs: 366 * 24 * 3600,
        }
    }
}
