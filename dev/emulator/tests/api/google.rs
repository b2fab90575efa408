use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use mi_emulator::{Config, ZeroRows};
use serde_json::Value;

use crate::common::*;

const FROM: &str = "2025-04-01";
const TO: &str = "2025-05-31";

fn metrics_query(extra_segments: &str) -> String {
    format!(
        "SELECT campaign.id, ad_group.id, ad_group_ad.ad.id, metrics.impressions, metrics.clicks, metrics.cost_micros, \
         metrics.conversions, metrics.conversions_value, metrics.video_views, metrics.engagements, segments.date{extra_segments} \
         FROM ad_group_ad WHERE segments.date BETWEEN '{FROM}' AND '{TO}'"
    )
}

#[tokio::test]
async fn field_selection_returns_only_selected_fields_as_proto3_json() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let (rows, _) = emu
        .gaql_rows(&token, "SELECT campaign.id, campaign.advertising_channel_type, campaign_budget.amount_micros FROM campaign")
        .await;
    assert!(!rows.is_empty());
    for r in &rows {
        let obj = r.as_object().expect("row object");
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["campaign", "campaignBudget"]),
            "no metrics or segments unless selected"
        );
        let c = &r["campaign"];
        let ckeys: BTreeSet<&str> = c
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            ckeys,
            BTreeSet::from(["resourceName", "id", "advertisingChannelType"])
        );
        assert!(c["id"].is_string(), "int64 rendered as a string");
        assert!(
            ["SEARCH", "DISPLAY", "VIDEO", "PERFORMANCE_MAX"]
                .contains(&c["advertisingChannelType"].as_str().unwrap_or(""))
        );
        assert!(
            c["resourceName"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("customers/{GOOGLE_CUSTOMER}/campaigns/"))
        );
        let micros = int64(&r["campaignBudget"]["amountMicros"]);
        assert_eq!(micros % 10_000, 0);
    }
    // Daily metrics: camelCase, int64 strings, doubles, dates.
    let (rows, _) = emu.gaql_rows(&token, &metrics_query("")).await;
    let r = &rows[0];
    assert!(r["metrics"]["costMicros"].is_string());
    assert!(
        r["metrics"]["conversions"].is_f64(),
        "conversions is a double: {}",
        r["metrics"]["conversions"]
    );
    let date = r["segments"]["date"].as_str().unwrap_or("");
    assert!(day(date) >= day(FROM) && day(date) <= day(TO));
    assert!(r["adGroupAd"]["ad"]["id"].is_string());
    assert!(
        r["adGroupAd"]["resourceName"]
            .as_str()
            .unwrap_or("")
            .contains('~')
    );
}

#[tokio::test]
async fn unknown_fields_and_resources_are_rejected_like_google() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let r = emu
        .search_stream(
            &token,
            GOOGLE_CUSTOMER,
            "SELECT campaign.id, campaign.colour FROM campaign",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let body = r.json();
    let err = &body[0]["error"];
    assert_eq!(err["status"], "INVALID_ARGUMENT");
    assert_eq!(err["code"], 400);
    let failure = &err["details"][0];
    assert_eq!(
        failure["@type"],
        "type.googleapis.com/google.ads.googleads.v21.errors.GoogleAdsFailure"
    );
    assert_eq!(
        failure["errors"][0]["errorCode"]["queryError"],
        "UNRECOGNIZED_FIELD"
    );
    assert!(
        failure["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("campaign.colour")
    );
    assert_eq!(
        failure["errors"][0]["trigger"]["stringValue"],
        "campaign.colour"
    );

    let r = emu
        .search_stream(
            &token,
            GOOGLE_CUSTOMER,
            "SELECT campaign.id FROM keyword_view",
        )
        .await;
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["queryError"],
        "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE"
    );

    let r = emu
        .search_stream(&token, GOOGLE_CUSTOMER, "SELECT ad_group.id FROM campaign")
        .await;
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["queryError"],
        "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE"
    );

    let r = emu
        .search_stream(
            &token,
            GOOGLE_CUSTOMER,
            "SELECT campaign.id, segments.date, metrics.clicks FROM campaign",
        )
        .await;
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["queryError"],
        "EXPECTED_FILTERS_ON_DATE_RANGE"
    );

    let r = emu
        .search_stream(
            &token,
            GOOGLE_CUSTOMER,
            "SELECT campaign.id, segments.conversion_action_name, metrics.impressions FROM campaign WHERE segments.date DURING LAST_7_DAYS",
        )
        .await;
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["queryError"],
        "PROHIBITED_SEGMENT_WITH_METRIC_IN_SELECT_OR_WHERE_CLAUSE"
    );
}

