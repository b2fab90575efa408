//! The sink against the real Kafka and ClickHouse engine: curated records in, exact totals out
//! (read with FINAL), restatements counted once with their newest values, one load event per
//! tenant and batch.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use mi_common::{Platform, clients};
use mi_schemas::{Codec, DimCampaign, FactAdPerformance, LoadEvent, Record};
use mi_sink::load::{self, LoadConfig, TOPICS};
use mi_tests::{offsets, settings, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn fact(tenant: &str, i: usize, extracted_ms: i64, conversions: f64) -> FactAdPerformance {
    FactAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::MetaAds,
        account_id: "act_7".into(),
        extracted_at: Utc
            .timestamp_millis_opt(extracted_ms)
            .single()
            .expect("instant"),
        run_id: "r".into(),
        date: NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")
            + chrono::Days::new((i % 20) as u64),
        campaign_id: "c".into(),
        ad_group_id: "g".into(),
        ad_id: format!("a{i}"),
        device: None,
        country: Some("DE".into()),
        currency: "EUR".into(),
        impressions: 100 + i as i64,
        clicks: 3,
        cost_micros: 1_000_000,
        conversions,
        conversion_value_micros: 0,
        video_views: None,
        engagements: None,
        reach: Some(50),
        ctr: None,
        cpc_micros: None,
        cpm_micros: None,
        cpa_micros: None,
        roas: None,
        conversion_rate: None,
        video_view_rate: None,
        frequency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curated_records_load_exactly_with_restatements_and_load_events() -> anyhow::Result<()> {
    let s = settings();
    let database = unique("mi_it_sink");
    let ch = clients::clickhouse(&s.clickhouse);
    mi_sink::migrate::migrate(&ch, &database).await?;
    let config = LoadConfig {
        group: unique("it-sink"),
        database: database.clone(),
        max_rows: 5_000,
        max_wait: Duration::from_millis(300),
        ..Default::default()
    };
    for topic in TOPICS {
        clients::start_group_at_end(&s.kafka, &config.group, topic).await?;
    }
    let events_since = offsets(LoadEvent::TOPIC).await?;
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let producer: FutureProducer = clients::idempotent_producer_config(&s.kafka).create()?;
    let tenants = [
        unique("t")[..12].replace('_', "-"),
        unique("t")[..12].replace('_', "-"),
    ];
    let per_tenant = 300;
    let mut sent: BTreeMap<String, i64> = BTreeMap::new();
    for tenant in &tenants {
        for i in 0..per_tenant {
            let bytes = codec.encode(&fact(tenant, i, 1_000_000, 1.0)).await?;
            producer
                .send(
                    FutureRecord::to(FactAdPerformance::TOPIC)
                        .key(tenant)
                        .payload(&bytes),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
            *sent.entry(tenant.clone()).or_default() += 1;
        }
        // Restate the first 10 ads: a newer extraction with 5 conversions instead of 1.
        for i in 0..10 {
            let bytes = codec.encode(&fact(tenant, i, 2_000_000, 5.0)).await?;
            producer
                .send(
                    FutureRecord::to(FactAdPerformance::TOPIC)
                        .key(tenant)
                        .payload(&bytes),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
            *sent.entry(tenant.clone()).or_default() += 1;
        }
    }

    // Dimensions: a version re-emitted with a newer revision, and a retracted one.
    let dim = |key: &str, revision: i64, name: &str, deleted: bool| DimCampaign {
        tenant_id: tenants[0].clone(),
        platform: Platform::MetaAds,
        account_id: "act_7".into(),
        extracted_at: Utc
            .timestamp_millis_opt(1_000_000)
            .single()
            .expect("instant"),
        run_id: "r".into(),
        campaign_id: "c1".into(),
        name: name.into(),
        status: "ACTIVE".into(),
        channel_type: Some("OUTCOME_SALES".into()),
        bidding_strategy: None,
        budget_micros: Some(5_000_000),
        budget_period: Some("DAILY".into()),
        start_date: NaiveDate::from_ymd_opt(2026, 1, 1),
        end_date: None,
        surrogate_key: key.into(),
        version: 1,
        valid_from: Utc.timestamp_millis_opt(1_000).single().expect("instant"),
        valid_to: None,
        is_current: true,
        attributes_hash: "h".into(),
        revision,
        is_deleted: deleted,
    };
    for d in [
        dim("k1", 1, "old", false),
        dim("k1", 2, "new", false),
        dim("k2", 1, "gone", false),
        dim("k2", 2, "gone", true),
    ] {
        let bytes = codec.encode(&d).await?;
        producer
            .send(
                FutureRecord::to(DimCampaign::TOPIC)
                    .key(&d.tenant_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        *sent.entry(d.tenant_id.clone()).or_default() += 1;
    }

    let shutdown = tokio_util::sync::CancellationToken::new();
    let db = ch.clone().with_database(&database);
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Background merges fold restated rows away, so watch the FINAL view: every ad once,
            // with the newest conversions.
            let (n, conversions): (u64, f64) = db
                .query("SELECT count(), sum(conversions) FROM fact_ad_performance FINAL")
                .fetch_one()
                .await?;
            let expected = tenants.len() as f64 * ((per_tenant - 10) as f64 + 50.0);
            let dims: (u64, u64) = db
                .query("SELECT countIf(name = 'new'), count() FROM dim_campaigns FINAL")
                .fetch_one()
                .await?;
            if (n == (tenants.len() * per_tenant) as u64
                && conversions == expected
                && dims == (1, 1))
                || Instant::now() > deadline
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shutdown.cancel();
                return anyhow::Ok(());
            }
        }
    };
    let (stats, watched) = tokio::join!(load::run(&s, &config, shutdown.clone()), watch);
    watched?;
    let stats = stats?;
    assert_eq!(stats.rows as i64, sent.values().sum::<i64>(), "{stats:?}");

    for tenant in &tenants {
        let (rows, impressions, conversions): (u64, i64, f64) = db
            .query("SELECT count(), sum(impressions), sum(conversions) FROM fact_ad_performance FINAL WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_one()
            .await?;
        let expected_impressions: i64 = (0..per_tenant).map(|i| 100 + i as i64).sum();
        assert_eq!(rows, per_tenant as u64, "restated ads appear once");
        assert_eq!(impressions, expected_impressions);
        assert_eq!(
            conversions,
            (per_tenant - 10) as f64 + 10.0 * 5.0,
            "newest values win"
        );
    }

    let live: Vec<(String, String)> = db
        .query("SELECT surrogate_key, name FROM dim_campaigns FINAL ORDER BY surrogate_key")
        .fetch_all()
        .await?;
    assert_eq!(
        live,
        vec![("k1".to_owned(), "new".to_owned())],
        "newest revision wins, retracted versions vanish"
    );

    // Load events: per tenant, the rows of every batch add up to what was loaded for it.
    let config_read = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let ours: HashSet<&String> = tenants.iter().collect();
    let mut loaded: BTreeMap<String, i64> = BTreeMap::new();
    for (_, value) in clients::read_since(config_read, LoadEvent::TOPIC, &events_since).await? {
        let e: LoadEvent = codec.decode(&value).await?;
        if ours.contains(&e.tenant_id) {
            assert!(
                e.table == "fact_ad_performance" || e.table == "dim_campaigns",
                "{e:?}"
            );
            assert!(e.min_date <= e.max_date);
            *loaded.entry(e.tenant_id.clone()).or_default() += e.rows;
        }
    }
    assert_eq!(loaded, sent);
    ch.clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    Ok(())
}
