//! Ground truth: `GET /_emulator/truth?platform=…&account=…&from=…&to=…`.
//!
//! Exactly what a complete, correct extraction of the account would find *as of the current
//! clock* (restated recent days included), computed from the same generator that feeds the
//! APIs. Money is integer micros (Google `cost_micros`; Meta `spend` "12.34" → 12,340,000;
//! Google `conversions_value` 123.45 → 123,450,000).
//!
//! Grain of `rows` (the number of rows the API returns for that day):
//! * `google_ads`: ad-days — rows of `SELECT … segments.date … FROM ad_group_ad` selecting
//!   `metrics.impressions`; `device_rows` adds `segments.device`; `conversion_action_rows` is
//!   `FROM campaign` with `segments.conversion_action*` and `metrics.conversions`.
//! * `meta_ads`: ad-days — rows of `insights?level=ad&time_increment=1`; `device_rows` /
//!   `country_rows` with `breakdowns=device_platform` / `country`.
//! * `ga4`: rows of a runReport with all seven dimensions (date, source, medium, campaign,
//!   channel group, device, country) — the finest grain; coarser reports sum these rows.
//!
//! With the default `--zero-rows omit`, ad-days without impressions are not rows (the APIs omit
//! them); with `include`, every ad-day on which the ad existed is.
//!
//! Entities (ads platforms): every campaign, ad group (ad set) and ad visible as of "today"
//! with its full attribute history. `attributes` hold the tracked fields exactly as the API
//! renders them (Google: keyed by GAQL field name, int64 as strings; Meta: keyed by Graph field
//! name); `changed_at` is Meta's `updated_time` for that version (Google has none).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::control::control_error;
use crate::date::Day;
use crate::errors::json_response;
use crate::generator::metrics::{ad_day, split, split_conversions};
use crate::generator::{Generator, Platform, Version};
use crate::{AppState, ZeroRows};

/// Ground truth of one ad-platform day (or, with `date` absent, of the whole range).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdsDay {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<Day>,
    pub rows: u64,
    pub device_rows: u64,
    /// Meta only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_rows: Option<u64>,
    /// Google only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_action_rows: Option<u64>,
    pub impressions: u64,
    pub clicks: u64,
    pub cost_micros: u64,
    pub conversions: u64,
    pub conversion_value_micros: u64,
    pub video_views: u64,
    pub engagements: u64,
    pub reach: u64,
}

/// Ground truth of one GA4 day (or of the range).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ga4Day {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<Day>,
    pub rows: u64,
    pub sessions: u64,
    pub engaged_sessions: u64,
    pub screen_page_views: u64,
    pub engagement_seconds: u64,
    pub transactions: u64,
    pub purchase_revenue_micros: u64,
    pub key_events: u64,
}

/// Per-day truth, by platform family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Days {
    Ads(Vec<AdsDay>),
    Ga4(Vec<Ga4Day>),
}

/// Totals over the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Totals {
    Ads(AdsDay),
    Ga4(Ga4Day),
}

/// One attribute version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionTruth {
    pub valid_from_date: Day,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    pub attributes: Map<String, Value>,
}

/// One entity and its history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntityTruth {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub history: Vec<VersionTruth>,
}

/// All entities of an ad account.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Entities {
    pub campaigns: Vec<EntityTruth>,
    pub ad_groups: Vec<EntityTruth>,
    pub ads: Vec<EntityTruth>,
}

/// The ground truth document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Truth {
    pub platform: Platform,
    pub account: String,
    pub currency: String,
    pub time_zone: String,
    pub today: Day,
    pub from: Day,
    pub to: Day,
    pub grain: &'static str,
    pub days: Days,
    pub totals: Totals,
    pub entities: Entities,
}

fn meta_time(day: Day, minute: u32) -> String {
    format!(
        "{}T{:02}:{:02}:00+0000",
        day.iso(),
        minute / 60,
        minute % 60
    )
}

