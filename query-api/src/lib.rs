//! Query API: JWT auth and roles, the unified metrics engine, dashboards as data, a Redis cache
//! invalidated by load events, per-tenant rate limits, OpenAPI.
//!
//! The binary is a thin `clap` front over this library so that tests and benchmarks drive the
//! same router the service runs.

pub mod api;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod dashboards;
pub mod engine;
pub mod error;
pub mod health;
pub mod limits;
pub mod loads;
pub mod observe;
pub mod openapi;
pub mod query;
pub mod settings;
pub mod store;
pub mod warehouse;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::FromRef;
use clap::{Parser, Subcommand};
use mi_common::cli::{self, GlobalArgs};
use mi_common::clients;

pub use error::{ApiError, ApiResult};
pub use settings::ApiSettings;

#[derive(Debug, Parser)]
#[command(name = "query-api", version, about = "Marketing IQ query API")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MI_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Check that ClickHouse and Redis answer, one line each; exit 1 if any fails.
    Check,
    /// Mint an access (or service) token, optionally with a refresh token; prints it to stdout.
    Token {
        #[command(flatten)]
        args: auth::cli::TokenArgs,
    },
}

/// The largest request body accepted (queries are small; anything bigger is a mistake or abuse).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<ApiSettings>,
    pub warehouse: warehouse::Warehouse,
    pub auth: Arc<auth::Authenticator>,
    pub redis: store::Redis,
    pub cache: cache::Cache,
    pub catalog: Arc<catalog::Catalog>,
    pub dashboards: Arc<dashboards::Library>,
}

impl FromRef<AppState> for Arc<auth::Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl AppState {
    pub fn new(settings: ApiSettings) -> anyhow::Result<Self> {
        let auth = auth::Authenticator::from_settings(&settings.api.auth)?;
        let warehouse = warehouse::Warehouse::new(&settings.infra.clickhouse)?;
        let redis = store::Redis::new(&settings.infra.redis.url);
        let catalog = catalog::Catalog::builtin()?;
        let limits = query::Limits {
            max_range_days: settings.api.max_range_days,
            max_limit: settings.api.max_limit,
        };
        let dashboards = dashboards::Library::builtin(&catalog, limits)?;
        Ok(Self {
            cache: cache::Cache::new(redis.clone(), settings.api.cache_ttl_secs),
            settings: Arc::new(settings),
            warehouse,
            auth: Arc::new(auth),
            redis,
            catalog: Arc::new(catalog),
            dashboards: Arc::new(dashboards),
        })
    }
}

/// The whole HTTP surface, with the layers every request goes through: a request id (echoed
/// back, and in every log line of the request), tracing, Prometheus metrics, gzip, CORS, a
/// timeout and a body size limit.
pub fn router(state: AppState) -> axum::Router {
    use axum::http::{HeaderName, Method, StatusCode, header};
    use std::time::Duration;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

    let request_id = HeaderName::from_static("x-request-id");
    let origins = &state.settings.api.cors_origins;
    let allow_origin = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            request_id.clone(),
        ])
        .expose_headers([request_id.clone(), header::RETRY_AFTER]);
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |request: &axum::http::Request<axum::body::Body>| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = id)
        },
    );
    axum::Router::new()
        .merge(health::routes())
        .merge(observe::routes())
        .merge(openapi::routes())
        .merge(auth::routes())
        .merge(api::routes(&state))
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            error::ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .layer(axum::middleware::from_fn(observe::record))
        // Fastest: the cached path is CPU-bound and JSON compresses well even at level 1.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings: ApiSettings = cli.global.load(|s: &ApiSettings| &s.infra.log)?;
    match cli.command {
        Command::Token { args } => auth::cli::run(&settings, args).await,
        Command::Check => Ok(cli::report(&[
            clients::check_clickhouse(&settings.infra.clickhouse).await,
            clients::check_redis(&settings.infra.redis).await,
        ])),
        Command::Serve { listen } => {
            let state = AppState::new(settings)?;
            let shutdown = mi_common::shutdown::on_signal();
            let follower = tokio::spawn(loads::follow(
                state.settings.infra.clone(),
                state.settings.api.loads_group_prefix.clone(),
                state.cache.clone(),
                shutdown.clone(),
            ));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(%listen, "query API listening");
            axum::serve(listener, router(state))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
                .context("HTTP server failed")?;
            shutdown.cancel();
            if let Ok(Err(e)) = follower.await {
                tracing::warn!(error = %e, "load-event follower stopped with an error");
            }
            tracing::info!("query API stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
