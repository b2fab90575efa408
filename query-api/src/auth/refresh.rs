//! Refresh tokens: opaque, single-use, rotating, revocable, kept in Redis.
//!
//! A refresh token is `mirt_` followed by 32 random bytes (base64url); Redis holds only its
//! SHA-256, so a Redis dump yields no usable token. Every token belongs to a *family* (one login):
//! refreshing marks the presented token used and issues the next one of the same family. Using a
//! token that was already rotated means two parties hold the family (one of them stole it), so the
//! whole family is revoked, the legitimate newest token included (OAuth 2.0 Security BCP §4.14).
//! Each step is one Lua script, so two concurrent refreshes of one token cannot both succeed.
//!
//! Keys (TTL `refresh_ttl_secs`, renewed with each rotation):
//! - `mi:auth:rt:<sha256>`: hash `fam`, `sub`, `tid`, `role`, `used` (`0`/`1`); kept after
//!   rotation so that reuse is detected for the rest of its life;
//! - `mi:auth:fam:<id>`: `active` or `revoked`; it outlives every token of the family.

use std::sync::LazyLock;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mi_common::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jwt::random_id;
use super::{Authenticator, Principal, Role};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::Redis;

/// Marks our refresh tokens, so that secret scanners and people can tell them apart.
pub const TOKEN_PREFIX: &str = "mirt_";
/// Random bytes per token: 256 bits, unguessable.
const TOKEN_BYTES: usize = 32;
/// Random bytes per family id (an identifier, not a secret).
const FAMILY_BYTES: usize = 16;
const TOKEN_KEY: &str = "mi:auth:rt:";
const FAMILY_KEY: &str = "mi:auth:fam:";

/// Starts a family with its first token.
/// KEYS: family, token. ARGV: ttl, family id, sub, tid, role.
static ISSUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], 'active', 'EX', ARGV[1])
redis.call('HSET', KEYS[2], 'fam', ARGV[2], 'sub', ARGV[3], 'tid', ARGV[4], 'role', ARGV[5], 'used', '0')
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
",
    )
});

/// Rotates a token, or revokes its family if it was already rotated.
/// KEYS: presented token, family, new token. ARGV: family id, ttl.
static ROTATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'fam') ~= ARGV[1] then return {'unknown'} end
if redis.call('GET', KEYS[2]) ~= 'active' then return {'revoked'} end
if redis.call('HGET', KEYS[1], 'used') ~= '0' then
  redis.call('SET', KEYS[2], 'revoked', 'EX', ARGV[2])
  return {'reused'}
end
local f = redis.call('HMGET', KEYS[1], 'sub', 'tid', 'role')
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HSET', KEYS[3], 'fam', ARGV[1], 'sub', f[1], 'tid', f[2], 'role', f[3], 'used', '0')
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {'ok', f[1], f[2], f[3]}
",
    )
});

/// Revokes the family of a token that exists (used or not).
/// KEYS: presented token, family. ARGV: family id, ttl.
static REVOKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'fam') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], 'revoked', 'EX', ARGV[2])
return 1
",
    )
});

/// The answer of `/auth/refresh` (and of `query-api token --refresh`), as in RFC 6749 §5.1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("invalid refresh token".into())
}

fn unavailable() -> ApiError {
    ApiError::Unavailable("refresh tokens are unavailable right now; retry later".into())
}

/// The Redis key of a token: only its hash is ever stored.
fn token_key(token: &str) -> String {
    format!(
        "{TOKEN_KEY}{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
    )
}

fn family_key(family: &str) -> String {
    format!("{FAMILY_KEY}{family}")
}

/// Cheap shape check, so that garbage never costs a Redis round trip.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 43 && URL_SAFE_NO_PAD.decode(rest).is_ok())
}

fn new_token() -> ApiResult<String> {
    let secret = random_id(TOKEN_BYTES).map_err(ApiError::internal)?;
    Ok(format!("{TOKEN_PREFIX}{secret}"))
}

/// Refresh tokens over the shared (optional) Redis.
#[derive(Clone)]
pub struct RefreshTokens {
    redis: Redis,
    ttl_secs: u64,
}

impl RefreshTokens {
    pub fn new(redis: Redis, ttl_secs: u64) -> Self {
        Self { redis, ttl_secs }
    }

    /// Starts a new family for `principal` and returns its first token. People only: service
    /// tokens are long-lived already and are replaced, not refreshed.
    pub async fn issue_refresh(&self, principal: &Principal) -> ApiResult<String> {
        if principal.service {
            return Err(ApiError::bad_request(
                "service_refresh",
                "service tokens are not refreshed; mint a new one",
            ));
        }
        let family = random_id(FAMILY_BYTES).map_err(ApiError::internal)?;
        let token = new_token()?;
        let mut call = ISSUE.prepare_invoke();
        call.key(family_key(&family))
            .key(token_key(&token))
            .arg(self.ttl_secs)
            .arg(&family)
            .arg(&principal.subject)
            .arg(principal.tenant.as_str())
            .arg(principal.role.as_str());
        self.redis
            .script::<i64>(&call)
            .await
            .ok_or_else(unavailable)?;
        tracing::info!(tenant = %principal.tenant, subject = %principal.subject, %family, "refresh token family started");
        Ok(token)
    }

