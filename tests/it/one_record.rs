//! One record through every piece of the real stack: the schema registry, a transactional Kafka
//! producer, a `read_committed` consumer, ClickHouse over its HTTP interface, and Redis.
//!
//! Each step asserts on what came back, so a broken codec, a lost or duplicated record, an
//! aborted transaction that leaks, or a column that does not round-trip fails the test.

use std::time::Duration;

use anyhow::{Context, ensure};
use mi_common::{Platform, TenantId, clients};
use mi_tests::{ScratchTopic, settings, unique};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use redis::AsyncCommands;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = r#"{
  "type": "record", "name": "OneRecord", "namespace": "io.marketingiq.it",
  "fields": [
    {"name": "tenant_id", "type": "string"},
    {"name": "platform", "type": {"type": "enum", "name": "Platform", "symbols": ["google_ads", "meta_ads", "ga4"]}},
    {"name": "account_id", "type": "string"},
    {"name": "extracted_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "run_id", "type": "string"},
    {"name": "impressions", "type": "long"},
    {"name": "cost_micros", "type": "long"}
  ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct OneRecord {
    tenant_id: String,
    platform: Platform,
    account_id: String,
    extracted_at: i64,
    run_id: String,
    impressions: i64,
    cost_micros: i64,
}

/// The same record as a ClickHouse row (the enum travels as its wire name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct OneRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    extracted_at: i64,
    run_id: String,
    impressions: i64,
    cost_micros: i64,
}

impl From<&OneRecord> for OneRow {
    fn from(r: &OneRecord) -> Self {
        OneRow {
            tenant_id: r.tenant_id.clone(),
            platform: r.platform.as_str().to_owned(),
            account_id: r.account_id.clone(),
            extracted_at: r.extracted_at,
            run_id: r.run_id.clone(),
            impressions: r.impressions,
            cost_micros: r.cost_micros,
        }
    }
}

fn record(tenant: &TenantId, impressions: i64) -> OneRecord {
    OneRecord {
        tenant_id: tenant.to_string(),
        platform: Platform::GoogleAds,
        account_id: "123-456-7890".into(),
        extracted_at: 1_764_000_000_123,
        run_id: unique("run"),
        impressions,
        cost_micros: 12_345_678,
    }
}

#[tokio::test]
async fn one_record_through_registry_kafka_clickhouse_and_redis() -> anyhow::Result<()> {
    let settings = settings();
    let tenant = TenantId::new("tenant-it-one")?;
    let topic = ScratchTopic::create(&settings, 1).await?;
    let committed = record(&tenant, 1_000);
    let aborted = record(&tenant, 666);

    // 1. Registry: encoding registers the schema under `<topic>-value` and frames the payload.
    let sr = clients::schema_registry(&settings.schema_registry);
    let encoder = AvroEncoder::new(sr.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.name.clone(),
        false,
        SuppliedSchema::new(
            Some("io.marketingiq.it.OneRecord".into()),
            SchemaType::Avro,
            SCHEMA.into(),
        ),
    );
    let committed_bytes = encoder
        .encode_struct(&committed, &strategy)
        .await
        .context("encode")?;
    let aborted_bytes = encoder
        .encode_struct(&aborted, &strategy)
        .await
        .context("encode")?;
    ensure!(
        committed_bytes[0] == 0,
        "Confluent framing starts with magic byte 0"
    );
    let schema_id = u32::from_be_bytes(committed_bytes[1..5].try_into()?);
    let registered: serde_json::Value = reqwest::get(format!(
        "{}/schemas/ids/{schema_id}",
        settings.schema_registry.url
    ))
    .await?
    .error_for_status()?
    .json()
    .await?;
    let registered_schema: serde_json::Value = serde_json::from_str(
        registered["schema"]
            .as_str()
            .context("schema in registry answer")?,
    )?;
    ensure!(
        registered_schema["name"] == "OneRecord",
        "registry returned {registered}"
    );

    // 2. Kafka: one aborted and one committed transaction, keyed by tenant.
    let producer: FutureProducer =
        clients::transactional_producer_config(&settings.kafka, &unique("it-one-record"))
            .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    for (bytes, commit) in [(&aborted_bytes, false), (&committed_bytes, true)] {
        producer.begin_transaction()?;
        producer
            .send(
                FutureRecord::to(&topic.name)
                    .key(tenant.as_str())
                    .payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        if commit {
            producer.commit_transaction(Duration::from_secs(30))?;
        } else {
            producer.abort_transaction(Duration::from_secs(30))?;
        }
    }

    // 3. Consume read_committed: exactly the committed record, never the aborted one.
    let consumer: StreamConsumer =
        clients::read_committed_consumer_config(&settings.kafka, &unique("it-group")).create()?;
    consumer.subscribe(&[&topic.name])?;
    let decoder = AvroDecoder::new(sr);
    let mut seen = Vec::new();
    // After the committed record the log holds only transaction markers; wait a little longer
    // to make sure nothing else (the aborted record) shows up.
    while let Ok(message) = tokio::time::timeout(
        Duration::from_secs(if seen.is_empty() { 30 } else { 3 }),
        consumer.recv(),
    )
    .await
    {
        let message = message?;
        ensure!(
            message.key() == Some(tenant.as_str().as_bytes()),
            "records are keyed by tenant id"
        );
        let decoded = decoder.decode(message.payload()).await.context("decode")?;
        seen.push(apache_avro::from_value::<OneRecord>(&decoded.value)?);
    }
    ensure!(
        seen == vec![committed.clone()],
        "read_committed consumer saw {seen:?}"
    );
    topic.delete().await?;

    // 4. ClickHouse over HTTP through the `clickhouse` crate: insert and read back.
    let database = unique("mi_it");
    let admin = clients::clickhouse(&settings.clickhouse).with_database("default");
    admin
        .query(&format!("CREATE DATABASE {database}"))
        .execute()
        .await?;
    let ch = admin.clone().with_database(&database);
    ch.query(
        "CREATE TABLE one_record (tenant_id String, platform LowCardinality(String), \
         account_id String, extracted_at Int64, run_id String, impressions Int64, cost_micros Int64) \
         ENGINE = MergeTree ORDER BY (tenant_id, extracted_at)",
    )
    .execute()
    .await?;
    let row = OneRow::from(&seen[0]);
    let mut insert = ch.insert::<OneRow>("one_record").await?;
    insert.write(&row).await?;
    insert.end().await?;
    let rows = ch
        .query("SELECT ?fields FROM one_record WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_all::<OneRow>()
        .await?;
    admin
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    ensure!(rows == vec![row.clone()], "ClickHouse returned {rows:?}");

    // 5. Redis: set with a TTL and get it back.
    let mut redis = clients::redis(&settings.redis).await?;
    let key = format!("mi:it:{}", unique("one"));
    let _: () = redis.set_ex(&key, &row.run_id, 60).await?;
    let back: Option<String> = redis.get(&key).await?;
    let ttl: i64 = redis.ttl(&key).await?;
    let _: () = redis.del(&key).await?;
    ensure!(
        back.as_deref() == Some(row.run_id.as_str()),
        "Redis returned {back:?}"
    );
    ensure!((1..=60).contains(&ttl), "TTL was {ttl}");
    Ok(())
}
