//! The data contracts in the real schema registry: every topic's schema registers under
//! `<topic>-value` with BACKWARD compatibility, and the registry enforces it — a change that
//! would break existing consumers is refused, a compatible one accepted.

use mi_schemas::registry::{Registry, RegistryError, value_subject};
use mi_schemas::{Codec, LoadEvent, Record, TOPICS};
use mi_tests::{settings, unique};

#[tokio::test]
async fn every_schema_registers_and_registration_is_idempotent() -> anyhow::Result<()> {
    let settings = settings();
    let registry = Registry::new(&settings.schema_registry.url);
    let first = registry.register_all().await?;
    let second = registry.register_all().await?;
    assert_eq!(first.len(), TOPICS.len());
    assert_eq!(
        first, second,
        "re-registering the same schemas returns the same ids"
    );

    // The codec frames records with the id the registry gave the topic's subject.
    let codec = Codec::new(mi_common::clients::schema_registry(
        &settings.schema_registry,
    ));
    let event = LoadEvent {
        batch_id: "b".into(),
        tenant_id: "acme".into(),
        table: "fact_ad_performance".into(),
        rows: 3,
        min_date: None,
        max_date: None,
        // Avro timestamp-millis: build the instant at millisecond precision.
        loaded_at: chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
            .expect("now is representable"),
    };
    let bytes = codec.encode(&event).await?;
    let id = mi_schemas::codec::schema_id(&bytes)?;
    let expected = first
        .iter()
        .find(|(t, _)| *t == LoadEvent::TOPIC)
        .map(|(_, id)| *id);
    assert_eq!(Some(id), expected);
    assert_eq!(codec.decode::<LoadEvent>(&bytes).await?, event);

    // The fast path (serde straight to Avro with the cached schema, after the first encode)
    // writes exactly the bytes of the general path, and a fresh codec — which must first ask
    // the registry whether the id is the type's own schema — reads them back.
    let again = codec.encode(&event).await?;
    assert_eq!(
        again, bytes,
        "fast-path encoding differs from the registry client's"
    );
    let fresh = Codec::new(mi_common::clients::schema_registry(
        &settings.schema_registry,
    ));
    assert_eq!(fresh.decode::<LoadEvent>(&again).await?, event);
    let mut corrupt = again.clone();
    corrupt.truncate(8);
    assert!(
        matches!(
            fresh.decode::<LoadEvent>(&corrupt).await,
            Err(mi_schemas::CodecError::BadAvro { .. })
        ),
        "a truncated body is bad Avro, not a panic"
    );
    Ok(())
}

#[tokio::test]
async fn backward_compatibility_is_enforced_by_the_registry() -> anyhow::Result<()> {
    let settings = settings();
    let registry = Registry::new(&settings.schema_registry.url);
    let subject = value_subject(&unique("mi.it.compat"));
    let v1 = r#"{"type":"record","name":"Thing","namespace":"io.marketingiq.it","fields":[
        {"name":"tenant_id","type":"string"},{"name":"clicks","type":"long"}]}"#;
    // Adding a field with a default: old data still reads with the new schema.
    let v2_compatible = r#"{"type":"record","name":"Thing","namespace":"io.marketingiq.it","fields":[
        {"name":"tenant_id","type":"string"},{"name":"clicks","type":"long"},
        {"name":"reach","type":["null","long"],"default":null}]}"#;
    // Adding a required field without a default: old data cannot be read. Refused.
    let v3_incompatible = r#"{"type":"record","name":"Thing","namespace":"io.marketingiq.it","fields":[
        {"name":"tenant_id","type":"string"},{"name":"clicks","type":"long"},
        {"name":"reach","type":["null","long"],"default":null},{"name":"cost_micros","type":"long"}]}"#;

    registry.set_compatibility(&subject, "BACKWARD").await?;
    let id1 = registry.register(&subject, v1).await?;
    let id2 = registry.register(&subject, v2_compatible).await?;
    assert_ne!(id1, id2, "a new compatible version gets a new id");
    match registry.register(&subject, v3_incompatible).await {
        Err(RegistryError::Incompatible { subject: s, .. }) => assert_eq!(s, subject),
        other => panic!("an incompatible schema must be refused with 409, got {other:?}"),
    }
    Ok(())
}
