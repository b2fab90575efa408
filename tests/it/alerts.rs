//! The alerts processor end to end: a load event on `mi.events.loads.v1` → the processor reads
//! the loaded days from the warehouse → exactly the designed day-over-day anomalies on
//! `mi.alerts.v1`, the same ones the API's `anomalies` dashboard lists (one rule, two paths).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::{NaiveDate, Utc};
use mi_common::clients;
use mi_query_api::auth::Role;
use mi_query_api::settings::{ApiSection, ApiSettings, AuthSettings};
use mi_schemas::{Alert, Codec, LoadEvent, Record};
use mi_stream_processors::{ProcessorSection, ProcessorsSettings, Which, run_processor};
use mi_tests::{offsets, secret_file, settings, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tower::ServiceExt;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, d).expect("date")
}

/// (campaign, day, spend in currency units, clicks, impressions, conversions).
/// c1: spend 100, 100, 200 (+100 %), 200, 50 (−75 %) with 10 conversions a day — so CPA moves
/// with spend — and a constant CTR. c2 moves wildly but never spends 10 a day: immaterial.
const ROWS: [(&str, u32, i64, i64, i64, f64); 10] = [
    ("c1", 1, 100, 50, 1000, 10.0),
    ("c1", 2, 100, 50, 1000, 10.0),
    ("c1", 3, 200, 60, 1200, 10.0),
    ("c1", 4, 200, 60, 1200, 10.0),
    ("c1", 5, 50, 40, 800, 10.0),
    ("c2", 1, 1, 1, 100, 1.0),
    ("c2", 2, 5, 9, 100, 1.0),
    ("c2", 3, 1, 1, 100, 1.0),
    ("c2", 4, 9, 9, 100, 1.0),
    ("c2", 5, 2, 1, 100, 1.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_flag_exactly_the_designed_spikes_and_drops() -> anyhow::Result<()> {
    let mut infra = settings();
    let database = unique("mi_it_alerts");
    infra.clickhouse.database = database.clone();
    let admin = clients::clickhouse(&infra.clickhouse);
    mi_sink::migrate::migrate(&admin, &database).await?;
    let admin = admin.with_database(&database);
    let tenant = format!("al-{}", &unique("t")[2..10]);

    for (campaign, d, spend, clicks, impressions, conversions) in ROWS {
        // Constant test data, not input: plain SQL is fine here.
        admin
            .query(&format!(
                "INSERT INTO fact_ad_performance (tenant_id, platform, account_id, date, campaign_id, ad_group_id, ad_id, \
                 currency, impressions, clicks, cost_micros, conversions, extracted_at, run_id) VALUES \
                 ('{tenant}', 'google_ads', '1000000001', '{}', '{campaign}', 'g', 'a', 'EUR', {impressions}, {clicks}, \
                 {}, {conversions}, now64(3), 'r')",
                day(d),
                spend * 1_000_000
            ))
            .execute()
            .await?;
    }
    admin
        .query(&format!(
            "INSERT INTO dim_campaigns (tenant_id, platform, account_id, campaign_id, surrogate_key, version, valid_from, \
             is_current, name, revision) VALUES ('{tenant}', 'google_ads', '1000000001', 'c1', 'k1', 1, now64(3), 1, 'Brand', 1)"
        ))
        .execute()
        .await?;

    // The alerts processor, on a fresh group at the end of the load events.
    let processors = ProcessorsSettings {
        infra: infra.clone(),
        processors: ProcessorSection {
            group_prefix: unique("it-alerts"),
            max_batch_wait_ms: 50,
            ..Default::default()
        },
    };
    let group = format!("{}-alerts", processors.processors.group_prefix);
    clients::start_group_at_end(&infra.kafka, &group, LoadEvent::TOPIC).await?;
    let since = offsets(Alert::TOPIC).await?;
    let codec = Codec::new(clients::schema_registry(&infra.schema_registry));
    let event = LoadEvent {
        batch_id: unique("batch"),
        tenant_id: tenant.clone(),
        table: "fact_ad_performance".into(),
        rows: 8,
        min_date: Some(day(2)),
        max_date: Some(day(5)),
        loaded_at: Utc::now(),
    };
    let producer: FutureProducer = clients::idempotent_producer_config(&infra.kafka).create()?;
    producer
        .send(
            FutureRecord::to(LoadEvent::TOPIC)
                .key(&tenant)
                .payload(&codec.encode(&event).await?),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let read = async {
        let _stop = shutdown.clone().drop_guard();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let config =
                clients::read_committed_consumer_config(&infra.kafka, &unique("it-alerts-read"));
            let mut alerts = Vec::new();
            for (key, bytes) in clients::read_since(config, Alert::TOPIC, &since).await? {
                if key.as_deref() == Some(tenant.as_bytes()) {
                    alerts.push(codec.decode::<Alert>(&bytes).await?);
                }
            }
            if alerts.len() >= 4 || Instant::now() > deadline {
                // A little longer: an extra (wrong) alert must have the chance to show.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return anyhow::Ok(alerts);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let (stats, alerts) = tokio::join!(
        run_processor(Which::Alerts, &processors, "0", shutdown.clone()),
        read
    );
    let alerts = alerts?;
    assert_eq!(stats.sessions, 1, "no session restarts: {stats:?}");

    let got: BTreeSet<(String, NaiveDate, String, i64)> = alerts
        .iter()
        .map(|a| {
            assert_eq!(
                (a.campaign_id.as_str(), a.campaign_name.as_str()),
                ("c1", "Brand")
            );
            assert_eq!(a.load_batch_id, event.batch_id);
            assert_eq!(a.currency, "EUR");
            (
                a.metric.clone(),
                a.date,
                a.direction.clone(),
                (a.change * 1000.0).round() as i64,
            )
        })
        .collect();
    let expected: BTreeSet<(String, NaiveDate, String, i64)> = [
        ("spend", day(3), "spike", 1000),
        ("cpa", day(3), "spike", 1000),
        ("spend", day(5), "drop", -750),
        ("cpa", day(5), "drop", -750),
    ]
    .into_iter()
    .map(|(m, d, dir, c)| (m.to_owned(), d, dir.to_owned(), c))
    .collect();
    assert_eq!(got, expected, "alerts: {alerts:#?}");
    assert_eq!(alerts.len(), 4, "one alert per anomaly, no duplicates");
    let ids: BTreeSet<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        4,
        "alert ids are distinct per (campaign, day, metric)"
    );

    // The API's anomalies dashboard applies the same rule to the same days.
    let state = mi_query_api::AppState::new(ApiSettings {
        infra: {
            let mut i = infra.clone();
            i.clickhouse.tenant_secret = Some("it-tenant-master-secret".to_owned().into());
            i
        },
        api: ApiSection {
            auth: AuthSettings {
                secret: Some(secret_file(
                    "jwt-alerts",
                    "it-jwt-secret-of-at-least-32-bytes!!",
                )?),
                ..Default::default()
            },
            ..Default::default()
        },
    })?;
    let token = state.auth.mint_access(
        "it",
        &mi_common::TenantId::new(tenant.clone())?,
        Role::Viewer,
    )?;
    let response = mi_query_api::router(state)
        .oneshot(
            Request::get(format!(
                "/api/v1/dashboards/anomalies?start_date={}&end_date={}",
                day(2),
                day(5)
            ))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())?,
        )
        .await?;
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 24).await?)?;
    let rows = body["widgets"][0]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let dashboard: BTreeSet<(String, NaiveDate, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap_or("").to_owned(),
                r["date"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_default(),
                r["direction"].as_str().unwrap_or("").to_owned(),
                (r["change"].as_f64().unwrap_or(f64::NAN) * 1000.0).round() as i64,
            )
        })
        .collect();
    assert_eq!(dashboard, expected, "the anomalies dashboard: {body}");
    Ok(())
}
