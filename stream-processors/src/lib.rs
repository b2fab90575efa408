//! Stream processors: SCD2 dimensions, validated facts with derived metrics, dead letters,
//! exactly-once.
//!
//! Two processors run on one [`engine`]: `scd2` turns raw entity snapshots into versioned
//! dimensions (`mi.dim.*`), `facts` turns raw daily metrics into validated facts with derived
//! metrics (`mi.fact.*`). Each is a consumer group; run several instances of one to spread its
//! partitions. Everything a batch produces commits in one Kafka transaction with its offsets.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same code the service runs.

pub mod alerts;
pub mod dims;
pub mod dlq;
pub mod engine;
pub mod facts;
pub mod metrics;
pub mod scd2;
pub mod validate;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use mi_common::cli::{self, GlobalArgs};
use mi_common::{Settings, clients};
use mi_schemas::Codec;
use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;
use crate::validate::TenantRegistry;

#[derive(Debug, Parser)]
#[command(
    name = "stream-processors",
    version,
    about = "Marketing IQ stream processors"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Raw entity snapshots → SCD2 dimensions.
    Scd2,
    /// Raw daily metrics → validated facts with derived metrics.
    Facts,
    /// Load events → day-over-day anomalies of campaign spend, CTR and CPA (`mi.alerts.v1`).
    Alerts,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that Kafka and the schema registry answer, one line each; exit 1 if any fails.
    Check,
    /// Run one processor until SIGTERM.
    Run {
        processor: Which,
        /// This instance's slot (stable across its restarts: it fences a zombie predecessor).
        #[arg(long, env = "MI_PROCESSOR_INSTANCE", default_value = "0")]
        instance: String,
    },
}

/// The processors' settings: the shared infrastructure and the tenants they accept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessorsSettings {
    #[serde(flatten)]
    pub infra: Settings,
    pub processors: ProcessorSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessorSection {
    /// Known tenants; records of any other go to the dead-letter topic. Empty: accept all.
    pub tenants: Vec<String>,
    /// Consumer-group and transactional-id prefix.
    pub group_prefix: String,
    /// Records per transaction at most.
    pub max_batch: usize,
    /// How long a batch waits to fill, in milliseconds.
    pub max_batch_wait_ms: u64,
    /// When the alerts processor flags a day (the `anomalies` dashboard uses the same rule).
    pub alerts: mi_common::anomaly::Rule,
}

impl Default for ProcessorSection {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            tenants: Vec::new(),
            group_prefix: engine.group_prefix,
            max_batch: engine.max_batch,
            max_batch_wait_ms: u64::try_from(engine.max_batch_wait.as_millis()).unwrap_or(u64::MAX),
            alerts: mi_common::anomaly::Rule::default(),
        }
    }
}

impl ProcessorsSettings {
    pub fn tenant_registry(&self) -> TenantRegistry {
        if self.processors.tenants.is_empty() {
            TenantRegistry::allow_all()
        } else {
            TenantRegistry::from_ids(self.processors.tenants.iter().cloned())
        }
    }

    pub fn engine(&self, instance: &str) -> EngineConfig {
        EngineConfig {
            group_prefix: self.processors.group_prefix.clone(),
            instance: instance.to_owned(),
            max_batch: self.processors.max_batch.max(1),
            max_batch_wait: std::time::Duration::from_millis(self.processors.max_batch_wait_ms),
        }
    }
}

/// Runs one processor until `shutdown`; returns its counters.
pub async fn run_processor(
    which: Which,
    settings: &ProcessorsSettings,
    instance: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> engine::Stats {
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &settings.infra.schema_registry,
    )));
    let engine = settings.engine(instance);
    let kafka = &settings.infra.kafka;
    match which {
        Which::Scd2 => {
            let mut p = dims::Dims::new(codec, settings.tenant_registry());
            engine::run(&mut p, kafka, &engine, shutdown).await
        }
        Which::Facts => {
            let mut p = facts::Facts::new(codec, settings.tenant_registry());
            engine::run(&mut p, kafka, &engine, shutdown).await
        }
        Which::Alerts => {
            let ch = &settings.infra.clickhouse;
            let mut p = alerts::Alerts::new(
                codec,
                clients::clickhouse(ch),
                ch.database.clone(),
                settings.processors.alerts,
            );
            engine::run(&mut p, kafka, &engine, shutdown).await
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: ProcessorsSettings = cli.global.load(|s: &ProcessorsSettings| &s.infra.log)?;
    match cli.command {
        Command::Check => Ok(cli::report(&[
            clients::check_kafka(&settings.infra.kafka).await,
            clients::check_schema_registry(&settings.infra.schema_registry).await,
        ])),
        Command::Run {
            processor,
            instance,
        } => {
            let stats = run_processor(
                processor,
                &settings,
                &instance,
                mi_common::shutdown::on_signal(),
            )
            .await;
            tracing::info!(?stats, "processor stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
