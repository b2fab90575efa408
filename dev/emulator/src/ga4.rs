//! GA4 Data API: `POST /analyticsdata/{version}/properties/{property_id}:runReport`.
//!
//! Request: `dateRanges` (exactly one; `YYYY-MM-DD`, `today`, `yesterday`, `NdaysAgo`),
//! `dimensions`, `metrics`, `limit` (default 10,000, at most 250,000), `offset`, `orderBys`
//! (dimension or metric), `keepEmptyRows`, `returnPropertyQuota`, `currencyCode` (only the
//! property's own). Filters, aggregations, comparisons and cohorts are rejected with
//! INVALID_ARGUMENT rather than silently ignored.
//!
//! Response: `dimensionHeaders`, `metricHeaders` (with types), `rows` of string values,
//! `rowCount` (all rows, not just this page; omitted with `rows` when zero, as proto3 JSON
//! does), `metadata.currencyCode` / `timeZone`, optional `propertyQuota`, `kind`. Rows are
//! sorted by their dimension values (then `orderBys`, stable), so offset paging is stable.
//!
//! Quota: each request costs `1 + rowCount / 1000` tokens against per-property daily (per
//! emulator day) and hourly (per wall-clock hour) budgets; `propertyQuota` reports what this
//! request consumed and what remains, and an exhausted budget answers 429 RESOURCE_EXHAUSTED.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::date::Day;
use crate::errors::{GoogleApiError, json_response};
use crate::faults::{Action, FaultPlatform, truncate};
use crate::generator::ga4::{DEVICES, GaMetrics, GaRow, Property};
use crate::oauth::{TokenCheck, TokenKind, bearer};
use crate::{AppState, json, lock};

const SERVICE: &str = "analyticsdata.googleapis.com";
const SCHEMA_URL: &str =
    "https://developers.google.com/analytics/devguides/reporting/data/v1/api-schema";

/// Supported dimensions.
pub const DIMENSIONS: [&str; 7] = [
    "date",
    "sessionSource",
    "sessionMedium",
    "sessionCampaignName",
    "sessionDefaultChannelGroup",
    "deviceCategory",
    "country",
];

/// Supported metrics and their `MetricType`.
pub const METRICS: [(&str, &str); 7] = [
    ("sessions", "TYPE_INTEGER"),
    ("engagedSessions", "TYPE_INTEGER"),
    ("screenPageViews", "TYPE_INTEGER"),
    ("userEngagementDuration", "TYPE_SECONDS"),
    ("transactions", "TYPE_INTEGER"),
    ("purchaseRevenue", "TYPE_CURRENCY"),
    ("keyEvents", "TYPE_FLOAT"),
];

const KNOWN_KEYS: [&str; 15] = [
    "property",
    "dimensions",
    "metrics",
    "dateRanges",
    "dimensionFilter",
    "metricFilter",
    "offset",
    "limit",
    "metricAggregations",
    "orderBys",
    "currencyCode",
    "cohortSpec",
    "keepEmptyRows",
    "returnPropertyQuota",
    "comparisons",
];

const UNSUPPORTED_KEYS: [&str; 5] = [
    "dimensionFilter",
    "metricFilter",
    "metricAggregations",
    "cohortSpec",
    "comparisons",
];

/// Per-property token use.
#[derive(Debug, Default)]
pub struct QuotaBook {
    props: Mutex<HashMap<u64, PropQuota>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PropQuota {
    day: i32,
    day_used: u64,
    hour: u64,
    hour_used: u64,
    server_errors: u64,
}

fn current_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 3_600)
        .unwrap_or(0)
}

impl QuotaBook {
    fn entry(&self, property: u64, today: Day) -> PropQuota {
        let mut map = lock(&self.props);
        let q = map.entry(property).or_default();
        if q.day != today.0 {
            q.day = today.0;
            q.day_used = 0;
        }
        let hour = current_hour();
        if q.hour != hour {
            q.hour = hour;
            q.hour_used = 0;
            q.server_errors = 0;
        }
        *q
    }

