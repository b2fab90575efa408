//! The whole pipeline in one process, for tests that need data in the warehouse the way
//! production puts it there: real extractions from the emulator → the stream processors → the
//! sink → a scratch ClickHouse database. Every consumer group is new and starts at the current
//! end of its topics, so only this call's records are loaded (other tests may run alongside).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mi_common::{Platform, TenantId, clients};
use mi_producers::settings::TenantConfig;
use mi_producers::{RunRequest, Runner};
use mi_schemas::{
    Codec, ExtractionRun, RawAd, RawAdGroup, RawAdPerformance, RawCampaign, RawConversion,
    RawGaSessions, Record, RunStatus,
};
use mi_sink::load::{self, LoadConfig};
use mi_stream_processors::{ProcessorSection, ProcessorsSettings, Which, run_processor};
use serde::Deserialize;

use crate::{Emulator, producers_settings, settings, today, unique};

/// What [`load`] put in the warehouse.
pub struct Loaded {
    pub database: String,
    pub tenants: Vec<TenantConfig>,
    pub runs: Vec<(TenantId, Platform, ExtractionRun)>,
}

impl Loaded {
    /// The account of `tenant` on `platform` (each test tenant has one per platform).
    pub fn account(&self, tenant: &TenantId, platform: Platform) -> Option<String> {
        let t = self.tenants.iter().find(|t| &t.id == tenant)?;
        match platform {
            Platform::GoogleAds => t.google_ads.as_ref()?.customer_ids.first().cloned(),
            Platform::MetaAds => t.meta_ads.as_ref()?.account_ids.first().cloned(),
            Platform::Ga4 => t.ga4.as_ref()?.property_ids.first().cloned(),
        }
    }
}

/// Raw topic → (warehouse table, whether the count is of distinct current entities).
const EXPECTED: [(&str, &str); 6] = [
    (RawAdPerformance::TOPIC, "fact_ad_performance"),
    (RawGaSessions::TOPIC, "fact_ga_sessions"),
    (RawConversion::TOPIC, "fact_conversions"),
    (RawCampaign::TOPIC, "dim_campaigns"),
    (RawAdGroup::TOPIC, "dim_ad_groups"),
    (RawAd::TOPIC, "dim_ads"),
];

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    tenant_id: String,
    n: u64,
}

/// Backfills `backfill_days` of every platform of `tenants` from `emulator` through the real
/// pipeline into a new database, and returns once ClickHouse holds every row.
pub async fn load(
    emulator: &Emulator,
    tenants: Vec<TenantConfig>,
    backfill_days: u32,
) -> anyhow::Result<Loaded> {
    let s = settings();
    let database = unique("mi_it");
    let ch = clients::clickhouse(&s.clickhouse);
    mi_sink::migrate::migrate(&ch, &database).await?;

    let processors = ProcessorsSettings {
        infra: s.clone(),
        processors: ProcessorSection {
            tenants: tenants.iter().map(|t| t.id.to_string()).collect(),
            group_prefix: unique("it-pipe"),
            max_batch: 5_000,
            max_batch_wait_ms: 50,
            ..Default::default()
        },
    };
    for (which, topics) in [
        (
            "facts",
            [
                RawAdPerformance::TOPIC,
                RawGaSessions::TOPIC,
                RawConversion::TOPIC,
            ],
        ),
        (
            "scd2",
            [RawCampaign::TOPIC, RawAdGroup::TOPIC, RawAd::TOPIC],
        ),
    ] {
        for topic in topics {
            let group = format!("{}-{which}", processors.processors.group_prefix);
            clients::start_group_at_end(&s.kafka, &group, topic).await?;
        }
    }
    let sink = LoadConfig {
        group: unique("it-pipe-sink"),
        database: database.clone(),
        max_rows: 20_000,
        max_wait: Duration::from_millis(200),
        ..Default::default()
    };
    for topic in load::TOPICS {
        clients::start_group_at_end(&s.kafka, &sink.group, topic).await?;
    }

    // Extract every platform of every tenant (atomic runs on the raw topics).
    let extract = Arc::new(producers_settings(emulator, tenants.clone()));
    let codec = Arc::new(Codec::new(clients::schema_registry(&s.schema_registry)));
    let runner = Runner::new(extract, codec, &unique("it-pipe-extract"), Some(today()))?;
    let mut runs = Vec::new();
    let mut expected: BTreeMap<(&str, String), i64> = BTreeMap::new();
    for t in &tenants {
        for platform in Platform::ALL {
            let request = RunRequest {
                tenant: t.id.clone(),
                platform,
                command_id: None,
                from: None,
                to: None,
                backfill_days: Some(backfill_days),
            };
            let run = runner.run(&request, None).await?;
            anyhow::ensure!(
                run.status == RunStatus::Succeeded,
                "extraction {} {platform}: {:?}",
                t.id,
                run.error
            );
            for (topic, table) in EXPECTED {
                *expected.entry((table, t.id.to_string())).or_default() +=
                    run.records.get(topic).copied().unwrap_or(0);
            }
            runs.push((t.id.clone(), platform, run));
        }
    }

    // Process and load until the warehouse holds every row of every tenant.
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Whatever ends the wait (success, timeout, error) stops the services.
    let stop = shutdown.clone().drop_guard();
    // The scratch database as the session's, so that no other database needs to exist.
    let ch = ch.clone().with_database(&database);
    let (ch, db, expected) = (&ch, &database, &expected);
    let wait = async move {
        let _stop = stop;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last_report = Instant::now();
        loop {
            let mut missing = Vec::new();
            for (table, _) in EXPECTED.iter().map(|(t, b)| (b, t)) {
                let sql = if table.starts_with("dim_") {
                    let key = match *table {
                        "dim_campaigns" => "campaign_id",
                        "dim_ad_groups" => "ad_group_id",
                        _ => "ad_id",
                    };
                    format!(
                        "SELECT toString(tenant_id) AS tenant_id, uniqExact(platform, account_id, {key}) AS n \
                         FROM {db}.{table} FINAL WHERE is_current = 1 GROUP BY tenant_id"
                    )
                } else {
                    format!(
                        "SELECT toString(tenant_id) AS tenant_id, count() AS n FROM {db}.{table} FINAL GROUP BY tenant_id"
                    )
                };
                let counts: BTreeMap<String, i64> = ch
                    .query(&sql)
                    .fetch_all::<Count>()
                    .await
                    .with_context(|| format!("counting {table}"))?
                    .into_iter()
                    .map(|c| (c.tenant_id, c.n as i64))
                    .collect();
                for ((t, tenant), n) in expected.iter().filter(|((t, _), _)| t == table) {
                    let have = counts.get(tenant).copied().unwrap_or(0);
                    if have != *n {
                        missing.push(format!("{t} {tenant}: {have}/{n}"));
                    }
                }
            }
            if missing.is_empty() {
                return anyhow::Ok(());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("pipeline: waiting for {missing:?}");
                last_report = Instant::now();
            }
            if Instant::now() > deadline {
                anyhow::bail!("the pipeline did not load everything in 300 s: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let (_, _, loaded, waited) = tokio::join!(
        run_processor(Which::Facts, &processors, "0", shutdown.clone()),
        run_processor(Which::Scd2, &processors, "0", shutdown.clone()),
        load::run(&s, &sink, shutdown.clone()),
        wait,
    );
    eprintln!("pipeline: services stopped");
    waited?;
    loaded?;
    Ok(Loaded {
        database,
        tenants,
        runs,
    })
}
