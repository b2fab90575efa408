//! What a widget computes after its query: each transform is named in the spec with its
//! parameters, checked against the widget at startup, and applied to the query's rows.
//!
//! Transforms that derive ratios (rolling averages) do it from the rolling *sums* of the ratio's
//! parts, which is why a spec must request those parts too (checked at startup).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use mi_common::anomaly::{self, Point, Rule};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Widget;
use crate::catalog::{Catalog, MetricKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// `<metric>_avg_<window>d` on each dated row: the metric over the trailing window (ratios
    /// from the window's summed parts). The widget's first dimension must be `date`.
    RollingAverage { window: usize, metrics: Vec<String> },
    /// `<metric>_share`: each row's part of the total.
    Share { metric: String },
    /// Steps of a funnel from the totals, each with its rate from the previous step.
    Funnel { steps: Vec<String> },
    /// Actual CPA and ROAS against targets (the request may override them: `target_cpa`,
    /// `target_roas`).
    Targets { cpa: f64, roas: f64 },
    /// Month-to-date spend against budget, with a month-end forecast at the current run rate.
    Pacing,
    /// Day-over-day spikes and drops per group (the last dimension must be `date`).
    DayOverDay {
        metrics: Vec<String>,
        threshold: f64,
        min_spend: f64,
    },
    /// Each SCD2 change of a campaign in the range, with performance in the `window_days`
    /// before and after it.
    CampaignChanges { window_days: u32 },
}

impl Transform {
    /// Startup check: the widget gives the transform what it needs.
    pub fn check(&self, widget: &Widget, catalog: &Catalog) -> Result<(), String> {
        let has = |m: &str| widget.metrics.iter().any(|x| x == m);
        let parts_present = |m: &str| -> Result<(), String> {
            if !has(m) {
                return Err(format!("{m} must be among the widget's metrics"));
            }
            if let Some(MetricKind::Ratio {
                numerator,
                denominator,
                ..
            }) = catalog.metrics.get(m).map(|x| &x.kind)
                && !(has(numerator) && has(denominator))
            {
                return Err(format!(
                    "{m} is a ratio: request {numerator} and {denominator} too"
                ));
            }
            Ok(())
        };
        match self {
            Transform::RollingAverage { window, metrics } => {
                if *window < 2 {
                    return Err("rolling_average: window must be at least 2".into());
                }
                if widget.dimensions.first().map(String::as_str) != Some("date") {
                    return Err("rolling_average: the first dimension must be date".into());
                }
                metrics.iter().try_for_each(|m| parts_present(m))
            }
            Transform::Share { metric } => parts_present(metric),
            Transform::Funnel { steps } => steps.iter().try_for_each(|m| parts_present(m)),
            Transform::Targets { .. } => {
                ["cpa", "roas", "spend", "conversions", "conversion_value"]
                    .iter()
                    .try_for_each(|m| parts_present(m))
            }
            Transform::Pacing => ["spend", "daily_budget"]
                .iter()
                .try_for_each(|m| parts_present(m)),
            Transform::DayOverDay { metrics, .. } => {
                if widget.dimensions.last().map(String::as_str) != Some("date") {
                    return Err("day_over_day: the last dimension must be date".into());
                }
                parts_present("spend")?;
                metrics.iter().try_for_each(|m| parts_present(m))
            }
            Transform::CampaignChanges { window_days } => {
                if *window_days == 0 || *window_days > 90 {
                    return Err("campaign_changes: window_days must be 1..=90".into());
                }
                Ok(())
            }
        }
    }
}

