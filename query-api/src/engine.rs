//! The metrics engine: compiles a [`Plan`] to one aggregate query per source, runs them as the
//! caller's tenant, merges the groups on their dimension values, computes ratio metrics from the
//! summed bases, then filters, orders and pages the rows.
//!
//! Every value from a request is bound (`?`), never spliced; the SQL text comes only from the
//! catalog. Each source query returns its dimensions and sums as two arrays, so one row type
//! (`Group`) reads any query without dynamic decoding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mi_common::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value, json};

use crate::catalog::{Catalog, DimensionType, Metric, MetricKind, Unit};
use crate::error::ApiError;
use crate::query::{
    AttributeTime, Compare, Direction, Field, FilterOp, FilterValue, Grain, Plan, SourcePlan,
    TimeRange,
};

/// Beyond this many groups from one source the query is refused: the client asked for a
/// cross product it cannot read, and the API would hold it all in memory.
pub const MAX_GROUPS: usize = 100_000;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Group {
    dims: Vec<String>,
    values: Vec<f64>,
    currencies: Vec<String>,
}

/// One merged result row: the dimension values and the summed base metrics by name.
#[derive(Debug, Clone, Default)]
struct Row {
    dims: Vec<String>,
    bases: BTreeMap<String, f64>,
}

/// A query's answer, before it is shaped for a particular endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Map<String, Value>>,
    pub totals: Map<String, Value>,
    pub total_rows: usize,
    pub limit: u32,
    pub offset: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Comparison>,
    pub currencies: Vec<String>,
    pub warnings: Vec<String>,
    pub query_time_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: &'static str,
    #[serde(rename = "type")]
    pub value_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub time: TimeRange,
    pub totals: Map<String, Value>,
    /// Relative change of each metric's total: (current − previous) / previous; null when the
    /// previous value is 0 or missing.
    pub change: Map<String, Value>,
}

/// Runs plans against the warehouse.
pub struct Engine<'a> {
    pub catalog: &'a Catalog,
    pub client: &'a clickhouse::Client,
    pub database: &'a str,
    pub tenant: &'a TenantId,
}

