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

/// The platform emulator, served in-process on a free loopback port for one test.
pub struct Emulator {
    pub url: String,
    pub http: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Emulator {
    /// Starts the emulator with its clock pinned to `today`.
    pub async fn start(today: chrono::NaiveDate) -> anyhow::Result<Self> {
        use chrono::Datelike;
        let config = mi_emulator::Config {
            today: mi_emulator::date::Day::from_ymd(today.year(), today.month(), today.day()),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let app = mi_emulator::router(config);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            url,
            http: reqwest::Client::new(),
            shutdown,
        })
    }

    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .await?;
        Ok(response.error_for_status()?.json().await?)
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The emulator's ground truth of one account over an inclusive date range.
    pub async fn truth(
        &self,
        platform: mi_common::Platform,
        account: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> anyhow::Result<serde_json::Value> {
        self.get(&format!(
            "/_emulator/truth?platform={platform}&account={account}&from={from}&to={to}"
        ))
        .await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Credentials for the emulator, kept in a private temporary file as real secrets would be in a
/// mounted secret file (never in a settings file).
pub fn secret_file(name: &str, value: &str) -> anyhow::Result<mi_common::secret::SecretRef> {
    let dir = std::env::temp_dir().join(format!("mi-it-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, value)?;
    Ok(mi_common::secret::SecretRef::File(path))
}
