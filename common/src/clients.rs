//! Clients for the shared infrastructure, configured once from [`Settings`].
//!
//! Kafka clients are built with the delivery guarantees the pipeline relies on (idempotent or
//! transactional producers, `read_committed` consumers with manual commits); the `check`
//! functions are what `<service> check` and the readiness probes run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use secrecy::ExposeSecret;

use crate::settings::{
    ClickHouseSettings, KafkaSettings, RedisSettings, SchemaRegistrySettings, Settings,
};

/// A base librdkafka configuration: brokers plus any operator-supplied properties.
pub fn kafka_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// An idempotent producer: retries never duplicate or reorder records within a partition.
pub fn idempotent_producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = kafka_config(kafka);
    config
        .set("enable.idempotence", "true")
        // The Java client's partitioner: a tenant lands on the same partition whichever
        // client (ours, an agent's, Kafka's own tools) produced its records.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    config
}

/// A transactional producer. `transactional_id` must be stable per logical producer instance
/// (e.g. per input partition or per worker slot) so that a restarted instance fences its
/// zombie predecessor instead of committing alongside it.
pub fn transactional_producer_config(
    kafka: &KafkaSettings,
    transactional_id: &str,
) -> ClientConfig {
    let mut config = idempotent_producer_config(kafka);
    config
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000");
    config
}

/// A consumer that only sees committed transactions and commits offsets explicitly (inside
/// producer transactions, or after the sink's inserts are acknowledged).
pub fn read_committed_consumer_config(kafka: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut config = kafka_config(kafka);
    config
        .set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky");
    // A new group reads from the beginning (nothing published before it is lost) unless the
    // settings say otherwise: a demo on a broker full of test data starts at the end with
    // `MI_KAFKA__PROPERTIES__auto.offset.reset=latest`.
    if !kafka.properties.contains_key("auto.offset.reset") {
        config.set("auto.offset.reset", "earliest");
    }
    // librdkafka prefetches up to 64 MB by default, most of a service's memory under load;
    // 16 MB is still ~70,000 of our records, more than any batch takes. A full prefetch queue
    // postpones the next fetch by `fetch.queue.backoff.ms`, 1 s by default: the processor
    // drained its queue in ~200 ms and then stalled ~650 ms of every 850. 20 ms keeps it fed.
    for (key, value) in [
        ("queued.max.messages.kbytes", "16384"),
        ("fetch.queue.backoff.ms", "20"),
    ] {
        if !kafka.properties.contains_key(key) {
            config.set(key, value);
        }
    }
    config
}

/// Commits a transactional producer's open transaction, without rust-rdkafka's flush stall.
///
/// `Producer::commit_transaction` flushes first, and rust-rdkafka's flush waits in
/// `poll(100 ms)` steps while anything is in flight. On a `ThreadedProducer` the delivery
/// reports are served by the producer's own thread, so each of those polls sees none of them and
/// waits out its full 100 ms: with `linger.ms` a record is nearly always still in flight, and
/// that wait was most of a 5,000-record transaction's time (`pipeline-bench
/// --diagnose-transactions`). Here `flush(0)` wakes the senders (librdkafka's flushing flag
/// bypasses `linger.ms`) and returns at once, the in-flight count is watched in short steps, and
/// the commit then has nothing left to flush. Blocking: call it through [`blocking`].
pub fn commit_transaction(producer: &impl Producer, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    // A timed-out zero flush is its normal answer here; only the wake-up matters.
    let _ = producer.flush(Duration::ZERO);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
    producer.commit_transaction(deadline.saturating_duration_since(Instant::now()))
}

/// Pauses or resumes fetching on `partitions`. Consumers that pause their assignment while they
/// wait (the sink during an outage, a worker during a run) call it on every new assignment too:
/// librdkafka keeps an application's pause on a partition that is revoked and comes back, and
/// does not pause one that arrives while the rest is paused. Resuming a partition that is not
/// paused is a no-op.
pub fn set_paused<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    partitions: &TopicPartitionList,
    paused: bool,
) -> KafkaResult<()> {
    if paused {
        consumer.pause(partitions)
    } else {
        consumer.resume(partitions)
    }
}

/// Runs a blocking call (librdkafka's transactional operations block for up to their timeout)
/// without stalling the other tasks of a multi-threaded runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The next offset of every partition of `topic` (its high watermarks).
pub async fn end_offsets(
    config: ClientConfig,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut out = BTreeMap::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
            out.insert(p.id(), high);
        }
        Ok(out)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Sets a consumer group's committed offsets on `topic` to its current end, so that the group
