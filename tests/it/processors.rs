//! Raw topics → stream processors → curated topics, through the real Kafka and registry.
//!
//! A real extraction from the emulator plus deliberately bad records go in; out must come one
//! fact per valid raw row with the right derived metrics and exact totals, one dead letter per
//! bad record (with where it came from and why), and an SCD2 history that matches the
//! emulator's attribute changes — including after the clock moves and days are restated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mi_common::{Platform, clients};
use mi_producers::{RunRequest, Runner};
use mi_schemas::{
    Codec, DeadLetter, DimCampaign, ExtractionRun, FactAdPerformance, FactGaSessions,
    RawAdPerformance, Record, RunStatus,
};
use mi_stream_processors::{ProcessorSection, ProcessorsSettings, Which, run_processor};
use mi_tests::{Emulator, offsets, producers_settings, published, settings, tenant, today, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn produce_raw(topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<(i32, i64)> {
    let s = settings();
    let producer: FutureProducer = clients::idempotent_producer_config(&s.kafka).create()?;
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_build_facts_dims_and_dead_letters_exactly() -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    let tenants = vec![tenant(31)?, tenant(32)?];
    let extract = Arc::new(producers_settings(&emulator, tenants.clone()));
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &extract.infra.schema_registry,
    )));
    let processors = ProcessorsSettings {
        infra: settings(),
        processors: ProcessorSection {
            tenants: tenants.iter().map(|t| t.id.to_string()).collect(),
            group_prefix: unique("it-proc"),
            max_batch: 2_000,
            max_batch_wait_ms: 50,
            ..Default::default()
        },
    };
    // The processors start at the current end of their inputs: this test's records only.
    for (which, topics) in [
        (
            "facts",
            vec![
                "mi.raw.ad_performance.v1",
                "mi.raw.ga_sessions.v1",
                "mi.raw.conversions.v1",
            ],
        ),
        (
            "scd2",
            vec![
                "mi.raw.campaigns.v1",
                "mi.raw.ad_groups.v1",
                "mi.raw.ads.v1",
            ],
        ),
    ] {
        for topic in topics {
            let group = format!("{}-{which}", processors.processors.group_prefix);
            clients::start_group_at_end(&processors.infra.kafka, &group, topic).await?;
        }
    }
    let mut before = BTreeMap::new();
    for topic in [
        RawAdPerformance::TOPIC,
        FactAdPerformance::TOPIC,
        FactGaSessions::TOPIC,
        DimCampaign::TOPIC,
        DeadLetter::TOPIC,
        ExtractionRun::TOPIC,
    ] {
        before.insert(topic, offsets(topic).await?);
    }

    // 1. A real extraction of every platform of both tenants.
    let runner = Runner::new(
        extract.clone(),
        codec.clone(),
        &unique("it-proc-extract"),
        Some(today()),
    )?;
    let mut runs = Vec::new();
    for t in &tenants {
        for platform in Platform::ALL {
            let request = RunRequest {
                tenant: t.id.clone(),
                platform,
                command_id: None,
                from: None,
                to: None,
                backfill_days: Some(7),
            };
            let run = runner.run(&request, None).await?;
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
            runs.push((t.clone(), platform, run));
        }
    }

    // 2. Bad records, each of a different kind.
    let ours = tenants[0].id.to_string();
    let perf_topic = RawAdPerformance::TOPIC;
    let mut bad = Vec::new();
    bad.push((
        "decode",
        "magic byte",
        produce_raw(perf_topic, &ours, &[7, 1, 2, 3]).await?,
    ));
    bad.push((
        "decode",
        "schema id",
        produce_raw(perf_topic, &ours, &[0, 0x7f, 0xff, 0xff, 0x01, 2, 4]).await?,
    ));
    let good_template = published::<RawAdPerformance>(
        &codec,
        &before[RawAdPerformance::TOPIC],
        &HashSet::from([runs[0].2.run_id.clone()]),
        |r| &r.run_id,
    )
    .await?
    .into_iter()
    .map(|(_, r)| r)
    .next()
    .ok_or_else(|| anyhow::anyhow!("no raw performance record to copy"))?;
    let mut clicks_gt_impressions = good_template.clone();
    clicks_gt_impressions.run_id = unique("bad");
    clicks_gt_impressions.impressions = 10;
    clicks_gt_impressions.clicks = 12;
    let bytes = codec.encode(&clicks_gt_impressions).await?;
    bad.push((
        "validate",
        "exceeds impressions",
        produce_raw(perf_topic, &ours, &bytes).await?,
    ));
    let mut stranger = good_template.clone();
    stranger.tenant_id = "it-stranger".into();
    stranger.run_id = unique("bad");
    let bytes = codec.encode(&stranger).await?;
    bad.push((
        "validate",
        "unknown_tenant",
        produce_raw(perf_topic, "it-stranger", &bytes).await?,
    ));

    // 3. Run both processors until every valid raw row is a fact and every bad one a letter.
    let run_ids: HashSet<String> = runs.iter().map(|(_, _, r)| r.run_id.clone()).collect();
    let expected_facts: i64 = runs
        .iter()
        .map(|(_, _, r)| r.records.get(RawAdPerformance::TOPIC).copied().unwrap_or(0))
        .sum();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let observe = async {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let facts = published::<FactAdPerformance>(
                &codec,
                &before[FactAdPerformance::TOPIC],
                &run_ids,
                |r| &r.run_id,
            )
            .await?;
            let letters = read_letters(&codec, &before[DeadLetter::TOPIC]).await?;
            let ours_letters: Vec<_> = letters
                .into_iter()
                .filter(|l| {
                    bad.iter().any(|(_, _, (p, o))| {
                        l.source_partition == *p
                            && l.source_offset == *o
                            && l.source_topic == perf_topic
                    })
                })
                .collect();
            if (facts.len() as i64 >= expected_facts && ours_letters.len() >= bad.len())
                || Instant::now() > deadline
            {
                tokio::time::sleep(Duration::from_secs(2)).await; // room for a duplicate to show
                shutdown.cancel();
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (facts_stats, dims_stats, observed) = tokio::join!(
        run_processor(Which::Facts, &processors, "0", shutdown.clone()),
        run_processor(Which::Scd2, &processors, "0", shutdown.clone()),
        observe,
    );
    observed?;
    assert_eq!(
        facts_stats.sessions, 1,
        "no session restarts: {facts_stats:?}"
    );
    assert_eq!(
        dims_stats.sessions, 1,
        "no session restarts: {dims_stats:?}"
    );

    // Facts: exactly one per valid raw row, totals equal to the ground truth, ratios of sums.
    let facts =
        published::<FactAdPerformance>(&codec, &before[FactAdPerformance::TOPIC], &run_ids, |r| {
            &r.run_id
        })
        .await?;
    assert_eq!(
        facts.len() as i64,
        expected_facts,
        "one fact per raw row, no loss, no duplicate"
    );
    let mut seen = HashSet::new();
    for (key, f) in &facts {
        assert_eq!(key, &f.tenant_id);
        let natural = (
            f.run_id.clone(),
            f.account_id.clone(),
            f.date,
            f.ad_id.clone(),
            f.device.clone(),
        );
        assert!(seen.insert(natural), "duplicate fact {f:?}");
        let expected_ctr = (f.impressions > 0).then(|| f.clicks as f64 / f.impressions as f64);
        assert_eq!(f.ctr, expected_ctr);
        let expected_cpa = (f.conversions > 0.0).then(|| f.cost_micros as f64 / f.conversions);
        assert_eq!(f.cpa_micros, expected_cpa);
    }
    for (t, platform, run) in runs.iter().filter(|(_, p, _)| *p != Platform::Ga4) {
        let account = match platform {
            Platform::GoogleAds => t.google_ads.as_ref().map(|c| c.customer_ids[0].clone()),
            _ => t.meta_ads.as_ref().map(|c| c.account_ids[0].clone()),
        }
        .unwrap_or_default();
        let truth = emulator
            .truth(*platform, &account, run.from_date, run.to_date)
            .await?;
        let mine: Vec<_> = facts
            .iter()
            .filter(|(_, f)| f.run_id == run.run_id)
            .map(|(_, f)| f)
            .collect();
        let sum = |g: fn(&FactAdPerformance) -> i64| mine.iter().map(|f| g(f)).sum::<i64>();
        let totals = &truth["totals"];
        assert_eq!(
            sum(|f| f.impressions),
            totals["impressions"].as_i64().unwrap_or(-1)
        );
        assert_eq!(sum(|f| f.clicks), totals["clicks"].as_i64().unwrap_or(-1));
        assert_eq!(
            sum(|f| f.cost_micros),
            totals["cost_micros"].as_i64().unwrap_or(-1)
        );
        assert_eq!(
            sum(|f| f.conversion_value_micros),
            totals["conversion_value_micros"].as_i64().unwrap_or(-1)
        );
    }

    // Dead letters: exactly the bad records, each with its stage, reason and source.
    let letters = read_letters(&codec, &before[DeadLetter::TOPIC]).await?;
    for (stage, reason, (partition, offset)) in &bad {
        let found: Vec<_> = letters
            .iter()
            .filter(|l| {
                l.source_topic == perf_topic
                    && l.source_partition == *partition
                    && l.source_offset == *offset
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one dead letter for the {stage} failure at {partition}/{offset}: {letters:#?}"
        );
        assert_eq!(found[0].stage, *stage);
        assert!(
            found[0].reason.contains(reason),
            "{} should mention {reason}",
            found[0].reason
        );
        assert!(
            found[0].original_value.is_some(),
            "the original bytes are kept"
        );
    }

    // Dimensions: one current version per campaign the platform reported.
    let dims = current_campaigns(&codec, &before[DimCampaign::TOPIC], &tenants).await?;
    for (t, platform, run) in runs.iter().filter(|(_, p, _)| *p != Platform::Ga4) {
        let account = match platform {
            Platform::GoogleAds => t.google_ads.as_ref().map(|c| c.customer_ids[0].clone()),
            _ => t.meta_ads.as_ref().map(|c| c.account_ids[0].clone()),
        }
        .unwrap_or_default();
        let truth = emulator
            .truth(*platform, &account, run.from_date, run.to_date)
            .await?;
        let n_truth = truth["entities"]["campaigns"]
            .as_array()
            .map_or(0, Vec::len);
        let mine: Vec<_> = dims.values().filter(|d| d.account_id == account).collect();
        assert_eq!(
            mine.len(),
            n_truth,
            "current campaign versions of {account}"
        );
        assert!(
            mine.iter()
                .all(|d| d.is_current && d.version == 1 && d.valid_to.is_none())
        );
    }
    Ok(())
}

async fn read_letters(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let s = settings();
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let mut out = Vec::new();
    for (_, value) in clients::read_since(config, DeadLetter::TOPIC, since).await? {
        out.push(codec.decode::<DeadLetter>(&value).await?);
    }
    Ok(out)
}

/// The live campaign versions: newest revision per surrogate key, retractions dropped.
async fn current_campaigns(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    tenants: &[mi_producers::settings::TenantConfig],
) -> anyhow::Result<HashMap<String, DimCampaign>> {
    let ours: HashSet<String> = tenants.iter().map(|t| t.id.to_string()).collect();
    let s = settings();
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let mut newest: HashMap<String, DimCampaign> = HashMap::new();
    for (_, value) in clients::read_since(config, DimCampaign::TOPIC, since).await? {
        let d: DimCampaign = codec.decode(&value).await?;
        if !ours.contains(&d.tenant_id) {
            continue;
        }
        match newest.get(&d.surrogate_key) {
            Some(existing) if existing.revision >= d.revision => {}
            _ => {
                newest.insert(d.surrogate_key.clone(), d);
            }
        }
    }
    newest.retain(|_, d| !d.is_deleted && d.is_current);
    Ok(newest)
}
