//! The whole-pipeline benchmark (DESIGN §9): fact rows per second end to end with exactly-once
//! on, freshness, memory and CPU of each service, each stage's own capacity, and the two
//! ceilings the pipeline is judged against — all in one run, repeated (`--reps`).
//!
//! One repetition:
//!
//! 1. **The pipeline.** A scratch ClickHouse database is migrated; fresh consumer groups and
//!    transactional ids are started at the end of their topics; the real release binaries
//!    `stream-processors run facts` and `sink run` are started as child processes (settings in a
//!    TOML file of their own) and given time to join their groups. Then this process produces
//!    N synthetic raw ad-performance rows (tenants × days × rows per day) to
//!    `mi.raw.ad_performance.v1` as the extractors do — `mi_producers::publish::TxProducer`, one
//!    Kafka transaction per tenant and day, Avro through the schema registry, keyed by tenant,
//!    `--producers` workers at once — and the clock runs until `SELECT count() FROM
//!    fact_ad_performance` (without FINAL: answered from part metadata, cheap enough to ask every
//!    100 ms) reaches N. That moment counts only once a `FINAL` count of our tenants equals N and
//!    their sums of impressions, clicks and cost equal the source's: exactly once, not "at least
//!    N rows".
//! 2. **Freshness.** One row in `--probe-every` is a probe (its own ad id, dated 2001-01-01, so
//!    that the poll query reads one tiny partition); the poller looks for probes every
//!    `--poll-ms` and records produce call → first seen in ClickHouse. Under the full load that is
//!    mostly queueing behind the backlog, so a light trickle follows (`--trickle-rate` rows/s for
//!    `--trickle-seconds`, a transaction every 100 ms, one probe in `--trickle-probe-every`).
//! 3. **Memory and CPU.** A sampler thread reads `/proc/<pid>/status` (VmRSS) and
//!    `/proc/<pid>/stat` (utime + stime) of each service, of this process (the producer), of the
//!    Kafka broker and of the chDB front (found by the port they listen on), and the machine's
//!    `/proc/stat`, every `--sample-ms`: peak and median RSS, CPU seconds, average cores and CPU
//!    seconds per million rows, and how much of the machine everything else used.
//! 4. **Drain** (`--drain-rows`, default N/2): the services stopped, more rows are produced
//!    (the producers alone), then the processor is started alone over that backlog until its
//!    committed offsets reach the end, then the sink alone until ClickHouse has every row. In
//!    the pipelined run every stage runs at the slowest one's pace; here each shows its own.
//! 5. **Ceilings**, with the services stopped: Kafka's own `ProducerPerformance` (via
//!    `dev/stack kafka-class`) with N records of our average value size into a scratch topic
//!    with the raw topic's partition count, and a direct RowBinary insert of the same N fact rows
//!    into a scratch `fact_ad_performance` of the same engine, in the sink's batch size with a
//!    deduplication token per batch as the sink sends (the sink bench's ceiling).
//!
//! Where the time goes: producer, processor and sink finish times are separated (the processor
//! is done when its committed input offsets reach the end of what was produced; the sink when
//! ClickHouse has every row); each stage's steady rate is the slope between 10 % and 90 % of its
//! progress; the producers time their publishing and their commits; the sink's batches are read
//! back from its audit table. `--perf` adds a `perf record` profile of each service and uprobes
//! on librdkafka's transaction calls in the processor (per-phase time of its transactions);
//! `--diagnose-transactions N` times N transactions of one producer phase by phase and exits.
//!
//! Needs the local stack (`dev/stack up`) and release builds of the services beside this program
//! (or `--bin-dir`):
//!
//!     cargo build --release -p mi-stream-processors -p mi-sink -p mi-bench
//!     target/release/pipeline-bench --help
//!     target/release/pipeline-bench --rows 200000 --reps 1            # a quick look
//!     target/release/pipeline-bench                                   # 1.5M rows × 3 repetitions
//!
//! On a shared broker other people's processors may read the rows produced here and other
//! people's rows reach the services started here; the processor is therefore told which tenants
//! are ours (others' records become dead letters, not duplicate facts on the shared fact topic),
//! and every count that decides anything is restricted to our tenants and taken with FINAL.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use mi_bench::{ProcSampler, ProcUsage, Spread, kafka_partition, per_second, quantile};
use mi_common::settings::KafkaSettings;
use mi_common::{Platform, Settings, TenantId, clients};
use mi_producers::publish::TxProducer;
use mi_schemas::{Codec, FactAdPerformance, RawAdPerformance, Record};
use mi_sink::rows::Loadable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// DESIGN §9 targets this bench measures.
const TARGET_ROWS_PER_S: f64 = 100_000.0;
const TARGET_FRESHNESS_P99_MS: f64 = 5_000.0;
const TARGET_PCT_OF_KAFKA: f64 = 50.0;
const TARGET_RSS_MB: f64 = 200.0;

/// The date every probe row carries: a month of its own, so the probe query prunes to one tiny
/// partition instead of scanning the facts (valid: the processor accepts dates from 2000 on).
const PROBE_DATE: &str = "2001-01-01";

#[derive(Debug, Parser)]
#[command(
    name = "pipeline-bench",
    about = "Whole-pipeline benchmark (DESIGN §9): synthetic raw rows → the real stream-processors and sink binaries → ClickHouse, exactly-once; freshness; RSS/CPU per service; Kafka producer-perf and direct-insert ceilings.",
    long_about = None
)]
struct Args {
    /// Tenants (each one partition's worth of keys; names are chosen so that they spread evenly
    /// over the raw topic's partitions).
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Days of data per tenant [default: 30, or as many as --rows needs].
    #[arg(long)]
    days: Option<usize>,
    /// Rows per tenant and day; each tenant-day is one producer transaction (one extraction run).
    #[arg(long, default_value_t = 5_000)]
    rows_per_day: usize,
    /// Concurrent transactional producers (extraction workers), each with its share of the
    /// tenants. A commit blocks its producer, and through `TxProducer` every commit costs at
    /// least 100 ms (rdkafka's flush; see `--diagnose-transactions`), so one producer alone tops
    /// out near rows-per-day / 0.1 s: several keep the source from being the bottleneck.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Total rows instead: sets the days at --rows-per-day rows per transaction (so that a small
    /// run has the full run's transaction size), or the rows per day if --days is given too;
    /// rounded up to whole tenant-days.
    #[arg(long)]
    rows: Option<usize>,
    /// Repetitions; every figure is reported as min / median / max over them.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Where `stream-processors` and `sink` are (default: beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The repository (for `dev/stack` and `.stack/run/*.pid`); default: the one this was built from.
    #[arg(long)]
    repo: Option<PathBuf>,
    /// JSON result.
    #[arg(long, default_value = "target/pipeline-bench.json")]
    out: PathBuf,
    /// Markdown report.
    #[arg(long, default_value = "target/pipeline-bench.md")]
    report: PathBuf,
    /// The services' logs and settings files go here.
    #[arg(long, default_value = "target/pipeline-bench-logs")]
    logs: PathBuf,
    /// One row in this many is a freshness probe during the full load.
    #[arg(long, default_value_t = 1_000)]
    probe_every: usize,
    /// Rows per second of the light trickle (0 skips it).
    #[arg(long, default_value_t = 200)]
    trickle_rate: u32,
    /// Seconds of the trickle.
    #[arg(long, default_value_t = 20)]
    trickle_seconds: u32,
    /// Rows of the drain phase, where each stage runs alone against a backlog: the producer with
    /// no consumer running, then the processor alone over that backlog, then the sink alone over
    /// the facts — each stage's own capacity, which the pipelined run cannot separate (its
    /// stages run at the slowest one's pace). Default: half of the main run; 0 skips it.
    #[arg(long)]
    drain_rows: Option<usize>,
    /// One trickle row in this many is a probe.
    #[arg(long, default_value_t = 5)]
    trickle_probe_every: usize,
    /// How often ClickHouse is asked for the row count and the probes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// How often RSS and CPU are sampled, in milliseconds.
    #[arg(long, default_value_t = 200)]
    sample_ms: u64,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Skip Kafka's ProducerPerformance ceiling.
    #[arg(long)]
    no_kafka_perf: bool,
    /// Skip the direct-insert ceiling.
    #[arg(long)]
    no_insert_ceiling: bool,
    /// Producer properties of the ProducerPerformance run (bootstrap.servers is added). The
    /// default mirrors our transactional producer: acks=all, lz4, 20 ms linger, 1 MB batches.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "acks=all,compression.type=lz4,linger.ms=20,batch.size=1000000,enable.idempotence=true"
    )]
    kafka_perf_props: Vec<String>,
    /// A librdkafka property for every Kafka client of the pipeline — this bench's producers and
    /// both services (their `[kafka.properties]`), e.g. `--kafka-prop retry.backoff.ms=10`.
    /// Repeatable.
    #[arg(long = "kafka-prop", value_name = "KEY=VALUE")]
    kafka_props: Vec<String>,
    /// Profile each service with `perf record` during the full load (needs perf and permission).
    #[arg(long)]
    perf: bool,
    /// Only time N transactions of one producer configured like the extractors' (begin, send
    /// --rows-per-day records, flush, commit) and print where each one's time goes, then exit.
    /// With `RUST_LOG=rdkafka=debug --kafka-prop debug=eos` librdkafka says why.
    #[arg(long, value_name = "N")]
    diagnose_transactions: Option<usize>,
    /// Keep the scratch databases (their names are printed).
    #[arg(long)]
    keep: bool,
}

/// What to produce: tenants × days × rows per day, every `probe_every`-th row a probe.
struct Plan {
    tag: String,
    run_id: String,
    tenants: Vec<String>,
    accounts: Vec<String>,
    days: Vec<NaiveDate>,
    rows_per_day: usize,
    probe_every: usize,
    extracted_at: DateTime<Utc>,
    probe_date: NaiveDate,
}

const DEVICES: [&str; 3] = ["MOBILE", "DESKTOP", "TABLET"];
const COUNTRIES: [&str; 4] = ["US", "GB", "DE", "FR"];

/// Sums of what was produced, compared with ClickHouse's FINAL sums.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Totals {
    rows: u64,
    impressions: i64,
    clicks: i64,
    cost_micros: i64,
}

impl Totals {
    fn add(&mut self, r: &RawAdPerformance) {
        self.rows += 1;
        self.impressions += r.impressions;
        self.clicks += r.clicks;
        self.cost_micros += r.cost_micros;
    }

    fn plus(self, o: Totals) -> Totals {
        Totals {
            rows: self.rows + o.rows,
            impressions: self.impressions + o.impressions,
            clicks: self.clicks + o.clicks,
            cost_micros: self.cost_micros + o.cost_micros,
        }
    }
}

impl Plan {
    fn new(args: &Args, partitions: u32) -> anyhow::Result<Self> {
        ensure!(
            args.tenants > 0 && args.days != Some(0) && args.rows_per_day > 0,
            "--tenants, --days and --rows-per-day must be positive"
        );
        let (n_days, per_day) = match (args.rows, args.days) {
            (Some(rows), Some(days)) => (days, rows.div_ceil(args.tenants * days).max(1)),
            (Some(rows), None) => (
                rows.div_ceil(args.tenants * args.rows_per_day).max(1),
                args.rows_per_day,
            ),
            (None, days) => (days.unwrap_or(30), args.rows_per_day),
        };
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let tenants = balanced_tenants(&tag, args.tenants, partitions)?;
        let today = Utc::now().date_naive();
        let days = (1..=n_days as u64)
            .rev()
            .map(|back| today - chrono::Days::new(back))
            .collect();
        Ok(Self {
            run_id: format!("pipeline-bench-{tag}"),
            accounts: (0..args.tenants).map(|t| format!("9{t:09}")).collect(),
            tag,
            tenants,
            days,
            rows_per_day: per_day,
            probe_every: args.probe_every.max(1),
            extracted_at: Utc::now(),
            probe_date: NaiveDate::parse_from_str(PROBE_DATE, "%Y-%m-%d")?,
        })
    }

    fn total(&self) -> usize {
        self.tenants.len() * self.days.len() * self.rows_per_day
    }