    /// The family a token belongs to: `Ok(None)` for an unknown (or expired) token.
    async fn family_of(&self, key: &str) -> ApiResult<Option<String>> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(key).arg("fam");
        self.redis
            .query::<Option<String>>(&cmd)
            .await
            .ok_or_else(unavailable)
    }

    /// Marks `token` used and returns its principal with the family's next token; reuse of a
    /// rotated token revokes the family. Every refusal is the same 401.
    pub async fn rotate(&self, token: &str) -> ApiResult<(Principal, String)> {
        if !well_formed(token) {
            tracing::debug!("refresh token rejected: malformed");
            return Err(invalid());
        }
        let key = token_key(token);
        let Some(family) = self.family_of(&key).await? else {
            tracing::debug!("refresh token rejected: unknown or expired");
            return Err(invalid());
        };
        let next = new_token()?;
        let mut call = ROTATE.prepare_invoke();
        call.key(&key)
            .key(family_key(&family))
            .key(token_key(&next))
            .arg(&family)
            .arg(self.ttl_secs);
        let reply = self
            .redis
            .script::<Vec<String>>(&call)
            .await
            .ok_or_else(unavailable)?;
        match reply.as_slice() {
            [status, sub, tid, role] if status == "ok" => {
                let principal = Principal {
                    subject: sub.clone(),
                    tenant: TenantId::new(tid.as_str()).map_err(ApiError::internal)?,
                    role: role.parse::<Role>().map_err(ApiError::internal)?,
                    service: false,
                };
                Ok((principal, next))
            }
            [status] if status == "reused" => {
                tracing::warn!(%family, "rotated refresh token reused: family revoked");
                Err(invalid())
            }
            [status] => {
                tracing::debug!(%family, %status, "refresh token rejected");
                Err(invalid())
            }
            other => Err(ApiError::internal(format!(
                "unexpected refresh script reply of {} items",
                other.len()
            ))),
        }
    }

    /// Rotates `token` and mints the access token that goes with the next one.
    pub async fn refresh(&self, auth: &Authenticator, token: &str) -> ApiResult<TokenResponse> {
        // Check before rotating: a rotation whose access token cannot be minted would burn the
        // caller's refresh token for nothing.
        if !auth.can_mint() {
            return Err(ApiError::Unavailable(
                "this instance cannot mint tokens (no api.auth.private_key)".into(),
            ));
        }
        let (principal, refresh_token) = self.rotate(token).await?;
        let access_token = auth
            .mint_access(&principal.subject, &principal.tenant, principal.role)
            .map_err(ApiError::internal)?;
        Ok(TokenResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: auth.access_ttl_secs(),
        })
    }

    /// Revokes the family of `token`. Unknown or malformed tokens are accepted silently
    /// (RFC 7009 §2.2): logging out twice is not an error, and the answer reveals nothing.
    pub async fn revoke(&self, token: &str) -> ApiResult<()> {
        if !well_formed(token) {
            return Ok(());
        }
        let key = token_key(token);
        let Some(family) = self.family_of(&key).await? else {
            return Ok(());
        };
        let mut call = REVOKE.prepare_invoke();
        call.key(&key)
            .key(family_key(&family))
            .arg(&family)
            .arg(self.ttl_secs);
        let revoked = self
            .redis
            .script::<i64>(&call)
            .await
            .ok_or_else(unavailable)?;
        if revoked == 1 {
            tracing::info!(%family, "refresh token family revoked (logout)");
        }
        Ok(())
    }
}

fn store(state: &AppState) -> RefreshTokens {
    RefreshTokens::new(state.redis.clone(), state.auth.refresh_ttl_secs())
}

/// Token responses must not be cached by anything on the way (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn refresh(
    State(state): State<AppState>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    let tokens = store(&state)
        .refresh(&state.auth, &body.refresh_token)
        .await?;
    Ok(no_store(Json(tokens).into_response()))
}

async fn logout(
    State(state): State<AppState>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body?;
    store(&state).revoke(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_stored_only_as_hashes() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        let key = token_key(&a);
        assert!(key.starts_with("mi:auth:rt:"));
        assert!(!key.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(key, token_key(&a), "the hash is deterministic");
        assert!(!well_formed("mirt_short"));
        assert!(!well_formed(&a[TOKEN_PREFIX.len()..]));
        assert!(!well_formed(&format!("{a}x")));
    }
}
