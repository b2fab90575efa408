//! A metrics query, as clients send it (`POST /api/v1/query`, and what `GET /api/v1/metrics` and
//! every dashboard widget are translated into), and its validation against the catalog.
//!
//! Validation turns a [`Query`] into a [`Plan`]: every name resolved in the catalog, every source
//! the metrics need, and for each source the dimensions and filters it can answer. Everything a
//! client can get wrong is refused here with a message naming the field and the value, so the
//! engine only ever sees plans it can compile.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Dimension, DimensionType, Metric, MetricKind};
use crate::error::ApiError;

/// Limits that protect the warehouse from one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_range_days: u32,
    pub max_limit: u32,
}

pub const MAX_METRICS: usize = 40;
pub const MAX_DIMENSIONS: usize = 8;
pub const MAX_FILTERS: usize = 20;
pub const MAX_FILTER_VALUES: usize = 500;
pub const MAX_OFFSET: u32 = 1_000_000;
pub const DEFAULT_LIMIT: u32 = 1_000;
/// Dates outside this window are certainly mistakes (the warehouse's date dimension spans it).
const EARLIEST: (i32, u32, u32) = (2015, 1, 1);
const LATEST: (i32, u32, u32) = (2040, 12, 31);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub metrics: Vec<String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Required unless every metric comes from an undated source.
    #[serde(default)]
    pub time: Option<TimeRange>,
    /// Conditions on metric values, applied after aggregation (SQL's HAVING).
    #[serde(default)]
    pub having: Vec<MetricFilter>,
    #[serde(default)]
    pub order: Vec<OrderBy>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub offset: u32,
    #[serde(default)]
    pub compare: Option<Compare>,
    /// SCD2 attributes (campaign name, status, …) as of each fact's date, or as they are now.
    #[serde(default)]
    pub attributes: AttributeTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
    #[serde(default)]
    pub grain: Grain,
}

