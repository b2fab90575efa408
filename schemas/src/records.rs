//! One Rust type per topic, field for field the same as its `.avsc` (a test checks every type
//! against its schema).
//!
//! Conventions: money is integer micros of the account currency (`*_micros`); dates are
//! [`NaiveDate`]s (Avro `date`); instants are UTC [`DateTime`]s (Avro `timestamp-millis`);
//! derived ratios are `Option<f64>`, `None` when the denominator is zero.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use mi_common::Platform;
use serde::{Deserialize, Serialize};

use crate::Record;

/// Declares a record type and binds it to its topic and schema file.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident = $topic:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Record for $name {
            const TOPIC: &'static str = $topic;
            const SCHEMA: &'static str = include_str!(concat!("../avro/", $topic, ".avsc"));
            const NAME: &'static str = concat!("io.marketingiq.", stringify!($name));
            fn tenant_id(&self) -> &str {
                &self.tenant_id
            }
        }
    };
}

/// Ratios, shared by the fact types; computed by the stream processors.
pub type Ratio = Option<f64>;

record! {
    /// A campaign as extracted.
    RawCampaign = "mi.raw.campaigns.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        campaign_id: String,
        name: String,
        status: String,
        channel_type: Option<String>,
        bidding_strategy: Option<String>,
        budget_micros: Option<i64>,
        budget_period: Option<String>,
        #[serde(with = "crate::date::option")]
        start_date: Option<NaiveDate>,
        #[serde(with = "crate::date::option")]
        end_date: Option<NaiveDate>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        changed_at: Option<DateTime<Utc>>,
    }
}

record! {
    /// An ad group (Meta: ad set) as extracted.
    RawAdGroup = "mi.raw.ad_groups.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        ad_group_id: String,
        campaign_id: String,
        name: String,
        status: String,
        ad_group_type: Option<String>,
        bid_micros: Option<i64>,
        budget_micros: Option<i64>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        changed_at: Option<DateTime<Utc>>,
    }
}

record! {
    /// An ad as extracted.
    RawAd = "mi.raw.ads.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        ad_id: String,
        ad_group_id: String,
        campaign_id: String,
        name: String,
        status: String,
        ad_type: Option<String>,
        headline: Option<String>,
        final_url: Option<String>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        changed_at: Option<DateTime<Utc>>,
    }
}

record! {
    /// Daily metrics of one ad (per device / country where broken down).
    RawAdPerformance = "mi.raw.ad_performance.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        campaign_id: String,
        ad_group_id: String,
        ad_id: String,
        device: Option<String>,
        country: Option<String>,
        currency: String,
        impressions: i64,
        clicks: i64,
        cost_micros: i64,
        conversions: f64,
        conversion_value_micros: i64,
        video_views: Option<i64>,
        engagements: Option<i64>,
        reach: Option<i64>,
    }
}

record! {
    /// GA4 daily sessions by source, medium, campaign, channel group, device and country.
    RawGaSessions = "mi.raw.ga_sessions.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        source: String,
        medium: String,
        campaign: String,
        channel_group: String,
        device: String,
        country: String,
        currency: String,
        sessions: i64,
        engaged_sessions: i64,
        screen_page_views: i64,
        session_duration_seconds: i64,
        transactions: i64,
        purchase_revenue_micros: i64,
        key_events: f64,
    }
}

record! {
    /// Daily conversions of one campaign and conversion action.
    RawConversion = "mi.raw.conversions.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        campaign_id: String,
        conversion_action: String,
        category: String,
        currency: String,
        conversions: f64,
        conversion_value_micros: i64,
    }
}

record! {
    /// An SCD2 version of a campaign.
    DimCampaign = "mi.dim.campaigns.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        campaign_id: String,
        name: String,
        status: String,
        channel_type: Option<String>,
        bidding_strategy: Option<String>,
        budget_micros: Option<i64>,
        budget_period: Option<String>,
        #[serde(with = "crate::date::option")]
        start_date: Option<NaiveDate>,
        #[serde(with = "crate::date::option")]
        end_date: Option<NaiveDate>,
        surrogate_key: String,
        version: i32,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        valid_from: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        valid_to: Option<DateTime<Utc>>,
        is_current: bool,
        attributes_hash: String,
        revision: i64,
        is_deleted: bool,
    }
}

record! {
    /// An SCD2 version of an ad group.
    DimAdGroup = "mi.dim.ad_groups.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        ad_group_id: String,
        campaign_id: String,
        name: String,
        status: String,
        ad_group_type: Option<String>,
        bid_micros: Option<i64>,
        budget_micros: Option<i64>,
        surrogate_key: String,
        version: i32,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        valid_from: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        valid_to: Option<DateTime<Utc>>,
        is_current: bool,
        attributes_hash: String,
        revision: i64,
        is_deleted: bool,
    }
}

record! {
    /// An SCD2 version of an ad.
    DimAd = "mi.dim.ads.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        ad_id: String,
        ad_group_id: String,
        campaign_id: String,
        name: String,
        status: String,
        ad_type: Option<String>,
        headline: Option<String>,
        final_url: Option<String>,
        surrogate_key: String,
        version: i32,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        valid_from: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        valid_to: Option<DateTime<Utc>>,
        is_current: bool,
        attributes_hash: String,
        revision: i64,
        is_deleted: bool,
    }
}

