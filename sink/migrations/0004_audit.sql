-- Audit: one row per committed sink batch and table, and one per extraction run.
CREATE TABLE IF NOT EXISTS {db}.load_batches
(
    batch_id String,
    tenant_id LowCardinality(String),
    table LowCardinality(String),
    rows UInt64,
    min_date Nullable(Date),
    max_date Nullable(Date),
    source_topic LowCardinality(String),
    source_ranges String,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYYYYMM(loaded_at)
ORDER BY (tenant_id, table, batch_id);

CREATE TABLE IF NOT EXISTS {db}.extraction_runs
(
    run_id String,
    tenant_id LowCardinality(String),
    platform LowCardinality(String),
    command_id String,
    from_date Date,
    to_date Date,
    status LowCardinality(String),
    records Map(String, Int64),
    error String,
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finished_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, platform, run_id);
