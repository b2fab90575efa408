//! Each tenant's ClickHouse identity, defined once: the sink provisions it, the query API queries
//! as it. The password is derived from a master secret (HMAC-SHA256 of the tenant id) whenever it
//! is needed, so it is never stored anywhere.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::TenantId;

/// The ClickHouse user of a tenant.
pub fn user_name(tenant: &TenantId) -> String {
    format!("mi_tenant_{tenant}")
}

/// The tenant's password, derived from the master secret (never stored).
pub fn password(master: &SecretString, tenant: &TenantId) -> SecretString {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"mi.clickhouse.tenant.v1:");
    mac.update(tenant.as_str().as_bytes());
    SecretString::from(hex(&mac.finalize().into_bytes()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_derived_deterministically_and_differ_per_tenant() {
        let master = SecretString::from("master-secret".to_owned());
        let a = TenantId::new("acme").expect("tenant");
        let b = TenantId::new("beta").expect("tenant");
        assert_eq!(
            password(&master, &a).expose_secret(),
            password(&master, &a).expose_secret()
        );
        assert_ne!(
            password(&master, &a).expose_secret(),
            password(&master, &b).expose_secret()
        );
        assert_eq!(password(&master, &a).expose_secret().len(), 64);
    }
}
