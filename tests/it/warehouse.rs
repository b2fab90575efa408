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

/// Row policies: every provisioning statement parses with ClickHouse's own parser, and each
/// tenant's predicate selects exactly that tenant's rows. (The chDB dev front cannot switch
/// users; enforcement itself is checked by the next test against a real server.)
#[tokio::test]
async fn provisioning_statements_parse_and_predicates_select_exactly_the_tenant()
-> anyhow::Result<()> {
    use mi_common::TenantId;
    use mi_sink::provision::{self, Mode, TENANT_TABLES};
    use secrecy::SecretString;

    let s = settings();
    let database = unique("mi_it_rp");
    let client = clients::clickhouse(&s.clickhouse);
    migrate::migrate(&client, &database).await?;
    let master = SecretString::from("it-master-secret".to_owned());
    let (a, b) = (TenantId::new("acme")?, TenantId::new("beta-2")?);
    for t in [&a, &b] {
        let n = provision::provision(&client, &database, t, &master, Mode::ValidateOnly).await?;
        assert_eq!(n, 1 + 2 * TENANT_TABLES.len());
    }
    // A statement ClickHouse's parser refuses is reported, not ignored.
    let bad = client.clone().with_database("default");
    assert!(
        bad.query("SELECT formatQuery(?)")
            .bind("CREATE ROW POLICY p ON t USING")
            .fetch_one::<String>()
            .await
            .is_err()
    );

    let db = client.clone().with_database(&database);
    let mut insert = db.insert::<Fact>("fact_ad_performance").await?;
    for (tenant, n) in [("acme", 3), ("beta-2", 5)] {
        for i in 0..n {
            let mut row = fact(&format!("{tenant}-{i}"), 1, 1.0);
            row.tenant_id = tenant.into();
            insert.write(&row).await?;
        }
    }
    insert.end().await?;
    for (t, mine, others) in [(&a, 3u64, 5u64), (&b, 5, 3)] {
        let p = provision::predicate(t);
        let inside: u64 = db
            .query(&format!(
                "SELECT count() FROM fact_ad_performance WHERE {p}"
            ))
            .fetch_one()
            .await?;
        let outside: u64 = db
            .query(&format!(
                "SELECT count() FROM fact_ad_performance WHERE NOT ({p})"
            ))
            .fetch_one()
            .await?;
        assert_eq!((inside, outside), (mine, others), "predicate of {t}");
    }
    client
        .clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    Ok(())
}

/// Enforcement on a real ClickHouse server (`MI_IT_CLICKHOUSE_SERVER=http://host:8123`, with
/// `MI_CLICKHOUSE__PASSWORD` for an admin user): provisioned tenants see only their own rows.
/// The local stack serves chDB, which has no users, so without such a server this test says
/// it is skipped and checks nothing.
#[tokio::test]
async fn row_policies_are_enforced_on_a_real_server() -> anyhow::Result<()> {
    use mi_common::TenantId;
    use mi_sink::provision::{self, Mode};
    use secrecy::{ExposeSecret, SecretString};

    let Ok(url) = std::env::var("MI_IT_CLICKHOUSE_SERVER") else {
        eprintln!(
            "SKIPPED row_policies_are_enforced_on_a_real_server: no real ClickHouse server (set MI_IT_CLICKHOUSE_SERVER); the chDB dev front cannot enforce row policies"
        );
        return Ok(());
    };
    let mut s = settings();
    s.clickhouse.url = url.clone();
    let database = unique("mi_it_rp");
    let admin = clients::clickhouse(&s.clickhouse);
    migrate::migrate(&admin, &database).await?;
    let master = SecretString::from("it-master-secret".to_owned());
    let (a, b) = (TenantId::new("acme")?, TenantId::new("beta")?);
    for t in [&a, &b] {
        provision::provision(&admin, &database, t, &master, Mode::Execute).await?;
    }
    let db = admin.clone().with_database(&database);
    let mut insert = db.insert::<Fact>("fact_ad_performance").await?;
    for (tenant, n) in [("acme", 3), ("beta", 5)] {
        for i in 0..n {
            let mut row = fact(&format!("{tenant}-{i}"), 1, 1.0);
            row.tenant_id = tenant.into();
            insert.write(&row).await?;
        }
    }
    insert.end().await?;
    for (t, mine) in [(&a, 3u64), (&b, 5)] {
        let as_tenant = clickhouse::Client::default()
            .with_url(&url)
            .with_database(&database)
            .with_user(provision::user_name(t))
            .with_password(provision::password(&master, t).expose_secret());
        let seen: u64 = as_tenant
            .query("SELECT count() FROM fact_ad_performance")
            .fetch_one()
            .await?;
        assert_eq!(seen, mine, "{t} sees only its own rows");
    }
    admin
        .clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    Ok(())
}
