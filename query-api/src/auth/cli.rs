//! `query-api token`: mints tokens from the configured key. Until a control plane exists, this is
//! how people and agents get tokens; whoever can run it with the signing key is an administrator.
//!
//! The token goes to stdout and nowhere else (logs name tenant, subject and role, never a token).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mi_common::TenantId;

use super::{Authenticator, Principal, RefreshTokens, Role, TokenResponse};
use crate::settings::ApiSettings;
use crate::store::Redis;

#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Tenant the token is for (the `tid` claim).
    #[arg(long)]
    pub tenant: TenantId,
    /// viewer, analyst, tenant_admin or super_admin (service tokens: at most analyst).
    #[arg(long)]
    pub role: Role,
    /// Who the token is for: a user id, or the agent's name for `--service`.
    #[arg(long)]
    pub subject: String,
    /// Mint a long-lived service token for an agent instead of a person's access token.
    #[arg(long)]
    pub service: bool,
    /// Lifetime of the service token in seconds (default `api.auth.service_ttl_secs`).
    #[arg(long, requires = "service")]
    pub ttl_secs: Option<u64>,
    /// Also register a refresh token in Redis and print both as JSON
    /// (`{"access_token","refresh_token","token_type","expires_in"}`, as `/auth/refresh` answers).
    #[arg(long, conflicts_with = "service")]
    pub refresh: bool,
}

/// Prints the token (alone on one line), or with `--refresh` the JSON token response.
pub async fn run(settings: &ApiSettings, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let auth = Authenticator::from_settings(&settings.api.auth)?;
    let token = if args.service {
        let ttl = args
            .ttl_secs
            .map_or_else(|| auth.service_ttl(), Duration::from_secs);
        auth.mint_service(&args.subject, &args.tenant, args.role, ttl)?
    } else {
        auth.mint_access(&args.subject, &args.tenant, args.role)?
    };
    tracing::info!(
        tenant = %args.tenant,
        subject = %args.subject,
        role = %args.role,
        service = args.service,
        "token minted"
    );
    if !args.refresh {
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    let principal = Principal {
        subject: args.subject,
        tenant: args.tenant,
        role: args.role,
        service: false,
    };
    let refresh_token = RefreshTokens::new(
        Redis::new(&settings.infra.redis.url),
        auth.refresh_ttl_secs(),
    )
    .issue_refresh(&principal)
    .await
    .context("cannot register the refresh token (is Redis up?)")?;
    let response = TokenResponse {
        access_token: token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: auth.access_ttl_secs(),
    };
    println!("{}", serde_json::to_string(&response)?);
    Ok(ExitCode::SUCCESS)
}
