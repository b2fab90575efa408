//! The unified metrics API: `POST /api/v1/query` (the full query format), `GET /api/v1/metrics`
//! (the same in a query string, as in the original plan) and `GET /api/v1/meta` (what can be
//! asked, for people and for agents).

use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{self, bad, date};
use super::{Format, csv_response, respond};
use crate::AppState;
use crate::auth::Principal;
use crate::catalog::{DimensionType, MetricKind};
use crate::error::{ApiError, ApiResult};
use crate::query::{
    AttributeTime, Compare, Direction, Filter, FilterOp, FilterValue, Grain, OrderBy, Query,
    TimeRange, truncate,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/metrics", get(metrics))
        .route("/api/v1/meta", get(meta))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatParam {
    #[serde(default)]
    format: Format,
}

async fn query(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
    body: Result<Json<Query>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(query) = body?;
    let format: FormatParam = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_query_string", e.to_string()))?;
    run(&state, &principal, query, format.format, "query").await
}

async fn run(
    state: &AppState,
    principal: &Principal,
    query: Query,
    format: Format,
    route: &str,
) -> ApiResult<Response> {
    let body = respond(state, principal, route, &query, || async {
        let answer = state.answer(principal, &query).await?;
        Ok(json!({
            "query": query,
            "metrics": query.metrics,
            "dimensions": query.dimensions,
            "columns": answer.columns,
            "data": answer.rows,
            "totals": answer.totals,
            "total_rows": answer.total_rows,
            "limit": answer.limit,
            "offset": answer.offset,
            "compare": answer.compare,
            "metadata": {
                "currencies": answer.currencies,
                "warnings": answer.warnings,
                "engine_time_ms": answer.query_time_ms,
            },
        }))
    })
    .await?;
    match format {
        Format::Json => Ok(Json(body).into_response()),
        Format::Csv => {
            let columns: Vec<String> = query
                .dimensions
                .iter()
                .chain(&query.metrics)
                .cloned()
                .collect();
            let rows: Vec<serde_json::Map<String, Value>> = body["data"]
                .as_array()
                .map(|rows| rows.iter().filter_map(|r| r.as_object().cloned()).collect())
                .unwrap_or_default();
            csv_response(principal, "metrics", &columns, &rows)
        }
    }
}

async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (query, format) = parse_metrics_params(raw.as_deref().unwrap_or(""))?;
    run(&state, &principal, query, format, "metrics").await
}

/// `metrics[]=a&metrics[]=b&dimensions[]=date&start_date=…&end_date=…&grain=week&filters={…}
/// &order=spend:desc&limit=…&offset=…&compare=previous_period&attributes=current&format=csv`.
/// Lists may also be repeated plain keys or comma-separated.
pub fn parse_metrics_params(raw: &str) -> ApiResult<(Query, Format)> {
    let mut query = Query {
        metrics: Vec::new(),
        dimensions: Vec::new(),
        filters: Vec::new(),
        time: None,
        having: Vec::new(),
        order: Vec::new(),
        limit: None,
        offset: 0,
        compare: None,
        attributes: AttributeTime::AsOf,
    };
    let mut format = Format::Json;
    let (mut start, mut end, mut grain) = (None, None, Grain::Day);
    let enumerated = |key: &str, v: &str| {
        serde_json::from_value::<Value>(Value::String(v.to_owned()))
            .map_err(|e| bad(format!("{key}: {e}")))
    };
    for (key, value) in params::pairs(raw) {
        let key = key.as_str();
        let list = || params::list(&value);
        match key {
            "metrics" => query.metrics.extend(list()),
            "dimensions" => query.dimensions.extend(list()),
            "start_date" => start = Some(date(key, &value)?),
            "end_date" => end = Some(date(key, &value)?),
            "grain" => {
                grain = serde_json::from_value(enumerated(key, &value)?).map_err(|_| {
                    bad(format!(
                        "grain: {:?} is not day, week or month",
                        truncate(&value)
                    ))
                })?
            }
            "filters" => query.filters.extend(parse_filters(&value)?),
            "order" => {
                for item in list() {
                    let (field, direction) = match item.split_once(':') {
                        Some((f, "asc")) => (f.to_owned(), Direction::Asc),
                        Some((f, "desc")) => (f.to_owned(), Direction::Desc),
                        Some((_, d)) => {
                            return Err(bad(format!(
                                "order: direction {:?} is not asc or desc",
                                truncate(d)
                            )));
                        }
                        None => (item.clone(), Direction::Desc),
                    };
                    query.order.push(OrderBy { field, direction });
                }
            }
            "limit" => {
                query.limit = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "limit: {:?} is not a positive integer",
                        truncate(&value)
                    ))
                })?)
            }
            "offset" => {
                query.offset = value.parse().map_err(|_| {
                    bad(format!(
                        "offset: {:?} is not a non-negative integer",
                        truncate(&value)
                    ))
                })?
            }
            "compare" => match value.as_ref() {
                "previous_period" => query.compare = Some(Compare::PreviousPeriod),
                "" | "none" => query.compare = None,
                other => {
                    return Err(bad(format!(
                        "compare: {:?} is not previous_period",
                        truncate(other)
                    )));
                }
            },
            "attributes" => {
                query.attributes =
                    serde_json::from_value(enumerated(key, &value)?).map_err(|_| {
                        bad(format!(
                            "attributes: {:?} is not as_of or current",
                            truncate(&value)
                        ))
                    })?
            }
            "format" => {
                format = serde_json::from_value(enumerated(key, &value)?).map_err(|_| {
                    bad(format!("format: {:?} is not json or csv", truncate(&value)))
                })?
            }
            other => return Err(bad(format!("unknown parameter {:?}", truncate(other)))),
        }
    }
    query.time = match (start, end) {
        (Some(start), Some(end)) => Some(TimeRange { start, end, grain }),
        (None, None) => None,
        _ => return Err(bad("start_date and end_date go together".into())),
    };
    Ok((query, format))
}

