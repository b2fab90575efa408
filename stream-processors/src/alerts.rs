//! The alerts processor: load events → day-over-day anomalies → `mi.alerts.v1`.
//!
//! It follows `mi.events.loads.v1` rather than the fact stream because an anomaly is a property
//! of a campaign's *day totals* as the warehouse holds them (restatements resolved, every device
//! and ad summed), which the warehouse already computes. For each load of ad performance it reads
//! the loaded days plus the day before, per campaign, and applies the shared rule
//! ([`mi_common::anomaly`], the same as the `anomalies` dashboard) to spend, CTR and CPA.
//!
//! Alerts and the consumed offsets commit in one transaction (the engine), so a crash neither
//! loses nor repeats an evaluation. A restated day is evaluated again and may publish the same
//! `alert_id` with new values: consumers keep the newest per id.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
use mi_common::anomaly::{self, Point, Rule};
use mi_common::settings::KafkaSettings;
use mi_common::{Platform, TenantId};
use mi_schemas::{Alert, Codec, LoadEvent, Record};
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_128;

use crate::engine::{EngineError, Input, Output, Processor};
use crate::metrics::ratio;

/// The table whose loads are evaluated.
const TABLE: &str = "fact_ad_performance";

/// The metrics watched, with how each is computed from a campaign's day totals (the catalog's
/// `spend`, `ctr` and `cpa`: ratios of sums, `None` on a zero denominator).
type Measure = fn(&DayTotals) -> Option<f64>;

const METRICS: [(&str, Measure); 3] = [
    ("spend", |d| Some(d.spend)),
    ("ctr", |d| ratio(d.clicks, d.impressions)),
    ("cpa", |d| ratio(d.spend, d.conversions)),
];

#[derive(Debug, clickhouse::Row, Deserialize)]
struct DayTotals {
    platform: String,
    account_id: String,
    campaign_id: String,
    campaign_name: String,
    currency: String,
    date: String,
    spend: f64,
    clicks: f64,
    impressions: f64,
    conversions: f64,
}

pub struct Alerts {
    codec: Arc<Codec>,
    clickhouse: clickhouse::Client,
    database: String,
    rule: Rule,
}

impl Alerts {
    pub fn new(
        codec: Arc<Codec>,
        clickhouse: clickhouse::Client,
        database: String,
        rule: Rule,
    ) -> Self {
        Self {
            codec,
            clickhouse,
            database,
            rule,
        }
    }

