//! The warehouse schema in the real ClickHouse engine: migrations apply once and only once, and
//! the two mechanisms the sink's exactly-once loads rest on hold — a retried batch with the same
//! `insert_deduplication_token` is dropped, and a restated day keeps only its newest extraction.

use mi_common::clients;
use mi_sink::migrate::{self, MIGRATIONS};
use mi_tests::{settings, unique};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct Fact {
    tenant_id: String,
    platform: String,
    account_id: String,
    #[serde(with = "clickhouse::serde::time::date")]
    date: time::Date,
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

fn fact(ad: &str, extracted_at: i64, conversions: f64) -> Fact {
    Fact {
        tenant_id: "acme".into(),
        platform: "google_ads".into(),
        account_id: "1234567890".into(),
        date: time::Date::from_calendar_date(2026, time::Month::November, 20).expect("date"),
        campaign_id: "c1".into(),
        ad_group_id: "g1".into(),
        ad_id: ad.into(),
        device: "MOBILE".into(),
        country: String::new(),
        currency: "USD".into(),
        impressions: 1000,
        clicks: 10,
        cost_micros: 5_000_000,
        conversions,
        conversion_value_micros: 1_000_000,
        video_views: 0,
        engagements: 0,
        reach: 0,
        extracted_at,
        run_id: "r".into(),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_loads_are_idempotent_and_restatement_safe() -> anyhow::Result<()>
{
    let s = settings();
    let database = unique("mi_it");
    let client = clients::clickhouse(&s.clickhouse);

    let first = migrate::migrate(&client, &database).await?;
    assert_eq!(
        first,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let second = migrate::migrate(&client, &database).await?;
    assert!(
        second.is_empty(),
        "a second run applies nothing, applied {second:?}"
    );
    assert!(
        migrate::migrate(&client, "mi; DROP DATABASE mi")
            .await
            .is_err()
    );

    let db = client.clone().with_database(&database);
    let days: u64 = db.query("SELECT count() FROM dim_date").fetch_one().await?;
    assert_eq!(days, 9497);
    let engine: String = db
        .query(
            "SELECT engine FROM system.tables WHERE database = ? AND name = 'fact_ad_performance'",
        )
        .bind(&database)
        .fetch_one()
        .await?;
    assert_eq!(engine, "ReplacingMergeTree");

    // A batch retried with the same deduplication token (the sink derives it from the topic,
    // partition and offset range) is dropped; a new batch is not.
    let insert = |token: &'static str, rows: Vec<Fact>| {
        let db = db.clone().with_setting("insert_deduplication_token", token);
        async move {
            let mut insert = db.insert::<Fact>("fact_ad_performance").await?;
            for row in &rows {
                insert.write(row).await?;
            }
            insert.end().await?;
            anyhow::Ok(())
        }
    };
    insert(
        "mi.fact.ad_performance.v1/0/0-1",
        vec![fact("a1", 1_000, 1.0), fact("a2", 1_000, 2.0)],
    )
    .await?;
    insert(
        "mi.fact.ad_performance.v1/0/0-1",
        vec![fact("a1", 1_000, 1.0), fact("a2", 1_000, 2.0)],
    )
    .await?;
    let rows: u64 = db
        .query("SELECT count() FROM fact_ad_performance")
        .fetch_one()
        .await?;
    assert_eq!(rows, 2, "the retried batch was deduplicated");

    // A restatement of a1 (newer extraction, more conversions): read with FINAL, the day holds
    // each ad once, with the newest values.
    insert(
        "mi.fact.ad_performance.v1/0/2-2",
        vec![fact("a1", 2_000, 5.0)],
    )
    .await?;
    let (rows, conversions): (u64, f64) = db
        .query(
            "SELECT count(), sum(conversions) FROM fact_ad_performance FINAL WHERE tenant_id = ?",
        )
        .bind("acme")
        .fetch_one()
        .await?;
    assert_eq!((rows, conversions), (2, 7.0));

    client
        .clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    Ok(())
}