    /// Row `j` of tenant `t` on day `d`, `i`-th overall; a probe when `probe`.
    fn row(&self, d: usize, t: usize, j: usize, i: usize, probe: bool) -> RawAdPerformance {
        // Deterministic, valid (clicks ≤ impressions, reach ≤ impressions), varied enough that
        // Avro sizes and ClickHouse compression are not those of constant rows.
        let impressions = 200 + ((i as i64 * 7_919) % 20_000);
        let clicks = impressions / (15 + (i as i64 % 40));
        let cost_micros = clicks * (80_000 + (i as i64 % 97) * 5_000);
        let meta = t % 2 == 1;
        RawAdPerformance {
            tenant_id: self.tenants[t].clone(),
            platform: if meta {
                Platform::MetaAds
            } else {
                Platform::GoogleAds
            },
            account_id: self.accounts[t].clone(),
            extracted_at: self.extracted_at,
            run_id: self.run_id.clone(),
            date: if probe {
                self.probe_date
            } else {
                self.days[d % self.days.len()]
            },
            campaign_id: format!("{}", 20_000_000 + j % 40),
            ad_group_id: format!("{}", 30_000_000 + j % 400),
            ad_id: if probe {
                format!("probe-{i}")
            } else {
                format!("{}", 40_000_000 + j)
            },
            device: Some(DEVICES[j % DEVICES.len()].to_owned()),
            country: Some(COUNTRIES[(j / DEVICES.len()) % COUNTRIES.len()].to_owned()),
            currency: if meta { "EUR" } else { "USD" }.to_owned(),
            impressions,
            clicks,
            cost_micros,
            conversions: (clicks / 12) as f64 + if i.is_multiple_of(2) { 0.5 } else { 0.0 },
            conversion_value_micros: cost_micros * 3 / 2,
            video_views: Some(if meta { impressions / 5 } else { 0 }),
            engagements: Some(clicks * 2),
            reach: meta.then_some(impressions * 3 / 4),
        }
    }

    /// The `i`-th row in production order: day by day, tenant by tenant (one transaction
    /// each), `rows_per_day` rows each.
    fn row_at(&self, i: usize) -> RawAdPerformance {
        let j = i % self.rows_per_day;
        let tenant_day = i / self.rows_per_day;
        let t = tenant_day % self.tenants.len();
        let d = tenant_day / self.tenants.len();
        self.row(d, t, j, i, i.is_multiple_of(self.probe_every))
    }

    /// The `i`-th row of the drain phase: like `row_at`, with ad ids of its own and no probes.
    fn drain_row(&self, i: usize) -> RawAdPerformance {
        let mut r = self.row_at(i);
        r.date = self.days[(i / self.rows_per_day / self.tenants.len()) % self.days.len()];
        r.ad_id = format!("drain-{i}");
        r
    }

    /// Every row in production order.
    fn rows(&self) -> impl Iterator<Item = RawAdPerformance> + '_ {
        (0..self.total()).map(|i| self.row_at(i))
    }

    /// Row `seq` of the trickle: tenants in turn, ad ids of its own; a probe when `probe`.
    fn trickle_row(&self, seq: usize, probe: bool) -> RawAdPerformance {
        let t = seq % self.tenants.len();
        let mut r = self.row(seq, t, seq, seq, probe);
        r.ad_id = if probe {
            format!("probe-trickle-{seq}")
        } else {
            format!("trickle-{seq}")
        };
        r
    }

    /// `IN (…)` of our tenants (ids validated as `TenantId`s: nothing to escape).
    fn tenant_list(&self) -> String {
        let quoted: Vec<String> = self.tenants.iter().map(|t| format!("'{t}'")).collect();
        format!("({})", quoted.join(","))
    }
}

/// Tenant ids that land on the raw topic's partitions in turn (Kafka's murmur2 partitioner, as
/// our producers use), so that every repetition loads every partition alike.
fn balanced_tenants(tag: &str, n: usize, partitions: u32) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|t| {
            let want = (t as u32) % partitions.max(1);
            (0..10_000)
                .map(|k| format!("pipe-{tag}-{t:02}-{k}"))
                .find(|name| kafka_partition(name.as_bytes(), partitions) == want)
                .ok_or_else(|| anyhow!("no tenant name for partition {want}"))
                .and_then(|name| Ok(TenantId::new(name)?.to_string()))
        })
        .collect()
}

/// A service under test, a child process; killed if still running when dropped.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        config: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the service has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM (the services shut down gracefully on it), SIGKILL after 20 s.
    fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "  {} did not stop within 20 s of SIGTERM; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to one process we started, by pid (std has only SIGKILL; the workspace forbids
/// the `unsafe` of `libc::kill`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// WARN and ERROR lines of a service's log.
fn problems(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| {
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count()
    })
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Which phase a probe belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Trickle,
}

/// What the ClickHouse poller saw.
#[derive(Default)]
struct Observed {
    /// `count()` of the fact table (no FINAL, every tenant) over time.
    counts: Vec<(Instant, u64)>,
    /// Probes produced and not yet seen: ad id → (phase, produce call).
    pending: HashMap<String, (Phase, Instant)>,
    /// Probe latencies, milliseconds.
    freshness: Vec<(Phase, f64)>,
    poll_errors: u64,
    last_error: Option<String>,
}

type Shared = Arc<Mutex<Observed>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Asks ClickHouse every `every` for the row count and, while probes are pending, for the probes.
/// A probe counts as seen when the answer that contains it arrives (so the figure includes up to
/// one poll interval and the query itself).
async fn poll_clickhouse(
    db: clickhouse::Client,
    shared: Shared,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_sql =
        format!("SELECT ad_id FROM fact_ad_performance WHERE date = toDate('{PROBE_DATE}')");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match db
            .query("SELECT count() FROM fact_ad_performance")
            .fetch_one::<u64>()
            .await
        {
            Ok(n) => lock(&shared).counts.push((Instant::now(), n)),
            Err(e) => {
                let mut s = lock(&shared);
                s.poll_errors += 1;
                s.last_error = Some(e.to_string());
            }
        }
        if lock(&shared).pending.is_empty() {
            continue;
        }
        match db.query(&probe_sql).fetch_all::<String>().await {
            Ok(ids) => {
                let seen = Instant::now();
                let mut s = lock(&shared);
                for id in ids {
                    if let Some((phase, sent)) = s.pending.remove(&id) {
                        let ms = seen.duration_since(sent).as_secs_f64() * 1000.0;
                        s.freshness.push((phase, ms));
                    }
                }
            }
            Err(e) => {
                let mut s = lock(&shared);
                s.poll_errors += 1;
                s.last_error = Some(e.to_string());
            }
        }
    }
}

/// Watches a consumer group's committed offsets on one topic (the processor's progress: it
/// commits its input offsets in the same transaction as its output).
/// Committed offsets per partition, as seen at an instant.
type OffsetSamples = Arc<Mutex<Vec<(Instant, BTreeMap<i32, i64>)>>>;

struct OffsetWatch {
    stop: Arc<AtomicBool>,
    seen: OffsetSamples,
    handle: std::thread::JoinHandle<()>,
}

/// Committed offsets of a group over time.
type OffsetSeries = Vec<(Instant, BTreeMap<i32, i64>)>;

