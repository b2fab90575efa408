//! Extraction against the platform emulator, through the real Kafka and schema registry.
//!
//! Several tenants at once, with throttling, token expiry and server errors injected on every
//! platform: what lands in the raw topics (read `read_committed`) must equal the emulator's
//! ground truth exactly, carry only its own tenant's id, and a run that meets a malformed
//! response must publish nothing at all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use mi_common::{Platform, clients};
use mi_producers::settings::TenantConfig;
use mi_producers::{RunRequest, Runner};
use mi_schemas::{
    Codec, ExtractionRun, RawAd, RawAdGroup, RawAdPerformance, RawCampaign, RawConversion,
    RawGaSessions, Record, RunStatus,
};
use mi_tests::{Emulator, offsets, producers_settings, published, tenant, today, unique};
use serde_json::{Value, json};

/// Day totals from records: (impressions, clicks, cost, conversions, value).
type AdsTotals = BTreeMap<String, [i64; 5]>;

fn truth_days(truth: &Value) -> AdsTotals {
    let mut out = AdsTotals::new();
    for d in truth["days"].as_array().into_iter().flatten() {
        let n = |k: &str| d[k].as_i64().unwrap_or(-1);
        if n("impressions") == 0 && n("conversions") == 0 {
            continue;
        }
        out.insert(
            d["date"].as_str().unwrap_or_default().to_owned(),
            [
                n("impressions"),
                n("clicks"),
                n("cost_micros"),
                n("conversions"),
                n("conversion_value_micros"),
            ],
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_under_faults_match_the_ground_truth_exactly() -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    let faults = json!({"throttle_every": 5, "server_error_every": 7, "expire_token_every": 11});
    // An expired Meta user token cannot be renewed (Meta requires the user to re-authorize; see
    // the test below), so Meta gets throttling and server errors only.
    let meta_faults = json!({"throttle_every": 5, "server_error_every": 7});
    emulator
        .post(
            "/_emulator/faults",
            json!({"google_ads": faults, "meta_ads": meta_faults, "ga4": faults}),
        )
        .await?;
    let tenants: Vec<TenantConfig> = (1..=3).map(tenant).collect::<Result<_, _>>()?;
    let settings = Arc::new(producers_settings(&emulator, tenants.clone()));
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &settings.infra.schema_registry,
    )));

    let topics = [
        RawAdPerformance::TOPIC,
        RawConversion::TOPIC,
        RawGaSessions::TOPIC,
        RawCampaign::TOPIC,
        RawAdGroup::TOPIC,
        RawAd::TOPIC,
        ExtractionRun::TOPIC,
    ];
    let mut before = BTreeMap::new();
    for topic in topics {
        before.insert(topic, offsets(topic).await?);
    }

    let runner = Runner::new(
        settings.clone(),
        codec.clone(),
        &unique("it-extract"),
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
                backfill_days: Some(10),
            };
            let run = runner.run(&request, None).await?;
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
            assert_eq!(run.to_date, today().pred_opt().expect("yesterday"));
            assert_eq!(run.days(), 10, "a first sync backfills the requested days");
            runs.push((t.clone(), platform, run));
        }
    }
    let run_ids: HashSet<String> = runs.iter().map(|(_, _, r)| r.run_id.clone()).collect();
    let run_tenant: BTreeMap<String, String> = runs
        .iter()
        .map(|(t, _, r)| (r.run_id.clone(), t.id.to_string()))
        .collect();

    let perf =
        published::<RawAdPerformance>(&codec, &before[RawAdPerformance::TOPIC], &run_ids, |r| {
            &r.run_id
        })
        .await?;
    let ga = published::<RawGaSessions>(&codec, &before[RawGaSessions::TOPIC], &run_ids, |r| {
        &r.run_id
    })
    .await?;
    let campaigns =
        published::<RawCampaign>(&codec, &before[RawCampaign::TOPIC], &run_ids, |r| &r.run_id)
            .await?;
    let conversions =
        published::<RawConversion>(&codec, &before[RawConversion::TOPIC], &run_ids, |r| {
            &r.run_id
        })
        .await?;
    assert!(!perf.is_empty() && !ga.is_empty() && !campaigns.is_empty() && !conversions.is_empty());

    // Tenant isolation: every record is keyed by, and carries, the tenant of the run that made it.
    for (key, tenant, run) in perf
        .iter()
        .map(|(k, r)| (k, &r.tenant_id, &r.run_id))
        .chain(ga.iter().map(|(k, r)| (k, &r.tenant_id, &r.run_id)))
        .chain(campaigns.iter().map(|(k, r)| (k, &r.tenant_id, &r.run_id)))
    {
        assert_eq!(key, tenant);
        assert_eq!(
            &run_tenant[run], tenant,
            "a record of run {run} carries another tenant's id"
        );
    }

    // Exact totals per tenant, platform, account and day against the ground truth.
    for (t, platform, run) in &runs {
        match platform {
            Platform::GoogleAds | Platform::MetaAds => {
                let account = match platform {
                    Platform::GoogleAds => &t.google_ads.as_ref().expect("google").customer_ids[0],
                    _ => &t.meta_ads.as_ref().expect("meta").account_ids[0],
                };
                let truth = emulator
                    .truth(*platform, account, run.from_date, run.to_date)
                    .await?;
                let mut got = AdsTotals::new();
                for (_, r) in perf.iter().filter(|(_, r)| r.run_id == run.run_id) {
                    assert_eq!(&r.account_id, account);
                    let day = got.entry(r.date.to_string()).or_default();
                    day[0] += r.impressions;
                    day[1] += r.clicks;
                    day[2] += r.cost_micros;
                    day[3] += r.conversions as i64;
                    day[4] += r.conversion_value_micros;
                }
                assert_eq!(got, truth_days(&truth), "{} {platform} {account}", t.id);
                let n_campaigns = campaigns
                    .iter()
                    .filter(|(_, r)| r.run_id == run.run_id)
                    .count();
                assert_eq!(
                    n_campaigns,
                    truth["entities"]["campaigns"]
                        .as_array()
                        .map_or(0, Vec::len),
                    "campaigns of {platform} {account}"
                );
                // Conversions by action add up to the ad-level conversions of each day.
                let by_action: i64 = conversions
                    .iter()
                    .filter(|(_, r)| r.run_id == run.run_id)
                    .map(|(_, r)| r.conversions as i64)
                    .sum();
                assert_eq!(
                    by_action,
                    truth["totals"]["conversions"].as_i64().unwrap_or(-1)
                );
            }
            Platform::Ga4 => {
                let property = &t.ga4.as_ref().expect("ga4").property_ids[0];
                let truth = emulator
                    .truth(Platform::Ga4, property, run.from_date, run.to_date)
                    .await?;
                let rows: Vec<_> = ga
                    .iter()
                    .filter(|(_, r)| r.run_id == run.run_id)
                    .map(|(_, r)| r)
                    .collect();
                let totals = &truth["totals"];
                let sum = |f: fn(&RawGaSessions) -> i64| rows.iter().map(|r| f(r)).sum::<i64>();
                let mut per_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for r in &rows {
                    let e = per_day.entry(r.date.to_string()).or_default();
                    e.0 += 1;
                    e.1 += r.sessions;
                }
                let truth_per_day: BTreeMap<String, (i64, i64)> = truth["days"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        let n = |k: &str| d[k].as_i64().unwrap_or(-1);
                        (
                            d["date"].as_str().unwrap_or_default().to_owned(),
                            (n("rows"), n("sessions")),
                        )
                    })
                    .collect();
                assert_eq!(
                    per_day, truth_per_day,
                    "ga4 {property} rows and sessions per day"
                );
                assert_eq!(
                    sum(|r| r.sessions),
                    totals["sessions"].as_i64().unwrap_or(-1)
                );
                assert_eq!(
                    sum(|r| r.engaged_sessions),
                    totals["engaged_sessions"].as_i64().unwrap_or(-1)
                );
                assert_eq!(
                    sum(|r| r.transactions),
                    totals["transactions"].as_i64().unwrap_or(-1)
                );
                assert_eq!(
                    sum(|r| r.purchase_revenue_micros),
                    totals["purchase_revenue_micros"].as_i64().unwrap_or(-1)
                );
            }
        }
        // The run record counts exactly what was published.
        let published_perf = perf.iter().filter(|(_, r)| r.run_id == run.run_id).count() as i64;
        assert_eq!(
            run.records
                .get(RawAdPerformance::TOPIC)
                .copied()
                .unwrap_or(0),
            published_perf
        );
    }

    // The faults really happened, and were survived.
    let stats = emulator.get("/_emulator/stats").await?;
    for (platform, fault) in [
        ("google_ads", "throttle"),
        ("google_ads", "server_error"),
        ("google_ads", "expire_token"),
        ("meta_ads", "throttle"),
        ("meta_ads", "server_error"),
        ("ga4", "throttle"),
        ("ga4", "server_error"),
        ("ga4", "expire_token"),
    ] {
        {
            let n = stats["injected"][platform][fault].as_u64().unwrap_or(0);
            assert!(n > 0, "no {fault} injected on {platform}: {stats}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_fails_the_run_and_publishes_nothing() -> anyhow::Result<()> {
    let faults = json!({"meta_ads": {"malformed_field": {"endpoint": "insights", "field": "spend", "value": "12,5 EUR"}}});
    assert_run_fails_cleanly(faults, &["meta_ads", "insights", "field spend"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_meta_token_fails_the_run_cleanly_asking_for_reauthorization()
-> anyhow::Result<()> {
    let faults = json!({"meta_ads": {"expire_token_every": 2}});
    assert_run_fails_cleanly(faults, &["meta_ads", "authentication failed", "expired"]).await
}

/// Runs a Meta extraction under `faults`: it must fail with an error containing every one of
/// `expected` and the account id, publish nothing, record the failure and keep the watermark.
async fn assert_run_fails_cleanly(faults: Value, expected: &[&str]) -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    emulator.post("/_emulator/faults", faults).await?;
    let t = tenant(9)?;
    let account = t.meta_ads.as_ref().expect("meta").account_ids[0].clone();
    let settings = Arc::new(producers_settings(&emulator, vec![t.clone()]));
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &settings.infra.schema_registry,
    )));
    let before_perf = offsets(RawAdPerformance::TOPIC).await?;
    let before_campaigns = offsets(RawCampaign::TOPIC).await?;
    let before_runs = offsets(ExtractionRun::TOPIC).await?;

    let runner = Runner::new(
        settings,
        codec.clone(),
        &unique("it-malformed"),
        Some(today()),
    )?;
    let request = RunRequest {
        tenant: t.id.clone(),
        platform: Platform::MetaAds,
        command_id: None,
        from: None,
        to: None,
        backfill_days: Some(5),
    };
    let run = runner.run(&request, None).await?;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.clone().unwrap_or_default();
    for part in expected.iter().copied().chain([account.as_str()]) {
        assert!(error.contains(part), "the error names {part}: {error}");
    }

    // Nothing of the run is visible: not its metrics, not the campaigns read before the failure.
    let ids = HashSet::from([run.run_id.clone()]);
    assert!(
        published::<RawAdPerformance>(&codec, &before_perf, &ids, |r| &r.run_id)
            .await?
            .is_empty()
    );
    assert!(
        published::<RawCampaign>(&codec, &before_campaigns, &ids, |r| &r.run_id)
            .await?
            .is_empty()
    );
    // …but the failure is recorded, and the watermark did not move.
    let recorded = published::<ExtractionRun>(&codec, &before_runs, &ids, |r| &r.run_id).await?;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].1.status, RunStatus::Failed);
    let s = mi_tests::settings();
    assert_eq!(
        mi_producers::watermark::watermark(&s.kafka, &codec, &t.id, Platform::MetaAds).await?,
        None
    );
    Ok(())
}

