//! Request counters per platform, endpoint and HTTP status (`GET /_emulator/stats`), so tests
//! can prove that throttling, retries and token refreshes really happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use crate::{AppState, lock};

/// platform → endpoint → status → requests.
type Counts = BTreeMap<&'static str, BTreeMap<&'static str, BTreeMap<u16, u64>>>;

/// Request counters.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<Counts>,
}

/// The JSON shape of `/_emulator/stats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// platform → endpoint → status code (as a string key) → count.
    pub requests: BTreeMap<&'static str, BTreeMap<&'static str, BTreeMap<String, u64>>>,
    /// platform → fault kind → count of faults injected.
    pub injected: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub fn record(&self, platform: &'static str, endpoint: &'static str, status: u16) {
        let mut c = lock(&self.counts);
        *c.entry(platform)
            .or_default()
            .entry(endpoint)
            .or_default()
            .entry(status)
            .or_insert(0) += 1;
    }

    pub fn reset(&self) {
        lock(&self.counts).clear();
    }

    pub fn snapshot(
        &self,
    ) -> BTreeMap<&'static str, BTreeMap<&'static str, BTreeMap<String, u64>>> {
        lock(&self.counts)
            .iter()
            .map(|(p, eps)| {
                let eps = eps
                    .iter()
                    .map(|(e, st)| (*e, st.iter().map(|(s, n)| (s.to_string(), *n)).collect()))
                    .collect();
                (*p, eps)
            })
            .collect()
    }
}

/// Maps a request path to (platform, endpoint) for the counters.
pub fn classify(path: &str) -> (&'static str, &'static str) {
    if path == "/oauth2/token" {
        return ("oauth", "google_token");
    }
    if path.starts_with("/googleads/") {
        return (
            "google_ads",
            if path.ends_with(":searchStream") {
                "searchStream"
            } else {
                "other"
            },
        );
    }
    if path.starts_with("/analyticsdata/") {
        return (
            "ga4",
            if path.ends_with(":runReport") {
                "runReport"
            } else {
                "other"
            },
        );
    }
    if let Some(rest) = path.strip_prefix("/graph/") {
        let parts: Vec<&str> = rest.split('/').collect();
        return match parts.as_slice() {
            [_, "oauth", "access_token"] => ("oauth", "meta_token_exchange"),
            [_, _, "insights"] => ("meta_ads", "insights"),
            [_, _, "campaigns"] => ("meta_ads", "campaigns"),
            [_, _, "adsets"] => ("meta_ads", "adsets"),
            [_, _, "ads"] => ("meta_ads", "ads"),
            [_, _] => ("meta_ads", "node"),
            _ => ("meta_ads", "other"),
        };
    }
    if path.starts_with("/_emulator/") {
        return ("control", "control");
    }
    if path == "/health" {
        return ("control", "health");
    }
    ("unknown", "unknown")
}

/// Middleware: counts every response by platform, endpoint and status.
pub async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (platform, endpoint) = classify(req.uri().path());
    let method = req.method().clone();
    let resp = next.run(req).await;
    state
        .stats
        .record(platform, endpoint, resp.status().as_u16());
    tracing::debug!(%method, platform, endpoint, status = resp.status().as_u16(), "request");
    resp
}
