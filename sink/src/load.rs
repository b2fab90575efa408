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
//! **Outages.** A batch that cannot be loaded (ClickHouse or the schema registry unreachable) is
//! retried with backoff, and the sink stays a live member of its consumer group however long that
//! takes: it pauses every assigned partition — librdkafka drops what it had prefetched and fetches
//! nothing more, so memory stays bounded — and goes on polling the consumer at least every
//! second. Polls serve rebalances and reset `max.poll.interval.ms`; without them the consumer
//! would leave the group after that interval and every later commit would fail. Once the batch
//! is acknowledged and committed the partitions resume where the sink stopped reading. While a
//! healthy insert runs, the sink reads on into the next buffers, up to `max_rows` each (a full
//! buffer pauses the partitions too).
//!
//! **Rebalances.** Partitions can be revoked at any time, also during an outage. Their buffers,
//! and the batch in flight if it is theirs, are dropped uncommitted: the partition's new owner
//! reads those records again from the last committed offset. Loading them here as well would not
//! change the totals, but committing their offsets could move the new owner's committed position
//! backwards.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mi_common::clients;
use mi_common::settings::Settings;
use mi_schemas::{
    Codec, CodecError, DimAd, DimAdGroup, DimCampaign, FactAdPerformance, FactConversion,
    FactGaSessions, LoadEvent, Record,
};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::rows::Loadable;

/// The longest the consumer goes unpolled, whatever else the loader waits for: polls keep the
/// sink in its group (`max.poll.interval.ms`) and serve rebalances.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Delay before the second attempt at a batch; it doubles per attempt up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Loader tuning (see [`crate::settings::SinkSection`] for where it comes from).
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub group: String,
    pub database: String,
    pub max_rows: usize,
    pub max_wait: Duration,
    /// librdkafka `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// librdkafka `session.timeout.ms`; at most `max_poll_interval`.
    pub session_timeout: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            group: "mi-sink".into(),
            database: "mi".into(),
            max_rows: 50_000,
            max_wait: Duration::from_secs(1),
            // librdkafka's own defaults.
            max_poll_interval: Duration::from_secs(300),
            session_timeout: Duration::from_secs(45),
        }
    }
}

/// Counters of a running loader.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub batches: u64,
    pub rows: u64,
    pub skipped: u64,
    /// Batches dropped unloaded because their partition was revoked.
    pub dropped: u64,
}

/// Why the loader could not start. Once running it outlives outages of its dependencies.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Why one attempt at a batch failed; the batch is attempted again.
#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("avro codec or schema registry: {0}")]
    Codec(#[from] CodecError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("load event: {0}")]
    Event(#[from] KafkaError),
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

type Partition = (String, i32);

struct Buffer {
    first: i64,
    last: i64,
    since: Instant,
    payloads: Vec<Vec<u8>>,
}

/// The consumer's callbacks. librdkafka runs them inside a poll of `recv()`, on the loader's own
/// task — also a poll that returns no record, which is why revocations are signalled rather than
/// left for the loader to find when `recv()` next returns.
#[derive(Default)]
struct SinkContext {
    /// Partitions revoked (or lost) since the loader last looked.
    revoked: Mutex<Vec<Partition>>,
    /// Notified on every revocation (a permit is kept if the loader is not waiting).
    revocation: tokio::sync::Notify,
    /// Set while the loader has consumption paused: partitions assigned meanwhile are paused on
    /// arrival, or they would fill buffers during the outage.
    paused: AtomicBool,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            self.revocation.notify_one();
        }
    }

    /// Brings newly assigned partitions in line with the loader: paused during a pause, resumed
    /// otherwise — librdkafka keeps an application's pause on a partition that was revoked and
    /// comes back, which would leave it paused for good once the loader had resumed the rest.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let result = if self.paused.load(Ordering::SeqCst) {
                consumer.pause(tpl)
            } else {
                // A no-op on partitions that are not paused.
                consumer.resume(tpl)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "pausing or resuming newly assigned partitions");
            }
        }
    }
}

