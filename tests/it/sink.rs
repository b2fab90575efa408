//! The sink against the real Kafka and ClickHouse engine: curated records in, exact totals out
//! (read with FINAL), restatements counted once with their newest values, one load event per
//! tenant and batch, extraction runs in `extraction_runs`, and an audit (`load_batches`) that adds
//! up to what was loaded — also when every batch is read again as after a `kill -9` between the
//! audit and the offsets commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{
    Codec, DimCampaign, ExtractionRun, FactAdPerformance, LoadEvent, Record, RunStatus,
};
use mi_sink::load::{self, LoadConfig, TOPICS};
use mi_tests::{offsets, settings, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

type Partition = (String, i32);

fn fact(tenant: &str, i: usize, extracted_ms: i64, conversions: f64) -> FactAdPerformance {
    FactAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::MetaAds,
        account_id: "act_7".into(),
        extracted_at: Utc
            .timestamp_millis_opt(extracted_ms)
            .single()
            .expect("instant"),
        run_id: "r".into(),
        date: NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")
            + chrono::Days::new((i % 20) as u64),
        campaign_id: "c".into(),
        ad_group_id: "g".into(),
        ad_id: format!("a{i}"),
        device: None,
        country: Some("DE".into()),
        currency: "EUR".into(),
        impressions: 100 + i as i64,
        clicks: 3,
        cost_micros: 1_000_000,
        conversions,
        conversion_value_micros: 0,
        video_views: None,
        engagements: None,
        reach: Some(50),
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

fn at(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("instant")
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
}

fn run(
    tenant: &str,
    status: RunStatus,
    command: Option<&str>,
    error: Option<&str>,
) -> ExtractionRun {
    ExtractionRun {
        run_id: unique("run"),
        tenant_id: tenant.into(),
        platform: Platform::MetaAds,
        command_id: command.map(Into::into),
        from_date: day(1),
        to_date: day(20),
        status,
        records: BTreeMap::from([
            ("ad_performance".to_owned(), 310),
            ("campaigns".to_owned(), 2),
        ]),
        error: error.map(Into::into),
        started_at: at(1_000_000),
        finished_at: at(1_060_000),
    }
}

/// Publishes a record; remembers the highest offset written per partition.
async fn send<R: Record>(
    codec: &Codec,
    producer: &FutureProducer,
    record: &R,
    written: &mut BTreeMap<Partition, i64>,
) -> anyhow::Result<()> {
    let bytes = codec.encode(record).await?;
    let delivery = producer
        .send(
            FutureRecord::to(R::TOPIC)
                .key(record.tenant_id())
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let last = written
        .entry((R::TOPIC.to_owned(), delivery.partition))
        .or_insert(delivery.offset);
    *last = (*last).max(delivery.offset);
    Ok(())
}

/// Sets the group's committed offsets (the group must have no live member).
async fn commit_group(
    s: &Settings,
    group: &str,
    at: &BTreeMap<Partition, i64>,
) -> anyhow::Result<()> {
    let config = clients::read_committed_consumer_config(&s.kafka, group);
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in at {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        consumer.commit(&tpl, CommitMode::Sync)
    })
    .await??;
    Ok(())
}

/// The group's committed offsets on `partitions` (read without joining the group).
async fn committed(
    s: &Settings,
    group: &str,
    partitions: Vec<Partition>,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    let config = clients::read_committed_consumer_config(&s.kafka, group);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            tpl.add_partition(topic, *partition);
        }
        let tpl = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect())
    })
    .await?
}

/// A row of `extraction_runs`, dates as text and the map as keys and values.
#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct RunRow {
    run_id: String,
    tenant_id: String,
    platform: String,
    command_id: String,
    from_day: String,
    to_day: String,
    status: String,
    record_keys: Vec<String>,
    record_values: Vec<i64>,
    error: String,
    started_ms: i64,
    finished_ms: i64,
}

