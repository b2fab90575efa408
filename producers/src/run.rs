//! One extraction run: plan the window, pull every account of one tenant's platform, publish it
//! all in one transaction with the run record — or publish nothing and record why.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use mi_common::{Platform, TenantId};
use mi_schemas::{Codec, ExtractionRun, RunStatus};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;

use crate::error::ExtractError;
use crate::http::Api;
use crate::platforms;
use crate::publish::{Transaction, TxProducer};
use crate::settings::{PlatformEndpoints, ProducersSettings};
use crate::watermark;

/// An inclusive range of account-local dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    /// The window of a run. Explicit bounds win; otherwise it ends yesterday and starts at the
    /// watermark minus the lookback (platforms restate recent days), or `backfill_days` back on
    /// a first sync.
    pub fn plan(
        explicit_from: Option<NaiveDate>,
        explicit_to: Option<NaiveDate>,
        watermark: Option<NaiveDate>,
        today: NaiveDate,
        backfill_days: u32,
        lookback_days: u32,
    ) -> Result<Self, String> {
        let to = explicit_to.unwrap_or(today - chrono::Days::new(1));
        let from = match (explicit_from, watermark) {
            (Some(from), _) => from,
            (None, Some(w)) => w - chrono::Days::new(u64::from(lookback_days)),
            (None, None) => to - chrono::Days::new(u64::from(backfill_days.max(1) - 1)),
        };
        if from > to {
            return Err(format!("empty window: from {from} is after to {to}"));
        }
        Ok(Self { from, to })
    }

    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }
}

/// What to extract.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub tenant: TenantId,
    pub platform: Platform,
    pub command_id: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub backfill_days: Option<u32>,
}

/// Everything a platform extractor needs for one run.
pub struct RunContext<'a> {
    pub tenant: &'a TenantId,
    pub platform: Platform,
    pub run_id: &'a str,
    pub extracted_at: DateTime<Utc>,
    pub window: Window,
    pub api: &'a Api,
    pub endpoints: &'a PlatformEndpoints,
    pub page_size: u32,
    pub progress: ProgressBar,
}

/// Runs extractions one at a time on one transactional producer.
pub struct Runner {
    pub settings: Arc<ProducersSettings>,
    pub api: Api,
    pub codec: Arc<Codec>,
    producer: TxProducer,
    /// The date the platforms consider "today" (tests pin it; production uses the clock).
    today: Option<NaiveDate>,
}

impl Runner {
    pub fn new(
        settings: Arc<ProducersSettings>,
        codec: Arc<Codec>,
        transactional_id: &str,
        today: Option<NaiveDate>,
    ) -> Result<Self, ExtractError> {
        let extract = &settings.extract;
        let api = Api::new(
            extract.requests_per_second,
            extract.max_attempts,
            Duration::from_millis(extract.retry_base_ms),
        );
        let producer = TxProducer::new(
            &settings.infra.kafka,
            transactional_id,
            extract.transaction_timeout_ms,
            codec.clone(),
        )?;
        Ok(Self {
            settings,
            api,
            codec,
            producer,
            today,
        })
    }

    pub(crate) fn producer(&self) -> &TxProducer {
        &self.producer
    }

