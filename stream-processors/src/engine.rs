//! The exactly-once consume → transform → produce loop every processor runs on.
//!
//! A batch of input records is read (`read_committed`), each record is handed to the
//! [`Processor`], and everything it produces — curated records, dead letters, state changelog
//! entries — is published in one Kafka transaction together with the consumed offsets. Either
//! the whole batch takes effect or none of it does, so a crash (or `kill -9`) at any point
//! replays the batch from the last committed offsets against the last committed state, and
//! nothing is lost or duplicated downstream.
//!
//! The commit is mostly waiting (for the broker to acknowledge the batch's records, then for
//! the coordinator), so it runs on a blocking thread while the next batch is read and
//! transformed; that batch's transaction begins only after the commit succeeded. Work done
//! ahead of a commit that then fails is dropped with the session.
//!
//! Any failure of the transaction itself (a fenced producer, a broker gone, a rebalance that
//! revoked our partitions mid-batch) tears the session down — consumer, producer, in-memory state
//! — and starts a new one that restores state from the changelog: simpler than unpicking a
//! half-applied batch, and correct by construction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use mi_common::clients::{self, blocking};
use mi_common::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// One input record, decoupled from the consumer's buffers.
#[derive(Debug, Clone)]
pub struct Input {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl Input {
    fn of(m: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        }
    }
}

/// One record to publish in the batch's transaction.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: &'static str,
    /// Explicit partition (state changelogs are co-partitioned with their input), or `None` to
    /// partition by key.
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Why a batch could not be processed. Per-record problems are not errors: they become dead
/// letters. An error here means the session must restart (and will replay the batch).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Processor(String),
}

/// What a processor implements: what to read, how to restore its state, how to transform.
#[allow(async_fn_in_trait)] // used with concrete types only, on the engine's own task
pub trait Processor {
    /// A short stable name: consumer group `<prefix>-<name>`, transactional id, logs.
    fn name(&self) -> &'static str;
    /// Topics to consume.
    fn inputs(&self) -> Vec<&'static str>;
    /// Drops all state and rebuilds it for the assigned input partitions (from changelogs).
    async fn restore(
        &mut self,
        kafka: &KafkaSettings,
        assigned: &[(String, i32)],
    ) -> Result<(), EngineError>;
    /// Transforms one record, appending what to publish to `out`.
    async fn process(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), EngineError>;
}

/// Counts of a running engine, for logs and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub batches: u64,
    pub inputs: u64,
    pub outputs: u64,
    pub sessions: u64,
}

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub group_prefix: String,
    /// Stable per instance slot: a restarted instance fences its predecessor.
    pub instance: String,
    pub max_batch: usize,
    pub max_batch_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            group_prefix: "mi-processors".into(),
            instance: "0".into(),
            max_batch: 20_000,
            max_batch_wait: Duration::from_millis(100),
        }
    }
}

/// Notices rebalances so the engine restores state before the next batch.
struct RebalanceFlag(Arc<AtomicBool>);

impl ClientContext for RebalanceFlag {}