/// A codec for the workers' settings, and where the run topic ends before they start; their
/// group starts at the command topic's end (it serves only what the test enqueues).
async fn workers_start(
    settings: &mi_producers::settings::ProducersSettings,
) -> anyhow::Result<(Arc<Codec>, BTreeMap<i32, i64>)> {
    let codec = Arc::new(Codec::new(clients::schema_registry(
        &settings.infra.schema_registry,
    )));
    let before_runs = offsets(ExtractionRun::TOPIC).await?;
    clients::start_group_at_end(
        &settings.infra.kafka,
        &settings.extract.worker_group,
        mi_schemas::ExtractCommand::TOPIC,
    )
    .await?;
    Ok((codec, before_runs))
}

/// The run records of `tenants` published since `before`.
async fn runs_since(
    codec: &Codec,
    before: &BTreeMap<i32, i64>,
    tenants: &HashSet<String>,
) -> anyhow::Result<Vec<ExtractionRun>> {
    let s = mi_tests::settings();
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let mut runs = Vec::new();
    for (_, value) in clients::read_since(config, ExtractionRun::TOPIC, before).await? {
        let run: ExtractionRun = codec.decode(&value).await?;
        if tenants.contains(&run.tenant_id) {
            runs.push(run);
        }
    }
    Ok(runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_commands_and_serve_each_exactly_once() -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    let tenants: Vec<TenantConfig> = (21..=23).map(tenant).collect::<Result<_, _>>()?;
    let mut settings = producers_settings(&emulator, tenants.clone());
    settings.extract.worker_group = unique("it-workers");
    settings.extract.backfill_days = 3;
    let settings = Arc::new(settings);
    let (codec, before_runs) = workers_start(&settings).await?;

    let enqueued =
        mi_producers::worker::enqueue_all(&settings, codec.clone(), mi_schemas::Trigger::Manual)
            .await?;
    assert_eq!(enqueued, tenants.len() * 3);

    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut runners = Vec::new();
    for slot in ["a", "b"] {
        runners.push(Runner::new(
            settings.clone(),
            codec.clone(),
            &unique(&format!("it-worker-{slot}")),
            Some(today()),
        )?);
    }
    // Both workers and the observer run concurrently on this task.
    let workers = futures::future::join_all(
        runners
            .iter()
            .map(|r| mi_producers::worker::work(r, shutdown.clone())),
    );
    let ours: HashSet<String> = tenants.iter().map(|t| t.id.to_string()).collect();
    let observe = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        let runs = loop {
            let runs = runs_since(&codec, &before_runs, &ours).await?;
            if runs.len() >= enqueued || std::time::Instant::now() > deadline {
                break runs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        // Give a duplicate, if any, the chance to show up before stopping the workers.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        shutdown.cancel();
        anyhow::Ok(runs)
    };
    let (served, runs) = tokio::join!(workers, observe);
    let runs = runs?;
    let served: u64 = served
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .sum();

    assert_eq!(runs.len(), enqueued, "every command served once: {runs:#?}");
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    let commands: HashSet<_> = runs.iter().filter_map(|r| r.command_id.clone()).collect();
    assert_eq!(
        commands.len(),
        enqueued,
        "each run answers a distinct command"
    );
    let pairs: HashSet<_> = runs
        .iter()
        .map(|r| (r.tenant_id.clone(), r.platform))
        .collect();
    assert_eq!(pairs.len(), enqueued, "every tenant and platform extracted");
    assert!(
        served >= enqueued as u64,
        "the two workers served {served} runs"
    );
    Ok(())
}

/// A run that takes longer than the worker consumer's `max.poll.interval.ms` (the platforms are
/// slow: every request is held 2 s) must not cost the worker its group membership: the command
/// is served once, and a command enqueued afterwards is served too. A worker that stopped
/// polling during runs would be dropped from the group mid-run, fail the run's commit (stale
/// generation), be handed the command again and never get through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_the_poll_interval_keeps_the_worker_in_its_group() -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    emulator
        .post("/_emulator/faults", json!({"delay_ms": 2_000}))
        .await?;
    let mut only_google = tenant(26)?;
    only_google.meta_ads = None;
    only_google.ga4 = None;
    let mut settings = producers_settings(&emulator, vec![only_google.clone()]);
    settings.extract.worker_group = unique("it-slow-workers");
    settings.extract.backfill_days = 2;
    settings.extract.page_size = 10_000;
    // The shortest interval the broker accepts (its minimum session timeout is 6 s); one run
    // makes ~6 requests, i.e. ~12 s.
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("max.poll.interval.ms", "6000"),
    ] {
        settings
            .infra
            .kafka
            .properties
            .insert(key.to_owned(), value.to_owned());
    }
    let settings = Arc::new(settings);
    let (codec, before_runs) = workers_start(&settings).await?;
    let runner = Runner::new(
        settings.clone(),
        codec.clone(),
        &unique("it-slow-worker"),
        Some(today()),
    )?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ours = HashSet::from([only_google.id.to_string()]);
    let runs_of_ours = || runs_since(&codec, &before_runs, &ours);
    let observe = async {
        let started = std::time::Instant::now();
        let mut enqueued = 0;
        // Two commands, the second once the first is served.
        for wave in 1..=2 {
            enqueued += mi_producers::worker::enqueue_all(
                &settings,
                codec.clone(),
                mi_schemas::Trigger::Manual,
            )
            .await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
            while runs_of_ours().await?.len() < wave && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        // A duplicate, if any, would show up now.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let runs = runs_of_ours().await?;
        shutdown.cancel();
        anyhow::Ok((enqueued, runs, started.elapsed()))
    };
    let (served, observed) = tokio::join!(
        mi_producers::worker::work(&runner, shutdown.clone()),
        observe
    );
    let (enqueued, runs, took) = observed?;
    assert_eq!(enqueued, 2);
    assert_eq!(runs.len(), 2, "each command served exactly once: {runs:#?}");
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    let commands: HashSet<_> = runs.iter().filter_map(|r| r.command_id.clone()).collect();
    assert_eq!(commands.len(), 2, "two distinct commands: {runs:#?}");
    assert_eq!(served?, 2);
    // Each run did outlast the poll interval: the test exercised what it claims to.
    let longest = runs
        .iter()
        .map(|r| r.finished_at - r.started_at)
        .max()
        .unwrap_or_default();
    assert!(
        longest > chrono::Duration::seconds(6),
        "runs took at most {longest} (the whole test {took:?}): too short to outlast the poll interval"
    );
    Ok(())
}
