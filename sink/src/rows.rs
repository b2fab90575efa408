//! Loaded records as warehouse rows: one `clickhouse::Row` per table, field for field the
//! columns of `sink/migrations/`, converted from the topic's Rust type; plus the audit row the
//! loader writes per batch, tenant and table ([`LoadBatchRow`]).
//!
//! Dates travel as ClickHouse `Date` (days since 1970 as UInt16), instants as `DateTime64(3)`
//! (milliseconds as Int64); absent breakdowns become '' because sort keys cannot be Nullable.

use std::collections::BTreeMap;

use mi_schemas::{
    DimAd, DimAdGroup, DimCampaign, ExtractionRun, FactAdPerformance, FactConversion,
    FactGaSessions, Record, RunStatus,
};
use serde::Serialize;

fn day(date: chrono::NaiveDate) -> u16 {
    u16::try_from(mi_schemas::date::to_days(date)).unwrap_or(0)
}

pub(crate) fn opt_day(date: Option<chrono::NaiveDate>) -> Option<u16> {
    date.map(day)
}

/// A topic the sink loads and the table it loads into.
pub trait Loadable: Record {
    type Row: clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Send + Sync;
    const TABLE: &'static str;
    /// Whether loads of this table are announced on `mi.events.loads.v1`: the event tells the
    /// API and the alerts that a tenant's queryable data changed.
    const LOAD_EVENTS: bool = true;
    fn row(&self) -> Self::Row;
    /// The fact date, for the load event's date range (dimensions have none).
    fn date(&self) -> Option<chrono::NaiveDate> {
        None
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct AdPerformanceRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
    campaign_id: String,
    ad_group_id: String,
    ad_id: String,
    device: String,
    country: String,
    currency: String,
    impressions: i64,
    clicks: i64,
    cost_micros: i64,
    conversions: f64,
    conversion_value_micros: i64,
    video_views: i64,
    engagements: i64,
    reach: i64,
    extracted_at: i64,
    run_id: String,
}

impl Loadable for FactAdPerformance {
    type Row = AdPerformanceRow;
    const TABLE: &'static str = "fact_ad_performance";
    fn row(&self) -> AdPerformanceRow {
        AdPerformanceRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            date: day(self.date),
            campaign_id: self.campaign_id.clone(),
            ad_group_id: self.ad_group_id.clone(),
            ad_id: self.ad_id.clone(),
            device: self.device.clone().unwrap_or_default(),
            country: self.country.clone().unwrap_or_default(),
            currency: self.currency.clone(),
            impressions: self.impressions,
            clicks: self.clicks,
            cost_micros: self.cost_micros,
            conversions: self.conversions,
            conversion_value_micros: self.conversion_value_micros,
            video_views: self.video_views.unwrap_or(0),
            engagements: self.engagements.unwrap_or(0),
            reach: self.reach.unwrap_or(0),
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
        }
    }
    fn date(&self) -> Option<chrono::NaiveDate> {
        Some(self.date)
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct GaSessionsRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
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
    extracted_at: i64,
    run_id: String,
}

impl Loadable for FactGaSessions {
    type Row = GaSessionsRow;
    const TABLE: &'static str = "fact_ga_sessions";
    fn row(&self) -> GaSessionsRow {
        GaSessionsRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            date: day(self.date),
            source: self.source.clone(),
            medium: self.medium.clone(),
            campaign: self.campaign.clone(),
            channel_group: self.channel_group.clone(),
            device: self.device.clone(),
            country: self.country.clone(),
            currency: self.currency.clone(),
            sessions: self.sessions,
            engaged_sessions: self.engaged_sessions,
            screen_page_views: self.screen_page_views,
            session_duration_seconds: self.session_duration_seconds,
            transactions: self.transactions,
            purchase_revenue_micros: self.purchase_revenue_micros,
            key_events: self.key_events,
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
        }
    }
    fn date(&self) -> Option<chrono::NaiveDate> {
        Some(self.date)
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct ConversionRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
    campaign_id: String,
    conversion_action: String,
    category: String,
    currency: String,
    conversions: f64,
    conversion_value_micros: i64,
    extracted_at: i64,
    run_id: String,
}

impl Loadable for FactConversion {
    type Row = ConversionRow;
    const TABLE: &'static str = "fact_conversions";
    fn row(&self) -> ConversionRow {
        ConversionRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            date: day(self.date),
            campaign_id: self.campaign_id.clone(),
            conversion_action: self.conversion_action.clone(),
            category: self.category.clone(),
            currency: self.currency.clone(),
            conversions: self.conversions,
            conversion_value_micros: self.conversion_value_micros,
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
        }
    }
    fn date(&self) -> Option<chrono::NaiveDate> {
        Some(self.date)
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct CampaignRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    channel_type: String,
    bidding_strategy: String,
    budget_micros: Option<i64>,
    budget_period: String,
    start_date: Option<u16>,
    end_date: Option<u16>,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

impl Loadable for DimCampaign {
    type Row = CampaignRow;
    const TABLE: &'static str = "dim_campaigns";
    fn row(&self) -> CampaignRow {
        CampaignRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            campaign_id: self.campaign_id.clone(),
            surrogate_key: self.surrogate_key.clone(),
            version: u32::try_from(self.version).unwrap_or(0),
            valid_from: self.valid_from.timestamp_millis(),
            valid_to: self.valid_to.map(|t| t.timestamp_millis()),
            is_current: u8::from(self.is_current),
            name: self.name.clone(),
            status: self.status.clone(),
            channel_type: self.channel_type.clone().unwrap_or_default(),
            bidding_strategy: self.bidding_strategy.clone().unwrap_or_default(),
            budget_micros: self.budget_micros,
            budget_period: self.budget_period.clone().unwrap_or_default(),
            start_date: opt_day(self.start_date),
            end_date: opt_day(self.end_date),
            attributes_hash: self.attributes_hash.clone(),
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
            revision: u64::try_from(self.revision).unwrap_or(0),
            is_deleted: u8::from(self.is_deleted),
        }
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct AdGroupRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    ad_group_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    ad_group_type: String,
    bid_micros: Option<i64>,
    budget_micros: Option<i64>,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

impl Loadable for DimAdGroup {
    type Row = AdGroupRow;
    const TABLE: &'static str = "dim_ad_groups";
    fn row(&self) -> AdGroupRow {
        AdGroupRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            ad_group_id: self.ad_group_id.clone(),
            campaign_id: self.campaign_id.clone(),
            surrogate_key: self.surrogate_key.clone(),
            version: u32::try_from(self.version).unwrap_or(0),
            valid_from: self.valid_from.timestamp_millis(),
            valid_to: self.valid_to.map(|t| t.timestamp_millis()),
            is_current: u8::from(self.is_current),
            name: self.name.clone(),
            status: self.status.clone(),
            ad_group_type: self.ad_group_type.clone().unwrap_or_default(),
            bid_micros: self.bid_micros,
            budget_micros: self.budget_micros,
            attributes_hash: self.attributes_hash.clone(),
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
            revision: u64::try_from(self.revision).unwrap_or(0),
            is_deleted: u8::from(self.is_deleted),
        }
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct AdRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    ad_id: String,
    ad_group_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    ad_type: String,
    headline: String,
    final_url: String,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

impl Loadable for DimAd {
    type Row = AdRow;
    const TABLE: &'static str = "dim_ads";
    fn row(&self) -> AdRow {
        AdRow {
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            account_id: self.account_id.clone(),
            ad_id: self.ad_id.clone(),
            ad_group_id: self.ad_group_id.clone(),
            campaign_id: self.campaign_id.clone(),
            surrogate_key: self.surrogate_key.clone(),
            version: u32::try_from(self.version).unwrap_or(0),
            valid_from: self.valid_from.timestamp_millis(),
            valid_to: self.valid_to.map(|t| t.timestamp_millis()),
            is_current: u8::from(self.is_current),
            name: self.name.clone(),
            status: self.status.clone(),
            ad_type: self.ad_type.clone().unwrap_or_default(),
            headline: self.headline.clone().unwrap_or_default(),
            final_url: self.final_url.clone().unwrap_or_default(),
            attributes_hash: self.attributes_hash.clone(),
            extracted_at: self.extracted_at.timestamp_millis(),
            run_id: self.run_id.clone(),
            revision: u64::try_from(self.revision).unwrap_or(0),
            is_deleted: u8::from(self.is_deleted),
        }
    }
}

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct ExtractionRunRow {
    run_id: String,
    tenant_id: String,
    platform: String,
    command_id: String,
    from_date: u16,
    to_date: u16,
    status: String,
    records: BTreeMap<String, i64>,
    error: String,
    started_at: i64,
    finished_at: i64,
}

/// The run's status as the table stores it: the Avro enum symbol.
fn status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
    }
}

impl Loadable for ExtractionRun {
    type Row = ExtractionRunRow;
    const TABLE: &'static str = "extraction_runs";
    /// Runs are audit data no tenant query reads: announcing them would only flush the API
    /// cache of a tenant whose facts did not change (the run's facts have their own events).
    const LOAD_EVENTS: bool = false;
    fn row(&self) -> ExtractionRunRow {
        ExtractionRunRow {
            run_id: self.run_id.clone(),
            tenant_id: self.tenant_id.clone(),
            platform: self.platform.as_str().to_owned(),
            command_id: self.command_id.clone().unwrap_or_default(),
            from_date: day(self.from_date),
            to_date: day(self.to_date),
            status: status(self.status).to_owned(),
            records: self.records.clone(),
            error: self.error.clone().unwrap_or_default(),
            started_at: self.started_at.timestamp_millis(),
            finished_at: self.finished_at.timestamp_millis(),
        }
    }
}

/// One row of `load_batches`: what one batch loaded for one tenant into one table. The same
/// content as the batch's load event, plus where in Kafka the rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct LoadBatchRow {
    pub batch_id: String,
    pub tenant_id: String,
    pub table: String,
    pub rows: u64,
    pub min_date: Option<u16>,
    pub max_date: Option<u16>,
    pub source_topic: String,
    /// The offsets counted, `partition:first-last[,partition:first-last…]`.
    pub source_ranges: String,
    /// Milliseconds since 1970 (`DateTime64(3)`); the Replacing version.
    pub loaded_at: i64,
}
