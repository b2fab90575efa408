//! Loading the curated topics into ClickHouse: batched, acknowledged, idempotent.
//!
//! Records are buffered per topic partition and flushed when a buffer reaches `max_rows` or the
//! oldest buffered record is `max_wait` old. Each flushed buffer is one insert, tagged with a
//! deterministic `insert_deduplication_token` (`topic/partition/first-last` offsets); its offsets
//! are committed only after ClickHouse acknowledged it. A sink killed between the insert and the
//! commit re-reads the same records: when the batch comes out identical the token makes the
//! insert a no-op, and otherwise the Replacing engines (newest `extracted_at` / `revision` per key,
//! read with FINAL) absorb the repetition — totals stay exact either way.
//!
//! While ClickHouse is unreachable the insert is retried with backoff and nothing more is
//! consumed (the buffers are full), which is the back-pressure: memory stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mi_common::clients;
use mi_common::settings::Settings;
use mi_schemas::{
    Codec, DimAd, DimAdGroup, DimCampaign, FactAdPerformance, FactConversion, FactGaSessions,
    LoadEvent, Record,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::rows::Loadable;

/// Loader tuning.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub group: String,
    pub database: String,
    pub max_rows: usize,
    pub max_wait: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            group: "mi-sink".into(),
            database: "mi".into(),
            max_rows: 50_000,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Counters of a running loader.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub batches: u64,
    pub rows: u64,
    pub skipped: u64,
}

/// The curated topics the sink loads.
pub const TOPICS: [&str; 6] = [
    FactAdPerformance::TOPIC,
    FactGaSessions::TOPIC,
    FactConversion::TOPIC,
    DimCampaign::TOPIC,
    DimAdGroup::TOPIC,
    DimAd::TOPIC,
];

struct Buffer {
    first: i64,
    last: i64,
    since: Instant,
    payloads: Vec<Vec<u8>>,
}

/// Runs the loader until `shutdown`; returns its counters.
pub async fn run(
    settings: &Settings,
    config: &LoadConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<LoadStats> {
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &settings.schema_registry,
    )));
    let ch = clients::clickhouse(&settings.clickhouse).with_database(&config.database);
    let consumer: StreamConsumer =
        clients::read_committed_consumer_config(&settings.kafka, &config.group).create()?;
    consumer.subscribe(&TOPICS)?;
    let events: FutureProducer = clients::idempotent_producer_config(&settings.kafka).create()?;
    let mut buffers: BTreeMap<(String, i32), Buffer> = BTreeMap::new();
    let mut stats = LoadStats::default();
    loop {
        let oldest = buffers.values().map(|b| b.since).min();
        let wait = oldest.map_or(config.max_wait, |t| {
            config.max_wait.saturating_sub(t.elapsed())
        });
        tokio::select! {
            () = shutdown.cancelled() => break,
            m = tokio::time::timeout(wait, consumer.recv()) => match m {
                Ok(Ok(m)) => {
                    let buffer = buffers.entry((m.topic().to_owned(), m.partition())).or_insert_with(|| Buffer {
                        first: m.offset(), last: m.offset(), since: Instant::now(), payloads: Vec::new(),
                    });
                    buffer.last = m.offset();
                    if let Some(p) = m.payload() {
                        buffer.payloads.push(p.to_vec());
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "consuming curated topics"),
                Err(_) => {}
            }
        }
        let due = buffers
            .values()
            .any(|b| b.payloads.len() >= config.max_rows || b.since.elapsed() >= config.max_wait);
        if due {
            for ((topic, partition), buffer) in std::mem::take(&mut buffers) {
                flush(&ch, &codec, &events, &topic, partition, &buffer, &mut stats).await?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, partition, Offset::Offset(buffer.last + 1))?;
                consumer.commit(&tpl, CommitMode::Sync)?;
            }
        }
    }
    Ok(stats)
}

