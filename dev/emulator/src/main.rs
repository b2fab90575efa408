//! `platform-emulator` — serves the Google Ads, Meta Marketing and GA4 Data APIs with
//! deterministic synthetic data. A development and test tool; see `dev/emulator/README.md`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use mi_emulator::date::Day;
use mi_emulator::generator::GenConfig;
use mi_emulator::{Config, GoogleErrorShape, ZeroRows, router};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ZeroRowsArg {
    Omit,
    Include,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ErrorShapeArg {
    Array,
    Object,
}

/// Platform emulator (dev/test tool): Google Ads, Meta Marketing and GA4 Data APIs with
/// deterministic synthetic data, OAuth endpoints, fault injection and ground truth.
#[derive(Debug, Parser)]
#[command(name = "platform-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MI_EMULATOR_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Seed of all synthetic data.
    #[arg(long, env = "MI_EMULATOR_SEED", default_value_t = 42)]
    seed: u64,
    /// The emulator's "today" (YYYY-MM-DD); default: the machine's current UTC date.
    #[arg(long, env = "MI_EMULATOR_TODAY", value_parser = parse_day)]
    today: Option<Day>,
    /// Days of history: data exists from today − history-days to yesterday.
    #[arg(long, env = "MI_EMULATOR_HISTORY_DAYS", default_value_t = 400)]
    history_days: u32,
    /// Campaign slots per ad account.
    #[arg(long, env = "MI_EMULATOR_CAMPAIGNS", default_value_t = 4)]
    campaigns: u32,
    /// Ad groups (ad sets) per campaign.
    #[arg(long, env = "MI_EMULATOR_AD_GROUPS", default_value_t = 3)]
    ad_groups: u32,
    /// Ads per ad group.
    #[arg(long, env = "MI_EMULATOR_ADS", default_value_t = 2)]
    ads: u32,
    /// Rows per searchStream batch.
    #[arg(long, env = "MI_EMULATOR_BATCH_ROWS", default_value_t = 10_000)]
    batch_rows: usize,
    /// Lifetime of Google access tokens, seconds.
    #[arg(long, env = "MI_EMULATOR_GOOGLE_TOKEN_TTL", default_value_t = 3_600)]
    google_token_ttl: u64,
    /// Lifetime of Meta long-lived tokens, seconds (default 60 days).
    #[arg(long, env = "MI_EMULATOR_META_TOKEN_TTL", default_value_t = 5_184_000)]
    meta_token_ttl: u64,
    /// Whether all-zero ad-day rows are omitted (as the platforms do) or returned.
    #[arg(
        long,
        env = "MI_EMULATOR_ZERO_ROWS",
        value_enum,
        default_value = "omit"
    )]
    zero_rows: ZeroRowsArg,
    /// searchStream error framing: `array` (what the real streaming REST method sends) or `object`.
    #[arg(
        long,
        env = "MI_EMULATOR_GOOGLE_ERROR_SHAPE",
        value_enum,
        default_value = "array"
    )]
    google_error_shape: ErrorShapeArg,
    /// Largest Meta page size (larger `limit` values are capped).
    #[arg(long, env = "MI_EMULATOR_META_MAX_LIMIT", default_value_t = 500)]
    meta_max_limit: usize,
    /// GA4 tokens per property per (emulated) day.
    #[arg(
        long,
        env = "MI_EMULATOR_GA4_TOKENS_PER_DAY",
        default_value_t = 200_000
    )]
    ga4_tokens_per_day: u64,
    /// GA4 tokens per property per hour.
    #[arg(
        long,
        env = "MI_EMULATOR_GA4_TOKENS_PER_HOUR",
        default_value_t = 40_000
    )]
    ga4_tokens_per_hour: u64,
    /// Base URL for Meta `paging.next` links (default: http://<Host header>).
    #[arg(long, env = "MI_EMULATOR_PUBLIC_URL")]
    public_url: Option<String>,
}

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD)"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        generator: GenConfig {
            seed: args.seed,
            campaigns: args.campaigns,
            ad_groups: args.ad_groups,
            ads: args.ads,
            history_days: args.history_days,
        },
        today: args.today,
        batch_rows: args.batch_rows.max(1),
        google_token_ttl_secs: args.google_token_ttl,
        meta_token_ttl_secs: args.meta_token_ttl,
        zero_rows: match args.zero_rows {
            ZeroRowsArg::Omit => ZeroRows::Omit,
            ZeroRowsArg::Include => ZeroRows::Include,
        },
        google_error_shape: match args.google_error_shape {
            ErrorShapeArg::Array => GoogleErrorShape::Array,
            ErrorShapeArg::Object => GoogleErrorShape::Object,
        },
        meta_max_limit: args.meta_max_limit.max(1),
        ga4_tokens_per_day: args.ga4_tokens_per_day,
        ga4_tokens_per_hour: args.ga4_tokens_per_hour,
        public_url: args.public_url,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        seed = config.generator.seed,
        today = %config.today.map_or_else(|| "machine UTC date".to_string(), |d| d.iso()),
        "platform emulator (dev/test tool) serving Google Ads, Meta and GA4"
    );
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    Ok(())
}
