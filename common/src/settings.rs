//! Layered settings: built-in defaults (the local stack), then an optional TOML file, then
//! `MI_*` environment variables, later layers winning.
//!
//! Nested keys are separated by a double underscore in the environment, so
//! `MI_KAFKA__BROKERS=host:9092` sets `kafka.brokers` and `MI_CLICKHOUSE__PASSWORD` sets
//! `clickhouse.password`. Secrets are [`SecretString`]s: they never appear in `Debug` output or
//! logs, and they should come from the environment (or a secret store), never from a file in the
//! repository.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Connections to the infrastructure every service shares.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub schema_registry: SchemaRegistrySettings,
    pub clickhouse: ClickHouseSettings,
    pub redis: RedisSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Extra librdkafka properties applied to every client (e.g. `security.protocol`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            properties: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchemaRegistrySettings {
    /// Base URL of a Confluent-compatible API (Apicurio serves it under `/apis/ccompat/v7`).
    pub url: String,
}

impl Default for SchemaRegistrySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// Master secret from which each tenant's ClickHouse password is derived (never stored).
    #[serde(skip_serializing)]
    pub tenant_secret: Option<SecretString>,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "mi".into(),
            user: "default".into(),
            password: None,
            tenant_secret: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    pub url: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `tracing` filter directives, e.g. `info,mi_sink=debug`. `RUST_LOG` overrides it.
    pub filter: String,
    /// `json` for machine-readable logs, `pretty` for humans.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(#[from] Box<figment::Error>);

/// Loads `T` from its defaults, then `file` (if given; it must exist), then `MI_*` variables.
///
/// Every service calls this with its own settings type, which embeds [`Settings`] (flattened)
/// next to its own sections, so one file and one environment configure the whole topology.
pub fn load<T>(file: Option<&Path>) -> Result<T, SettingsError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed("MI_").split("__"))
        .extract()
        .map_err(|e| SettingsError(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn file_overrides_defaults_and_env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "mi.toml",
                "[kafka]\nbrokers = \"file:9092\"\n[clickhouse]\ndatabase = \"from_file\"\n",
            )?;
            jail.set_env("MI_CLICKHOUSE__DATABASE", "from_env");
            jail.set_env("MI_CLICKHOUSE__PASSWORD", "s3cret");
            let s: Settings = load(Some(Path::new("mi.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.kafka.brokers, "file:9092");
            assert_eq!(s.clickhouse.database, "from_env");
            assert_eq!(s.redis.url, RedisSettings::default().url);
            let password = s
                .clickhouse
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned());
            assert_eq!(password.as_deref(), Some("s3cret"));
            assert!(
                !format!("{s:?}").contains("s3cret"),
                "secrets must not reach Debug output"
            );
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = load::<Settings>(Some(Path::new("/nonexistent/mi.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mi.toml"), "{err}");
    }
}
