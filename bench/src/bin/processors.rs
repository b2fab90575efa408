//! Stream-processor throughput: records/s through the facts processor (decode, validate,
//! derive metrics, encode, publish in exactly-once transactions) with one and two instances,
//! and the time from the last raw record produced to its fact being committed.
//!
//! Needs the local stack (`dev/stack up`). Synthetic raw rows are produced first, then the
//! processor instances (in this process, on their own consumer group) drain them.
//!
//!     cargo run --release -p mi-bench --bin processors-bench -- --records 200000 --repeat 3

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use clap::Parser;
use mi_bench::{Spread, per_second};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{Codec, FactAdPerformance, RawAdPerformance, Record};
use mi_stream_processors::{ProcessorSection, ProcessorsSettings, Which, run_processor};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    instances: Vec<u32>,
}

fn row(tenant: &str, run_id: &str, i: usize) -> RawAdPerformance {
    RawAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::GoogleAds,
        account_id: "1000000001".into(),
        extracted_at: Utc
            .timestamp_millis_opt(1_800_000_000_000)
            .single()
            .unwrap_or_default(),
        run_id: run_id.into(),
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
        conversion_value_micros: (i % 5) as i64 * 1_000_000,
        video_views: Some(0),
        engagements: Some(0),
        reach: None,
    }
}

async fn once(
    infra: &Settings,
    codec: &Codec,
    records: usize,
    instances: u32,
) -> anyhow::Result<(f64, Duration)> {
    // Several tenants, so that the input spreads over every partition.
    let tenants: Vec<String> = (0..8)
        .map(|t| {
            format!(
                "bench-{}-{t}",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            )
        })
        .collect();
    let run_id = uuid::Uuid::new_v4().to_string();
    let prefix = format!("bench-proc-{}", uuid::Uuid::new_v4().simple());
    for topic in [
        RawAdPerformance::TOPIC,
        "mi.raw.ga_sessions.v1",
        "mi.raw.conversions.v1",
    ] {
        clients::start_group_at_end(&infra.kafka, &format!("{prefix}-facts"), topic).await?;
    }
    let since = clients::end_offsets(
        clients::kafka_config(&infra.kafka),
        FactAdPerformance::TOPIC,
    )
    .await?;

    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::idempotent_producer_config(&infra.kafka)
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
    for i in 0..records {
        let tenant = &tenants[i % tenants.len()];
        let bytes = codec.encode(&row(tenant, &run_id, i)).await?;
        let mut record = BaseRecord::to(RawAdPerformance::TOPIC)
            .key(tenant)
            .payload(&bytes);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let produced_at = Instant::now();

    let settings = ProcessorsSettings {
        infra: infra.clone(),
        processors: ProcessorSection {
            group_prefix: prefix,
            ..Default::default()
        },
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ids: Vec<String> = (0..instances).map(|i| i.to_string()).collect();
    let start = Instant::now();
    let run = futures::future::join_all(
        ids.iter()
            .map(|id| run_processor(Which::Facts, &settings, id, shutdown.clone())),
    );
    let watch = async {
        let total: i64 = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let ends = clients::end_offsets(
                clients::kafka_config(&infra.kafka),
                FactAdPerformance::TOPIC,
            )
            .await?;
            // Output offsets include transaction markers (one per partition per transaction),
            // so this is an upper bound used only to know when to look closer.
            let grown: i64 = ends
                .iter()
                .map(|(p, e)| e - since.get(p).copied().unwrap_or(0))
                .sum();
            if grown >= records as i64 {
                break grown;
            }
        };
        let _ = total;
        // Count exactly (read_committed) until every row has its fact.
        loop {
            let config = clients::read_committed_consumer_config(
                &infra.kafka,
                &format!("bench-read-{}", uuid::Uuid::new_v4()),
            );
            let n = clients::read_since(config, FactAdPerformance::TOPIC, &since)
                .await?
                .len();
            if n >= records {
                let elapsed = start.elapsed();
                shutdown.cancel();
                return anyhow::Ok((elapsed, produced_at.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, timing) = tokio::join!(run, watch);
    let (elapsed, lag) = timing?;
    Ok((per_second(records as u64, elapsed), lag))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let infra: Settings = mi_common::settings::load(None)?;
    let codec = Codec::new(clients::schema_registry(&infra.schema_registry));
    println!(
        "processors-bench: facts processor, {} records per run, {} repetitions",
        args.records, args.repeat
    );
    let mut summary = BTreeMap::new();
    for &instances in &args.instances {
        let mut rates = Vec::new();
        let mut lags = Vec::new();
        for _ in 0..args.repeat {
            let (rate, lag) = once(&infra, &codec, args.records, instances).await?;
            println!(
                "  {instances} instance(s): {rate:.0} records/s, last record committed {:.2} s after the input was complete",
                lag.as_secs_f64()
            );
            rates.push(rate);
            lags.push(lag.as_secs_f64() * 1000.0);
        }
        if let (Some(r), Some(l)) = (Spread::of(&rates), Spread::of(&lags)) {
            println!("{instances} instance(s): records/s {r}; drain time ms {l}");
            summary.insert(instances, r.median);
        }
    }
    Ok(())
}