    async fn day_totals(
        &self,
        tenant: &TenantId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DayTotals>, EngineError> {
        let db = &self.database;
        let sql = format!(
            "SELECT toString(f.platform) AS platform, f.account_id AS account_id, f.campaign_id AS campaign_id, \
             any(dc.name) AS campaign_name, toString(any(f.currency)) AS currency, toString(f.date) AS date, \
             toFloat64(sum(f.cost_micros)) / 1e6 AS spend, toFloat64(sum(f.clicks)) AS clicks, \
             toFloat64(sum(f.impressions)) AS impressions, toFloat64(sum(f.conversions)) AS conversions \
             FROM {db}.fact_ad_performance AS f FINAL \
             LEFT JOIN (SELECT platform, account_id, campaign_id, name FROM {db}.dim_campaigns FINAL \
                        WHERE tenant_id = ? AND is_current = 1) AS dc \
               ON f.platform = dc.platform AND f.account_id = dc.account_id AND f.campaign_id = dc.campaign_id \
             WHERE f.tenant_id = ? AND f.date BETWEEN toDate(?) AND toDate(?) \
             GROUP BY platform, account_id, campaign_id, date"
        );
        self.clickhouse
            .query(&sql)
            .bind(tenant.as_str())
            .bind(tenant.as_str())
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_all::<DayTotals>()
            .await
            // Retriable: the session restarts and the load event is evaluated again.
            .map_err(|e| {
                EngineError::Processor(format!("alerts: reading {TABLE} of {tenant}: {e}"))
            })
    }

    /// The alerts of one loaded range.
    pub async fn evaluate(&self, event: &LoadEvent) -> Result<Vec<Alert>, EngineError> {
        let (Some(min), Some(max)) = (event.min_date, event.max_date) else {
            return Ok(Vec::new());
        };
        let Ok(tenant) = TenantId::new(event.tenant_id.clone()) else {
            tracing::warn!(tenant = %event.tenant_id, "load event with an invalid tenant: ignored");
            return Ok(Vec::new());
        };
        let before = min.checked_sub_days(Days::new(1)).unwrap_or(min);
        let rows = self.day_totals(&tenant, before, max).await?;
        let mut series: BTreeMap<(String, String, String), Vec<DayTotals>> = BTreeMap::new();
        for row in rows {
            series
                .entry((
                    row.platform.clone(),
                    row.account_id.clone(),
                    row.campaign_id.clone(),
                ))
                .or_default()
                .push(row);
        }
        let now = Utc::now();
        let mut alerts = Vec::new();
        for ((platform, account, campaign), days) in series {
            let Ok(platform) = platform.parse::<Platform>() else {
                continue;
            };
            let name = days
                .iter()
                .map(|d| d.campaign_name.as_str())
                .find(|n| !n.is_empty())
                .unwrap_or("");
            let currency = days.first().map(|d| d.currency.clone()).unwrap_or_default();
            for (metric, value) in METRICS {
                let points: Vec<Point> = days
                    .iter()
                    .filter_map(|d| {
                        Some(Point {
                            date: NaiveDate::parse_from_str(&d.date, "%Y-%m-%d").ok()?,
                            value: value(d),
                            spend: d.spend,
                        })
                    })
                    .collect();
                for a in anomaly::detect(&points, self.rule) {
                    if a.date < min || a.date > max {
                        continue; // the day before the range is context, not news
                    }
                    let id = format!(
                        "{:032x}",
                        xxh3_128(
                            format!("{tenant}\u{1f}{platform}\u{1f}{account}\u{1f}{campaign}\u{1f}{}\u{1f}{metric}", a.date)
                                .as_bytes()
                        )
                    );
                    alerts.push(Alert {
                        alert_id: id,
                        tenant_id: tenant.to_string(),
                        platform,
                        account_id: account.clone(),
                        campaign_id: campaign.clone(),
                        campaign_name: name.to_owned(),
                        date: a.date,
                        metric: metric.to_owned(),
                        direction: match a.direction {
                            anomaly::Direction::Spike => "spike",
                            anomaly::Direction::Drop => "drop",
                        }
                        .to_owned(),
                        previous: a.previous,
                        current: a.current,
                        change: a.change,
                        threshold: self.rule.threshold,
                        currency: currency.clone(),
                        load_batch_id: event.batch_id.clone(),
                        detected_at: now,
                    });
                }
            }
        }
        Ok(alerts)
    }
}

impl Processor for Alerts {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn inputs(&self) -> Vec<&'static str> {
        vec![LoadEvent::TOPIC]
    }

    async fn restore(
        &mut self,
        _kafka: &KafkaSettings,
        _assigned: &[(String, i32)],
    ) -> Result<(), EngineError> {
        Ok(()) // stateless: the warehouse is the state
    }

    async fn process(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), EngineError> {
        let Some(payload) = &input.payload else {
            return Ok(());
        };
        // Load events are ours, written by the sink; one that cannot be read is logged and
        // skipped (there is nothing to alert on), never a reason to stop alerting.
        let event: LoadEvent = match self.codec.decode(payload).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, partition = input.partition, offset = input.offset, "undecodable load event");
                return Ok(());
            }
        };
        if event.table != TABLE {
            return Ok(());
        }
        for alert in self.evaluate(&event).await? {
            let payload = self
                .codec
                .encode(&alert)
                .await
                .map_err(|e| EngineError::Processor(format!("encoding an alert: {e}")))?;
            out.push(Output {
                topic: Alert::TOPIC,
                partition: None,
                key: alert.tenant_id().as_bytes().to_vec(),
                payload,
            });
        }
        Ok(())
    }
}
