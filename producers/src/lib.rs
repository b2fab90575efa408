//! Extract producers: pull Google Ads, Meta Ads and GA4 data and publish tenant-keyed Avro
//! records to Kafka.
//!
//! `extract` runs one extraction now; `worker` serves extraction commands from Kafka (several
//! workers share them as a consumer group); `schedule` enqueues every tenant's extractions on a
//! cron schedule. Every run publishes atomically: all its records and its run record in one
//! Kafka transaction, or nothing.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same code the service runs.

pub mod auth;
pub mod error;
pub mod http;
pub mod platforms;
pub mod publish;
pub mod run;
pub mod settings;
pub mod watermark;
pub mod worker;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use mi_common::cli::{self, GlobalArgs};
use mi_common::{Platform, TenantId, clients};
use mi_schemas::registry::Registry;
use mi_schemas::{Codec, RunStatus, Trigger};

pub use run::{RunRequest, Runner, Window};
pub use settings::ProducersSettings;

#[derive(Debug, Parser)]
#[command(name = "producers", version, about = "Marketing IQ extract producers")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Pretend today is this date (the emulator's clock); default: the current UTC date.
    #[arg(long, global = true, env = "MI_TODAY")]
    pub today: Option<NaiveDate>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that Kafka and the schema registry answer, one line each; exit 1 if any fails.
    Check,
    /// Register every topic's schema (BACKWARD compatibility); idempotent.
    RegisterSchemas,
    /// Run one extraction now and print its run record.
    Extract {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        platform: Platform,
        /// Backfill this many days on a first sync (default from the settings).
        #[arg(long)]
        days: Option<u32>,
        /// Explicit window start (inclusive), instead of the watermark.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Explicit window end (inclusive); default yesterday.
        #[arg(long)]
        to: Option<NaiveDate>,
    },
    /// Serve extraction commands from Kafka until SIGTERM.
    Worker {
        /// Identifies this worker's transactional producer; stable across restarts of the same
        /// worker slot so a restarted worker fences its predecessor.
        #[arg(long, env = "MI_WORKER_ID", default_value = "0")]
        id: String,
    },
    /// Enqueue every tenant's extractions on the cron schedule until SIGTERM (`--now`: once).
    Schedule {
        #[arg(long)]
        now: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: ProducersSettings = cli.global.load(|s: &ProducersSettings| &s.infra.log)?;
    let settings = Arc::new(settings);
    let codec = || {
        Arc::new(Codec::new(clients::schema_registry(
            &settings.infra.schema_registry,
        )))
    };
    match cli.command {
        Command::Check => Ok(cli::report(&[
            clients::check_kafka(&settings.infra.kafka).await,
            clients::check_schema_registry(&settings.infra.schema_registry).await,
        ])),
        Command::RegisterSchemas => {
            let ids = Registry::new(&settings.infra.schema_registry.url)
                .register_all()
                .await?;
            for (topic, id) in ids {
                println!("{topic}-value\t{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract {
            tenant,
            platform,
            days,
            from,
            to,
        } => {
            let id = format!(
                "{}-cli-{}",
                settings.extract.transactional_id_prefix,
                uuid::Uuid::new_v4()
            );
            let runner = Runner::new(settings.clone(), codec(), &id, cli.today)?;
            let request = RunRequest {
                tenant,
                platform,
                command_id: None,
                from,
                to,
                backfill_days: days,
            };
            let outcome = runner.run(&request, None).await?;
            println!("{}", serde_json::to_string_pretty(&run_summary(&outcome))?);
            Ok(if outcome.status == RunStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Worker { id } => {
            let txid = format!("{}-worker-{id}", settings.extract.transactional_id_prefix);
            let runner = Runner::new(settings.clone(), codec(), &txid, cli.today)
                .context("starting the worker's transactional producer")?;
            let shutdown = mi_common::shutdown::on_signal();
            let served = worker::work(&runner, shutdown).await?;
            tracing::info!(served, "worker stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule { now } => {
            if now {
                let n = worker::enqueue_all(&settings, codec(), Trigger::Manual).await?;
                println!("{n} extraction commands enqueued");
                return Ok(ExitCode::SUCCESS);
            }
            worker::schedule(&settings, codec(), mi_common::shutdown::on_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_summary(run: &mi_schemas::ExtractionRun) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.run_id,
        "tenant_id": run.tenant_id,
        "platform": run.platform,
        "from": run.from_date,
        "to": run.to_date,
        "status": run.status,
        "records": run.records,
        "error": run.error,
        "duration_ms": (run.finished_at - run.started_at).num_milliseconds(),
    })
}
