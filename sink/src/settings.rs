//! The sink's settings: the shared infrastructure plus its own `[sink]` section.
//!
//! ```toml
//! [sink]
//! group = "mi-sink"             # MI_SINK__GROUP
//! batch_rows = 50000            # MI_SINK__BATCH_ROWS
//! batch_wait_ms = 1000          # MI_SINK__BATCH_WAIT_MS
//! batch_idle_ms = 200           # MI_SINK__BATCH_IDLE_MS
//! buffer_bytes = 33554432       # MI_SINK__BUFFER_BYTES
//! max_poll_interval_ms = 300000 # MI_SINK__MAX_POLL_INTERVAL_MS
//! session_timeout_ms = 45000    # MI_SINK__SESSION_TIMEOUT_MS
//! ```

use std::time::Duration;

use mi_common::Settings;
use serde::{Deserialize, Serialize};

use crate::load::LoadConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkSettings {
    #[serde(flatten)]
    pub infra: Settings,
    pub sink: SinkSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkSection {
    /// Consumer group of the sink; instances in one group share the curated partitions.
    pub group: String,
    /// Records buffered per topic partition before they are inserted as one batch.
    pub batch_rows: usize,
    /// Longest a buffered record waits for its insert, in milliseconds.
    pub batch_wait_ms: u64,
    /// Buffers are loaded early once nothing new arrived for this many milliseconds (0: never).
    pub batch_idle_ms: u64,
    /// Bytes of records buffered over all partitions before they are loaded (bounds memory).
    pub buffer_bytes: usize,
    /// librdkafka `max.poll.interval.ms`. The sink polls at least every second, also while it
    /// waits out a ClickHouse outage with its partitions paused, so this only bounds how long a
    /// stuck process keeps its partitions — not how long an outage may last.
    pub max_poll_interval_ms: u64,
    /// librdkafka `session.timeout.ms`: how soon a dead sink's partitions move to another
    /// instance. Must not exceed `max_poll_interval_ms` (librdkafka refuses the configuration).
    pub session_timeout_ms: u64,
}

impl Default for SinkSection {
    fn default() -> Self {
        let load = LoadConfig::default();
        Self {
            group: load.group,
            batch_rows: load.max_rows,
            batch_wait_ms: millis(load.max_wait),
            batch_idle_ms: millis(load.idle),
            buffer_bytes: load.max_bytes,
            max_poll_interval_ms: millis(load.max_poll_interval),
            session_timeout_ms: millis(load.session_timeout),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SinkSettings {
    /// The loader's tuning, for the database of the `[clickhouse]` section.
    pub fn load_config(&self) -> LoadConfig {
        LoadConfig {
            group: self.sink.group.clone(),
            database: self.infra.clickhouse.database.clone(),
            // An empty batch would never be due by size.
            max_rows: self.sink.batch_rows.max(1),
            max_wait: Duration::from_millis(self.sink.batch_wait_ms),
            idle: Duration::from_millis(self.sink.batch_idle_ms),
            max_bytes: self.sink.buffer_bytes.max(1),
            max_poll_interval: Duration::from_millis(self.sink.max_poll_interval_ms),
            session_timeout: Duration::from_millis(self.sink.session_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn the_sink_section_comes_from_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "mi.toml",
                "[clickhouse]\ndatabase = \"wh\"\n[sink]\nbatch_rows = 10\nmax_poll_interval_ms = 15000\n",
            )?;
            jail.set_env("MI_SINK__GROUP", "sink-from-env");
            jail.set_env("MI_SINK__SESSION_TIMEOUT_MS", "10000");
            let s: SinkSettings = mi_common::settings::load(Some(std::path::Path::new("mi.toml")))
                .map_err(|e| e.to_string())?;
            let config = s.load_config();
            assert_eq!(config.group, "sink-from-env");
            assert_eq!(config.database, "wh");
            assert_eq!(config.max_rows, 10);
            assert_eq!(config.max_wait, LoadConfig::default().max_wait);
            assert_eq!(config.max_poll_interval, Duration::from_secs(15));
            assert_eq!(config.session_timeout, Duration::from_secs(10));
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_loaders() {
        let config = SinkSettings::default().load_config();
        let defaults = LoadConfig::default();
        assert_eq!(config.group, defaults.group);
        assert_eq!(config.max_rows, defaults.max_rows);
        assert_eq!(config.max_poll_interval, defaults.max_poll_interval);
        assert_eq!(config.session_timeout, defaults.session_timeout);
    }
}
