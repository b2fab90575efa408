//! The facts processor: raw daily metrics → validated facts with row-level derived metrics.
//!
//! Invalid records go to the dead-letter topic with the rule they broke; everything else is
//! published, keyed by tenant, to `mi.fact.*`. Restatements pass through: a later extraction of
//! the same natural key carries a newer `extracted_at`, and because one tenant's runs for one
//! platform are served one at a time and land on one partition, the newest always arrives last.
//! Consumers keep the newest per key (the warehouse with `ReplacingMergeTree(extracted_at)`).

use std::sync::Arc;

use mi_common::settings::KafkaSettings;
use mi_schemas::{
    Codec, FactAdPerformance, FactConversion, FactGaSessions, RawAdPerformance, RawConversion,
    RawGaSessions, Record,
};

use crate::dlq;
use crate::engine::{EngineError, Input, Output, Processor};
use crate::metrics;
use crate::validate::{self, Invalid, TenantRegistry};

pub struct Facts {
    codec: Arc<Codec>,
    tenants: TenantRegistry,
}

impl Facts {
    pub fn new(codec: Arc<Codec>, tenants: TenantRegistry) -> Self {
        Self { codec, tenants }
    }

    async fn emit<R: Record>(&self, fact: &R, out: &mut Vec<Output>) -> Result<(), EngineError> {
        let payload = self
            .codec
            .encode(fact)
            .await
            .map_err(|e| EngineError::Processor(format!("encoding {}: {e}", R::NAME)))?;
        out.push(Output {
            topic: R::TOPIC,
            partition: None,
            key: fact.tenant_id().as_bytes().to_vec(),
            payload,
        });
        Ok(())
    }

    /// Decodes, validates and transforms one record of type `Raw` into `Fact`.
    async fn handle<Raw: Record, Fact: Record>(
        &self,
        input: &Input,
        out: &mut Vec<Output>,
        check: impl Fn(&Raw, &TenantRegistry) -> Result<(), Invalid>,
        derive: impl Fn(Raw) -> Fact,
    ) -> Result<(), EngineError> {
        let raw: Raw = match dlq::decode(&self.codec, input).await {
            Ok(raw) => raw,
            Err(Ok(reason)) => {
                out.push(dlq::dead_letter(&self.codec, input, "decode", reason, None).await?);
                return Ok(());
            }
            Err(Err(e)) => return Err(e),
        };
        if let Err(invalid) = check(&raw, &self.tenants) {
            let tenant = Some(raw.tenant_id().to_owned()).filter(|t| !t.is_empty());
            let reason = format!("{} ({})", invalid, invalid.code());
            out.push(dlq::dead_letter(&self.codec, input, "validate", reason, tenant).await?);
            return Ok(());
        }
        self.emit(&derive(raw), out).await
    }
}

impl Processor for Facts {
    fn name(&self) -> &'static str {
        "facts"
    }

    fn inputs(&self) -> Vec<&'static str> {
        vec![
            RawAdPerformance::TOPIC,
            RawGaSessions::TOPIC,
            RawConversion::TOPIC,
        ]
    }

    async fn restore(&mut self, _: &KafkaSettings, _: &[(String, i32)]) -> Result<(), EngineError> {
        Ok(()) // stateless
    }

    async fn process(&mut self, input: &Input, out: &mut Vec<Output>) -> Result<(), EngineError> {
        match input.topic.as_str() {
            RawAdPerformance::TOPIC => {
                self.handle::<RawAdPerformance, FactAdPerformance>(
                    input,
                    out,
                    validate::validate_ad_performance,
                    metrics::ad_performance,
                )
                .await
            }
            RawGaSessions::TOPIC => {
                self.handle::<RawGaSessions, FactGaSessions>(
                    input,
                    out,
                    validate::validate_ga_sessions,
                    metrics::ga_sessions,
                )
                .await
            }
            RawConversion::TOPIC => {
                self.handle::<RawConversion, FactConversion>(
                    input,
                    out,
                    validate::validate_conversion,
                    metrics::conversion,
                )
                .await
            }
            other => Err(EngineError::Processor(format!(
                "facts processor got a record of {other}"
            ))),
        }
    }
}
