//! The whole pipeline under faults. The services run as separate OS processes — this test binary
//! re-executed as each of them ([`service_entry`]): a producer worker serving extraction commands
//! from `mi.commands.extract.v1`, the facts processor, the SCD2 processor and the sink, loading a
//! scratch ClickHouse database. Extraction commands for 3 tenants × 3 platforms are enqueued in
//! four waves with the library's enqueue function (a 10-day backfill, then incremental
//! re-extractions of the last 8 days, which the warehouse must absorb as restatements):
//!
//! 1. waves 1 and 2 at once; meanwhile every service is `kill -9`ed twice, each time while it is
//!    at work (the worker in the middle of a run, the others with progress committed and a
//!    backlog left), and restarted at once, as a supervisor would;
//! 2. wave 3, and while the worker serves it the Kafka broker restarts (`dev/stack restart
//!    kafka`);
//! 3. wave 4, served after the restart.
//!
//! Afterwards:
//! - every enqueued command was served by exactly one succeeded run;
//! - the warehouse, read with FINAL, holds per tenant, platform and day exactly the emulator's
//!   ground truth: rows, impressions, clicks, cost, conversions and conversion value (ads),
//!   rows, sessions, engaged sessions, transactions and revenue (GA4); the newest run of each
//!   tenant and platform is there in full;
//! - each dimension entity has exactly one version, current (nothing changed at the source);
//! - the query API's `exec-summary` dashboard shows the same numbers.
//!
//! A service that exits by itself is restarted within half a second, as a supervisor would, and
//! reported (not a failure in itself: the worker, for one, exits on purpose when the schema
//! registry is unreachable). The services' logs are in a temporary directory, kept when the test
//! fails or `MI_FAULTS_KEEP_LOGS` is set; `MI_FAULTS_KAFKA_DEBUG=cgrp` (any librdkafka `debug`
//! contexts) adds librdkafka's debug lines to them.
//!
//! Tuning, not semantics: every consumer runs with a 6 s `session.timeout.ms` (operator property
//! `kafka.properties`), so that a killed member's partitions move to its restarted successor in
//! seconds rather than librdkafka's default 45 s. Needs the local stack (`dev/stack up`); leaves it
//! healthy.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::NaiveDate;
use mi_common::{Platform, Settings, clients};
use mi_producers::settings::{ProducersSettings, TenantConfig};
use mi_producers::{Runner, worker};
use mi_query_api::auth::Role;
use mi_query_api::settings::{ApiSection, ApiSettings, AuthSettings};
use mi_query_api::{AppState, router};
use mi_schemas::{
    Codec, ExtractCommand, ExtractionRun, RawAd, RawAdGroup, RawAdPerformance, RawCampaign,
    RawConversion, RawGaSessions, Record, RunStatus, Trigger,
};
use mi_sink::settings::SinkSettings;
use mi_stream_processors::{ProcessorSection, ProcessorsSettings, Which, run_processor};
use mi_tests::{Emulator, producers_settings, secret_file, settings, tenant, today, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt;

/// Which service a re-executed test binary runs, and where its settings are.
const SERVICE_ENV: &str = "MI_FAULTS_SERVICE";
const CONFIG_ENV: &str = "MI_FAULTS_CONFIG";
/// librdkafka `debug` contexts for the services (e.g. `cgrp`), to diagnose a failure.
const KAFKA_DEBUG_ENV: &str = "MI_FAULTS_KAFKA_DEBUG";
const BACKFILL_DAYS: u32 = 10;
const SESSION_TIMEOUT_MS: u64 = 6_000;
const JWT_SECRET: &str = "it-faults-jwt-secret-of-at-least-32-bytes";
const FACT_INPUTS: [&str; 3] = [
    RawAdPerformance::TOPIC,
    RawGaSessions::TOPIC,
    RawConversion::TOPIC,
];
const SCD2_INPUTS: [&str; 3] = [RawCampaign::TOPIC, RawAdGroup::TOPIC, RawAd::TOPIC];
/// How long the pipeline may take, after the last wave, to load everything (it takes 30–70 s).
const CATCH_UP: Duration = Duration::from_secs(120);
const LOG_FILTER: &str = "warn,mi_producers=info,mi_stream_processors=info,mi_sink=info";

// ------------------------------------------------------------------------------------------
// The services, as child processes of this test binary.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Worker,
    Facts,
    Scd2,
    Sink,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Worker, Kind::Facts, Kind::Scd2, Kind::Sink];

    fn name(self) -> &'static str {
        match self {
            Kind::Worker => "worker",
            Kind::Facts => "facts",
            Kind::Scd2 => "scd2",
            Kind::Sink => "sink",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Everything the services need, written once as JSON for every incarnation of every service.
/// Secrets that settings never serialize (ClickHouse passwords) come from the environment the
/// children inherit.
#[derive(Serialize, Deserialize)]
struct ServiceConfig {
    today: NaiveDate,
    producers: ProducersSettings,
    processors: ProcessorsSettings,
    sink: SinkSettings,
}

/// The entry point of the re-executed test binary: runs the service named by
/// `MI_FAULTS_SERVICE` until it is killed. Without that variable (every ordinary test run) it
/// does nothing and passes.
#[test]
fn service_entry() {
    let Ok(name) = std::env::var(SERVICE_ENV) else {
        return;
    };
    let code = match serve_from_env(&name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faults service {name}: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn serve_from_env(name: &str) -> anyhow::Result<()> {
    let kind = Kind::parse(name).ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?;
    let path = std::env::var(CONFIG_ENV)?;
    let config: ServiceConfig = serde_json::from_slice(&std::fs::read(&path)?)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(kind, config))
}

/// The infrastructure settings with the secrets settings never serialize, from the environment.
fn with_secrets(mut infra: Settings) -> Settings {
    let env = settings();
    infra.clickhouse.password = env.clickhouse.password;
    infra.clickhouse.tenant_secret = env.clickhouse.tenant_secret;
    infra
}

async fn serve(kind: Kind, config: ServiceConfig) -> anyhow::Result<()> {
    // An orphan (the test process died without killing us) stops by itself.
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(3);
            }
        }
    });
    let ServiceConfig {
        today,
        mut producers,
        mut processors,
        mut sink,
    } = config;
    // `MI_FAULTS_KAFKA_DEBUG=cgrp,…`: librdkafka debug contexts in every service's log.
    if let Ok(debug) = std::env::var(KAFKA_DEBUG_ENV) {
        for kafka in [
            &mut producers.infra.kafka,
            &mut processors.infra.kafka,
            &mut sink.infra.kafka,
        ] {
            kafka.properties.insert("debug".into(), debug.clone());
        }
    }
    mi_common::telemetry::init(&producers.infra.log);
    let shutdown = mi_common::shutdown::on_signal();
    match kind {
        // As `producers worker --id 0` does.
        Kind::Worker => {
            producers.infra = with_secrets(producers.infra);
            let settings = Arc::new(producers);
            let codec = Arc::new(Codec::new(clients::schema_registry(
                &settings.infra.schema_registry,
            )));
            let txid = format!("{}-worker-0", settings.extract.transactional_id_prefix);
            let runner = Runner::new(settings, codec, &txid, Some(today))?;
            let served = worker::work(&runner, shutdown).await?;
            eprintln!("worker stopped after serving {served} commands");
        }
        // As `stream-processors run facts|scd2 --instance 0` does.
        Kind::Facts | Kind::Scd2 => {
            processors.infra = with_secrets(processors.infra);
            let which = if kind == Kind::Facts {
                Which::Facts
            } else {
                Which::Scd2
            };
            let stats = run_processor(which, &processors, "0", shutdown).await;
            eprintln!("processor stopped: {stats:?}");
        }
        // As `sink run` does.
        Kind::Sink => {
            sink.infra = with_secrets(sink.infra);
            let stats = mi_sink::load::run(&sink.infra, &sink.load_config(), shutdown).await?;
            eprintln!("sink stopped: {stats:?}");
        }
    }
    Ok(())
}