impl TimeRange {
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    /// The period of the same length that ends the day before this one starts.
    pub fn previous(&self) -> Option<TimeRange> {
        let end = self.start.checked_sub_days(Days::new(1))?;
        let start = end.checked_sub_days(Days::new(u64::try_from(self.days() - 1).ok()?))?;
        Some(TimeRange {
            start,
            end,
            ..*self
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    #[default]
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeTime {
    #[default]
    AsOf,
    Current,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    PreviousPeriod,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub dimension: String,
    pub op: FilterOp,
    pub value: FilterValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Neq,
    In,
    NotIn,
    Contains,
    StartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterValue {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricFilter {
    pub metric: String,
    pub op: FilterOp,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBy {
    pub field: String,
    #[serde(default)]
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Asc,
    #[default]
    Desc,
}

/// A validated query: names resolved, one [`SourcePlan`] per source the metrics read.
#[derive(Debug, Clone)]
pub struct Plan<'c> {
    pub query: Query,
    pub metrics: Vec<&'c Metric>,
    pub dimensions: Vec<&'c Dimension>,
    pub sources: Vec<SourcePlan<'c>>,
    pub limit: u32,
    pub order: Vec<(Field, Direction)>,
    pub having: Vec<(&'c Metric, FilterOp, f64)>,
}

/// A column of the result an order may refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Dimension(usize),
    Metric(usize),
}

/// What one source must aggregate.
#[derive(Debug, Clone)]
pub struct SourcePlan<'c> {
    pub source: &'c str,
    /// The base metrics read from this source.
    pub bases: Vec<&'c Metric>,
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::bad_request(code, message)
}

fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

impl Query {
    /// Checks the query against the catalog and the limits.
    pub fn plan<'c>(&self, catalog: &'c Catalog, limits: Limits) -> Result<Plan<'c>, ApiError> {
        if self.metrics.is_empty() {
            return Err(bad(
                "invalid_query",
                "metrics: ask for at least one metric".into(),
            ));
        }
        if self.metrics.len() > MAX_METRICS {
            return Err(bad(
                "invalid_query",
                format!("metrics: at most {MAX_METRICS} per query"),
            ));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(bad(
                "invalid_query",
                format!("dimensions: at most {MAX_DIMENSIONS} per query"),
            ));
        }
        if self.filters.len() > MAX_FILTERS {
            return Err(bad(
                "invalid_query",
                format!("filters: at most {MAX_FILTERS} per query"),
            ));
        }
        let metrics = self
            .metrics
            .iter()
            .map(|name| resolve_metric(catalog, name, "metrics"))
            .collect::<Result<Vec<_>, _>>()?;
        let dimensions = self
            .dimensions
            .iter()
            .map(|name| resolve_dimension(catalog, name, "dimensions"))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dup) = duplicate(&self.metrics) {
            return Err(bad(
                "invalid_query",
                format!("metrics: {dup:?} is listed twice"),
            ));
        }
        if let Some(dup) = duplicate(&self.dimensions) {
            return Err(bad(
                "invalid_query",
                format!("dimensions: {dup:?} is listed twice"),
            ));
        }

        // Every source the metrics read, each with the base metrics it must sum.
        let mut by_source: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
        for metric in &metrics {
            for base in catalog.bases_of(metric) {
                if let MetricKind::Base { source, .. } = &base.kind {
                    let list = by_source.entry(source.as_str()).or_default();
                    if !list.iter().any(|m| m.name == base.name) {
                        list.push(base);
                    }
                }
            }
        }
        // A dimension or filter must exist in every source the query reads.
        for (source, bases) in &by_source {
            let needs = |what: &str, dimension: &Dimension| {
                if dimension.columns.contains_key(*source) {
                    return Ok(());
                }
                let metric = metrics
                    .iter()
                    .find(|m| catalog.sources_of(m).contains(source))
                    .map_or(bases[0].name.as_str(), |m| m.name.as_str());
                Err(bad(
                    "incompatible_dimension",
                    format!(
                        "{what}: dimension {:?} is not available with metric {metric:?} ({}); it is available with metrics from: {}",
                        dimension.name,
                        catalog.sources[*source].description,
                        quoted_list(dimension.columns.keys().map(String::as_str)),
                    ),
                ))
            };
            for dimension in &dimensions {
                needs("dimensions", dimension)?;
            }
            for filter in &self.filters {
                needs(
                    "filters",
                    resolve_dimension(catalog, &filter.dimension, "filters")?,
                )?;
            }
        }
        for filter in &self.filters {
            validate_filter(
                filter,
                resolve_dimension(catalog, &filter.dimension, "filters")?,
            )?;
        }

        let dated = by_source.keys().any(|s| catalog.sources[*s].date.is_some());
        let undated = by_source.keys().any(|s| catalog.sources[*s].date.is_none());
        match (&self.time, dated) {
            (None, true) => {
                return Err(bad(
                    "invalid_time",
                    "time: give a date range {\"start\": \"YYYY-MM-DD\", \"end\": \"YYYY-MM-DD\"}"
                        .into(),
                ));
            }
            (Some(time), _) => validate_time(time, limits)?,
            (None, false) => {}
        }
        if dated && undated && dimensions.iter().any(|d| d.kind == DimensionType::Date) {
            return Err(bad(
                "incompatible_dimension",
                "dimensions: date cannot be combined with current budgets, which are not dated"
                    .into(),
            ));
        }
        if self.compare.is_some() && self.time.is_none() {
            return Err(bad(
                "invalid_query",
                "compare: a comparison needs a time range".into(),
            ));
        }

        let limit = self.limit.unwrap_or(DEFAULT_LIMIT.min(limits.max_limit));
        if limit == 0 || limit > limits.max_limit {
            return Err(bad(
                "invalid_limit",
                format!("limit: {limit} is outside 1..={}", limits.max_limit),
            ));
        }
        if self.offset > MAX_OFFSET {
            return Err(bad(
                "invalid_offset",
                format!("offset: {} is above {MAX_OFFSET}", self.offset),
            ));
        }
        let order = self
            .order
            .iter()
            .map(|o| {
                if let Some(i) = self.dimensions.iter().position(|d| d == &o.field) {
                    Ok((Field::Dimension(i), o.direction))
                } else if let Some(i) = self.metrics.iter().position(|m| m == &o.field) {
                    Ok((Field::Metric(i), o.direction))
                } else {
                    Err(bad(
                        "invalid_order",
                        format!(
                            "order: {:?} is neither a requested metric nor a requested dimension",
                            truncate(&o.field)
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let having = self
            .having
            .iter()
            .map(|h| {
                let metric = resolve_metric(catalog, &h.metric, "having")?;
                if matches!(
                    h.op,
                    FilterOp::In | FilterOp::NotIn | FilterOp::Contains | FilterOp::StartsWith
                ) {
                    return Err(bad(
                        "invalid_filter",
                        format!(
                            "having: {:?} compares numbers: use eq, neq, gt, gte, lt or lte",
                            h.metric
                        ),
                    ));
                }
                if !h.value.is_finite() {
                    return Err(bad(
                        "invalid_filter",
                        "having: value must be a finite number".into(),
                    ));
                }
                if !self.metrics.contains(&h.metric) {
                    return Err(bad(
                        "invalid_filter",
                        format!("having: {:?} must also be requested in metrics", h.metric),
                    ));
                }
                Ok((metric, h.op, h.value))
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Plan {
            query: self.clone(),
            metrics,
            dimensions,
            sources: by_source
                .into_iter()
                .map(|(source, bases)| SourcePlan { source, bases })
                .collect(),
            limit,
            order,
            having,
        })
    }
}

/// Client-supplied strings echoed in errors are cut short (they may be huge or hostile).
pub fn truncate(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn duplicate(names: &[String]) -> Option<&str> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .find(|n| !seen.insert(n.as_str()))
        .map(String::as_str)
}

fn resolve_metric<'c>(
    catalog: &'c Catalog,
    name: &str,
    field: &str,
) -> Result<&'c Metric, ApiError> {
    catalog.metrics.get(name).ok_or_else(|| {
        bad(
            "unknown_metric",
            format!(
                "{field}: unknown metric {:?}; GET /api/v1/meta lists them",
                truncate(name)
            ),
        )
    })
}

fn resolve_dimension<'c>(
    catalog: &'c Catalog,
    name: &str,
    field: &str,
) -> Result<&'c Dimension, ApiError> {
    catalog.dimensions.get(name).ok_or_else(|| {
        bad(
            "unknown_dimension",
            format!(
                "{field}: unknown dimension {:?}; GET /api/v1/meta lists them",
                truncate(name)
            ),
        )
    })
}

fn validate_filter(filter: &Filter, dimension: &Dimension) -> Result<(), ApiError> {
    let name = &dimension.name;
    let values: Vec<&String> = match (&filter.op, &filter.value) {
        (FilterOp::In | FilterOp::NotIn, FilterValue::Many(v)) => {
            if v.is_empty() || v.len() > MAX_FILTER_VALUES {
                return Err(bad(
                    "invalid_filter",
                    format!("filters: {name}: give 1 to {MAX_FILTER_VALUES} values"),
                ));
            }
            v.iter().collect()
        }
        (FilterOp::In | FilterOp::NotIn, FilterValue::One(_)) => {
            return Err(bad(
                "invalid_filter",
                format!("filters: {name}: in / not_in take a list of values"),
            ));
        }
        (_, FilterValue::One(v)) => vec![v],
        (op, FilterValue::Many(_)) => {
            return Err(bad(
                "invalid_filter",
                format!("filters: {name}: {op:?} takes one value, not a list").to_lowercase(),
            ));
        }
    };
    for value in values {
        if value.len() > 1_000 {
            return Err(bad(
                "invalid_filter",
                format!("filters: {name}: a value is longer than 1000 bytes"),
            ));
        }
        if dimension.kind == DimensionType::Date
            && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err()
        {
            return Err(bad(
                "invalid_filter",
                format!(
                    "filters: {name}: {:?} is not a date (YYYY-MM-DD)",
                    truncate(value)
                ),
            ));
        }
    }
    if dimension.kind == DimensionType::Date
        && matches!(filter.op, FilterOp::Contains | FilterOp::StartsWith)
    {
        return Err(bad(
            "invalid_filter",
            format!("filters: {name}: dates compare with eq, neq, in, not_in, gt, gte, lt, lte"),
        ));
    }
    Ok(())
}

fn validate_time(time: &TimeRange, limits: Limits) -> Result<(), ApiError> {
    let bound = |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN);
    let (earliest, latest) = (bound(EARLIEST), bound(LATEST));
    for (what, date) in [("start", time.start), ("end", time.end)] {
        if date < earliest || date > latest {
            return Err(bad(
                "invalid_time",
                format!("time.{what}: {date} is outside {earliest} .. {latest}"),
            ));
        }
    }
    if time.start > time.end {
        return Err(bad(
            "invalid_time",
            format!(
                "time: start {} is after end {} (the range is reversed)",
                time.start, time.end
            ),
        ));
    }
    if time.days() > i64::from(limits.max_range_days) {
        return Err(bad(
            "invalid_time",
            format!(
                "time: {} days requested; at most {} per query",
                time.days(),
                limits.max_range_days
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_range_days: 731,
        max_limit: 10_000,
    };

    fn query(json: serde_json::Value) -> Result<Query, serde_json::Error> {
        serde_json::from_value(json)
    }

    fn plan_error(json: serde_json::Value) -> String {
        let catalog = Catalog::builtin().expect("catalog");
        match query(json) {
            Err(e) => format!("parse: {e}"),
            Ok(q) => match q.plan(&catalog, LIMITS) {
                Ok(_) => "ok".into(),
                Err(e) => e.to_string(),
            },
        }
    }

    const TIME: &str = r#"{"start":"2026-10-01","end":"2026-10-14"}"#;

    fn time() -> serde_json::Value {
        serde_json::from_str(TIME).expect("json")
    }

    #[test]
    fn a_cross_source_query_plans_one_aggregate_per_source() {
        let catalog = Catalog::builtin().expect("catalog");
        let q = query(serde_json::json!({
            "metrics": ["spend", "ga_roas", "ctr"], "dimensions": ["date"], "time": time()
        }))
        .expect("parses");
        let plan = q.plan(&catalog, LIMITS).expect("plans");
        let sources: Vec<_> = plan.sources.iter().map(|s| s.source).collect();
        assert_eq!(sources, ["ads", "ga"]);
        let ads: Vec<_> = plan.sources[0]
            .bases
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(ads, ["spend", "clicks", "impressions"]);
    }

    #[test]
    fn mistakes_are_refused_with_what_and_where() {
        let cases = [
            (
                serde_json::json!({"metrics": ["nope"], "time": time()}),
                "metrics: unknown metric \"nope\"",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "dimensions": ["x'; DROP TABLE y"], "time": time()}),
                "dimensions: unknown dimension",
            ),
            (
                serde_json::json!({"metrics": ["sessions"], "dimensions": ["campaign_id"], "time": time()}),
                "dimension \"campaign_id\" is not available with metric \"sessions\"",
            ),
            (
                serde_json::json!({"metrics": ["spend"]}),
                "time: give a date range",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": {"start":"2026-10-14","end":"2026-10-01"}}),
                "reversed",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": {"start":"2015-01-01","end":"2026-10-01"}}),
                "at most 731",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": {"start":"1900-01-01","end":"1900-01-02"}}),
                "time.start: 1900-01-01 is outside",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "limit": 1_000_000}),
                "limit: 1000000 is outside",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "limit": 0}),
                "limit: 0 is outside",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "order": [{"field": "clicks"}]}),
                "order: \"clicks\" is neither",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "filters": [{"dimension":"date","op":"eq","value":"yesterday"}]}),
                "filters: date: \"yesterday\" is not a date",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "filters": [{"dimension":"platform","op":"in","value":"meta_ads"}]}),
                "take a list",
            ),
            (
                serde_json::json!({"metrics": ["spend", "spend"], "time": time()}),
                "listed twice",
            ),
            (
                serde_json::json!({"metrics": ["spend"], "time": time(), "surprise": 1}),
                "unknown field `surprise`",
            ),
            (
                serde_json::json!({"metrics": ["daily_budget"], "dimensions": ["date"]}),
                "dimension \"date\" is not available",
            ),
        ];
        for (json, expected) in cases {
            let got = plan_error(json.clone());
            assert!(
                got.contains(expected),
                "{json}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn the_previous_period_has_the_same_length_and_ends_the_day_before() {
        let t = TimeRange {
            start: NaiveDate::from_ymd_opt(2026, 10, 1).expect("date"),
            end: NaiveDate::from_ymd_opt(2026, 10, 14).expect("date"),
            grain: Grain::Day,
        };
        let p = t.previous().expect("previous");
        assert_eq!(p.end, NaiveDate::from_ymd_opt(2026, 9, 30).expect("date"));
        assert_eq!(p.days(), 14);
    }
}
