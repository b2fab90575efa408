//! The wire format, proven by a third party: Confluent's Python client with its registry-aware
//! Avro deserializer (fastavro), from PyPI, decodes every curated topic (`dev/agents/consume.py`)
//! to exactly the values our Rust types hold.
//!
//! Real records: one tenant is backfilled through the whole pipeline (dims, facts, load events),
//! plus one alert; each topic is then read by the Python consumer from the offsets before, and
//! each of our records must come back identical (field for field, in Avro's value representation:
//! dates as days, instants as epoch milliseconds, enums as their symbols).

use std::collections::BTreeMap;
use std::process::Command;

use chrono::Utc;
use mi_common::{Platform, clients};
use mi_schemas::{
    Alert, Codec, DimAd, DimAdGroup, DimCampaign, FactAdPerformance, FactConversion,
    FactGaSessions, LoadEvent, Record,
};
use mi_tests::{Emulator, offsets, pipeline, settings, tenant, today, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// The Python of the stack's venv (where `dev/stack up` installs dev/agents/requirements.txt).
fn python() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    std::path::Path::new(&home).join(".cache/marketing-iq/venv/bin/python")
}

/// Every record of `tenant` on `topic` after `since`, as the Python consumer decoded it.
fn python_reads(
    topic: &str,
    since: &BTreeMap<i32, i64>,
    tenant: &str,
) -> anyhow::Result<Vec<Value>> {
    let s = settings();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/agents/consume.py");
    let mut cmd = Command::new(python());
    // Authlib's deprecation notice (pulled in by the registry client) is not ours to fix.
    cmd.env("PYTHONWARNINGS", "ignore")
        .arg(script)
        .args(["--brokers", &s.kafka.brokers])
        .args(["--registry", &s.schema_registry.url])
        .args(["--topic", topic]);
    for (partition, offset) in since {
        cmd.args(["--start", &format!("{partition}:{offset}")]);
    }
    let output = cmd.output()?;
    anyhow::ensure!(
        output.status.success(),
        "consume.py {topic} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut values = Vec::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        let record: Value = serde_json::from_str(line)?;
        if record["key"] == tenant {
            values.push(record["value"].clone());
        }
    }
    Ok(values)
}

/// Our own decoding of the same records, as JSON in the same representation.
async fn rust_reads<R: Record + serde::Serialize>(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    tenant: &str,
) -> anyhow::Result<Vec<Value>> {
    let s = settings();
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-wire"));
    let mut out = Vec::new();
    for (key, bytes) in clients::read_since(config, R::TOPIC, since).await? {
        if key.as_deref() != Some(tenant.as_bytes()) {
            continue;
        }
        let record: R = codec.decode(&bytes).await?;
        out.push(serde_json::to_value(&record)?);
    }
    Ok(out)
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x.to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_party_python_client_decodes_every_curated_topic() -> anyhow::Result<()> {
    let topics = [
        DimCampaign::TOPIC,
        DimAdGroup::TOPIC,
        DimAd::TOPIC,
        FactAdPerformance::TOPIC,
        FactGaSessions::TOPIC,
        FactConversion::TOPIC,
        LoadEvent::TOPIC,
        Alert::TOPIC,
    ];
    let mut before = BTreeMap::new();
    for topic in topics {
        before.insert(topic, offsets(topic).await?);
    }
    let emulator = Emulator::start(today()).await?;
    let loaded = pipeline::load(&emulator, vec![tenant(71)?], 2).await?;
    let id = loaded.tenants[0].id.to_string();

    // An alert, as the alerts processor would publish it.
    let s = settings();
    let codec = Codec::new(clients::schema_registry(&s.schema_registry));
    let alert = Alert {
        alert_id: unique("alert"),
        tenant_id: id.clone(),
        platform: Platform::MetaAds,
        account_id: "act_1".into(),
        campaign_id: "c-1".into(),
        campaign_name: "Été – soldes".into(),
        date: today(),
        metric: "cpa".into(),
        direction: "spike".into(),
        previous: 12.5,
        current: 31.25,
        change: 1.5,
        threshold: 0.5,
        currency: "EUR".into(),
        load_batch_id: "b".into(),
        detected_at: Utc::now(),
    };
    let producer: FutureProducer = clients::idempotent_producer_config(&s.kafka).create()?;
    producer
        .send(
            FutureRecord::to(Alert::TOPIC)
                .key(&id)
                .payload(&codec.encode(&alert).await?),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    let mut compared = 0;
    for topic in topics {
        let ours = match topic {
            t if t == DimCampaign::TOPIC => {
                rust_reads::<DimCampaign>(&codec, &before[t], &id).await?
            }
            t if t == DimAdGroup::TOPIC => {
                rust_reads::<DimAdGroup>(&codec, &before[t], &id).await?
            }
            t if t == DimAd::TOPIC => rust_reads::<DimAd>(&codec, &before[t], &id).await?,
            t if t == FactAdPerformance::TOPIC => {
                rust_reads::<FactAdPerformance>(&codec, &before[t], &id).await?
            }
            t if t == FactGaSessions::TOPIC => {
                rust_reads::<FactGaSessions>(&codec, &before[t], &id).await?
            }
            t if t == FactConversion::TOPIC => {
                rust_reads::<FactConversion>(&codec, &before[t], &id).await?
            }
            t if t == LoadEvent::TOPIC => rust_reads::<LoadEvent>(&codec, &before[t], &id).await?,
            t => rust_reads::<Alert>(&codec, &before[t], &id).await?,
        };
        assert!(
            !ours.is_empty(),
            "{topic}: the pipeline published nothing for {id}"
        );
        let theirs = python_reads(topic, &before[topic], &id)?;
        assert_eq!(
            theirs.len(),
            ours.len(),
            "{topic}: Python read {} records, Rust {}",
            theirs.len(),
            ours.len()
        );
        let (ours, theirs) = (sorted(ours), sorted(theirs));
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "{topic}: Rust and Python decode differently");
        }
        compared += ours.len();
    }
    eprintln!("{compared} records of 8 topics decoded identically by confluent-kafka + fastavro");
    Ok(())
}