    /// Runs one extraction. Returns the run record that was committed (succeeded or failed); an
    /// `Err` means not even the failure could be recorded (Kafka itself is failing).
    ///
    /// `offsets`, when given, commit in the same transaction as the outcome: a worker's command
    /// is consumed exactly when its run is recorded.
    pub async fn run(
        &self,
        request: &RunRequest,
        offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    ) -> Result<ExtractionRun, ExtractError> {
        let started_at = Utc::now();
        let run_id = uuid::Uuid::new_v4().to_string();
        let today = self.today.unwrap_or_else(|| started_at.date_naive());
        let extract = &self.settings.extract;

        let planned = match (request.from, request.to) {
            (Some(from), Some(to)) => Window::plan(Some(from), Some(to), None, today, 1, 0),
            _ => {
                let mark = watermark::watermark(
                    &self.settings.infra.kafka,
                    &self.codec,
                    &request.tenant,
                    request.platform,
                )
                .await?;
                Window::plan(
                    request.from,
                    request.to,
                    mark,
                    today,
                    request.backfill_days.unwrap_or(extract.backfill_days),
                    extract.lookback_days,
                )
            }
        };

        let mut record = ExtractionRun {
            run_id: run_id.clone(),
            tenant_id: request.tenant.to_string(),
            platform: request.platform,
            command_id: request.command_id.clone(),
            from_date: planned.as_ref().map(|w| w.from).unwrap_or(today),
            to_date: planned.as_ref().map(|w| w.to).unwrap_or(today),
            status: RunStatus::Succeeded,
            records: Default::default(),
            error: None,
            started_at,
            finished_at: started_at,
        };

        let mut tx = self.producer.begin()?;
        let outcome = match planned {
            Ok(window) => {
                let ctx = RunContext {
                    tenant: &request.tenant,
                    platform: request.platform,
                    run_id: &run_id,
                    extracted_at: started_at,
                    window,
                    api: &self.api,
                    endpoints: &self.settings.platforms,
                    page_size: extract.page_size,
                    progress: progress_bar(request, window),
                };
                tracing::info!(tenant = %request.tenant, platform = %request.platform, %run_id,
                    from = %window.from, to = %window.to, "extraction started");
                let result = self.extract(&ctx, &mut tx).await;
                ctx.progress.finish_and_clear();
                result
            }
            Err(e) => Err(ExtractError::Publish(e)),
        };

        record.records = tx.counts().clone();
        record.finished_at = Utc::now();
        match outcome {
            Ok(()) => {
                tx.publish(&record).await?;
                if let Some((offsets, group)) = offsets {
                    tx.commit_offsets(offsets, group)?;
                }
                tx.commit()?;
                tracing::info!(tenant = %request.tenant, platform = %request.platform, %run_id,
                    records = ?record.records, ms = (record.finished_at - started_at).num_milliseconds(),
                    "extraction committed");
            }
            Err(error) => {
                tx.abort()?;
                tracing::error!(tenant = %request.tenant, platform = %request.platform, %run_id,
                    %error, "extraction failed; nothing of it was published");
                record.status = RunStatus::Failed;
                record.error = Some(error.to_string());
                record.records.clear();
                let mut tx = self.producer.begin()?;
                tx.publish(&record).await?;
                if let Some((offsets, group)) = offsets {
                    tx.commit_offsets(offsets, group)?;
                }
                tx.commit()?;
            }
        }
        Ok(record)
    }

    async fn extract(
        &self,
        ctx: &RunContext<'_>,
        tx: &mut Transaction<'_>,
    ) -> Result<(), ExtractError> {
        let tenant = self.settings.tenant(ctx.tenant).ok_or_else(|| {
            ExtractError::Publish(format!("tenant {} is not configured", ctx.tenant))
        })?;
        let not_connected = |platform| ExtractError::NotConnected {
            tenant: ctx.tenant.to_string(),
            platform,
        };
        match ctx.platform {
            Platform::GoogleAds => {
                let conn = tenant
                    .google_ads
                    .as_ref()
                    .ok_or_else(|| not_connected(Platform::GoogleAds))?;
                platforms::google_ads::extract(ctx, conn, tx).await
            }
            Platform::MetaAds => {
                let conn = tenant
                    .meta_ads
                    .as_ref()
                    .ok_or_else(|| not_connected(Platform::MetaAds))?;
                platforms::meta::extract(ctx, conn, tx).await
            }
            Platform::Ga4 => {
                let conn = tenant
                    .ga4
                    .as_ref()
                    .ok_or_else(|| not_connected(Platform::Ga4))?;
                platforms::ga4::extract(ctx, conn, tx).await
            }
        }
    }
}

/// A progress bar on a terminal (hidden otherwise, e.g. in CI and services).
fn progress_bar(request: &RunRequest, window: Window) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!(
        "{} {} {}..{}",
        request.tenant, request.platform, window.from, window.to
    ));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).expect("date")
    }

    #[test]
    fn first_sync_backfills_and_later_syncs_look_back_from_the_watermark() {
        assert_eq!(
            Window::plan(None, None, None, d(28), 10, 7),
            Ok(Window {
                from: d(18),
                to: d(27)
            })
        );
        assert_eq!(
            Window::plan(None, None, Some(d(25)), d(28), 90, 7),
            Ok(Window {
                from: d(18),
                to: d(27)
            })
        );
        assert_eq!(
            Window::plan(Some(d(2)), Some(d(3)), Some(d(25)), d(28), 90, 7),
            Ok(Window {
                from: d(2),
                to: d(3)
            })
        );
        assert!(Window::plan(Some(d(5)), Some(d(3)), None, d(28), 90, 7).is_err());
        assert_eq!(
            Window::plan(None, None, None, d(28), 1, 7).map(|w| w.days()),
            Ok(1)
        );
    }
}
