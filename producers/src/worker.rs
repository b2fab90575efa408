//! Workers and the scheduler.
//!
//! Extraction requests are records on `mi.commands.extract.v1`, keyed by tenant. Workers share
//! them as one consumer group, so each request is served by exactly one worker; the command's
//! offset commits in the same transaction as the run's data and run record, so a request is
//! consumed exactly when its outcome is recorded — a worker killed mid-run leaves the command
//! to be served again, and the aborted half-run invisible.
//!
//! A run can take longer than any poll interval (a large backfill, a throttled platform), so
//! while one is in flight the worker pauses its assignment — nothing more is fetched — and goes
//! on polling at least every second: it stays a member of its group, and rebalances are served
//! at once instead of stalling every worker of the group until the run ends. A rebalance that
//! moves the command's partition makes the run's commit fail; the command is then served by the
//! partition's new owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use mi_common::clients;
use mi_schemas::{Codec, ExtractCommand, Record, Trigger};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::error::ExtractError;
use crate::publish::TxProducer;
use crate::run::{RunRequest, Runner};
use crate::settings::ProducersSettings;

/// Serves extraction commands until `shutdown` fires. Returns the number of runs served.
pub async fn work(runner: &Runner, shutdown: CancellationToken) -> anyhow::Result<u64> {
    let settings = &runner.settings;
    let consumer: WorkerConsumer = clients::read_committed_consumer_config(
        &settings.infra.kafka,
        &settings.extract.worker_group,
    )
    .create_with_context(WorkerContext::default())?;
    consumer.subscribe(&[ExtractCommand::TOPIC])?;
    let mut served = 0;
    let mut errors = 0u64;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => {
                errors = 0;
                m
            }
            Err(e) => {
                // Errors queue up while a run holds the loop (a broker restart during a commit
                // leaves dozens): drain them fast, or the rebalance queued behind them waits
                // half a minute. Log the first of a streak and every hundredth.
                if errors.is_multiple_of(100) {
                    tracing::warn!(error = %e, streak = errors + 1, "consuming commands");
                }
                errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(
            message.topic(),
            message.partition(),
            Offset::Offset(message.offset() + 1),
        )?;
        let group = consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("consumer has no group metadata"))?;
        let command = match message.payload() {
            Some(bytes) => runner.codec.decode::<ExtractCommand>(bytes).await,
            None => Err(mi_schemas::CodecError::NotFramed("empty command".into())),
        };
        // A command is either served (run outcome + offset committed together) or skipped
        // (offset committed alone). If that commit fails — typically a rebalance moved the
        // partition while the run was in flight — the transaction aborted and nothing of the run
        // is visible: rewind to the command so that whoever owns the partition now serves it.
        let result = match command {
            Ok(c) => match request_of(&c) {
                Ok(request) if settings.tenant(&request.tenant).is_some() => {
                    polling(&consumer, runner.run(&request, Some((&offsets, &group))))
                        .await
                        .map(Some)
                }
                Ok(request) => {
                    tracing::warn!(tenant = %request.tenant, "command for a tenant this worker does not know; skipped");
                    runner.skip(&offsets, &group).map(|()| None)
                }
                Err(e) => {
                    tracing::error!(error = %e, command_id = %c.command_id, "invalid command skipped");
                    runner.skip(&offsets, &group).map(|()| None)
                }
            },
            Err(e) if e.is_retriable() => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, offset = message.offset(), "undecodable command skipped");
                runner.skip(&offsets, &group).map(|()| None)
            }
        };
        match result {
            Ok(Some(outcome)) => {
                served += 1;
                tracing::info!(run_id = %outcome.run_id, status = ?outcome.status, "command served");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(),
                    "command not committed (rebalance or Kafka failure); it will be served again");
                let at = Offset::Offset(message.offset());
                if consumer
                    .seek(
                        message.topic(),
                        message.partition(),
                        at,
                        Duration::from_secs(5),
                    )
                    .is_err()
                {
                    tracing::debug!("partition no longer ours; its new owner serves the command");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(served)
}

type WorkerConsumer = StreamConsumer<WorkerContext>;

/// The worker consumer's callbacks: partitions assigned while a run is in flight are paused on
/// arrival like the rest of the assignment, and resumed otherwise.
#[derive(Default)]
struct WorkerContext {
    running: AtomicBool,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && let Err(e) = clients::set_paused(consumer, tpl, self.running.load(Ordering::SeqCst))
        {
            tracing::warn!(error = %e, "pausing or resuming newly assigned partitions");
        }
    }
}

