//! Extraction throughput: rows/s from the platform emulator into Kafka through the real
//! extractors, with one worker and with two sharing the command topic, exactly-once on (one
//! Kafka transaction per run).
//!
//! Needs the local stack (`dev/stack up`). The emulator runs in this process, so it competes
//! with the workers for the machine's two cores: the figures are a floor, not a ceiling.
//!
//!     cargo run --release -p mi-bench --bin extract-bench -- --tenants 4 --days 30 --repeat 3

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mi_bench::{Spread, per_second, start_emulator};
use mi_common::{TenantId, clients, secret::SecretRef};
use mi_producers::settings::{
    ExtractSettings, Ga4Connection, GoogleAdsConnection, GoogleOAuth, MetaConnection,
    PlatformEndpoints, ProducersSettings, TenantConfig,
};
use mi_producers::{Runner, worker};
use mi_schemas::{Codec, ExtractionRun, Record, Trigger};

#[derive(Parser)]
struct Args {
    /// Tenants per repetition, each with one account on each platform.
    #[arg(long, default_value_t = 4)]
    tenants: u32,
    /// Days backfilled per account.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Repetitions per worker count.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<u32>,
}

fn secrets() -> anyhow::Result<(SecretRef, SecretRef, SecretRef, SecretRef, SecretRef)> {
    let dir = std::env::temp_dir().join(format!("mi-bench-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = |name: &str, value: &str| -> anyhow::Result<SecretRef> {
        let path = dir.join(name);
        std::fs::write(&path, value)?;
        Ok(SecretRef::File(path))
    };
    Ok((
        file("client-secret", "bench")?,
        file("refresh-token", "1//bench")?,
        file("developer-token", "bench")?,
        file("meta-app-secret", "bench")?,
        file("meta-token", "EAAbench")?,
    ))
}

fn tenants(n: u32) -> anyhow::Result<Vec<TenantConfig>> {
    let (client_secret, refresh_token, developer_token, app_secret, access_token) = secrets()?;
    let salt = (uuid::Uuid::new_v4().as_u128() % 900_000) as u64 + 100_000;
    let oauth = GoogleOAuth {
        client_id: "bench".into(),
        client_secret,
        refresh_token,
    };
    (0..n)
        .map(|i| {
            Ok(TenantConfig {
                id: TenantId::new(format!("bench-{salt}-{i}"))?,
                google_ads: Some(GoogleAdsConnection {
                    customer_ids: vec![format!("{}{i:03}", salt * 10)],
                    login_customer_id: None,
                    developer_token: developer_token.clone(),
                    oauth: oauth.clone(),
                }),
                meta_ads: Some(MetaConnection {
                    account_ids: vec![format!("act_{salt}{i:03}")],
                    app_id: "bench".into(),
                    app_secret: app_secret.clone(),
                    access_token: access_token.clone(),
                }),
                ga4: Some(Ga4Connection {
                    property_ids: vec![format!("{salt}{i:03}")],
                    oauth: oauth.clone(),
                }),
            })
        })
        .collect()
}

struct Sample {
    rows: u64,
    runs: u64,
    elapsed: Duration,
}

async fn once(
    url: &str,
    args: &Args,
    workers: u32,
    today: chrono::NaiveDate,
) -> anyhow::Result<Sample> {
    let infra = mi_common::settings::load::<mi_common::Settings>(None)?;
    let tenants = tenants(args.tenants)?;
    let settings = Arc::new(ProducersSettings {
        infra: infra.clone(),
        extract: ExtractSettings {
            backfill_days: args.days,
            requests_per_second: 1000,
            worker_group: format!("bench-{}", uuid::Uuid::new_v4()),
            ..Default::default()
        },
        platforms: PlatformEndpoints::emulator(url),
        tenants: tenants.clone(),
    });
    let codec = Arc::new(Codec::new(clients::schema_registry(&infra.schema_registry)));
    let since =
        clients::end_offsets(clients::kafka_config(&infra.kafka), ExtractionRun::TOPIC).await?;
    let mut runners = Vec::new();
    for w in 0..workers {
        let id = format!("bench-worker-{w}-{}", uuid::Uuid::new_v4());
        runners.push(Runner::new(
            settings.clone(),
            codec.clone(),
            &id,
            Some(today),
        )?);
    }
    clients::start_group_at_end(
        &infra.kafka,
        &settings.extract.worker_group,
        mi_schemas::ExtractCommand::TOPIC,
    )
    .await?;
    let ours: HashSet<String> = tenants.iter().map(|t| t.id.to_string()).collect();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let expected = worker::enqueue_all(&settings, codec.clone(), Trigger::Manual).await?;
    let serve =
        futures::future::join_all(runners.iter().map(|r| worker::work(r, shutdown.clone())));
    let observe = async {
        loop {
            let config = clients::read_committed_consumer_config(
                &infra.kafka,
                &format!("bench-read-{}", uuid::Uuid::new_v4()),
            );
            let mut runs = Vec::new();
            for (_, v) in clients::read_since(config, ExtractionRun::TOPIC, &since).await? {
                let run: ExtractionRun = codec.decode(&v).await?;
                if ours.contains(&run.tenant_id) {
                    runs.push(run);
                }
            }
            if runs.len() >= expected {
                shutdown.cancel();
                let elapsed = runs.iter().map(|r| r.finished_at).max().unwrap_or_default()
                    - runs.iter().map(|r| r.started_at).min().unwrap_or_default();
                let rows = runs
                    .iter()
                    .flat_map(|r| r.records.values())
                    .map(|n| *n as u64)
                    .sum();
                return anyhow::Ok(Sample {
                    rows,
                    runs: runs.len() as u64,
                    elapsed: elapsed.to_std().unwrap_or(start.elapsed()),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (_, sample) = tokio::join!(serve, observe);
    sample
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let today = chrono::Utc::now().date_naive();
    let url = start_emulator(today).await?;
    let infra = mi_common::settings::load::<mi_common::Settings>(None)?;
    mi_schemas::registry::Registry::new(&infra.schema_registry.url)
        .register_all()
        .await?;
    println!(
        "extract-bench: {} tenants x 3 platforms, {} days backfilled, {} repetitions",
        args.tenants, args.days, args.repeat
    );
    for &workers in &args.workers {
        let mut rates = Vec::new();
        let mut per_txn = Vec::new();
        for _ in 0..args.repeat {
            let s = once(&url, &args, workers, today).await?;
            let rate = per_second(s.rows, s.elapsed);
            println!(
                "  {workers} worker(s): {} records in {} runs, {:.2} s, {rate:.0} records/s",
                s.rows,
                s.runs,
                s.elapsed.as_secs_f64()
            );
            rates.push(rate);
            per_txn.push(s.rows as f64 / s.runs.max(1) as f64);
        }
        if let (Some(r), Some(t)) = (Spread::of(&rates), Spread::of(&per_txn)) {
            println!("{workers} worker(s): records/s {r}; records per transaction {t}");
        }
    }
    Ok(())
}
