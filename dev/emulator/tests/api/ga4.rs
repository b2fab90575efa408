use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const ALL_DIMS: [&str; 7] = [
    "date",
    "sessionSource",
    "sessionMedium",
    "sessionCampaignName",
    "sessionDefaultChannelGroup",
    "deviceCategory",
    "country",
];
const ALL_METRICS: [&str; 7] = [
    "sessions",
    "engagedSessions",
    "screenPageViews",
    "userEngagementDuration",
    "transactions",
    "purchaseRevenue",
    "keyEvents",
];

fn request(dims: &[&str], limit: u64, offset: u64) -> Value {
    json!({
        "dateRanges": [{ "startDate": "2025-05-01", "endDate": "2025-05-31" }],
        "dimensions": dims.iter().map(|d| json!({ "name": d })).collect::<Vec<_>>(),
        "metrics": ALL_METRICS.iter().map(|m| json!({ "name": m })).collect::<Vec<_>>(),
        "limit": limit.to_string(),
        "offset": offset,
        "returnPropertyQuota": true,
    })
}

#[tokio::test]
async fn offset_paging_visits_every_row_once_and_totals_match_the_truth() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let truth = emu
        .truth("ga4", GA4_PROPERTY, "2025-05-01", "2025-05-31")
        .await;
    let t = &truth["totals"];
    let mut rows = Vec::new();
    let mut offset = 0;
    let mut row_count = None;
    let mut remaining_day = u64::MAX;
    loop {
        let r = emu
            .run_report(&token, GA4_PROPERTY, &request(&ALL_DIMS, 250, offset))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let body = r.json();
        let count = body["rowCount"].as_u64().unwrap_or(0);
        assert_eq!(
            *row_count.get_or_insert(count),
            count,
            "rowCount is the total, on every page"
        );
        assert_eq!(body["metadata"]["currencyCode"], truth["currency"]);
        assert_eq!(body["metadata"]["timeZone"], truth["time_zone"]);
        let quota = &body["propertyQuota"]["tokensPerDay"];
        let rem = quota["remaining"].as_u64().unwrap_or(u64::MAX);
        assert!(rem < remaining_day, "quota decrements");
        assert!(quota["consumed"].as_u64().unwrap_or(0) >= 1);
        remaining_day = rem;
        let page = body["rows"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        rows.extend(page);
    }
    let n = t["rows"].as_u64().unwrap_or(0);
    assert!(n > 250 * 2);
    assert_eq!(rows.len() as u64, n);
    assert_eq!(row_count, Some(n));
    let keys: BTreeSet<Vec<String>> = rows
        .iter()
        .map(|r| {
            r["dimensionValues"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v["value"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        keys.len() as u64,
        n,
        "every row exactly once, in a stable order"
    );
    let metric = |i: usize| -> u64 {
        rows.iter()
            .map(|r| {
                let v = r["metricValues"][i]["value"].as_str().unwrap_or("0");
                if ALL_METRICS[i] == "purchaseRevenue" {
                    decimal_micros(v)
                } else {
                    v.parse::<u64>().unwrap_or_else(|_| panic!("bad value {v}"))
                }
            })
            .sum()
    };
    for (i, key) in [
        "sessions",
        "engaged_sessions",
        "screen_page_views",
        "engagement_seconds",
        "transactions",
        "purchase_revenue_micros",
        "key_events",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(metric(i), t[*key].as_u64().unwrap_or(u64::MAX), "{key}");
    }
    for r in &rows {
        let v = |i: usize| {
            r["metricValues"][i]["value"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(v(0) >= v(1), "sessions ≥ engaged sessions");
        let date = r["dimensionValues"][0]["value"].as_str().unwrap_or("");
        assert_eq!(date.len(), 8, "GA4 dates are YYYYMMDD");
    }
}

#[tokio::test]
async fn coarser_reports_sum_the_finest_rows_and_headers_are_typed() {
    let emu = emulator(config());
    let token = emu.google_token().await;
    let r = emu
        .run_report(
            &token,
            GA4_PROPERTY,
            &request(&["sessionDefaultChannelGroup"], 10_000, 0),
        )
        .await;
    let body = r.json();
    let types: Vec<&str> = body["metricHeaders"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        types,
        vec![
            "TYPE_INTEGER",
            "TYPE_INTEGER",
            "TYPE_INTEGER",
            "TYPE_SECONDS",
            "TYPE_INTEGER",
            "TYPE_CURRENCY",
            "TYPE_FLOAT"
        ]
    );
    let sessions: u64 = body["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["metricValues"][0]["value"].as_str()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let truth = emu
        .truth("ga4", GA4_PROPERTY, "2025-05-01", "2025-05-31")
        .await;
    assert_eq!(sessions, truth["totals"]["sessions"].as_u64().unwrap_or(0));
    // Unknown names are rejected, naming the field.
    let bad = json!({ "dateRanges": [{ "startDate": "7daysAgo", "endDate": "yesterday" }], "metrics": [{ "name": "bounces" }] });
    let r = emu.run_report(&token, GA4_PROPERTY, &bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("bounces")
    );
    let bad = json!({ "dateRanges": [{ "startDate": "7daysAgo", "endDate": "yesterday" }], "dimensions": [{ "name": "city" }], "metrics": [{ "name": "sessions" }] });
    assert!(
        emu.run_report(&token, GA4_PROPERTY, &bad).await.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("city")
    );
    // No token: 401.
    let r = emu
        .run_report("", GA4_PROPERTY, &request(&["date"], 10, 0))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn quota_exhaustion_is_resource_exhausted() {
    let emu = emulator(mi_emulator::Config {
        ga4_tokens_per_day: 3,
        ..config()
    });
    let token = emu.google_token().await;
    let small = request(&["date"], 10, 0);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(emu.run_report(&token, GA4_PROPERTY, &small).await.status);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let r = emu.run_report(&token, GA4_PROPERTY, &small).await;
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    // A new (emulated) day refreshes the daily quota.
    emu.set_clock("2025-06-02").await;
    assert_eq!(
        emu.run_report(&token, GA4_PROPERTY, &small).await.status,
        StatusCode::OK
    );
}