impl Engine<'_> {
    pub async fn run(&self, plan: &Plan<'_>) -> Result<Answer, ApiError> {
        let started = Instant::now();
        let (rows, currencies) = self.aggregate(plan, plan.query.time).await?;
        let mut warnings = Vec::new();
        let money = plan.metrics.iter().any(|m| m.unit == Unit::Currency);
        if money && currencies.len() > 1 && !plan.query.dimensions.iter().any(|d| d == "currency") {
            warnings.push(format!(
                "money metrics add amounts in {}: add the currency dimension or filter one currency",
                currencies.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut rows: Vec<Row> = rows
            .into_iter()
            .filter(|row| self.passes_having(plan, row))
            .collect();
        let totals_bases = sum_rows(&rows);
        let compare = match (plan.query.compare, plan.query.time) {
            (Some(Compare::PreviousPeriod), Some(time)) => {
                let previous = time.previous().ok_or_else(|| {
                    ApiError::bad_request("invalid_time", "compare: no previous period exists")
                })?;
                let (prev_rows, _) = self.aggregate(plan, Some(previous)).await?;
                let prev_bases = sum_rows(&prev_rows);
                let mut totals = Map::new();
                let mut change = Map::new();
                for metric in &plan.metrics {
                    let now = self.value(metric, &totals_bases);
                    let before = self.value(metric, &prev_bases);
                    totals.insert(metric.name.clone(), to_json(metric, before));
                    let delta = match (now, before) {
                        (Some(n), Some(b)) if b != 0.0 => Some((n - b) / b.abs()),
                        _ => None,
                    };
                    change.insert(
                        metric.name.clone(),
                        delta
                            .and_then(Number::from_f64)
                            .map_or(Value::Null, Value::Number),
                    );
                }
                Some(Comparison {
                    time: previous,
                    totals,
                    change,
                })
            }
            _ => None,
        };

        self.sort(plan, &mut rows);
        let total_rows = rows.len();
        let start = usize::try_from(plan.query.offset).unwrap_or(usize::MAX);
        let page: Vec<Map<String, Value>> = rows
            .iter()
            .skip(start)
            .take(plan.limit as usize)
            .map(|row| self.shape(plan, row))
            .collect();
        let totals = plan
            .metrics
            .iter()
            .map(|m| (m.name.clone(), to_json(m, self.value(m, &totals_bases))))
            .collect();
        Ok(Answer {
            columns: columns(plan),
            rows: page,
            totals,
            total_rows,
            limit: plan.limit,
            offset: plan.query.offset,
            compare,
            currencies: currencies.into_iter().collect(),
            warnings,
            query_time_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Runs every source's aggregate for `time` and merges the groups on their dimension values.
    async fn aggregate(
        &self,
        plan: &Plan<'_>,
        time: Option<TimeRange>,
    ) -> Result<(Vec<Row>, BTreeSet<String>), ApiError> {
        let queries = plan
            .sources
            .iter()
            .map(|source| self.source_query(plan, source, time));
        let results = futures::future::try_join_all(queries).await?;
        let mut merged: BTreeMap<Vec<String>, Row> = BTreeMap::new();
        let mut currencies = BTreeSet::new();
        for (source, groups) in plan.sources.iter().zip(results) {
            for group in groups {
                currencies.extend(group.currencies.into_iter().filter(|c| !c.is_empty()));
                let row = merged.entry(group.dims.clone()).or_insert_with(|| Row {
                    dims: group.dims,
                    bases: BTreeMap::new(),
                });
                for (metric, value) in source.bases.iter().zip(group.values) {
                    *row.bases.entry(metric.name.clone()).or_default() += value;
                }
            }
        }
        Ok((merged.into_values().collect(), currencies))
    }

    async fn source_query(
        &self,
        plan: &Plan<'_>,
        source: &SourcePlan<'_>,
        time: Option<TimeRange>,
    ) -> Result<Vec<Group>, ApiError> {
        let (sql, binds) = self.compile(plan, source, time);
        let mut query = self.client.query(&sql);
        for bind in binds {
            query = query.bind(bind);
        }
        let groups = query
            .with_setting("max_execution_time", "30")
            .fetch_all::<Group>()
            .await
            .map_err(|e| ApiError::internal(format!("query on source {}: {e}", source.source)))?;
        if groups.len() > MAX_GROUPS {
            return Err(ApiError::bad_request(
                "too_many_groups",
                format!(
                    "the query yields more than {MAX_GROUPS} groups: add filters, or fewer or coarser dimensions"
                ),
            ));
        }
        Ok(groups)
    }

    /// The SQL of one source's aggregate, with its bound values in order.
    pub fn compile(
        &self,
        plan: &Plan<'_>,
        source: &SourcePlan<'_>,
        time: Option<TimeRange>,
    ) -> (String, Vec<String>) {
        let spec = &self.catalog.sources[source.source];
        let db = |s: &str| s.replace("{db}", self.database);
        let mut binds = Vec::new();
        let grain = time.map(|t| t.grain).unwrap_or_default();

        let column = |name: &str| -> Option<&crate::catalog::Column> {
            self.catalog
                .dimensions
                .get(name)
                .and_then(|d| d.columns.get(source.source))
        };
        let dims: Vec<String> = plan
            .dimensions
            .iter()
            .filter_map(|d| {
                let col = d.columns.get(source.source)?;
                Some(match (d.kind, grain) {
                    (DimensionType::Date, Grain::Week) => {
                        format!("toString(toMonday({}))", col.sql)
                    }
                    (DimensionType::Date, Grain::Month) => {
                        format!("toString(toStartOfMonth({}))", col.sql)
                    }
                    _ => format!("toString({})", col.sql),
                })
            })
            .collect();
        let values: Vec<String> = source
            .bases
            .iter()
            .filter_map(|m| match &m.kind {
                MetricKind::Base { sql, .. } => Some(format!("toFloat64({sql})")),
                MetricKind::Ratio { .. } => None,
            })
            .collect();
        // Joins needed by the selected and filtered dimensions, each once, in catalog order.
        let joins: BTreeSet<&str> = plan
            .query
            .dimensions
            .iter()
            .chain(plan.query.filters.iter().map(|f| &f.dimension))
            .filter_map(|d| column(d)?.join.as_deref())
            .collect();
        let currency = self
            .catalog
            .dimensions
            .get("currency")
            .and_then(|d| d.columns.get(source.source))
            .map_or("CAST([], 'Array(String)')".to_owned(), |c| {
                format!("groupUniqArray(toString({}))", c.sql)
            });

        let mut sql = format!(
            "SELECT CAST([{}], 'Array(String)') AS dims, CAST([{}], 'Array(Float64)') AS values, {currency} AS currencies FROM {}",
            dims.join(", "),
            values.join(", "),
            db(&spec.from)
        );
        for join in joins {
            let template = &self.catalog.joins[join];
            let text = match plan.query.attributes {
                AttributeTime::AsOf => &template.as_of,
                AttributeTime::Current => &template.current,
            };
            // `{tenant}` may appear several times; each becomes a bound `?` in order.
            let mut parts = db(text);
            while let Some(at) = parts.find("{tenant}") {
                binds.push(self.tenant.to_string());
                parts.replace_range(at..at + "{tenant}".len(), "?");
            }
            sql.push(' ');
            sql.push_str(&parts);
        }
        sql.push_str(&format!(" WHERE {} = ?", spec.tenant));
        binds.push(self.tenant.to_string());
        if let (Some(date), Some(time)) = (&spec.date, time) {
            sql.push_str(&format!(" AND {date} BETWEEN toDate(?) AND toDate(?)"));
            binds.push(time.start.to_string());
            binds.push(time.end.to_string());
        }
        if let Some(condition) = &spec.condition {
            sql.push_str(&format!(" AND ({condition})"));
        }
        for filter in &plan.query.filters {
            let Some(col) = column(&filter.dimension) else {
                continue;
            };
            let is_date = self.catalog.dimensions[&filter.dimension].kind == DimensionType::Date;
            let target = if is_date {
                col.sql.clone()
            } else {
                format!("toString({})", col.sql)
            };
            let value = |binds: &mut Vec<String>, v: &str| {
                binds.push(v.to_owned());
                if is_date { "toDate(?)" } else { "?" }
            };
            let clause = match (&filter.op, &filter.value) {
                (FilterOp::In | FilterOp::NotIn, FilterValue::Many(list)) => {
                    let slots: Vec<&str> = list.iter().map(|v| value(&mut binds, v)).collect();
                    let not = if filter.op == FilterOp::NotIn {
                        "NOT "
                    } else {
                        ""
                    };
                    format!("{target} {not}IN ({})", slots.join(", "))
                }
                (op, FilterValue::One(v)) => {
                    let slot = value(&mut binds, v);
                    match op {
                        FilterOp::Contains => {
                            format!("positionCaseInsensitiveUTF8({target}, {slot}) > 0")
                        }
                        FilterOp::StartsWith => format!("startsWith({target}, {slot})"),
                        FilterOp::Eq | FilterOp::In => format!("{target} = {slot}"),
                        FilterOp::Neq | FilterOp::NotIn => format!("{target} != {slot}"),
                        FilterOp::Gt => format!("{target} > {slot}"),
                        FilterOp::Gte => format!("{target} >= {slot}"),
                        FilterOp::Lt => format!("{target} < {slot}"),
                        FilterOp::Lte => format!("{target} <= {slot}"),
                    }
                }
                // Refused by validation.
                (_, FilterValue::Many(_)) => continue,
            };
            sql.push_str(" AND ");
            sql.push_str(&clause);
        }
        if !dims.is_empty() {
            sql.push_str(" GROUP BY dims");
        }
        sql.push_str(&format!(" LIMIT {}", MAX_GROUPS + 1));
        (sql, binds)
    }

    fn value(&self, metric: &Metric, bases: &BTreeMap<String, f64>) -> Option<f64> {
        match &metric.kind {
            MetricKind::Base { .. } => Some(bases.get(&metric.name).copied().unwrap_or(0.0)),
            MetricKind::Ratio {
                numerator,
                denominator,
                scale,
            } => {
                let n = bases.get(numerator).copied().unwrap_or(0.0);
                let d = bases.get(denominator).copied().unwrap_or(0.0);
                if d == 0.0 {
                    return None;
                }
                let r = n / d * scale;
                r.is_finite().then_some(r)
            }
        }
    }

    fn passes_having(&self, plan: &Plan<'_>, row: &Row) -> bool {
        plan.having.iter().all(|(metric, op, threshold)| {
            let Some(v) = self.value(metric, &row.bases) else {
                return false;
            };
            match op {
                FilterOp::Eq => v == *threshold,
                FilterOp::Neq => v != *threshold,
                FilterOp::Gt => v > *threshold,
                FilterOp::Gte => v >= *threshold,
                FilterOp::Lt => v < *threshold,
                FilterOp::Lte => v <= *threshold,
                _ => true,
            }
        })
    }

    /// Orders rows by the requested fields, then by dates ascending, then by the first metric
    /// descending, and finally by the dimension values so that pages are stable.
    fn sort(&self, plan: &Plan<'_>, rows: &mut [Row]) {
        let mut order = plan.order.clone();
        if order.is_empty() {
            for (i, d) in plan.dimensions.iter().enumerate() {
                if d.kind == DimensionType::Date {
                    order.push((Field::Dimension(i), Direction::Asc));
                }
            }
            order.push((Field::Metric(0), Direction::Desc));
        }
        rows.sort_by(|a, b| {
            for (field, direction) in &order {
                let ord = match field {
                    Field::Dimension(i) => a.dims.get(*i).cmp(&b.dims.get(*i)),
                    Field::Metric(i) => {
                        let metric = plan.metrics[*i];
                        let (x, y) = (self.value(metric, &a.bases), self.value(metric, &b.bases));
                        // Nulls last whatever the direction.
                        match (x, y) {
                            (Some(x), Some(y)) => x.total_cmp(&y),
                            (Some(_), None) => return std::cmp::Ordering::Less,
                            (None, Some(_)) => return std::cmp::Ordering::Greater,
                            (None, None) => std::cmp::Ordering::Equal,
                        }
                    }
                };
                let ord = match direction {
                    Direction::Asc => ord,
                    Direction::Desc => ord.reverse(),
                };
                if ord.is_ne() {
                    return ord;
                }
            }
            a.dims.cmp(&b.dims)
        });
    }

    fn shape(&self, plan: &Plan<'_>, row: &Row) -> Map<String, Value> {
        let mut out = Map::new();
        for (d, v) in plan.dimensions.iter().zip(&row.dims) {
            out.insert(d.name.clone(), Value::String(v.clone()));
        }
        for m in &plan.metrics {
            out.insert(m.name.clone(), to_json(m, self.value(m, &row.bases)));
        }
        out
    }
}

fn sum_rows(rows: &[Row]) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for row in rows {
        for (k, v) in &row.bases {
            *totals.entry(k.clone()).or_default() += v;
        }
    }
    totals
}

fn columns(plan: &Plan<'_>) -> Vec<ColumnInfo> {
    plan.dimensions
        .iter()
        .map(|d| ColumnInfo {
            name: d.name.clone(),
            kind: "dimension",
            value_type: match d.kind {
                DimensionType::Date => "date",
                DimensionType::String => "string",
            },
            unit: None,
        })
        .chain(plan.metrics.iter().map(|m| ColumnInfo {
            name: m.name.clone(),
            kind: "metric",
            value_type: "number",
            unit: Some(m.unit),
        }))
        .collect()
}

/// A metric value as JSON: counts that are whole numbers as integers, money rounded to the
/// micro-unit it was stored in, null for an undefined ratio.
pub fn to_json(metric: &Metric, value: Option<f64>) -> Value {
    let Some(v) = value else {
        return Value::Null;
    };
    let v = match metric.unit {
        Unit::Currency => (v * 1e6).round() / 1e6,
        _ => v,
    };
    if metric.unit == Unit::Count && v.fract() == 0.0 && v.abs() < 9.0e15 {
        return json!(v as i64);
    }
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}
