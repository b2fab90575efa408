use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const GAQL: &str = "SELECT campaign.id, metrics.cost_micros, segments.date FROM campaign WHERE segments.date DURING LAST_7_DAYS";

fn ga4_body() -> Value {
    json!({
        "dateRanges": [{ "startDate": "7daysAgo", "endDate": "yesterday" }],
        "dimensions": [{ "name": "date" }],
        "metrics": [{ "name": "sessions" }],
    })
}

fn meta_url(token: &str) -> String {
    format!(
        "/graph/v21.0/{META_ACCOUNT}/insights?level=ad&time_increment=1&date_preset=last_7d&fields=ad_id,spend,impressions&access_token={token}"
    )
}

#[tokio::test]
async fn google_ads_faults_have_the_documented_shapes() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    emu.set_faults(json!({ "google_ads": { "throttle_every": 2, "server_error_every": 3, "malformed_every": 5 } })).await;
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let r = emu.search_stream(&token, GOOGLE_CUSTOMER, GAQL).await;
        statuses.push(r.status);
        bodies.push(r);
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK
        ]
    );
    let throttled = &bodies[1];
    assert_eq!(throttled.header("retry-after").as_deref(), Some("1"));
    let err = &throttled.json()[0]["error"];
    assert_eq!(err["code"], 429);
    assert_eq!(err["status"], "RESOURCE_EXHAUSTED");
    let detail = &err["details"][0]["errors"][0];
    assert_eq!(detail["errorCode"]["quotaError"], "RESOURCE_EXHAUSTED");
    assert_eq!(detail["details"]["quotaErrorDetails"]["retryDelay"], "1s");
    assert_eq!(
        detail["details"]["quotaErrorDetails"]["rateScope"],
        "ACCOUNT"
    );
    assert_eq!(bodies[2].json()[0]["error"]["status"], "UNAVAILABLE");
    assert!(
        serde_json::from_slice::<Value>(&bodies[4].body).is_err(),
        "the 5th response is cut"
    );
    assert!(serde_json::from_slice::<Value>(&bodies[0].body).is_ok());

    // expire_token_every: the token stays expired until the client refreshes.
    emu.set_faults(json!({ "google_ads": { "expire_token_every": 1 } }))
        .await;
    let r = emu.search_stream(&token, GOOGLE_CUSTOMER, GAQL).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()[0]["error"]["status"], "UNAUTHENTICATED");
    emu.set_faults(json!({})).await;
    assert_eq!(
        emu.search_stream(&token, GOOGLE_CUSTOMER, GAQL)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = emu.google_token().await;
    assert_eq!(
        emu.search_stream(&fresh, GOOGLE_CUSTOMER, GAQL)
            .await
            .status,
        StatusCode::OK
    );

    // malformed_field: a wrong-typed value in every row.
    emu.set_faults(json!({ "google_ads": { "malformed_field": { "endpoint": "searchStream", "field": "metrics.cost_micros", "value": "abc" } } })).await;
    let (rows, _) = emu.gaql_rows(&fresh, GAQL).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["metrics"]["costMicros"] == "abc"));

    let stats = emu.get("/_emulator/stats").await.json();
    let ss = &stats["requests"]["google_ads"]["searchStream"];
    assert_eq!(ss["429"], 2);
    assert_eq!(ss["503"], 1);
    assert!(ss["401"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(stats["injected"]["google_ads"]["throttle"], 2);
}

#[tokio::test]
async fn meta_faults_have_the_documented_shapes() {
    let emu = emulator(config());
    let token = emu.meta_token().await;
    emu.set_faults(json!({ "meta_ads": { "throttle_every": 2, "server_error_every": 5, "malformed_every": 7 } })).await;
    let mut responses = Vec::new();
    for _ in 0..7 {
        responses.push(emu.get(&meta_url(&token)).await);
    }
    let codes: Vec<Value> = responses.iter().map(|r| r.json_lossy()).collect();
    assert_eq!(responses[1].status, StatusCode::BAD_REQUEST);
    assert_eq!(codes[1]["error"]["code"], 17);
    assert_eq!(
        codes[3]["error"]["code"], 613,
        "throttles alternate between 17 and 613"
    );
    assert_eq!(codes[1]["error"]["type"], "OAuthException");
    assert!(codes[1]["error"]["fbtrace_id"].is_string());
    let usage: Value = serde_json::from_str(
        &responses[1]
            .header("x-ad-account-usage")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(usage["acc_id_util_pct"], 100.0);
    let buc: Value = serde_json::from_str(
        &responses[1]
            .header("x-business-use-case-usage")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(buc["987654"][0]["call_count"], 100);
    assert_eq!(buc["987654"][0]["type"], "ads_insights");
    assert_eq!(responses[4].status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(codes[4]["error"]["code"], 2);
    assert_eq!(codes[4]["error"]["is_transient"], true);
    assert!(
        serde_json::from_slice::<Value>(&responses[6].body).is_err(),
        "the 7th response is cut"
    );
    assert_eq!(responses[0].status, StatusCode::OK);

    emu.set_faults(json!({ "meta_ads": { "expire_token_every": 1 } }))
        .await;
    let r = emu.get(&meta_url(&token)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], 190);
    assert_eq!(r.json()["error"]["error_subcode"], 463);
    emu.set_faults(json!({ "meta_ads": { "malformed_field": { "endpoint": "insights", "field": "spend", "value": "abc" } } })).await;
    let r = emu.get(&meta_url(&emu.meta_token().await)).await;
    let rows = r.json()["data"].as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row["spend"] == "abc"));
}

#[tokio::test]
async fn ga4_and_oauth_faults_have_the_documented_shapes() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    emu.set_faults(
        json!({ "ga4": { "throttle_every": 2, "server_error_every": 3, "malformed_every": 5 } }),
    )
    .await;
    let mut rs = Vec::new();
    for _ in 0..5 {
        rs.push(emu.run_report(&token, GA4_PROPERTY, &ga4_body()).await);
    }
    assert_eq!(rs[1].status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rs[1].json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(rs[2].status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rs[2].json()["error"]["status"], "UNAVAILABLE");
    assert!(serde_json::from_slice::<Value>(&rs[4].body).is_err());
    emu.set_faults(json!({ "ga4": { "expire_token_every": 1, "malformed_field": { "endpoint": "runReport", "field": "sessions", "value": 12.5 } } })).await;
    let r = emu.run_report(&token, GA4_PROPERTY, &ga4_body()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let expired_reason = &r.json()["error"]["details"][0]["reason"];
    assert_eq!(expired_reason, "ACCESS_TOKEN_EXPIRED");
    emu.set_faults(json!({ "ga4": { "malformed_field": { "endpoint": "runReport", "field": "sessions", "value": 12.5 } } })).await;
    let r = emu
        .run_report(&emu.google_token().await, GA4_PROPERTY, &ga4_body())
        .await;
    assert!(r.json()["rows"].as_array().is_some_and(|rows| {
        rows.iter()
            .all(|row| row["metricValues"][0]["value"] == 12.5)
    }));

    // OAuth: throttling, server errors, revoked refresh tokens and short TTLs.
    emu.set_faults(json!({ "oauth": { "throttle_every": 1 } }))
        .await;
    let r = emu
        .post_form(
            "/oauth2/token",
            "grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=1//x",
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    emu.set_faults(json!({ "oauth": { "server_error_every": 1 } }))
        .await;
    let r = emu
        .post_form(
            "/oauth2/token",
            "grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=1//x",
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    emu.set_faults(json!({ "oauth": { "expire_token_every": 1 } }))
        .await;
    let r = emu
        .post_form(
            "/oauth2/token",
            "grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=1//x",
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    emu.set_faults(json!({ "oauth": { "token_ttl_secs": 0 } }))
        .await;
    let r = emu
        .post_form(
            "/oauth2/token",
            "grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=1//x",
        )
        .await;
    assert_eq!(r.json()["expires_in"], 0);
    let short = r.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        emu.run_report(&short, GA4_PROPERTY, &ga4_body())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = emu
        .get("/graph/v21.0/oauth/access_token?grant_type=fb_exchange_token&client_id=1&client_secret=s&fb_exchange_token=EAAshort123456")
        .await;
    assert_eq!(r.json()["expires_in"], 0);
    assert_eq!(r.json()["token_type"], "bearer");
    emu.get("/_emulator/faults").await;
    assert_eq!(
        emu.send_delete("/_emulator/faults").await.status,
        StatusCode::OK
    );
    assert_eq!(emu.get("/_emulator/faults").await.json(), json!({}));
    // Invalid configurations are refused.
    let r = emu
        .post_json(
            "/_emulator/faults",
            &json!({ "ga4": { "throttle_every": 0 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