    fn charge(&self, property: u64, tokens: u64) {
        let mut map = lock(&self.props);
        let q = map.entry(property).or_default();
        q.day_used += tokens;
        q.hour_used += tokens;
    }

    fn server_error(&self, property: u64) {
        lock(&self.props).entry(property).or_default().server_errors += 1;
    }
}

fn err(message: impl Into<String>) -> GoogleApiError {
    GoogleApiError::invalid_argument(message)
}

/// A GA4 date: `YYYY-MM-DD`, `today`, `yesterday`, `NdaysAgo`.
fn ga_date(s: &str, today: Day) -> Option<Day> {
    match s {
        "today" => Some(today),
        "yesterday" => Some(today.plus(-1)),
        _ => match s.strip_suffix("daysAgo") {
            Some(n) => n
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| today.plus(-n)),
            None => Day::parse(s),
        },
    }
}

fn int_field(v: &Value, name: &str) -> Result<Option<i64>, GoogleApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| err(format!("Invalid value at '{name}': expected an integer"))),
        Value::String(s) => s.parse::<i64>().map(Some).map_err(|_| {
            err(format!(
                "Invalid value at '{name}' ({s}): expected an integer"
            ))
        }),
        _ => Err(err(format!(
            "Invalid value at '{name}': expected an integer"
        ))),
    }
}

