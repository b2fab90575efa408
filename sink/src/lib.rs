//! Sink: batched, idempotent loads of the curated topics into ClickHouse; migrations and tenant provisioning.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same code the service runs.

pub mod load;
pub mod migrate;
pub mod rows;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mi_common::Settings;
use mi_common::cli::{self, GlobalArgs};
use mi_common::clients;

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
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: Settings = cli.global.load(|s: &Settings| &s.log)?;
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
        Command::Run => {
            let config = load::LoadConfig {
                database: settings.clickhouse.database.clone(),
                ..Default::default()
            };
            let stats = load::run(&settings, &config, mi_common::shutdown::on_signal()).await?;
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