/// One `kill -9`: which service, when, and what it was doing at that moment.
struct Kill {
    kind: Kind,
    at: Duration,
    incarnation: u32,
    doing: String,
}

/// Starts the services, kills and restarts them, and restarts any that exits on its own.
struct Supervisor {
    exe: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    started: Instant,
    children: BTreeMap<Kind, Child>,
    incarnations: BTreeMap<Kind, u32>,
    /// Services that exited without being killed: a finding, reported.
    exits: Vec<String>,
}

impl Supervisor {
    fn log(&self, kind: Kind) -> PathBuf {
        self.dir.join(format!("{}.log", kind.name()))
    }

    fn spawn(&mut self, kind: Kind) -> anyhow::Result<()> {
        let n = self.incarnations.entry(kind).or_default();
        *n += 1;
        let n = *n;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(kind))?;
        writeln!(
            log,
            "=== faults: {} incarnation {n} at {:.1?} ===",
            kind.name(),
            self.started.elapsed()
        )?;
        let child = Command::new(&self.exe)
            .args([
                "--exact",
                "service_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVICE_ENV, kind.name())
            .env(CONFIG_ENV, &self.config)
            .env(
                "RUST_LOG",
                match std::env::var_os(KAFKA_DEBUG_ENV) {
                    Some(_) => format!("{LOG_FILTER},librdkafka=debug"),
                    None => LOG_FILTER.to_owned(),
                },
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children.insert(kind, child);
        Ok(())
    }

    /// `kill -9`, then a new incarnation right away.
    fn kill9(&mut self, kind: Kind) -> anyhow::Result<u32> {
        let incarnation = self.incarnations.get(&kind).copied().unwrap_or(0);
        if let Some(mut child) = self.children.remove(&kind) {
            child.kill()?;
            child.wait()?;
        }
        self.spawn(kind)?;
        Ok(incarnation)
    }

    /// Restarts every service that exited by itself, noting why.
    fn reap(&mut self) -> anyhow::Result<()> {
        let mut exited = Vec::new();
        for (kind, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                exited.push((*kind, status));
            }
        }
        for (kind, status) in exited {
            let note = format!(
                "{} exited by itself ({status}) at {:.1?}; log ends with:\n{}",
                kind.name(),
                self.started.elapsed(),
                tail(&self.log(kind), 12)
            );
            eprintln!("faults: {note}");
            self.exits.push(note);
            self.spawn(kind)?;
        }
        Ok(())
    }

    /// SIGTERM (graceful: open transactions aborted, nothing left hanging on the broker), then
    /// SIGKILL whatever is still running after 15 s.
    fn stop_all(&mut self) {
        for child in self.children.values() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in self.children.values_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lock(s: &Mutex<Supervisor>) -> std::sync::MutexGuard<'_, Supervisor> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Per incarnation of the worker, from its log: runs started, committed and failed.
fn worker_incarnations(log: &Path) -> Vec<[usize; 3]> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<[usize; 3]> = Vec::new();
    for line in text.lines() {
        if line.starts_with("=== faults: worker incarnation") {
            out.push([0; 3]);
        } else if let Some(last) = out.last_mut() {
            if line.contains("extraction started") {
                last[0] += 1;
            } else if line.contains("extraction committed") {
                last[1] += 1;
            } else if line.contains("extraction failed") {
                last[2] += 1;
            }
        }
    }
    out
}

/// Where a consumer group is: the sum of its committed offsets on `topics`, its lag (records and
/// transaction markers between the committed offsets and the ends of the partitions), and the
/// number of partitions.
async fn group_position(
    kafka: &mi_common::settings::KafkaSettings,
    group: &str,
    topics: &[&'static str],
) -> anyhow::Result<(i64, i64, i64)> {
    // Reading a group's offsets does not join it.
    let config = clients::read_committed_consumer_config(kafka, group);
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(10);
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                tpl.add_partition(topic, p.id());
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                ends.insert((topic, p.id()), high);
            }
        }
        let partitions = tpl.count() as i64;
        let committed = consumer.committed_offsets(tpl, timeout)?;
        let (mut sum, mut lag) = (0, 0);
        for e in committed.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            sum += at;
            let end = ends.get(&(e.topic(), e.partition())).copied().unwrap_or(at);
            lag += (end - at).max(0);
        }
        Ok((sum, lag, partitions))
    })
    .await?
}