record! {
    /// Validated, de-duplicated daily ad metrics with row-level derived metrics.
    FactAdPerformance = "mi.fact.ad_performance.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        campaign_id: String,
        ad_group_id: String,
        ad_id: String,
        device: Option<String>,
        country: Option<String>,
        currency: String,
        impressions: i64,
        clicks: i64,
        cost_micros: i64,
        conversions: f64,
        conversion_value_micros: i64,
        video_views: Option<i64>,
        engagements: Option<i64>,
        reach: Option<i64>,
        ctr: Ratio,
        cpc_micros: Ratio,
        cpm_micros: Ratio,
        cpa_micros: Ratio,
        roas: Ratio,
        conversion_rate: Ratio,
        video_view_rate: Ratio,
        frequency: Ratio,
    }
}

record! {
    /// Validated GA4 daily sessions with row-level derived metrics.
    FactGaSessions = "mi.fact.ga_sessions.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        source: String,
        medium: String,
        campaign: String,
        channel_group: String,
        device: String,
        country: String,
        currency: String,
        sessions: i64,
        engaged_sessions: i64,
        screen_page_views: i64,
        session_duration_seconds: i64,
        transactions: i64,
        purchase_revenue_micros: i64,
        key_events: f64,
        engagement_rate: Ratio,
        bounce_rate: Ratio,
        aov_micros: Ratio,
        transaction_rate: Ratio,
    }
}

record! {
    /// Validated daily conversions per campaign and action.
    FactConversion = "mi.fact.conversions.v1" {
        tenant_id: String,
        platform: Platform,
        account_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        extracted_at: DateTime<Utc>,
        run_id: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        campaign_id: String,
        conversion_action: String,
        category: String,
        currency: String,
        conversions: f64,
        conversion_value_micros: i64,
        value_per_conversion_micros: Ratio,
    }
}

/// A dead letter's key is its tenant when known, else empty (all unknown-tenant letters share a
/// partition, which is fine for a low-volume topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub tenant_id: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub stage: String,
    pub reason: String,
    pub schema_id: Option<i32>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub original_key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub original_value: Option<Vec<u8>>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub failed_at: DateTime<Utc>,
}

impl Record for DeadLetter {
    const TOPIC: &'static str = "mi.dlq.v1";
    const SCHEMA: &'static str = include_str!("../avro/mi.dlq.v1.avsc");
    const NAME: &'static str = "io.marketingiq.DeadLetter";
    fn tenant_id(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or("")
    }
}

record! {
    /// One committed sink batch for one tenant and table.
    LoadEvent = "mi.events.loads.v1" {
        batch_id: String,
        tenant_id: String,
        table: String,
        rows: i64,
        #[serde(with = "crate::date::option")]
        min_date: Option<NaiveDate>,
        #[serde(with = "crate::date::option")]
        max_date: Option<NaiveDate>,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        loaded_at: DateTime<Utc>,
    }
}

/// Why an extraction was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Scheduled,
    Manual,
}

record! {
    /// A request to extract one tenant's data from one platform.
    ExtractCommand = "mi.commands.extract.v1" {
        command_id: String,
        tenant_id: String,
        platform: Platform,
        trigger: Trigger,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        requested_at: DateTime<Utc>,
        #[serde(with = "crate::date::option")]
        from_date: Option<NaiveDate>,
        #[serde(with = "crate::date::option")]
        to_date: Option<NaiveDate>,
        backfill_days: Option<i32>,
    }
}

/// How an extraction run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

impl ExtractionRun {
    /// Days in the run's inclusive window.
    pub fn days(&self) -> i64 {
        (self.to_date - self.from_date).num_days() + 1
    }
}

record! {
    /// The outcome of one extraction run. Published in the run's own transaction when it
    /// succeeds, so the watermark (the newest `to_date` of a succeeded run) moves atomically
    /// with the data.
    ExtractionRun = "mi.events.runs.v1" {
        run_id: String,
        tenant_id: String,
        platform: Platform,
        command_id: Option<String>,
        #[serde(with = "crate::date")]
        from_date: NaiveDate,
        #[serde(with = "crate::date")]
        to_date: NaiveDate,
        status: RunStatus,
        records: BTreeMap<String, i64>,
        error: Option<String>,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        started_at: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        finished_at: DateTime<Utc>,
    }
}

record! {
    /// A day-over-day spike or drop of one campaign metric, for people and agents.
    Alert = "mi.alerts.v1" {
        alert_id: String,
        tenant_id: String,
        platform: Platform,
        account_id: String,
        campaign_id: String,
        campaign_name: String,
        #[serde(with = "crate::date")]
        date: NaiveDate,
        metric: String,
        direction: String,
        previous: f64,
        current: f64,
        change: f64,
        threshold: f64,
        currency: String,
        load_batch_id: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        detected_at: DateTime<Utc>,
    }
}
