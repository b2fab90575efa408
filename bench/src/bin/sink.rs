//! Sink throughput and memory: rows/s from the fact topic into ClickHouse through the real
//! `sink run` binary, started as a child process (decode, batch, deduplicated insert, offset
//! commit, load events), side by side in the same run with the ceiling — the same rows inserted
//! straight into the same table of the same engine through the `clickhouse` crate's RowBinary
//! insert, with no Kafka and no decoding. While the sink loads, its resident memory is sampled
//! from `/proc/<pid>/status` every 100 ms (VmRSS; VmHWM is the kernel's own peak).
//!
//! The time runs from the child's start (process start and group join included) until every row
//! is in ClickHouse. Needs the local stack (`dev/stack up`) and a release build of the sink next
//! to this program (or `--sink-bin`):
//!
//!     cargo build --release -p mi-sink
//!     cargo run --release -p mi-bench --bin sink-bench -- --records 200000 --repeat 3

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use clap::Parser;
use mi_bench::{Spread, per_second, proc_status_bytes};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{Codec, FactAdPerformance, Record};
use mi_sink::load::TOPICS;
use mi_sink::rows::Loadable;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// The sink binary to run; by default `sink` beside this program (`cargo build --release -p
    /// mi-sink` puts it there).
    #[arg(long)]
    sink_bin: Option<PathBuf>,
}

/// One run's figures.
struct Run {
    sink: f64,
    ceiling: f64,
    rss_median: f64,
    rss_max: f64,
    hwm: f64,
}

const MB: f64 = 1024.0 * 1024.0;

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

async fn once(
    infra: &Settings,
    codec: &Codec,
    records: usize,
    sink_bin: &std::path::Path,
) -> anyhow::Result<Run> {
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

    // The sink, from Kafka, in a group of its own that starts at the topics' current end.
    let group = format!("bench-sink-{}", uuid::Uuid::new_v4().simple());
    for topic in TOPICS {
        clients::start_group_at_end(&infra.kafka, &group, topic).await?;
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

    let start = Instant::now();
    let mut child = Command::new(sink_bin)
        .arg("run")
        .env("MI_SINK__GROUP", &group)
        .env("MI_CLICKHOUSE__URL", &infra.clickhouse.url)
        .env("MI_CLICKHOUSE__DATABASE", &database)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut rss = Vec::new();
    let mut next_count = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    let measured = loop {
        if let Some(bytes) = proc_status_bytes(pid, "VmRSS") {
            rss.push(bytes as f64);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the sink exited ({status}) before loading every row");
        }
        if Instant::now() >= next_count {
            // Counting is a query of its own: every 500 ms, not to load the engine being measured.
            next_count = Instant::now() + Duration::from_millis(500);
            let n: u64 = db
                .query("SELECT count() FROM fact_ad_performance")
                .fetch_one()
                .await?;
            if n >= records as u64 {
                break Ok(start.elapsed());
            }
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "the sink did not load {records} rows in 600 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hwm = proc_status_bytes(pid, "VmHWM").unwrap_or_default() as f64;
    child.kill()?;
    child.wait()?;
    let elapsed = measured?;
    ch.clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    let samples = Spread::of(&rss).ok_or_else(|| anyhow::anyhow!("no RSS sample of the sink"))?;
    let run = Run {
        sink: per_second(records as u64, elapsed),
        ceiling,
        rss_median: samples.median,
        rss_max: samples.max,
        hwm,
    };
    println!(
        "  sink {:.0} rows/s ({:.1} s); direct insert ceiling {:.0} rows/s; sink RSS median {:.0} MB, max {:.0} MB over {} samples, VmHWM {:.0} MB",
        run.sink,
        elapsed.as_secs_f64(),
        run.ceiling,
        run.rss_median / MB,
        run.rss_max / MB,
        rss.len(),
        run.hwm / MB
    );
    Ok(run)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink_bin = match args.sink_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("sink"),
    };
    anyhow::ensure!(
        sink_bin.is_file(),
        "no sink binary at {}: build it first (cargo build --release -p mi-sink) or pass --sink-bin",
        sink_bin.display()
    );
    let infra: Settings = mi_common::settings::load(None)?;
    let codec = Codec::new(clients::schema_registry(&infra.schema_registry));
    println!(
        "sink-bench: {} fact rows per run, {} repetitions, sink binary {} (a child process)",
        args.records,
        args.repeat,
        sink_bin.display()
    );
    let mut runs = Vec::new();
    for _ in 0..args.repeat {
        runs.push(once(&infra, &codec, args.records, &sink_bin).await?);
    }
    let spread = |f: fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    if let (Some(s), Some(c)) = (spread(|r| r.sink), spread(|r| r.ceiling)) {
        println!("sink rows/s {s}");
        println!("direct insert (ceiling) rows/s {c}");
        println!(
            "sink / ceiling (medians) {:.0} %",
            100.0 * s.median / c.median.max(1.0)
        );
    }
    for (what, f) in [
        (
            "median of samples",
            (|r: &Run| r.rss_median / MB) as fn(&Run) -> f64,
        ),
        ("max of samples", |r: &Run| r.rss_max / MB),
        ("VmHWM", |r: &Run| r.hwm / MB),
    ] {
        if let Some(x) = spread(f) {
            println!("sink RSS, {what}, MB: {x}");
        }
    }
    Ok(())
}