fn names(v: Option<&Value>, what: &str) -> Result<Vec<String>, GoogleApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let arr = v
        .as_array()
        .ok_or_else(|| err(format!("Invalid value at '{what}': expected a list")))?;
    arr.iter()
        .map(|d| {
            d.get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| err(format!("Each of '{what}' needs a name")))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum OrderKey {
    Dim(usize),
    Met(usize),
}

/// A validated report request.
struct Report {
    dims: Vec<usize>,
    mets: Vec<usize>,
    from: Day,
    to: Day,
    limit: usize,
    offset: usize,
    keep_empty: bool,
    return_quota: bool,
    order: Vec<(OrderKey, bool)>,
}

fn parse_request(body: &[u8], today: Day, currency: &str) -> Result<Report, GoogleApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("Invalid JSON payload received. {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| err("Invalid JSON payload received. Expected an object."))?;
    for (k, val) in obj {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            return Err(err(format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            )));
        }
        if UNSUPPORTED_KEYS.contains(&k.as_str()) && !val.is_null() {
            return Err(err(format!(
                "The platform emulator does not support `{k}` in runReport."
            )));
        }
    }
    let dim_names = names(obj.get("dimensions"), "dimensions")?;
    let met_names = names(obj.get("metrics"), "metrics")?;
    if dim_names.is_empty() && met_names.is_empty() {
        return Err(err(
            "A report must request at least one dimension or metric.",
        ));
    }
    if dim_names.len() > 9 || met_names.len() > 10 {
        return Err(err("Requests are limited to 9 dimensions and 10 metrics."));
    }
    let mut dims = Vec::new();
    for n in &dim_names {
        let i = DIMENSIONS.iter().position(|d| d == n).ok_or_else(|| {
            err(format!("Field {n} is not a valid dimension. For a list of valid dimensions and metrics, see {SCHEMA_URL} "))
        })?;
        if dims.contains(&i) {
            return Err(err(format!("Duplicate dimension {n} in the request.")));
        }
        dims.push(i);
    }
    let mut mets = Vec::new();
    for n in &met_names {
        let i = METRICS.iter().position(|(m, _)| m == n).ok_or_else(|| {
            err(format!("Field {n} is not a valid metric. For a list of valid dimensions and metrics, see {SCHEMA_URL} "))
        })?;
        if mets.contains(&i) {
            return Err(err(format!("Duplicate metric {n} in the request.")));
        }
        mets.push(i);
    }
    let ranges = obj
        .get("dateRanges")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let range = match ranges.as_slice() {
        [one] => one,
        [] => {
            return Err(err(
                "At least one date range must be specified in dateRanges.",
            ));
        }
        _ => {
            return Err(err(
                "The platform emulator supports exactly one date range per request.",
            ));
        }
    };
    let date_of = |k: &str| {
        let s = range.get(k).and_then(Value::as_str).unwrap_or("");
        ga_date(s, today).ok_or_else(|| {
            err(format!(
                "Invalid dateRanges {k}: '{s}'. Use YYYY-MM-DD, today, yesterday or NdaysAgo."
            ))
        })
    };
    let (from, to) = (date_of("startDate")?, date_of("endDate")?);
    if from > to {
        return Err(err(format!(
            "Invalid date range: startDate {from} is after endDate {to}."
        )));
    }
    let limit = match int_field(obj.get("limit").unwrap_or(&Value::Null), "limit")? {
        None | Some(0) => 10_000,
        Some(n) if n < 0 => return Err(err(format!("limit must be positive, got {n}."))),
        Some(n) => usize::try_from(n).unwrap_or(250_000).min(250_000),
    };
    let offset = match int_field(obj.get("offset").unwrap_or(&Value::Null), "offset")? {
        None => 0,
        Some(n) if n < 0 => return Err(err(format!("offset must not be negative, got {n}."))),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if let Some(c) = obj.get("currencyCode").and_then(Value::as_str)
        && !c.is_empty()
        && c != currency
    {
        return Err(err(format!(
            "The platform emulator does not convert currencies: this property reports in {currency}."
        )));
    }
    let mut order = Vec::new();
    if let Some(list) = obj.get("orderBys").and_then(Value::as_array) {
        for o in list {
            let desc = o.get("desc").and_then(Value::as_bool).unwrap_or(false);
            if let Some(name) = o
                .pointer("/dimension/dimensionName")
                .and_then(Value::as_str)
            {
                let pos = dim_names.iter().position(|d| d == name).ok_or_else(|| {
                    err(format!("orderBys dimension {name} is not in the request."))
                })?;
                order.push((OrderKey::Dim(pos), desc));
            } else if let Some(name) = o.pointer("/metric/metricName").and_then(Value::as_str) {
                let pos = met_names
                    .iter()
                    .position(|m| m == name)
                    .ok_or_else(|| err(format!("orderBys metric {name} is not in the request.")))?;
                order.push((OrderKey::Met(pos), desc));
            } else {
                return Err(err(
                    "orderBys entries need a dimension.dimensionName or a metric.metricName.",
                ));
            }
        }
    }
    Ok(Report {
        dims,
        mets,
        from,
        to,
        limit,
        offset,
        keep_empty: obj
            .get("keepEmptyRows")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        return_quota: obj
            .get("returnPropertyQuota")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        order,
    })
}

fn dim_value(p: &Property, r: &GaRow, dim: usize) -> String {
    let src = p.sources.get(usize::from(r.source));
    match dim {
        0 => r.day.compact(),
        1 => src.map_or("(not set)", |s| s.source).to_string(),
        2 => src.map_or("(not set)", |s| s.medium).to_string(),
        3 => src.map_or_else(|| "(not set)".to_string(), |s| s.campaign.clone()),
        4 => src.map_or("Unassigned", |s| s.channel_group).to_string(),
        5 => DEVICES
            .get(usize::from(r.device))
            .copied()
            .unwrap_or("(other)")
            .to_string(),
        _ => p
            .info
            .countries
            .get(usize::from(r.country))
            .map_or("(not set)", |c| c.name)
            .to_string(),
    }
}

fn met_value(m: &GaMetrics, met: usize) -> (u64, String) {
    let v = match met {
        0 => m.sessions,
        1 => m.engaged_sessions,
        2 => m.screen_page_views,
        3 => m.engagement_seconds,
        4 => m.transactions,
        5 => m.revenue_cents,
        _ => m.key_events,
    };
    let text = if met == 5 {
        json::trimmed_money(v)
    } else {
        v.to_string()
    };
    (v, text)
}

