//! Dashboards and segments.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, NaiveDate, Utc};
use serde_json::{Value, json};

use super::params::{self, bad, date};
use super::{Format, csv_response, respond};
use crate::AppState;
use crate::auth::Principal;
use crate::dashboards::run::{self, Params};
use crate::dashboards::{Dashboard, SEGMENTS};
use crate::error::{ApiError, ApiResult};
use crate::query::{Grain, TimeRange, truncate};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{id}", get(show))
        .route("/api/v1/segments", get(segments))
        .route("/api/v1/segments/{id}/dashboards", get(segment))
}

fn summary(d: &Dashboard) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "segment": d.segment,
        "description": d.description,
        "widgets": d.widgets.iter().map(|w| json!({"id": w.id, "title": w.title, "kind": w.kind})).collect::<Vec<_>>(),
    })
}

async fn list(
    State(state): State<AppState>,
    _principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    super::no_parameters(raw.as_deref())?;
    let dashboards: Vec<Value> = SEGMENTS
        .iter()
        .flat_map(|(s, _)| state.dashboards.in_segment(s))
        .map(summary)
        .collect();
    Ok(Json(
        json!({ "dashboards": dashboards, "total": dashboards.len() }),
    ))
}

async fn segments(
    State(state): State<AppState>,
    _principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    super::no_parameters(raw.as_deref())?;
    let segments: Vec<Value> = SEGMENTS
        .iter()
        .map(|(id, name)| {
            json!({
                "id": id,
                "name": name,
                "dashboards": state.dashboards.in_segment(id).map(|d| d.id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "segments": segments })))
}

async fn segment(
    State(state): State<AppState>,
    _principal: Principal,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let Path(id) = path?;
    super::no_parameters(raw.as_deref())?;
    let Some((id, name)) = SEGMENTS.iter().find(|(s, _)| *s == id) else {
        return Err(ApiError::NotFound(format!(
            "no segment {:?}",
            truncate(&id)
        )));
    };
    let dashboards: Vec<Value> = state.dashboards.in_segment(id).map(summary).collect();
    Ok(Json(
        json!({ "segment": { "id": id, "name": name }, "dashboards": dashboards }),
    ))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let Path(id) = path?;
    let Some(dashboard) = state.dashboards.dashboards.get(&id) else {
        return Err(ApiError::NotFound(format!(
            "no dashboard {:?}",
            truncate(&id)
        )));
    };
    let (params, format, widget) = parse(raw.as_deref().unwrap_or(""), dashboard)?;
    // Validate the range here so that errors are 400s before any work.
    crate::query::Query {
        metrics: vec!["spend".into()],
        dimensions: vec![],
        filters: vec![],
        time: Some(params.time),
        having: vec![],
        order: vec![],
        limit: None,
        offset: 0,
        compare: None,
        attributes: Default::default(),
    }
    .plan(&state.catalog, state.limits())?;
    let route = format!("dashboard:{}", dashboard.id);
    let body = respond(&state, &principal, &route, &params, || {
        run::run(&state, &principal, dashboard, &params)
    })
    .await?;
    match format {
        Format::Json => Ok(Json(body).into_response()),
        Format::Csv => {
            let widgets = body["widgets"].as_array().cloned().unwrap_or_default();
            let chosen = match &widget {
                Some(w) => widgets
                    .iter()
                    .find(|x| x["id"] == w.as_str())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameter",
                            format!(
                                "widget: {:?} is not a widget of {}",
                                truncate(w),
                                dashboard.id
                            ),
                        )
                    })?,
                None => widgets
                    .iter()
                    .find(|x| x["rows"].as_array().is_some_and(|r| !r.is_empty()))
                    .or(widgets.first())
                    .ok_or_else(|| ApiError::NotFound("the dashboard has no widgets".into()))?,
            };
            let rows: Vec<serde_json::Map<String, Value>> = chosen["rows"]
                .as_array()
                .map(|r| r.iter().filter_map(|x| x.as_object().cloned()).collect())
                .unwrap_or_default();
            let mut columns: Vec<String> = Vec::new();
            for row in &rows {
                for key in row.keys() {
                    if !columns.contains(key) && !row[key].is_object() && !row[key].is_array() {
                        columns.push(key.clone());
                    }
                }
            }
            csv_response(
                &principal,
                &format!(
                    "{}-{}",
                    dashboard.id,
                    chosen["id"].as_str().unwrap_or("widget")
                ),
                &columns,
                &rows,
            )
        }
    }
}

/// `start_date`, `end_date` (default: the dashboard's default days ending yesterday),
/// `platforms[]`, `campaigns[]`, `target_cpa`, `target_roas`, `format`, `widget` (for CSV).
fn parse(raw: &str, dashboard: &Dashboard) -> ApiResult<(Params, Format, Option<String>)> {
    let (mut start, mut end) = (None, None);
    let mut params = Params {
        time: TimeRange {
            start: NaiveDate::MIN,
            end: NaiveDate::MIN,
            grain: Grain::Day,
        },
        platforms: vec![],
        campaigns: vec![],
        target_cpa: None,
        target_roas: None,
    };
    let mut format = Format::Json;
    let mut widget = None;
    let number = |key: &str, v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| bad(format!("{key}: {:?} is not a positive number", truncate(v))))
    };
    for (key, value) in params::pairs(raw) {
        let key = key.as_str();
        let list = || params::list(&value);
        match key {
            "start_date" => start = Some(date(key, &value)?),
            "end_date" => end = Some(date(key, &value)?),
            "platforms" | "platform" => params.platforms.extend(list()),
            "campaigns" | "campaign" => params.campaigns.extend(list()),
            "target_cpa" => params.target_cpa = Some(number(key, &value)?),
            "target_roas" => params.target_roas = Some(number(key, &value)?),
            "widget" => widget = Some(value.clone()),
            "format" => {
                format = match value.as_ref() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    other => {
                        return Err(bad(format!(
                            "format: {:?} is not json or csv",
                            truncate(other)
                        )));
                    }
                }
            }
            other => return Err(bad(format!("unknown parameter {:?}", truncate(other)))),
        }
    }
    if params.platforms.len() > 10 || params.campaigns.len() > 500 {
        return Err(bad(
            "at most 10 platforms and 500 campaigns per request".into()
        ));
    }
    let yesterday = Utc::now().date_naive() - Days::new(1);
    let end = end.unwrap_or(yesterday);
    let start = start.unwrap_or(end - Days::new(u64::from(dashboard.default_days.max(1)) - 1));
    params.time = TimeRange {
        start,
        end,
        grain: Grain::Day,
    };
    params.platforms.sort();
    params.platforms.dedup();
    params.campaigns.sort();
    params.campaigns.dedup();
    Ok((params, format, widget))
}