/// starts with what is published from now on (a new worker group in a benchmark or test must not
/// serve every command ever published).
pub async fn start_group_at_end(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let ends = end_offsets(kafka_config(kafka), topic).await?;
    let config = read_committed_consumer_config(kafka, group);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for (p, end) in ends {
            tpl.add_partition_offset(&topic, p, Offset::Offset(end))?;
        }
        consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Reads every committed record of `topic` (key, value) from the beginning up to its end (the
/// last stable offset at the time of reading). For small topics — run records, tests, tools.
pub async fn read_to_end(
    config: ClientConfig,
    topic: &str,
) -> Result<Vec<(Option<Vec<u8>>, Vec<u8>)>, KafkaError> {
    read_since(config, topic, &BTreeMap::new()).await
}

/// Like [`read_to_end`], starting each partition at the offset given in `from` (partitions not
/// in it start at the beginning).
pub async fn read_since(
    config: ClientConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> Result<Vec<(Option<Vec<u8>>, Vec<u8>)>, KafkaError> {
    let from = from.clone();
    read_partitions(config, topic, move |p| {
        Some(
            from.get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o)),
        )
    })
    .await
}

/// How long [`read_partitions`] waits without receiving anything before it calls a partition read.
const QUIET: Duration = Duration::from_secs(5);

/// Reads the partitions for which `start` gives an offset, from there to their end (the last
/// stable offset at the time of reading): e.g. one state changelog partition on restore.
pub async fn read_partitions(
    mut config: ClientConfig,
    topic: &str,
    start: impl Fn(i32) -> Option<Offset> + Send + 'static,
) -> Result<Vec<(Option<Vec<u8>>, Vec<u8>)>, KafkaError> {
    config.set("enable.partition.eof", "true");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            if let Some(offset) = start(p.id()) {
                assignment.add_partition_offset(&topic, p.id(), offset)?;
            }
        }
        if assignment.count() == 0 {
            return Ok(Vec::new());
        }
        // Where each partition ends now. A partition is done at its end-of-partition event or
        // once the consumer's position passes this offset: librdkafka emits no EOF when a
        // partition ends in an aborted transaction (e.g. a producer killed mid-transaction).
        let mut ends = BTreeMap::new();
        for e in assignment.elements() {
            let (_, high) =
                consumer.fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))?;
            ends.insert(e.partition(), high);
        }
        consumer.assign(&assignment)?;
        let mut pending: std::collections::BTreeSet<i32> = ends.keys().copied().collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last_activity = Instant::now();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            // Quiet for a while after fetching everything there was: the rest is aborted or
            // not yet committed (an open transaction), neither of which a reader should wait for.
            if last_activity.elapsed() > QUIET {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(m)) => {
                    last_activity = Instant::now();
                    if let Some(payload) = m.payload() {
                        out.push((m.key().map(<[u8]>::to_vec), payload.to_vec()));
                    }
                    continue;
                }
                None => {}
            }
            for e in consumer.position()?.elements() {
                if let (Offset::Offset(at), Some(end)) = (e.offset(), ends.get(&e.partition()))
                    && at >= *end
                {
                    pending.remove(&e.partition());
                }
            }
        }
        Ok(out)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Schema-registry client settings for `schema_registry_converter`.
pub fn schema_registry(registry: &SchemaRegistrySettings) -> SrSettings {
    SrSettings::new(registry.url.clone())
}

/// A ClickHouse HTTP client for the configured database and identity.
pub fn clickhouse(settings: &ClickHouseSettings) -> clickhouse::Client {
    let mut client = clickhouse::Client::default()
        .with_url(&settings.url)
        .with_database(&settings.database)
        .with_user(&settings.user);
    if let Some(password) = &settings.password {
        client = client.with_password(password.expose_secret());
    }
    client
}

/// A Redis connection manager: one multiplexed connection that reconnects by itself.
pub async fn redis(
    settings: &RedisSettings,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(settings.url.as_str())?;
    redis::aio::ConnectionManager::new(client).await
}

/// The outcome of one dependency check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub target: String,
    pub result: Result<Duration, String>,
}

impl Check {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(took) => write!(
                f,
                "{:<16} ok     {} ({} ms)",
                self.name,
                self.target,
                took.as_millis()
            ),
            Err(e) => write!(f, "{:<16} FAILED {}: {e}", self.name, self.target),
        }
    }
}

async fn timed<F, T, E>(name: &'static str, target: String, fut: F) -> Check
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".to_owned()),
    };
    Check {
        name,
        target,
        result,
    }
}

/// Kafka answers a metadata request.
pub async fn check_kafka(kafka: &KafkaSettings) -> Check {
    let config = kafka_config(kafka);
    timed("kafka", kafka.brokers.clone(), async move {
        tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(4))
                .map_err(|e| e.to_string())?;
            Ok(metadata.brokers().len())
        })
        .await
        .map_err(|e| e.to_string())?
    })
    .await
}

/// The schema registry lists its subjects.
pub async fn check_schema_registry(registry: &SchemaRegistrySettings) -> Check {
    let url = format!("{}/subjects", registry.url.trim_end_matches('/'));
    timed("schema-registry", registry.url.clone(), async move {
        reqwest::get(&url).await?.error_for_status()?.bytes().await
    })
    .await
}

/// ClickHouse runs `SELECT 1`.
pub async fn check_clickhouse(settings: &ClickHouseSettings) -> Check {
    // The database may not exist before `sink migrate`; the server itself is what we check.
    let client = clickhouse(&ClickHouseSettings {
        database: "default".into(),
        ..settings.clone()
    });
    timed("clickhouse", settings.url.clone(), async move {
        client.query("SELECT 1").fetch_one::<u8>().await
    })
    .await
}

/// Redis answers `PING`.
pub async fn check_redis(settings: &RedisSettings) -> Check {
    let url = settings.url.clone();
    timed("redis", redacted(&settings.url), async move {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
}

/// Checks every shared dependency concurrently.
pub async fn check_all(settings: &Settings) -> Vec<Check> {
    let (k, s, c, r) = tokio::join!(
        check_kafka(&settings.kafka),
        check_schema_registry(&settings.schema_registry),
        check_clickhouse(&settings.clickhouse),
        check_redis(&settings.redis),
    );
    vec![k, s, c, r]
}

/// A URL with any password replaced, fit for logs.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_and_credentials, host)) => {
            let scheme = scheme_and_credentials
                .split("://")
                .next()
                .unwrap_or("redis");
            format!("{scheme}://***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_never_reach_check_output() {
        assert_eq!(
            redacted("redis://:hunter2@10.0.0.1:6379"),
            "redis://***@10.0.0.1:6379"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn consumers_read_committed_and_never_auto_commit() {
        let config = read_committed_consumer_config(&KafkaSettings::default(), "g");
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
    }
}
