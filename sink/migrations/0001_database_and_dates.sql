-- The warehouse database and the shared date dimension (2015-01-01 .. 2040-12-31).
CREATE DATABASE IF NOT EXISTS {db};

CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;

CREATE TABLE IF NOT EXISTS {db}.dim_date
(
    date Date,
    year UInt16,
    quarter UInt8,
    month UInt8,
    iso_week UInt8,
    day_of_month UInt8,
    day_of_week UInt8,
    is_weekend UInt8,
    month_start Date,
    week_start Date
)
ENGINE = ReplacingMergeTree
ORDER BY date;

INSERT INTO {db}.dim_date
SELECT
    d,
    toYear(d),
    toQuarter(d),
    toMonth(d),
    toISOWeek(d),
    toDayOfMonth(d),
    toDayOfWeek(d),
    toDayOfWeek(d) >= 6,
    toStartOfMonth(d),
    toMonday(d)
FROM (SELECT toDate('2015-01-01') + number AS d FROM numbers(9497));
