//! The producers' settings: the shared infrastructure, extraction policy, platform endpoints, and
//! the tenants with their connected accounts (from a file until the control plane exists).
//!
//! Credentials are [`SecretRef`]s — the file says which environment variable or secret file
//! holds each one, never the value.

use mi_common::secret::SecretRef;
use mi_common::{Platform, Settings, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducersSettings {
    #[serde(flatten)]
    pub infra: Settings,
    pub extract: ExtractSettings,
    pub platforms: PlatformEndpoints,
    pub tenants: Vec<TenantConfig>,
}

impl ProducersSettings {
    pub fn tenant(&self, id: &TenantId) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| &t.id == id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractSettings {
    /// Days extracted on a tenant's first sync (no watermark yet), ending yesterday.
    pub backfill_days: u32,
    /// Days re-read before the watermark on every incremental run: platforms restate recent
    /// conversions, so the last week is always pulled again (the newest `extracted_at` wins).
    pub lookback_days: u32,
    /// Cron expression of the scheduler (minute hour day-of-month month day-of-week).
    pub schedule: String,
    /// Requests per second allowed per platform account (token bucket).
    pub requests_per_second: u32,
    /// Attempts per request before the run fails (throttling, 5xx, expired tokens).
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter, capped at 30 s.
    pub retry_base_ms: u64,
    /// Rows requested per page (Meta `limit`, GA4 `limit`).
    pub page_size: u32,
    /// Kafka transaction timeout of one run; a run must publish within it.
    pub transaction_timeout_ms: u32,
    /// Prefix of transactional ids; each worker appends its own id.
    pub transactional_id_prefix: String,
    /// Consumer group of the workers on the extract-command topic.
    pub worker_group: String,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        Self {
            backfill_days: 90,
            lookback_days: 7,
            schedule: "0 */8 * * *".into(),
            requests_per_second: 10,
            max_attempts: 8,
            retry_base_ms: 200,
            page_size: 500,
            transaction_timeout_ms: 300_000,
            transactional_id_prefix: "mi-producers".into(),
            worker_group: "mi-producers".into(),
        }
    }
}

/// Where each platform's API lives: the real hosts by default, the emulator in development.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformEndpoints {
    pub google_ads_base: String,
    pub google_ads_version: String,
    pub google_token_url: String,
    pub meta_base: String,
    pub meta_version: String,
    pub ga4_base: String,
}

impl Default for PlatformEndpoints {
    fn default() -> Self {
        Self {
            google_ads_base: "https://googleads.googleapis.com".into(),
            google_ads_version: "v21".into(),
            google_token_url: "https://oauth2.googleapis.com/token".into(),
            meta_base: "https://graph.facebook.com".into(),
            meta_version: "v21.0".into(),
            ga4_base: "https://analyticsdata.googleapis.com".into(),
        }
    }
}

impl PlatformEndpoints {
    /// Every endpoint on one emulator (see `dev/emulator`), whose path prefixes stand for hosts.
    pub fn emulator(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            google_ads_base: format!("{base}/googleads"),
            google_token_url: format!("{base}/oauth2/token"),
            meta_base: format!("{base}/graph"),
            ga4_base: format!("{base}/analyticsdata"),
            ..Self::default()
        }
    }
}

/// One tenant and the accounts it connected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: TenantId,
    #[serde(default)]
    pub google_ads: Option<GoogleAdsConnection>,
    #[serde(default)]
    pub meta_ads: Option<MetaConnection>,
    #[serde(default)]
    pub ga4: Option<Ga4Connection>,
}

impl TenantConfig {
    /// The platforms this tenant connected.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut out = Vec::new();
        if self.google_ads.is_some() {
            out.push(Platform::GoogleAds);
        }
        if self.meta_ads.is_some() {
            out.push(Platform::MetaAds);
        }
        if self.ga4.is_some() {
            out.push(Platform::Ga4);
        }
        out
    }
}

/// Google's OAuth2 installed-app credentials with an offline refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleOAuth {
    pub client_id: String,
    pub client_secret: SecretRef,
    pub refresh_token: SecretRef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsConnection {
    /// Customer ids, digits only (`1234567890`).
    pub customer_ids: Vec<String>,
    /// The manager account the access goes through, if any.
    #[serde(default)]
    pub login_customer_id: Option<String>,
    pub developer_token: SecretRef,
    pub oauth: GoogleOAuth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConnection {
    /// Ad account ids with their `act_` prefix.
    pub account_ids: Vec<String>,
    pub app_id: String,
    pub app_secret: SecretRef,
    /// A long-lived user access token (about 60 days), exchanged for a fresh one when it expires.
    pub access_token: SecretRef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4Connection {
    /// GA4 property ids, digits only.
    pub property_ids: Vec<String>,
    pub oauth: GoogleOAuth,
}
