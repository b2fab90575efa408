//! The query path into ClickHouse: every tenant query runs under that tenant's own ClickHouse
//! identity (whose row policies fence it to its rows), never under the admin user.

use mi_common::settings::ClickHouseSettings;
use mi_common::{TenantId, clients, warehouse};
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Warehouse {
    base: clickhouse::Client,
    tenant_secret: SecretString,
    pub database: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "set MI_CLICKHOUSE__TENANT_SECRET: the API queries as each tenant's ClickHouse identity, whose password derives from it"
)]
pub struct MissingTenantSecret;

impl Warehouse {
    pub fn new(settings: &ClickHouseSettings) -> Result<Self, MissingTenantSecret> {
        let tenant_secret = settings.tenant_secret.clone().ok_or(MissingTenantSecret)?;
        Ok(Self {
            base: clients::clickhouse(settings),
            tenant_secret,
            database: settings.database.clone(),
        })
    }

    /// A client that authenticates as `tenant` (sharing the HTTP connection pool).
    pub fn for_tenant(&self, tenant: &TenantId) -> clickhouse::Client {
        let password = warehouse::password(&self.tenant_secret, tenant);
        self.base
            .clone()
            .with_user(warehouse::user_name(tenant))
            .with_password(password.expose_secret())
    }
}