fn history<A>(
    versions: &[Version<A>],
    meta: bool,
    attrs: impl Fn(&A) -> Map<String, Value>,
) -> Vec<VersionTruth> {
    versions
        .iter()
        .map(|v| VersionTruth {
            valid_from_date: v.from,
            changed_at: meta.then(|| meta_time(v.from, v.minute)),
            attributes: attrs(&v.attrs),
        })
        .collect()
}

fn obj(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Computes the ground truth of an account over `[from, to]` as of `today`.
pub fn compute(
    generator: &Generator,
    platform: Platform,
    account: u64,
    from: Option<Day>,
    to: Option<Day>,
    today: Day,
    zero_rows: ZeroRows,
) -> Truth {
    let (first, last) = generator.window(today);
    let from = from.unwrap_or(first);
    let to = to.unwrap_or(last);
    match platform {
        Platform::Ga4 => ga4_truth(generator, account, from, to, today),
        _ => ads_truth(generator, platform, account, from, to, today, zero_rows),
    }
}

fn ads_truth(
    generator: &Generator,
    platform: Platform,
    account: u64,
    from: Day,
    to: Day,
    today: Day,
    zero_rows: ZeroRows,
) -> Truth {
    let model = generator.model(platform, account, today);
    let meta = platform == Platform::MetaAds;
    let include = zero_rows == ZeroRows::Include;
    let days: Vec<Day> = model
        .data_days(from, to)
        .map(|(a, b)| a.through(b).collect())
        .unwrap_or_default();
    let mut out: Vec<AdsDay> = days
        .iter()
        .map(|d| AdsDay {
            date: Some(*d),
            country_rows: meta.then_some(0),
            conversion_action_rows: (!meta).then_some(0),
            ..AdsDay::default()
        })
        .collect();
    for camp in &model.campaigns {
        let mut weights = [0u64; 3];
        for (j, (_, w)) in camp.conv.iter().take(3).enumerate() {
            weights[j] = *w;
        }
        let n_actions = camp.conv.len().min(3);
        // Per day: conversions per action and whether any ad existed.
        let mut actions = vec![([0u64; 3], false); days.len()];
        for group in &camp.ad_groups {
            for ad in &group.ads {
                for (i, day) in days.iter().enumerate() {
                    let Some(m) = ad_day(ad, *day, today) else {
                        continue;
                    };
                    let (Some(t), Some(act)) = (out.get_mut(i), actions.get_mut(i)) else {
                        continue;
                    };
                    act.1 = true;
                    if m.impressions > 0 || include {
                        t.rows += 1;
                    }
                    let w = if meta {
                        ad.profile.meta_device_w
                    } else {
                        ad.profile.device_w
                    };
                    let count_parts = |parts: &[crate::generator::M; 3]| {
                        parts
                            .iter()
                            .filter(|p| include || p.impressions > 0)
                            .count() as u64
                    };
                    t.device_rows += count_parts(&split(&m, w));
                    if let Some(c) = t.country_rows.as_mut() {
                        *c += count_parts(&split(&m, ad.profile.country_w));
                    }
                    if !meta {
                        for (j, (c, _)) in split_conversions(&m, weights).iter().enumerate() {
                            if let Some(x) = act.0.get_mut(j) {
                                *x += c;
                            }
                        }
                    }
                    t.impressions += m.impressions;
                    t.clicks += m.clicks;
                    t.cost_micros += m.cost_cents * 10_000;
                    t.conversions += m.conversions;
                    t.conversion_value_micros += m.value_cents * 10_000;
                    t.video_views += m.video_views;
                    t.engagements += m.engagements;
                    t.reach += m.reach;
                }
            }
        }
        if !meta {
            for (t, (conv, existed)) in out.iter_mut().zip(actions.iter()) {
                let n = conv
                    .iter()
                    .take(n_actions)
                    .filter(|c| include || **c > 0)
                    .count() as u64;
                if let Some(r) = t.conversion_action_rows.as_mut() {
                    *r += if include && !existed { 0 } else { n };
                }
            }
        }
    }
    let mut totals = AdsDay {
        date: None,
        country_rows: meta.then_some(0),
        conversion_action_rows: (!meta).then_some(0),
        ..AdsDay::default()
    };
    for d in &out {
        totals.rows += d.rows;
        totals.device_rows += d.device_rows;
        if let (Some(t), Some(x)) = (totals.country_rows.as_mut(), d.country_rows) {
            *t += x;
        }
        if let (Some(t), Some(x)) = (
            totals.conversion_action_rows.as_mut(),
            d.conversion_action_rows,
        ) {
            *t += x;
        }
        totals.impressions += d.impressions;
        totals.clicks += d.clicks;
        totals.cost_micros += d.cost_micros;
        totals.conversions += d.conversions;
        totals.conversion_value_micros += d.conversion_value_micros;
        totals.video_views += d.video_views;
        totals.engagements += d.engagements;
        totals.reach += d.reach;
    }

    let mut entities = Entities::default();
    for c in &model.campaigns {
        let channel = c.channel;
        let end_date = c.end_date;
        let created = c.created;
        let created_minute = c.created_minute();
        entities.campaigns.push(EntityTruth {
            id: c.id.to_string(),
            parent_id: None,
            history: history(&c.versions, meta, |a| {
                if meta {
                    let mut o = obj(vec![
                        ("name", json!(a.name)),
                        ("status", json!(a.status.meta())),
                        ("objective", json!(channel.meta_objective())),
                        ("bid_strategy", json!(a.bidding)),
                        ("daily_budget", json!(a.budget_cents.to_string())),
                        ("start_time", json!(meta_time(created, created_minute))),
                    ]);
                    if let Some(d) = end_date {
                        o.insert("stop_time".into(), json!(meta_time(d, 1439)));
                    }
                    o
                } else {
                    obj(vec![
                        ("campaign.name", json!(a.name)),
                        ("campaign.status", json!(a.status.google())),
                        (
                            "campaign.advertising_channel_type",
                            json!(channel.google_type()),
                        ),
                        ("campaign.bidding_strategy_type", json!(a.bidding)),
                        ("campaign.start_date", json!(created.iso())),
                        (
                            "campaign.end_date",
                            json!(end_date.map_or_else(|| "2037-12-30".to_string(), Day::iso)),
                        ),
                        (
                            "campaign_budget.amount_micros",
                            json!((a.budget_cents * 10_000).to_string()),
                        ),
                    ])
                }
            }),
        });
        for g in &c.ad_groups {
            entities.ad_groups.push(EntityTruth {
                id: g.id.to_string(),
                parent_id: Some(c.id.to_string()),
                history: history(&g.versions, meta, |a| {
                    if meta {
                        obj(vec![
                            ("name", json!(a.name)),
                            ("status", json!(a.status.meta())),
                            ("optimization_goal", json!(channel.meta_optimization_goal())),
                            ("billing_event", json!("IMPRESSIONS")),
                            ("bid_amount", json!(a.bid_cents)),
                        ])
                    } else {
                        obj(vec![
                            ("ad_group.name", json!(a.name)),
                            ("ad_group.status", json!(a.status.google())),
                            ("ad_group.type", json!(channel.google_ad_group_type())),
                            (
                                "ad_group.cpc_bid_micros",
                                json!((a.bid_cents * 10_000).to_string()),
                            ),
                        ])
                    }
                }),
            });
            for ad in &g.ads {
                entities.ads.push(EntityTruth {
                    id: ad.id.to_string(),
                    parent_id: Some(g.id.to_string()),
                    history: history(&ad.versions, meta, |a| {
                        if meta {
                            obj(vec![
                                ("name", json!(a.name)),
                                ("status", json!(a.status.meta())),
                            ])
                        } else {
                            obj(vec![
                                ("ad_group_ad.ad.name", json!(a.name)),
                                ("ad_group_ad.status", json!(a.status.google())),
                                ("ad_group_ad.ad.type", json!(channel.google_ad_type())),
                            ])
                        }
                    }),
                });
            }
        }
    }
    Truth {
        platform,
        account: if meta {
            format!("act_{account}")
        } else {
            account.to_string()
        },
        currency: model.info.currency.to_string(),
        time_zone: model.info.time_zone.to_string(),
        today,
        from,
        to,
        grain: if meta {
            "ad-day rows of insights level=ad, time_increment=1 (device_rows: breakdowns=device_platform; country_rows: breakdowns=country)"
        } else {
            "ad-day rows of FROM ad_group_ad with segments.date (device_rows: + segments.device; conversion_action_rows: FROM campaign with segments.conversion_action and segments.date)"
        },
        days: Days::Ads(out),
        totals: Totals::Ads(totals),
        entities,
    }
}

fn ga4_truth(generator: &Generator, property: u64, from: Day, to: Day, today: Day) -> Truth {
    let p = generator.property(property, today);
    let mut days = Vec::new();
    let mut totals = Ga4Day::default();
    if let Some((a, b)) = p.data_days(from, to) {
        let mut buf = Vec::new();
        for day in a.through(b) {
            buf.clear();
            p.day_rows(day, false, &mut buf);
            let mut d = Ga4Day {
                date: Some(day),
                ..Ga4Day::default()
            };
            for r in &buf {
                d.rows += 1;
                d.sessions += r.m.sessions;
                d.engaged_sessions += r.m.engaged_sessions;
                d.screen_page_views += r.m.screen_page_views;
                d.engagement_seconds += r.m.engagement_seconds;
                d.transactions += r.m.transactions;
                d.purchase_revenue_micros += r.m.revenue_cents * 10_000;
                d.key_events += r.m.key_events;
            }
            totals.rows += d.rows;
            totals.sessions += d.sessions;
            totals.engaged_sessions += d.engaged_sessions;
            totals.screen_page_views += d.screen_page_views;
            totals.engagement_seconds += d.engagement_seconds;
            totals.transactions += d.transactions;
            totals.purchase_revenue_micros += d.purchase_revenue_micros;
            totals.key_events += d.key_events;
            days.push(d);
        }
    }
    Truth {
        platform: Platform::Ga4,
        account: property.to_string(),
        currency: p.info.currency.to_string(),
        time_zone: p.info.time_zone.to_string(),
        today,
        from,
        to,
        grain: "rows of runReport with dimensions date, sessionSource, sessionMedium, sessionCampaignName, sessionDefaultChannelGroup, deviceCategory, country",
        days: Days::Ga4(days),
        totals: Totals::Ga4(totals),
        entities: Entities::default(),
    }
}

/// Parses an account id for a platform (`act_` optional for Meta).
pub fn parse_account(platform: Platform, s: &str) -> Option<u64> {
    let digits = if platform == Platform::MetaAds {
        s.strip_prefix("act_").unwrap_or(s)
    } else {
        s
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `GET /_emulator/truth`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(platform) = q.get("platform").and_then(|p| Platform::parse(p)) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "platform must be google_ads, meta_ads or ga4",
        );
    };
    let Some(account) = q.get("account").and_then(|a| parse_account(platform, a)) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "account must be the platform's numeric id (Meta: act_<digits>)",
        );
    };
    // Ok(None) when absent, Err(name) when not a date.
    let date = |k: &'static str| -> Result<Option<Day>, &'static str> {
        match q.get(k) {
            None => Ok(None),
            Some(s) => Day::parse(s).map(Some).ok_or(k),
        }
    };
    let (from, to) = match (date("from"), date("to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(k), _) | (_, Err(k)) => {
            return control_error(StatusCode::BAD_REQUEST, format!("{k} must be YYYY-MM-DD"));
        }
    };
    let truth = compute(
        &st.generator,
        platform,
        account,
        from,
        to,
        st.today(),
        st.cfg.zero_rows,
    );
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&truth).unwrap_or_default(),
    )
}
