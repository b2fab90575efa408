use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::Value;

use crate::common::*;

const FIELDS: &str = "account_id,campaign_id,adset_id,ad_id,impressions,clicks,spend,reach,actions,action_values,\
                      video_thruplay_watched_actions,inline_post_engagement,account_currency";

fn insights_url(token: &str, extra: &str, limit: usize) -> String {
    format!(
        "/graph/v21.0/{META_ACCOUNT}/insights?level=ad&time_increment=1&fields={FIELDS}\
         &time_range=%7B%22since%22%3A%222025-04-01%22%2C%22until%22%3A%222025-05-31%22%7D&limit={limit}&access_token={token}{extra}"
    )
}

fn action(row: &Value, key: &str, types: &[&str]) -> u64 {
    row[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| types.contains(&x["action_type"].as_str().unwrap_or("")))
                .map(|x| {
                    let v = x["value"].as_str().unwrap_or("0");
                    if key == "action_values" {
                        decimal_micros(v)
                    } else {
                        v.parse::<u64>()
                            .unwrap_or_else(|_| panic!("bad action value {v}"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Follows `paging.next` to the end; returns every row and the number of pages.
async fn all_pages(emu: &Emu, first: &str) -> (Vec<Value>, usize) {
    let mut url = first.to_string();
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let r = emu.get(&url).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.header("x-business-use-case-usage").is_some());
        assert!(r.header("x-ad-account-usage").is_some());
        let body = r.json();
        pages += 1;
        rows.extend(body["data"].as_array().cloned().unwrap_or_default());
        match body["paging"]["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with("http://"), "next is a full URL: {next}");
                url = path_of(next);
            }
            None => break,
        }
        assert!(pages < 10_000, "paging does not terminate");
    }
    (rows, pages)
}

#[tokio::test]
async fn cursor_paging_visits_every_row_once_and_totals_match_the_truth() {
    let emu = emulator(config());
    let token = emu.meta_token().await;
    let (rows, pages) = all_pages(&emu, &insights_url(&token, "", 13)).await;
    let truth = emu
        .truth("meta_ads", META_ACCOUNT, "2025-04-01", "2025-05-31")
        .await;
    let t = &truth["totals"];
    let n = t["rows"].as_u64().unwrap_or(0) as usize;
    assert!(n > 13 * 3);
    assert_eq!(rows.len(), n);
    assert_eq!(pages, n.div_ceil(13));
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["ad_id"].as_str().unwrap_or("").to_string(),
                r["date_start"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), n, "every ad-day exactly once");
    let sum = |f: &dyn Fn(&Value) -> u64| rows.iter().map(f).sum::<u64>();
    let num = |k: &'static str| {
        move |r: &Value| {
            r[k].as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    assert_eq!(
        sum(&num("impressions")),
        t["impressions"].as_u64().unwrap_or(1)
    );
    assert_eq!(sum(&num("clicks")), t["clicks"].as_u64().unwrap_or(1));
    assert_eq!(sum(&num("reach")), t["reach"].as_u64().unwrap_or(1));
    assert_eq!(
        sum(&|r| decimal_micros(r["spend"].as_str().unwrap_or("x"))),
        t["cost_micros"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|r| action(r, "actions", &["purchase", "lead"])),
        t["conversions"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|r| action(r, "action_values", &["purchase"])),
        t["conversion_value_micros"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&|r| action(r, "video_thruplay_watched_actions", &["video_view"])),
        t["video_views"].as_u64().unwrap_or(1)
    );
    assert_eq!(
        sum(&num("inline_post_engagement")),
        t["engagements"].as_u64().unwrap_or(1)
    );
    for r in &rows {
        assert_eq!(r["date_start"], r["date_stop"]);
        assert!(num("reach")(r) <= num("impressions")(r));
        assert!(num("impressions")(r) > 0, "no rows without delivery");
        assert_eq!(r["account_currency"], truth["currency"]);
    }
}

#[tokio::test]
async fn breakdowns_sum_to_the_undivided_rows() {
    let emu = emulator(config());
    let token = emu.meta_token().await;
    let (plain, _) = all_pages(&emu, &insights_url(&token, "", 500)).await;
    let truth = emu
        .truth("meta_ads", META_ACCOUNT, "2025-04-01", "2025-05-31")
        .await;
    for (bd, truth_key) in [
        ("device_platform", "device_rows"),
        ("country", "country_rows"),
    ] {
        let (split, _) = all_pages(
            &emu,
            &insights_url(&token, &format!("&breakdowns={bd}"), 500),
        )
        .await;
        assert_eq!(
            split.len() as u64,
            truth["totals"][truth_key].as_u64().unwrap_or(0),
            "{bd}"
        );
        let total = |rows: &[Value], k: &str| {
            rows.iter()
                .map(|r| {
                    r[k].as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .sum::<u64>()
        };
        assert_eq!(total(&split, "impressions"), total(&plain, "impressions"));
        assert_eq!(total(&split, "clicks"), total(&plain, "clicks"));
        let spend = |rows: &[Value]| {
            rows.iter()
                .map(|r| decimal_micros(r["spend"].as_str().unwrap_or("0")))
                .sum::<u64>()
        };
        assert_eq!(spend(&split), spend(&plain));
        assert!(split.iter().all(|r| r[bd].is_string()));
    }
}

#[tokio::test]
async fn entity_edges_page_and_report_budgets_in_minor_units() {
    let emu = emulator(config());
    let token = emu.meta_token().await;
    let url = format!(
        "/graph/v21.0/{META_ACCOUNT}/ads?fields=id,name,status,effective_status,adset_id,campaign_id,creative%7Bid,title,object_type%7D,updated_time&limit=5&access_token={token}"
    );
    let (ads, pages) = all_pages(&emu, &url).await;
    assert!(pages > 1);
    let ids: BTreeSet<&str> = ads.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), ads.len());
    for a in &ads {
        assert!(a["creative"]["id"].is_string() && a["creative"]["title"].is_string());
        assert_ne!(
            a["effective_status"], "DELETED",
            "deleted ads are hidden by default"
        );
        assert!(a["updated_time"].as_str().unwrap_or("").ends_with("+0000"));
    }
    let r = emu
        .get(&format!("/graph/v21.0/{META_ACCOUNT}/campaigns?fields=id,name,daily_budget,objective,status&access_token={token}"))
        .await;
    let campaigns = r.json()["data"].as_array().cloned().unwrap_or_default();
    assert!(!campaigns.is_empty());
    for c in &campaigns {
        let budget = c["daily_budget"].as_str().unwrap_or("");
        assert!(
            budget.parse::<u64>().is_ok(),
            "budget in minor units as a string: {budget}"
        );
        assert!(
            c["objective"]
                .as_str()
                .unwrap_or("")
                .starts_with("OUTCOME_")
        );
    }
    // The field lists Marketing IQ's extractor asks for are all served.
    for (edge, fields) in [
        (
            "campaigns",
            "id,name,status,objective,bid_strategy,daily_budget,lifetime_budget,start_time,stop_time,updated_time",
        ),
        (
            "adsets",
            "id,name,status,campaign_id,optimization_goal,bid_amount,daily_budget,lifetime_budget,updated_time",
        ),
        (
            "ads",
            "id,name,status,adset_id,campaign_id,creative%7Btitle,link_url%7D,updated_time",
        ),
    ] {
        let r = emu
            .get(&format!(
                "/graph/v21.0/{META_ACCOUNT}/{edge}?fields={fields}&access_token={token}"
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{edge}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Unknown field: error 100.
    let r = emu
        .get(&format!(
            "/graph/v21.0/{META_ACCOUNT}/campaigns?fields=id,colour&access_token={token}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], 100);
    // Unknown token: 190.
    let r = emu
        .get(&format!(
            "/graph/v21.0/{META_ACCOUNT}/campaigns?access_token=EAAnotissued"
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], 190);
    assert_eq!(r.json()["error"]["type"], "OAuthException");
    // The account node gives currency and time zone.
    let r = emu
        .get(&format!(
            "/graph/v21.0/{META_ACCOUNT}?fields=id,currency,timezone_name&access_token={token}"
        ))
        .await;
    let truth = emu
        .truth("meta_ads", META_ACCOUNT, "2025-05-01", "2025-05-01")
        .await;
    assert_eq!(r.json()["currency"], truth["currency"]);
    assert_eq!(r.json()["timezone_name"], truth["time_zone"]);
}
