//! The SCD2 processor: raw entity snapshots → versioned dimensions (`mi.dim.*`).
//!
//! State — each entity's observations — lives in memory per assigned partition and is written,
//! in the same transaction as the dimension records, to a compacted changelog topic keyed by
//! natural key and co-partitioned with the input (the changelog record goes to the input's
//! partition number). On assignment the processor rebuilds exactly the state of its partitions
//! from those changelog partitions, so a restart or a rebalance resumes from the last committed
//! history, and no tenant's state ever sits in another tenant's entry.

use std::collections::HashMap;
use std::sync::Arc;

use mi_common::clients;
use mi_common::settings::KafkaSettings;
use mi_schemas::{Codec, RawAd, RawAdGroup, RawCampaign, Record};
use rdkafka::Offset;

use crate::dlq;
use crate::engine::{EngineError, Input, Output, Processor};
use crate::scd2::{self, Entity, EntityState, NaturalKey};
use crate::validate::{self, Invalid, TenantRegistry};

/// The state of one entity kind: its input topic, changelog topic, and entities by key.
struct Table<E: Entity> {
    changelog: &'static str,
    states: HashMap<NaturalKey, EntityState<E>>,
    validate: fn(&E::Raw, &TenantRegistry) -> Result<(), Invalid>,
}

impl<E> Table<E>
where
    E: Entity,
    E::Raw: Record,
    E::Dim: Record,
{
    fn new(
        changelog: &'static str,
        validate: fn(&E::Raw, &TenantRegistry) -> Result<(), Invalid>,
    ) -> Self {
        Self {
            changelog,
            states: HashMap::new(),
            validate,
        }
    }

    async fn restore(
        &mut self,
        kafka: &KafkaSettings,
        partitions: &[i32],
    ) -> Result<(), EngineError> {
        self.states.clear();
        let wanted: Vec<i32> = partitions.to_vec();
        let config = clients::read_committed_consumer_config(
            kafka,
            &format!("mi-restore-{}", uuid::Uuid::new_v4().simple()),
        );
        let records = clients::read_partitions(config, self.changelog, move |p| {
            wanted.contains(&p).then_some(Offset::Beginning)
        })
        .await?;
        // Compacted or not yet, the newest entry per key is the state.
        for (_, value) in records {
            let state: EntityState<E> = serde_json::from_slice(&value).map_err(|e| {
                EngineError::Processor(format!("corrupt {} changelog entry: {e}", self.changelog))
            })?;
            self.states.insert(state.key().clone(), state);
        }
        tracing::info!(
            changelog = self.changelog,
            entities = self.states.len(),
            "SCD2 state restored"
        );
        Ok(())
    }

    async fn process(
        &mut self,
        codec: &Codec,
        tenants: &TenantRegistry,
        input: &Input,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        let raw: E::Raw = match dlq::decode(codec, input).await {
            Ok(raw) => raw,
            Err(Ok(reason)) => {
                out.push(dlq::dead_letter(codec, input, "decode", reason, None).await?);
                return Ok(());
            }
            Err(Err(e)) => return Err(e),
        };
        if let Err(invalid) = (self.validate)(&raw, tenants) {
            let reason = format!("{invalid} ({})", invalid.code());
            let tenant = Some(raw.tenant_id().to_owned()).filter(|t| !t.is_empty());
            out.push(dlq::dead_letter(codec, input, "validate", reason, tenant).await?);
            return Ok(());
        }
        let key = EntityState::<E>::key_of(&raw);
        let state = self
            .states
            .entry(key.clone())
            .or_insert_with(|| EntityState::new(key.clone()));
        let applied = match state.apply(&raw) {
            Ok(applied) => applied,
            Err(e) => {
                let reason = format!("{e} ({})", e.code());
                let tenant = Some(raw.tenant_id().to_owned());
                out.push(dlq::dead_letter(codec, input, "scd2", reason, tenant).await?);
                return Ok(());
            }
        };
        for dim in &applied.emit {
            let payload = codec.encode(dim).await.map_err(|e| {
                EngineError::Processor(format!("encoding {}: {e}", <E::Dim as Record>::NAME))
            })?;
            out.push(Output {
                topic: <E::Dim as Record>::TOPIC,
                partition: None,
                key: dim.tenant_id().as_bytes().to_vec(),
                payload,
            });
        }
        if applied.state_changed {
            // Keep the state bounded: observations older than the horizon fold into version
            // boundaries (a snapshot older than that is dead-lettered rather than re-cutting
            // settled history).
            state.fold_older_than(HISTORY_HORIZON);
            let value = serde_json::to_vec(&*state).map_err(|e| {
                EngineError::Processor(format!("serializing SCD2 state of {key}: {e}"))
            })?;
            out.push(Output {
                topic: self.changelog,
                partition: Some(input.partition),
                key: key.to_string().into_bytes(),
                payload: value,
            });
        }
        Ok(())
    }
}

/// How far back a late snapshot may still re-cut an entity's history exactly.
const HISTORY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(35);

/// Campaigns, ad groups and ads, each with its own changelog.
pub struct Dims {
    codec: Arc<Codec>,
    tenants: TenantRegistry,
    campaigns: Table<scd2::Campaign>,
    ad_groups: Table<scd2::AdGroup>,
    ads: Table<scd2::Ad>,
}

pub const CAMPAIGNS_CHANGELOG: &str = "mi.state.scd2.campaigns.v1";
pub const AD_GROUPS_CHANGELOG: &str = "mi.state.scd2.ad_groups.v1";
pub const ADS_CHANGELOG: &str = "mi.state.scd2.ads.v1";

impl Dims {
    pub fn new(codec: Arc<Codec>, tenants: TenantRegistry) -> Self {
        Self {
            codec,
            tenants,
            campaigns: Table::new(CAMPAIGNS_CHANGELOG, validate::validate_campaign),
            ad_groups: Table::new(AD_GROUPS_CHANGELOG, validate::validate_ad_group),
            ads: Table::new(ADS_CHANGELOG, validate::validate_ad),
        }
    }

    /// Entities currently held, per kind (for logs and tests).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.campaigns.states.len(),
            self.ad_groups.states.len(),
            self.ads.states.len(),
        )
    }
}

impl Processor for Dims {
    fn name(&self) -> &'static str {
        "scd2"
    }

    fn inputs(&self) -> Vec<&'static str> {
        vec![RawCampaign::TOPIC, RawAdGroup::TOPIC, RawAd::TOPIC]
    }

    async fn restore(
        &mut self,
        kafka: &KafkaSettings,
        assigned: &[(String, i32)],
    ) -> Result<(), EngineError> {
        let of = |topic: &str| -> Vec<i32> {
            assigned
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect()
        };
        self.campaigns
            .restore(kafka, &of(RawCampaign::TOPIC))
            .await?;
        self.ad_groups
            .restore(kafka, &of(RawAdGroup::TOPIC))
            .await?;
        self.ads.restore(kafka, &of(RawAd::TOPIC)).await
    }

    async fn process(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), EngineError> {
        match input.topic.as_str() {
            RawCampaign::TOPIC => {
                self.campaigns
                    .process(&self.codec, &self.tenants, input, out)
                    .await
            }
            RawAdGroup::TOPIC => {
                self.ad_groups
                    .process(&self.codec, &self.tenants, input, out)
                    .await
            }
            RawAd::TOPIC => {
                self.ads
                    .process(&self.codec, &self.tenants, input, out)
                    .await
            }
            other => Err(EngineError::Processor(format!(
                "SCD2 processor got a record of {other}"
            ))),
        }
    }
}
