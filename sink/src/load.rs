//! Loading the curated topics and the extraction runs into ClickHouse: batched, acknowledged,
//! idempotent, audited.
//!
//! Records are buffered per topic partition and flushed when a buffer reaches `max_rows`, when
//! the oldest buffered record is `max_wait` old, or when nothing new arrived for `idle` (the end
//! of a burst is loaded at once instead of waiting out `max_wait`). Up to four buffers of
//! different partitions load at once, so that some are decoded while ClickHouse inserts another;
//! a partition never has more than one batch in flight. Each flushed buffer is one insert, tagged
//! with a deterministic `insert_deduplication_token` (`topic/partition/first-last` offsets);
//! its offsets are committed only after ClickHouse acknowledged it. A sink killed between the
//! insert and the commit re-reads the same records: when the batch comes out identical the token
//! makes the insert a no-op, and otherwise the Replacing engines (newest `extracted_at` /
//! `revision` per key, read with FINAL) absorb the repetition — totals stay exact either way.
//!
//! **Audit.** Each batch also writes `load_batches`: per tenant and table the rows it loaded, their
//! dates and the offsets counted (`source_ranges`). A batch's steps, in this order:
//!
//! 1. the rows, under the batch's token;
//! 2. one load event per tenant and table (not for `extraction_runs`: see [`Loadable::LOAD_EVENTS`]);
//! 3. the audit rows, one insert (one part: all or none) under the same token;
//! 4. the offsets commit.
//!
//! Killed before 3, the batch left no audit: it is read again, re-inserted harmlessly, announced
//! again (load events are at least once; the API and the alerts are idempotent) and audited once.
//! Killed between 3 and 4 (or its partition revoked, or the commit failed), the records are
//! audited but read again — and the new batch need not have the same boundaries (they depend on
//! timing), so its batch id would not collapse with the first under FINAL. Therefore the audit,
//! not the committed offset, says what was counted: the first batch of a partition after an
//! assignment reads the ranges audited at or past its first offset, and records inside them are
//! inserted again (harmless) but neither announced nor audited again. `load_batches` read with
//! FINAL thus counts every loaded record once, whatever the boundaries — also when a group
//! re-reads offsets on purpose. Events precede the audit because audited records are never
//! announced again; after the commit a crash could lose them. One gap remains: an audit insert
//! still in flight when its partition is revoked (the attempt is abandoned, not awaited) could
//! land after the new owner read the audit, and that range would be counted twice.
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
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable};
use futures::stream::{FuturesUnordered, StreamExt};
use mi_common::clients;
use mi_common::settings::Settings;
use mi_schemas::{
    Codec, CodecError, DimAd, DimAdGroup, DimCampaign, ExtractionRun, FactAdPerformance,
    FactConversion, FactGaSessions, LoadEvent, Record,
};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::rows::{LoadBatchRow, Loadable, opt_day};

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
    /// Buffers are also loaded once nothing has arrived for this long: the topics are quiet,
    /// and waiting out `max_wait` would add latency and no rows. Zero: always wait `max_wait`.
    pub idle: Duration,
    /// Bytes of record values buffered over all partitions at most: reaching it loads the
    /// buffers (and pauses consumption until they are loaded), which bounds the sink's memory
    /// whatever the record sizes and the number of partitions.
    pub max_bytes: usize,
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
            // Longer than the gaps between the transactions of a busy processor (~100 ms), so a
            // steady stream still makes full batches.
            idle: Duration::from_millis(200),
            max_bytes: 32 << 20,
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

/// The topics the sink loads: the curated ones, and the extraction runs (into the audit table
/// `extraction_runs`). Each needs an arm in [`Loader::load_once`].
pub const TOPICS: [&str; 7] = [
    FactAdPerformance::TOPIC,
    FactGaSessions::TOPIC,
    FactConversion::TOPIC,
    DimCampaign::TOPIC,
    DimAdGroup::TOPIC,
    DimAd::TOPIC,
    ExtractionRun::TOPIC,
];

/// Batches loaded at once, each of its own partition: ClickHouse works on one while the sink
/// decodes the others (decoding is the sink's CPU; an insert is mostly waiting for the server).
/// In pipeline-bench (the sink alone over a 750,000-row backlog), 4 instead of 2 raised the
/// steady rate from 139k to 158k rows/s.
const LOADS_AT_ONCE: usize = 4;