/// `filters` as JSON: either `{"dimension": "value" | ["a", "b"]}` (equality / membership) or a
/// list of `{"dimension", "op", "value"}`.
fn parse_filters(text: &str) -> ApiResult<Vec<Filter>> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("filters: not JSON ({e})")))?;
    match value {
        Value::Object(map) => map
            .into_iter()
            .map(|(dimension, v)| match v {
                Value::String(s) => Ok(Filter {
                    dimension,
                    op: FilterOp::Eq,
                    value: FilterValue::One(s),
                }),
                Value::Array(items) => Ok(Filter {
                    dimension,
                    op: FilterOp::In,
                    value: FilterValue::Many(
                        items
                            .into_iter()
                            .map(|i| match i {
                                Value::String(s) => Ok(s),
                                _ => Err(bad("filters: list values must be strings".into())),
                            })
                            .collect::<ApiResult<_>>()?,
                    ),
                }),
                _ => Err(bad(format!(
                    "filters: {:?}: give a string or a list of strings",
                    truncate(&dimension)
                ))),
            })
            .collect(),
        Value::Array(_) => serde_json::from_value(value).map_err(|e| bad(format!("filters: {e}"))),
        _ => Err(bad("filters: give an object or a list".into())),
    }
}

async fn meta(
    State(state): State<AppState>,
    _principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    super::no_parameters(raw.as_deref())?;
    let catalog = &state.catalog;
    let metrics: Vec<Value> = catalog
        .metrics
        .values()
        .map(|m| {
            let (kind, formula) = match &m.kind {
                MetricKind::Base { .. } => ("base", Value::Null),
                MetricKind::Ratio {
                    numerator,
                    denominator,
                    scale,
                } => (
                    "ratio",
                    json!(if *scale == 1.0 {
                        format!("{numerator} / {denominator}")
                    } else {
                        format!("{numerator} / {denominator} × {scale}")
                    }),
                ),
            };
            json!({
                "name": m.name,
                "description": m.description,
                "unit": m.unit,
                "type": kind,
                "formula": formula,
                "sources": catalog.sources_of(m),
            })
        })
        .collect();
    let dimensions: Vec<Value> = catalog
        .dimensions
        .values()
        .map(|d| {
            json!({
                "name": d.name,
                "description": d.description,
                "type": match d.kind { DimensionType::Date => "date", DimensionType::String => "string" },
                "sources": d.columns.keys().collect::<Vec<_>>(),
                "scd2": d.columns.values().any(|c| c.join.is_some()),
            })
        })
        .collect();
    let sources: serde_json::Map<String, Value> = catalog
        .sources
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                json!({ "description": s.description, "dated": s.date.is_some() }),
            )
        })
        .collect();
    Ok(Json(json!({
        "metrics": metrics,
        "dimensions": dimensions,
        "sources": sources,
        "grains": ["day", "week", "month"],
        "filter_operators": ["eq", "neq", "in", "not_in", "contains", "starts_with", "gt", "gte", "lt", "lte"],
        "attributes": ["as_of", "current"],
        "compare": ["previous_period"],
        "limits": {
            "max_range_days": state.settings.api.max_range_days,
            "max_limit": state.settings.api.max_limit,
            "default_limit": crate::query::DEFAULT_LIMIT,
        },
        "notes": [
            "A metric and a dimension combine only if the dimension exists in every source the metric reads.",
            "Ratios are computed from sums over the whole group (ratios of sums); a zero denominator gives null.",
            "Money is in each account's currency and never converted; see metadata.currencies.",
        ],
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_plans_query_string_parses() {
        let (q, format) = parse_metrics_params(
            "metrics[]=impressions&metrics[]=clicks&metrics[]=spend&dimensions[]=date&dimensions[]=platform\
             &start_date=2025-01-01&end_date=2025-01-31&filters=%7B%22channel_type%22%3A%22SEARCH%22%7D&order=spend:asc&format=csv",
        )
        .expect("parses");
        assert_eq!(q.metrics, ["impressions", "clicks", "spend"]);
        assert_eq!(q.dimensions, ["date", "platform"]);
        assert_eq!(q.time.map(|t| t.days()), Some(31));
        assert_eq!(q.filters[0].dimension, "channel_type");
        assert_eq!(q.order[0].direction, Direction::Asc);
        assert_eq!(format, Format::Csv);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (raw, expected) in [
            (
                "start_date=yesterday",
                "start_date: \"yesterday\" is not a date",
            ),
            (
                "start_date=2025-01-01",
                "start_date and end_date go together",
            ),
            ("limit=-5", "limit: \"-5\" is not a positive integer"),
            ("filters={", "filters: not JSON"),
            ("order=spend:sideways", "order: direction \"sideways\""),
            ("drop=table", "unknown parameter \"drop\""),
            ("grain=hour", "grain: \"hour\""),
        ] {
            let err = parse_metrics_params(raw).expect_err(raw).to_string();
            assert!(err.contains(expected), "{raw}: {err}");
        }
    }
}