#[tokio::test]
async fn header_and_auth_errors() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let send = |headers: Vec<(&'static str, String)>| {
        let mut b = Request::builder().method(Method::POST).uri(format!(
            "/googleads/v21/customers/{GOOGLE_CUSTOMER}/googleAds:searchStream"
        ));
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b.body(Body::from(
            r#"{"query":"SELECT campaign.id FROM campaign"}"#,
        ))
        .unwrap_or_default()
    };
    let r = emu.send(send(vec![("developer-token", "x".into())])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()[0]["error"]["status"], "UNAUTHENTICATED");
    let r = emu
        .send(send(vec![
            ("authorization", "Bearer ya29.not-issued".into()),
            ("developer-token", "x".into()),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = emu
        .send(send(vec![("authorization", format!("Bearer {token}"))]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["requestError"],
        "DEVELOPER_TOKEN_PARAMETER_MISSING"
    );
    let r = emu
        .send(send(vec![
            ("authorization", format!("Bearer {token}")),
            ("developer-token", "x".into()),
            ("login-customer-id", "123-456-7890".into()),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()[0]["error"]["details"][0]["errors"][0]["errorCode"]["headerError"],
        "INVALID_LOGIN_CUSTOMER_ID"
    );
    let r = emu
        .send(send(vec![
            ("authorization", format!("Bearer {token}")),
            ("developer-token", "x".into()),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // OAuth: a refresh token that is not Google-shaped is rejected with invalid_grant.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(
            "grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=garbage",
        ))
        .unwrap_or_default();
    let r = emu.send(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn search_stream_batches_and_totals_match_the_truth() {
    let emu = emulator(Config {
        batch_rows: 37,
        ..config()
    });
    let token = emu.google_token().await;
    let r = emu
        .search_stream(&token, GOOGLE_CUSTOMER, &metrics_query(""))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let batches = r.json();
    let batches = batches.as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let mut request_ids = BTreeSet::new();
    for b in &batches {
        let results = b["results"].as_array().cloned().unwrap_or_default();
        assert!(results.len() <= 37);
        assert!(!results.is_empty());
        assert!(
            b["fieldMask"]
                .as_str()
                .unwrap_or("")
                .contains("metrics.costMicros")
        );
        request_ids.insert(b["requestId"].as_str().unwrap_or("").to_string());
        rows.extend(results);
    }
    assert_eq!(request_ids.len(), 1, "one request id per call");
    let truth = emu.truth("google_ads", GOOGLE_CUSTOMER, FROM, TO).await;
    let t = &truth["totals"];
    let n = t["rows"].as_u64().unwrap_or(0) as usize;
    assert!(n > 37 * 3, "enough rows for several batches ({n})");
    assert_eq!(rows.len(), n);
    assert_eq!(batches.len(), n.div_ceil(37));
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["adGroupAd"]["ad"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["segments"]["date"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), rows.len(), "each ad-day once");
    let sum = |f: &dyn Fn(&Value) -> u64| rows.iter().map(|r| f(&r["metrics"])).sum::<u64>();
    assert_eq!(
        sum(&|m| int64(&m["impressions"])),
        t["impressions"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| int64(&m["clicks"])),
        t["clicks"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| int64(&m["costMicros"])),
        t["cost_micros"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| m["conversions"].as_f64().unwrap_or(0.0) as u64),
        t["conversions"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| double_micros(&m["conversionsValue"])),
        t["conversion_value_micros"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| int64(&m["videoViews"])),
        t["video_views"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|m| int64(&m["engagements"])),
        t["engagements"].as_u64().unwrap_or(1)
    );
    for r in &rows {
        let m = &r["metrics"];
        assert!(int64(&m["clicks"]) <= int64(&m["impressions"]));
        assert_eq!(int64(&m["costMicros"]) % 10_000, 0);
        assert!(
            int64(&m["impressions"]) > 0,
            "zero rows are omitted from segmented reports"
        );
    }
    // Edge cases downstream relies on: some rows with impressions but no clicks or no cost.
    assert!(rows.iter().any(|r| int64(&r["metrics"]["clicks"]) == 0));
    assert!(rows.iter().any(|r| int64(&r["metrics"]["costMicros"]) == 0));
    // Per-day rows match the truth's grain.
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        *per_day
            .entry(r["segments"]["date"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    for d in truth["days"].as_array().cloned().unwrap_or_default() {
        let date = d["date"].as_str().unwrap_or("").to_string();
        assert_eq!(
            per_day.get(&date).copied().unwrap_or(0),
            d["rows"].as_u64().unwrap_or(0),
            "rows on {date}"
        );
    }
}

#[tokio::test]
async fn device_split_sums_to_the_undivided_rows() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let (plain, _) = emu.gaql_rows(&token, &metrics_query("")).await;
    let (split, _) = emu
        .gaql_rows(&token, &metrics_query(", segments.device"))
        .await;
    type Key = (String, String);
    let key = |r: &Value| -> Key {
        (
            r["adGroupAd"]["ad"]["id"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            r["segments"]["date"].as_str().unwrap_or("").to_string(),
        )
    };
    let fields = [
        "impressions",
        "clicks",
        "costMicros",
        "videoViews",
        "engagements",
    ];
    let mut sums: BTreeMap<Key, [u64; 7]> = BTreeMap::new();
    for r in &split {
        let s = sums.entry(key(r)).or_default();
        for (i, f) in fields.iter().enumerate() {
            s[i] += int64(&r["metrics"][f]);
        }
        s[5] += r["metrics"]["conversions"].as_f64().unwrap_or(0.0) as u64;
        s[6] += double_micros(&r["metrics"]["conversionsValue"]);
        assert!(
            ["MOBILE", "DESKTOP", "TABLET"]
                .contains(&r["segments"]["device"].as_str().unwrap_or(""))
        );
        assert!(int64(&r["metrics"]["clicks"]) <= int64(&r["metrics"]["impressions"]));
    }
    assert_eq!(sums.len(), plain.len());
    for r in &plain {
        let s = sums.get(&key(r)).copied().unwrap_or_default();
        for (i, f) in fields.iter().enumerate() {
            assert_eq!(s[i], int64(&r["metrics"][f]), "{f} of {:?}", key(r));
        }
        assert_eq!(
            s[5],
            r["metrics"]["conversions"].as_f64().unwrap_or(0.0) as u64
        );
        assert_eq!(s[6], double_micros(&r["metrics"]["conversionsValue"]));
    }
    let truth = emu.truth("google_ads", GOOGLE_CUSTOMER, FROM, TO).await;
    assert_eq!(
        split.len() as u64,
        truth["totals"]["device_rows"].as_u64().unwrap_or(0)
    );
}

#[tokio::test]
async fn conversion_actions_sum_to_campaign_conversions() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let range = format!("WHERE segments.date BETWEEN '{FROM}' AND '{TO}'");
    let (actions, _) = emu
        .gaql_rows(
            &token,
            &format!(
                "SELECT campaign.id, segments.conversion_action, segments.conversion_action_name, segments.conversion_action_category, \
                 segments.date, metrics.conversions, metrics.conversions_value FROM campaign {range}"
            ),
        )
        .await;
    let (campaigns, _) = emu
        .gaql_rows(&token, &format!("SELECT campaign.id, segments.date, metrics.conversions, metrics.conversions_value, metrics.impressions FROM campaign {range}"))
        .await;
    let mut by_day: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in &actions {
        let k = (
            r["campaign"]["id"].as_str().unwrap_or("").to_string(),
            r["segments"]["date"].as_str().unwrap_or("").to_string(),
        );
        let e = by_day.entry(k).or_default();
        e.0 += r["metrics"]["conversions"].as_f64().unwrap_or(0.0) as u64;
        e.1 += double_micros(&r["metrics"]["conversionsValue"]);
        assert!(r["segments"]["conversionActionName"].is_string());
        assert!(r["segments"]["conversionActionCategory"].is_string());
        assert!(
            r["segments"]["conversionAction"]
                .as_str()
                .unwrap_or("")
                .contains("/conversionActions/")
        );
    }
    let mut checked = 0;
    for r in &campaigns {
        let k = (
            r["campaign"]["id"].as_str().unwrap_or("").to_string(),
            r["segments"]["date"].as_str().unwrap_or("").to_string(),
        );
        let conv = r["metrics"]["conversions"].as_f64().unwrap_or(0.0) as u64;
        let value = double_micros(&r["metrics"]["conversionsValue"]);
        assert_eq!(
            by_day.get(&k).copied().unwrap_or_default(),
            (conv, value),
            "{k:?}"
        );
        checked += u64::from(conv > 0);
    }
    assert!(checked > 10);
    let truth = emu.truth("google_ads", GOOGLE_CUSTOMER, FROM, TO).await;
    assert_eq!(
        actions.len() as u64,
        truth["totals"]["conversion_action_rows"]
            .as_u64()
            .unwrap_or(0)
    );
    let total: u64 = by_day.values().map(|v| v.0).sum();
    assert_eq!(total, truth["totals"]["conversions"].as_u64().unwrap_or(0));
}

#[tokio::test]
async fn filters_order_and_limit() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let (rows, _) = emu
        .gaql_rows(
            &token,
            &format!(
                "SELECT ad_group_ad.ad.id, segments.date, metrics.clicks FROM ad_group_ad \
                 WHERE segments.date BETWEEN '{FROM}' AND '{TO}' AND metrics.clicks > 50 ORDER BY metrics.clicks DESC LIMIT 5"
            ),
        )
        .await;
    assert_eq!(rows.len(), 5);
    let clicks: Vec<u64> = rows
        .iter()
        .map(|r| int64(&r["metrics"]["clicks"]))
        .collect();
    assert!(clicks.windows(2).all(|w| w[0] >= w[1]), "{clicks:?}");
    assert!(clicks.iter().all(|c| *c > 50));
    let (enabled, _) = emu.gaql_rows(&token, "SELECT campaign.id, campaign.status FROM campaign WHERE campaign.status IN ('ENABLED', 'PAUSED')").await;
    let (all, _) = emu
        .gaql_rows(&token, "SELECT campaign.id, campaign.status FROM campaign")
        .await;
    assert!(enabled.iter().all(|r| r["campaign"]["status"] != "REMOVED"));
    assert_eq!(
        enabled.len(),
        all.iter()
            .filter(|r| r["campaign"]["status"] != "REMOVED")
            .count()
    );
}

#[tokio::test]
async fn zero_rows_can_be_included() {
    let omit = emulator(config());
    let include = emulator(Config {
        zero_rows: ZeroRows::Include,
        ..config()
    });
    let q = metrics_query("");
    let (a, _) = omit.gaql_rows(&omit.google_token().await, &q).await;
    let token = include.google_token().await;
    let (b, _) = include.gaql_rows(&token, &q).await;
    assert!(b.len() > a.len());
    assert!(b.iter().any(|r| int64(&r["metrics"]["impressions"]) == 0));
    let truth = include.truth("google_ads", GOOGLE_CUSTOMER, FROM, TO).await;
    assert_eq!(
        b.len() as u64,
        truth["totals"]["rows"].as_u64().unwrap_or(0)
    );
}
