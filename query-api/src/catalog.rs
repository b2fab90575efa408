//! The catalog of metrics and dimensions: `catalog/catalog.toml`, compiled into the binary and
//! checked when the API starts (a broken catalog is a startup error, never a request error).
//!
//! Requests name metrics and dimensions; only names found here are accepted, and only the SQL
//! written here reaches ClickHouse.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

const CATALOG: &str = include_str!("../catalog/catalog.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub description: String,
    /// `FROM` clause (with `{db}`), aliased `f`.
    pub from: String,
    /// The date column; `None` for undated sources (current budgets).
    pub date: Option<String>,
    /// The tenant column, always constrained to the caller's tenant.
    pub tenant: String,
    /// A fixed extra condition.
    #[serde(rename = "where")]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub as_of: String,
    pub current: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Count,
    Currency,
    Ratio,
    Number,
    Seconds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    description: String,
    unit: Unit,
    source: Option<String>,
    sql: Option<String>,
    ratio: Option<[String; 2]>,
    scale: Option<f64>,
}

/// How a metric is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// An aggregate over one source.
    Base { source: String, sql: String },
    /// `numerator / denominator × scale`, from base metrics, `None` when the denominator is 0.
    Ratio {
        numerator: String,
        denominator: String,
        scale: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub description: String,
    pub unit: Unit,
    pub kind: MetricKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimensionType {
    String,
    Date,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawColumn {
    Plain(String),
    Joined { sql: String, join: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    description: String,
    #[serde(rename = "type")]
    kind: DimensionType,
    sql: BTreeMap<String, RawColumn>,
}

/// How a dimension is read from one source.
#[derive(Debug, Clone)]
pub struct Column {
    pub sql: String,
    pub join: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dimension {
    pub name: String,
    pub description: String,
    pub kind: DimensionType,
    /// Per source.
    pub columns: BTreeMap<String, Column>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    sources: BTreeMap<String, Source>,
    joins: BTreeMap<String, Join>,
    metrics: BTreeMap<String, RawMetric>,
    dimensions: BTreeMap<String, RawDimension>,
}

#[derive(Debug)]
pub struct Catalog {
    pub sources: BTreeMap<String, Source>,
    pub joins: BTreeMap<String, Join>,
    pub metrics: BTreeMap<String, Metric>,
    pub dimensions: BTreeMap<String, Dimension>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog.toml: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("catalog.toml: {0}")]
    Invalid(String),
}

/// Names are what requests may say; they also become SQL aliases, so keep them plain.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(CATALOG)
    }

    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text)?;
        let invalid = |m: String| Err(CatalogError::Invalid(m));
        let mut metrics = BTreeMap::new();
        for (name, m) in raw.metrics {
            if !valid_name(&name) {
                return invalid(format!("metric name {name:?} is not snake_case"));
            }
            let kind = match (m.source, m.sql, m.ratio) {
                (Some(source), Some(sql), None) => {
                    if !raw.sources.contains_key(&source) {
                        return invalid(format!("metric {name}: unknown source {source}"));
                    }
                    MetricKind::Base { source, sql }
                }
                (None, None, Some([numerator, denominator])) => MetricKind::Ratio {
                    numerator,
                    denominator,
                    scale: m.scale.unwrap_or(1.0),
                },
                _ => {
                    return invalid(format!(
                        "metric {name}: give either `source` and `sql`, or `ratio`"
                    ));
                }
            };
            metrics.insert(
                name.clone(),
                Metric {
                    name,
                    description: m.description,
                    unit: m.unit,
                    kind,
                },
            );
        }
        for metric in metrics.values() {
            if let MetricKind::Ratio {
                numerator,
                denominator,
                ..
            } = &metric.kind
            {
                for part in [numerator, denominator] {
                    match metrics.get(part).map(|m| &m.kind) {
                        Some(MetricKind::Base { .. }) => {}
                        _ => {
                            return invalid(format!(
                                "metric {}: {part} must be a base metric",
                                metric.name
                            ));
                        }
                    }
                }
            }
        }
        let mut dimensions = BTreeMap::new();
        for (name, d) in raw.dimensions {
            if !valid_name(&name) {
                return invalid(format!("dimension name {name:?} is not snake_case"));
            }
            let mut columns = BTreeMap::new();
            for (source, column) in d.sql {
                if !raw.sources.contains_key(&source) {
                    return invalid(format!("dimension {name}: unknown source {source}"));
                }
                let column = match column {
                    RawColumn::Plain(sql) => Column { sql, join: None },
                    RawColumn::Joined { sql, join } => {
                        if !raw.joins.contains_key(&join) {
                            return invalid(format!("dimension {name}: unknown join {join}"));
                        }
                        Column {
                            sql,
                            join: Some(join),
                        }
                    }
                };
                columns.insert(source, column);
            }
            dimensions.insert(
                name.clone(),
                Dimension {
                    name,
                    description: d.description,
                    kind: d.kind,
                    columns,
                },
            );
        }
        Ok(Self {
            sources: raw.sources,
            joins: raw.joins,
            metrics,
            dimensions,
        })
    }

    /// The base sources a metric reads (one for a base metric, one or two for a ratio).
    pub fn sources_of<'a>(&'a self, metric: &'a Metric) -> BTreeSet<&'a str> {
        match &metric.kind {
            MetricKind::Base { source, .. } => BTreeSet::from([source.as_str()]),
            MetricKind::Ratio {
                numerator,
                denominator,
                ..
            } => [numerator, denominator]
                .into_iter()
                .filter_map(|n| self.metrics.get(n))
                .flat_map(|m| self.sources_of(m))
                .collect(),
        }
    }

    /// The base metrics needed to compute `metric`.
    pub fn bases_of<'a>(&'a self, metric: &'a Metric) -> Vec<&'a Metric> {
        match &metric.kind {
            MetricKind::Base { .. } => vec![metric],
            MetricKind::Ratio {
                numerator,
                denominator,
                ..
            } => [numerator, denominator]
                .into_iter()
                .filter_map(|n| self.metrics.get(n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_consistent() {
        let c = Catalog::builtin().expect("catalog parses");
        assert!(c.metrics.len() >= 30, "{}", c.metrics.len());
        let ctr = &c.metrics["ctr"];
        assert_eq!(
            ctr.kind,
            MetricKind::Ratio {
                numerator: "clicks".into(),
                denominator: "impressions".into(),
                scale: 1.0
            }
        );
        assert_eq!(
            c.sources_of(&c.metrics["ga_roas"]),
            BTreeSet::from(["ads", "ga"])
        );
        for d in c.dimensions.values() {
            assert!(!d.columns.is_empty(), "{} has no source", d.name);
        }
    }

    #[test]
    fn a_ratio_of_an_unknown_metric_is_refused() {
        let text = r#"
[sources.ads]
description = "x"
from = "t"
tenant = "f.tenant_id"
[joins]
[dimensions]
[metrics.r]
description = "x"
unit = "ratio"
ratio = ["a", "b"]
"#;
        let err = Catalog::parse(text).unwrap_err().to_string();
        assert!(err.contains("metric r: a must be a base metric"), "{err}");
    }

    #[test]
    fn names_are_plain_snake_case() {
        assert!(valid_name("spend"));
        assert!(valid_name("ga_roas2"));
        for bad in ["", "Spend", "1a", "a-b", "a b", "a;drop", "a'"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
