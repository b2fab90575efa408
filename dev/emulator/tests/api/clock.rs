use std::collections::BTreeMap;

use axum::http::StatusCode;
use mi_emulator::generator::GenConfig;
use mi_emulator::truth::{Days, compute};
use mi_emulator::{Config, ZeroRows};
use serde_json::{Value, json};

use crate::common::*;

fn by_date(truth: &Value) -> BTreeMap<String, Value> {
    truth["days"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d["date"].as_str().unwrap_or("").to_string(), d))
        .collect()
}

#[tokio::test]
async fn moving_the_clock_restates_recent_days_only() {
    let emu = emulator(config());
    for (platform, account, conv) in [
        ("google_ads", GOOGLE_CUSTOMER, "conversions"),
        ("meta_ads", META_ACCOUNT, "conversions"),
        ("ga4", GA4_PROPERTY, "transactions"),
    ] {
        emu.set_clock("2025-06-01").await;
        let before = by_date(
            &emu.truth(platform, account, "2025-05-01", "2025-06-10")
                .await,
        );
        emu.set_clock("2025-06-04").await;
        let after = by_date(
            &emu.truth(platform, account, "2025-05-01", "2025-06-10")
                .await,
        );
        assert_eq!(
            before.keys().last().map(String::as_str),
            Some("2025-05-31"),
            "no data for today or later"
        );
        assert_eq!(after.keys().last().map(String::as_str), Some("2025-06-03"));
        for (date, b) in &before {
            let a = &after[date];
            if date.as_str() <= "2025-05-29" {
                assert_eq!(a, b, "{platform} {date} is final and must not change");
            } else {
                assert!(
                    a[conv].as_u64() >= b[conv].as_u64(),
                    "{platform} {date} conversions only grow"
                );
                assert_eq!(
                    a["impressions"], b["impressions"],
                    "only conversions restate"
                );
                assert_eq!(a["sessions"], b["sessions"]);
            }
        }
        // Ages 1 and 2 were immature on June 1st and are final on June 4th: both grew.
        for d in ["2025-05-30", "2025-05-31"] {
            let (b, a) = (
                before[d][conv].as_u64().unwrap_or(0),
                after[d][conv].as_u64().unwrap_or(0),
            );
            assert!(a > b, "{platform} {d}: restated from {b} to {a}");
        }
        // Age 3 on June 1st was already final.
        assert_eq!(
            before["2025-05-29"][conv], after["2025-05-29"][conv],
            "{platform}: age 3 is final"
        );
    }
    // The API reports the restated numbers too.
    emu.set_clock("2025-06-01").await;
    let token = emu.google_token().await;
    let q = "SELECT metrics.conversions, segments.date FROM customer WHERE segments.date = '2025-05-31'";
    let (early, _) = emu.gaql_rows(&token, q).await;
    emu.set_clock("2025-06-05").await;
    let (late, _) = emu.gaql_rows(&token, q).await;
    let conv = |rows: &[Value]| {
        rows.first()
            .and_then(|r| r["metrics"]["conversions"].as_f64())
            .unwrap_or(0.0)
    };
    assert!(
        conv(&late) > conv(&early),
        "{} vs {}",
        conv(&late),
        conv(&early)
    );
    let truth = emu
        .truth("google_ads", GOOGLE_CUSTOMER, "2025-05-31", "2025-05-31")
        .await;
    assert_eq!(
        conv(&late) as u64,
        truth["totals"]["conversions"].as_u64().unwrap_or(0)
    );
}

