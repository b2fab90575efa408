use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    mi_query_api::run(mi_query_api::Cli::parse()).await
}
