//! The sink under faults, against the real Kafka and a ClickHouse engine of its own (a chDB front
//! started by this test, so that it can be taken away). ClickHouse is unreachable for a minute —
//! four times the sinks' `max.poll.interval.ms` — while a second sink joins the group (a
//! rebalance during the pause); both sinks must keep running and stay members of the group
//! throughout. Then each sink is `kill -9`ed in turn while the backlog loads. Afterwards the
//! warehouse, read with FINAL, must hold every record exactly once: rows, impressions, clicks,
//! cost and conversions per tenant and day equal the source's, and the audit (`load_batches`)
//! counts every record once. Needs the local stack (`dev/stack up`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{Codec, FactAdPerformance, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const RECORDS: usize = 60_000;
const TENANTS: usize = 3;
const DAYS: usize = 150;
/// The sinks' `max.poll.interval.ms` and `session.timeout.ms` (librdkafka needs the first at
/// least as long as the second): short, so that the outage lasts several poll intervals.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(15);
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const OUTAGE: Duration = Duration::from_secs(60);

fn settings() -> Settings {
    mi_common::settings::load(None).expect("settings")
}

/// Record `i`: tenant `i % TENANTS`, about `RECORDS / (TENANTS * DAYS)` records per tenant and
/// day, each its own fact key (`ad_id`). Conversions are multiples of 0.25, exact in binary, so
/// their Float64 sums are exact in any order of summation and compare with `==`.
fn fact(tenants: &[String], i: usize) -> FactAdPerformance {
    FactAdPerformance {
        tenant_id: tenants[i % TENANTS].clone(),
        platform: Platform::GoogleAds,
        account_id: "1000000001".into(),
        extracted_at: Utc
            .timestamp_millis_opt(1_800_000_000_000)
            .single()
            .expect("instant"),
        run_id: "r".into(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")
            + chrono::Days::new(((i / TENANTS) % DAYS) as u64),
        campaign_id: format!("c{}", i % 20),
        ad_group_id: format!("g{}", i % 100),
        ad_id: format!("a{i}"),
        device: Some("DESKTOP".into()),
        country: None,
        currency: "USD".into(),
        impressions: 10 + (i % 90) as i64,
        clicks: (i % 7) as i64,
        cost_micros: (i % 300) as i64 * 10_000,
        conversions: (i % 9) as f64 * 0.25,
        conversion_value_micros: 0,
        video_views: None,
        engagements: None,
        reach: None,
        ctr: None,
        cpc_micros: None,
        cpm_micros: None,
        cpa_micros: None,
        roas: None,
        conversion_rate: None,
        video_view_rate: None,
        frequency: None,
    }
}

/// Rows, impressions, clicks, cost and conversions of one tenant and day.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    rows: u64,
    impressions: i64,
    clicks: i64,
    cost_micros: i64,
    conversions: f64,
}

type PerTenantDay = BTreeMap<(String, String), Totals>;

fn expected(facts: &[FactAdPerformance]) -> PerTenantDay {
    let mut out = PerTenantDay::new();
    for f in facts {
        let t = out
            .entry((f.tenant_id.clone(), f.date.to_string()))
            .or_default();
        t.rows += 1;
        t.impressions += f.impressions;
        t.clicks += f.clicks;
        t.cost_micros += f.cost_micros;
        t.conversions += f.conversions;
    }
    out
}

/// The warehouse's totals per tenant and day, read with FINAL.
async fn loaded(db: &clickhouse::Client, prefix: &str) -> anyhow::Result<PerTenantDay> {
    let rows: Vec<(String, String, u64, i64, i64, i64, f64)> = db
        .query(
            "SELECT tenant_id, toString(date), count(), sum(impressions), sum(clicks), \
             sum(cost_micros), sum(conversions) FROM fact_ad_performance FINAL \
             WHERE startsWith(tenant_id, ?) GROUP BY tenant_id, date",
        )
        .bind(prefix)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(tenant, date, rows, impressions, clicks, cost_micros, conversions)| {
                (
                    (tenant, date),
                    Totals {
                        rows,
                        impressions,
                        clicks,
                        cost_micros,
                        conversions,
                    },
                )
            },
        )
        .collect())
}

/// Rows per tenant in `load_batches`, read with FINAL.
async fn audited(db: &clickhouse::Client, prefix: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows: Vec<(String, u64)> = db
        .query(
            "SELECT tenant_id, sum(rows) FROM load_batches FINAL \
             WHERE startsWith(tenant_id, ?) AND table = 'fact_ad_performance' GROUP BY tenant_id",
        )
        .bind(prefix)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().collect())
}

