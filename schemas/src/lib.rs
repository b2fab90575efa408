//! The data contracts of Marketing IQ.
//!
//! Every topic has one Avro schema in `schemas/avro/<topic>.avsc` (the source of truth, registered
//! under `<topic>-value` with BACKWARD compatibility) and one Rust type here implementing
//! [`Record`]. Values travel in the Confluent wire format (magic byte 0, 4-byte big-endian schema
//! id, Avro binary) through [`Codec`]; keys are the tenant id as UTF-8.

pub mod codec;
pub mod date;
pub mod records;
pub mod registry;

pub use codec::{Codec, CodecError};
pub use records::*;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record type bound to its topic and schema.
pub trait Record: Serialize + DeserializeOwned + Send + Sync {
    /// The topic the record is published to; its subject is `<TOPIC>-value`.
    const TOPIC: &'static str;
    /// The Avro schema (JSON), as in `schemas/avro/<TOPIC>.avsc`.
    const SCHEMA: &'static str;
    /// The fully qualified Avro name of the record.
    const NAME: &'static str;

    /// The Kafka key: every record of a tenant lands on one partition, in order.
    fn tenant_id(&self) -> &str;
}

/// Every topic with a schema, for registration and documentation.
pub const TOPICS: &[(&str, &str)] = &[
    (RawCampaign::TOPIC, RawCampaign::SCHEMA),
    (RawAdGroup::TOPIC, RawAdGroup::SCHEMA),
    (RawAd::TOPIC, RawAd::SCHEMA),
    (RawAdPerformance::TOPIC, RawAdPerformance::SCHEMA),
    (RawGaSessions::TOPIC, RawGaSessions::SCHEMA),
    (RawConversion::TOPIC, RawConversion::SCHEMA),
    (DimCampaign::TOPIC, DimCampaign::SCHEMA),
    (DimAdGroup::TOPIC, DimAdGroup::SCHEMA),
    (DimAd::TOPIC, DimAd::SCHEMA),
    (FactAdPerformance::TOPIC, FactAdPerformance::SCHEMA),
    (FactGaSessions::TOPIC, FactGaSessions::SCHEMA),
    (FactConversion::TOPIC, FactConversion::SCHEMA),
    (DeadLetter::TOPIC, DeadLetter::SCHEMA),
    (LoadEvent::TOPIC, LoadEvent::SCHEMA),
    (ExtractCommand::TOPIC, ExtractCommand::SCHEMA),
    (ExtractionRun::TOPIC, ExtractionRun::SCHEMA),
    (Alert::TOPIC, Alert::SCHEMA),
];

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    /// Every Rust type matches its `.avsc`: a sample value serializes, validates against the
    /// schema, and decodes back to itself.
    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(sample: R) {
        let schema = Schema::parse_str(R::SCHEMA)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", R::TOPIC));
        assert_eq!(
            schema.name().map(|n| n.fullname(None)),
            Some(R::NAME.to_owned())
        );
        let value = apache_avro::to_value(&sample).expect("serializes");
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer");
        let bytes = writer
            .write_value_to_vec(value)
            .unwrap_or_else(|e| panic!("{} sample does not fit its schema: {e}", R::TOPIC));
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .expect("reader");
        let back = reader.read_value(&mut bytes.as_slice()).expect("decodes");
        let back: R = apache_avro::from_value(&back).expect("deserializes");
        assert_eq!(back, sample, "{} round trip", R::TOPIC);
    }

    #[test]
    fn every_type_matches_its_schema() {
        let samples = samples::all();
        assert_eq!(samples.len(), TOPICS.len(), "one sample per topic");
        for check in samples {
            check();
        }
    }

    #[test]
    fn topic_names_match_schema_files_and_are_unique() {
        let mut topics: Vec<_> = TOPICS.iter().map(|(t, _)| *t).collect();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), TOPICS.len());
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/avro"))
            .expect("avro dir")
            .count();
        assert_eq!(files, TOPICS.len(), "every .avsc has a Rust type");
    }

    /// The agents' contract (`schemas/CONTRACT.md`) describes every field of every curated
    /// topic: a schema change that forgets the document fails here.
    #[test]
    fn the_contract_documents_every_curated_field() {
        let doc = include_str!("../CONTRACT.md");
        let curated = TOPICS.iter().filter(|(t, _)| {
            t.starts_with("mi.dim.")
                || t.starts_with("mi.fact.")
                || *t == LoadEvent::TOPIC
                || *t == Alert::TOPIC
        });
        let mut checked = 0;
        for (topic, schema) in curated {
            let section = doc
                .split("\n### ")
                .find(|s| s.starts_with(&format!("`{topic}`")))
                .unwrap_or_else(|| panic!("CONTRACT.md has no section for {topic}"));
            let schema: serde_json::Value = serde_json::from_str(schema).expect("schema is JSON");
            for field in schema["fields"].as_array().expect("fields") {
                let name = field["name"].as_str().expect("name");
                assert!(
                    section.contains(&format!("| `{name}` |")),
                    "CONTRACT.md does not describe {topic}.{name}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 8, "three dims, three facts, loads, alerts");
    }

    mod samples {
        use super::*;
        use chrono::{NaiveDate, TimeZone, Utc};
        use mi_common::Platform;

        fn at(ms: i64) -> chrono::DateTime<Utc> {
            Utc.timestamp_millis_opt(ms)
                .single()
                .expect("valid instant")
        }
        fn day(d: u32) -> NaiveDate {
            NaiveDate::from_ymd_opt(2026, 11, d).expect("valid date")
        }

        pub fn all() -> Vec<Box<dyn Fn()>> {
            let t = || "acme".to_owned();
            let run = || "run-1".to_owned();
            let ext = at(1_764_000_000_123);
            vec![
                Box::new(move || {
                    round_trip(RawCampaign {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1234567890".into(),
                        extracted_at: ext,
                        run_id: run(),
                        campaign_id: "11".into(),
                        name: "Brand".into(),
                        status: "ENABLED".into(),
                        channel_type: Some("SEARCH".into()),
                        bidding_strategy: None,
                        budget_micros: Some(50_000_000),
                        budget_period: Some("DAILY".into()),
                        start_date: Some(day(1)),
                        end_date: None,
                        changed_at: Some(at(5)),
                    })
                }),
                Box::new(move || {
                    round_trip(RawAdGroup {
                        tenant_id: t(),
                        platform: Platform::MetaAds,
                        account_id: "act_1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        ad_group_id: "21".into(),
                        campaign_id: "11".into(),
                        name: "Set".into(),
                        status: "ACTIVE".into(),
                        ad_group_type: None,
                        bid_micros: None,
                        budget_micros: Some(1),
                        changed_at: None,
                    })
                }),
                Box::new(move || {
                    round_trip(RawAd {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        ad_id: "31".into(),
                        ad_group_id: "21".into(),
                        campaign_id: "11".into(),
                        name: "Ad".into(),
                        status: "ENABLED".into(),
                        ad_type: Some("RESPONSIVE_SEARCH_AD".into()),
                        headline: None,
                        final_url: Some("https://example.com".into()),
                        changed_at: None,
                    })
                }),
                Box::new(move || {
                    round_trip(RawAdPerformance {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        campaign_id: "11".into(),
                        ad_group_id: "21".into(),
                        ad_id: "31".into(),
                        device: Some("MOBILE".into()),
                        country: None,
                        currency: "USD".into(),
                        impressions: 1000,
                        clicks: 10,
                        cost_micros: 12_340_000,
                        conversions: 1.5,
                        conversion_value_micros: 99_990_000,
                        video_views: None,
                        engagements: Some(3),
                        reach: None,
                    })
                }),
                Box::new(move || {
                    round_trip(RawGaSessions {
                        tenant_id: t(),
                        platform: Platform::Ga4,
                        account_id: "987".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        source: "google".into(),
                        medium: "cpc".into(),
                        campaign: "brand".into(),
                        channel_group: "Paid Search".into(),
                        device: "mobile".into(),
                        country: "US".into(),
                        currency: "USD".into(),
                        sessions: 100,
                        engaged_sessions: 60,
                        screen_page_views: 300,
                        session_duration_seconds: 5000,
                        transactions: 3,
                        purchase_revenue_micros: 150_000_000,
                        key_events: 4.0,
                    })
                }),
                Box::new(move || {
                    round_trip(RawConversion {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        campaign_id: "11".into(),
                        conversion_action: "Purchase".into(),
                        category: "PURCHASE".into(),
                        currency: "USD".into(),
                        conversions: 2.0,
                        conversion_value_micros: 10_000_000,
                    })
                }),
                Box::new(move || {
                    round_trip(DimCampaign {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        campaign_id: "11".into(),
                        name: "Brand".into(),
                        status: "PAUSED".into(),
                        channel_type: None,
                        bidding_strategy: Some("TARGET_CPA".into()),
                        budget_micros: None,
                        budget_period: None,
                        start_date: None,
                        end_date: Some(day(30)),
                        surrogate_key: "abc".into(),
                        version: 2,
                        valid_from: at(10),
                        valid_to: None,
                        is_current: true,
                        attributes_hash: "h".into(),
                        revision: 1,
                        is_deleted: false,
                    })
                }),
                Box::new(move || {
                    round_trip(DimAdGroup {
                        tenant_id: t(),
                        platform: Platform::MetaAds,
                        account_id: "act_1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        ad_group_id: "21".into(),
                        campaign_id: "11".into(),
                        name: "Set".into(),
                        status: "ACTIVE".into(),
                        ad_group_type: Some("OFFSITE_CONVERSIONS".into()),
                        bid_micros: None,
                        budget_micros: None,
                        surrogate_key: "k".into(),
                        version: 1,
                        valid_from: at(1),
                        valid_to: Some(at(2)),
                        is_current: false,
                        attributes_hash: "h".into(),
                        revision: 1,
                        is_deleted: false,
                    })
                }),
                Box::new(move || {
                    round_trip(DimAd {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        ad_id: "31".into(),
                        ad_group_id: "21".into(),
                        campaign_id: "11".into(),
                        name: "Ad".into(),
                        status: "ENABLED".into(),
                        ad_type: None,
                        headline: Some("Hi".into()),
                        final_url: None,
                        surrogate_key: "k".into(),
                        version: 1,
                        valid_from: at(1),
                        valid_to: None,
                        is_current: true,
                        attributes_hash: "h".into(),
                        revision: 1,
                        is_deleted: false,
                    })
                }),
                Box::new(move || {
                    round_trip(FactAdPerformance {
                        tenant_id: t(),
                        platform: Platform::MetaAds,
                        account_id: "act_1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        campaign_id: "11".into(),
                        ad_group_id: "21".into(),
                        ad_id: "31".into(),
                        device: None,
                        country: Some("DE".into()),
                        currency: "EUR".into(),
                        impressions: 0,
                        clicks: 0,
                        cost_micros: 0,
                        conversions: 0.0,
                        conversion_value_micros: 0,
                        video_views: Some(0),
                        engagements: None,
                        reach: Some(0),
                        ctr: None,
                        cpc_micros: None,
                        cpm_micros: None,
                        cpa_micros: None,
                        roas: None,
                        conversion_rate: None,
                        video_view_rate: None,
                        frequency: None,
                    })
                }),
                Box::new(move || {
                    round_trip(FactGaSessions {
                        tenant_id: t(),
                        platform: Platform::Ga4,
                        account_id: "987".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        source: "(direct)".into(),
                        medium: "(none)".into(),
                        campaign: "(not set)".into(),
                        channel_group: "Direct".into(),
                        device: "desktop".into(),
                        country: "FR".into(),
                        currency: "EUR".into(),
                        sessions: 10,
                        engaged_sessions: 5,
                        screen_page_views: 20,
                        session_duration_seconds: 100,
                        transactions: 0,
                        purchase_revenue_micros: 0,
                        key_events: 0.0,
                        engagement_rate: Some(0.5),
                        bounce_rate: Some(0.5),
                        aov_micros: None,
                        transaction_rate: Some(0.0),
                    })
                }),
                Box::new(move || {
                    round_trip(FactConversion {
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1".into(),
                        extracted_at: ext,
                        run_id: run(),
                        date: day(27),
                        campaign_id: "11".into(),
                        conversion_action: "Lead".into(),
                        category: "SUBMIT_LEAD_FORM".into(),
                        currency: "USD".into(),
                        conversions: 0.0,
                        conversion_value_micros: 0,
                        value_per_conversion_micros: None,
                    })
                }),
                Box::new(move || {
                    round_trip(DeadLetter {
                        tenant_id: None,
                        source_topic: "mi.raw.ads.v1".into(),
                        source_partition: 3,
                        source_offset: 42,
                        stage: "decode".into(),
                        reason: "magic byte is 7".into(),
                        schema_id: None,
                        original_key: Some(b"acme".to_vec()),
                        original_value: Some(vec![7, 0, 255]),
                        failed_at: ext,
                    })
                }),
                Box::new(move || {
                    round_trip(LoadEvent {
                        batch_id: "b".into(),
                        tenant_id: t(),
                        table: "fact_ad_performance".into(),
                        rows: 5,
                        min_date: Some(day(1)),
                        max_date: Some(day(27)),
                        loaded_at: ext,
                    })
                }),
                Box::new(move || {
                    round_trip(ExtractCommand {
                        command_id: "c".into(),
                        tenant_id: t(),
                        platform: Platform::Ga4,
                        trigger: Trigger::Manual,
                        requested_at: ext,
                        from_date: None,
                        to_date: Some(day(27)),
                        backfill_days: Some(90),
                    })
                }),
                Box::new(move || {
                    round_trip(ExtractionRun {
                        run_id: run(),
                        tenant_id: t(),
                        platform: Platform::MetaAds,
                        command_id: None,
                        from_date: day(1),
                        to_date: day(27),
                        status: RunStatus::Failed,
                        records: [("mi.raw.ads.v1".to_owned(), 3)].into_iter().collect(),
                        error: Some("meta_ads act_1 insights: field spend".into()),
                        started_at: ext,
                        finished_at: at(1_764_000_001_000),
                    })
                }),
                Box::new(move || {
                    round_trip(Alert {
                        alert_id: "a1".into(),
                        tenant_id: t(),
                        platform: Platform::GoogleAds,
                        account_id: "1234567890".into(),
                        campaign_id: "11".into(),
                        campaign_name: "Brand".into(),
                        date: day(2),
                        metric: "spend".into(),
                        direction: "spike".into(),
                        previous: 100.0,
                        current: 180.5,
                        change: 0.805,
                        threshold: 0.5,
                        currency: "EUR".into(),
                        load_batch_id: "mi.fact.ad_performance.v1/0/1-9".into(),
                        detected_at: ext,
                    })
                }),
            ]
        }
    }
}