/// `load_batches` read with FINAL: rows per tenant and table, for `tenants`.
async fn audited(
    db: &clickhouse::Client,
    tenants: &[String],
) -> anyhow::Result<BTreeMap<(String, String), i64>> {
    let rows: Vec<(String, String, u64)> = db
        .query(
            "SELECT tenant_id, table, sum(rows) FROM load_batches FINAL \
             WHERE has(?, tenant_id) GROUP BY tenant_id, table",
        )
        .bind(tenants)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, table, rows)| ((tenant, table), rows as i64))
        .collect())
}

/// One batch's load for one tenant and table, as its load event and its audit row carry it:
/// (batch, tenant, table, rows, min date, max date).
type Load = (
    String,
    String,
    String,
    i64,
    Option<NaiveDate>,
    Option<NaiveDate>,
);

/// The load events since `since` for `tenants`. Any other sink on the shared stack announces
/// our records too, in batches of its own: callers keep the events of our batches.
async fn events_since(
    s: &Settings,
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    tenants: &[String],
) -> anyhow::Result<BTreeSet<Load>> {
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let mut out = BTreeSet::new();
    for (_, value) in clients::read_since(config, LoadEvent::TOPIC, since).await? {
        let e: LoadEvent = codec.decode(&value).await?;
        if tenants.contains(&e.tenant_id) {
            out.insert((
                e.batch_id,
                e.tenant_id,
                e.table,
                e.rows,
                e.min_date,
                e.max_date,
            ));
        }
    }
    Ok(out)
}

/// The audit rows of `tenants` in the announced tables (all but `extraction_runs`), with FINAL.
async fn audit_loads(
    db: &clickhouse::Client,
    tenants: &[String],
) -> anyhow::Result<BTreeSet<Load>> {
    // Dates as text: (batch, tenant, table, rows, min date, max date).
    type Row = (String, String, String, u64, Option<String>, Option<String>);
    let rows: Vec<Row> = db
        .query(
            "SELECT batch_id, tenant_id, table, rows, toString(min_date), toString(max_date) \
             FROM load_batches FINAL WHERE has(?, tenant_id) AND table != 'extraction_runs'",
        )
        .bind(tenants)
        .fetch_all()
        .await?;
    let date = |d: Option<String>| d.map(|d| d.parse::<NaiveDate>()).transpose();
    rows.into_iter()
        .map(|(batch, tenant, table, rows, min, max)| {
            Ok((batch, tenant, table, rows as i64, date(min)?, date(max)?))
        })
        .collect()
}

/// Rows per tenant and table.
fn per_table<'a>(loads: impl IntoIterator<Item = &'a Load>) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for (_, tenant, table, rows, _, _) in loads {
        *out.entry((tenant.clone(), table.clone())).or_default() += rows;
    }
    out
}

