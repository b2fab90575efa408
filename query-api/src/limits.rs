//! Per-tenant rate limits in Redis, shared by every API instance: a fixed window per tenant
//! (`INCR` + `EXPIRE` in one script, so the first request of a window sets its end). Over the
//! limit the API answers 429 with `Retry-After` = the seconds left in the window.
//!
//! Without Redis requests are not limited (and `/ready` says Redis is down): refusing every
//! request because the limiter is unavailable would turn a cache outage into an API outage.

use std::sync::LazyLock;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mi_common::TenantId;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::Redis;

static WINDOW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
",
    )
});

/// Counts one request of `tenant`; `Err(retry_after_secs)` when over `limit`.
pub async fn check(
    redis: &Redis,
    tenant: &TenantId,
    limit: u32,
    window_secs: u64,
) -> Result<(), u64> {
    let key = format!("mi:rate:{tenant}");
    let mut invocation = WINDOW.key(key);
    invocation.arg(window_secs);
    match redis.script::<(u64, i64)>(&invocation).await {
        Some((count, ttl)) if count > u64::from(limit) => {
            Err(u64::try_from(ttl.max(1)).unwrap_or(1))
        }
        _ => Ok(()),
    }
}

/// Middleware for the authenticated API: identifies the tenant from the token, counts the
/// request, and refuses it with 429 when the tenant is over its limit.
pub async fn rate_limit(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
    next: Next,
) -> Response {
    let api = &state.settings.api;
    if let Err(retry_after_secs) = check(
        &state.redis,
        &principal.tenant,
        api.rate_limit,
        api.rate_window_secs,
    )
    .await
    {
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    next.run(request).await
}
