//! Running a dashboard: each widget's query for the requested range and filters, its transform,
//! and the response in the shape of the original plan (summary, time series, widgets, metadata).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Days, NaiveDate};
use futures::future::try_join_all;
use mi_common::anomaly::Rule;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::transform::{self, Transform};
use super::{Dashboard, Widget, WidgetKind};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::query::{Filter, FilterOp, FilterValue, Grain, TimeRange};

/// What a dashboard request may vary; also the cache key (with the dashboard id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    pub time: TimeRange,
    pub platforms: Vec<String>,
    pub campaigns: Vec<String>,
    pub target_cpa: Option<f64>,
    pub target_roas: Option<f64>,
}

impl Params {
    /// The dashboard-level filters, as query filters.
    fn filters(&self) -> Vec<Filter> {
        let mut out = Vec::new();
        if !self.platforms.is_empty() {
            out.push(Filter {
                dimension: "platform".into(),
                op: FilterOp::In,
                value: FilterValue::Many(self.platforms.clone()),
            });
        }
        if !self.campaigns.is_empty() {
            out.push(Filter {
                dimension: "campaign_id".into(),
                op: FilterOp::In,
                value: FilterValue::Many(self.campaigns.clone()),
            });
        }
        out
    }
}

pub async fn run(
    state: &AppState,
    principal: &Principal,
    dashboard: &Dashboard,
    params: &Params,
) -> ApiResult<Value> {
    let widgets = try_join_all(
        dashboard
            .widgets
            .iter()
            .map(|w| run_widget(state, principal, w, params)),
    )
    .await?;
    let summary = dashboard
        .widgets
        .iter()
        .zip(&widgets)
        .find(|(w, _)| w.kind == WidgetKind::Kpi)
        .map(|(_, r)| r["totals"].clone())
        .unwrap_or(Value::Null);
    let time_series = dashboard
        .widgets
        .iter()
        .zip(&widgets)
        .find(|(w, _)| w.kind == WidgetKind::Timeseries)
        .map(|(_, r)| r["rows"].clone())
        .unwrap_or(Value::Null);
    let mut currencies = BTreeSet::new();
    let mut warnings = BTreeSet::new();
    for w in &widgets {
        for c in w["currencies"].as_array().into_iter().flatten() {
            if let Some(c) = c.as_str() {
                currencies.insert(c.to_owned());
            }
        }
        for c in w["warnings"].as_array().into_iter().flatten() {
            if let Some(c) = c.as_str() {
                warnings.insert(c.to_owned());
            }
        }
    }
    Ok(json!({
        "dashboard_id": dashboard.id,
        "dashboard_name": dashboard.name,
        "segment": dashboard.segment,
        "description": dashboard.description,
        "date_range": { "start": params.time.start, "end": params.time.end },
        "filters": { "platforms": params.platforms, "campaigns": params.campaigns },
        "summary": summary,
        "time_series": time_series,
        "widgets": widgets,
        "metadata": { "currencies": currencies, "warnings": warnings },
    }))
}

