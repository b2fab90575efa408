//! Follows `mi.events.loads.v1` and invalidates the loaded tenant's cache: a response is never
//! served from cache after the data under it changed (beyond the event's delivery delay).
//!
//! Every API instance must see every event, so each follows with its own consumer group and
//! starts at the end of the topic (older loads are already reflected in the warehouse, and the
//! cache entries they would invalidate cannot be older than this process's start… except those
//! other instances wrote, which the TTL bounds).

use std::sync::Arc;

use mi_common::settings::Settings;
use mi_common::{TenantId, clients};
use mi_schemas::{Codec, LoadEvent, Record};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;

/// Runs until `shutdown`; logs and retries on broker errors (the cache TTL still bounds
/// staleness while events cannot be read).
pub async fn follow(
    infra: Settings,
    group_prefix: String,
    cache: Cache,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let group = format!("{group_prefix}-{}", uuid::Uuid::new_v4());
    let mut config = clients::read_committed_consumer_config(&infra.kafka, &group);
    config.set("auto.offset.reset", "latest");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[LoadEvent::TOPIC])?;
    let codec = Arc::new(Codec::new(clients::schema_registry(&infra.schema_registry)));
    tracing::info!(topic = LoadEvent::TOPIC, %group, "following load events");
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading load events");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(payload) = message.payload() else {
            continue;
        };
        match codec.decode::<LoadEvent>(payload).await {
            Ok(event) => match TenantId::new(event.tenant_id.clone()) {
                Ok(tenant) => {
                    let generation = cache.invalidate(&tenant).await;
                    tracing::debug!(%tenant, table = %event.table, ?generation, "cache invalidated");
                }
                Err(e) => tracing::warn!(error = %e, "load event with an invalid tenant"),
            },
            Err(e) => tracing::warn!(
                error = %e,
                partition = message.partition(),
                offset = message.offset(),
                "undecodable load event"
            ),
        }
    }
}
