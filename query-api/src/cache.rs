//! The response cache: Redis, one namespace per tenant, a TTL, and O(1) invalidation.
//!
//! Each key embeds the tenant's *generation* (`mi:gen:<tenant>`): a load event for the tenant
//! increments it, and every older entry becomes unreachable at once (and expires on its own), so
//! invalidation never scans keys. The key is a SHA-256 of the route and the normalized request,
//! so equal questions share an entry and nothing a client sends is used as a key verbatim.
//!
//! Without Redis everything still works: lookups miss, stores are skipped, and responses say
//! `cached: false`.

use chrono::{DateTime, Utc};
use mi_common::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Redis;

#[derive(Clone)]
pub struct Cache {
    redis: Redis,
    ttl_secs: u64,
}

/// A stored response body and when it was computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub body: serde_json::Value,
    pub cached_at: DateTime<Utc>,
}

fn generation_key(tenant: &TenantId) -> String {
    format!("mi:gen:{tenant}")
}

impl Cache {
    pub fn new(redis: Redis, ttl_secs: u64) -> Self {
        Self { redis, ttl_secs }
    }

    /// The key of `request` on `route` for `tenant`, or `None` without Redis.
    pub async fn key(
        &self,
        tenant: &TenantId,
        route: &str,
        request: &impl Serialize,
    ) -> Option<String> {
        let generation: Option<u64> = self
            .redis
            .query(redis::cmd("GET").arg(generation_key(tenant)))
            .await?;
        let mut hash = Sha256::new();
        hash.update(route.as_bytes());
        hash.update([0]);
        hash.update(serde_json::to_vec(request).ok()?);
        Some(format!(
            "mi:cache:{tenant}:{}:{}",
            generation.unwrap_or(0),
            mi_common::warehouse::hex(&hash.finalize())
        ))
    }

    pub async fn get(&self, key: &str) -> Option<Entry> {
        let raw: Option<Vec<u8>> = self.redis.query(redis::cmd("GET").arg(key)).await?;
        serde_json::from_slice(&raw?).ok()
    }

    pub async fn put(&self, key: &str, entry: &Entry) {
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        let _: Option<()> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(bytes)
                    .arg("EX")
                    .arg(self.ttl_secs),
            )
            .await;
    }

    /// Makes every cached response of `tenant` unreachable; returns the new generation.
    pub async fn invalidate(&self, tenant: &TenantId) -> Option<u64> {
        self.redis
            .query(redis::cmd("INCR").arg(generation_key(tenant)))
            .await
    }
}
