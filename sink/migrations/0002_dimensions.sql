-- SCD2 dimensions, one row per version. The processors may re-emit a version (a late snapshot
-- re-cut the history): the newest `revision` of a surrogate key wins, and a version that no longer
-- exists comes back once with is_deleted = 1, which FINAL drops.
CREATE TABLE IF NOT EXISTS {db}.dim_campaigns
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    campaign_id String,
    surrogate_key String,
    version UInt32,
    valid_from DateTime64(3, 'UTC'),
    valid_to Nullable(DateTime64(3, 'UTC')),
    is_current UInt8,
    name String,
    status LowCardinality(String),
    channel_type LowCardinality(String),
    bidding_strategy LowCardinality(String),
    budget_micros Nullable(Int64),
    budget_period LowCardinality(String),
    start_date Nullable(Date),
    end_date Nullable(Date),
    attributes_hash String,
    extracted_at DateTime64(3, 'UTC'),
    run_id String,
    revision UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(revision, is_deleted)
ORDER BY (tenant_id, platform, account_id, campaign_id, surrogate_key)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.dim_ad_groups
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    ad_group_id String,
    campaign_id String,
    surrogate_key String,
    version UInt32,
    valid_from DateTime64(3, 'UTC'),
    valid_to Nullable(DateTime64(3, 'UTC')),
    is_current UInt8,
    name String,
    status LowCardinality(String),
    ad_group_type LowCardinality(String),
    bid_micros Nullable(Int64),
    budget_micros Nullable(Int64),
    attributes_hash String,
    extracted_at DateTime64(3, 'UTC'),
    run_id String,
    revision UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(revision, is_deleted)
ORDER BY (tenant_id, platform, account_id, ad_group_id, surrogate_key)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.dim_ads
(
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    account_id String,
    ad_id String,
    ad_group_id String,
    campaign_id String,
    surrogate_key String,
    version UInt32,
    valid_from DateTime64(3, 'UTC'),
    valid_to Nullable(DateTime64(3, 'UTC')),
    is_current UInt8,
    name String,
    status LowCardinality(String),
    ad_type LowCardinality(String),
    headline String,
    final_url String,
    attributes_hash String,
    extracted_at DateTime64(3, 'UTC'),
    run_id String,
    revision UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(revision, is_deleted)
ORDER BY (tenant_id, platform, account_id, ad_id, surrogate_key)
SETTINGS non_replicated_deduplication_window = 1000;
