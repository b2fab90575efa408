//! # Platform emulator — a development and test tool
//!
//! **Not production code.** One local HTTP server that stands in for the Google Ads API, the
//! Meta Marketing (Graph) API and the GA4 Data API, plus their OAuth token endpoints, so that
//! Marketing IQ's extractors, tests, demo and benchmarks can run without network access. The
//! extractors are written against the real APIs; pointing them at the emulator changes only
//! their base URLs (path prefixes stand for the real hosts):
//!
//! | real host | emulator prefix |
//! |---|---|
//! | `https://oauth2.googleapis.com/token` | `POST /oauth2/token` |
//! | `https://googleads.googleapis.com` | `/googleads` |
//! | `https://graph.facebook.com` | `/graph` |
//! | `https://analyticsdata.googleapis.com` | `/analyticsdata` |
//!
//! Data is synthetic and **deterministic**: every value is a pure function of the seed, the
//! account id, the date and the emulator's clock ([`generator`]), so any account works, any
//! number of accounts and days can be served, and the ground truth ([`truth`]) is exact. The
//! only state is the clock, issued tokens, fault counters and request statistics.
//!
//! Use [`router`] to embed the emulator (tests use `tower::ServiceExt::oneshot` on it), or the
//! `platform-emulator` binary. See `dev/emulator/README.md` for routes, flags and data model.

pub mod control;
pub mod date;
pub mod errors;
pub mod faults;
pub mod ga4;
pub mod generator;
pub mod google_ads;
pub mod hash;
pub mod json;
pub mod meta;
pub mod oauth;
pub mod stats;
pub mod truth;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::routing::{get, post};
use serde::Serialize;

use crate::date::Day;
use crate::faults::FaultState;
use crate::generator::{GenConfig, Generator};

/// How searchStream errors are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoogleErrorShape {
    /// `[{"error":…}]`, as the streaming REST method really answers.
    Array,
    /// `{"error":…}`, like unary Google methods.
    Object,
}

/// Whether all-zero rows are returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroRows {
    /// The platforms' documented behaviour: segmented Google reports omit rows whose selected
    /// metrics are all zero, Meta insights omit ad-days without delivery.
    Omit,
    /// Return every ad-day on which the ad existed, zero or not (for testing zero-denominator
    /// handling downstream).
    Include,
}

/// Emulator configuration (the binary's flags).
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Seed and sizes of the synthetic data.
    pub generator: GenConfig,
    /// Initial clock; `None` follows the machine's UTC date.
    pub today: Option<Day>,
    /// Rows per searchStream batch (Google sends at most 10,000).
    pub batch_rows: usize,
    pub google_token_ttl_secs: u64,
    pub meta_token_ttl_secs: u64,
    pub zero_rows: ZeroRows,
    pub google_error_shape: GoogleErrorShape,
    /// Largest Meta page (`limit` above it is capped, as Graph edges do).
    pub meta_max_limit: usize,
    pub ga4_tokens_per_day: u64,
    pub ga4_tokens_per_hour: u64,
    /// Base URL used in Meta `paging.next` links; default: `http://<Host header>`.
    pub public_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            generator: GenConfig::default(),
            today: None,
            batch_rows: 10_000,
            google_token_ttl_secs: 3_600,
            meta_token_ttl_secs: 60 * 86_400,
            zero_rows: ZeroRows::Omit,
            google_error_shape: GoogleErrorShape::Array,
            meta_max_limit: 500,
            ga4_tokens_per_day: 200_000,
            ga4_tokens_per_hour: 40_000,
            public_url: None,
        }
    }
}

/// Shared state of a running emulator.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Config,
    pub generator: Generator,
    clock: Mutex<Option<Day>>,
    pub tokens: oauth::TokenStore,
    pub faults: Mutex<FaultState>,
    pub stats: stats::Stats,
    pub meta_usage: meta::Usage,
    pub ga4_quota: ga4::QuotaBook,
}

impl AppState {
    pub fn new(cfg: Config) -> Self {
        AppState {
            generator: Generator::new(cfg.generator.clone()),
            clock: Mutex::new(cfg.today),
            tokens: oauth::TokenStore::new(cfg.generator.seed),
            faults: Mutex::new(FaultState::default()),
            stats: stats::Stats::default(),
            meta_usage: meta::Usage::default(),
            ga4_quota: ga4::QuotaBook::default(),
            cfg,
        }
    }

    /// The emulator's "today".
    pub fn today(&self) -> Day {
        lock(&self.clock).unwrap_or_else(Day::today_utc)
    }

    /// Whether the clock is pinned (rather than following the machine's date).
    pub fn clock_is_fixed(&self) -> bool {
        lock(&self.clock).is_some()
    }

    /// Pins the clock to a date, or (`None`) lets it follow the machine's UTC date again.
    pub fn set_today(&self, today: Option<Day>) {
        *lock(&self.clock) = today;
    }
}

/// Locks a mutex, recovering from poisoning: the guarded data (counters, token maps) stays
/// usable after a panic elsewhere, and a test tool should keep serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds the emulator's router.
pub fn router(config: Config) -> Router {
    router_with_state(Arc::new(AppState::new(config)))
}

/// Builds the router over existing state (to share it with in-process checks).
pub fn router_with_state(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(control::health))
        .route("/oauth2/token", post(oauth::google_token))
        .route(
            "/googleads/{version}/customers/{customer}/{method}",
            post(google_ads::search_stream),
        )
        .route("/graph/{version}/{node}", get(meta::node))
        .route("/graph/{version}/{node}/{edge}", get(meta::edge))
        .route(
            "/analyticsdata/{version}/properties/{action}",
            post(ga4::run_report),
        )
        .route(
            "/_emulator/clock",
            get(control::get_clock).post(control::set_clock),
        )
        .route(
            "/_emulator/faults",
            get(control::get_faults)
                .post(control::set_faults)
                .delete(control::clear_faults),
        )
        .route(
            "/_emulator/stats",
            get(control::get_stats).delete(control::clear_stats),
        )
        .route("/_emulator/truth", get(truth::handler))
        .route("/_emulator/config", get(control::get_config))
        .fallback(control::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::delay,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            stats::record,
        ))
        .with_state(state)
}
