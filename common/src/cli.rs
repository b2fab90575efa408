//! What every service's command line shares: where its settings come from, and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clients::Check;
use crate::settings::{self, LogSettings, SettingsError};

/// Flags every service accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// TOML settings file, layered over the defaults and under `MI_*` environment variables
    /// (nested keys use `__`: `MI_KAFKA__BROKERS`).
    #[arg(long, short, env = "MI_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl GlobalArgs {
    /// Loads the service's settings and installs logging from their `log` section.
    pub fn load<T>(&self, log: impl FnOnce(&T) -> &LogSettings) -> Result<T, SettingsError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let loaded: T = settings::load(self.config.as_deref())?;
        crate::telemetry::init(log(&loaded));
        Ok(loaded)
    }
}

/// Prints one line per check and fails if any failed: the body of every `<service> check`.
pub fn report(checks: &[Check]) -> ExitCode {
    for check in checks {
        println!("{check}");
    }
    if checks.iter().all(Check::is_ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
