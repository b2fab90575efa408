//! Tenant provisioning in the warehouse: each tenant gets its own ClickHouse identity that can
//! only `SELECT` the tenant tables, through a row policy `USING tenant_id = '<id>'` on each — the
//! defence in depth behind the API's own scoping.
//!
//! Nothing is stored in plain text: the tenant's password is derived from a master secret
//! (HMAC-SHA256 of the tenant id) whenever it is needed, and only its SHA-256 reaches ClickHouse
//! (`IDENTIFIED WITH sha256_hash`). The tenant id is a [`TenantId`], whose narrow alphabet makes
//! it safe inside the quoted literal and the back-quoted identifiers below.

use mi_common::TenantId;
use mi_common::warehouse::hex;
pub use mi_common::warehouse::{password, user_name};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every table a tenant may read, each fenced by the tenant's row policy.
pub const TENANT_TABLES: [&str; 8] = [
    "dim_campaigns",
    "dim_ad_groups",
    "dim_ads",
    "fact_ad_performance",
    "fact_ga_sessions",
    "fact_conversions",
    "load_batches",
    "extraction_runs",
];

/// The row-policy predicate of a tenant.
pub fn predicate(tenant: &TenantId) -> String {
    format!("tenant_id = '{tenant}'")
}

/// The statements that provision `tenant` in `database`, all idempotent.
pub fn statements(database: &str, tenant: &TenantId, password: &SecretString) -> Vec<String> {
    let user = user_name(tenant);
    let hash = hex(&Sha256::digest(password.expose_secret().as_bytes()));
    let mut out = vec![format!(
        "CREATE USER IF NOT EXISTS `{user}` IDENTIFIED WITH sha256_hash BY '{hash}' DEFAULT DATABASE `{database}`"
    )];
    for table in TENANT_TABLES {
        out.push(format!(
            "GRANT SELECT ON `{database}`.`{table}` TO `{user}`"
        ));
        out.push(format!(
            "CREATE ROW POLICY IF NOT EXISTS `tenant_{tenant}` ON `{database}`.`{table}` FOR SELECT USING {} TO `{user}`",
            predicate(tenant)
        ));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("invalid database name {0:?}")]
    BadDatabase(String),
    #[error("statement {statement:?}: {source}")]
    Statement {
        statement: String,
        source: clickhouse::error::Error,
    },
}

/// How to apply the statements: a real server executes them; the chDB dev front cannot switch
/// users, so there each statement is only checked with ClickHouse's own parser (`formatQuery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Execute,
    ValidateOnly,
}

/// Provisions `tenant`; returns the statements applied (or validated).
pub async fn provision(
    client: &clickhouse::Client,
    database: &str,
    tenant: &TenantId,
    master: &SecretString,
    mode: Mode,
) -> Result<usize, ProvisionError> {
    if !crate::migrate::valid_database(database) {
        return Err(ProvisionError::BadDatabase(database.to_owned()));
    }
    let admin = client.clone().with_database("default");
    let statements = statements(database, tenant, &password(master, tenant));
    for statement in &statements {
        let result = match mode {
            Mode::Execute => admin.query(statement).execute().await,
            Mode::ValidateOnly => admin
                .query("SELECT formatQuery(?)")
                .bind(statement.as_str())
                .fetch_one::<String>()
                .await
                .map(drop),
        };
        // Statements carry only the password's hash, but keep even that out of error messages.
        result.map_err(|source| ProvisionError::Statement {
            statement: statement
                .split(" IDENTIFIED ")
                .next()
                .unwrap_or_default()
                .to_owned(),
            source,
        })?;
    }
    tracing::info!(%tenant, database, ?mode, statements = statements.len(), "tenant provisioned");
    Ok(statements.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_fence_every_table_and_never_carry_the_password() {
        let t = TenantId::new("acme-01").expect("tenant");
        let pw = SecretString::from("plain-password".to_owned());
        let sql = statements("mi", &t, &pw);
        assert_eq!(sql.len(), 1 + 2 * TENANT_TABLES.len());
        assert!(sql.iter().all(|s| !s.contains("plain-password")));
        for table in TENANT_TABLES {
            assert!(sql.iter().any(|s| s.contains("ROW POLICY")
                && s.contains(&format!("`{table}`"))
                && s.contains("USING tenant_id = 'acme-01'")));
        }
    }
}
