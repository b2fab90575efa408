//! Campaigns and platforms: what the tenant has, read as the tenant.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::params::{self, bad, date};
use super::respond;
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::query::{
    AttributeTime, Compare, Filter, FilterOp, FilterValue, Grain, Query, TimeRange, truncate,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/campaigns", get(list))
        .route("/api/v1/campaigns/{id}/performance", get(performance))
        .route("/api/v1/platforms", get(platforms))
}

const PERFORMANCE_METRICS: [&str; 10] = [
    "spend",
    "impressions",
    "clicks",
    "conversions",
    "conversion_value",
    "ctr",
    "cpc",
    "cpm",
    "cpa",
    "roas",
];

#[derive(Debug, Clone, Serialize, PartialEq)]
struct ListParams {
    time: TimeRange,
    platforms: Vec<String>,
    statuses: Vec<String>,
    search: Option<String>,
    order: String,
    desc: bool,
    limit: u32,
    offset: u32,
}

fn range(start: Option<NaiveDate>, end: Option<NaiveDate>, grain: Grain) -> TimeRange {
    let end = end.unwrap_or(Utc::now().date_naive() - Days::new(1));
    TimeRange {
        start: start.unwrap_or(end - Days::new(29)),
        end,
        grain,
    }
}

/// `GET /api/v1/campaigns?start_date&end_date&platforms[]&status[]&search&order=spend:desc&limit&offset`:
/// the tenant's campaigns (current attributes) with their performance over the range.
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let (mut start, mut end) = (None, None);
    let mut p = ListParams {
        time: range(None, None, Grain::Day),
        platforms: vec![],
        statuses: vec![],
        search: None,
        order: "spend".into(),
        desc: true,
        limit: 100,
        offset: 0,
    };
    for (key, value) in params::pairs(raw.as_deref().unwrap_or("")) {
        let key = key.as_str();
        match key {
            "start_date" => start = Some(date(key, &value)?),
            "end_date" => end = Some(date(key, &value)?),
            "platforms" | "platform" => p.platforms.push(value.clone()),
            "status" | "statuses" => p.statuses.push(value.clone()),
            "search" => p.search = Some(value.clone()),
            "order" => {
                let (field, dir) = value.split_once(':').unwrap_or((&value, "desc"));
                p.order = field.to_owned();
                p.desc = match dir {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(bad(format!(
                            "order: direction {:?} is not asc or desc",
                            truncate(other)
                        )));
                    }
                };
            }
            "limit" => {
                p.limit = value.parse().map_err(|_| {
                    bad(format!(
                        "limit: {:?} is not a positive integer",
                        truncate(&value)
                    ))
                })?
            }
            "offset" => {
                p.offset = value.parse().map_err(|_| {
                    bad(format!(
                        "offset: {:?} is not a non-negative integer",
                        truncate(&value)
                    ))
                })?
            }
            other => return Err(bad(format!("unknown parameter {:?}", truncate(other)))),
        }
    }
    p.time = range(start, end, Grain::Day);
    let sortable = ["campaign", "platform", "campaign_status"];
    if !PERFORMANCE_METRICS.contains(&p.order.as_str()) && !sortable.contains(&p.order.as_str()) {
        return Err(bad(format!(
            "order: {:?} is not one of {}, {}",
            truncate(&p.order),
            PERFORMANCE_METRICS.join(", "),
            sortable.join(", ")
        )));
    }
    let mut filters = Vec::new();
    if !p.platforms.is_empty() {
        filters.push(Filter {
            dimension: "platform".into(),
            op: FilterOp::In,
            value: FilterValue::Many(p.platforms.clone()),
        });
    }
    if !p.statuses.is_empty() {
        filters.push(Filter {
            dimension: "campaign_status".into(),
            op: FilterOp::In,
            value: FilterValue::Many(p.statuses.clone()),
        });
    }
    if let Some(s) = &p.search {
        filters.push(Filter {
            dimension: "campaign".into(),
            op: FilterOp::Contains,
            value: FilterValue::One(s.clone()),
        });
    }
    let query = Query {
        metrics: PERFORMANCE_METRICS
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        dimensions: [
            "platform",
            "account_id",
            "campaign_id",
            "campaign",
            "campaign_status",
            "channel_type",
        ]
        .map(str::to_owned)
        .to_vec(),
        filters,
        time: Some(p.time),
        having: vec![],
        order: vec![crate::query::OrderBy {
            field: p.order.clone(),
            direction: if p.desc {
                crate::query::Direction::Desc
            } else {
                crate::query::Direction::Asc
            },
        }],
        limit: Some(p.limit),
        offset: p.offset,
        compare: None,
        attributes: AttributeTime::Current,
    };
    let body = respond(&state, &principal, "campaigns", &query, || async {
        let answer = state.answer(&principal, &query).await?;
        Ok(json!({
            "date_range": { "start": p.time.start, "end": p.time.end },
            "campaigns": answer.rows,
            "totals": answer.totals,
            "total_rows": answer.total_rows,
            "limit": answer.limit,
            "offset": answer.offset,
            "metadata": { "currencies": answer.currencies, "warnings": answer.warnings },
        }))
    })
    .await?;
    Ok(Json(body))
}

#[derive(Debug, clickhouse::Row, Deserialize, Serialize)]
struct Version {
    platform: String,
    account_id: String,
    version: u32,
    valid_from: String,
    valid_to: Option<String>,
    is_current: u8,
    name: String,
    status: String,
    channel_type: String,
    bidding_strategy: String,
    budget_micros: Option<i64>,
    budget_period: String,
}