#[tokio::test]
async fn attribute_history_is_revealed_as_the_clock_moves() {
    let emu = emulator(Config {
        generator: GenConfig {
            campaigns: 12,
            ..GenConfig::default()
        },
        ..config()
    });
    emu.set_clock("2025-08-31").await;
    let truth = emu
        .truth("google_ads", GOOGLE_CUSTOMER, "2025-08-01", "2025-08-01")
        .await;
    // A campaign with a change during the summer.
    let campaigns = truth["entities"]["campaigns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (campaign, version) = campaigns
        .iter()
        .find_map(|c| {
            let h = c["history"].as_array()?;
            let i = h.iter().position(|v| {
                let d = v["valid_from_date"].as_str().unwrap_or("");
                d > "2025-06-05" && d <= "2025-08-31"
            })?;
            (i > 0).then(|| (c.clone(), i))
        })
        .expect("some campaign changes between June and August");
    let history = campaign["history"].as_array().cloned().unwrap_or_default();
    let changed_on = history[version]["valid_from_date"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let id = campaign["id"].as_str().unwrap_or("").to_string();
    let q = format!(
        "SELECT campaign.id, campaign.name, campaign.status, campaign.bidding_strategy_type, campaign_budget.amount_micros FROM campaign WHERE campaign.id = {id}"
    );
    let token = emu.google_token().await;
    let snapshot = |row: &Value| -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("campaign.name".to_string(), row["campaign"]["name"].clone()),
            (
                "campaign.status".to_string(),
                row["campaign"]["status"].clone(),
            ),
            (
                "campaign.bidding_strategy_type".to_string(),
                row["campaign"]["biddingStrategyType"].clone(),
            ),
            (
                "campaign_budget.amount_micros".to_string(),
                row["campaignBudget"]["amountMicros"].clone(),
            ),
        ])
    };
    let expected = |v: &Value| -> BTreeMap<String, Value> {
        snapshot(&json!({
            "campaign": { "name": v["attributes"]["campaign.name"], "status": v["attributes"]["campaign.status"], "biddingStrategyType": v["attributes"]["campaign.bidding_strategy_type"] },
            "campaignBudget": { "amountMicros": v["attributes"]["campaign_budget.amount_micros"] },
        }))
    };
    // The day before the change the API shows the previous version; on the day, the new one.
    let before = day(&changed_on).plus(-1).iso();
    emu.set_clock(&before).await;
    let (rows, _) = emu.gaql_rows(&token, &q).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(snapshot(&rows[0]), expected(&history[version - 1]));
    let t_before = emu
        .truth("google_ads", GOOGLE_CUSTOMER, &before, &before)
        .await;
    let c_before = t_before["entities"]["campaigns"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(
        c_before["history"].as_array().map(Vec::len),
        Some(version),
        "future versions are not visible yet"
    );
    emu.set_clock(&changed_on).await;
    let (rows, _) = emu.gaql_rows(&token, &q).await;
    assert_eq!(snapshot(&rows[0]), expected(&history[version]));
    assert_ne!(
        expected(&history[version]),
        expected(&history[version - 1]),
        "a version differs from its predecessor"
    );

    // Meta: updated_time moves with the change.
    emu.set_clock("2025-08-31").await;
    let mt = emu
        .truth("meta_ads", META_ACCOUNT, "2025-08-01", "2025-08-01")
        .await;
    let meta_campaign = mt["entities"]["campaigns"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c["history"].as_array().is_some_and(|h| {
                        h.len() > 1
                            && h.last()
                                .is_some_and(|v| v["attributes"]["status"] != "DELETED")
                    })
                })
                .cloned()
        })
        .expect("a Meta campaign with changes");
    let last = meta_campaign["history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .unwrap_or_default();
    let token = emu.meta_token().await;
    let r = emu.get(&format!("/graph/v21.0/{META_ACCOUNT}/campaigns?fields=id,name,status,updated_time&effective_status=%5B%22ACTIVE%22%2C%22PAUSED%22%5D&limit=500&access_token={token}")).await;
    let row = r.json()["data"]
        .as_array()
        .and_then(|d| d.iter().find(|c| c["id"] == meta_campaign["id"]).cloned())
        .expect("campaign listed");
    assert_eq!(row["updated_time"], last["changed_at"]);
    assert_eq!(row["name"], last["attributes"]["name"]);
    assert_eq!(row["status"], last["attributes"]["status"]);
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_bytes() {
    async fn fingerprint(seed: u64) -> Vec<Vec<u8>> {
        let emu = emulator(Config {
            generator: GenConfig {
                seed,
                ..GenConfig::default()
            },
            ..config()
        });
        let gt = emu.google_token().await;
        let mt = emu.meta_token().await;
        let mut out = Vec::new();
        let q = "SELECT campaign.name, ad_group_ad.ad.id, metrics.cost_micros, metrics.conversions_value, segments.date, segments.device FROM ad_group_ad WHERE segments.date DURING LAST_30_DAYS";
        out.push(emu.search_stream(&gt, GOOGLE_CUSTOMER, q).await.body);
        out.push(
            emu.get(&format!("/graph/v21.0/{META_ACCOUNT}/insights?level=ad&time_increment=1&date_preset=last_30d&fields=ad_id,spend,actions,reach&limit=50&access_token={mt}"))
                .await
                .body,
        );
        let body = json!({ "dateRanges": [{ "startDate": "30daysAgo", "endDate": "yesterday" }], "dimensions": [{ "name": "date" }, { "name": "sessionSource" }], "metrics": [{ "name": "sessions" }, { "name": "purchaseRevenue" }] });
        out.push(emu.run_report(&gt, GA4_PROPERTY, &body).await.body);
        out.push(
            emu.get(&format!(
                "/_emulator/truth?platform=meta_ads&account={META_ACCOUNT}"
            ))
            .await
            .body,
        );
        // Strip the access token from Meta's paging links, which differ per run by design.
        out.iter()
            .map(|b| {
                let s = String::from_utf8_lossy(b).to_string();
                s.replace(&mt, "TOKEN").into_bytes()
            })
            .collect()
    }
    let a = fingerprint(42).await;
    let b = fingerprint(42).await;
    let c = fingerprint(43).await;
    assert!(a.iter().all(|x| x.len() > 200));
    assert_eq!(a, b, "same seed, same bytes");
    for (x, y) in a.iter().zip(c.iter()) {
        assert_ne!(x, y, "another seed gives other data");
    }
    // In-process ground truth equals the HTTP one.
    let emu = emulator(config());
    let http = emu
        .truth("google_ads", GOOGLE_CUSTOMER, "2025-05-01", "2025-05-31")
        .await;
    let direct = compute(
        &emu.state.generator,
        mi_emulator::generator::Platform::GoogleAds,
        1_234_567_890,
        Some(day("2025-05-01")),
        Some(day("2025-05-31")),
        day(TODAY),
        ZeroRows::Omit,
    );
    assert!(matches!(direct.days, Days::Ads(ref d) if d.len() == 31));
    assert_eq!(serde_json::to_value(&direct).unwrap_or_default(), http);
    assert_eq!(emu.get("/health").await.status, StatusCode::OK);
}
