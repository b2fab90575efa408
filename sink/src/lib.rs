//! Sink: batched, idempotent loads of the curated topics into ClickHouse; migrations and tenant provisioning.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same code the service runs.

pub mod load;
pub mod migrate;
pub mod provision;
pub mod rows;
pub mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mi_common::cli::{self, GlobalArgs};
use mi_common::clients;

pub use settings::SinkSettings;

#[derive(Debug, Parser)]
#[command(
    name = "sink",
    version,
    about = "Sink: batched, idempotent loads of the curated topics into ClickHouse; migrations and tenant provisioning."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that every dependency of this service answers, one line each; exit 1 if any fails.
    Check,
    /// Apply the warehouse migrations not yet applied (idempotent).
    Migrate,
    /// Load the curated topics into ClickHouse until SIGTERM.
    Run,
    /// Create (idempotently) a tenant's ClickHouse user, SELECT grants and row policies. The
    /// master secret comes from `MI_CLICKHOUSE__TENANT_SECRET`.
    ProvisionTenant {
        tenant: mi_common::TenantId,
        /// Only check the statements with ClickHouse's parser (for the chDB dev front, which
        /// has no users).
        #[arg(long)]
        validate_only: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sink: SinkSettings = cli.global.load(|s: &SinkSettings| &s.infra.log)?;
    let settings = &sink.infra;
    match cli.command {
        Command::Migrate => {
            let client = clients::clickhouse(&settings.clickhouse);
            let applied = migrate::migrate(&client, &settings.clickhouse.database).await?;
            println!(
                "{} migration(s) applied to {}: {applied:?}",
                applied.len(),
                settings.clickhouse.database
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ProvisionTenant {
            tenant,
            validate_only,
        } => {
            let master = settings.clickhouse.tenant_secret.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "set MI_CLICKHOUSE__TENANT_SECRET: tenant passwords are derived from it"
                )
            })?;
            let mode = if validate_only {
                provision::Mode::ValidateOnly
            } else {
                provision::Mode::Execute
            };
            let client = clients::clickhouse(&settings.clickhouse);
            let n = provision::provision(
                &client,
                &settings.clickhouse.database,
                &tenant,
                &master,
                mode,
            )
            .await?;
            println!(
                "tenant {tenant}: {n} statements {}",
                if validate_only {
                    "validated"
                } else {
                    "applied"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = sink.load_config();
            let stats = load::run(settings, &config, mi_common::shutdown::on_signal()).await?;
            tracing::info!(?stats, "sink stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(cli::report(&[
            clients::check_kafka(&settings.kafka).await,
            clients::check_schema_registry(&settings.schema_registry).await,
            clients::check_clickhouse(&settings.clickhouse).await,
        ])),
    }
}
