use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    mi_producers::run(mi_producers::Cli::parse()).await
}