/// `Some` while the worker's current incarnation has a run in flight, after committing at least
/// `committed_before` runs.
fn worker_mid_run(supervisor: &Mutex<Supervisor>, committed_before: usize) -> Option<String> {
    let log = lock(supervisor).log(Kind::Worker);
    let [started, committed, failed] = worker_incarnations(&log)
        .last()
        .copied()
        .unwrap_or_default();
    (committed >= committed_before && started > committed + failed).then(|| {
        format!("mid-run: {committed} run(s) committed by this incarnation, one in flight")
    })
}

/// What a service reads: its consumer group and input topics.
struct Inputs {
    group: String,
    topics: Vec<&'static str>,
}

/// Kills `kind` twice, each time once its current incarnation is demonstrably at work (the
/// worker: in the middle of a run, after committing one; the others: after committing progress
/// of their own, with a backlog still to do), or after `patience` without that.
async fn kill_twice(
    kind: Kind,
    supervisor: &Mutex<Supervisor>,
    inputs: Option<&Inputs>,
    patience: Duration,
) -> anyhow::Result<Vec<Kill>> {
    let kafka = settings().kafka;
    let mut kills = Vec::new();
    for _ in 0..2 {
        let since = Instant::now();
        let base = match inputs {
            Some(i) => group_position(&kafka, &i.group, &i.topics).await?.0,
            None => 0,
        };
        let doing = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let busy = match inputs {
                None => worker_mid_run(supervisor, 1),
                Some(i) => {
                    let (at, lag, partitions) = group_position(&kafka, &i.group, &i.topics).await?;
                    // More than one transaction marker per partition: records still to process.
                    (at > base && lag > partitions).then(|| {
                        format!(
                            "{} offsets committed by this incarnation, lag {lag}",
                            at - base
                        )
                    })
                }
            };
            if let Some(doing) = busy {
                break doing;
            }
            if since.elapsed() > patience {
                break format!("no work seen in {patience:?}");
            }
        };
        let incarnation = lock(supervisor).kill9(kind)?;
        let at = lock(supervisor).started.elapsed();
        eprintln!(
            "faults: kill -9 {} (incarnation {incarnation}) at {at:.1?}: {doing}",
            kind.name()
        );
        kills.push(Kill {
            kind,
            at,
            incarnation,
            doing,
        });
    }
    Ok(kills)
}

// ------------------------------------------------------------------------------------------
// The stack, the commands and the warehouse.
// ------------------------------------------------------------------------------------------

fn dev_stack(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/stack");
    let out = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Whatever happened, the stack is left healthy for the tests after this one: `dev/stack up`
/// (idempotent) when `dev/stack status` says otherwise. Returns whether it is healthy now, and
/// what was done.
fn leave_stack_healthy() -> (bool, String) {
    match dev_stack(&["status"]) {
        Ok((true, _)) => (true, String::new()),
        Ok((false, status)) => {
            let up = dev_stack(&["up"])
                .map(|(_, out)| out)
                .unwrap_or_else(|e| e.to_string());
            let now = dev_stack(&["status"]).unwrap_or_else(|e| (false, e.to_string()));
            (
                now.0,
                format!("status:\n{status}\ndev/stack up:\n{up}\nstatus:\n{}", now.1),
            )
        }
        Err(e) => (false, e.to_string()),
    }
}

/// Runs [`leave_stack_healthy`] when the test ends early (an error or a failed assertion).
struct StackGuard {
    armed: bool,
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        if self.armed {
            let (ok, what) = leave_stack_healthy();
            if !ok {
                eprintln!("faults: the stack could not be made healthy again: {what}");
            }
        }
    }
}

/// `dev/stack restart kafka`, then waits until the whole stack reports healthy and a Kafka
/// client gets metadata. Returns how long the broker was away.
async fn restart_broker(infra: &Settings) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (ok, out) = tokio::task::spawn_blocking(|| dev_stack(&["restart", "kafka"])).await??;
    eprintln!(
        "faults: dev/stack restart kafka ({:.1?}):\n{out}",
        started.elapsed()
    );
    anyhow::ensure!(ok, "dev/stack restart kafka failed:\n{out}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (ok, out) = tokio::task::spawn_blocking(|| dev_stack(&["status"])).await??;
        if ok && clients::check_kafka(&infra.kafka).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stack is not healthy 180 s after the broker restart:\n{out}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(started.elapsed())
}