impl OffsetWatch {
    fn start(
        kafka: &KafkaSettings,
        group: &str,
        topic: &'static str,
        partitions: u32,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = clients::kafka_config(kafka)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // With read_committed librdkafka asks for *stable* offsets, and the broker makes it
            // retry while the group has a transaction's offsets pending — always, for a busy
            // processor — so an answer can take seconds. Committed offsets are what we want.
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition(topic, p);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let seen: Arc<Mutex<OffsetSeries>> = Arc::default();
        let out = seen.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let asked = Instant::now();
                if let Ok(committed) =
                    consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))
                {
                    // Stamped on the answer: the offsets were committed by then (stamping the
                    // question would date a slow answer's progress too early).
                    let at = Instant::now();
                    let offsets = committed
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some((e.partition(), o)),
                            _ => None,
                        })
                        .collect();
                    out.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((at, offsets));
                }
                std::thread::sleep(every.saturating_sub(asked.elapsed()));
            }
        });
        Ok(Self { stop, seen, handle })
    }

    /// The first sample at which the group had consumed everything of `end` (see
    /// [`consumed_all`]).
    fn done(&self, start: &BTreeMap<i32, i64>, end: &BTreeMap<i32, i64>) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, c)| consumed_all(c, start, end))
            .map(|(at, _)| *at)
    }

    fn stop(self) -> OffsetSeries {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Whether committed offsets cover every partition that grew from `start` to `end`: committed
/// up to `end - 1` at least, since the last offset of a partition written in transactions is a
/// commit marker, which a consumer never hands over (so never commits past).
fn consumed_all(
    committed: &BTreeMap<i32, i64>,
    start: &BTreeMap<i32, i64>,
    end: &BTreeMap<i32, i64>,
) -> bool {
    end.iter().all(|(p, e)| {
        let s = start.get(p).copied().unwrap_or(*e);
        *e <= s || committed.get(p).is_some_and(|o| *o >= e - 1)
    })
}

/// A progress series in rows from committed offsets: offsets consumed past `start` (capped at
/// `end`), scaled to `rows` (offsets also count transaction markers).
fn offset_progress(
    series: &OffsetSeries,
    start: &BTreeMap<i32, i64>,
    end: &BTreeMap<i32, i64>,
    rows: u64,
) -> Vec<(Instant, f64)> {
    let total: i64 = end
        .iter()
        .map(|(p, e)| (e - start.get(p).copied().unwrap_or(*e)).max(0))
        .sum();
    series
        .iter()
        .map(|(at, c)| {
            let done: i64 = start
                .iter()
                .map(|(p, s)| {
                    let e = end.get(p).copied().unwrap_or(*s);
                    (c.get(p).copied().unwrap_or(*s).min(e) - s).max(0)
                })
                .sum();
            (*at, done as f64 * rows as f64 / total.max(1) as f64)
        })
        .collect()
}

/// Waits until every group is Stable with at least one member (the services have joined and
/// been assigned their partitions), failing early if a service exits.
async fn wait_for_groups(
    kafka: &KafkaSettings,
    groups: &[String],
    services: &mut [&mut Service],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let consumer: Arc<BaseConsumer> = Arc::new(clients::kafka_config(kafka).create()?);
    loop {
        for s in services.iter_mut() {
            s.ensure_running()?;
        }
        let c = consumer.clone();
        let wanted = groups.to_vec();
        let ready = tokio::task::spawn_blocking(move || {
            wanted.iter().all(|g| {
                c.fetch_group_list(Some(g), Duration::from_secs(5))
                    .map(|list| {
                        list.groups()
                            .iter()
                            .any(|i| i.state() == "Stable" && !i.members().is_empty())
                    })
                    .unwrap_or(false)
            })
        })
        .await?;
        if ready {
            return Ok(start.elapsed());
        }
        ensure!(
            start.elapsed() < timeout,
            "the services did not join their consumer groups within {} s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// FINAL count and sums of our tenants' facts.
async fn final_totals(db: &clickhouse::Client, plan: &Plan) -> anyhow::Result<Totals> {
    let (rows, impressions, clicks, cost_micros): (u64, i64, i64, i64) = db
        .query(&format!(
            "SELECT count(), sum(impressions), sum(clicks), sum(cost_micros) \
             FROM fact_ad_performance FINAL WHERE tenant_id IN {}",
            plan.tenant_list()
        ))
        .fetch_one()
        .await?;
    Ok(Totals {
        rows,
        impressions,
        clicks,
        cost_micros,
    })
}

/// Rows of our tenants without FINAL: more than FINAL's means duplicates were loaded (and
/// collapsed by the Replacing engine), e.g. by somebody else's processor reading our raw rows.
async fn raw_count(db: &clickhouse::Client, plan: &Plan) -> anyhow::Result<u64> {
    Ok(db
        .query(&format!(
            "SELECT count() FROM fact_ad_performance WHERE tenant_id IN {}",
            plan.tenant_list()
        ))
        .fetch_one()
        .await?)
}

/// Waits until ClickHouse holds exactly `expected` for our tenants. Returns when it first did:
/// the first poll whose plain count reached the row count, if the FINAL check right after agreed,
/// else the FINAL check that agreed.
async fn wait_for_rows(
    db: &clickhouse::Client,
    plan: &Plan,
    shared: &Shared,
    expected: Totals,
    services: &mut [&mut Service],
    poll: Duration,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let mut first_check = true;
    loop {
        for s in services.iter_mut() {
            s.ensure_running()?;
        }
        let first_full = lock(shared)
            .counts
            .iter()
            .find(|(_, n)| *n >= expected.rows)
            .map(|(at, _)| *at);
        if let Some(full) = first_full {
            let got = final_totals(db, plan).await?;
            if got == expected {
                // Agreeing at the first look: every row was there when the count said so.
                return Ok(if first_check { full } else { Instant::now() });
            }
            first_check = false;
            ensure!(
                got.rows < expected.rows,
                "exactly-once violated: ClickHouse holds {got:?} (FINAL) of our tenants, {expected:?} were produced"
            );
        }
        if Instant::now() > deadline {
            let s = lock(shared);
            bail!(
                "ClickHouse did not reach {} rows in time (last count {:?}; {} poll errors, last: {:?}); \
                 rows that fail validation go to mi.dlq.v1, and the services' logs may say more",
                expected.rows,
                s.counts.last().map(|c| c.1),
                s.poll_errors,
                s.last_error
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// What the producers did during the full load: timing counters of where their time went.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct ProducerStats {
    producers: usize,
    transactions: usize,
    /// Seconds building, encoding and enqueueing records, summed over the producers.
    publish_s: f64,
    /// Seconds inside `commit_transaction` (flush, then the coordinator's EndTxn), summed.
    commit_s: f64,
}

/// Produces producer `k`'s share of the plan (tenants `t` with `t % of == k`), day by day, one
/// transaction per tenant and day as the extractors do (one run, one transaction).
async fn produce_share(
    plan: &Plan,
    producer: &TxProducer,
    shared: &Shared,
    k: usize,
    of: usize,
    drain_days: Option<usize>,
) -> anyhow::Result<(Totals, ProducerStats)> {
    let mut totals = Totals::default();
    let mut stats = ProducerStats {
        producers: 1,
        ..Default::default()
    };
    for d in 0..drain_days.unwrap_or(plan.days.len()) {
        for t in (k..plan.tenants.len()).step_by(of.max(1)) {
            let started = Instant::now();
            let mut txn = producer.begin().map_err(|e| anyhow!("{e}"))?;
            for j in 0..plan.rows_per_day {
                let i = (d * plan.tenants.len() + t) * plan.rows_per_day + j;
                let row = match drain_days {
                    Some(_) => plan.drain_row(i),
                    None => plan.row_at(i),
                };
                if drain_days.is_none() && i.is_multiple_of(plan.probe_every) {
                    lock(shared)
                        .pending
                        .insert(row.ad_id.clone(), (Phase::Load, Instant::now()));
                }
                totals.add(&row);
                txn.publish(&row).await.map_err(|e| anyhow!("{e}"))?;
            }
            let committing = Instant::now();
            txn.commit().map_err(|e| anyhow!("{e}"))?;
            stats.commit_s += committing.elapsed().as_secs_f64();
            stats.publish_s += (committing - started).as_secs_f64();
            stats.transactions += 1;
        }
    }
    Ok((totals, stats))
}

/// Produces the plan's rows (or `drain_days` days of drain rows) with every producer
/// concurrently (each on a task of its own: a commit blocks its thread). Returns the totals, the
/// producers' counters and the time the last commit returned.
async fn produce_load(
    plan: &Arc<Plan>,
    producers: &[Arc<TxProducer>],
    shared: &Shared,
    drain_days: Option<usize>,
) -> anyhow::Result<(Totals, ProducerStats, Instant)> {
    let of = producers.len();
    let tasks: Vec<_> = producers
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let (plan, p, shared) = (plan.clone(), p.clone(), shared.clone());
            tokio::spawn(async move { produce_share(&plan, &p, &shared, k, of, drain_days).await })
        })
        .collect();
    let mut totals = Totals::default();
    let mut stats = ProducerStats::default();
    for task in tasks {
        let (t, s) = task.await??;
        totals = totals.plus(t);
        stats.producers += s.producers;
        stats.transactions += s.transactions;
        stats.publish_s += s.publish_s;
        stats.commit_s += s.commit_s;
    }
    Ok((totals, stats, Instant::now()))
}

/// Produces `rate` rows/s for `seconds`, one transaction every 100 ms.
async fn produce_trickle(
    plan: &Plan,
    producer: &TxProducer,
    shared: &Shared,
    rate: u32,
    seconds: u32,
    probe_every: usize,
) -> anyhow::Result<Totals> {
    let ticks = seconds as usize * 10;
    let per_tick = (rate as usize).div_ceil(10);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut totals = Totals::default();
    let mut seq = 0;
    for _ in 0..ticks {
        tick.tick().await;
        let mut txn = producer.begin().map_err(|e| anyhow!("{e}"))?;
        for _ in 0..per_tick {
            let probe = seq % probe_every.max(1) == 0;
            let row = plan.trickle_row(seq, probe);
            if probe {
                lock(shared)
                    .pending
                    .insert(row.ad_id.clone(), (Phase::Trickle, Instant::now()));
            }
            totals.add(&row);
            txn.publish(&row).await.map_err(|e| anyhow!("{e}"))?;
            seq += 1;
        }
        txn.commit().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(totals)
}

/// The first time a progress series reached `target`.
fn reached(series: &[(Instant, f64)], target: f64) -> Option<Instant> {
    series.iter().find(|(_, v)| *v >= target).map(|(t, _)| *t)
}

/// Rows/s between 10 % and 90 % of `total` on a progress series: a stage's steady rate, free of
/// start-up and of the tail.
fn steady_rate(series: &[(Instant, f64)], total: f64) -> Option<f64> {
    let t10 = reached(series, 0.1 * total)?;
    let t90 = reached(series, 0.9 * total)?;
    (t90 > t10).then(|| 0.8 * total / (t90 - t10).as_secs_f64())
}

/// Freshness percentiles, milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Freshness {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Probes produced but never seen (should be 0).
    missing: usize,
}

impl Freshness {
    fn of(values: &[f64], missing: usize) -> Self {
        Self {
            samples: values.len(),
            p50_ms: quantile(values, 0.5).unwrap_or(f64::NAN),
            p99_ms: quantile(values, 0.99).unwrap_or(f64::NAN),
            max_ms: quantile(values, 1.0).unwrap_or(f64::NAN),
            missing,
        }
    }
}

/// Usage of one watched process in the load and trickle phases.
#[derive(Debug, Clone, Serialize)]
struct ProcessFigures {
    name: String,
    pid: u32,
    load: ProcUsage,
    trickle: Option<ProcUsage>,
    /// CPU seconds per million rows produced, full load.
    cpu_s_per_million_rows: f64,
    /// The kernel's peak RSS (VmHWM) at the end, MB (children only).
    vm_hwm_mb: Option<f64>,
}

/// Kafka's ProducerPerformance summary.
#[derive(Debug, Clone, Serialize)]
struct KafkaPerf {
    records: u64,
    record_size: usize,
    records_per_s: f64,
    mb_per_s: f64,
    avg_latency_ms: f64,
    summary: String,
    props: Vec<String>,
}

/// The direct-insert ceiling.
#[derive(Debug, Clone, Serialize)]
struct InsertCeiling {
    rows: u64,
    batch_rows: usize,
    insert_seconds: f64,
    rows_per_s: f64,
}

/// What the sink's audit table says about its batches of our facts.
#[derive(Debug, Clone, Copy, Serialize)]
struct SinkBatches {
    batches: u64,
    rows: u64,
    /// One per tenant and batch: also the number of load events the sink published.
    audit_rows: u64,
    rows_per_batch: f64,
}

/// The figures of one repetition.
#[derive(Debug, Clone, Serialize)]
struct Rep {
    rep: u32,
    database: String,
    rows: u64,
    tenants: usize,
    days: usize,
    rows_per_day: usize,
    transactions: usize,
    producer_stats: ProducerStats,
    avg_value_bytes: f64,
    rows_per_partition: BTreeMap<i32, i64>,
    services_join_s: f64,
    producer_s: f64,
    processor_done_s: Option<f64>,
    end_to_end_s: f64,
    producer_rows_per_s: f64,
    processor_rows_per_s: Option<f64>,
    end_to_end_rows_per_s: f64,
    processor_steady_rows_per_s: Option<f64>,
    sink_steady_rows_per_s: Option<f64>,
    /// Rows the sink still had to load when the processor was done, and how long it took.
    sink_tail_rows: Option<u64>,
    sink_tail_s: Option<f64>,
    final_check: Totals,
    duplicates_collapsed: u64,
    freshness_load: Freshness,
    freshness_trickle: Option<Freshness>,
    trickle_rows: u64,
    trickle_rows_per_s: f64,
    processes: Vec<ProcessFigures>,
    machine_busy_cores_load: Option<f64>,
    /// Busy cores outside every watched process (other people's work, the registry, the kernel).
    other_cores_load: Option<f64>,
    sink_batches: Option<SinkBatches>,
    /// Each stage alone against a backlog.
    drain: Option<Drain>,
    kafka_perf: Option<KafkaPerf>,
    insert_ceiling: Option<InsertCeiling>,
    pct_of_kafka_perf: Option<f64>,
    pct_of_insert_ceiling: Option<f64>,
    perf_profiles: BTreeMap<String, String>,
    /// `--perf`: where the processor's transactions spent their time (uprobes on librdkafka).
    processor_transactions: Option<TxnBreakdown>,
    poll_errors: u64,
    /// WARN and ERROR lines in each service's log (session restarts, retried batches…).
    service_log_problems: BTreeMap<String, usize>,
}

/// One stage of the drain phase alone: its rate and its cost.
#[derive(Debug, Clone, Serialize)]
struct StageFigures {
    seconds: f64,
    /// Rows over the stage's whole time (process start and group join included).
    rows_per_s: f64,
    /// Between 10 % and 90 % of its rows: its steady capacity.
    steady_rows_per_s: Option<f64>,
    processes: Vec<ProcessFigures>,
}

/// The drain phase: each stage alone against a backlog.
#[derive(Debug, Clone, Serialize)]
struct Drain {
    rows: u64,
    /// The producers with nothing else of the pipeline running.
    producer_rows_per_s: f64,
    producer_stats: ProducerStats,
    processor: StageFigures,
    sink: StageFigures,
}

/// What the drain phase needs from its repetition.
struct Stage<'a> {
    plan: &'a Arc<Plan>,
    producers: &'a [Arc<TxProducer>],
    db: &'a clickhouse::Client,
    config: &'a Path,
    logs: &'a Path,
    processor_group: &'a str,
    /// What ClickHouse holds before the drain.
    before: Totals,
}

/// Usage of every watched process of a sampler over a window, per million `rows`.
fn usages(
    samples: &mi_bench::Samples,
    watched: &[(String, u32)],
    from: Instant,
    to: Instant,
    rows: u64,
) -> Vec<ProcessFigures> {
    watched
        .iter()
        .enumerate()
        .filter_map(|(i, (name, pid))| {
            let load = samples.usage(i, from, to)?;
            Some(ProcessFigures {
                name: name.clone(),
                pid: *pid,
                cpu_s_per_million_rows: load.cpu_seconds / (rows as f64 / 1e6),
                load,
                trickle: None,
                vm_hwm_mb: None,
            })
        })
        .collect()
}

/// Everything needed for the repetitions.
struct Bench {
    args: Args,
    infra: Settings,
    codec: Arc<Codec>,
    processors_bin: PathBuf,
    sink_bin: PathBuf,
    repo: PathBuf,
    partitions: u32,
}

impl Bench {
    /// The Kafka broker and the ClickHouse server (the chDB front here), found by the local port
    /// they listen on (whichever checkout's `dev/stack` started them); not watched if not local.
    fn infra_pids(&self) -> Vec<(String, u32)> {
        let port = |addr: &str| -> Option<u16> {
            let host_port = addr.split(',').next()?.trim();
            let host_port = host_port.split("://").last()?.split('/').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            matches!(host, "127.0.0.1" | "localhost" | "[::1]")
                .then(|| port.parse().ok())
                .flatten()
        };
        [
            ("kafka broker", port(&self.infra.kafka.brokers)),
            ("chDB front", port(&self.infra.clickhouse.url)),
        ]
        .into_iter()
        .filter_map(|(name, port)| {
            let pid = mi_bench::pid_listening_on(port?)?;
            Some((format!("{name} (infra)"), pid))
        })
        .collect()
    }

    /// The drain phase: `rows` more rows produced with no service running (the producers
    /// alone), then the processor started alone until it has consumed them all, then the sink
    /// alone until ClickHouse holds them all (FINAL count and sums checked).
    async fn drain(&self, st: &Stage<'_>, rows: usize) -> anyhow::Result<Drain> {
        let args = &self.args;
        let plan = st.plan;
        let per_day = plan.tenants.len() * plan.rows_per_day;
        let days = rows.div_ceil(per_day).max(1);
        let n = (days * per_day) as u64;
        let kafka = &self.infra.kafka;
        let raw_topic = RawAdPerformance::TOPIC;

        // 1. The producers alone.
        let raw_start = clients::end_offsets(clients::kafka_config(kafka), raw_topic).await?;
        let t0 = Instant::now();
        let (totals, producer_stats, produced) =
            produce_load(plan, st.producers, &Shared::default(), Some(days)).await?;
        let producer_rows_per_s = per_second(totals.rows, produced - t0);
        let raw_end = clients::end_offsets(clients::kafka_config(kafka), raw_topic).await?;

        // 2. The processor alone, resuming its group (committed at the end of the main run).
        let mut processor = Service::spawn(
            "stream-processors run facts",
            &self.processors_bin,
            &["run", "facts", "--instance", "0"],
            st.config,
            st.logs.join("stream-processors-drain.log"),
        )?;
        let started = Instant::now();
        let watched: Vec<(String, u32)> =
            std::iter::once(("stream-processors".to_owned(), processor.pid()))
                .chain(self.infra_pids())
                .collect();
        let sampler = ProcSampler::start(watched.clone(), Duration::from_millis(args.sample_ms));
        let offsets = OffsetWatch::start(
            kafka,
            st.processor_group,
            raw_topic,
            self.partitions,
            Duration::from_millis(args.poll_ms.max(100)),
        )?;
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        let done = loop {
            processor.ensure_running()?;
            if let Some(at) = offsets.done(&raw_start, &raw_end) {
                break at;
            }
            ensure!(
                Instant::now() < deadline,
                "the processor did not drain {n} rows in {} s",
                args.timeout_secs
            );
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        };
        let samples = sampler.stop();
        let series = offset_progress(&offsets.stop(), &raw_start, &raw_end, n);
        processor.stop()?;
        let processor = StageFigures {
            seconds: (done - started).as_secs_f64(),
            rows_per_s: per_second(n, done - started),
            steady_rows_per_s: steady_rate(&series, n as f64),
            processes: usages(&samples, &watched, started, done, n),
        };

        // 3. The sink alone, over the facts the processor left.
        let mut sink = Service::spawn(
            "sink run",
            &self.sink_bin,
            &["run"],
            st.config,
            st.logs.join("sink-drain.log"),
        )?;
        let started = Instant::now();
        let watched: Vec<(String, u32)> = std::iter::once(("sink".to_owned(), sink.pid()))
            .chain(self.infra_pids())
            .collect();
        let sampler = ProcSampler::start(watched.clone(), Duration::from_millis(args.sample_ms));
        let shared: Shared = Arc::default();
        let stop_poll = CancellationToken::new();
        let poller = tokio::spawn(poll_clickhouse(
            st.db.clone(),
            shared.clone(),
            Duration::from_millis(args.poll_ms),
            stop_poll.clone(),
        ));
        let expected = st.before.plus(totals);
        let done = wait_for_rows(
            st.db,
            plan,
            &shared,
            expected,
            &mut [&mut sink],
            Duration::from_millis(args.poll_ms),
            Instant::now() + Duration::from_secs(args.timeout_secs),
        )
        .await;
        stop_poll.cancel();
        let _ = poller.await;
        let samples = sampler.stop();
        sink.stop()?;
        let done = done?;
        let counts = lock(&shared).counts.clone();
        let series: Vec<(Instant, f64)> = counts
            .iter()
            .map(|(at, c)| (*at, c.saturating_sub(st.before.rows) as f64))
            .collect();
        let sink = StageFigures {
            seconds: (done - started).as_secs_f64(),
            rows_per_s: per_second(n, done - started),
            steady_rows_per_s: steady_rate(&series, n as f64),
            processes: usages(&samples, &watched, started, done, n),
        };
        Ok(Drain {
            rows: n,
            producer_rows_per_s,
            producer_stats,
            processor,
            sink,
        })
    }

    async fn rep(&self, rep: u32) -> anyhow::Result<Rep> {
        let args = &self.args;
        let plan = Arc::new(Plan::new(args, self.partitions)?);
        let n = plan.total() as u64;
        let prefix = format!("bench-pipe-{}", plan.tag);
        let database = format!("mi_bench_pipe_{}", plan.tag);
        let ch = clients::clickhouse(&self.infra.clickhouse);
        mi_sink::migrate::migrate(&ch, &database)
            .await
            .with_context(|| format!("migrating the scratch database {database}"))?;
        let db = ch.clone().with_database(&database);
        println!(
            "rep {rep}: {n} rows = {} tenants × {} days × {} rows/day, database {database}, groups {prefix}-*",
            plan.tenants.len(),
            plan.days.len(),
            plan.rows_per_day
        );

        // Average Avro value size (the ceiling's --record-size); registers the schema if needed.
        let sample: Vec<RawAdPerformance> = (0..2_000)
            .map(|k| plan.row_at(k * plan.total() / 2_000))
            .collect();
        let mut bytes = 0usize;
        for r in &sample {
            bytes += self.codec.encode(r).await?.len();
        }
        let avg_value_bytes = bytes as f64 / sample.len().max(1) as f64;

        // Fresh groups at the end of their topics, so that only what we produce is read.
        let processor_group = format!("{prefix}-facts");
        let sink_group = format!("{prefix}-sink");
        for topic in [
            RawAdPerformance::TOPIC,
            mi_schemas::RawGaSessions::TOPIC,
            mi_schemas::RawConversion::TOPIC,
        ] {
            clients::start_group_at_end(&self.infra.kafka, &processor_group, topic).await?;
        }
        for topic in mi_sink::load::TOPICS {
            clients::start_group_at_end(&self.infra.kafka, &sink_group, topic).await?;
        }
        let raw_start = clients::end_offsets(
            clients::kafka_config(&self.infra.kafka),
            RawAdPerformance::TOPIC,
        )
        .await?;

        let logs = args.logs.join(format!("rep{rep}-{}", plan.tag));
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let config = logs.join("services.toml");
        std::fs::write(
            &config,
            self.services_toml(&plan, &database, &prefix, &sink_group),
        )?;
        let mut processor = Service::spawn(
            "stream-processors run facts",
            &self.processors_bin,
            &["run", "facts", "--instance", "0"],
            &config,
            logs.join("stream-processors.log"),
        )?;
        let mut sink = Service::spawn(
            "sink run",
            &self.sink_bin,
            &["run"],
            &config,
            logs.join("sink.log"),
        )?;
        let joined = wait_for_groups(
            &self.infra.kafka,
            &[processor_group.clone(), sink_group.clone()],
            &mut [&mut processor, &mut sink],
            Duration::from_secs(120),
        )
        .await?;
        println!(
            "  services joined their groups in {:.1} s (pids {} and {})",
            joined.as_secs_f64(),
            processor.pid(),
            sink.pid()
        );

        let mut watched = vec![
            ("producer (this bench)".to_owned(), std::process::id()),
            ("stream-processors".to_owned(), processor.pid()),
            ("sink".to_owned(), sink.pid()),
        ];
        watched.extend(self.infra_pids());
        let sampler = ProcSampler::start(watched.clone(), Duration::from_millis(args.sample_ms));
        let offsets = OffsetWatch::start(
            &self.infra.kafka,
            &processor_group,
            RawAdPerformance::TOPIC,
            self.partitions,
            Duration::from_millis(args.poll_ms.max(100)),
        )?;
        let shared: Shared = Arc::default();
        let stop_poll = CancellationToken::new();
        let poller = tokio::spawn(poll_clickhouse(
            db.clone(),
            shared.clone(),
            Duration::from_millis(args.poll_ms),
            stop_poll.clone(),
        ));
        let mut profiles = if args.perf {
            vec![
                Profiler::start("stream-processors", processor.pid(), &logs)?,
                Profiler::start("sink", sink.pid(), &logs)?,
            ]
        } else {
            Vec::new()
        };
        let mut txn_probes = if args.perf {
            match TxnProbes::start(&self.processors_bin, processor.pid(), &logs) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("  no uprobes on the processor's transactions: {e:#}");
                    None
                }
            }
        } else {
            None
        };

        // The measured part: produce, and wait until ClickHouse holds every row exactly once.
        let mut producers = Vec::new();
        for k in 0..args.producers.max(1) {
            let p = TxProducer::new(
                &self.infra.kafka,
                &format!("{prefix}-producer-{k}"),
                60_000,
                self.codec.clone(),
            )
            .map_err(|e| anyhow!("creating transactional producer {k}: {e}"))?;
            producers.push(Arc::new(p));
        }
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        let t0 = Instant::now();
        let (load_totals, producer_stats, produced_at) =
            produce_load(&plan, &producers, &shared, None).await?;
        let transactions = producer_stats.transactions;
        println!(
            "  produced {} rows in {transactions} transactions by {} producer(s) in {:.1} s ({:.0} rows/s; {:.1} s publishing, {:.1} s in commits, summed over producers)",
            load_totals.rows,
            producer_stats.producers,
            (produced_at - t0).as_secs_f64(),
            per_second(load_totals.rows, produced_at - t0),
            producer_stats.publish_s,
            producer_stats.commit_s,
        );
        let raw_end = clients::end_offsets(
            clients::kafka_config(&self.infra.kafka),
            RawAdPerformance::TOPIC,
        )
        .await?;
        let done_at = wait_for_rows(
            &db,
            &plan,
            &shared,
            load_totals,
            &mut [&mut processor, &mut sink],
            Duration::from_millis(args.poll_ms),
            deadline,
        )
        .await?;
        let e2e = done_at - t0;
        println!(
            "  every row in ClickHouse (FINAL count and sums checked) {:.1} s after the first produce: {:.0} rows/s end to end",
            e2e.as_secs_f64(),
            per_second(n, e2e)
        );
        // Stop every recording at once, then read them: the load is over.
        let mut recorders: Vec<&mut Child> = profiles.iter_mut().map(|p| &mut p.child).collect();
        recorders.extend(txn_probes.iter_mut().map(|p| &mut p.child));
        for child in recorders {
            signal(child.id(), "INT");
            child.wait()?;
        }
        let mut perf_profiles = BTreeMap::new();
        for p in profiles {
            let (name, report) = p.finish()?;
            perf_profiles.insert(name, report);
        }
        let processor_transactions = match txn_probes.map(TxnProbes::finish) {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                eprintln!("  reading the processor's transaction probes: {e:#}");
                None
            }
            None => None,
        };
        if let Some(b) = &processor_transactions {
            println!("  processor transactions (uprobes): {b}");
        }
        // Probes of the last rows may show on the poll after the count did.
        let wait_probes = Instant::now() + Duration::from_secs(5);
        while !lock(&shared).pending.is_empty() && Instant::now() < wait_probes {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        }

        // The trickle, on the same warm services.
        let mut trickle_totals = Totals::default();
        let mut trickle_window = None;
        if args.trickle_rate > 0 && args.trickle_seconds > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = Instant::now();
            trickle_totals = produce_trickle(
                &plan,
                &producers[0],
                &shared,
                args.trickle_rate,
                args.trickle_seconds,
                args.trickle_probe_every,
            )
            .await?;
            let produced = Instant::now();
            wait_for_rows(
                &db,
                &plan,
                &shared,
                load_totals.plus(trickle_totals),
                &mut [&mut processor, &mut sink],
                Duration::from_millis(args.poll_ms),
                Instant::now() + Duration::from_secs(120),
            )
            .await?;
            let wait_probes = Instant::now() + Duration::from_secs(5);
            while !lock(&shared).pending.is_empty() && Instant::now() < wait_probes {
                tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
            }
            trickle_window = Some((started, produced, Instant::now()));
        }

        let vm_hwm: HashMap<u32, f64> = [processor.pid(), sink.pid()]
            .into_iter()
            .filter_map(|pid| {
                mi_bench::proc_status_bytes(pid, "VmHWM").map(|b| (pid, b as f64 / 1024.0 / 1024.0))
            })
            .collect();
        stop_poll.cancel();
        let _ = poller.await;
        let samples = sampler.stop();
        let committed = offsets.stop();
        processor.stop()?;
        sink.stop()?;

        let expected_total = load_totals.plus(trickle_totals);
        let final_check = final_totals(&db, &plan).await?;
        ensure!(
            final_check == expected_total,
            "at the end ClickHouse holds {final_check:?}, produced {expected_total:?}"
        );
        let duplicates_collapsed = raw_count(&db, &plan)
            .await?
            .saturating_sub(final_check.rows);
        let sink_batches = self.sink_batches(&db, &plan).await.ok();

        // Stage progress: the processor's committed offsets, ClickHouse's count.
        let rows_per_partition: BTreeMap<i32, i64> = raw_end
            .iter()
            .map(|(p, e)| (*p, e - raw_start.get(p).copied().unwrap_or(0)))
            .collect();
        let processor_series = offset_progress(&committed, &raw_start, &raw_end, n);
        let processor_done = committed
            .iter()
            .find(|(_, c)| consumed_all(c, &raw_start, &raw_end))
            .map(|(at, _)| *at)
            .filter(|at| *at <= done_at);
        let (counts, freshness, poll_errors, pending_left) = {
            let s = lock(&shared);
            (
                s.counts.clone(),
                s.freshness.clone(),
                s.poll_errors,
                s.pending.clone(),
            )
        };
        // The count before the first produce (0 unless somebody else's rows reached our sink).
        let base = counts.first().map_or(0, |c| c.1);
        let sink_series: Vec<(Instant, f64)> = counts
            .iter()
            .filter(|(at, _)| *at <= done_at)
            .map(|(at, c)| (*at, c.saturating_sub(base) as f64))
            .collect();
        let sink_tail = processor_done.map(|p| {
            let left = counts
                .iter()
                .rev()
                .find(|(at, _)| *at <= p)
                .map_or(n, |(_, c)| n.saturating_sub(c.saturating_sub(base)));
            (left, (done_at - p).as_secs_f64())
        });

        let load_fresh: Vec<f64> = freshness
            .iter()
            .filter(|(p, _)| *p == Phase::Load)
            .map(|(_, ms)| *ms)
            .collect();
        let trickle_fresh: Vec<f64> = freshness
            .iter()
            .filter(|(p, _)| *p == Phase::Trickle)
            .map(|(_, ms)| *ms)
            .collect();
        let missing = |phase: Phase| pending_left.values().filter(|(p, _)| *p == phase).count();

        let mut processes = Vec::new();
        for (i, (name, pid)) in watched.iter().enumerate() {
            let Some(load) = samples.usage(i, t0, done_at) else {
                continue;
            };
            let trickle = trickle_window.and_then(|(s, _, e)| samples.usage(i, s, e));
            processes.push(ProcessFigures {
                name: name.clone(),
                pid: *pid,
                cpu_s_per_million_rows: load.cpu_seconds / (n as f64 / 1e6),
                load,
                trickle,
                vm_hwm_mb: vm_hwm.get(pid).copied(),
            });
        }
        let machine = samples.machine_cores(t0, done_at);
        let ours: f64 = processes.iter().map(|p| p.load.cores).sum();
        let other_cores_load = machine.map(|m| (m - ours).max(0.0));

        let trickle_rows_per_s =
            trickle_window.map_or(0.0, |(s, p, _)| per_second(trickle_totals.rows, p - s));
        let mut out = Rep {
            rep,
            database: database.clone(),
            rows: n,
            tenants: plan.tenants.len(),
            days: plan.days.len(),
            rows_per_day: plan.rows_per_day,
            transactions,
            producer_stats,
            avg_value_bytes,
            rows_per_partition,
            services_join_s: joined.as_secs_f64(),
            producer_s: (produced_at - t0).as_secs_f64(),
            processor_done_s: processor_done.map(|p| (p - t0).as_secs_f64()),
            end_to_end_s: e2e.as_secs_f64(),
            producer_rows_per_s: per_second(n, produced_at - t0),
            processor_rows_per_s: processor_done.map(|p| per_second(n, p - t0)),
            end_to_end_rows_per_s: per_second(n, e2e),
            processor_steady_rows_per_s: steady_rate(&processor_series, n as f64),
            sink_steady_rows_per_s: steady_rate(&sink_series, n as f64),
            sink_tail_rows: sink_tail.map(|t| t.0),
            sink_tail_s: sink_tail.map(|t| t.1),
            final_check,
            duplicates_collapsed,
            freshness_load: Freshness::of(&load_fresh, missing(Phase::Load)),
            freshness_trickle: trickle_window
                .map(|_| Freshness::of(&trickle_fresh, missing(Phase::Trickle))),
            trickle_rows: trickle_totals.rows,
            trickle_rows_per_s,
            processes,
            machine_busy_cores_load: machine,
            other_cores_load,
            sink_batches,
            drain: None,
            kafka_perf: None,
            insert_ceiling: None,
            pct_of_kafka_perf: None,
            pct_of_insert_ceiling: None,
            perf_profiles,
            processor_transactions,
            poll_errors,
            service_log_problems: [
                ("stream-processors", logs.join("stream-processors.log")),
                ("sink", logs.join("sink.log")),
            ]
            .into_iter()
            .map(|(name, path)| (name.to_owned(), problems(&path)))
            .collect(),
        };
        let drain_rows = args.drain_rows.unwrap_or(n as usize / 2);
        if drain_rows > 0 {
            let stage = Stage {
                plan: &plan,
                producers: &producers,
                db: &db,
                config: &config,
                logs: &logs,
                processor_group: &processor_group,
                before: expected_total,
            };
            out.drain = Some(self.drain(&stage, drain_rows).await?);
            if let Some(d) = &out.drain {
                print_drain(d);
            }
        }
        drop(producers);
        if !args.keep {
            drop_database(&ch, &database).await?;
        }

        // Ceilings, with the services stopped.
        if !args.no_kafka_perf {
            match self.kafka_perf(n, avg_value_bytes.round() as usize).await {
                Ok(k) => {
                    out.pct_of_kafka_perf =
                        Some(100.0 * out.end_to_end_rows_per_s / k.records_per_s);
                    out.kafka_perf = Some(k);
                }
                Err(e) => eprintln!("  Kafka ProducerPerformance ceiling failed: {e:#}"),
            }
        }
        if !args.no_insert_ceiling {
            let c = self.insert_ceiling(&plan).await?;
            out.pct_of_insert_ceiling = Some(100.0 * out.end_to_end_rows_per_s / c.rows_per_s);
            out.insert_ceiling = Some(c);
        }
        print_rep(&out);
        Ok(out)
    }

    /// The services' settings: scratch database, fresh groups and transactional ids, our tenants.
    fn services_toml(&self, plan: &Plan, database: &str, prefix: &str, sink_group: &str) -> String {
        let tenants: Vec<String> = plan.tenants.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            "# written by pipeline-bench for one repetition\n\
             [kafka]\nbrokers = \"{brokers}\"\n\n\
             [schema_registry]\nurl = \"{registry}\"\n\n\
             [clickhouse]\nurl = \"{ch}\"\ndatabase = \"{database}\"\nuser = \"{user}\"\n\n\
             [log]\nfilter = \"warn\"\n\n\
             [processors]\ngroup_prefix = \"{prefix}\"\n\
             # Records of other tenants (other people's tests on a shared broker) become dead\n\
             # letters instead of duplicate facts on the shared fact topic.\n\
             tenants = [{tenants}]\n\n\
             [sink]\ngroup = \"{sink_group}\"\n\n\
             [kafka.properties]\n{properties}",
            properties = self
                .infra
                .kafka
                .properties
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}\n"))
                .collect::<String>(),
            brokers = self.infra.kafka.brokers,
            registry = self.infra.schema_registry.url,
            ch = self.infra.clickhouse.url,
            user = self.infra.clickhouse.user,
            tenants = tenants.join(", "),
        )
    }

    async fn sink_batches(
        &self,
        db: &clickhouse::Client,
        plan: &Plan,
    ) -> anyhow::Result<SinkBatches> {
        let (batches, rows, audit_rows): (u64, u64, u64) = db
            .query(&format!(
                "SELECT uniqExact(batch_id), sum(rows), count() FROM load_batches FINAL \
                 WHERE table = 'fact_ad_performance' AND tenant_id IN {}",
                plan.tenant_list()
            ))
            .fetch_one()
            .await?;
        Ok(SinkBatches {
            batches,
            rows,
            audit_rows,
            rows_per_batch: rows as f64 / batches.max(1) as f64,
        })
    }

    /// Kafka's own producer perf test on the same broker, into a scratch topic shaped like the
    /// raw topic (same partition count, replication 1), deleted afterwards.
    async fn kafka_perf(&self, records: u64, record_size: usize) -> anyhow::Result<KafkaPerf> {
        let topic = format!(
            "mi.bench.perf.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let admin: AdminClient<DefaultClientContext> =
            clients::kafka_config(&self.infra.kafka).create()?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    self.partitions as i32,
                    TopicReplication::Fixed(1),
                )],
                &opts,
            )
            .await?
        {
            r.map_err(|(t, e)| anyhow!("creating {t}: {e}"))?;
        }
        let mut props = vec![format!("bootstrap.servers={}", self.infra.kafka.brokers)];
        props.extend(self.args.kafka_perf_props.iter().cloned());
        let stack = self.repo.join("dev/stack");
        let mut cmd = Command::new(&stack);
        cmd.arg("kafka-class")
            .arg("org.apache.kafka.tools.ProducerPerformance")
            .args(["--topic", &topic])
            .args(["--num-records", &records.to_string()])
            .args(["--record-size", &record_size.max(1).to_string()])
            .args(["--throughput", "-1"])
            .arg("--producer-props")
            .args(&props);
        let output = tokio::task::spawn_blocking(move || cmd.output()).await;
        let deleted = admin.delete_topics(&[topic.as_str()], &opts).await;
        let output = output?.with_context(|| format!("running {}", stack.display()))?;
        if let Err(e) = deleted {
            eprintln!("  deleting the scratch topic {topic}: {e}");
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = stdout
            .lines()
            .rev()
            .find(|l| l.contains("records sent") && l.contains("50th"))
            .ok_or_else(|| {
                anyhow!(
                    "no summary line from ProducerPerformance ({}):\n{}\n{}",
                    output.status,
                    stdout,
                    String::from_utf8_lossy(&output.stderr)
                )
            })?
            .trim()
            .to_owned();
        let (records_per_s, mb_per_s, avg_latency_ms) = parse_perf_summary(&summary)
            .ok_or_else(|| anyhow!("unexpected ProducerPerformance summary: {summary}"))?;
        Ok(KafkaPerf {
            records,
            record_size,
            records_per_s,
            mb_per_s,
            avg_latency_ms,
            summary,
            props: props[1..].to_vec(),
        })
    }

    /// The same facts the processor derives, inserted straight into a scratch
    /// `fact_ad_performance` of the same engine in the sink's batch size. Only the inserts are
    /// timed (rows are built between them).
    async fn insert_ceiling(&self, plan: &Plan) -> anyhow::Result<InsertCeiling> {
        let batch_rows = mi_sink::load::LoadConfig::default().max_rows;
        let database = format!("mi_bench_pipe_ceiling_{}", plan.tag);
        let ch = clients::clickhouse(&self.infra.clickhouse);
        mi_sink::migrate::migrate(&ch, &database).await?;
        let db = ch.clone().with_database(&database);
        let mut rows = plan
            .rows()
            .map(mi_stream_processors::metrics::ad_performance);
        let mut timed = Duration::ZERO;
        let mut total = 0u64;
        let mut batch = 0u64;
        loop {
            let chunk: Vec<<FactAdPerformance as Loadable>::Row> =
                rows.by_ref().take(batch_rows).map(|f| f.row()).collect();
            if chunk.is_empty() {
                break;
            }
            let start = Instant::now();
            let mut insert = db
                .clone()
                .with_setting("insert_deduplication_token", format!("ceiling/{batch}"))
                .insert::<<FactAdPerformance as Loadable>::Row>(FactAdPerformance::TABLE)
                .await?;
            for row in &chunk {
                insert.write(row).await?;
            }
            insert.end().await?;
            timed += start.elapsed();
            total += chunk.len() as u64;
            batch += 1;
        }
        let count: u64 = db
            .query("SELECT count() FROM fact_ad_performance")
            .fetch_one()
            .await?;
        ensure!(
            count == total,
            "the ceiling inserted {total} rows, ClickHouse counts {count}"
        );
        if !self.args.keep {
            drop_database(&ch, &database).await?;
        }
        Ok(InsertCeiling {
            rows: total,
            batch_rows,
            insert_seconds: timed.as_secs_f64(),
            rows_per_s: per_second(total, timed),
        })
    }
}