impl ConsumerContext for RebalanceFlag {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `processor` until `shutdown`, restarting sessions after failures.
pub async fn run<P: Processor>(
    processor: &mut P,
    kafka: &KafkaSettings,
    config: &EngineConfig,
    shutdown: CancellationToken,
) -> Stats {
    let mut stats = Stats::default();
    while !shutdown.is_cancelled() {
        stats.sessions += 1;
        match session(processor, kafka, config, &shutdown, &mut stats).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(processor = processor.name(), error = %e, "session failed; restarting from the last committed state");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    stats
}

async fn session<P: Processor>(
    processor: &mut P,
    kafka: &KafkaSettings,
    config: &EngineConfig,
    shutdown: &CancellationToken,
    stats: &mut Stats,
) -> Result<(), EngineError> {
    let name = processor.name();
    let group = format!("{}-{name}", config.group_prefix);
    let rebalanced = Arc::new(AtomicBool::new(false));
    let consumer: StreamConsumer<RebalanceFlag> =
        clients::read_committed_consumer_config(kafka, &group)
            // Eager assignment: a rebalance hands over whole partitions, and we restore per partition.
            .set("partition.assignment.strategy", "range,roundrobin")
            .create_with_context(RebalanceFlag(rebalanced.clone()))?;
    consumer.subscribe(&processor.inputs())?;

    let txid = format!("{}-{name}-{}", config.group_prefix, config.instance);
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::transactional_producer_config(kafka, &txid)
            .set("linger.ms", "10")
            .set("batch.size", "1000000")
            .create()?;
    blocking(|| producer.init_transactions(TXN_TIMEOUT))?;
    tracing::info!(processor = name, %group, %txid, "session started");

    let mut commit = PendingCommit::default();
    let mut out = Vec::new();
    loop {
        let started = std::time::Instant::now();
        let batch = match next_batch(&consumer, config, shutdown).await {
            Ok(Some(batch)) => batch,
            // Shutting down: the batch being committed still counts.
            Ok(None) => return commit.settle(stats).await,
            Err(e) => {
                let _ = commit.settle(stats).await;
                return Err(e);
            }
        };

        if rebalanced.swap(false, Ordering::SeqCst) {
            // State is rebuilt from the changelog, which must hold the last batch first.
            commit.settle(stats).await?;
            let assigned: Vec<(String, i32)> = consumer
                .assignment()?
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            tracing::info!(
                processor = name,
                partitions = assigned.len(),
                "assignment changed; restoring state"
            );
            processor.restore(kafka, &assigned).await?;
        }

        // Transform while the previous batch commits: its outcome is awaited only before this
        // batch's transaction begins. If it fails, the session restarts and state is restored
        // from the changelog, so what was computed ahead of it is simply dropped.
        out.clear();
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for input in &batch {
            if let Err(e) = processor.process(input, &mut out).await {
                let _ = commit.settle(stats).await;
                return Err(e);
            }
            offsets.insert((input.topic.clone(), input.partition), input.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let group_meta = consumer
            .group_metadata()
            .ok_or_else(|| EngineError::Processor("consumer has no group metadata".into()))?;

        let transformed = started.elapsed();
        commit.settle(stats).await?;
        let settled = started.elapsed();
        producer.begin_transaction()?;
        for o in &out {
            if let Err(e) = send(&producer, o).await {
                let _ = blocking(|| producer.abort_transaction(TXN_TIMEOUT));
                return Err(e.into());
            }
        }
        tracing::debug!(
            processor = name,
            records = batch.len(),
            read_and_transform_ms = transformed.as_millis() as u64,
            previous_commit_wait_ms = (settled - transformed).as_millis() as u64,
            send_ms = (started.elapsed() - settled).as_millis() as u64,
            "batch"
        );
        let committing = producer.clone();
        commit = PendingCommit(Some((
            tokio::task::spawn_blocking(move || -> KafkaResult<()> {
                let committed = committing
                    .send_offsets_to_transaction(&tpl, &group_meta, TXN_TIMEOUT)
                    .and_then(|()| clients::commit_transaction(&committing, TXN_TIMEOUT));
                if committed.is_err() {
                    let _ = committing.abort_transaction(TXN_TIMEOUT);
                }
                committed
            }),
            batch.len() as u64,
            out.len() as u64,
        )));
    }
}

/// Reads the next batch: waits for its first record (or shutdown: `None`), then takes what
/// arrives within `max_batch_wait`, up to `max_batch` records. One message stream and one
/// deadline serve the whole batch (`recv()` would register and drop a waker slot per record).
async fn next_batch(
    consumer: &StreamConsumer<RebalanceFlag>,
    config: &EngineConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<Input>>, EngineError> {
    let mut messages = consumer.stream();
    let first = loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            m = messages.next() => m,
        };
        match first {
            Some(Ok(m)) => break Input::of(&m),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(EngineError::Processor("the consumer's stream ended".into())),
        }
    };
    let mut batch = Vec::with_capacity(config.max_batch.min(1 << 16));
    batch.push(first);
    let deadline = tokio::time::sleep(config.max_batch_wait);
    tokio::pin!(deadline);
    while batch.len() < config.max_batch {
        tokio::select! {
            biased;
            m = messages.next() => match m {
                Some(Ok(m)) => batch.push(Input::of(&m)),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    Ok(Some(batch))
}

/// The commit of the last batch's transaction (offsets, then commit; aborted on failure),
/// running on a blocking thread, with the batch's input and output counts.
#[derive(Default)]
struct PendingCommit(Option<(tokio::task::JoinHandle<KafkaResult<()>>, u64, u64)>);

impl PendingCommit {
    /// Waits for the commit, if one is running, and counts its batch once it succeeded.
    async fn settle(&mut self, stats: &mut Stats) -> Result<(), EngineError> {
        let Some((handle, inputs, outputs)) = self.0.take() else {
            return Ok(());
        };
        handle
            .await
            .map_err(|e| EngineError::Processor(format!("transaction commit task: {e}")))??;
        stats.batches += 1;
        stats.inputs += inputs;
        stats.outputs += outputs;
        Ok(())
    }
}

async fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    o: &Output,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::to(o.topic).key(&o.key).payload(&o.payload);
    if let Some(p) = o.partition {
        record = record.partition(p);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