/// Stops the loads of revoked partitions: their batches are dropped uncommitted.
fn abandon(
    revoked: &[Partition],
    loading: &mut HashMap<Partition, AbortHandle>,
    stats: &mut LoadStats,
) {
    for key in revoked {
        if let Some(abort) = loading.remove(key) {
            abort.abort();
            tracing::info!(
                topic = key.0,
                partition = key.1,
                "partition revoked while its batch was loading; batch dropped"
            );
            stats.dropped += 1;
        }
    }
}

/// The audit table, one row per batch, tenant and table.
const LOAD_BATCHES: &str = "load_batches";

type Partition = (String, i32);

struct Buffer {
    first: i64,
    last: i64,
    since: Instant,
    /// Bytes of the buffered values.
    bytes: usize,
    /// Every message read, in offset order, with its payload (`None` when it had none): the
    /// audit records which offsets it counted.
    messages: Vec<(i64, Option<Vec<u8>>)>,
}

impl Buffer {
    /// The batch id: deduplication token of its inserts, `batch_id` of its audit rows and events.
    fn token(&self, (topic, partition): &Partition) -> String {
        format!("{topic}/{partition}/{}-{}", self.first, self.last)
    }
}

/// Offset ranges of one partition that `load_batches` already counts, merged: first → last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Audited(BTreeMap<i64, i64>);

impl Audited {
    fn add(&mut self, mut first: i64, mut last: i64) {
        // Ranges are disjoint, so those overlapping [first, last] are the ones starting at or
        // before `last`, walked down while they still reach `first`.
        let overlapping: Vec<(i64, i64)> = self
            .0
            .range(..=last)
            .rev()
            .take_while(|(_, l)| **l >= first)
            .map(|(f, l)| (*f, *l))
            .collect();
        for (f, l) in overlapping {
            self.0.remove(&f);
            first = first.min(f);
            last = last.max(l);
        }
        self.0.insert(first, last);
    }

    fn covers(&self, offset: i64) -> bool {
        self.0
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, last)| *last >= offset)
    }

    /// Forgets the ranges that end at or before `offset`: the partition is read past them.
    fn forget_through(&mut self, offset: i64) {
        self.0.retain(|_, last| *last > offset);
    }

    /// The runs of `offsets` (ascending) that no range covers, as (first, last).
    fn fresh_runs(&self, offsets: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        let mut open = false;
        for offset in offsets {
            if self.covers(offset) {
                open = false;
            } else if let (true, Some(run)) = (open, runs.last_mut()) {
                run.1 = offset;
            } else {
                runs.push((offset, offset));
                open = true;
            }
        }
        runs
    }
}

/// A `source_ranges` value: `partition:first-last`, comma separated.
fn source_ranges(partition: i32, runs: &[(i64, i64)]) -> String {
    let mut out = String::new();
    for (i, (first, last)) in runs.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}{partition}:{first}-{last}");
    }
    out
}

/// The ranges of `partition` in a `source_ranges` value; malformed parts are ignored (the audit
/// is ours, so there are none).
fn parse_source_ranges(value: &str, partition: i32) -> impl Iterator<Item = (i64, i64)> + '_ {
    value.split(',').filter_map(move |part| {
        let (p, range) = part.trim().split_once(':')?;
        let (first, last) = range.split_once('-')?;
        (p.parse::<i32>().ok()? == partition).then_some(())?;
        Some((first.parse().ok()?, last.parse().ok()?))
    })
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
        if let Rebalance::Assign(tpl) = rebalance
            && let Err(e) = clients::set_paused(consumer, tpl, self.paused.load(Ordering::SeqCst))
        {
            tracing::warn!(error = %e, "pausing or resuming newly assigned partitions");
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
    /// Per partition, the audited ranges not yet read past; absent until the partition's first
    /// batch since its assignment looked them up.
    audited: HashMap<Partition, Audited>,
    /// When the last record was buffered.
    last_arrival: Option<Instant>,
}

