//! Dead letters: what the pipeline rejected, where it came from, and why.
//!
//! A rejected record never stops the pipeline: it is published to `mi.dlq.v1` in the same
//! transaction as the batch it belonged to (so it is dead-lettered exactly once), with its
//! original bytes, its source topic/partition/offset, the stage that rejected it and a reason a
//! person can act on.

use mi_schemas::{Codec, DeadLetter, Record, codec};

use crate::engine::{EngineError, Input, Output};

/// Builds the dead letter of `input`, rejected at `stage` for `reason`.
pub async fn dead_letter(
    codec: &Codec,
    input: &Input,
    stage: &str,
    reason: String,
    tenant_id: Option<String>,
) -> Result<Output, EngineError> {
    // The tenant, when the record itself cannot be read, is the Kafka key (tenant-keyed topics).
    let tenant_id = tenant_id.or_else(|| {
        input
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| mi_common::TenantId::new(*k).is_ok())
            .map(str::to_owned)
    });
    let letter = DeadLetter {
        tenant_id,
        source_topic: input.topic.clone(),
        source_partition: input.partition,
        source_offset: input.offset,
        stage: stage.to_owned(),
        reason,
        schema_id: input
            .payload
            .as_deref()
            .and_then(|p| codec::schema_id(p).ok())
            .and_then(|id| i32::try_from(id).ok()),
        original_key: input.key.clone(),
        original_value: input.payload.clone(),
        failed_at: chrono::Utc::now(),
    };
    tracing::warn!(topic = %input.topic, partition = input.partition, offset = input.offset,
        stage, reason = %letter.reason, "record dead-lettered");
    let payload = codec
        .encode(&letter)
        .await
        .map_err(|e| EngineError::Processor(format!("encoding a dead letter: {e}")))?;
    Ok(Output {
        topic: DeadLetter::TOPIC,
        partition: None,
        key: letter.tenant_id().as_bytes().to_vec(),
        payload,
    })
}

/// Decodes an input as `R`, or explains why not. `Err(Ok(reason))` is a dead letter; `Err(Err)`
/// is a failure to retry (the registry is unreachable).
pub async fn decode<R: Record>(
    codec: &Codec,
    input: &Input,
) -> Result<R, Result<String, EngineError>> {
    let Some(payload) = input.payload.as_deref() else {
        return Err(Ok("empty value (tombstone) on a data topic".to_owned()));
    };
    codec.decode::<R>(payload).await.map_err(|e| {
        if e.is_retriable() {
            Err(EngineError::Processor(e.to_string()))
        } else {
            Ok(e.to_string())
        }
    })
}