async fn drop_database(ch: &clickhouse::Client, database: &str) -> anyhow::Result<()> {
    ch.clone()
        .with_database("default")
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .with_context(|| format!("dropping {database}"))
}

/// `N records sent, X records/sec (Y MB/sec), Z ms avg latency, …` → (X, Y, Z).
fn parse_perf_summary(line: &str) -> Option<(f64, f64, f64)> {
    let mut parts = line.split(", ");
    let _sent = parts.next()?;
    let rate = parts.next()?;
    let latency = parts.next()?;
    let records_per_s: f64 = rate.split_whitespace().next()?.parse().ok()?;
    let mb_per_s: f64 = rate
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let avg_latency_ms: f64 = latency.split_whitespace().next()?.parse().ok()?;
    Some((records_per_s, mb_per_s, avg_latency_ms))
}

/// Times `n` transactions of `rows` records each on a producer configured like `TxProducer`,
/// phase by phase: how long a transaction costs beyond its records (the extractors and the
/// processor pay it per run / per batch).
async fn diagnose_transactions(
    infra: &Settings,
    codec: &Codec,
    n: usize,
    rows: usize,
) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    mi_common::telemetry::init(&mi_common::settings::LogSettings {
        filter: "warn".into(),
        ..Default::default()
    });
    let txid = format!("bench-txn-diag-{}", uuid::Uuid::new_v4().simple());
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::transactional_producer_config(&infra.kafka, &txid)
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "200000")
            .create()?;
    let t = Instant::now();
    producer.init_transactions(Duration::from_secs(60))?;
    println!(
        "init_transactions {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let tenant = "pipe-diag";
    let today = Utc::now().date_naive();
    // Mode 0: what TxProducer and the processor engine do — commit_transaction right after the
    // sends (rdkafka's commit flushes first). Mode 1: wait for the in-flight count to reach zero
    // in 1 ms steps, then commit_transaction (its flush then finds nothing to wait for).
    for mode in 0..3 {
        let mut phases: Vec<[f64; 4]> = Vec::new();
        for k in 0..n {
            let mut payloads = Vec::with_capacity(rows);
            for j in 0..rows {
                let r = RawAdPerformance {
                    tenant_id: tenant.into(),
                    platform: Platform::GoogleAds,
                    account_id: "9000000000".into(),
                    extracted_at: Utc::now(),
                    run_id: txid.clone(),
                    date: today,
                    campaign_id: "1".into(),
                    ad_group_id: "2".into(),
                    ad_id: format!("diag-{mode}-{k}-{j}"),
                    device: None,
                    country: None,
                    currency: "USD".into(),
                    impressions: 10,
                    clicks: 1,
                    cost_micros: 1,
                    conversions: 0.0,
                    conversion_value_micros: 0,
                    video_views: None,
                    engagements: None,
                    reach: None,
                };
                payloads.push(codec.encode(&r).await?);
            }
            let t0 = Instant::now();
            producer.begin_transaction()?;
            let t1 = Instant::now();
            for p in &payloads {
                let mut record = BaseRecord::to(RawAdPerformance::TOPIC)
                    .key(tenant)
                    .payload(p);
                while let Err((e, back)) = producer.send(record) {
                    ensure!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let t2 = Instant::now();
            if mode == 2 {
                // Wakes the broker threads with librdkafka's "flushing" flag (linger bypassed),
                // returns at once: rdkafka's flush polls only after a zero-timeout check fails.
                let _ = producer.flush(Duration::ZERO);
            }
            if mode >= 1 {
                let deadline = Instant::now() + Duration::from_secs(60);
                while producer.in_flight_count() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let t3 = Instant::now();
            producer.commit_transaction(Duration::from_secs(60))?;
            let t4 = Instant::now();
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            phases.push([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4)]);
        }
        println!(
            "{}",
            match mode {
                0 =>
                    "commit_transaction straight after the sends (as TxProducer and the processor engine):",
                1 => "waiting for in_flight_count() == 0 in 1 ms steps, then commit_transaction:",
                _ =>
                    "flush(0) (wakes the senders), in-flight wait in 1 ms steps, then commit_transaction:",
            }
        );
        for (i, name) in ["begin", "send", "wait in-flight", "commit_transaction"]
            .iter()
            .enumerate()
        {
            let v: Vec<f64> = phases.iter().skip(1).map(|p| p[i]).collect();
            if let Some(s) = Spread::of(&v) {
                println!(
                    "  {name:>18}: median {:.1} ms (min {:.1}, max {:.1}) over {} transactions of {rows} records",
                    s.median,
                    s.min,
                    s.max,
                    v.len()
                );
            }
        }
    }
    Ok(())
}

/// The raw topic's partition count, asking for up to 30 s (a broker that just restarted answers
/// "not leader" for a while).
async fn raw_partitions(kafka: &KafkaSettings) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match clients::end_offsets(clients::kafka_config(kafka), RawAdPerformance::TOPIC).await {
            Ok(ends) => return Ok(ends.len() as u32),
            Err(e) if Instant::now() < deadline => {
                eprintln!("  broker not ready ({e}); asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `perf record` of one process (sampled on-CPU profile, no call graphs: release builds have no
/// frame pointers, so flat self-time per function is what is reliable).
struct Profiler {
    name: &'static str,
    child: Child,
    data: PathBuf,
}

impl Profiler {
    fn start(name: &'static str, pid: u32, dir: &Path) -> anyhow::Result<Self> {
        let data = dir.join(format!("{name}.perf.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-q", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf (is it installed? --perf needs it)")?;
        Ok(Self { name, child, data })
    }

    /// The top of the flat profile (the recording has been stopped with SIGINT).
    fn finish(self) -> anyhow::Result<(String, String)> {
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-F",
                "overhead,dso,sym",
                "--percent-limit",
                "1",
                "-i",
            ])
            .arg(&self.data)
            .output()?;
        let text: Vec<String> = String::from_utf8_lossy(&report.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(30)
            .map(|l| l.trim_end_matches([' ', '-']).to_owned())
            .collect();
        Ok((self.name.to_owned(), text.join("\n")))
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "INT");
            let _ = self.child.wait();
        }
    }
}

/// Uprobes on librdkafka's transaction calls in the processor binary, recorded for one process:
/// timing counters of each transaction's phases without touching the processor's code.
struct TxnProbes {
    child: Child,
    data: PathBuf,
}

/// The uprobe group (`perf probe` events are machine-wide: added at start, deleted at finish).
const PROBE_GROUP: &str = "mi_pipeline_bench";

/// Per-phase time of the processor's transactions: medians in ms, shares of the span in %.
#[derive(Debug, Clone, Serialize)]
struct TxnBreakdown {
    transactions: usize,
    span_s: f64,
    /// (phase, median ms, share of the span %).
    phases: Vec<(String, f64, f64)>,
    /// Transactions whose pre-commit flush waited ≥ 50 ms (rdkafka's `poll(100 ms)`).
    waited_in_flush: usize,
}

impl std::fmt::Display for TxnBreakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transactions in {:.1} s",
            self.transactions, self.span_s
        )?;
        for (phase, median, share) in &self.phases {
            write!(f, "; {phase} {median:.1} ms median ({share:.0} %)")?;
        }
        write!(
            f,
            "; {} of them waited ≥ 50 ms in the flush",
            self.waited_in_flush
        )
    }
}

impl TxnProbes {
    const FUNCTIONS: [&'static str; 4] = [
        "rd_kafka_begin_transaction",
        "rd_kafka_send_offsets_to_transaction",
        "rd_kafka_flush",
        "rd_kafka_commit_transaction",
    ];

    fn start(bin: &Path, pid: u32, dir: &Path) -> anyhow::Result<Self> {
        let _ = Self::delete();
        for (i, f) in Self::FUNCTIONS.iter().enumerate() {
            for spec in [
                format!("{PROBE_GROUP}:f{i}={f}"),
                format!("{PROBE_GROUP}:r{i}={f}%return"),
            ] {
                let out = Command::new("perf")
                    .args(["probe", "-q", "-x"])
                    .arg(bin)
                    .args(["--add", &spec])
                    .output()
                    .context("running perf probe")?;
                ensure!(
                    out.status.success(),
                    "perf probe --add {spec}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let data = dir.join("processor-transactions.perf.data");
        let child = Command::new("perf")
            .args(["record", "-q", "-k", "CLOCK_MONOTONIC", "-e"])
            .arg(format!("{PROBE_GROUP}:*"))
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, data })
    }

    fn delete() -> std::io::Result<std::process::Output> {
        Command::new("perf")
            .args(["probe", "-q", "-d"])
            .arg(format!("{PROBE_GROUP}:*"))
            .output()
    }

    /// Reads the recording (stopped with SIGINT) and deletes the probes.
    fn finish(self) -> anyhow::Result<TxnBreakdown> {
        let _ = Self::delete();
        let out = Command::new("perf")
            .args(["script", "-F", "time,event", "-i"])
            .arg(&self.data)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let events = text.lines().filter_map(|l| {
            let mut parts = l.split_whitespace();
            let t: f64 = parts.next()?.trim_end_matches(':').parse().ok()?;
            let name = parts.next()?.trim_end_matches(':');
            // Return probes come out as `r<i>__return`.
            let name = name.rsplit(':').next()?.trim_end_matches("__return");
            Some((t, name.to_owned()))
        });
        breakdown(events).ok_or_else(|| anyhow!("no complete transaction recorded"))
    }
}

impl Drop for TxnProbes {
    /// Never leaves the machine-wide probes behind, also when the run failed half way.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "INT");
            let _ = self.child.wait();
        }
        let _ = Self::delete();
    }
}