impl Pending {
    fn accept(&mut self, m: &BorrowedMessage<'_>) {
        let key = (m.topic().to_owned(), m.partition());
        if self.next.get(&key).is_some_and(|next| m.offset() < *next) {
            return;
        }
        self.next.insert(key.clone(), m.offset() + 1);
        self.last_arrival = Some(Instant::now());
        let buffer = self.buffers.entry(key).or_insert_with(|| Buffer {
            first: m.offset(),
            last: m.offset(),
            since: Instant::now(),
            bytes: 0,
            messages: Vec::new(),
        });
        buffer.bytes += m.payload().map_or(0, <[u8]>::len);
        buffer.last = m.offset();
        buffer
            .messages
            .push((m.offset(), m.payload().map(<[u8]>::to_vec)));
    }

    fn forget(&mut self, revoked: &[Partition]) {
        for key in revoked {
            self.buffers.remove(key);
            self.next.remove(key);
            // Its next owner may audit more of it before it comes back.
            self.audited.remove(key);
        }
    }

    fn full(&self, config: &LoadConfig) -> bool {
        self.buffers
            .values()
            .any(|b| b.messages.len() >= config.max_rows)
            || self.buffers.values().map(|b| b.bytes).sum::<usize>() >= config.max_bytes
    }

    fn due(&self, config: &LoadConfig) -> bool {
        !self.buffers.is_empty() && self.wait(config).is_zero()
    }

    /// How long the next poll may wait: until the buffers are due — one full, the oldest
    /// `max_wait` old, or nothing new for `idle` — and never past [`POLL_EVERY`].
    fn wait(&self, config: &LoadConfig) -> Duration {
        if self.full(config) {
            return Duration::ZERO;
        }
        let Some(oldest) = self.buffers.values().map(|b| b.since).min() else {
            return config.max_wait.min(POLL_EVERY);
        };
        let mut wait = config.max_wait.saturating_sub(oldest.elapsed());
        if let (false, Some(last)) = (config.idle.is_zero(), self.last_arrival) {
            wait = wait.min(config.idle.saturating_sub(last.elapsed()));
        }
        wait.min(POLL_EVERY)
    }
}

