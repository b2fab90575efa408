//! Watermarks: how far each tenant's platform data has been extracted.
//!
//! There is no separate state store: the watermark is the newest `to_date` among the succeeded
//! runs in `mi.events.runs.v1`, whose records commit in the same transaction as the data they
//! describe. Reading the (small) topic from the start, `read_committed`, gives the truth.

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDate;
use mi_common::settings::KafkaSettings;
use mi_common::{Platform, TenantId, clients};
use mi_schemas::{Codec, ExtractionRun, Record, RunStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::ExtractError;

/// Every committed run record, oldest first per partition.
pub async fn read_runs(
    kafka: &KafkaSettings,
    codec: &Codec,
) -> Result<Vec<ExtractionRun>, ExtractError> {
    let config = clients::read_committed_consumer_config(
        kafka,
        &format!("mi-watermarks-{}", uuid::Uuid::new_v4()),
    );
    let payloads = tokio::task::spawn_blocking(move || read_to_end(config, ExtractionRun::TOPIC))
        .await
        .map_err(|e| ExtractError::Publish(format!("reading runs: {e}")))?
        .map_err(|e| ExtractError::Publish(format!("reading {}: {e}", ExtractionRun::TOPIC)))?;
    let mut runs = Vec::with_capacity(payloads.len());
    for payload in payloads {
        match codec.decode::<ExtractionRun>(&payload).await {
            Ok(run) => runs.push(run),
            Err(e) if e.is_retriable() => return Err(ExtractError::Publish(e.to_string())),
            Err(e) => tracing::warn!(error = %e, "skipping an undecodable run record"),
        }
    }
    Ok(runs)
}

/// The newest `to_date` of a succeeded run, per tenant and platform.
pub fn watermarks(runs: &[ExtractionRun]) -> HashMap<(String, Platform), NaiveDate> {
    let mut out: HashMap<(String, Platform), NaiveDate> = HashMap::new();
    for run in runs.iter().filter(|r| r.status == RunStatus::Succeeded) {
        let entry = out
            .entry((run.tenant_id.clone(), run.platform))
            .or_insert(run.to_date);
        *entry = (*entry).max(run.to_date);
    }
    out
}

pub async fn watermark(
    kafka: &KafkaSettings,
    codec: &Codec,
    tenant: &TenantId,
    platform: Platform,
) -> Result<Option<NaiveDate>, ExtractError> {
    let runs = read_runs(kafka, codec).await?;
    Ok(watermarks(&runs)
        .get(&(tenant.to_string(), platform))
        .copied())
}

/// Reads every committed value of `topic` up to its end (the last stable offset).
fn read_to_end(mut config: rdkafka::ClientConfig, topic: &str) -> Result<Vec<Vec<u8>>, KafkaError> {
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut remaining = partitions.len();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::PartitionEOF(-1));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => remaining -= 1,
            Some(Err(e)) => return Err(e),
            Some(Ok(message)) => {
                if let Some(payload) = message.payload() {
                    out.push(payload.to_vec());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn run(tenant: &str, platform: Platform, to: u32, status: RunStatus) -> ExtractionRun {
        let date = |d| NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
        ExtractionRun {
            run_id: "r".into(),
            tenant_id: tenant.into(),
            platform,
            command_id: None,
            from_date: date(1),
            to_date: date(to),
            status,
            records: Default::default(),
            error: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
        }
    }

    #[test]
    fn the_watermark_is_the_newest_succeeded_run_per_tenant_and_platform() {
        let runs = vec![
            run("a", Platform::GoogleAds, 10, RunStatus::Succeeded),
            run("a", Platform::GoogleAds, 20, RunStatus::Failed),
            run("a", Platform::GoogleAds, 15, RunStatus::Succeeded),
            run("a", Platform::GoogleAds, 12, RunStatus::Succeeded),
            run("b", Platform::GoogleAds, 5, RunStatus::Succeeded),
            run("a", Platform::MetaAds, 3, RunStatus::Failed),
        ];
        let w = watermarks(&runs);
        assert_eq!(
            w.get(&("a".into(), Platform::GoogleAds)),
            NaiveDate::from_ymd_opt(2026, 11, 15).as_ref()
        );
        assert_eq!(
            w.get(&("b".into(), Platform::GoogleAds)),
            NaiveDate::from_ymd_opt(2026, 11, 5).as_ref()
        );
        assert_eq!(
            w.get(&("a".into(), Platform::MetaAds)),
            None,
            "failed runs never move it"
        );
    }
}
