//! Authentication and roles.
//!
//! Every request carries a short-lived JWT access token (`Authorization: Bearer …`) whose claims
//! are the only source of the caller's tenant and role. Agents use long-lived *service* tokens,
//! capped at the analyst role. People renew access tokens with opaque, rotating refresh tokens
//! kept (hashed) in Redis; see [`refresh`]. Until a control plane exists, tokens are minted with
//! `query-api token` ([`cli`]).

pub mod cli;
mod jwt;
pub mod refresh;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use mi_common::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub use jwt::{Authenticator, TokenKind};
pub use refresh::{RefreshTokens, TokenResponse};

/// Roles, lowest first: each includes the rights of those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Analyst,
    TenantAdmin,
    SuperAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Viewer,
        Role::Analyst,
        Role::TenantAdmin,
        Role::SuperAdmin,
    ];

    /// The highest role a service token (an agent) may carry: agents read, they do not administer.
    pub const SERVICE_MAX: Role = Role::Analyst;

    /// The wire name, as in the `role` claim and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::TenantAdmin => "tenant_admin",
            Role::SuperAdmin => "super_admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?}: expected one of viewer, analyst, tenant_admin, super_admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Who is calling, from a verified token only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: TenantId,
    pub role: Role,
    /// A service token (an agent), not a person.
    pub service: bool,
}

impl Principal {
    /// `Forbidden` unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {role} role or above"
            )))
        }
    }
}

/// Why the authenticator could not be built or could not mint. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth settings: {0}")]
    Settings(String),
    /// Minting needs a signing key this instance was not given (e.g. only a public key).
    #[error("cannot mint tokens: {0}")]
    Mint(String),
}

/// The bearer token of an `Authorization` header; the scheme is case-insensitive (RFC 7235).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let token =
            bearer(parts).ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        auth.verify(token)
    }
}

/// `POST /auth/refresh` and `POST /auth/logout`.
pub fn routes() -> axum::Router<crate::AppState> {
    refresh::routes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            subject: "u".into(),
            tenant: TenantId::new("acme").expect("tenant"),
            role,
            service: false,
        }
    }

    #[test]
    fn roles_are_ordered_and_each_includes_the_lower_ones() {
        assert!(Role::Viewer < Role::Analyst);
        assert!(Role::Analyst < Role::TenantAdmin);
        assert!(Role::TenantAdmin < Role::SuperAdmin);
        for have in Role::ALL {
            for need in Role::ALL {
                let p = principal(have);
                assert_eq!(p.require(need).is_ok(), have >= need, "{have} needs {need}");
            }
        }
        let err = principal(Role::Viewer)
            .require(Role::TenantAdmin)
            .unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)));
        assert_eq!(err.to_string(), "this needs the tenant_admin role or above");
    }

    #[test]
    fn roles_round_trip_through_their_wire_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).expect("json"),
                format!("\"{role}\"")
            );
        }
        assert!("admin".parse::<Role>().is_err());
        assert!("Viewer".parse::<Role>().is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_must_carry_a_token() {
        let parts = |v: &str| {
            let (parts, ()) = axum::http::Request::builder()
                .header("authorization", v)
                .body(())
                .expect("request")
                .into_parts();
            parts
        };
        assert_eq!(bearer(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&parts("Basic abc")), None);
        assert_eq!(bearer(&parts("Bearer ")), None);
        assert_eq!(bearer(&parts("Bearerabc")), None);
    }
}
