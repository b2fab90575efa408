//! The sink under faults, against the real Kafka and a ClickHouse engine of its own (a chDB front
//! started by this test, so that it can be taken away): `kill -9` of the sink several times, and
//! ClickHouse unreachable for a while in the middle of the run. Afterwards the warehouse, read
//! with FINAL, must hold every record exactly once. Needs the local stack (`dev/stack up`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{Codec, FactAdPerformance, Record};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const RECORDS: usize = 60_000;

fn settings() -> Settings {
    mi_common::settings::load(None).expect("settings")
}

fn fact(tenant: &str, i: usize) -> FactAdPerformance {
    FactAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::GoogleAds,
        account_id: "1000000001".into(),
        extracted_at: Utc
            .timestamp_millis_opt(1_800_000_000_000)
            .single()
            .expect("instant"),
        run_id: "r".into(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")
            + chrono::Days::new((i % 200) as u64),
        campaign_id: format!("c{}", i % 20),
        ad_group_id: format!("g{}", i % 100),
        ad_id: format!("a{i}"),
        device: Some("DESKTOP".into()),
        country: None,
        currency: "USD".into(),
        impressions: 10 + (i % 90) as i64,
        clicks: (i % 7) as i64,
        cost_micros: (i % 300) as i64 * 10_000,
        conversions: (i % 2) as f64,
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

fn spawn_sink(group: &str, url: &str, database: &str) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_sink"))
        .arg("run")
        .env("MI_SINK_GROUP", group)
        .env("MI_CLICKHOUSE__URL", url)
        .env("MI_CLICKHOUSE__DATABASE", database)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_clickhouse_outage_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let s = settings();
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut front = Front {
        port,
        dir: std::env::temp_dir().join(format!("mi-sink-faults-{}", uuid::Uuid::new_v4())),
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
    let tenant = format!("sinkf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::idempotent_producer_config(&s.kafka)
            .set("queue.buffering.max.messages", "500000")
            .create()?;
    for i in 0..RECORDS {
        let bytes = codec.encode(&fact(&tenant, i)).await?;
        let mut record = BaseRecord::to(FactAdPerformance::TOPIC)
            .key(&tenant)
            .payload(&bytes);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    producer.flush(Duration::from_secs(60))?;

    let mut sink = spawn_sink(&group, &url, database)?;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(1_000 + fastrand::u64(0..1_500))).await;
        if round == 2 {
            // ClickHouse away for a minute: the sink must wait, not crash-loop or drop.
            front.stop();
            tokio::time::sleep(Duration::from_secs(60)).await;
            front.start()?;
        } else {
            sink.kill()?; // SIGKILL
            sink.wait()?;
            sink = spawn_sink(&group, &url, database)?;
        }
    }
    let db = ch.clone().with_database(database);
    let expected: (u64, i64, i64) = (
        RECORDS as u64,
        (0..RECORDS).map(|i| 10 + (i % 90) as i64).sum(),
        (0..RECORDS).map(|i| (i % 300) as i64 * 10_000).sum(),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let got = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got: (u64, i64, i64) = db
            .query("SELECT count(), sum(impressions), sum(cost_micros) FROM fact_ad_performance FINAL WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_one()
            .await
            .unwrap_or_default();
        if got == expected || Instant::now() > deadline {
            break got;
        }
    };
    sink.kill()?;
    let _ = sink.wait();
    assert_eq!(
        got, expected,
        "rows, impressions and cost read with FINAL equal the source exactly"
    );
    Ok(())
}