/// One wave of commands (every tenant × platform) through the library's enqueue function,
/// retried while the broker is still coming back (a failed attempt's transaction is aborted:
/// nothing of it is enqueued).
async fn enqueue(settings: &ProducersSettings, codec: &Arc<Codec>) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match worker::enqueue_all(settings, codec.clone(), Trigger::Manual).await {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() < deadline => {
                eprintln!("faults: enqueue failed ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn read_since<R: Record>(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    ours: &BTreeSet<String>,
    tenant_of: impl Fn(&R) -> &str,
) -> anyhow::Result<Vec<R>> {
    let config = clients::read_committed_consumer_config(&settings().kafka, &unique("it-read"));
    let mut out = Vec::new();
    for (_, value) in clients::read_since(config, R::TOPIC, since).await? {
        if let Ok(r) = codec.decode::<R>(&value).await
            && ours.contains(tenant_of(&r))
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// Ads sums of one tenant, platform and day.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Ads {
    rows: u64,
    impressions: i64,
    clicks: i64,
    cost_micros: i64,
    conversions: f64,
    conversion_value_micros: i64,
}

/// GA4 sums of one tenant and day.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Ga {
    rows: u64,
    sessions: i64,
    engaged_sessions: i64,
    transactions: i64,
    revenue_micros: i64,
}

type AdsDays = BTreeMap<(String, String, String), Ads>;
type GaDays = BTreeMap<(String, String), Ga>;

/// The emulator's truth of every tenant over the backfilled days, per tenant (platform) and day.
async fn truth(
    emulator: &Emulator,
    tenants: &[TenantConfig],
    (from, to): (NaiveDate, NaiveDate),
) -> anyhow::Result<(AdsDays, GaDays)> {
    let (mut ads, mut ga) = (AdsDays::new(), GaDays::new());
    let n = |d: &Value, k: &str| {
        d[k].as_i64()
            .ok_or_else(|| anyhow::anyhow!("truth {k}: {d}"))
    };
    for t in tenants {
        let tenant = t.id.to_string();
        for platform in Platform::ALL {
            let account = account(t, platform);
            let truth = emulator.truth(platform, &account, from, to).await?;
            for d in truth["days"].as_array().into_iter().flatten() {
                if n(d, "rows")? == 0 {
                    continue;
                }
                let date = d["date"].as_str().unwrap_or_default().to_owned();
                if platform == Platform::Ga4 {
                    ga.insert(
                        (tenant.clone(), date),
                        Ga {
                            rows: n(d, "rows")? as u64,
                            sessions: n(d, "sessions")?,
                            engaged_sessions: n(d, "engaged_sessions")?,
                            transactions: n(d, "transactions")?,
                            revenue_micros: n(d, "purchase_revenue_micros")?,
                        },
                    );
                } else {
                    // A fact row is an ad-day on Meta, an ad-day-device on Google.
                    let rows = if platform == Platform::GoogleAds {
                        n(d, "device_rows")?
                    } else {
                        n(d, "rows")?
                    };
                    ads.insert(
                        (tenant.clone(), platform.to_string(), date),
                        Ads {
                            rows: rows as u64,
                            impressions: n(d, "impressions")?,
                            clicks: n(d, "clicks")?,
                            cost_micros: n(d, "cost_micros")?,
                            conversions: n(d, "conversions")? as f64,
                            conversion_value_micros: n(d, "conversion_value_micros")?,
                        },
                    );
                }
            }
        }
    }
    Ok((ads, ga))
}

fn account(t: &TenantConfig, platform: Platform) -> String {
    match platform {
        Platform::GoogleAds => t.google_ads.as_ref().map(|c| c.customer_ids[0].clone()),
        Platform::MetaAds => t.meta_ads.as_ref().map(|c| c.account_ids[0].clone()),
        Platform::Ga4 => t.ga4.as_ref().map(|c| c.property_ids[0].clone()),
    }
    .unwrap_or_default()
}

/// The warehouse's sums per tenant (platform) and day of `ours`, read with FINAL. (The scratch
/// database also receives the records of tests running alongside on the shared broker: the sink
/// loads every tenant.)
async fn loaded(ch: &clickhouse::Client, ours: &[String]) -> anyhow::Result<(AdsDays, GaDays)> {
    type AdsRow = (String, String, String, u64, i64, i64, i64, f64, i64);
    let rows: Vec<AdsRow> = ch
        .query(
            "SELECT toString(tenant_id), toString(platform), toString(date), count(), \
             sum(impressions), sum(clicks), sum(cost_micros), sum(conversions), \
             sum(conversion_value_micros) FROM fact_ad_performance FINAL \
             WHERE has(?, toString(tenant_id)) GROUP BY tenant_id, platform, date",
        )
        .bind(ours)
        .fetch_all()
        .await?;
    let ads = rows
        .into_iter()
        .map(|(t, p, d, rows, i, c, cost, conv, value)| {
            (
                (t, p, d),
                Ads {
                    rows,
                    impressions: i,
                    clicks: c,
                    cost_micros: cost,
                    conversions: conv,
                    conversion_value_micros: value,
                },
            )
        })
        .collect();
    type GaRow = (String, String, u64, i64, i64, i64, i64);
    let rows: Vec<GaRow> = ch
        .query(
            "SELECT toString(tenant_id), toString(date), count(), sum(sessions), \
             sum(engaged_sessions), sum(transactions), sum(purchase_revenue_micros) \
             FROM fact_ga_sessions FINAL WHERE has(?, toString(tenant_id)) \
             GROUP BY tenant_id, date",
        )
        .bind(ours)
        .fetch_all()
        .await?;
    let ga = rows
        .into_iter()
        .map(|(t, d, rows, s, e, tr, rev)| {
            (
                (t, d),
                Ga {
                    rows,
                    sessions: s,
                    engaged_sessions: e,
                    transactions: tr,
                    revenue_micros: rev,
                },
            )
        })
        .collect();
    Ok((ads, ga))
}

/// Fact rows per run id (FINAL): the newest run of each tenant and platform must be complete.
async fn rows_per_run(
    ch: &clickhouse::Client,
    ours: &[String],
) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows: Vec<(String, u64)> = ch
        .query(
            "SELECT run_id, count() FROM fact_ad_performance FINAL \
             WHERE has(?, toString(tenant_id)) GROUP BY run_id \
             UNION ALL SELECT run_id, count() FROM fact_ga_sessions FINAL \
             WHERE has(?, toString(tenant_id)) GROUP BY run_id",
        )
        .bind(ours)
        .bind(ours)
        .fetch_all()
        .await?;
    let mut out = BTreeMap::new();
    for (run, n) in rows {
        *out.entry(run).or_default() += n;
    }
    Ok(out)
}

/// Per dimension table and tenant: (live rows, current rows, distinct entities), FINAL.
async fn dimensions(
    ch: &clickhouse::Client,
    ours: &[String],
) -> anyhow::Result<BTreeMap<(String, String), [u64; 3]>> {
    let mut out = BTreeMap::new();
    for (table, key) in [
        ("dim_campaigns", "campaign_id"),
        ("dim_ad_groups", "ad_group_id"),
        ("dim_ads", "ad_id"),
    ] {
        let rows: Vec<(String, u64, u64, u64)> = ch
            .query(&format!(
                "SELECT toString(tenant_id), count(), countIf(is_current = 1), \
                 uniqExact(platform, account_id, {key}) FROM {table} FINAL WHERE has(?, toString(tenant_id)) GROUP BY tenant_id"
            ))
            .bind(ours)
            .fetch_all()
            .await?;
        for (tenant, live, current, entities) in rows {
            out.insert((table.to_owned(), tenant), [live, current, entities]);
        }
    }
    Ok(out)
}

/// What the run records and the commands say the warehouse must hold.
struct Accounting {
    commands: BTreeSet<String>,
    runs: Vec<ExtractionRun>,
}

impl Accounting {
    /// Problems with the runs: commands not (yet) served, served twice, failed runs.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut served: BTreeMap<&str, Vec<&ExtractionRun>> = BTreeMap::new();
        for r in &self.runs {
            match &r.command_id {
                Some(c) => served.entry(c.as_str()).or_default().push(r),
                None => out.push(format!("run {} without a command", r.run_id)),
            }
        }
        for c in &self.commands {
            match served.get(c.as_str()).map(Vec::as_slice) {
                None | Some([]) => out.push(format!("command {c} not served")),
                Some([r]) if r.status == RunStatus::Succeeded => {}
                Some(runs) => out.push(format!(
                    "command {c} served by {} run record(s): {:?}",
                    runs.len(),
                    runs.iter()
                        .map(|r| (
                            r.tenant_id.as_str(),
                            r.platform,
                            r.status,
                            r.error.as_deref()
                        ))
                        .collect::<Vec<_>>()
                )),
            }
        }
        out
    }

    /// The newest succeeded run of each tenant and platform.
    fn newest(&self) -> BTreeMap<(String, Platform), &ExtractionRun> {
        let mut out: BTreeMap<(String, Platform), &ExtractionRun> = BTreeMap::new();
        for r in self
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
        {
            let e = out.entry((r.tenant_id.clone(), r.platform)).or_insert(r);
            if r.started_at > e.started_at {
                *e = r;
            }
        }
        out
    }
}