async fn flush(
    ch: &clickhouse::Client,
    codec: &Codec,
    events: &FutureProducer,
    topic: &str,
    partition: i32,
    buffer: &Buffer,
    stats: &mut LoadStats,
) -> anyhow::Result<()> {
    let token = format!("{topic}/{partition}/{}-{}", buffer.first, buffer.last);
    let per_tenant = match topic {
        FactAdPerformance::TOPIC => {
            load::<FactAdPerformance>(ch, codec, buffer, &token, stats).await?
        }
        FactGaSessions::TOPIC => load::<FactGaSessions>(ch, codec, buffer, &token, stats).await?,
        FactConversion::TOPIC => load::<FactConversion>(ch, codec, buffer, &token, stats).await?,
        DimCampaign::TOPIC => load::<DimCampaign>(ch, codec, buffer, &token, stats).await?,
        DimAdGroup::TOPIC => load::<DimAdGroup>(ch, codec, buffer, &token, stats).await?,
        DimAd::TOPIC => load::<DimAd>(ch, codec, buffer, &token, stats).await?,
        other => anyhow::bail!("the sink does not load {other}"),
    };
    // One load event per tenant and table: the API invalidates that tenant's cache from it.
    for (tenant, (table, rows, min, max)) in per_tenant {
        let event = LoadEvent {
            batch_id: token.clone(),
            tenant_id: tenant,
            table: table.to_owned(),
            rows,
            min_date: min,
            max_date: max,
            loaded_at: chrono::Utc::now(),
        };
        let payload = codec.encode(&event).await?;
        events
            .send(
                FutureRecord::to(LoadEvent::TOPIC)
                    .key(&event.tenant_id)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    stats.batches += 1;
    Ok(())
}

type TenantLoads = HashMap<
    String,
    (
        &'static str,
        i64,
        Option<chrono::NaiveDate>,
        Option<chrono::NaiveDate>,
    ),
>;

/// Decodes a buffer and inserts it, retrying while ClickHouse is unreachable.
async fn load<R: Loadable>(
    ch: &clickhouse::Client,
    codec: &Codec,
    buffer: &Buffer,
    token: &str,
    stats: &mut LoadStats,
) -> anyhow::Result<TenantLoads> {
    let mut records = Vec::with_capacity(buffer.payloads.len());
    for payload in &buffer.payloads {
        match codec.decode::<R>(payload).await {
            Ok(r) => records.push(r),
            Err(e) if e.is_retriable() => return Err(e.into()),
            Err(e) => {
                // Curated topics are written by our processors; a record that does not decode
                // is a bug upstream, reported loudly and counted, never loaded half-read.
                tracing::error!(%token, error = %e, "undecodable curated record skipped");
                stats.skipped += 1;
            }
        }
    }
    let mut per_tenant: TenantLoads = HashMap::new();
    for r in &records {
        let e = per_tenant
            .entry(r.tenant_id().to_owned())
            .or_insert((R::TABLE, 0, None, None));
        e.1 += 1;
        if let Some(d) = r.date() {
            e.2 = Some(e.2.map_or(d, |m| m.min(d)));
            e.3 = Some(e.3.map_or(d, |m| m.max(d)));
        }
    }
    let mut delay = Duration::from_millis(200);
    loop {
        match insert::<R>(ch, &records, token).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(table = R::TABLE, %token, error = %e, retry_in_ms = delay.as_millis() as u64, "insert failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    stats.rows += records.len() as u64;
    Ok(per_tenant)
}

async fn insert<R: Loadable>(
    ch: &clickhouse::Client,
    records: &[R],
    token: &str,
) -> Result<(), clickhouse::error::Error> {
    let ch = ch.clone().with_setting("insert_deduplication_token", token);
    let mut insert = ch.insert::<R::Row>(R::TABLE).await?;
    for r in records {
        insert.write(&r.row()).await?;
    }
    insert.end().await
}
