//! The authenticated `/api/v1` surface.
//!
//! Handlers are thin: they turn the request into a [`Query`] (or a dashboard's queries), let
//! [`respond`] answer it from the cache or the engine as the caller's tenant, and shape the JSON.

pub mod campaigns;
pub mod dashboards;
pub mod metrics;
pub mod params;

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::cache::Entry;
use crate::engine::{Answer, Engine};
use crate::error::{ApiError, ApiResult};
use crate::query::{Limits, Query};

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(metrics::routes())
        .merge(dashboards::routes())
        .merge(campaigns::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::rate_limit,
        ))
}

impl AppState {
    pub fn limits(&self) -> Limits {
        Limits {
            max_range_days: self.settings.api.max_range_days,
            max_limit: self.settings.api.max_limit,
        }
    }

    /// The engine, querying as `principal`'s tenant under its own ClickHouse identity.
    pub fn engine<'a>(
        &'a self,
        principal: &'a Principal,
        client: &'a clickhouse::Client,
    ) -> Engine<'a> {
        Engine {
            catalog: &self.catalog,
            client,
            database: &self.warehouse.database,
            tenant: &principal.tenant,
        }
    }

    /// Validates and runs one query for `principal`.
    pub async fn answer(&self, principal: &Principal, query: &Query) -> ApiResult<Answer> {
        let plan = query.plan(&self.catalog, self.limits())?;
        let client = self.warehouse.for_tenant(&principal.tenant);
        self.engine(principal, &client).run(&plan).await
    }
}

/// Answers `request` on `route` for `principal` from the tenant's cache, or computes it with
/// `compute` and caches it. Adds `metadata.cached`, `cached_at` and `query_time_ms`.
pub async fn respond<R, F, Fut>(
    state: &AppState,
    principal: &Principal,
    route: &str,
    request: &R,
    compute: F,
) -> ApiResult<Value>
where
    R: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<Value>>,
{
    let started = Instant::now();
    let key = state.cache.key(&principal.tenant, route, request).await;
    if let Some(key) = &key
        && let Some(entry) = state.cache.get(key).await
    {
        let mut body = entry.body;
        set_metadata(&mut body, true, Some(entry.cached_at), started);
        return Ok(body);
    }
    let mut body = compute().await?;
    if let Some(key) = &key {
        state
            .cache
            .put(
                key,
                &Entry {
                    body: body.clone(),
                    cached_at: Utc::now(),
                },
            )
            .await;
    }
    set_metadata(&mut body, false, None, started);
    if key.is_none()
        && let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("cache".into(), json!("unavailable"));
    }
    Ok(body)
}

fn set_metadata(
    body: &mut Value,
    cached: bool,
    cached_at: Option<chrono::DateTime<Utc>>,
    started: Instant,
) {
    if let Some(object) = body.as_object_mut() {
        let meta = object.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("cached".into(), json!(cached));
            meta.insert("cached_at".into(), json!(cached_at));
            meta.insert(
                "query_time_ms".into(),
                json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            );
        }
    }
}

/// Refuses any query parameter on routes that take none: a `tid` (or anything else) a client
/// adds is a mistake to report, never silently ignored.
pub fn no_parameters(raw: Option<&str>) -> ApiResult<()> {
    match raw.and_then(|r| form_urlencoded::parse(r.as_bytes()).next()) {
        Some((key, _)) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "unknown parameter {:?}: this route takes none",
                crate::query::truncate(&key)
            ),
        )),
        None => Ok(()),
    }
}

/// `?format=json` (default) or `?format=csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// The rows of an answer as CSV (analysts and above: exports leave the product's access
/// control, so viewers may look but not take).
pub fn csv_response(
    principal: &Principal,
    filename: &str,
    columns: &[String],
    rows: &[serde_json::Map<String, Value>],
) -> ApiResult<Response> {
    principal.require(Role::Analyst)?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(columns)
        .map_err(|e| ApiError::internal(format!("csv: {e}")))?;
    for row in rows {
        let record: Vec<String> = columns
            .iter()
            .map(|c| match row.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        writer
            .write_record(&record)
            .map_err(|e| ApiError::internal(format!("csv: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ApiError::internal(format!("csv: {e}")))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