/// `GET /api/v1/campaigns/{id}/performance?start_date&end_date&grain`: the campaign's versions
/// (SCD2 history), totals against the previous period, and its time series. Another tenant's
/// campaign id is simply not found.
async fn performance(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let Path(id) = path?;
    let (mut start, mut end, mut grain) = (None, None, Grain::Day);
    for (key, value) in params::pairs(raw.as_deref().unwrap_or("")) {
        match key.as_str() {
            "start_date" => start = Some(date(&key, &value)?),
            "end_date" => end = Some(date(&key, &value)?),
            "grain" => {
                grain = match value.as_ref() {
                    "day" => Grain::Day,
                    "week" => Grain::Week,
                    "month" => Grain::Month,
                    other => {
                        return Err(bad(format!(
                            "grain: {:?} is not day, week or month",
                            truncate(other)
                        )));
                    }
                }
            }
            other => return Err(bad(format!("unknown parameter {:?}", truncate(other)))),
        }
    }
    let time = range(start, end, grain);
    let not_found = || ApiError::NotFound(format!("no campaign {:?}", truncate(&id)));
    if id.len() > 128 {
        return Err(not_found());
    }
    let client = state.warehouse.for_tenant(&principal.tenant);
    let db = &state.warehouse.database;
    let versions = client
        .query(&format!(
            "SELECT platform, account_id, version, toString(valid_from) AS valid_from, \
             if(valid_to IS NULL, NULL, toString(valid_to)) AS valid_to, is_current, name, status, \
             channel_type, bidding_strategy, budget_micros, budget_period \
             FROM {db}.dim_campaigns FINAL WHERE tenant_id = ? AND campaign_id = ? \
             ORDER BY platform, account_id, version"
        ))
        .bind(principal.tenant.as_str())
        .bind(id.as_str())
        .fetch_all::<Version>()
        .await
        .map_err(|e| ApiError::internal(format!("campaign versions: {e}")))?;
    if versions.is_empty() {
        return Err(not_found());
    }
    let filter = Filter {
        dimension: "campaign_id".into(),
        op: FilterOp::Eq,
        value: FilterValue::One(id.clone()),
    };
    let totals_query = Query {
        metrics: PERFORMANCE_METRICS
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        dimensions: vec![],
        filters: vec![filter.clone()],
        time: Some(time),
        having: vec![],
        order: vec![],
        limit: None,
        offset: 0,
        compare: Some(Compare::PreviousPeriod),
        attributes: AttributeTime::AsOf,
    };
    let series_query = Query {
        dimensions: vec!["date".into()],
        compare: None,
        limit: Some(state.settings.api.max_limit),
        ..totals_query.clone()
    };
    let route = format!("campaign:{id}");
    let body = respond(
        &state,
        &principal,
        &route,
        &(&totals_query, &series_query),
        || async {
            let (totals, series) = tokio::try_join!(
                state.answer(&principal, &totals_query),
                state.answer(&principal, &series_query)
            )?;
            let current = versions
                .iter()
                .rev()
                .find(|v| v.is_current == 1)
                .or(versions.last());
            Ok(json!({
                "campaign_id": id,
                "campaign": current,
                "versions": versions,
                "date_range": { "start": time.start, "end": time.end, "grain": time.grain },
                "summary": totals.totals,
                "compare": totals.compare,
                "time_series": series.rows,
                "metadata": { "currencies": totals.currencies, "warnings": totals.warnings },
            }))
        },
    )
    .await?;
    Ok(Json(body))
}

#[derive(Debug, clickhouse::Row, Deserialize, Serialize)]
struct Connection {
    platform: String,
    account_id: String,
    currency: String,
    first_date: String,
    last_date: String,
    rows: u64,
}

/// `GET /api/v1/platforms`: the platforms and accounts with data for the tenant, with the dates
/// they cover.
async fn platforms(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    super::no_parameters(raw.as_deref())?;
    let body = respond(&state, &principal, "platforms", &(), || async {
        let client = state.warehouse.for_tenant(&principal.tenant);
        let db = &state.warehouse.database;
        let part = |table: &str| {
            format!(
                "SELECT platform, account_id, any(currency) AS currency, toString(min(date)) AS first_date, \
                 toString(max(date)) AS last_date, count() AS rows FROM {db}.{table} FINAL \
                 WHERE tenant_id = ? GROUP BY platform, account_id"
            )
        };
        let sql = format!(
            "SELECT * FROM ({} UNION ALL {}) ORDER BY platform, account_id",
            part("fact_ad_performance"),
            part("fact_ga_sessions")
        );
        let connections = client
            .query(&sql)
            .bind(principal.tenant.as_str())
            .bind(principal.tenant.as_str())
            .fetch_all::<Connection>()
            .await
            .map_err(|e| ApiError::internal(format!("platforms: {e}")))?;
        let mut platforms: Vec<Value> = Vec::new();
        for name in ["google_ads", "meta_ads", "ga4"] {
            let accounts: Vec<&Connection> =
                connections.iter().filter(|c| c.platform == name).collect();
            platforms.push(json!({
                "platform": name,
                "connected": !accounts.is_empty(),
                "accounts": accounts,
            }));
        }
        Ok(json!({ "platforms": platforms }))
    })
    .await?;
    Ok(Json(body))
}
