//! Query API: JWT auth and roles, the unified metrics engine, dashboards, Redis cache.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same router the service runs.

pub mod health;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mi_common::Settings;
use mi_common::cli::{self, GlobalArgs};
use mi_common::clients;

#[derive(Debug, Parser)]
#[command(name = "query-api", version, about = "Marketing IQ query API")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MI_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Check that ClickHouse and Redis answer, one line each; exit 1 if any fails.
    Check,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub settings: Settings,
    pub clickhouse: clickhouse::Client,
}

impl AppState {
    pub fn new(settings: Settings) -> Self {
        let clickhouse = clients::clickhouse(&settings.clickhouse);
        Self {
            settings,
            clickhouse,
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(health::routes())
        .with_state(state)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: Settings = cli.global.load(|s: &Settings| &s.log)?;
    match cli.command {
        Command::Check => Ok(cli::report(&[
            clients::check_clickhouse(&settings.clickhouse).await,
            clients::check_redis(&settings.redis).await,
        ])),
        Command::Serve { listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(%listen, "query API listening");
            let shutdown = mi_common::shutdown::on_signal();
            axum::serve(listener, router(AppState::new(settings)))
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .context("HTTP server failed")?;
            tracing::info!("query API stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
