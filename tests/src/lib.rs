//! Shared harness for the integration tests: settings for the running stack, unique names so
//! that runs never collide, and scratch Kafka topics that clean up after themselves.
//!
//! The tests need the stack that `dev/stack up` starts (the README's test command starts it);
//! they fail, loudly, when it is not there — they never skip.

use std::time::Duration;

use anyhow::Context;
use mi_common::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Settings for the local stack, overridable through `MI_*` variables like any service.
pub fn settings() -> Settings {
    mi_common::settings::load(None).expect("settings load from defaults and MI_* variables")
}

/// A name unique to this test run, e.g. `it_3f2a9c…`, safe for topics, tables and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A Kafka topic created for one test (the broker does not auto-create topics, as in
/// production).
pub struct ScratchTopic {
    pub name: String,
    admin: AdminClient<DefaultClientContext>,
}

impl ScratchTopic {
    pub async fn create(settings: &Settings, partitions: i32) -> anyhow::Result<Self> {
        let name = unique("mi.it");
        let admin: AdminClient<DefaultClientContext> =
            mi_common::clients::kafka_config(&settings.kafka)
                .create()
                .context("admin client")?;
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .context("create topic request")?;
        for result in results {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
        }
        Ok(Self { name, admin })
    }

    /// Deletes the topic. A test that fails before this leaves a uniquely named topic behind,
    /// which is harmless (`dev/stack down --purge` clears everything).
    pub async fn delete(self) -> anyhow::Result<()> {
        for result in self
            .admin
            .delete_topics(&[&self.name], &AdminOptions::new())
            .await?
        {
            result.map_err(|(topic, code)| anyhow::anyhow!("deleting topic {topic}: {code}"))?;
        }
        Ok(())
    }
}
