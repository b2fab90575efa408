-- Daily facts. ReplacingMergeTree on the natural key with extracted_at as the version: a restated
-- day replaces the older extraction (read with FINAL or argMax). Breakdown columns are '' when the
-- platform reported no breakdown (sort keys cannot be Nullable). Ratios are not stored: queries
-- compute them from sums (ratios of sums, never averages of ratios).
-- non_replicated_deduplication_window makes a retried insert with the same
-- insert_deduplication_token a no-op (without it a non-replicated MergeTree inserts it again).
CREATE TABLE IF NOT EXISTS {db}.fact_ad_performance
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    date Date,
    campaign_id String,
    ad_group_id String,
    ad_id String,
    device LowCardinality(String),
    country LowCardinality(String),
    currency LowCardinality(String),
    impressions Int64,
    clicks Int64,
    cost_micros Int64,
    conversions Float64,
    conversion_value_micros Int64,
    video_views Int64,
    engagements Int64,
    reach Int64,
    extracted_at DateTime64(3, 'UTC'),
    run_id String
)
ENGINE = ReplacingMergeTree(extracted_at)
PARTITION BY toYYYYMM(date)
ORDER BY (tenant_id, date, platform, account_id, campaign_id, ad_group_id, ad_id, device, country)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.fact_ga_sessions
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    date Date,
    source String,
    medium LowCardinality(String),
    campaign String,
    channel_group LowCardinality(String),
    device LowCardinality(String),
    country LowCardinality(String),
    currency LowCardinality(String),
    sessions Int64,
    engaged_sessions Int64,
    screen_page_views Int64,
    session_duration_seconds Int64,
    transactions Int64,
    purchase_revenue_micros Int64,
    key_events Float64,
    extracted_at DateTime64(3, 'UTC'),
    run_id String
)
ENGINE = ReplacingMergeTree(extracted_at)
PARTITION BY toYYYYMM(date)
ORDER BY (tenant_id, date, account_id, source, medium, campaign, channel_group, device, country)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.fact_conversions
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    date Date,
    campaign_id String,
    conversion_action String,
    category LowCardinality(String),
    currency LowCardinality(String),
    conversions Float64,
    conversion_value_micros Int64,
    extracted_at DateTime64(3, 'UTC'),
    run_id String
)
ENGINE = ReplacingMergeTree(extracted_at)
PARTITION BY toYYYYMM(date)
ORDER BY (tenant_id, date, platform, account_id, campaign_id, conversion_action)
SETTINGS non_replicated_deduplication_window = 1000;