/// Awaits `run` with the assignment paused, polling the consumer at least every second so that
/// it stays in its group and serves rebalances however long the run takes.
async fn polling<T>(consumer: &WorkerConsumer, run: impl Future<Output = T>) -> T {
    consumer.context().running.store(true, Ordering::SeqCst);
    set_paused(consumer, true);
    tokio::pin!(run);
    let out = loop {
        tokio::select! {
            out = &mut run => break out,
            polled = tokio::time::timeout(Duration::from_secs(1), consumer.recv()) => {
                // Paused partitions deliver nothing; a record that slipped through (fetched
                // before the pause took effect) is put back, to be read after the run.
                if let Ok(Ok(m)) = polled
                    && consumer
                        .seek(m.topic(), m.partition(), Offset::Offset(m.offset()), Duration::from_secs(5))
                        .is_err()
                {
                    tracing::debug!(partition = m.partition(), offset = m.offset(), "could not put a command back; its partition moved");
                }
            }
        }
    };
    consumer.context().running.store(false, Ordering::SeqCst);
    set_paused(consumer, false);
    out
}

fn set_paused(consumer: &WorkerConsumer, paused: bool) {
    let result = consumer
        .assignment()
        .and_then(|tpl| clients::set_paused(consumer, &tpl, paused));
    if let Err(e) = result {
        tracing::warn!(error = %e, paused, "pausing or resuming the command partitions");
    }
}

fn request_of(command: &ExtractCommand) -> Result<RunRequest, String> {
    Ok(RunRequest {
        tenant: command.tenant_id.parse().map_err(|e| format!("{e}"))?,
        platform: command.platform,
        command_id: Some(command.command_id.clone()),
        from: command.from_date,
        to: command.to_date,
        backfill_days: command.backfill_days.map(|d| d.max(1) as u32),
    })
}

impl Runner {
    /// Commits a command's offset without running it (it was invalid).
    fn skip(
        &self,
        offsets: &TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), ExtractError> {
        let tx = self.producer().begin()?;
        tx.commit_offsets(offsets, group)?;
        tx.commit()
    }
}

/// Publishes one extraction command per tenant and connected platform.
pub async fn enqueue_all(
    settings: &ProducersSettings,
    codec: Arc<Codec>,
    trigger: Trigger,
) -> Result<usize, ExtractError> {
    let producer = TxProducer::new(
        &settings.infra.kafka,
        // Enqueueing only needs the batch to be atomic, not zombie fencing: a fresh id per batch.
        &format!(
            "{}-enqueue-{}",
            settings.extract.transactional_id_prefix,
            uuid::Uuid::new_v4()
        ),
        60_000,
        codec,
    )?;
    let mut tx = producer.begin()?;
    let now = Utc::now();
    let mut n = 0;
    for tenant in &settings.tenants {
        for platform in tenant.platforms() {
            tx.publish(&ExtractCommand {
                command_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant.id.to_string(),
                platform,
                trigger,
                requested_at: now,
                from_date: None,
                to_date: None,
                backfill_days: None,
            })
            .await?;
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Enqueues every tenant's extractions at each tick of the cron schedule until `shutdown`.
pub async fn schedule(
    settings: &ProducersSettings,
    codec: Arc<Codec>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cron: croner::Cron =
        settings.extract.schedule.parse().map_err(|e| {
            anyhow::anyhow!("invalid schedule {:?}: {e}", settings.extract.schedule)
        })?;
    loop {
        let now = Utc::now();
        let next = cron.find_next_occurrence(&now, false).map_err(|e| {
            anyhow::anyhow!(
                "schedule {:?} has no next time: {e}",
                settings.extract.schedule
            )
        })?;
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next, "next scheduled extraction");
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let n = enqueue_all(settings, codec.clone(), Trigger::Scheduled).await?;
        tracing::info!(commands = n, "scheduled extractions enqueued");
    }
}
