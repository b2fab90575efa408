//! Sink throughput: rows/s from the fact topic into ClickHouse through the sink (decode, batch,
//! deduplicated insert, offset commit, load events), side by side in the same run with the
//! ceiling — the same rows inserted straight into the same table of the same engine through the
//! `clickhouse` crate's RowBinary insert, with no Kafka and no decoding.
//!
//! Needs the local stack (`dev/stack up`).
//!
//!     cargo run --release -p mi-bench --bin sink-bench -- --records 200000 --repeat 3

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use clap::Parser;
use mi_bench::{Spread, per_second};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{Codec, FactAdPerformance, Record};
use mi_sink::load::{self, LoadConfig, TOPICS};
use mi_sink::rows::Loadable;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 3)]
    repeat: u32,
}

fn fact(tenant: &str, i: usize) -> FactAdPerformance {
    FactAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::GoogleAds,
        account_id: "1000000001".into(),
        extracted_at: Utc
            .timestamp_millis_opt(1_800_000_000_000)
            .single()
            .unwrap_or_default(),
        run_id: "bench".into(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default()
            + chrono::Days::new((i % 300) as u64),
        campaign_id: format!("c{}", i % 50),
        ad_group_id: format!("g{}", i % 500),
        ad_id: format!("a{i}"),
        device: Some("MOBILE".into()),
        country: None,
        currency: "USD".into(),
        impressions: 1_000 + (i % 97) as i64,
        clicks: (i % 37) as i64,
        cost_micros: (i % 1_000) as i64 * 10_000,
        conversions: (i % 3) as f64,
        conversion_value_micros: 0,
        video_views: None,
        engagements: None,
        reach: None,
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

async fn once(infra: &Settings, codec: &Codec, records: usize) -> anyhow::Result<(f64, f64)> {
    let database = format!("mi_bench_{}", uuid::Uuid::new_v4().simple());
    let ch = clients::clickhouse(&infra.clickhouse);
    mi_sink::migrate::migrate(&ch, &database).await?;
    let db = ch.clone().with_database(&database);
    let tenants: Vec<String> = (0..8).map(|t| format!("bench-sink-{t}")).collect();
    let facts: Vec<FactAdPerformance> = (0..records)
        .map(|i| fact(&tenants[i % tenants.len()], i))
        .collect();

    // Ceiling: the same rows, inserted directly in batches of the sink's size.
    let start = Instant::now();
    for chunk in facts.chunks(50_000) {
        let mut insert = db
            .insert::<<FactAdPerformance as Loadable>::Row>("fact_ad_performance")
            .await?;
        for f in chunk {
            insert.write(&f.row()).await?;
        }
        insert.end().await?;
    }
    let ceiling = per_second(records as u64, start.elapsed());
    db.query("TRUNCATE TABLE fact_ad_performance")
        .execute()
        .await?;

    // The sink, from Kafka.
    let config = LoadConfig {
        group: format!("bench-sink-{}", uuid::Uuid::new_v4().simple()),
        database: database.clone(),
        ..Default::default()
    };
    for topic in TOPICS {
        clients::start_group_at_end(&infra.kafka, &config.group, topic).await?;
    }
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::idempotent_producer_config(&infra.kafka)
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
    for f in &facts {
        let bytes = codec.encode(f).await?;
        let mut record = BaseRecord::to(FactAdPerformance::TOPIC)
            .key(&f.tenant_id)
            .payload(&bytes);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n: u64 = db
                .query("SELECT count() FROM fact_ad_performance")
                .fetch_one()
                .await?;
            if n >= records as u64 {
                let elapsed = start.elapsed();
                shutdown.cancel();
                return anyhow::Ok(elapsed);
            }
        }
    };
    let (stats, elapsed) = tokio::join!(load::run(infra, &config, shutdown.clone()), watch);
    let stats = stats?;
    let elapsed = elapsed?;
    ch.clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    println!(
        "  sink {:.0} rows/s ({} batches, {:.0} ms per batch); direct insert ceiling {ceiling:.0} rows/s",
        per_second(records as u64, elapsed),
        stats.batches,
        elapsed.as_secs_f64() * 1000.0 / stats.batches.max(1) as f64
    );
    Ok((per_second(records as u64, elapsed), ceiling))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let infra: Settings = mi_common::settings::load(None)?;
    let codec = Codec::new(clients::schema_registry(&infra.schema_registry));
    println!(
        "sink-bench: {} fact rows per run, {} repetitions",
        args.records, args.repeat
    );
    let (mut sink, mut ceiling) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let (s, c) = once(&infra, &codec, args.records).await?;
        sink.push(s);
        ceiling.push(c);
    }
    if let (Some(s), Some(c)) = (Spread::of(&sink), Spread::of(&ceiling)) {
        println!("sink rows/s {s}");
        println!("direct insert (ceiling) rows/s {c}");
        println!(
            "sink / ceiling (medians) {:.0} %",
            100.0 * s.median / c.median.max(1.0)
        );
    }
    Ok(())
}