/// How many members `group` has and its state, as the group coordinator sees them.
async fn group_members(s: &Settings, group: &str) -> anyhow::Result<(usize, String)> {
    let config = clients::kafka_config(&s.kafka);
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(10))?;
        let info = list
            .groups()
            .first()
            .ok_or_else(|| anyhow::anyhow!("group {group} not described"))?;
        Ok((info.members().len(), info.state().to_owned()))
    })
    .await?
}

/// A chDB front of this test's own, on a fixed port and data directory (restartable).
struct Front {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Front {
    fn python() -> PathBuf {
        let cache = std::env::var("MI_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/marketing-iq")
            });
        cache.join("venv/bin/python")
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/clickhouse-front/chdb_http.py");
        let child = Command::new(Self::python())
            .arg(script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--data-dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the test's chDB front did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `sink run` child process in the test's group, killed when dropped (also when an assertion
/// fails), its log (mi_sink at info) appended to `log`.
struct Sink {
    child: Child,
    log: PathBuf,
}

impl Sink {
    fn spawn(group: &str, url: &str, database: &str, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_sink"))
            .arg("run")
            .env("MI_SINK__GROUP", group)
            .env(
                "MI_SINK__MAX_POLL_INTERVAL_MS",
                MAX_POLL_INTERVAL.as_millis().to_string(),
            )
            .env(
                "MI_SINK__SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .env("MI_CLICKHOUSE__URL", url)
            .env("MI_CLICKHOUSE__DATABASE", database)
            .env("RUST_LOG", "warn,mi_sink=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// `kill -9`.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Fails, with the end of its log, unless the process is still running.
    fn assert_running(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{what} exited ({status}) during the ClickHouse outage; its log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain consumer of the fact topic alone in the sinks' group, polling on a thread of its own;
/// it never commits, so whatever it held is read again by the sinks after it leaves.
struct FactOnlyMember {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl FactOnlyMember {
    fn join(s: &Settings, group: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer =
            clients::read_committed_consumer_config(&s.kafka, group).create()?;
        consumer.subscribe(&[FactAdPerformance::TOPIC])?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                    eprintln!("fact-only member: {e}");
                }
            }
            // Dropping the consumer closes it: it leaves the group without committing.
            drop(consumer);
            Ok(())
        });
        Ok(Self { stop, thread })
    }

    fn leave(self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the fact-only member panicked"))?
    }
}

async fn produce(
    codec: &Codec,
    producer: &ThreadedProducer<DefaultProducerContext>,
    facts: &[FactAdPerformance],
) -> anyhow::Result<()> {
    for f in facts {
        let bytes = codec.encode(f).await?;
        let mut record = BaseRecord::to(FactAdPerformance::TOPIC)
            .key(&f.tenant_id)
            .payload(&bytes);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_clickhouse_outage_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let s = settings();
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let scratch = std::env::temp_dir().join(format!("mi-sink-faults-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch)?;
    eprintln!("sink logs in {}", scratch.display());
    let mut front = Front {
        port,
        dir: scratch.join("chdb"),
        child: None,
    };
    front.start()?;
    let url = format!("http://127.0.0.1:{port}");
    let database = "mi_faults";
    let ch = clients::clickhouse(&mi_common::settings::ClickHouseSettings {
        url: url.clone(),
        ..s.clickhouse.clone()
    });
    mi_sink::migrate::migrate(&ch, database).await?;

    let group = format!("it-sink-faults-{}", uuid::Uuid::new_v4().simple());
    for topic in mi_sink::load::TOPICS {
        clients::start_group_at_end(&s.kafka, &group, topic).await?;
    }
    let prefix = format!("sinkf-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("{prefix}{t}")).collect();
    let facts: Vec<FactAdPerformance> = (0..RECORDS).map(|i| fact(&tenants, i)).collect();
    let expected = expected(&facts);
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::idempotent_producer_config(&s.kafka)
            .set("queue.buffering.max.messages", "500000")
            .create()?;
    // A third of the facts before the sink starts, a third during the outage (so that the sinks
    // have batches they cannot load), a third after it (a backlog to load while being killed).
    let thirds: Vec<&[FactAdPerformance]> = facts.chunks(RECORDS.div_ceil(3)).collect();
    produce(&codec, &producer, thirds[0]).await?;

    let db = ch.clone().with_database(database);
    let logs = [scratch.join("sink-a.log"), scratch.join("sink-b.log")];
    let mut a = Sink::spawn(&group, &url, database, &logs[0])?;
    // Loading: the first sink, alone in the group, holds every partition.
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .query("SELECT count() FROM fact_ad_performance")
        .fetch_one::<u64>()
        .await?
        == 0
    {
        anyhow::ensure!(Instant::now() < deadline, "the sink loaded nothing in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ClickHouse away for four max.poll.intervals: the sinks must wait with their partitions
    // paused, polling, still in the group — not crash-loop, leave the group or drop records.
    front.stop();
    let outage = Instant::now();
    produce(&codec, &producer, thirds[1]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A second sink joins: the first, paused, loses half its partitions (the sticky assignor
    // hands over the dimension topics, which carry no records here).
    let mut b = Sink::spawn(&group, &url, database, &logs[1])?;
    // Then a member subscribed to the fact topic alone: balancing can only give it fact
    // partitions, so the first sink loses the partition of the batch it is retrying.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    let mut fact_only = Some(FactOnlyMember::join(&s, &group)?);
    let mut members_left = 3;
    for check in [Duration::from_secs(30), OUTAGE - Duration::from_secs(5)] {
        tokio::time::sleep(check.saturating_sub(outage.elapsed())).await;
        a.assert_running("the first sink")?;
        b.assert_running("the second sink")?;
        // Every live member in a settled group: no sink was dropped for not polling.
        let deadline = Instant::now() + Duration::from_secs(10);
        let members = loop {
            let members = group_members(&s, &group).await?;
            if members == (members_left, "Stable".to_owned()) || Instant::now() > deadline {
                break members;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!(
            "{:.0?} into the outage: both sinks running, group {members:?}",
            outage.elapsed()
        );
        assert_eq!(
            members,
            (members_left, "Stable".to_owned()),
            "{:.0?} into a ClickHouse outage (max.poll.interval {MAX_POLL_INTERVAL:?}) every member is in a stable group",
            outage.elapsed()
        );
        if let Some(member) = fact_only.take() {
            // Its partitions go back to the sinks, which read them from the committed offsets.
            member.leave()?;
            members_left = 2;
        }
    }
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    front.start()?;
    let back = Instant::now();
    // The same two sink processes load everything produced so far: they resumed by themselves.
    let two_thirds = (thirds[0].len() + thirds[1].len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = db
            // Ours only: the topics are shared with whatever else runs on the stack.
            .query("SELECT count() FROM fact_ad_performance FINAL WHERE startsWith(tenant_id, ?)")
            .bind(prefix.as_str())
            .fetch_one()
            .await
            .unwrap_or_default();
        if n == two_thirds {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{n} of {two_thirds} facts loaded 60 s after ClickHouse came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "ClickHouse back after {:.0?}; the waiting sinks caught up in {:.1?}",
        back - outage,
        back.elapsed()
    );
    a.assert_running("the first sink")?;
    b.assert_running("the second sink")?;

    produce(&codec, &producer, thirds[2]).await?;
    // kill -9 while the backlog loads, each sink in turn.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_000 + fastrand::u64(0..1_500))).await;
        if round % 2 == 0 {
            a.kill()?;
            a = Sink::spawn(&group, &url, database, &logs[0])?;
        } else {
            b.kill()?;
            b = Sink::spawn(&group, &url, database, &logs[1])?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let got = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = loaded(&db, &prefix).await.unwrap_or_default();
        if got == expected || Instant::now() > deadline {
            break got;
        }
    };
    // A batch's audit follows its rows.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for ((tenant, _), t) in &expected {
        *want.entry(tenant.clone()).or_default() += t.rows;
    }
    let audit = loop {
        let audit = audited(&db, &prefix).await.unwrap_or_default();
        if audit == want || Instant::now() > deadline {
            break audit;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    drop(a);
    drop(b);

    // The first sink's log: it paused on the failed insert, then lost partitions while paused,
    // among them the one of its batch in flight, which it dropped instead of loading.
    let first = std::fs::read_to_string(&logs[0])?;
    let at = |what: &str| first.lines().position(|l| l.contains(what));
    let count = |what: &str| {
        logs.iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .map(|text| text.lines().filter(|l| l.contains(what)).count())
            .sum::<usize>()
    };
    eprintln!(
        "sink logs: {} pauses, {} resumes, {} revocations, {} batches dropped for a revoked partition; {:.0?} in all",
        count("consumption paused"),
        count("consumption resumed"),
        count("partitions revoked"),
        count("batch dropped"),
        started.elapsed()
    );
    let (paused, revoked, dropped) = (
        at("consumption paused"),
        at("partitions revoked"),
        at("batch dropped"),
    );
    assert!(
        paused.is_some() && paused < revoked && revoked < dropped,
        "the first sink paused, lost partitions while paused, and dropped its batch in flight (log lines {paused:?}, {revoked:?}, {dropped:?}; logs in {})",
        scratch.display()
    );
    let mismatched: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .take(5)
        .map(|(k, v)| (k, v, got.get(k)))
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "every tenant and day loaded (first differences, expected vs loaded: {mismatched:?})"
    );
    assert!(
        got == expected,
        "rows, impressions, clicks, cost and conversions per tenant and day, read with FINAL, equal the source exactly; first differences (expected vs loaded): {mismatched:?}"
    );
    assert_eq!(
        audit, want,
        "load_batches, read with FINAL, counts every record once per tenant"
    );
    drop(front);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