async fn run_widget(
    state: &AppState,
    principal: &Principal,
    widget: &Widget,
    params: &Params,
) -> ApiResult<Value> {
    if let Some(Transform::CampaignChanges { window_days }) = &widget.transform {
        return campaign_changes(state, principal, widget, params, *window_days).await;
    }
    let mut time = params.time;
    if widget.transform == Some(Transform::Pacing) {
        // Pacing is always the month to date of the range's end.
        time.start =
            NaiveDate::from_ymd_opt(time.end.year(), time.end.month(), 1).unwrap_or(time.start);
    }
    // Dashboard filters apply where every source of the widget has the dimension (a platform
    // filter cannot narrow GA4 sessions); the widget says which it ignored.
    let bare = widget
        .query(time, &[])
        .plan(&state.catalog, state.limits())?;
    let (applied, ignored): (Vec<Filter>, Vec<Filter>) =
        params.filters().into_iter().partition(|f| {
            let dim = &state.catalog.dimensions[&f.dimension];
            bare.sources
                .iter()
                .all(|s| dim.columns.contains_key(s.source))
        });
    let mut query = widget.query(time, &applied);
    let needs_all_rows = matches!(
        widget.transform,
        Some(Transform::RollingAverage { .. } | Transform::DayOverDay { .. })
    );
    if needs_all_rows {
        query.limit = Some(state.settings.api.max_limit);
    }
    let answer = state.answer(principal, &query).await?;
    let mut rows = answer.rows;
    let mut totals = answer.totals;
    let mut extra = Map::new();
    match &widget.transform {
        None | Some(Transform::CampaignChanges { .. }) => {}
        Some(Transform::RollingAverage { window, metrics }) => {
            transform::rolling_average(&mut rows, *window, metrics, &state.catalog);
        }
        Some(Transform::Share { metric }) => transform::share(&mut rows, metric),
        Some(Transform::Funnel { steps }) => {
            extra.insert("steps".into(), json!(transform::funnel(&totals, steps)));
        }
        Some(Transform::Targets { cpa, roas }) => {
            let t = transform::targets(
                &totals,
                params.target_cpa.unwrap_or(*cpa),
                params.target_roas.unwrap_or(*roas),
            );
            extra.insert("targets".into(), t);
        }
        Some(Transform::Pacing) => transform::pacing(&mut rows, &mut totals, time.end),
        Some(Transform::DayOverDay {
            metrics,
            threshold,
            min_spend,
        }) => {
            let anomalies = transform::day_over_day(
                &rows,
                &widget.dimensions,
                metrics,
                Rule {
                    threshold: *threshold,
                    min_spend: *min_spend,
                },
            );
            let limit = widget.limit.unwrap_or(100) as usize;
            extra.insert("anomaly_count".into(), json!(anomalies.len()));
            rows = anomalies.into_iter().take(limit).collect();
        }
    }
    let mut out = json!({
        "id": widget.id,
        "title": widget.title,
        "kind": widget.kind,
        "metrics": widget.metrics,
        "dimensions": widget.dimensions,
        "time": time,
        "rows": rows,
        "totals": totals,
        "total_rows": answer.total_rows,
        "compare": answer.compare,
        "currencies": answer.currencies,
        "warnings": answer.warnings,
        "filters_not_applied": ignored.iter().map(|f| f.dimension.clone()).collect::<Vec<_>>(),
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(extra);
    }
    Ok(out)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Version {
    platform: String,
    account_id: String,
    campaign_id: String,
    version: u32,
    valid_from: String,
    name: String,
    status: String,
    channel_type: String,
    bidding_strategy: String,
    budget_micros: Option<i64>,
}

/// Attributes compared between versions, by name.
fn attributes(v: &Version) -> [(&'static str, Value); 5] {
    [
        ("name", json!(v.name)),
        ("status", json!(v.status)),
        ("channel_type", json!(v.channel_type)),
        ("bidding_strategy", json!(v.bidding_strategy)),
        ("budget", json!(v.budget_micros.map(|b| b as f64 / 1e6))),
    ]
}

/// The most changes one widget lists (the newest first).
const MAX_CHANGES: usize = 50;

async fn campaign_changes(
    state: &AppState,
    principal: &Principal,
    widget: &Widget,
    params: &Params,
    window_days: u32,
) -> ApiResult<Value> {
    let client = state.warehouse.for_tenant(&principal.tenant);
    let db = &state.warehouse.database;
    let mut sql = format!(
        "SELECT platform, account_id, campaign_id, version, toString(valid_from) AS valid_from, name, status, \
         channel_type, bidding_strategy, budget_micros FROM {db}.dim_campaigns FINAL \
         WHERE tenant_id = ? AND (platform, account_id, campaign_id) IN (\
           SELECT platform, account_id, campaign_id FROM {db}.dim_campaigns FINAL \
           WHERE tenant_id = ? AND version > 1 AND toDate(valid_from) BETWEEN toDate(?) AND toDate(?))"
    );
    let mut binds = vec![
        principal.tenant.to_string(),
        principal.tenant.to_string(),
        params.time.start.to_string(),
        params.time.end.to_string(),
    ];
    for (column, values) in [
        ("platform", &params.platforms),
        ("campaign_id", &params.campaigns),
    ] {
        if !values.is_empty() {
            sql.push_str(&format!(
                " AND {column} IN ({})",
                vec!["?"; values.len()].join(", ")
            ));
            binds.extend(values.iter().cloned());
        }
    }
    sql.push_str(" ORDER BY platform, account_id, campaign_id, version");
    let mut query = client.query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    let versions = query
        .fetch_all::<Version>()
        .await
        .map_err(|e| ApiError::internal(format!("campaign changes: {e}")))?;

    // Each change: a version after the first whose start falls in the range.
    let mut changes = Vec::new();
    for pair in versions.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if (
            before.platform.as_str(),
            &before.account_id,
            &before.campaign_id,
        ) != (
            after.platform.as_str(),
            &after.account_id,
            &after.campaign_id,
        ) {
            continue;
        }
        let Some(day) = after
            .valid_from
            .get(..10)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        if day < params.time.start || day > params.time.end {
            continue;
        }
        let diff: Vec<Value> = attributes(before)
            .into_iter()
            .zip(attributes(after))
            .filter(|((_, b), (_, a))| a != b)
            .map(|((name, b), (_, a))| json!({ "attribute": name, "before": b, "after": a }))
            .collect();
        changes.push((day, before, after, diff));
    }
    changes.sort_by_key(|c| std::cmp::Reverse(c.0));
    changes.truncate(MAX_CHANGES);

    // Performance around the changes, in one query over the widened range.
    let window = Days::new(u64::from(window_days));
    let ids: Vec<String> = changes
        .iter()
        .map(|(_, _, a, _)| a.campaign_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut performance: BTreeMap<(String, String, String), Vec<Map<String, Value>>> =
        BTreeMap::new();
    if !ids.is_empty() {
        let time = TimeRange {
            start: params.time.start - window,
            end: params.time.end + window,
            grain: Grain::Day,
        };
        let mut query = widget.query(time, &[]);
        query.dimensions = vec![
            "platform".into(),
            "account_id".into(),
            "campaign_id".into(),
            "date".into(),
        ];
        query.filters.push(Filter {
            dimension: "campaign_id".into(),
            op: FilterOp::In,
            value: FilterValue::Many(ids),
        });
        query.limit = Some(state.settings.api.max_limit);
        query.compare = None;
        let answer = state.answer(principal, &query).await?;
        for row in answer.rows {
            let key = ["platform", "account_id", "campaign_id"]
                .map(|k| row.get(k).and_then(Value::as_str).unwrap_or("").to_owned());
            performance
                .entry((key[0].clone(), key[1].clone(), key[2].clone()))
                .or_default()
                .push(row);
        }
    }
    let none = Vec::new();
    let rows: Vec<Value> = changes
        .iter()
        .map(|(day, before, after, diff)| {
            let series = performance
                .get(&(
                    after.platform.clone(),
                    after.account_id.clone(),
                    after.campaign_id.clone(),
                ))
                .unwrap_or(&none);
            let window_of = |from: NaiveDate, to: NaiveDate| {
                let rows: Vec<&Map<String, Value>> = series
                    .iter()
                    .filter(|r| {
                        r.get("date")
                            .and_then(Value::as_str)
                            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                            .is_some_and(|d| d >= from && d <= to)
                    })
                    .collect();
                widget
                    .metrics
                    .iter()
                    .map(|m| {
                        let v = transform::over(&rows, m, &state.catalog);
                        (m.clone(), transform::to_value(v))
                    })
                    .collect::<Map<String, Value>>()
            };
            json!({
                "platform": after.platform,
                "account_id": after.account_id,
                "campaign_id": after.campaign_id,
                "campaign": after.name,
                "changed_on": day,
                "from_version": before.version,
                "to_version": after.version,
                "changes": diff,
                "before": window_of(*day - window, *day - Days::new(1)),
                "after": window_of(*day, *day + Days::new(u64::from(window_days) - 1)),
            })
        })
        .collect();
    Ok(json!({
        "id": widget.id,
        "title": widget.title,
        "kind": widget.kind,
        "metrics": widget.metrics,
        "window_days": window_days,
        "rows": rows,
        "total_rows": rows.len(),
        "totals": {},
        "currencies": [],
        "warnings": [],
        "filters_not_applied": [],
    }))
}