/// Everything that must hold once the pipeline has caught up; empty when it all does.
#[allow(clippy::too_many_arguments)]
fn mismatches(
    tenants: &[TenantConfig],
    accounting: &Accounting,
    want: &(AdsDays, GaDays),
    got: &(AdsDays, GaDays),
    per_run: &BTreeMap<String, u64>,
    dims: &BTreeMap<(String, String), [u64; 3]>,
) -> Vec<String> {
    let mut out = accounting.problems();
    let diff = |out: &mut Vec<String>, what: &str, keys: Vec<String>| {
        if !keys.is_empty() {
            out.push(format!(
                "{what}: {} differ, e.g. {:?}",
                keys.len(),
                &keys[..keys.len().min(4)]
            ));
        }
    };
    let keys: BTreeSet<_> = want.0.keys().chain(got.0.keys()).collect();
    let ads: Vec<String> = keys
        .into_iter()
        .filter(|k| want.0.get(*k) != got.0.get(*k))
        .map(|k| format!("{k:?} want {:?} got {:?}", want.0.get(k), got.0.get(k)))
        .collect();
    diff(&mut out, "ads (tenant, platform, day)", ads);
    let keys: BTreeSet<_> = want.1.keys().chain(got.1.keys()).collect();
    let ga: Vec<String> = keys
        .into_iter()
        .filter(|k| want.1.get(*k) != got.1.get(*k))
        .map(|k| format!("{k:?} want {:?} got {:?}", want.1.get(k), got.1.get(k)))
        .collect();
    diff(&mut out, "ga4 (tenant, day)", ga);

    let newest = accounting.newest();
    for t in tenants {
        let tenant = t.id.to_string();
        let mut entities = [0u64; 3];
        for platform in Platform::ALL {
            let Some(run) = newest.get(&(tenant.clone(), platform)) else {
                out.push(format!("{tenant} {platform}: no succeeded run"));
                continue;
            };
            let topic = if platform == Platform::Ga4 {
                RawGaSessions::TOPIC
            } else {
                RawAdPerformance::TOPIC
            };
            let want = run.records.get(topic).copied().unwrap_or(0) as u64;
            let have = per_run.get(&run.run_id).copied().unwrap_or(0);
            if want != have {
                out.push(format!(
                    "{tenant} {platform}: newest run {} ({}..{}) has {have} of its {want} fact rows in the warehouse",
                    run.run_id, run.from_date, run.to_date
                ));
            }
            for (i, topic) in [RawCampaign::TOPIC, RawAdGroup::TOPIC, RawAd::TOPIC]
                .into_iter()
                .enumerate()
            {
                entities[i] += run.records.get(topic).copied().unwrap_or(0) as u64;
            }
        }
        for (i, table) in ["dim_campaigns", "dim_ad_groups", "dim_ads"]
            .into_iter()
            .enumerate()
        {
            let have = dims
                .get(&(table.to_owned(), tenant.clone()))
                .copied()
                .unwrap_or_default();
            let n = entities[i];
            if have != [n, n, n] {
                out.push(format!(
                    "{tenant} {table}: (live rows, current rows, entities) {have:?}, want {n} each: one version per entity"
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// The query API, in-process.
// ------------------------------------------------------------------------------------------

async fn get(app: &axum::Router, token: &str, uri: &str) -> anyhow::Result<(StatusCode, Value)> {
    let request = Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Money as ClickHouse computes it from micros (`sum(micros) / 1e6`, in f64).
fn amount(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// Money as the API shows it: rounded to the micro-unit.
fn money(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn ratio(n: f64, d: f64) -> Option<f64> {
    (d != 0.0).then(|| n / d).filter(|r| r.is_finite())
}

/// The exec-summary KPIs as documented (ratios of sums, null on a zero denominator).
fn ads_kpis(a: &Ads) -> Vec<(&'static str, Option<f64>)> {
    let (spend, value) = (amount(a.cost_micros), amount(a.conversion_value_micros));
    vec![
        ("spend", Some(money(spend))),
        ("impressions", Some(a.impressions as f64)),
        ("clicks", Some(a.clicks as f64)),
        ("conversions", Some(a.conversions)),
        ("conversion_value", Some(money(value))),
        ("ctr", ratio(a.clicks as f64, a.impressions as f64)),
        ("cpc", ratio(spend, a.clicks as f64).map(money)),
        ("cpa", ratio(spend, a.conversions).map(money)),
        ("roas", ratio(value, spend)),
    ]
}

fn ga_kpis(g: &Ga) -> Vec<(&'static str, Option<f64>)> {
    vec![
        ("sessions", Some(g.sessions as f64)),
        ("revenue", Some(money(amount(g.revenue_micros)))),
        ("transactions", Some(g.transactions as f64)),
        (
            "engagement_rate",
            ratio(g.engaged_sessions as f64, g.sessions as f64),
        ),
    ]
}

fn check(out: &mut Vec<String>, what: &str, got: &Value, want: Option<f64>) {
    let ok = match want {
        None => got.is_null(),
        Some(w) => got.as_f64() == Some(w),
    };
    if !ok {
        out.push(format!("{what}: got {got}, want {want:?}"));
    }
}

fn add(a: Ads, b: Ads) -> Ads {
    Ads {
        rows: a.rows + b.rows,
        impressions: a.impressions + b.impressions,
        clicks: a.clicks + b.clicks,
        cost_micros: a.cost_micros + b.cost_micros,
        conversions: a.conversions + b.conversions,
        conversion_value_micros: a.conversion_value_micros + b.conversion_value_micros,
    }
}

/// `exec-summary` of every tenant against the truth: its summary (the ads KPIs), the website
/// KPIs, and its daily time series (spend, clicks, conversions per day).
async fn check_api(
    database: &str,
    tenants: &[TenantConfig],
    want: &(AdsDays, GaDays),
    (from, to): (NaiveDate, NaiveDate),
) -> anyhow::Result<Vec<String>> {
    let mut infra = settings();
    infra.clickhouse.database = database.to_owned();
    infra.clickhouse.tenant_secret = Some("it-tenant-master-secret".to_owned().into());
    let state = AppState::new(ApiSettings {
        infra,
        api: ApiSection {
            auth: AuthSettings {
                secret: Some(secret_file(&unique("jwt"), JWT_SECRET)?),
                ..Default::default()
            },
            rate_limit: 1_000_000,
            ..Default::default()
        },
    })?;
    let app = router(state.clone());
    let mut out = Vec::new();
    for t in tenants {
        let tenant = t.id.to_string();
        let token = state.auth.mint_access("it-faults", &t.id, Role::Analyst)?;
        let (status, d) = get(
            &app,
            &token,
            &format!("/api/v1/dashboards/exec-summary?start_date={from}&end_date={to}"),
        )
        .await?;
        if status != StatusCode::OK {
            out.push(format!("{tenant} exec-summary: {status} {d}"));
            continue;
        }
        let mut days: BTreeMap<&str, Ads> = BTreeMap::new();
        for ((_, _, date), a) in want.0.iter().filter(|((t, _, _), _)| *t == tenant) {
            let e = days.entry(date.as_str()).or_default();
            *e = add(*e, *a);
        }
        days.retain(|_, a| a.impressions > 0);
        let total = days.values().fold(Ads::default(), |s, a| add(s, *a));
        for (m, v) in ads_kpis(&total) {
            check(
                &mut out,
                &format!("{tenant} exec-summary.summary.{m}"),
                &d["summary"][m],
                v,
            );
        }
        let web = d["widgets"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["id"] == "web-kpis"))
            .map(|w| w["totals"].clone())
            .unwrap_or_default();
        let ga =
            want.1
                .iter()
                .filter(|((t, _), _)| *t == tenant)
                .fold(Ga::default(), |s, (_, g)| Ga {
                    rows: s.rows + g.rows,
                    sessions: s.sessions + g.sessions,
                    engaged_sessions: s.engaged_sessions + g.engaged_sessions,
                    transactions: s.transactions + g.transactions,
                    revenue_micros: s.revenue_micros + g.revenue_micros,
                });
        for (m, v) in ga_kpis(&ga) {
            check(
                &mut out,
                &format!("{tenant} exec-summary.web-kpis.{m}"),
                &web[m],
                v,
            );
        }
        let series = d["time_series"].as_array().cloned().unwrap_or_default();
        let dates: Vec<&str> = series.iter().filter_map(|r| r["date"].as_str()).collect();
        if !dates.iter().copied().eq(days.keys().copied()) {
            out.push(format!(
                "{tenant} exec-summary.time_series dates {dates:?}, want {:?}",
                days.keys().collect::<Vec<_>>()
            ));
        }
        for r in &series {
            let date = r["date"].as_str().unwrap_or_default();
            let a = days.get(date).copied().unwrap_or_default();
            let kpis = ads_kpis(&a);
            for m in ["spend", "clicks", "conversions"] {
                let v = kpis.iter().find(|(k, _)| *k == m).and_then(|(_, v)| *v);
                check(
                    &mut out,
                    &format!("{tenant} exec-summary.time_series.{date}.{m}"),
                    &r[m],
                    v,
                );
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The test.
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_service_and_a_broker_restart_lose_and_duplicate_nothing()
-> anyhow::Result<()> {
    let started = Instant::now();
    let s = settings();
    let emulator = Emulator::start(today()).await?;
    let tenants = vec![tenant(91)?, tenant(92)?, tenant(93)?];
    let ours: BTreeSet<String> = tenants.iter().map(|t| t.id.to_string()).collect();
    let window = (
        today() - chrono::Days::new(u64::from(BACKFILL_DAYS)),
        today() - chrono::Days::new(1),
    );

    // A scratch warehouse, and fresh groups and transactional ids starting at the current end of
    // their topics (other tests' records on the shared broker stay out).
    let database = unique("mi_it_faults");
    let ch = clients::clickhouse(&s.clickhouse);
    mi_sink::migrate::migrate(&ch, &database).await?;
    let ch = ch.with_database(&database);

    let mut infra = s.clone();
    infra.clickhouse.database = database.clone();
    infra.log.filter = LOG_FILTER.into();
    for (k, v) in [
        ("session.timeout.ms", SESSION_TIMEOUT_MS.to_string()),
        ("heartbeat.interval.ms", "1500".to_owned()),
    ] {
        infra.kafka.properties.insert(k.into(), v);
    }
    let mut producers = producers_settings(&emulator, tenants.clone());
    producers.infra = infra.clone();
    producers.extract.backfill_days = BACKFILL_DAYS;
    producers.extract.worker_group = unique("it-faults-worker");
    producers.extract.transactional_id_prefix = unique("it-faults");
    let processors = ProcessorsSettings {
        infra: infra.clone(),
        processors: ProcessorSection {
            tenants: ours.iter().cloned().collect(),
            group_prefix: unique("it-faults"),
            max_batch: 2_000,
            max_batch_wait_ms: 300,
            ..Default::default()
        },
    };
    let mut sink = SinkSettings {
        infra: infra.clone(),
        ..Default::default()
    };
    sink.sink.group = unique("it-faults-sink");
    sink.sink.batch_rows = 5_000;
    sink.sink.batch_wait_ms = 200;
    sink.sink.session_timeout_ms = SESSION_TIMEOUT_MS;

    let group_prefix = processors.processors.group_prefix.clone();
    let sink_group = sink.sink.group.clone();
    clients::start_group_at_end(
        &s.kafka,
        &producers.extract.worker_group,
        ExtractCommand::TOPIC,
    )
    .await?;
    for (which, topics) in [("facts", FACT_INPUTS), ("scd2", SCD2_INPUTS)] {
        for topic in topics {
            clients::start_group_at_end(&s.kafka, &format!("{group_prefix}-{which}"), topic)
                .await?;
        }
    }
    for topic in mi_sink::load::TOPICS {
        clients::start_group_at_end(&s.kafka, &sink_group, topic).await?;
    }
    let commands_since = mi_tests::offsets(ExtractCommand::TOPIC).await?;
    let runs_since = mi_tests::offsets(ExtractionRun::TOPIC).await?;

    let dir = std::env::temp_dir().join(unique("mi-faults"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("services.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&ServiceConfig {
            today: today(),
            producers: producers.clone(),
            processors,
            sink,
        })?,
    )?;
    eprintln!("faults: service logs in {}", dir.display());

    let supervisor = Arc::new(Mutex::new(Supervisor {
        exe: std::env::current_exe()?,
        config,
        dir: dir.clone(),
        started,
        children: BTreeMap::new(),
        incarnations: BTreeMap::new(),
        exits: Vec::new(),
    }));
    for kind in Kind::ALL {
        lock(&supervisor).spawn(kind)?;
    }
    // The supervisor's watch: a service that exits by itself is restarted within half a second.
    let watching = tokio_util::sync::CancellationToken::new();
    let watch = {
        let (supervisor, watching) = (supervisor.clone(), watching.clone());
        tokio::spawn(async move {
            while !watching.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = lock(&supervisor).reap() {
                    eprintln!("faults: supervisor: {e}");
                }
            }
        })
    };

    let codec = Arc::new(Codec::new(clients::schema_registry(&s.schema_registry)));
    // Two waves queued at once: the worker has work for a while, and so has everything
    // downstream of it. Meanwhile each service is killed twice while at work.
    let mut enqueued = 0;
    for wave in 1..=2 {
        enqueued += enqueue(&producers, &codec).await?;
        eprintln!("faults: wave {wave} enqueued at {:.1?}", started.elapsed());
    }
    let facts_inputs = Inputs {
        group: format!("{group_prefix}-facts"),
        topics: FACT_INPUTS.to_vec(),
    };
    let scd2_inputs = Inputs {
        group: format!("{group_prefix}-scd2"),
        topics: SCD2_INPUTS.to_vec(),
    };
    let sink_inputs = Inputs {
        group: sink_group.clone(),
        topics: mi_sink::load::TOPICS.to_vec(),
    };
    let patience = Duration::from_secs(25);
    let (w, f, d, k) = tokio::join!(
        kill_twice(Kind::Worker, &supervisor, None, patience),
        kill_twice(Kind::Facts, &supervisor, Some(&facts_inputs), patience),
        kill_twice(Kind::Scd2, &supervisor, Some(&scd2_inputs), patience),
        kill_twice(Kind::Sink, &supervisor, Some(&sink_inputs), patience),
    );
    let mut kills: Vec<Kill> = [w?, f?, d?, k?].into_iter().flatten().collect();
    kills.sort_by_key(|k| k.at);

    // A third wave, and the broker goes away and comes back while the worker serves it; then a
    // last wave, which the services must serve after the restart.
    enqueued += enqueue(&producers, &codec).await?;
    eprintln!("faults: wave 3 enqueued at {:.1?}", started.elapsed());
    let mut stack_guard = StackGuard { armed: true };
    let patient = Instant::now();
    let worker_was = loop {
        if let Some(doing) = worker_mid_run(&supervisor, 0) {
            break doing;
        }
        if patient.elapsed() > patience {
            break format!("no run in flight for {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "faults: broker restart at {:.1?}, worker {worker_was}",
        started.elapsed()
    );
    let broker_away = restart_broker(&s).await?;
    enqueued += enqueue(&producers, &codec).await?;
    eprintln!("faults: wave 4 enqueued at {:.1?}", started.elapsed());

    // Wait until the warehouse holds everything, checking it all each time.
    let want = truth(&emulator, &tenants, window).await?;
    let deadline = Instant::now() + CATCH_UP;
    let mut last_report = Instant::now();
    let (accounting, problems) = loop {
        let commands: BTreeSet<String> =
            read_since::<ExtractCommand>(&codec, &commands_since, &ours, |c| &c.tenant_id)
                .await?
                .into_iter()
                .map(|c| c.command_id)
                .collect();
        let runs =
            read_since::<ExtractionRun>(&codec, &runs_since, &ours, |r| &r.tenant_id).await?;
        let accounting = Accounting { commands, runs };
        let ours: Vec<String> = ours.iter().cloned().collect();
        let got = loaded(&ch, &ours).await?;
        let per_run = rows_per_run(&ch, &ours).await?;
        let dims = dimensions(&ch, &ours).await?;
        let problems = mismatches(&tenants, &accounting, &want, &got, &per_run, &dims);
        if problems.is_empty() || Instant::now() > deadline {
            break (accounting, problems);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "faults: waiting at {:.0?}: {problems:#?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let converged = started.elapsed();
    watching.cancel();
    let _ = watch.await;
    let (exits, worker_log) = {
        let mut sup = lock(&supervisor);
        sup.stop_all();
        (sup.exits.clone(), sup.log(Kind::Worker))
    };
    let healthy = tokio::task::spawn_blocking(leave_stack_healthy).await?;
    stack_guard.armed = false;

    eprintln!(
        "faults: {} commands enqueued, {} run records",
        enqueued,
        accounting.runs.len()
    );
    for k in &kills {
        eprintln!(
            "faults: kill -9 {:<6} incarnation {} at {:>6.1?}: {}",
            k.kind.name(),
            k.incarnation,
            k.at,
            k.doing
        );
    }
    for (n, [started_runs, committed, failed]) in
        worker_incarnations(&worker_log).iter().enumerate()
    {
        eprintln!(
            "faults: worker incarnation {}: {started_runs} runs started, {committed} committed, {failed} failed",
            n + 1
        );
    }
    eprintln!(
        "faults: broker restarted with the worker {worker_was}, away {broker_away:.1?}; services exited by themselves: {}; converged at {converged:.1?}",
        exits.len()
    );
    for e in &exits {
        eprintln!("faults: {e}");
    }

    assert!(
        healthy.0 && healthy.1.is_empty(),
        "the stack must be healthy at the end without help:\n{}",
        healthy.1
    );
    assert_eq!(enqueued, 36, "four waves of 3 tenants × 3 platforms");
    assert_eq!(
        accounting.commands.len(),
        36,
        "the enqueued commands on the topic"
    );
    assert_eq!(kills.len(), 8, "two kills of every service");
    assert!(
        problems.is_empty(),
        "after {} kills and a broker restart, {CATCH_UP:?} after the last wave the warehouse still differs from the source ({} problems; logs in {}):\n  {}\nservices that exited by themselves:\n{}",
        kills.len(),
        problems.len(),
        dir.display(),
        problems.join("\n  "),
        exits.join("\n")
    );

    // The dashboards show the same numbers.
    let api = check_api(&database, &tenants, &want, window).await?;
    assert!(
        api.is_empty(),
        "exec-summary differs from the truth ({} checks):\n  {}",
        api.len(),
        api.join("\n  ")
    );
    eprintln!(
        "faults: warehouse and dashboards equal the truth; {:.1?} in all",
        started.elapsed()
    );
    if std::env::var_os("MI_FAULTS_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
