//! Stream processors: SCD2 dimensions, validated facts with derived metrics, dead letters, exactly-once.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same code the service runs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mi_common::Settings;
use mi_common::cli::{self, GlobalArgs};
use mi_common::clients;

#[derive(Debug, Parser)]
#[command(
    name = "stream-processors",
    version,
    about = "Stream processors: SCD2 dimensions, validated facts with derived metrics, dead letters, exactly-once."
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
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: Settings = cli.global.load(|s: &Settings| &s.log)?;
    match cli.command {
        Command::Check => Ok(cli::report(&[
            clients::check_kafka(&settings.kafka).await,
            clients::check_schema_registry(&settings.schema_registry).await,
        ])),
    }
}
