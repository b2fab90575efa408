//! Watermarks: how far each tenant's platform data has been extracted.
//!
//! There is no separate state store: the watermark is the newest `to_date` among the succeeded
//! runs in `mi.events.runs.v1`, whose records commit in the same transaction as the data they
//! describe. Reading the (small) topic from the start, `read_committed`, gives the truth.

use chrono::NaiveDate;
use mi_common::settings::KafkaSettings;
use mi_common::{Platform, TenantId, clients};
use mi_schemas::{Codec, ExtractionRun, Record, RunStatus};
use std::collections::HashMap;

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
    let records = clients::read_to_end(config, ExtractionRun::TOPIC)
        .await
        .map_err(|e| ExtractError::Publish(format!("reading {}: {e}", ExtractionRun::TOPIC)))?;
    let mut runs = Vec::with_capacity(records.len());
    for (_, payload) in records {
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
