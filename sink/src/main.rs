use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    mi_sink::run(mi_sink::Cli::parse()).await
}
