use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    mi_stream_processors::run(mi_stream_processors::Cli::parse()).await
}
