//! Liveness and readiness.
//!
//! `/health` answers as long as the process serves HTTP (restart me if not); `/ready` answers 200
//! only when the dependencies a query needs answer (send me traffic), and says which one does not.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use mi_common::clients;
use serde_json::json;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (clickhouse, redis) = tokio::join!(
        clients::check_clickhouse(&state.settings.infra.clickhouse),
        state.redis.is_up(),
    );
    // ClickHouse is required; without Redis the API still answers, uncached.
    let status = if clickhouse.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let describe = |c: &clients::Check| match &c.result {
        Ok(took) => json!({ "ok": true, "ms": took.as_millis() as u64 }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "cache": if redis { "enabled" } else { "disabled: Redis unreachable, answering uncached" },
        "checks": { "clickhouse": describe(&clickhouse), "redis": { "ok": redis } },
    });
    (status, Json(body))
}
