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

pub mod pipeline;

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

// ------------------------------------------------------------------------------------------
// Extraction fixtures shared by the extraction and processor tests.
// ------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use mi_common::{TenantId, clients};
use mi_producers::settings::{
    ExtractSettings, Ga4Connection, GoogleAdsConnection, GoogleOAuth, MetaConnection,
    PlatformEndpoints, ProducersSettings, TenantConfig,
};
use mi_schemas::{Codec, Record};

/// The emulator's pinned "today" in these tests.
pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 15).expect("date")
}

/// A tenant with one account on each platform; ids unique to this test run.
pub fn tenant(n: u32) -> anyhow::Result<TenantConfig> {
    let salt = (uuid::Uuid::new_v4().as_u128() % 900_000) as u64 + 100_000;
    let google = GoogleOAuth {
        client_id: "it-client.apps.googleusercontent.com".into(),
        client_secret: secret_file("google-client-secret", "it-secret")?,
        refresh_token: secret_file("google-refresh-token", "1//it-refresh")?,
    };
    Ok(TenantConfig {
        id: TenantId::new(format!("it-{}-{n}", &unique("t")[2..10]))?,
        google_ads: Some(GoogleAdsConnection {
            customer_ids: vec![format!("{}{:03}", salt * 10, n)],
            login_customer_id: None,
            developer_token: secret_file("google-developer-token", "it-dev-token")?,
            oauth: google.clone(),
        }),
        meta_ads: Some(MetaConnection {
            account_ids: vec![format!("act_{salt}{n:03}")],
            app_id: "1234567890".into(),
            app_secret: secret_file("meta-app-secret", "it-app-secret")?,
            access_token: secret_file("meta-token", "EAAit-long-lived")?,
        }),
        ga4: Some(Ga4Connection {
            property_ids: vec![format!("{salt}{n:03}")],
            oauth: google,
        }),
    })
}

pub fn producers_settings(emulator: &Emulator, tenants: Vec<TenantConfig>) -> ProducersSettings {
    ProducersSettings {
        infra: settings(),
        extract: ExtractSettings {
            retry_base_ms: 10,
            max_attempts: 12,
            requests_per_second: 500,
            page_size: 50, // small pages: paging must visit every row exactly once
            ..Default::default()
        },
        platforms: PlatformEndpoints::emulator(&emulator.url),
        tenants,
    }
}

/// The records of `R` published by the given runs, from the topic's offsets before the runs.
pub async fn published<R: Record>(
    codec: &Codec,
    since: &BTreeMap<i32, i64>,
    runs: &HashSet<String>,
    run_of: impl Fn(&R) -> &str,
) -> anyhow::Result<Vec<(String, R)>> {
    let s = settings();
    let config = clients::read_committed_consumer_config(&s.kafka, &unique("it-read"));
    let mut out = Vec::new();
    for (key, value) in clients::read_since(config, R::TOPIC, since).await? {
        // Other tests (and the processors' tests) put deliberately bad bytes in these topics.
        let Ok(record) = codec.decode::<R>(&value).await else {
            continue;
        };
        if runs.contains(run_of(&record)) {
            let key = String::from_utf8(key.unwrap_or_default())?;
            out.push((key, record));
        }
    }
    Ok(out)
}

pub async fn offsets(topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let s = settings();
    Ok(clients::end_offsets(clients::kafka_config(&s.kafka), topic).await?)
}