impl SinkContext {
    fn take_revoked(&self) -> Vec<Partition> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

type SinkConsumer = StreamConsumer<SinkContext>;

/// Records read and not yet handed to an insert, per topic partition.
#[derive(Default)]
struct Pending {
    buffers: BTreeMap<Partition, Buffer>,
    /// The offset after the last record read, per partition. A record delivered again (librdkafka
    /// resumes a paused partition after the last record it handed over, so this is defensive) is
    /// not buffered twice: every offset below it is buffered, in flight or loaded.
    next: HashMap<Partition, i64>,
}

impl Pending {
    fn accept(&mut self, m: &BorrowedMessage<'_>) {
        let key = (m.topic().to_owned(), m.partition());
        if self.next.get(&key).is_some_and(|next| m.offset() < *next) {
            return;
        }
        self.next.insert(key.clone(), m.offset() + 1);
        let buffer = self.buffers.entry(key).or_insert_with(|| Buffer {
            first: m.offset(),
            last: m.offset(),
            since: Instant::now(),
            payloads: Vec::new(),
        });
        buffer.last = m.offset();
        if let Some(p) = m.payload() {
            buffer.payloads.push(p.to_vec());
        }
    }

    fn forget(&mut self, revoked: &[Partition]) {
        for key in revoked {
            self.buffers.remove(key);
            self.next.remove(key);
        }
    }

    fn full(&self, config: &LoadConfig) -> bool {
        self.buffers
            .values()
            .any(|b| b.payloads.len() >= config.max_rows)
    }

    fn due(&self, config: &LoadConfig) -> bool {
        self.full(config)
            || self
                .buffers
                .values()
                .any(|b| b.since.elapsed() >= config.max_wait)
    }

    /// How long the next poll may wait: until the oldest buffer is due, and never past
    /// [`POLL_EVERY`].
    fn wait(&self, config: &LoadConfig) -> Duration {
        if self.full(config) {
            return Duration::ZERO;
        }
        let oldest = self.buffers.values().map(|b| b.since).min();
        oldest
            .map_or(config.max_wait, |t| {
                config.max_wait.saturating_sub(t.elapsed())
            })
            .min(POLL_EVERY)
    }
}

/// What a loaded batch adds to the counters.
struct Loaded {
    rows: u64,
    skipped: u64,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Loader<'a> {
    consumer: SinkConsumer,
    ch: clickhouse::Client,
    codec: Codec,
    events: FutureProducer,
    config: &'a LoadConfig,
}

/// Runs the loader until `shutdown`; returns its counters.
pub async fn run(
    settings: &Settings,
    config: &LoadConfig,
    shutdown: CancellationToken,
) -> Result<LoadStats, LoadError> {
    let consumer: SinkConsumer =
        clients::read_committed_consumer_config(&settings.kafka, &config.group)
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval.as_millis().to_string(),
            )
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .create_with_context(SinkContext::default())?;
    consumer.subscribe(&TOPICS)?;
    let loader = Loader {
        consumer,
        ch: clients::clickhouse(&settings.clickhouse).with_database(&config.database),
        codec: Codec::new(clients::schema_registry(&settings.schema_registry)),
        events: clients::idempotent_producer_config(&settings.kafka).create()?,
        config,
    };
    let mut pending = Pending::default();
    let mut stats = LoadStats::default();
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            r = tokio::time::timeout(pending.wait(config), loader.consumer.recv()) => r,
        };
        loader.receive(&mut pending, &mut VecDeque::new(), received);
        if pending.due(config)
            && loader.flush_all(&mut pending, &mut stats, &shutdown).await == Flow::Stop
        {
            break;
        }
    }
    Ok(stats)
}