/// The events of the audited batches.
fn of_batches(events: &BTreeSet<Load>, audit: &BTreeSet<Load>) -> BTreeSet<Load> {
    let ids: BTreeSet<&String> = audit.iter().map(|l| &l.0).collect();
    events
        .iter()
        .filter(|l| ids.contains(&l.0))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curated_records_load_exactly_with_restatements_load_events_and_audit() -> anyhow::Result<()>
{
    let s = settings();
    let database = unique("mi_it_sink");
    let ch = clients::clickhouse(&s.clickhouse);
    mi_sink::migrate::migrate(&ch, &database).await?;
    let config = LoadConfig {
        group: unique("it-sink"),
        database: database.clone(),
        max_rows: 5_000,
        max_wait: Duration::from_millis(300),
        ..Default::default()
    };
    // The group starts at the topics' current end; kept to rewind to it later.
    let mut start: BTreeMap<Partition, i64> = BTreeMap::new();
    for topic in TOPICS {
        for (p, end) in clients::end_offsets(clients::kafka_config(&s.kafka), topic).await? {
            start.insert((topic.to_owned(), p), end);
        }
    }
    commit_group(&s, &config.group, &start).await?;
    let events_before = offsets(LoadEvent::TOPIC).await?;
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let producer: FutureProducer = clients::idempotent_producer_config(&s.kafka).create()?;
    let tenants = [
        unique("t")[..12].replace('_', "-"),
        unique("t")[..12].replace('_', "-"),
    ];
    let per_tenant = 300;
    // Records published per tenant and table, and the last offset written per partition.
    let mut sent: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut written: BTreeMap<Partition, i64> = BTreeMap::new();
    for tenant in &tenants {
        for i in 0..per_tenant {
            send(
                &codec,
                &producer,
                &fact(tenant, i, 1_000_000, 1.0),
                &mut written,
            )
            .await?;
        }
        // Restate the first 10 ads: a newer extraction with 5 conversions instead of 1.
        for i in 0..10 {
            send(
                &codec,
                &producer,
                &fact(tenant, i, 2_000_000, 5.0),
                &mut written,
            )
            .await?;
        }
        *sent
            .entry((tenant.clone(), "fact_ad_performance".into()))
            .or_default() += per_tenant as i64 + 10;
    }

    // Dimensions: a version re-emitted with a newer revision, and a retracted one.
    let dim = |key: &str, revision: i64, name: &str, deleted: bool| DimCampaign {
        tenant_id: tenants[0].clone(),
        platform: Platform::MetaAds,
        account_id: "act_7".into(),
        extracted_at: at(1_000_000),
        run_id: "r".into(),
        campaign_id: "c1".into(),
        name: name.into(),
        status: "ACTIVE".into(),
        channel_type: Some("OUTCOME_SALES".into()),
        bidding_strategy: None,
        budget_micros: Some(5_000_000),
        budget_period: Some("DAILY".into()),
        start_date: NaiveDate::from_ymd_opt(2026, 1, 1),
        end_date: None,
        surrogate_key: key.into(),
        version: 1,
        valid_from: at(1_000),
        valid_to: None,
        is_current: true,
        attributes_hash: "h".into(),
        revision,
        is_deleted: deleted,
    };
    for d in [
        dim("k1", 1, "old", false),
        dim("k1", 2, "new", false),
        dim("k2", 1, "gone", false),
        dim("k2", 2, "gone", true),
    ] {
        send(&codec, &producer, &d, &mut written).await?;
        *sent
            .entry((d.tenant_id.clone(), "dim_campaigns".into()))
            .or_default() += 1;
    }

    // Extraction runs: one succeeded for a command, one failed on its own schedule.
    let runs = [
        run(&tenants[0], RunStatus::Succeeded, Some("cmd-1"), None),
        run(&tenants[1], RunStatus::Failed, None, Some("quota exceeded")),
    ];
    for r in &runs {
        send(&codec, &producer, r, &mut written).await?;
        *sent
            .entry((r.tenant_id.clone(), "extraction_runs".into()))
            .or_default() += 1;
    }

    let db = ch.clone().with_database(&database);
    let total: i64 = sent.values().sum();
    let started = Instant::now();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Background merges fold restated rows away, so watch the FINAL view: every ad once,
            // with the newest conversions.
            let (n, conversions): (u64, f64) = db
                .query("SELECT count(), sum(conversions) FROM fact_ad_performance FINAL WHERE has(?, tenant_id)")
                .bind(&tenants[..])
                .fetch_one()
                .await?;
            let expected = tenants.len() as f64 * ((per_tenant - 10) as f64 + 50.0);
            let dims: (u64, u64) = db
                .query("SELECT countIf(name = 'new'), count() FROM dim_campaigns FINAL WHERE tenant_id = ?")
                .bind(tenants[0].as_str())
                .fetch_one()
                .await?;
            // The audit comes last in a batch: wait for all of it before stopping.
            let audit: i64 = audited(&db, &tenants).await?.values().sum();
            if (n == (tenants.len() * per_tenant) as u64
                && conversions == expected
                && dims == (1, 1)
                && audit == total)
                || Instant::now() > deadline
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shutdown.cancel();
                return anyhow::Ok(());
            }
        }
    };
    let (stats, watched) = tokio::join!(load::run(&s, &config, shutdown.clone()), watch);
    watched?;
    let stats = stats?;
    eprintln!("first load: {stats:?} in {:.1?}", started.elapsed());
    // The topics are shared with whatever else runs on the stack: at least ours were loaded.
    assert!(stats.rows as i64 >= total, "{stats:?}");

    for tenant in &tenants {
        let (rows, impressions, conversions): (u64, i64, f64) = db
            .query("SELECT count(), sum(impressions), sum(conversions) FROM fact_ad_performance FINAL WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_one()
            .await?;
        let expected_impressions: i64 = (0..per_tenant).map(|i| 100 + i as i64).sum();
        assert_eq!(rows, per_tenant as u64, "restated ads appear once");
        assert_eq!(impressions, expected_impressions);
        assert_eq!(
            conversions,
            (per_tenant - 10) as f64 + 10.0 * 5.0,
            "newest values win"
        );
    }

    let live: Vec<(String, String)> = db
        .query("SELECT surrogate_key, name FROM dim_campaigns FINAL WHERE tenant_id = ? ORDER BY surrogate_key")
        .bind(tenants[0].as_str())
        .fetch_all()
        .await?;
    assert_eq!(
        live,
        vec![("k1".to_owned(), "new".to_owned())],
        "newest revision wins, retracted versions vanish"
    );

    // Runs, field for field.
    let loaded_runs: Vec<RunRow> = db
        .query(
            "SELECT run_id, tenant_id, platform, command_id, toString(from_date) AS from_day, \
             toString(to_date) AS to_day, status, mapKeys(records) AS record_keys, \
             mapValues(records) AS record_values, error, \
             toUnixTimestamp64Milli(started_at) AS started_ms, \
             toUnixTimestamp64Milli(finished_at) AS finished_ms FROM extraction_runs FINAL WHERE has(?, tenant_id) ORDER BY tenant_id = ? DESC",
        )
        .bind(&tenants[..])
        .bind(tenants[0].as_str())
        .fetch_all()
        .await?;
    let expected_runs: Vec<RunRow> = runs
        .iter()
        .zip([("succeeded", "cmd-1", ""), ("failed", "", "quota exceeded")])
        .map(|(r, (status, command, error))| RunRow {
            run_id: r.run_id.clone(),
            tenant_id: r.tenant_id.clone(),
            platform: "meta_ads".to_owned(),
            command_id: command.to_owned(),
            from_day: "2026-11-01".to_owned(),
            to_day: "2026-11-20".to_owned(),
            status: status.to_owned(),
            record_keys: vec!["ad_performance".to_owned(), "campaigns".to_owned()],
            record_values: vec![310, 2],
            error: error.to_owned(),
            started_ms: 1_000_000,
            finished_ms: 1_060_000,
        })
        .collect();
    assert_eq!(loaded_runs, expected_runs);

    // The audit: per tenant and table it adds up to what was loaded (runs included), and each
    // row says where it came from: batch topic/partition/first-last, ranges partition:first-last
    // (nothing was read twice yet).
    assert_eq!(audited(&db, &tenants).await?, sent);
    let sources: Vec<(String, String, String, String)> = db
        .query(
            "SELECT batch_id, table, source_topic, source_ranges FROM load_batches FINAL \
             WHERE has(?, tenant_id)",
        )
        .bind(&tenants[..])
        .fetch_all()
        .await?;
    for (batch, table, topic, ranges) in &sources {
        let expected_topic = match table.as_str() {
            "fact_ad_performance" => FactAdPerformance::TOPIC,
            "dim_campaigns" => DimCampaign::TOPIC,
            _ => ExtractionRun::TOPIC,
        };
        assert_eq!(topic, expected_topic);
        let (partition, range) = batch
            .strip_prefix(&format!("{topic}/"))
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_else(|| panic!("batch id {batch}"));
        assert_eq!(ranges, &format!("{partition}:{range}"));
    }

    // Load events: every audited batch was announced with the same content, runs never.
    let audit = audit_loads(&db, &tenants).await?;
    let announced: BTreeMap<_, _> = sent
        .iter()
        .filter(|((_, table), _)| table != "extraction_runs")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(per_table(&audit), announced);
    let events = events_since(&s, &codec, &events_before, &tenants).await?;
    assert!(
        events.iter().all(|l| l.2 != "extraction_runs"),
        "{events:?}"
    );
    assert_eq!(
        of_batches(&events, &audit),
        audit,
        "the audit holds what the load events announced"
    );
    for (_, _, table, _, min, max) in &audit {
        if table == "fact_ad_performance" {
            assert!(min.is_some() && min <= max, "{min:?}..{max:?}");
        } else {
            assert_eq!((min, max), (&None, &None), "dimensions have no dates");
        }
    }

    // As if every batch had been killed between its audit and its offsets commit: rewind the
    // group to where it started and load again, in smaller batches (other boundaries), with a
    // few new facts and a new run behind the old records. The old records are inserted again
    // but neither counted nor announced again; the new ones are, once.
    let rewind: BTreeMap<Partition, i64> = start
        .iter()
        .filter(|(p, _)| written.contains_key(*p))
        .map(|(p, o)| (p.clone(), *o))
        .collect();
    commit_group(&s, &config.group, &rewind).await?;
    let events_before = offsets(LoadEvent::TOPIC).await?;
    let extra = 1_000..1_020;
    for i in extra.clone() {
        send(
            &codec,
            &producer,
            &fact(&tenants[1], i, 1_000_000, 1.0),
            &mut written,
        )
        .await?;
    }
    *sent
        .entry((tenants[1].clone(), "fact_ad_performance".into()))
        .or_default() += extra.len() as i64;
    let late = run(&tenants[0], RunStatus::Succeeded, None, None);
    send(&codec, &producer, &late, &mut written).await?;
    *sent
        .entry((tenants[0].clone(), "extraction_runs".into()))
        .or_default() += 1;
    let again = LoadConfig {
        max_rows: 100,
        ..config.clone()
    };
    let started = Instant::now();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let partitions: Vec<Partition> = written.keys().cloned().collect();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Done once the group committed past every record this test wrote.
            let at = committed(&s, &config.group, partitions.clone()).await?;
            if written
                .iter()
                .all(|(p, last)| at.get(p).is_some_and(|c| c > last))
                || Instant::now() > deadline
            {
                shutdown.cancel();
                return anyhow::Ok(());
            }
        }
    };
    let (stats, watched) = tokio::join!(load::run(&s, &again, shutdown.clone()), watch);
    watched?;
    let stats = stats?;
    eprintln!(
        "second load (rewound): {stats:?} in {:.1?}",
        started.elapsed()
    );
    assert!(
        stats.rows as i64 >= total,
        "the old records were read and inserted again: {stats:?}"
    );
    assert_eq!(
        audited(&db, &tenants).await?,
        sent,
        "re-read records are not counted twice, new ones once"
    );
    let audit_again = audit_loads(&db, &tenants).await?;
    assert!(audit.is_subset(&audit_again), "earlier audit rows stay");
    let new: BTreeSet<Load> = audit_again.difference(&audit).cloned().collect();
    assert_eq!(
        per_table(&new),
        BTreeMap::from([(
            (tenants[1].clone(), "fact_ad_performance".to_owned()),
            extra.len() as i64
        )]),
        "only the new facts are counted again"
    );
    let events = events_since(&s, &codec, &events_before, &tenants).await?;
    assert_eq!(of_batches(&events, &new), new, "and announced");
    let rows: u64 = db
        .query("SELECT count() FROM fact_ad_performance FINAL WHERE tenant_id = ?")
        .bind(tenants[1].as_str())
        .fetch_one()
        .await?;
    let runs_loaded: u64 = db
        .query("SELECT count() FROM extraction_runs FINAL WHERE has(?, tenant_id)")
        .bind(&tenants[..])
        .fetch_one()
        .await?;
    assert_eq!(rows, (per_tenant + extra.len()) as u64);
    assert_eq!(runs_loaded, 3);

    ch.clone()
        .with_database("default")
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    Ok(())
}
