//! Publishing one run's records in one Kafka transaction.
//!
//! A run either publishes everything it extracted together with its `succeeded` run record (and,
//! for a worker, the offset of the command it served), or nothing at all: an aborted transaction
//! is invisible to `read_committed` consumers. The run record carrying the new watermark commits
//! atomically with the data, so a crash can never advance the watermark past data that was lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mi_common::clients::{self, blocking};
use mi_common::settings::KafkaSettings;
use mi_schemas::{Codec, Record};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::error::ExtractError;

const TXN_OP_TIMEOUT: Duration = Duration::from_secs(60);

/// A transactional producer owned by one extraction worker (one run at a time).
pub struct TxProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    codec: Arc<Codec>,
}

fn kafka(e: KafkaError) -> ExtractError {
    ExtractError::Publish(e.to_string())
}

impl TxProducer {
    /// Creates the producer and fences any previous instance with the same transactional id.
    pub fn new(
        kafka_settings: &KafkaSettings,
        transactional_id: &str,
        transaction_timeout_ms: u32,
        codec: Arc<Codec>,
    ) -> Result<Self, ExtractError> {
        let mut config = clients::transactional_producer_config(kafka_settings, transactional_id);
        config
            .set("transaction.timeout.ms", transaction_timeout_ms.to_string())
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "200000");
        let producer: ThreadedProducer<DefaultProducerContext> = config.create().map_err(kafka)?;
        blocking(|| producer.init_transactions(TXN_OP_TIMEOUT)).map_err(kafka)?;
        Ok(Self { producer, codec })
    }

    /// Starts a transaction; records published until [`Transaction::commit`] belong to it.
    pub fn begin(&self) -> Result<Transaction<'_>, ExtractError> {
        self.producer.begin_transaction().map_err(kafka)?;
        Ok(Transaction {
            owner: self,
            counts: BTreeMap::new(),
            done: false,
        })
    }
}

/// One open transaction. Dropped without commit, it aborts.
pub struct Transaction<'p> {
    owner: &'p TxProducer,
    counts: BTreeMap<String, i64>,
    done: bool,
}

impl Transaction<'_> {
    /// Encodes and enqueues a record keyed by its tenant. Waits while the local queue is full.
    pub async fn publish<R: Record>(&mut self, record: &R) -> Result<(), ExtractError> {
        let payload = self
            .owner
            .codec
            .encode(record)
            .await
            .map_err(|e| ExtractError::Publish(e.to_string()))?;
        let key = record.tenant_id();
        let mut pending = BaseRecord::to(R::TOPIC).key(key).payload(&payload);
        loop {
            match self.owner.producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(kafka(e)),
            }
        }
        *self.counts.entry(R::TOPIC.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Records published so far, per topic.
    pub fn counts(&self) -> &BTreeMap<String, i64> {
        &self.counts
    }

    /// Adds a consumer's offsets to the transaction (the command a worker served).
    pub fn commit_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ExtractError> {
        let producer = &self.owner.producer;
        blocking(|| producer.send_offsets_to_transaction(offsets, group, TXN_OP_TIMEOUT))
            .map_err(kafka)
    }

    /// Flushes and commits everything; on error the transaction is aborted.
    pub fn commit(mut self) -> Result<(), ExtractError> {
        self.done = true;
        let producer = &self.owner.producer;
        match blocking(|| clients::commit_transaction(producer, TXN_OP_TIMEOUT)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = blocking(|| producer.abort_transaction(TXN_OP_TIMEOUT));
                Err(kafka(e))
            }
        }
    }

    pub fn abort(mut self) -> Result<(), ExtractError> {
        self.done = true;
        let producer = &self.owner.producer;
        blocking(|| producer.abort_transaction(TXN_OP_TIMEOUT)).map_err(kafka)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let producer = &self.owner.producer;
            if let Err(e) = blocking(|| producer.abort_transaction(TXN_OP_TIMEOUT)) {
                tracing::error!(error = %e, "aborting an abandoned transaction failed");
            }
        }
    }
}
