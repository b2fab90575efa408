//! `kill -9` the processors repeatedly while they work through a few hundred thousand records:
//! the curated topics, read `read_committed`, must hold every expected record exactly once, the
//! SCD2 history must be exactly the one an uninterrupted run gives, and the dead-letter topic
//! exactly the bad records. Needs the local stack (`dev/stack up`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use mi_common::{Platform, Settings, clients};
use mi_schemas::{
    Codec, DeadLetter, DimCampaign, FactAdPerformance, RawAdPerformance, RawCampaign, Record,
};
use rdkafka::producer::BaseRecord;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

const GOOD: usize = 200_000;
const BAD: usize = 40;
const CAMPAIGNS: usize = 300;

fn settings() -> Settings {
    mi_common::settings::load(None).expect("settings")
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("instant")
}

fn perf(tenant: &str, run_id: &str, i: usize, bad: bool) -> RawAdPerformance {
    let impressions = 1_000 + (i % 97) as i64;
    RawAdPerformance {
        tenant_id: tenant.into(),
        platform: Platform::GoogleAds,
        account_id: "1000000001".into(),
        extracted_at: at(1_800_000_000_000),
        run_id: run_id.into(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")
            + chrono::Days::new((i % 300) as u64),
        campaign_id: format!("c{}", i % 50),
        ad_group_id: format!("g{}", i % 500),
        ad_id: format!("a{i}"),
        device: Some("MOBILE".into()),
        country: None,
        currency: "USD".into(),
        impressions,
        // Google guarantees clicks ≤ impressions: the bad ones break it.
        clicks: if bad {
            impressions + 1
        } else {
            (i % 37) as i64
        },
        cost_micros: (i % 1_000) as i64 * 10_000,
        conversions: (i % 3) as f64,
        conversion_value_micros: (i % 5) as i64 * 1_000_000,
        video_views: Some(0),
        engagements: Some(0),
        reach: None,
    }
}

fn campaign(tenant: &str, run_id: &str, id: usize, snapshot: usize) -> RawCampaign {
    RawCampaign {
        tenant_id: tenant.into(),
        platform: Platform::MetaAds,
        account_id: "act_1".into(),
        extracted_at: at(1_760_000_000_000 + snapshot as i64 * 3_600_000),
        run_id: run_id.into(),
        campaign_id: format!("c{id}"),
        name: format!("Campaign {id}"),
        // Snapshot 0 ACTIVE, snapshots 1 and 2 PAUSED: two versions per campaign.
        status: if snapshot == 0 {
            "ACTIVE".into()
        } else {
            "PAUSED".into()
        },
        channel_type: Some("OUTCOME_SALES".into()),
        bidding_strategy: None,
        budget_micros: Some(10_000_000),
        budget_period: Some("DAILY".into()),
        start_date: None,
        end_date: None,
        changed_at: None,
    }
}

fn spawn(which: &str, prefix: &str) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_stream-processors"))
        .args(["run", which, "--instance", "0"])
        .env("MI_PROCESSORS__GROUP_PREFIX", prefix)
        .env("MI_PROCESSORS__MAX_BATCH", "2000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn read<R: Record>(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    keep: impl Fn(&R) -> bool,
) -> anyhow::Result<Vec<R>> {
    let config = clients::read_committed_consumer_config(
        &settings().kafka,
        &format!("it-read-{}", uuid::Uuid::new_v4()),
    );
    let mut out = Vec::new();
    for (_, v) in clients::read_since(config, R::TOPIC, since).await? {
        if let Ok(r) = codec.decode::<R>(&v).await
            && keep(&r)
        {
            out.push(r);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_run_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let s = settings();
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let prefix = format!("it-kill-{}", uuid::Uuid::new_v4().simple());
    let tenant = format!("kill-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let run_id = uuid::Uuid::new_v4().to_string();
    for (which, topic) in [
        ("facts", RawAdPerformance::TOPIC),
        ("scd2", RawCampaign::TOPIC),
    ] {
        clients::start_group_at_end(&s.kafka, &format!("{prefix}-{which}"), topic).await?;
        // The other inputs of each processor start at their end too.
        for other in [
            "mi.raw.ga_sessions.v1",
            "mi.raw.conversions.v1",
            "mi.raw.ad_groups.v1",
            "mi.raw.ads.v1",
        ] {
            clients::start_group_at_end(&s.kafka, &format!("{prefix}-{which}"), other).await?;
        }
    }
    let mut since = BTreeMap::new();
    for topic in [
        FactAdPerformance::TOPIC,
        DimCampaign::TOPIC,
        DeadLetter::TOPIC,
    ] {
        since.insert(
            topic,
            clients::end_offsets(clients::kafka_config(&s.kafka), topic).await?,
        );
    }

    // Input: good and bad performance rows, and three snapshots of each campaign.
    let producer: ThreadedProducer<DefaultProducerContext> =
        clients::idempotent_producer_config(&s.kafka)
            .set("queue.buffering.max.messages", "500000")
            .create()?;
    let bad_at: HashSet<usize> = (0..BAD).map(|k| k * (GOOD / BAD) + 7).collect();
    for i in 0..GOOD + BAD {
        let bytes = codec
            .encode(&perf(&tenant, &run_id, i, bad_at.contains(&i)))
            .await?;
        let mut record = BaseRecord::to(RawAdPerformance::TOPIC)
            .key(&tenant)
            .payload(&bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for snapshot in 0..3 {
        for id in 0..CAMPAIGNS {
            let bytes = codec
                .encode(&campaign(&tenant, &run_id, id, snapshot))
                .await?;
            producer
                .send(
                    BaseRecord::to(RawCampaign::TOPIC)
                        .key(&tenant)
                        .payload(&bytes),
                )
                .map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;

    // Run both processors, killing one of them with SIGKILL every couple of seconds.
    let mut facts = spawn("facts", &prefix)?;
    let mut scd2 = spawn("scd2", &prefix)?;
    let expected_good = GOOD + BAD - bad_at.len();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(1_500 + fastrand::u64(0..2_000))).await;
        if kills < 6 {
            let victim = if kills % 2 == 0 {
                &mut facts
            } else {
                &mut scd2
            };
            victim.kill()?; // SIGKILL
            victim.wait()?;
            *victim = spawn(if kills % 2 == 0 { "facts" } else { "scd2" }, &prefix)?;
            kills += 1;
            continue;
        }
        // Cheap check first: have the output logs grown enough (offsets also count transaction
        // markers, so this over-estimates)? Only then decode and count exactly.
        let grown = |topic: &'static str| {
            let s = s.clone();
            let since = since[topic].clone();
            async move {
                let ends = clients::end_offsets(clients::kafka_config(&s.kafka), topic).await?;
                anyhow::Ok(
                    ends.iter()
                        .map(|(p, e)| e - since.get(p).copied().unwrap_or(0))
                        .sum::<i64>() as usize,
                )
            }
        };
        if grown(FactAdPerformance::TOPIC).await? < expected_good && Instant::now() < deadline {
            continue;
        }
        let n = read::<FactAdPerformance>(&codec, &since[FactAdPerformance::TOPIC], |f| {
            f.run_id == run_id
        })
        .await?
        .len();
        let dims = read::<DimCampaign>(&codec, &since[DimCampaign::TOPIC], |d| {
            d.tenant_id == tenant
        })
        .await?
        .len();
        if (n >= expected_good && dims >= CAMPAIGNS * 2) || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_secs(3)).await;
            break;
        }
    }
    facts.kill()?;
    scd2.kill()?;
    let _ = (facts.wait(), scd2.wait());
    assert_eq!(kills, 6);

    // Facts: every good row exactly once.
    let facts = read::<FactAdPerformance>(&codec, &since[FactAdPerformance::TOPIC], |f| {
        f.run_id == run_id
    })
    .await?;
    let mut per_ad: HashMap<String, usize> = HashMap::new();
    for f in &facts {
        *per_ad.entry(f.ad_id.clone()).or_default() += 1;
    }
    assert_eq!(
        facts.len(),
        expected_good,
        "facts: no loss, no duplicate across {kills} kills"
    );
    assert!(per_ad.values().all(|n| *n == 1));
    let bad_ids: HashSet<String> = bad_at.iter().map(|i| format!("a{i}")).collect();
    assert!(facts.iter().all(|f| !bad_ids.contains(&f.ad_id)));

    // Dead letters: exactly the bad rows.
    let letters = read::<DeadLetter>(&codec, &since[DeadLetter::TOPIC], |l| {
        l.tenant_id.as_deref() == Some(tenant.as_str())
    })
    .await?;
    assert_eq!(letters.len(), BAD, "one dead letter per bad row");
    assert!(
        letters
            .iter()
            .all(|l| l.stage == "validate" && l.reason.contains("clicks"))
    );

    // Dimensions: per campaign two live versions (ACTIVE then PAUSED), chained, one current.
    let dims = read::<DimCampaign>(&codec, &since[DimCampaign::TOPIC], |d| {
        d.tenant_id == tenant
    })
    .await?;
    let mut newest: HashMap<String, DimCampaign> = HashMap::new();
    for d in dims {
        if newest
            .get(&d.surrogate_key)
            .is_none_or(|e| e.revision < d.revision)
        {
            newest.insert(d.surrogate_key.clone(), d);
        }
    }
    let mut by_campaign: HashMap<String, Vec<DimCampaign>> = HashMap::new();
    for d in newest.into_values().filter(|d| !d.is_deleted) {
        by_campaign
            .entry(d.campaign_id.clone())
            .or_default()
            .push(d);
    }
    assert_eq!(by_campaign.len(), CAMPAIGNS);
    for (id, mut versions) in by_campaign {
        versions.sort_by_key(|d| d.version);
        assert_eq!(versions.len(), 2, "campaign {id}: {versions:#?}");
        assert_eq!(
            (versions[0].status.as_str(), versions[1].status.as_str()),
            ("ACTIVE", "PAUSED")
        );
        assert_eq!(versions[0].valid_to, Some(versions[1].valid_from));
        assert!(
            !versions[0].is_current && versions[1].is_current && versions[1].valid_to.is_none()
        );
    }
    Ok(())
}
