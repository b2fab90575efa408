//! Control endpoints under `/_emulator/` (JSON), and `/health`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::date::Day;
use crate::errors::json_response;
use crate::faults::FaultConfig;
use crate::stats::StatsView;
use crate::{AppState, lock};

fn json_ok(v: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default())
}

/// A control-plane error: `{"error":{"code","message"}}`.
pub fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": status.as_u16(), "message": message.into() } });
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// `GET /health`.
pub async fn health() -> Response {
    json_ok(&json!({ "status": "ok" }))
}

fn clock_view(st: &AppState) -> serde_json::Value {
    let today = st.today();
    let (first, last) = st.generator.window(today);
    json!({
        "today": today,
        "fixed": st.clock_is_fixed(),
        "first_data_day": first,
        "last_data_day": last,
    })
}

/// `GET /_emulator/clock`.
pub async fn get_clock(State(st): State<Arc<AppState>>) -> Response {
    json_ok(&clock_view(&st))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    /// A date, or `null` to follow the machine's UTC date again.
    today: Option<Day>,
}

/// `POST /_emulator/clock {"today":"YYYY-MM-DD"}`.
pub async fn set_clock(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<ClockBody>(&body) {
        Ok(b) => {
            st.set_today(b.today);
            tracing::info!(today = %st.today(), "clock moved");
            json_ok(&clock_view(&st))
        }
        Err(e) => control_error(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"today\":\"YYYY-MM-DD\"}}: {e}"),
        ),
    }
}

/// `GET /_emulator/faults`.
pub async fn get_faults(State(st): State<Arc<AppState>>) -> Response {
    let cfg = lock(&st.faults).config.clone();
    json_ok(&serde_json::to_value(cfg).unwrap_or_default())
}

/// `POST /_emulator/faults` — replaces the fault configuration and resets the counters.
pub async fn set_faults(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let cfg = match serde_json::from_slice::<FaultConfig>(&body) {
        Ok(c) => c,
        Err(e) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                format!("invalid fault configuration: {e}"),
            );
        }
    };
    if let Err(e) = cfg.validate() {
        return control_error(StatusCode::BAD_REQUEST, e);
    }
    lock(&st.faults).set(cfg.clone());
    tracing::info!(faults = ?cfg, "faults configured");
    json_ok(&serde_json::to_value(cfg).unwrap_or_default())
}

/// `DELETE /_emulator/faults`.
pub async fn clear_faults(State(st): State<Arc<AppState>>) -> Response {
    let mut f = lock(&st.faults);
    f.set(FaultConfig::default());
    f.injected.clear();
    json_ok(&json!({}))
}

/// `GET /_emulator/stats`.
pub async fn get_stats(State(st): State<Arc<AppState>>) -> Response {
    let injected = lock(&st.faults)
        .injected
        .iter()
        .map(|(p, kinds)| (p.as_str(), kinds.clone()))
        .collect();
    let view = StatsView {
        requests: st.stats.snapshot(),
        injected,
    };
    json_ok(&serde_json::to_value(view).unwrap_or_default())
}

/// `DELETE /_emulator/stats`.
pub async fn clear_stats(State(st): State<Arc<AppState>>) -> Response {
    st.stats.reset();
    lock(&st.faults).injected.clear();
    json_ok(&json!({}))
}

/// `GET /_emulator/config` — the flags the emulator runs with.
pub async fn get_config(State(st): State<Arc<AppState>>) -> Response {
    json_ok(&serde_json::to_value(&st.cfg).unwrap_or_default())
}

/// Anything else.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, crate::errors::JSON_UTF8)],
        serde_json::to_vec(&json!({ "error": { "code": 404, "message": "no such route in the platform emulator", "status": "NOT_FOUND" } }))
            .unwrap_or_default(),
    )
        .into_response()
}