fn num(row: &Map<String, Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn ratio(n: f64, d: f64, scale: f64) -> Option<f64> {
    (d != 0.0).then(|| n / d * scale).filter(|r| r.is_finite())
}

/// The value of `metric` over a set of rows: a sum for base metrics, the ratio of the summed
/// parts for ratios.
pub(crate) fn over(rows: &[&Map<String, Value>], metric: &str, catalog: &Catalog) -> Option<f64> {
    let sum = |m: &str| rows.iter().filter_map(|r| num(r, m)).sum::<f64>();
    match catalog.metrics.get(metric).map(|m| &m.kind) {
        Some(MetricKind::Ratio {
            numerator,
            denominator,
            scale,
        }) => ratio(sum(numerator), sum(denominator), *scale),
        Some(MetricKind::Base { .. }) => Some(sum(metric)),
        None => None,
    }
}

pub(crate) fn to_value(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

pub fn rolling_average(
    rows: &mut [Map<String, Value>],
    window: usize,
    metrics: &[String],
    catalog: &Catalog,
) {
    // Rows arrive ordered by date (the engine's default order for dated rows); a window holds
    // the rows of the trailing `window` distinct dates.
    let snapshot: Vec<Map<String, Value>> = rows.to_vec();
    let date_of = |r: &Map<String, Value>| {
        r.get("date")
            .and_then(Value::as_str)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    };
    for row in rows.iter_mut() {
        let Some(end) = date_of(row) else { continue };
        let start = end - chrono::Days::new(window as u64 - 1);
        let in_window: Vec<&Map<String, Value>> = snapshot
            .iter()
            .filter(|r| date_of(r).is_some_and(|d| d >= start && d <= end))
            .filter(|r| same_group(r, row))
            .collect();
        let days = in_window.len().max(1) as f64;
        for metric in metrics {
            let value = match catalog.metrics.get(metric).map(|m| &m.kind) {
                Some(MetricKind::Base { .. }) => {
                    over(&in_window, metric, catalog).map(|s| s / days)
                }
                _ => over(&in_window, metric, catalog),
            };
            row.insert(format!("{metric}_avg_{window}d"), to_value(value));
        }
    }
}

/// Rows belong to the same series when every non-date dimension agrees (metrics are numbers,
/// dimensions strings).
fn same_group(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.iter()
        .filter(|(k, v)| k.as_str() != "date" && v.is_string())
        .all(|(k, v)| b.get(k) == Some(v))
}

pub fn share(rows: &mut [Map<String, Value>], metric: &str) {
    let total: f64 = rows.iter().filter_map(|r| num(r, metric)).sum();
    for row in rows {
        let value = num(row, metric).and_then(|v| ratio(v, total, 1.0));
        row.insert(format!("{metric}_share"), to_value(value));
    }
}

pub fn funnel(totals: &Map<String, Value>, steps: &[String]) -> Vec<Map<String, Value>> {
    let mut previous: Option<f64> = None;
    steps
        .iter()
        .map(|step| {
            let value = num(totals, step);
            let rate = match (value, previous) {
                (Some(v), Some(p)) => ratio(v, p, 1.0),
                _ => None,
            };
            previous = value;
            let mut m = Map::new();
            m.insert("step".into(), json!(step));
            m.insert(
                "value".into(),
                totals.get(step).cloned().unwrap_or(Value::Null),
            );
            m.insert("rate_from_previous".into(), to_value(rate));
            m
        })
        .collect()
}

pub fn targets(totals: &Map<String, Value>, cpa_target: f64, roas_target: f64) -> Value {
    let cpa = num(totals, "cpa");
    let roas = num(totals, "roas");
    // Lower CPA is better; higher ROAS is better.
    let cpa_ok = cpa.map(|c| c <= cpa_target);
    let roas_ok = roas.map(|r| r >= roas_target);
    json!({
        "cpa": { "actual": cpa, "target": cpa_target, "on_target": cpa_ok,
                 "gap": cpa.and_then(|c| ratio(c - cpa_target, cpa_target, 1.0)) },
        "roas": { "actual": roas, "target": roas_target, "on_target": roas_ok,
                  "gap": roas.and_then(|r| ratio(r - roas_target, roas_target, 1.0)) },
    })
}

/// Spend to date in the month of `end`, the daily budgets, and the month-end forecast.
pub fn pacing(rows: &mut [Map<String, Value>], totals: &mut Map<String, Value>, end: NaiveDate) {
    use chrono::Datelike;
    let days_elapsed = f64::from(end.day());
    let next_month = if end.month() == 12 {
        NaiveDate::from_ymd_opt(end.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(end.year(), end.month() + 1, 1)
    };
    let days_in_month = next_month
        .and_then(|n| n.pred_opt())
        .map_or(30.0, |d| f64::from(d.day()));
    for target in rows.iter_mut().chain(std::iter::once(totals)) {
        let spend = num(target, "spend").unwrap_or(0.0);
        let budget = num(target, "daily_budget").map(|b| b * days_in_month);
        let forecast = spend / days_elapsed * days_in_month;
        target.insert("month_budget".into(), to_value(budget));
        target.insert("forecast_spend".into(), to_value(Some(forecast)));
        target.insert(
            "pacing".into(),
            to_value(budget.and_then(|b| ratio(forecast, b, 1.0))),
        );
        target.insert("days_elapsed".into(), json!(days_elapsed));
        target.insert("days_in_month".into(), json!(days_in_month));
    }
}

/// Flags day-over-day anomalies per series (rows grouped by their non-date dimensions).
pub fn day_over_day(
    rows: &[Map<String, Value>],
    dimensions: &[String],
    metrics: &[String],
    rule: Rule,
) -> Vec<Map<String, Value>> {
    let keys: Vec<&String> = dimensions.iter().filter(|d| *d != "date").collect();
    let mut series: BTreeMap<Vec<String>, Vec<&Map<String, Value>>> = BTreeMap::new();
    for row in rows {
        let key = keys
            .iter()
            .map(|k| row.get(*k).and_then(Value::as_str).unwrap_or("").to_owned())
            .collect();
        series.entry(key).or_default().push(row);
    }
    let mut out = Vec::new();
    for (key, rows) in series {
        for metric in metrics {
            let points: Vec<Point> = rows
                .iter()
                .filter_map(|r| {
                    Some(Point {
                        date: NaiveDate::parse_from_str(r.get("date")?.as_str()?, "%Y-%m-%d")
                            .ok()?,
                        value: num(r, metric),
                        spend: num(r, "spend").unwrap_or(0.0),
                    })
                })
                .collect();
            for a in anomaly::detect(&points, rule) {
                let mut m = Map::new();
                for (k, v) in keys.iter().zip(&key) {
                    m.insert((*k).clone(), json!(v));
                }
                m.insert("date".into(), json!(a.date.to_string()));
                m.insert("metric".into(), json!(metric));
                m.insert("previous".into(), to_value(Some(a.previous)));
                m.insert("current".into(), to_value(Some(a.current)));
                m.insert("change".into(), to_value(Some(a.change)));
                m.insert("direction".into(), json!(a.direction));
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| {
        let c = |m: &Map<String, Value>| num(m, "change").map_or(0.0, f64::abs);
        c(b).total_cmp(&c(a))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(date: &str, clicks: f64, impressions: f64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("date".into(), json!(date));
        m.insert("clicks".into(), json!(clicks));
        m.insert("impressions".into(), json!(impressions));
        m
    }

    #[test]
    fn rolling_ratios_come_from_rolling_sums() {
        let catalog = Catalog::builtin().expect("catalog");
        let mut rows = vec![
            row("2026-10-01", 1.0, 10.0),
            row("2026-10-02", 99.0, 990.0),
            row("2026-10-03", 0.0, 1000.0),
        ];
        rolling_average(&mut rows, 2, &["clicks".into(), "ctr".into()], &catalog);
        // Day 3 window = days 2..3: clicks 99 / impressions 1990, not the mean of 0.1 and 0.
        assert_eq!(num(&rows[2], "ctr_avg_2d"), Some(99.0 / 1990.0));
        assert_eq!(num(&rows[2], "clicks_avg_2d"), Some(49.5));
        assert_eq!(num(&rows[0], "clicks_avg_2d"), Some(1.0));
    }

    #[test]
    fn funnel_rates_follow_the_steps() {
        let totals: Map<String, Value> =
            serde_json::from_value(json!({"impressions": 1000, "clicks": 50, "sessions": 40}))
                .expect("map");
        let steps = funnel(
            &totals,
            &["impressions".into(), "clicks".into(), "sessions".into()],
        );
        assert_eq!(num(&steps[1], "rate_from_previous"), Some(0.05));
        assert_eq!(num(&steps[2], "rate_from_previous"), Some(0.8));
        assert_eq!(steps[0].get("rate_from_previous"), Some(&Value::Null));
    }
}
