//! Dashboards are data: one TOML spec per dashboard under `query-api/dashboards/<segment>/`,
//! compiled into the binary and checked against the catalog at startup. A spec is a list of
//! widgets; a widget is a metrics [`Query`] without its time range (the dashboard request gives
//! it), plus an optional [`Transform`] for what a query alone cannot say (rolling averages,
//! pacing, targets, funnels, day-over-day anomalies, SCD2 change impact).

pub mod run;
pub mod transform;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::query::{
    AttributeTime, Compare, Filter, Grain, Limits, MetricFilter, OrderBy, Query, TimeRange,
};

pub use transform::Transform;

static SPECS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/dashboards");

/// The five segments, in display order.
pub const SEGMENTS: [(&str, &str); 5] = [
    ("executive", "Executive"),
    ("paid-search", "Paid search"),
    ("paid-social", "Paid social"),
    ("web-analytics", "Web analytics"),
    ("cross-channel", "Cross-channel"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    pub id: String,
    pub segment: String,
    pub name: String,
    pub description: String,
    /// Days shown when the request gives no range (ending yesterday).
    #[serde(default = "default_days")]
    pub default_days: u32,
    pub widgets: Vec<Widget>,
}

fn default_days() -> u32 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WidgetKind {
    Kpi,
    Timeseries,
    Table,
    Bar,
    Pie,
    Funnel,
    List,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    pub id: String,
    pub title: String,
    pub kind: WidgetKind,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub having: Vec<MetricFilter>,
    #[serde(default)]
    pub order: Vec<OrderBy>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub grain: Grain,
    /// Totals of the previous period of the same length, and the change.
    #[serde(default)]
    pub compare: bool,
    #[serde(default)]
    pub attributes: AttributeTime,
    #[serde(default)]
    pub transform: Option<Transform>,
}

impl Widget {
    /// The widget's query for `time`, with the dashboard's extra filters.
    pub fn query(&self, time: TimeRange, extra: &[Filter]) -> Query {
        Query {
            metrics: self.metrics.clone(),
            dimensions: self.dimensions.clone(),
            filters: self.filters.iter().chain(extra).cloned().collect(),
            time: Some(TimeRange {
                grain: self.grain,
                ..time
            }),
            having: self.having.clone(),
            order: self.order.clone(),
            limit: self.limit,
            offset: 0,
            compare: self.compare.then_some(Compare::PreviousPeriod),
            attributes: self.attributes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("dashboard spec {file}: {message}")]
    Invalid { file: String, message: String },
}

/// Every dashboard, by id.
#[derive(Debug)]
pub struct Library {
    pub dashboards: BTreeMap<String, Dashboard>,
}

impl Library {
    /// Loads the built-in specs and checks each widget's query against the catalog.
    pub fn builtin(catalog: &Catalog, limits: Limits) -> Result<Self, SpecError> {
        let mut dashboards = BTreeMap::new();
        let files = SPECS
            .dirs()
            .flat_map(|d| d.files())
            .filter(|f| f.path().extension().is_some_and(|e| e == "toml"));
        for file in files {
            let name = file.path().display().to_string();
            let invalid = |message: String| SpecError::Invalid {
                file: name.clone(),
                message,
            };
            let text = file
                .contents_utf8()
                .ok_or_else(|| invalid("not UTF-8".into()))?;
            let dashboard: Dashboard = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
            let folder = file.path().parent().map(|p| p.display().to_string());
            if folder.as_deref() != Some(dashboard.segment.as_str())
                || !SEGMENTS.iter().any(|(id, _)| *id == dashboard.segment)
            {
                return Err(invalid(format!(
                    "segment {:?} must be one of the five and match the folder",
                    dashboard.segment
                )));
            }
            let probe = TimeRange {
                start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
                end: NaiveDate::from_ymd_opt(2026, 1, 31).unwrap_or_default(),
                grain: Grain::Day,
            };
            for widget in &dashboard.widgets {
                let query = widget.query(probe, &[]);
                query
                    .plan(catalog, limits)
                    .map_err(|e| invalid(format!("widget {}: {e}", widget.id)))?;
                if let Some(t) = &widget.transform {
                    t.check(widget, catalog)
                        .map_err(|e| invalid(format!("widget {}: {e}", widget.id)))?;
                }
            }
            if dashboards.insert(dashboard.id.clone(), dashboard).is_some() {
                return Err(invalid("duplicate dashboard id".into()));
            }
        }
        Ok(Self { dashboards })
    }

    pub fn in_segment<'a>(&'a self, segment: &'a str) -> impl Iterator<Item = &'a Dashboard> {
        self.dashboards
            .values()
            .filter(move |d| d.segment == segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_five_dashboards_in_five_segments_all_valid() {
        let catalog = Catalog::builtin().expect("catalog");
        let limits = Limits {
            max_range_days: 731,
            max_limit: 10_000,
        };
        let library = Library::builtin(&catalog, limits).expect("specs are valid");
        assert_eq!(library.dashboards.len(), 25);
        for (segment, _) in SEGMENTS {
            assert_eq!(library.in_segment(segment).count(), 5, "{segment}");
        }
    }
}