impl Loader<'_> {
    /// Applies what one poll brought: revocations first (the callbacks ran before the poll
    /// returned its record, if any), then the record. Returns the partitions revoked.
    fn receive(
        &self,
        pending: &mut Pending,
        queue: &mut VecDeque<(Partition, Buffer)>,
        received: Result<KafkaResult<BorrowedMessage<'_>>, tokio::time::error::Elapsed>,
    ) -> Vec<Partition> {
        let revoked = self.forget_revoked(pending, queue);
        match received {
            Ok(Ok(m)) => pending.accept(&m),
            Ok(Err(e)) => tracing::warn!(error = %e, "consuming curated topics"),
            Err(_) => {}
        }
        revoked
    }

    /// Drops the buffers of partitions revoked since the last look, queued ones included;
    /// returns those partitions.
    fn forget_revoked(
        &self,
        pending: &mut Pending,
        queue: &mut VecDeque<(Partition, Buffer)>,
    ) -> Vec<Partition> {
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            tracing::info!(partitions = ?revoked, "partitions revoked; their unloaded records are left to their next owner");
            pending.forget(&revoked);
            queue.retain(|(k, _)| !revoked.contains(k));
        }
        revoked
    }

    /// Loads every buffer, one insert each, committing each after ClickHouse acknowledged it.
    /// Polls the consumer throughout, however long the inserts take.
    async fn flush_all(
        &self,
        pending: &mut Pending,
        stats: &mut LoadStats,
        shutdown: &CancellationToken,
    ) -> Flow {
        let mut queue: VecDeque<(Partition, Buffer)> =
            std::mem::take(&mut pending.buffers).into_iter().collect();
        while let Some((key, buffer)) = queue.pop_front() {
            let token = format!("{}/{}/{}-{}", key.0, key.1, buffer.first, buffer.last);
            let attempt = self.load_with_retry(&key.0, &buffer, &token);
            tokio::pin!(attempt);
            let loaded = loop {
                tokio::select! {
                    biased;
                    // Unloaded and uncommitted: read again on the next start.
                    () = shutdown.cancelled() => return Flow::Stop,
                    // Before the attempt's outcome: a revoked batch is never committed.
                    () = self.consumer.context().revocation.notified() => {
                        if self.forget_revoked(pending, &mut queue).contains(&key) {
                            break None;
                        }
                    }
                    loaded = &mut attempt => break Some(loaded),
                    received = tokio::time::timeout(POLL_EVERY, self.consumer.recv()) => {
                        if self.receive(pending, &mut queue, received).contains(&key) {
                            break None;
                        }
                        if pending.full(self.config) {
                            self.pause();
                        }
                    }
                }
            };
            // Nothing polls between here and the commit, so no revocation can come in between.
            let revoked = self.forget_revoked(pending, &mut queue).contains(&key);
            let Some(loaded) = loaded.filter(|_| !revoked) else {
                tracing::info!(%token, "partition revoked while its batch was loading; batch dropped");
                stats.dropped += 1;
                continue;
            };
            stats.batches += 1;
            stats.rows += loaded.rows;
            stats.skipped += loaded.skipped;
            self.commit(&key, buffer.last + 1, &token);
        }
        if !pending.full(self.config) {
            self.resume();
        }
        Flow::Continue
    }

    fn commit(&self, (topic, partition): &Partition, next: i64, token: &str) {
        let mut tpl = TopicPartitionList::new();
        let committed = tpl
            .add_partition_offset(topic, *partition, Offset::Offset(next))
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Sync));
        if let Err(e) = committed {
            // The batch is in ClickHouse; uncommitted, its records are read again (after a
            // restart, or by the partition's next owner) and deduplicated there.
            tracing::warn!(%token, error = %e, "offsets of a loaded batch not committed");
        }
    }

    /// Stops fetching on every assigned partition (and, through the context, on those assigned
    /// later) until [`Self::resume`].
    fn pause(&self) {
        if self.consumer.context().paused.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.consumer.assignment() {
            Ok(tpl) => match self.consumer.pause(&tpl) {
                Ok(()) => tracing::info!(partitions = tpl.count(), "consumption paused"),
                Err(e) => tracing::warn!(error = %e, "pausing partitions"),
            },
            Err(e) => tracing::warn!(error = %e, "reading the assignment to pause it"),
        }
    }

    fn resume(&self) {
        if !self.consumer.context().paused.swap(false, Ordering::SeqCst) {
            return;
        }
        match self.consumer.assignment() {
            Ok(tpl) => match self.consumer.resume(&tpl) {
                Ok(()) => tracing::info!(partitions = tpl.count(), "consumption resumed"),
                Err(e) => tracing::warn!(error = %e, "resuming partitions"),
            },
            Err(e) => tracing::warn!(error = %e, "reading the assignment to resume it"),
        }
    }

    /// Attempts the batch until it is loaded, pausing consumption after the first failure.
    async fn load_with_retry(&self, topic: &str, buffer: &Buffer, token: &str) -> Loaded {
        let mut delay = RETRY_FIRST;
        loop {
            match self.load_once(topic, buffer, token).await {
                Ok(loaded) => return loaded,
                Err(e) => {
                    tracing::warn!(%token, error = %e, retry_in_ms = delay.as_millis() as u64, "batch not loaded; retrying");
                    self.pause();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One attempt: decode, insert, then one load event per tenant and table (the API
    /// invalidates that tenant's cache from it). A repeated attempt re-inserts under the same
    /// deduplication token, a no-op once an earlier attempt landed.
    async fn load_once(
        &self,
        topic: &str,
        buffer: &Buffer,
        token: &str,
    ) -> Result<Loaded, FlushError> {
        let (per_tenant, loaded) = match topic {
            FactAdPerformance::TOPIC => self.insert::<FactAdPerformance>(buffer, token).await?,
            FactGaSessions::TOPIC => self.insert::<FactGaSessions>(buffer, token).await?,
            FactConversion::TOPIC => self.insert::<FactConversion>(buffer, token).await?,
            DimCampaign::TOPIC => self.insert::<DimCampaign>(buffer, token).await?,
            DimAdGroup::TOPIC => self.insert::<DimAdGroup>(buffer, token).await?,
            DimAd::TOPIC => self.insert::<DimAd>(buffer, token).await?,
            other => {
                // Unreachable while the subscription is TOPICS; never retried forever.
                tracing::error!(%token, topic = other, "the sink does not load this topic; batch skipped");
                return Ok(Loaded {
                    rows: 0,
                    skipped: buffer.payloads.len() as u64,
                });
            }
        };
        for (tenant, (table, rows, min, max)) in per_tenant {
            let event = LoadEvent {
                batch_id: token.to_owned(),
                tenant_id: tenant,
                table: table.to_owned(),
                rows,
                min_date: min,
                max_date: max,
                loaded_at: chrono::Utc::now(),
            };
            let payload = self.codec.encode(&event).await?;
            self.events
                .send(
                    FutureRecord::to(LoadEvent::TOPIC)
                        .key(&event.tenant_id)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
        Ok(loaded)
    }

    /// Decodes a buffer and inserts it as one batch.
    async fn insert<R: Loadable>(
        &self,
        buffer: &Buffer,
        token: &str,
    ) -> Result<(TenantLoads, Loaded), FlushError> {
        let mut records = Vec::with_capacity(buffer.payloads.len());
        let mut skipped = 0;
        for payload in &buffer.payloads {
            match self.codec.decode::<R>(payload).await {
                Ok(r) => records.push(r),
                Err(e) if e.is_retriable() => return Err(e.into()),
                Err(e) => {
                    // Curated topics are written by our processors; a record that does not
                    // decode is a bug upstream, reported loudly and counted, never loaded
                    // half-read.
                    tracing::error!(%token, error = %e, "undecodable curated record skipped");
                    skipped += 1;
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
        let ch = self
            .ch
            .clone()
            .with_setting("insert_deduplication_token", token);
        let mut insert = ch.insert::<R::Row>(R::TABLE).await?;
        for r in &records {
            insert.write(&r.row()).await?;
        }
        insert.end().await?;
        Ok((
            per_tenant,
            Loaded {
                rows: records.len() as u64,
                skipped,
            },
        ))
    }
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