/// What a loaded batch adds to the counters.
#[derive(Default)]
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
    /// Up to [`LOADS_AT_ONCE`] batches (of different partitions) are loaded at once. Polls the
    /// consumer throughout, however long the inserts take.
    async fn flush_all(
        &self,
        pending: &mut Pending,
        stats: &mut LoadStats,
        shutdown: &CancellationToken,
    ) -> Flow {
        let mut queue: VecDeque<(Partition, Buffer)> =
            std::mem::take(&mut pending.buffers).into_iter().collect();
        let mut running = FuturesUnordered::new();
        let mut loading: HashMap<Partition, AbortHandle> = HashMap::new();
        loop {
            while running.len() < LOADS_AT_ONCE
                && let Some((key, buffer)) = queue.pop_front()
            {
                let known = pending.audited.get(&key).cloned();
                let (abort, registration) = AbortHandle::new_pair();
                loading.insert(key.clone(), abort);
                running.push(Abortable::new(
                    async move {
                        let token = buffer.token(&key);
                        let outcome = self.load_with_retry(&key, &buffer, &token, known).await;
                        (key, buffer, token, outcome)
                    },
                    registration,
                ));
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                // Unloaded and uncommitted: read again on the next start.
                () = shutdown.cancelled() => return Flow::Stop,
                // Before the attempts' outcomes: a revoked batch is never committed.
                () = self.consumer.context().revocation.notified() => {
                    let revoked = self.forget_revoked(pending, &mut queue);
                    abandon(&revoked, &mut loading, stats);
                }
                Some(done) = running.next() => {
                    // An abandoned batch, already counted as dropped.
                    let Ok((key, buffer, token, (loaded, mut audited))) = done else { continue };
                    loading.remove(&key);
                    // Nothing polls between here and the commit, so no revocation can come in
                    // between.
                    let revoked = self.forget_revoked(pending, &mut queue);
                    abandon(&revoked, &mut loading, stats);
                    if revoked.contains(&key) {
                        tracing::info!(%token, "partition revoked while its batch was loading; batch dropped");
                        stats.dropped += 1;
                        continue;
                    }
                    stats.batches += 1;
                    stats.rows += loaded.rows;
                    stats.skipped += loaded.skipped;
                    audited.forget_through(buffer.last);
                    pending.audited.insert(key.clone(), audited);
                    self.commit(&key, buffer.last + 1, &token);
                }
                received = tokio::time::timeout(POLL_EVERY, self.consumer.recv()) => {
                    let revoked = self.receive(pending, &mut queue, received);
                    abandon(&revoked, &mut loading, stats);
                    if pending.full(self.config) {
                        self.pause();
                    }
                }
            }
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
    /// Looks up the partition's audited ranges first unless `known`; returns them with the
    /// outcome.
    async fn load_with_retry(
        &self,
        key: &Partition,
        buffer: &Buffer,
        token: &str,
        mut known: Option<Audited>,
    ) -> (Loaded, Audited) {
        let mut delay = RETRY_FIRST;
        loop {
            let attempt = async {
                let audited = match known.take() {
                    Some(audited) => audited,
                    None => self.audited(key, buffer.first).await?,
                };
                match self.load_once(key, buffer, token, &audited).await {
                    Ok(loaded) => Ok((loaded, audited)),
                    Err(e) => {
                        known = Some(audited);
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok(done) => return done,
                Err(e) => {
                    tracing::warn!(%token, error = %e, retry_in_ms = delay.as_millis() as u64, "batch not loaded; retrying");
                    self.pause();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// The ranges of a partition that `load_batches` counts at or past offset `from`: records
    /// audited by a batch whose offsets were never committed. Normally there are none. One scan
    /// of the audit per partition and assignment (its sort key starts with the tenant).
    async fn audited(
        &self,
        (topic, partition): &Partition,
        from: i64,
    ) -> Result<Audited, clickhouse::error::Error> {
        // A batch reads one partition, so a value's last range ends at its highest offset.
        let values: Vec<String> = self
            .ch
            .query(&format!(
                "SELECT DISTINCT source_ranges FROM {LOAD_BATCHES} \
                 WHERE source_topic = ? AND startsWith(source_ranges, ?) \
                 AND toInt64OrZero(splitByChar('-', source_ranges)[-1]) >= ?"
            ))
            .bind(topic.as_str())
            .bind(format!("{partition}:"))
            .bind(from)
            .fetch_all()
            .await?;
        let mut audited = Audited::default();
        for value in &values {
            for (first, last) in parse_source_ranges(value, *partition) {
                if last >= from {
                    audited.add(first, last);
                }
            }
        }
        if !audited.0.is_empty() {
            tracing::info!(topic, partition, ranges = ?audited.0, "records audited but not committed: loaded again, not counted again");
        }
        Ok(audited)
    }

    /// One attempt at the batch. A repeated attempt re-inserts under the same deduplication
    /// token, a no-op once an earlier attempt landed.
    async fn load_once(
        &self,
        key: &Partition,
        buffer: &Buffer,
        token: &str,
        audited: &Audited,
    ) -> Result<Loaded, FlushError> {
        let batch = Batch {
            key,
            buffer,
            token,
            audited,
        };
        match key.0.as_str() {
            FactAdPerformance::TOPIC => self.load::<FactAdPerformance>(&batch).await,
            FactGaSessions::TOPIC => self.load::<FactGaSessions>(&batch).await,
            FactConversion::TOPIC => self.load::<FactConversion>(&batch).await,
            DimCampaign::TOPIC => self.load::<DimCampaign>(&batch).await,
            DimAdGroup::TOPIC => self.load::<DimAdGroup>(&batch).await,
            DimAd::TOPIC => self.load::<DimAd>(&batch).await,
            ExtractionRun::TOPIC => self.load::<ExtractionRun>(&batch).await,
            other => {
                // Unreachable while the subscription is TOPICS; never retried forever.
                tracing::error!(%token, topic = other, "the sink does not load this topic; batch skipped");
                Ok(Loaded {
                    rows: 0,
                    skipped: buffer.messages.iter().filter(|m| m.1.is_some()).count() as u64,
                })
            }
        }
    }

    /// Decodes a buffer, inserts it as one batch, then announces and audits the records not
    /// audited yet (see the module documentation for the order).
    async fn load<R: Loadable>(&self, batch: &Batch<'_>) -> Result<Loaded, FlushError> {
        let Batch {
            key,
            buffer,
            token,
            audited,
        } = *batch;
        // Records are decoded straight into the insert, which streams them to ClickHouse as
        // it goes: the batch is never held decoded, and decoding overlaps the transfer. Only
        // what the load events and the audit need is kept.
        let ch = self
            .ch
            .clone()
            .with_setting("insert_deduplication_token", token);
        let mut insert = None;
        let mut tallies = Tallies::default();
        let mut loaded = Loaded::default();
        for (offset, payload) in &buffer.messages {
            let Some(payload) = payload else { continue };
            let record = match self.codec.decode::<R>(payload).await {
                Ok(r) => r,
                // Dropped unfinished, the insert is aborted: nothing of it lands.
                Err(e) if e.is_retriable() => return Err(e.into()),
                Err(e) => {
                    // Our topics are written by our own services; a record that does not
                    // decode is a bug upstream, reported loudly and counted, never loaded
                    // half-read.
                    tracing::error!(%token, offset, error = %e, "undecodable record skipped");
                    loaded.skipped += 1;
                    continue;
                }
            };
            let insert = match &mut insert {
                Some(insert) => insert,
                None => insert.insert(ch.insert::<R::Row>(R::TABLE).await?),
            };
            insert.write(&record.row()).await?;
            loaded.rows += 1;
            if !audited.covers(*offset) {
                tallies.add(&record);
            }
        }
        let Some(insert) = insert else {
            return Ok(loaded);
        };
        insert.end().await?;

        let tallies = tallies.0;
        if tallies.is_empty() {
            return Ok(loaded);
        }
        let loaded_at = chrono::Utc::now();
        if R::LOAD_EVENTS {
            // The API invalidates the tenant's cache from it, the alerts evaluate the dates.
            let mut events = Vec::with_capacity(tallies.len());
            for (tenant, t) in &tallies {
                let event = LoadEvent {
                    batch_id: token.to_owned(),
                    tenant_id: tenant.clone(),
                    table: R::TABLE.to_owned(),
                    rows: i64::try_from(t.rows).unwrap_or(i64::MAX),
                    min_date: t.min,
                    max_date: t.max,
                    loaded_at,
                };
                events.push((tenant, self.codec.encode(&event).await?));
            }
            // Sent together: one round trip to the broker, not one per tenant.
            futures::future::try_join_all(events.iter().map(|(tenant, payload)| {
                self.events.send(
                    FutureRecord::to(LoadEvent::TOPIC)
                        .key(tenant.as_str())
                        .payload(payload),
                    Duration::from_secs(30),
                )
            }))
            .await
            .map_err(|(e, _)| e)?;
        }
        let ranges = source_ranges(
            key.1,
            &audited.fresh_runs(buffer.messages.iter().map(|(offset, _)| *offset)),
        );
        let mut insert = ch.insert::<LoadBatchRow>(LOAD_BATCHES).await?;
        for (tenant, t) in tallies {
            insert
                .write(&LoadBatchRow {
                    batch_id: token.to_owned(),
                    tenant_id: tenant,
                    table: R::TABLE.to_owned(),
                    rows: t.rows,
                    min_date: opt_day(t.min),
                    max_date: opt_day(t.max),
                    source_topic: key.0.clone(),
                    source_ranges: ranges.clone(),
                    loaded_at: loaded_at.timestamp_millis(),
                })
                .await?;
        }
        insert.end().await?;
        Ok(loaded)
    }
}

/// A batch being loaded: its partition, records, id and what of its partition is audited.
#[derive(Clone, Copy)]
struct Batch<'a> {
    key: &'a Partition,
    buffer: &'a Buffer,
    token: &'a str,
    audited: &'a Audited,
}

/// What a batch loaded for one tenant.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    rows: u64,
    min: Option<chrono::NaiveDate>,
    max: Option<chrono::NaiveDate>,
}

/// What a batch loads per tenant, for its load events and audit rows.
#[derive(Default)]
struct Tallies(BTreeMap<String, Tally>);

impl Tallies {
    fn add<R: Loadable>(&mut self, r: &R) {
        let t = match self.0.get_mut(r.tenant_id()) {
            Some(t) => t,
            None => self.0.entry(r.tenant_id().to_owned()).or_default(),
        };
        t.rows += 1;
        if let Some(d) = r.date() {
            t.min = Some(t.min.map_or(d, |m| m.min(d)));
            t.max = Some(t.max.map_or(d, |m| m.max(d)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audited(ranges: &[(i64, i64)]) -> Audited {
        let mut a = Audited::default();
        for (first, last) in ranges {
            a.add(*first, *last);
        }
        a
    }

    #[test]
    fn audited_ranges_merge_when_they_overlap() {
        let a = audited(&[(100, 199), (300, 399), (150, 320), (500, 500)]);
        assert_eq!(a.0, BTreeMap::from([(100, 399), (500, 500)]));
        assert!(a.covers(100) && a.covers(250) && a.covers(399) && a.covers(500));
        assert!(!a.covers(99) && !a.covers(400) && !a.covers(501));
    }

    #[test]
    fn only_records_outside_the_audited_ranges_are_counted_again() {
        // A batch re-read after a crash with other boundaries: offsets 180–260 (with a gap, as
        // transaction markers leave) against an audited 100–199 and 230–239.
        let a = audited(&[(100, 199), (230, 239)]);
        let offsets = (180..=229).chain(232..=260);
        assert_eq!(a.fresh_runs(offsets), vec![(200, 229), (240, 260)]);
        assert_eq!(a.fresh_runs(150..=199), vec![]);
        assert_eq!(Audited::default().fresh_runs(7..=9), vec![(7, 9)]);
        let mut a = a;
        a.forget_through(235);
        assert_eq!(a.0, BTreeMap::from([(230, 239)]));
        a.forget_through(239);
        assert!(a.0.is_empty());
    }

    #[test]
    fn source_ranges_round_trip_per_partition() {
        let value = source_ranges(3, &[(200, 229), (240, 260)]);
        assert_eq!(value, "3:200-229,3:240-260");
        assert_eq!(
            parse_source_ranges(&value, 3).collect::<Vec<_>>(),
            vec![(200, 229), (240, 260)]
        );
        assert_eq!(parse_source_ranges(&value, 13).count(), 0);
        assert_eq!(
            parse_source_ranges("3:x-1,junk,3:5-6", 3).collect::<Vec<_>>(),
            vec![(5, 6)]
        );
    }

    /// Buffers of one partition whose first record arrived `age` ago and last `quiet` ago.
    fn pending(age: Duration, quiet: Duration, rows: usize) -> Pending {
        let now = Instant::now();
        let mut pending = Pending {
            last_arrival: Some(now - quiet),
            ..Pending::default()
        };
        pending.buffers.insert(
            ("t".into(), 0),
            Buffer {
                first: 0,
                last: rows as i64 - 1,
                since: now - age,
                bytes: rows * 100,
                messages: (0..rows as i64).map(|o| (o, None)).collect(),
            },
        );
        pending
    }

    #[test]
    fn a_batch_is_due_when_full_old_or_after_a_quiet_spell() {
        let config = LoadConfig {
            max_rows: 10,
            max_wait: Duration::from_secs(1),
            idle: Duration::from_millis(200),
            ..LoadConfig::default()
        };
        let ms = Duration::from_millis;
        // Records still arriving, young, not full: wait for the quiet spell first.
        let busy = pending(ms(300), ms(10), 3);
        assert!(!busy.due(&config));
        let wait = busy.wait(&config);
        assert!(wait > ms(150) && wait <= ms(190), "{wait:?}");
        // Quiet for longer than `idle`: due although young and small.
        assert!(pending(ms(300), ms(250), 3).due(&config));
        // Full, or older than `max_wait`, however busy.
        assert!(pending(ms(1), ms(0), 10).due(&config));
        assert!(pending(ms(1_100), ms(0), 3).due(&config));
        // Over the memory bound in bytes, however few rows.
        let small = LoadConfig {
            max_bytes: 300,
            ..config.clone()
        };
        assert!(pending(ms(1), ms(0), 3).due(&small));
        assert!(!pending(ms(1), ms(0), 2).due(&small));
        // Without the idle rule only size and age count.
        let no_idle = LoadConfig {
            idle: Duration::ZERO,
            ..config.clone()
        };
        assert!(!pending(ms(300), ms(250), 3).due(&no_idle));
        // Nothing buffered is never due, whatever the clock.
        let empty = Pending {
            last_arrival: Some(Instant::now() - ms(5_000)),
            ..Pending::default()
        };
        assert!(!empty.due(&config));
    }

    #[test]
    fn the_sink_consumes_the_runs_and_every_topic_once() {
        assert!(TOPICS.contains(&ExtractionRun::TOPIC));
        let mut topics = TOPICS.to_vec();
        topics.sort_unstable();
        topics.dedup();
        assert_eq!(topics.len(), TOPICS.len());
    }
}