/// Splits probe events (`f<i>` entry, `r<i>` return of [`TxnProbes::FUNCTIONS`][i]) into
/// transactions and sums their phases.
fn breakdown(events: impl Iterator<Item = (f64, String)>) -> Option<TxnBreakdown> {
    #[derive(Default, Clone, Copy)]
    struct Txn {
        begin: Option<f64>,
        begun: Option<f64>,
        offsets: Option<f64>,
        offsets_done: Option<f64>,
        first_flush: Option<f64>,
        commit: Option<f64>,
        committed: Option<f64>,
    }
    let mut done: Vec<Txn> = Vec::new();
    let mut cur: Option<Txn> = None;
    for (t, name) in events {
        match name.as_str() {
            "f0" => {
                cur = Some(Txn {
                    begin: Some(t),
                    ..Default::default()
                })
            }
            "r0" => cur.iter_mut().for_each(|c| c.begun = Some(t)),
            "f1" => cur.iter_mut().for_each(|c| c.offsets = Some(t)),
            "r1" => cur.iter_mut().for_each(|c| c.offsets_done = Some(t)),
            "f2" => cur
                .iter_mut()
                .filter(|c| c.commit.is_none() && c.first_flush.is_none())
                .for_each(|c| c.first_flush = Some(t)),
            "f3" => cur.iter_mut().for_each(|c| c.commit = Some(t)),
            "r3" => {
                if let Some(mut c) = cur.take() {
                    c.committed = Some(t);
                    done.push(c);
                }
            }
            _ => {}
        }
    }
    // (begin, begun, offsets, offsets_done, first_flush, commit, committed), all present.
    let full: Vec<[f64; 7]> = done
        .iter()
        .filter_map(|c| {
            Some([
                c.begin?,
                c.begun?,
                c.offsets?,
                c.offsets_done?,
                c.first_flush?,
                c.commit?,
                c.committed?,
            ])
        })
        .collect();
    let span = full.last()?[6] - full.first()?[0];
    let mut phases = Vec::new();
    let mut phase = |name: &str, values: Vec<f64>| {
        let sum: f64 = values.iter().sum();
        let median = Spread::of(&values).map_or(f64::NAN, |s| s.median) * 1e3;
        phases.push((name.to_owned(), median, 100.0 * sum / span.max(1e-9)));
    };
    phase(
        "records processed and sent",
        full.iter().map(|x| x[2] - x[1]).collect(),
    );
    phase(
        "send_offsets_to_transaction",
        full.iter().map(|x| x[3] - x[2]).collect(),
    );
    let flush: Vec<f64> = full.iter().map(|x| x[5] - x[4]).collect();
    let waited_in_flush = flush.iter().filter(|f| **f >= 0.05).count();
    phase("flush before the commit", flush);
    phase(
        "rd_kafka_commit_transaction",
        full.iter().map(|x| x[6] - x[5]).collect(),
    );
    phase(
        "next batch collected",
        full.windows(2).map(|w| w[1][0] - w[0][6]).collect(),
    );
    Some(TxnBreakdown {
        transactions: full.len(),
        span_s: span,
        phases,
        waited_in_flush,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn print_drain(d: &Drain) {
    println!(
        "  drain phase, {} rows, each stage alone: producers {:.0} rows/s ({:.0} % of their time in commits); processor {:.0} rows/s in {:.1} s (steady {}); sink {:.0} rows/s in {:.1} s (steady {})",
        d.rows,
        d.producer_rows_per_s,
        100.0 * d.producer_stats.commit_s
            / (d.producer_stats.commit_s + d.producer_stats.publish_s).max(1e-9),
        d.processor.rows_per_s,
        d.processor.seconds,
        opt(d.processor.steady_rows_per_s, 0),
        d.sink.rows_per_s,
        d.sink.seconds,
        opt(d.sink.steady_rows_per_s, 0),
    );
    for (stage, figures) in [("processor", &d.processor), ("sink", &d.sink)] {
        for p in &figures.processes {
            println!(
                "    {stage} drain: {:<22} RSS peak {:>5.0} MB; {:.2} cores; {:.1} CPU-s per 1M rows",
                p.name, p.load.rss_peak_mb, p.load.cores, p.cpu_s_per_million_rows
            );
        }
    }
}

fn print_rep(r: &Rep) {
    println!(
        "  rates (rows/s): end to end {:.0}, producer {:.0}, processor done {} (steady {}), sink steady {}; sink tail {} rows in {} s",
        r.end_to_end_rows_per_s,
        r.producer_rows_per_s,
        opt(r.processor_rows_per_s, 0),
        opt(r.processor_steady_rows_per_s, 0),
        opt(r.sink_steady_rows_per_s, 0),
        r.sink_tail_rows.map_or("-".into(), |t| t.to_string()),
        opt(r.sink_tail_s, 1),
    );
    let f = &r.freshness_load;
    println!(
        "  freshness under load: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} probes)",
        f.p50_ms, f.p99_ms, f.max_ms, f.samples
    );
    if let Some(f) = &r.freshness_trickle {
        println!(
            "  freshness, trickle of {:.0} rows/s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} probes, {} missing)",
            r.trickle_rows_per_s, f.p50_ms, f.p99_ms, f.max_ms, f.samples, f.missing
        );
    }
    for p in &r.processes {
        println!(
            "  {:<24} RSS peak {:>5.0} MB median {:>5.0} MB; CPU {:>6.1} s = {:.2} cores ({:.1} CPU-s per 1M rows)",
            p.name,
            p.load.rss_peak_mb,
            p.load.rss_median_mb,
            p.load.cpu_seconds,
            p.load.cores,
            p.cpu_s_per_million_rows
        );
    }
    println!(
        "  machine busy {} cores during the load, {} of them outside the watched processes",
        opt(r.machine_busy_cores_load, 2),
        opt(r.other_cores_load, 2)
    );
    if let Some(k) = &r.kafka_perf {
        println!(
            "  Kafka ProducerPerformance: {:.0} records/s of {} B ({:.1} MB/s); pipeline = {} %",
            k.records_per_s,
            k.record_size,
            k.mb_per_s,
            opt(r.pct_of_kafka_perf, 1)
        );
    }
    if let Some(c) = &r.insert_ceiling {
        println!(
            "  direct insert: {:.0} rows/s ({} rows in {:.1} s of inserts); pipeline = {} %",
            c.rows_per_s,
            c.rows,
            c.insert_seconds,
            opt(r.pct_of_insert_ceiling, 1)
        );
    }
}

/// One line of the summary table: a figure over the repetitions.
#[derive(Debug, Serialize)]
struct Figure {
    key: String,
    label: String,
    unit: &'static str,
    min: f64,
    median: f64,
    max: f64,
    /// DESIGN §9 target, where there is one, and whether the median meets it.
    target: Option<String>,
    meets: Option<bool>,
}

/// A figure of one repetition: key, label, unit, value, DESIGN §9 target (`≥ N` or `< N`).
type Flat = (
    String,
    String,
    &'static str,
    Option<f64>,
    Option<&'static str>,
);

/// The figures of a repetition, flat.
fn flat(r: &Rep) -> Vec<Flat> {
    let mut out = vec![
        (
            "e2e_rows_per_s".into(),
            "end to end, exactly-once (fact rows/s)".into(),
            "rows/s",
            Some(r.end_to_end_rows_per_s),
            Some("≥ 100,000"),
        ),
        (
            "producer_rows_per_s".into(),
            "producer only, transactional (rows/s)".into(),
            "rows/s",
            Some(r.producer_rows_per_s),
            None,
        ),
        (
            "producer_commit_pct".into(),
            "producer: share of its time inside transaction commits".into(),
            "%",
            Some(
                100.0 * r.producer_stats.commit_s
                    / (r.producer_stats.commit_s + r.producer_stats.publish_s).max(1e-9),
            ),
            None,
        ),
        (
            "processor_rows_per_s".into(),
            "processor done (rows / time from first produce)".into(),
            "rows/s",
            r.processor_rows_per_s,
            None,
        ),
        (
            "processor_steady_rows_per_s".into(),
            "processor steady, 10–90 % of its input".into(),
            "rows/s",
            r.processor_steady_rows_per_s,
            None,
        ),
        (
            "sink_steady_rows_per_s".into(),
            "sink steady, 10–90 % of the rows in ClickHouse".into(),
            "rows/s",
            r.sink_steady_rows_per_s,
            None,
        ),
        (
            "sink_tail_s".into(),
            "sink tail after the processor was done".into(),
            "s",
            r.sink_tail_s,
            None,
        ),
        (
            "e2e_s".into(),
            "end to end time".into(),
            "s",
            Some(r.end_to_end_s),
            None,
        ),
        (
            "fresh_load_p50".into(),
            "freshness under full load, p50".into(),
            "ms",
            Some(r.freshness_load.p50_ms),
            None,
        ),
        (
            "fresh_load_p99".into(),
            "freshness under full load, p99".into(),
            "ms",
            Some(r.freshness_load.p99_ms),
            Some("< 5,000 (queueing; see trickle)"),
        ),
        (
            "fresh_load_max".into(),
            "freshness under full load, max".into(),
            "ms",
            Some(r.freshness_load.max_ms),
            None,
        ),
    ];
    if let Some(f) = &r.freshness_trickle {
        out.push((
            "fresh_trickle_p50".into(),
            format!("freshness, trickle {:.0} rows/s, p50", r.trickle_rows_per_s),
            "ms",
            Some(f.p50_ms),
            None,
        ));
        out.push((
            "fresh_trickle_p99".into(),
            format!("freshness, trickle {:.0} rows/s, p99", r.trickle_rows_per_s),
            "ms",
            Some(f.p99_ms),
            Some("< 5,000"),
        ));
        out.push((
            "fresh_trickle_max".into(),
            format!("freshness, trickle {:.0} rows/s, max", r.trickle_rows_per_s),
            "ms",
            Some(f.max_ms),
            None,
        ));
    }
    for p in &r.processes {
        let key = p.name.split_whitespace().next().unwrap_or("p").to_owned();
        let service = p.name == "stream-processors" || p.name == "sink";
        out.push((
            format!("{key}_rss_peak"),
            format!("{}: RSS peak under load", p.name),
            "MB",
            Some(p.load.rss_peak_mb),
            service.then_some("< 200"),
        ));
        out.push((
            format!("{key}_rss_median"),
            format!("{}: RSS median under load", p.name),
            "MB",
            Some(p.load.rss_median_mb),
            None,
        ));
        out.push((
            format!("{key}_cpu_s"),
            format!("{}: CPU seconds under load", p.name),
            "s",
            Some(p.load.cpu_seconds),
            None,
        ));
        out.push((
            format!("{key}_cores"),
            format!("{}: average cores under load", p.name),
            "cores",
            Some(p.load.cores),
            None,
        ));
        out.push((
            format!("{key}_cpu_per_m"),
            format!("{}: CPU seconds per 1M rows", p.name),
            "s",
            Some(p.cpu_s_per_million_rows),
            None,
        ));
        if let Some(t) = &p.trickle {
            out.push((
                format!("{key}_cores_trickle"),
                format!("{}: average cores, trickle", p.name),
                "cores",
                Some(t.cores),
                None,
            ));
        }
    }
    out.push((
        "machine_cores".into(),
        "machine busy cores under load (everything)".into(),
        "cores",
        r.machine_busy_cores_load,
        None,
    ));
    out.push((
        "other_cores".into(),
        "… of which outside the watched processes".into(),
        "cores",
        r.other_cores_load,
        None,
    ));
    if let Some(k) = &r.kafka_perf {
        out.push((
            "kafka_perf_rows_per_s".into(),
            format!(
                "ceiling: Kafka ProducerPerformance ({} B records)",
                k.record_size
            ),
            "rows/s",
            Some(k.records_per_s),
            None,
        ));
    }
    out.push((
        "pct_of_kafka".into(),
        "pipeline as % of Kafka's producer perf".into(),
        "%",
        r.pct_of_kafka_perf,
        Some("≥ 50"),
    ));
    if let Some(c) = &r.insert_ceiling {
        out.push((
            "insert_ceiling_rows_per_s".into(),
            format!(
                "ceiling: direct RowBinary insert ({} rows/batch)",
                c.batch_rows
            ),
            "rows/s",
            Some(c.rows_per_s),
            None,
        ));
    }
    out.push((
        "pct_of_insert".into(),
        "pipeline as % of the direct insert".into(),
        "%",
        r.pct_of_insert_ceiling,
        None,
    ));
    if let Some(b) = &r.sink_batches {
        out.push((
            "sink_batches".into(),
            "sink batches of fact rows".into(),
            "batches",
            Some(b.batches as f64),
            None,
        ));
        out.push((
            "sink_rows_per_batch".into(),
            "sink rows per batch".into(),
            "rows",
            Some(b.rows_per_batch),
            None,
        ));
        out.push((
            "sink_events_per_batch".into(),
            "sink load events per batch (tenants)".into(),
            "events",
            Some(b.audit_rows as f64 / b.batches.max(1) as f64),
            None,
        ));
    }
    if let Some(d) = &r.drain {
        out.push((
            "drain_producer_rows_per_s".into(),
            "drain: producers alone (rows/s)".into(),
            "rows/s",
            Some(d.producer_rows_per_s),
            None,
        ));
        out.push((
            "drain_producer_pct_of_kafka".into(),
            "drain: producers alone as % of Kafka's producer perf".into(),
            "%",
            r.kafka_perf
                .as_ref()
                .map(|k| 100.0 * d.producer_rows_per_s / k.records_per_s),
            None,
        ));
        for (key, stage) in [("processor", &d.processor), ("sink", &d.sink)] {
            out.push((
                format!("drain_{key}_rows_per_s"),
                format!("drain: {key} alone over a backlog (rows/s, start-up included)"),
                "rows/s",
                Some(stage.rows_per_s),
                None,
            ));
            out.push((
                format!("drain_{key}_steady"),
                format!("drain: {key} alone, steady 10–90 % (rows/s)"),
                "rows/s",
                stage.steady_rows_per_s,
                None,
            ));
            for p in &stage.processes {
                let who = p.name.split_whitespace().next().unwrap_or("p");
                out.push((
                    format!("drain_{key}_{who}_cpu_per_m"),
                    format!("drain: {key} alone — {}: CPU seconds per 1M rows", p.name),
                    "s",
                    Some(p.cpu_s_per_million_rows),
                    None,
                ));
                out.push((
                    format!("drain_{key}_{who}_cores"),
                    format!("drain: {key} alone — {}: average cores", p.name),
                    "cores",
                    Some(p.load.cores),
                    None,
                ));
                if p.name == "stream-processors" || p.name == "sink" {
                    out.push((
                        format!("drain_{key}_{who}_rss_peak"),
                        format!("drain: {key} alone — {}: RSS peak", p.name),
                        "MB",
                        Some(p.load.rss_peak_mb),
                        Some("< 200"),
                    ));
                }
            }
        }
        out.push((
            "drain_sink_pct_of_insert".into(),
            "drain: sink alone (steady) as % of the direct insert".into(),
            "%",
            r.insert_ceiling
                .as_ref()
                .and_then(|c| Some(100.0 * d.sink.steady_rows_per_s? / c.rows_per_s)),
            None,
        ));
    }
    out
}

fn summarize(reps: &[Rep]) -> Vec<Figure> {
    let mut order: Vec<(String, String, &'static str, Option<String>)> = Vec::new();
    let mut values: HashMap<String, Vec<f64>> = HashMap::new();
    for r in reps {
        for (key, label, unit, value, target) in flat(r) {
            if !order.iter().any(|o| o.0 == key) {
                order.push((key.clone(), label, unit, target.map(str::to_owned)));
            }
            if let Some(v) = value.filter(|v| v.is_finite()) {
                values.entry(key).or_default().push(v);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|(key, label, unit, target)| {
            let s = Spread::of(values.get(&key)?)?;
            let meets = target.as_ref().and_then(|t| meets(t, s.median));
            Some(Figure {
                key,
                label,
                unit,
                min: s.min,
                median: s.median,
                max: s.max,
                target,
                meets,
            })
        })
        .collect()
}

/// Whether `value` meets a target written as `≥ N…` or `< N…`.
fn meets(target: &str, value: f64) -> Option<bool> {
    let (op, rest) = target.split_at(target.char_indices().nth(1)?.0);
    let number: f64 = rest
        .split_whitespace()
        .next()?
        .replace(',', "")
        .parse()
        .ok()?;
    match op {
        "≥" => Some(value >= number),
        "<" => Some(value < number),
        _ => None,
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "rows/s" | "rows" | "batches" | "events" | "ms" | "MB" if v.abs() >= 100.0 => {
            let s = format!("{v:.0}");
            // thousands separators for readability
            let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            format!("{sign}{out}")
        }
        _ if v.abs() >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

fn table(figures: &[Figure], markdown: bool) -> String {
    let mut s = String::new();
    if markdown {
        s.push_str("| figure | unit | min | median | max | target (DESIGN §9) |\n|---|---|---:|---:|---:|---|\n");
    } else {
        s.push_str(&format!(
            "{:<58} {:>7} {:>12} {:>12} {:>12}  {}\n",
            "figure", "unit", "min", "median", "max", "target"
        ));
    }
    for f in figures {
        let target = match (&f.target, f.meets) {
            (Some(t), Some(true)) => format!("{t} ✔"),
            (Some(t), Some(false)) => format!("{t} ✘"),
            (Some(t), None) => t.clone(),
            _ => String::new(),
        };
        let (min, med, max) = (
            fmt_value(f.min, f.unit),
            fmt_value(f.median, f.unit),
            fmt_value(f.max, f.unit),
        );
        if markdown {
            s.push_str(&format!(
                "| {} | {} | {min} | {med} | {max} | {target} |\n",
                f.label, f.unit
            ));
        } else {
            s.push_str(&format!(
                "{:<58} {:>7} {min:>12} {med:>12} {max:>12}  {target}\n",
                f.label, f.unit
            ));
        }
    }
    s
}

/// The markdown report: the table, the setup, where the time goes.
fn markdown(args: &Args, reps: &[Rep], figures: &[Figure], started: &str) -> String {
    let mut s = String::new();
    let first = &reps[0];
    s.push_str("# Pipeline benchmark\n\n");
    s.push_str(&format!(
        "`pipeline-bench` started {started}: {} repetition(s) of {} fact rows ({} tenants × {} days × {} rows/day, one producer transaction per tenant-day, {:.0} B average Avro value), then a trickle of {} rows/s for {} s. Machine: {} CPUs; the busy-cores lines below show how much of it other work used.\n\n",
        reps.len(),
        first.rows,
        first.tenants,
        first.days,
        first.rows_per_day,
        first.avg_value_bytes,
        args.trickle_rate,
        args.trickle_seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    s.push_str("Path: this process produces transactionally (`TxProducer`, as the extractors do) → `mi.raw.ad_performance.v1` → `stream-processors run facts` (child process, release build) → `mi.fact.ad_performance.v1` → `sink run` (child process) → chDB behind the dev HTTP front. End to end = from the first produce call until `count()` (no FINAL, polled every ");
    s.push_str(&format!(
        "{} ms) reached the rows produced, confirmed by a FINAL count and sums of impressions, clicks and cost equal to the source's.\n\n",
        args.poll_ms
    ));
    s.push_str(&table(figures, true));
    s.push_str("\n## Where the time goes\n\n");
    for r in reps {
        s.push_str(&format!(
            "- rep {}: {} producer(s) done at {:.1} s ({} transactions; {:.1} s publishing and {:.1} s inside commits, summed over producers), processor done at {} s, every row queryable at {:.1} s; sink tail {} rows in {} s; {} sink batches of fact rows ({} rows/batch, {} load events each); {} duplicates collapsed by FINAL; rows per raw partition {:?}; WARN/ERROR lines in the services' logs {:?}.\n",
            r.rep,
            r.producer_stats.producers,
            r.producer_s,
            r.producer_stats.transactions,
            r.producer_stats.publish_s,
            r.producer_stats.commit_s,
            opt(r.processor_done_s, 1),
            r.end_to_end_s,
            r.sink_tail_rows.map_or("-".into(), |t| t.to_string()),
            opt(r.sink_tail_s, 1),
            r.sink_batches.map_or("-".into(), |b| b.batches.to_string()),
            r.sink_batches.map_or("-".into(), |b| format!("{:.0}", b.rows_per_batch)),
            r.sink_batches.map_or("-".into(), |b| format!("{:.1}", b.audit_rows as f64 / b.batches.max(1) as f64)),
            r.duplicates_collapsed,
            r.rows_per_partition,
            r.service_log_problems,
        ));
    }
    for r in reps {
        if let Some(d) = &r.drain {
            s.push_str(&format!(
                "- rep {} drain phase ({} rows, each stage alone over a backlog): producers {:.0} rows/s ({:.0} % of their time inside commits), processor {:.0} rows/s over {:.1} s (steady {}), sink {:.0} rows/s over {:.1} s (steady {}).\n",
                r.rep,
                d.rows,
                d.producer_rows_per_s,
                100.0 * d.producer_stats.commit_s
                    / (d.producer_stats.commit_s + d.producer_stats.publish_s).max(1e-9),
                d.processor.rows_per_s,
                d.processor.seconds,
                opt(d.processor.steady_rows_per_s, 0),
                d.sink.rows_per_s,
                d.sink.seconds,
                opt(d.sink.steady_rows_per_s, 0),
            ));
        }
    }
    s.push_str("\nCPU seconds per million rows (median over repetitions) say which stage costs what on these 2 cores:\n\n");
    for f in figures.iter().filter(|f| f.key.ends_with("_cpu_per_m")) {
        s.push_str(&format!(
            "- {}: {:.1} s\n",
            f.label.trim_end_matches(": CPU seconds per 1M rows"),
            f.median
        ));
    }
    for r in reps {
        if let Some(b) = &r.processor_transactions {
            s.push_str(&format!(
                "\nrep {}, the processor's transactions (uprobes on librdkafka, full load): {b}.\n",
                r.rep
            ));
        }
        for (name, profile) in &r.perf_profiles {
            s.push_str(&format!("\n### perf profile of {name}, rep {} (self time, top symbols)\n\n```\n{profile}\n```\n", r.rep));
        }
    }
    if let Some(k) = reps.iter().find_map(|r| r.kafka_perf.as_ref()) {
        s.push_str(&format!(
            "\nKafka ceiling: `ProducerPerformance --num-records {} --record-size {} --throughput -1 --producer-props {}` on a scratch topic with the raw topic's partitions: `{}`\n",
            k.records, k.record_size, k.props.join(" "), k.summary
        ));
    }
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Utc::now().to_rfc3339();
    let here = std::env::current_exe()?;
    let bin_dir = args
        .bin_dir
        .clone()
        .or_else(|| here.parent().map(Path::to_path_buf))
        .ok_or_else(|| anyhow!("no directory for the service binaries; pass --bin-dir"))?;
    let processors_bin = bin_dir.join("stream-processors");
    let sink_bin = bin_dir.join("sink");
    for bin in [&processors_bin, &sink_bin] {
        ensure!(
            bin.is_file(),
            "no {} : build the services first (cargo build --release -p mi-stream-processors -p mi-sink) or pass --bin-dir",
            bin.display()
        );
    }
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    if !args.no_kafka_perf {
        ensure!(
            repo.join("dev/stack").is_file(),
            "no dev/stack under {} (pass --repo, or --no-kafka-perf)",
            repo.display()
        );
    }
    let mut infra: Settings = mi_common::settings::load(None)?;
    for prop in &args.kafka_props {
        let (key, value) = prop
            .split_once('=')
            .ok_or_else(|| anyhow!("--kafka-prop {prop}: expected KEY=VALUE"))?;
        infra
            .kafka
            .properties
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    let codec = Arc::new(Codec::new(clients::schema_registry(&infra.schema_registry)));
    if let Some(n) = args.diagnose_transactions {
        return diagnose_transactions(&infra, &codec, n, args.rows_per_day).await;
    }
    let partitions = raw_partitions(&infra.kafka)
        .await
        .context("reading the raw topic's partitions (is the stack up? dev/stack up)")?;
    ensure!(
        partitions > 0,
        "{} has no partitions",
        RawAdPerformance::TOPIC
    );
    println!(
        "pipeline-bench: {} repetition(s); services {} and {}; {} CPUs; {} partitions per topic",
        args.reps,
        processors_bin.display(),
        sink_bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        partitions
    );
    let bench = Bench {
        args,
        infra,
        codec,
        processors_bin,
        sink_bin,
        repo,
        partitions,
    };
    let mut reps = Vec::new();
    for rep in 1..=bench.args.reps.max(1) {
        reps.push(
            bench
                .rep(rep)
                .await
                .with_context(|| format!("repetition {rep}"))?,
        );
    }
    let figures = summarize(&reps);
    println!("\n{}", table(&figures, false));

    let args = &bench.args;
    for path in [&args.out, &args.report] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    let json = serde_json::json!({
        "bench": "pipeline-bench",
        "started": started,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "targets": {
            "end_to_end_rows_per_s": TARGET_ROWS_PER_S,
            "freshness_p99_ms": TARGET_FRESHNESS_P99_MS,
            "pct_of_kafka_producer_perf": TARGET_PCT_OF_KAFKA,
            "rss_mb": TARGET_RSS_MB,
        },
        "summary": figures,
        "reps": reps,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut report = std::fs::File::create(&args.report)
        .with_context(|| format!("writing {}", args.report.display()))?;
    report.write_all(markdown(args, &reps, &figures, &started).as_bytes())?;
    println!("wrote {} and {}", args.out.display(), args.report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_producer_performance_summaries() {
        let line = "200000 records sent, 98425.196850 records/sec (24.03 MB/sec), 512.36 ms avg latency, 1004.00 ms max latency, 487 ms 50th, 915 ms 95th, 981 ms 99th, 1001 ms 99.9th.";
        assert_eq!(
            parse_perf_summary(line),
            Some((98425.196850, 24.03, 512.36))
        );
        assert_eq!(parse_perf_summary("nonsense"), None);
    }

    #[test]
    fn targets_are_read_back() {
        assert_eq!(meets("≥ 100,000", 120_000.0), Some(true));
        assert_eq!(meets("≥ 100,000", 99_999.0), Some(false));
        assert_eq!(meets("< 5,000 (queueing)", 4_000.0), Some(true));
        assert_eq!(meets("< 200", 250.0), Some(false));
    }

    #[test]
    fn transaction_phases_come_from_probe_events() {
        // Two transactions: 40 ms of records, 5 ms offsets, a flush that waited 100 ms, 2 ms commit.
        let mut events = Vec::new();
        for start in [0.0, 0.2] {
            for (dt, name) in [
                (0.0, "f0"),
                (0.001, "r0"),
                (0.041, "f1"),
                (0.046, "r1"),
                (0.046, "f2"),
                (0.146, "f2"),
                (0.146, "f3"),
                (0.147, "f2"),
                (0.148, "r3"),
            ] {
                events.push((start + dt, name.to_owned()));
            }
        }
        let b = breakdown(events.into_iter()).unwrap_or_else(|| panic!("no breakdown"));
        assert_eq!(b.transactions, 2);
        assert_eq!(b.waited_in_flush, 2);
        let flush = b.phases.iter().find(|p| p.0 == "flush before the commit");
        assert!(flush.is_some_and(|p| (p.1 - 100.0).abs() < 1e-6), "{b}");
    }

    #[test]
    fn steady_rate_ignores_start_and_tail() {
        let t0 = Instant::now();
        let series: Vec<(Instant, f64)> = (0..=10)
            .map(|s| (t0 + Duration::from_secs(s), (s * 100) as f64))
            .collect();
        let rate = steady_rate(&series, 1_000.0).unwrap_or_default();
        assert!((rate - 100.0).abs() < 1e-9, "{rate}");
    }
}