/// Rows of a report, aggregated to the requested dimensions and sorted.
fn report_rows(p: &Property, rep: &Report) -> Vec<(Vec<String>, GaMetrics)> {
    let mut agg: BTreeMap<Vec<String>, GaMetrics> = BTreeMap::new();
    if let Some((a, b)) = p.data_days(rep.from, rep.to) {
        let mut buf = Vec::new();
        for day in a.through(b) {
            buf.clear();
            p.day_rows(day, rep.keep_empty, &mut buf);
            for r in &buf {
                let key: Vec<String> = rep.dims.iter().map(|d| dim_value(p, r, *d)).collect();
                agg.entry(key).or_default().add(&r.m);
            }
        }
    }
    let mut rows: Vec<(Vec<String>, GaMetrics)> = agg
        .into_iter()
        .filter(|(_, m)| {
            rep.keep_empty
                || if rep.mets.is_empty() {
                    m.sessions > 0
                } else {
                    rep.mets.iter().any(|i| met_value(m, *i).0 > 0)
                }
        })
        .collect();
    if !rep.order.is_empty() {
        rows.sort_by(|x, y| {
            rep.order
                .iter()
                .map(|(k, desc)| {
                    let o = match k {
                        OrderKey::Dim(i) => x.0.get(*i).cmp(&y.0.get(*i)),
                        OrderKey::Met(i) => {
                            let mi = rep.mets.get(*i).copied().unwrap_or(0);
                            met_value(&x.1, mi).0.cmp(&met_value(&y.1, mi).0)
                        }
                    };
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| !o.is_eq())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    rows
}

fn quota_status(consumed: u64, limit: u64, used_after: u64) -> Value {
    json!({ "consumed": consumed, "remaining": limit.saturating_sub(used_after) })
}

/// The runReport handler.
pub async fn run_report(
    State(st): State<Arc<AppState>>,
    Path((_version, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fail = |e: GoogleApiError| e.render(None, "", SERVICE, false);
    let Some((prop, method)) = action.split_once(':') else {
        return fail(GoogleApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Method not found: {action}."),
        ));
    };
    if method != "runReport" {
        return fail(GoogleApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Method not found: {method}. The emulator serves runReport."),
        ));
    }
    let token = match bearer(&headers) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return fail(GoogleApiError::unauthenticated(true, false)),
    };
    match st.tokens.check(TokenKind::Google, &token) {
        TokenCheck::Valid => {}
        TokenCheck::Expired => return fail(GoogleApiError::unauthenticated(false, true)),
        TokenCheck::Unknown => return fail(GoogleApiError::unauthenticated(false, false)),
    }
    let Some(property) = prop
        .parse::<u64>()
        .ok()
        .filter(|_| prop.bytes().all(|b| b.is_ascii_digit()))
    else {
        return fail(err(format!(
            "Invalid property ID: 'properties/{prop}'. A property ID is numeric."
        )));
    };
    let decision = lock(&st.faults).next(FaultPlatform::Ga4);
    match decision.action {
        Action::Throttle { .. } => {
            return fail(GoogleApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Exhausted property tokens per hour for a project per property. This quota will refresh in under an hour. To learn more, see https://developers.google.com/analytics/devguides/reporting/data/v1/quotas",
            ));
        }
        Action::ServerError => {
            st.ga4_quota.server_error(property);
            return fail(GoogleApiError::unavailable());
        }
        Action::ExpireToken => {
            st.tokens.expire(&token);
            return fail(GoogleApiError::unauthenticated(false, true));
        }
        Action::Proceed => {}
    }
    let today = st.today();
    let p = st.generator.property(property, today);
    let rep = match parse_request(&body, today, p.info.currency) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let rows = report_rows(&p, &rep);
    let row_count = rows.len() as u64;
    let cost = 1 + row_count / 1_000;
    let q = st.ga4_quota.entry(property, today);
    let (per_day, per_hour) = (st.cfg.ga4_tokens_per_day, st.cfg.ga4_tokens_per_hour);
    let per_project_hour = per_hour * 35 / 100;
    if q.day_used + cost > per_day {
        return fail(GoogleApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Exhausted property tokens per day for a project per property. To learn more, see https://developers.google.com/analytics/devguides/reporting/data/v1/quotas",
        ));
    }
    if q.hour_used + cost > per_hour {
        return fail(GoogleApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Exhausted property tokens per hour for a project per property. To learn more, see https://developers.google.com/analytics/devguides/reporting/data/v1/quotas",
        ));
    }
    st.ga4_quota.charge(property, cost);

    let overrides: HashMap<&str, &Value> = decision
        .overrides_for("runReport")
        .map(|r| (r.field.as_str(), &r.value))
        .collect();
    let mut out = Vec::with_capacity(256 + rows.len().min(rep.limit) * 200);
    out.extend_from_slice(b"{\"dimensionHeaders\":[");
    for (i, d) in rep.dims.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::string(&mut out, DIMENSIONS.get(*d).copied().unwrap_or(""));
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"metricHeaders\":[");
    for (i, m) in rep.mets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, kind) = METRICS.get(*m).copied().unwrap_or(("", "TYPE_INTEGER"));
        out.extend_from_slice(b"{\"name\":");
        json::string(&mut out, name);
        out.extend_from_slice(b",\"type\":");
        json::string(&mut out, kind);
        out.push(b'}');
    }
    out.push(b']');
    let page: Vec<&(Vec<String>, GaMetrics)> =
        rows.iter().skip(rep.offset).take(rep.limit).collect();
    if !page.is_empty() {
        out.extend_from_slice(b",\"rows\":[");
        for (i, (dims, m)) in page.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            if !rep.dims.is_empty() {
                out.extend_from_slice(b"\"dimensionValues\":[");
                for (j, (d, v)) in rep.dims.iter().zip(dims.iter()).enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"value\":");
                    match overrides.get(DIMENSIONS.get(*d).copied().unwrap_or("")) {
                        Some(o) => json::value(&mut out, o),
                        None => json::string(&mut out, v),
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
            if !rep.mets.is_empty() {
                if !rep.dims.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"metricValues\":[");
                for (j, mi) in rep.mets.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"value\":");
                    match overrides.get(METRICS.get(*mi).map_or("", |x| x.0)) {
                        Some(o) => json::value(&mut out, o),
                        None => json::string(&mut out, &met_value(m, *mi).1),
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    if row_count > 0 {
        out.extend_from_slice(b",\"rowCount\":");
        json::uint(&mut out, row_count);
    }
    out.extend_from_slice(b",\"metadata\":");
    json::value(
        &mut out,
        &json!({ "currencyCode": p.info.currency, "timeZone": p.info.time_zone }),
    );
    if rep.return_quota {
        let quota = json!({
            "tokensPerDay": quota_status(cost, per_day, q.day_used + cost),
            "tokensPerHour": quota_status(cost, per_hour, q.hour_used + cost),
            "concurrentRequests": { "consumed": 0, "remaining": 10 },
            "serverErrorsPerProjectPerHour": { "consumed": 0, "remaining": 10u64.saturating_sub(q.server_errors) },
            "potentiallyThresholdedRequestsPerHour": { "consumed": 0, "remaining": 120 },
            "tokensPerProjectPerHour": quota_status(cost, per_project_hour, q.hour_used + cost),
        });
        out.extend_from_slice(b",\"propertyQuota\":");
        json::value(&mut out, &quota);
    }
    out.extend_from_slice(b",\"kind\":\"analyticsData#runReport\"}");
    json_response(
        StatusCode::OK,
        if decision.malformed {
            truncate(out)
        } else {
            out
        },
    )
}
