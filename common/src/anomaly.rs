//! Day-over-day anomaly detection, defined once: the `anomalies` dashboard and the alerts
//! processor (`mi.alerts.v1`) flag the same days by the same rule.
//!
//! A day is flagged for a metric when the metric moved by at least `threshold` (relative, e.g.
//! 0.5 = ±50 %) from the previous calendar day, and the day is material: spend on either day is at
//! least `min_spend` (a campaign going from 1 to 3 clicks is noise, not news). Days with no value
//! on either side (a ratio with a zero denominator) are never flagged.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Relative change that counts as an anomaly (0.5 = 50 %).
    pub threshold: f64,
    /// Spend below which neither day is material.
    pub min_spend: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_spend: 10.0,
        }
    }
}

/// One point of a daily series: the metric's value and the spend of that day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub date: NaiveDate,
    pub value: Option<f64>,
    pub spend: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Spike,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub date: NaiveDate,
    pub previous: f64,
    pub current: f64,
    /// (current − previous) / |previous|.
    pub change: f64,
    pub direction: Direction,
}

/// The anomalies of one series; `points` may be in any order and need not be contiguous (a
/// missing day breaks the comparison: it is not day over day).
pub fn detect(points: &[Point], rule: Rule) -> Vec<Anomaly> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| p.date);
    sorted
        .windows(2)
        .filter_map(|pair| {
            let (before, now) = (pair[0], pair[1]);
            if before.date.succ_opt() != Some(now.date) {
                return None;
            }
            let (previous, current) = (before.value?, now.value?);
            if previous == 0.0 || before.spend.max(now.spend) < rule.min_spend {
                return None;
            }
            let change = (current - previous) / previous.abs();
            (change.is_finite() && change.abs() >= rule.threshold).then_some(Anomaly {
                date: now.date,
                previous,
                current,
                change,
                direction: if change > 0.0 {
                    Direction::Spike
                } else {
                    Direction::Drop
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 10, d).expect("date")
    }

    fn p(d: u32, value: Option<f64>, spend: f64) -> Point {
        Point {
            date: day(d),
            value,
            spend,
        }
    }

    #[test]
    fn spikes_and_drops_beyond_the_threshold_on_material_days() {
        let rule = Rule::default();
        let points = [
            p(3, Some(100.0), 100.0), // from 160: −37.5 %, under the threshold
            p(1, Some(100.0), 100.0),
            p(2, Some(160.0), 160.0), // +60 %: spike
            p(4, Some(40.0), 40.0),   // from 100: −60 %: drop
            p(6, Some(400.0), 400.0), // day 5 missing: not compared
        ];
        let found = detect(&points, rule);
        // Day 3 (−37.5 % from 160) is under the threshold; day 6 has no day 5 to compare with.
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].date, found[0].direction),
            (day(2), Direction::Spike)
        );
        assert!((found[0].change - 0.6).abs() < 1e-12);
        assert_eq!(
            (found[1].date, found[1].direction),
            (day(4), Direction::Drop)
        );
        assert!((found[1].change + 0.6).abs() < 1e-12);
    }

    #[test]
    fn immaterial_days_and_undefined_values_are_not_flagged() {
        let rule = Rule::default();
        assert!(detect(&[p(1, Some(1.0), 1.0), p(2, Some(9.0), 2.0)], rule).is_empty());
        assert!(detect(&[p(1, None, 100.0), p(2, Some(9.0), 100.0)], rule).is_empty());
        assert!(detect(&[p(1, Some(0.0), 100.0), p(2, Some(9.0), 100.0)], rule).is_empty());
    }
}
