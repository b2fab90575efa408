//! Query API latency and throughput under load: the repo's load tool for `mi-query-api`.
//!
//! One run (1) loads a scratch warehouse with N synthetic fact rows for T tenants straight through
//! the `clickhouse` crate's RowBinary insert (this measures queries, not the pipeline), (2) serves
//! the real router in-process on a loopback port, (3) drives it with C closed-loop HTTP clients
//! (keep-alive, gzip) for D seconds per scenario — the cached dashboard, the uncached dashboard
//! and an uncached `/api/v1/query`, the uncached ones also with a single client — and (4) prints
//! latency percentiles, throughput and errors against the targets of DESIGN §9, then a cheap
//! profile of the uncached paths (the SQL alone vs the engine in-process vs HTTP), and writes
//! everything as JSON.
//!
//! Closed loop: each client sends its next request when the previous answer has arrived, so at
//! C clients latency ≈ C / throughput (Little's law). The load generator shares the machine (and
//! the tokio runtime) with the API, as a sidecar client would; its own cost is in the figures.
//!
//! Needs the local stack (`dev/stack up`):
//!
//!     cargo run --release -p mi-bench --bin api-bench -- --help
//!     cargo run --release -p mi-bench --bin api-bench -- --keep            # 10M rows, keep the DB
//!     cargo run --release -p mi-bench --bin api-bench -- --reuse-db NAME  # measure again

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{Days, NaiveDate, NaiveTime, Utc};
use clap::{Parser, ValueEnum};
use mi_bench::{Spread, per_second};
use mi_common::secret::SecretRef;
use mi_common::settings::{LogFormat, LogSettings};
use mi_common::{Settings, TenantId, clients};
use mi_query_api::AppState;
use mi_query_api::auth::{Principal, Role};
use mi_query_api::dashboards::run::Params;
use mi_query_api::query::{AttributeTime, Grain, Query, TimeRange};
use mi_query_api::settings::{ApiSection, ApiSettings, AuthSettings};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The dashboard every dashboard scenario asks for: KPIs with the previous period (two queries
/// per source), a daily series, a platform table and top campaigns through the SCD2 join.
const DASHBOARD: &str = "exec-summary";
/// Metrics and dimensions of the `/api/v1/query` scenario: a typical chart query.
const QUERY_METRICS: [&str; 5] = ["spend", "clicks", "impressions", "ctr", "cpa"];
const QUERY_DIMENSIONS: [&str; 2] = ["date", "platform"];
/// Days of every window asked for (the range of the cached scenario, the base length of the
/// uncached ones).
const WINDOW_DAYS: u64 = 30;
/// Targets of DESIGN §9.
const CACHED_P99_TARGET_MS: f64 = 20.0;
const CACHED_TARGET_CLIENTS: usize = 100;
const UNCACHED_P95_TARGET_MS: f64 = 300.0;
const UNCACHED_TARGET_ROWS: u64 = 10_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "api-bench",
    about = "Load test of the query API (DESIGN §9): cached and uncached dashboards and /api/v1/query over a synthetic warehouse, served in-process, driven over HTTP.",
    long_about = None
)]
struct Args {
    /// Fact rows to load (85 % fact_ad_performance, 10 % fact_ga_sessions, 5 % fact_conversions).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Tenants the rows are spread over (each with a Google Ads, a Meta and a GA4 account).
    #[arg(long, default_value_t = 20)]
    tenants: u32,
    /// Days of data, ending on --end-date.
    #[arg(long, default_value_t = 400)]
    days: u32,
    /// The last day of data.
    #[arg(long, default_value = "2026-10-14")]
    end_date: NaiveDate,
    /// Concurrent clients of the multi-client scenarios (uncached ones also run with 1).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Seconds each scenario sends requests (in-flight requests then finish and count).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Measurement runs of every scenario; percentiles are reported as min / median / max.
    #[arg(long, default_value_t = 1)]
    reps: u32,
    /// Which scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Cached, Kind::Dashboard, Kind::Query])]
    scenarios: Vec<Kind>,
    /// Use this existing database (loaded by an earlier `--keep` run) instead of loading one;
    /// if it is missing or empty it is created and loaded under this name. Never dropped.
    #[arg(long, value_name = "NAME")]
    reuse_db: Option<String>,
    /// Keep the scratch database at the end (print its name for --reuse-db).
    #[arg(long)]
    keep: bool,
    /// Rows per INSERT while loading (days are grouped until a batch holds about this many).
    #[arg(long, default_value_t = 500_000)]
    batch_rows: u64,
    /// Run OPTIMIZE TABLE … FINAL on the fact tables after loading (one part per partition: the
    /// warehouse after background merges have caught up).
    #[arg(long)]
    optimize: bool,
    /// Repetitions of each statement in the profile of the uncached paths (0 skips the profile).
    #[arg(long, default_value_t = 5)]
    profile_reps: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "target/api-bench.json")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// GET the dashboard for one fixed range: every answer from the Redis cache.
    Cached,
    /// GET the dashboard for a range no earlier request used: every answer from ClickHouse.
    Dashboard,
    /// POST /api/v1/query for a range no earlier request used.
    Query,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Cached => "cached dashboard",
            Kind::Dashboard => "uncached dashboard",
            Kind::Query => "uncached /query",
        }
    }
}

// ------------------------------------------------------------------------------------------
// Synthetic data
// ------------------------------------------------------------------------------------------

/// SplitMix64: deterministic, fast, good enough for plausible numbers.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A little generator seeded from the identity of what it describes, so that a row's numbers
/// do not depend on the order rows are generated in.
struct Rng(u64);

impl Rng {
    fn of(parts: &[u64]) -> Self {
        Self(parts.iter().fold(0x5EED_u64, |acc, p| mix(acc ^ p)))
    }
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn micros(x: f64) -> i64 {
    (x * 1e6).round() as i64
}

/// ClickHouse `Date`: days since 1970-01-01.
fn ch_date(date: NaiveDate) -> anyhow::Result<u16> {
    let days = (date - NaiveDate::default()).num_days();
    u16::try_from(days).with_context(|| format!("{date} is outside ClickHouse's Date"))
}

/// ClickHouse `DateTime64(3)`: milliseconds since the epoch.
fn ch_millis(date: NaiveDate, time: NaiveTime) -> i64 {
    date.and_time(time).and_utc().timestamp_millis()
}

// The row types mirror sink/src/rows.rs (whose fields are private to the sink): column for
// column the tables of sink/migrations/.

#[derive(Debug, Serialize, clickhouse::Row)]
struct AdPerformanceRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
    campaign_id: String,
    ad_group_id: String,
    ad_id: String,
    device: String,
    country: String,
    currency: String,
    impressions: i64,
    clicks: i64,
    cost_micros: i64,
    conversions: f64,
    conversion_value_micros: i64,
    video_views: i64,
    engagements: i64,
    reach: i64,
    extracted_at: i64,
    run_id: String,
}

#[derive(Debug, Serialize, clickhouse::Row)]
struct GaSessionsRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
    source: String,
    medium: String,
    campaign: String,
    channel_group: String,
    device: String,
    country: String,
    currency: String,
    sessions: i64,
    engaged_sessions: i64,
    screen_page_views: i64,
    session_duration_seconds: i64,
    transactions: i64,
    purchase_revenue_micros: i64,
    key_events: f64,
    extracted_at: i64,
    run_id: String,
}

#[derive(Debug, Serialize, clickhouse::Row)]
struct ConversionRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    date: u16,
    campaign_id: String,
    conversion_action: String,
    category: String,
    currency: String,
    conversions: f64,
    conversion_value_micros: i64,
    extracted_at: i64,
    run_id: String,
}

#[derive(Debug, Serialize, clickhouse::Row)]
struct CampaignRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    channel_type: String,
    bidding_strategy: String,
    budget_micros: Option<i64>,
    budget_period: String,
    start_date: Option<u16>,
    end_date: Option<u16>,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

#[derive(Debug, Serialize, clickhouse::Row)]
struct AdGroupRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    ad_group_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    ad_group_type: String,
    bid_micros: Option<i64>,
    budget_micros: Option<i64>,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

#[derive(Debug, Serialize, clickhouse::Row)]
struct AdRow {
    tenant_id: String,
    platform: String,
    account_id: String,
    ad_id: String,
    ad_group_id: String,
    campaign_id: String,
    surrogate_key: String,
    version: u32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: u8,
    name: String,
    status: String,
    ad_type: String,
    headline: String,
    final_url: String,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
    revision: u64,
    is_deleted: u8,
}

const PLATFORMS: [&str; 2] = ["google_ads", "meta_ads"];
const GA: &str = "ga4";
/// Device breakdowns as each platform reports them (see dev/emulator).
const AD_DEVICES: [[&str; 3]; 2] = [
    ["MOBILE", "DESKTOP", "TABLET"],
    ["mobile_app", "mobile_web", "desktop"],
];
const DEVICE_SHARE: [f64; 3] = [1.6, 1.0, 0.25];
const GA_DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IT", "SE", "BR", "MX", "JP", "IN", "PL", "BE",
    "CH", "AT", "IE", "DK",
];
const CHANNELS: [&[&str]; 2] = [
    &["SEARCH", "PERFORMANCE_MAX", "DISPLAY", "VIDEO", "SHOPPING"],
    &[
        "OUTCOME_SALES",
        "OUTCOME_TRAFFIC",
        "OUTCOME_AWARENESS",
        "OUTCOME_LEADS",
    ],
];
const BIDDING: [&[&str]; 2] = [
    &[
        "MAXIMIZE_CONVERSIONS",
        "TARGET_CPA",
        "TARGET_ROAS",
        "MANUAL_CPC",
    ],
    &["LOWEST_COST_WITHOUT_CAP", "COST_CAP", "BID_CAP"],
];
const ACTIVE: [&str; 2] = ["ENABLED", "ACTIVE"];
/// (action, category) of the conversion facts.
const ACTIONS: [(&str, &str); 5] = [
    ("Purchase", "purchase"),
    ("Add to cart", "add_to_cart"),
    ("Lead form", "lead"),
    ("Sign-up", "signup"),
    ("Contact", "contact"),
];
/// GA4 traffic that is not a paid campaign: (source, medium, channel group, campaign).
const ORGANIC: [(&str, &str, &str, &str); 6] = [
    ("google", "organic", "Organic Search", "(organic)"),
    ("(direct)", "(none)", "Direct", "(direct)"),
    ("newsletter", "email", "Email", "monthly_newsletter"),
    ("bing", "organic", "Organic Search", "(organic)"),
    ("chatgpt.com", "referral", "Referral", "(referral)"),
    ("instagram.com", "referral", "Organic Social", "(referral)"),
];
const ADS_PER_GROUP: usize = 4;
const GROUPS_PER_CAMPAIGN: usize = 4;
const ADS_PER_CAMPAIGN: usize = ADS_PER_GROUP * GROUPS_PER_CAMPAIGN;

/// How the rows are spread: per (day, tenant) slot, a share of each fact table, every row a
/// distinct natural key (so FINAL keeps them all).
#[derive(Debug, Clone)]
struct Layout {
    tenants: u32,
    days: u32,
    start: NaiveDate,
    ads_total: u64,
    ga_total: u64,
    conv_total: u64,
    /// Campaigns per tenant and ad platform, enough for every slot's keys.
    campaigns: usize,
}

impl Layout {
    fn new(rows: u64, tenants: u32, days: u32, end: NaiveDate) -> anyhow::Result<Self> {
        ensure!(
            tenants > 0 && days > 0,
            "--tenants and --days must be positive"
        );
        let start = end
            .checked_sub_days(Days::new(u64::from(days) - 1))
            .context("--days reaches before the calendar")?;
        let ads_total = rows * 85 / 100;
        let ga_total = rows / 10;
        let conv_total = rows - ads_total - ga_total;
        let slots = u64::from(days) * u64::from(tenants);
        let most = |total: u64| total.div_ceil(slots) as usize;
        // Ads: 2 platforms × 3 devices × ADS_PER_CAMPAIGN ads per campaign; conversions:
        // 2 platforms × 5 actions per campaign.
        let campaigns = most(ads_total)
            .div_ceil(2 * 3 * ADS_PER_CAMPAIGN)
            .max(most(conv_total).div_ceil(2 * ACTIONS.len()))
            .max(1);
        let layout = Self {
            tenants,
            days,
            start,
            ads_total,
            ga_total,
            conv_total,
            campaigns,
        };
        let ga_capacity = layout.ga_combos() * GA_DEVICES.len() * COUNTRIES.len();
        ensure!(
            most(ga_total) <= ga_capacity,
            "{} GA4 rows per tenant and day exceed the {ga_capacity} distinct keys the generator makes: use more tenants or days",
            most(ga_total)
        );
        Ok(layout)
    }

    fn slots(&self) -> u64 {
        u64::from(self.days) * u64::from(self.tenants)
    }

    /// Rows of a table with `total` rows in slot `slot` (the remainder goes to the first slots).
    fn share(&self, total: u64, slot: u64) -> usize {
        let slots = self.slots();
        (total / slots + u64::from(slot < total % slots)) as usize
    }

    /// Sources × campaigns of the GA4 rows: the organic ones, then one paid Google and one paid
    /// Meta campaign per campaign.
    fn ga_combos(&self) -> usize {
        ORGANIC.len() + 2 * self.campaigns
    }

    fn rows_per_day(&self) -> u64 {
        (self.ads_total + self.ga_total + self.conv_total).div_ceil(u64::from(self.days))
    }
}

/// A campaign and the economics its rows follow.
#[derive(Debug, Clone)]
struct Campaign {
    id: String,
    name: String,
    channel: &'static str,
    weight: f64,
    ctr: f64,
    cpc: f64,
    cvr: f64,
    aov: f64,
}

/// One tenant's accounts and entities.
#[derive(Debug, Clone)]
struct Tenant {
    index: u64,
    id: String,
    currency: &'static str,
    accounts: [String; 2],
    property: String,
    campaigns: [Vec<Campaign>; 2],
    groups: [Vec<String>; 2],
    ads: [Vec<String>; 2],
}

const BRANDS: [&str; 8] = [
    "Brand",
    "Generic",
    "Competitor",
    "Retargeting",
    "Prospecting",
    "Seasonal",
    "Shopping",
    "Video",
];

impl Tenant {
    fn new(index: u32, layout: &Layout) -> Self {
        let t = u64::from(index);
        let campaigns = |p: usize| -> Vec<Campaign> {
            (0..layout.campaigns)
                .map(|c| {
                    let mut rng = Rng::of(&[t, p as u64, c as u64, 1]);
                    let channel = CHANNELS[p][c % CHANNELS[p].len()];
                    let search = channel == "SEARCH" || channel == "SHOPPING";
                    Campaign {
                        id: if p == 0 {
                            format!("{}", 21_000_000_000 + t * 10_000 + c as u64)
                        } else {
                            format!("{}", 120_210_000_000_000 + t * 10_000 + c as u64)
                        },
                        name: format!(
                            "{} | {} | {:02}",
                            BRANDS[c % BRANDS.len()],
                            channel.to_lowercase().replace('_', " "),
                            c
                        ),
                        channel,
                        weight: rng.range(0.3, 2.0),
                        ctr: if search {
                            rng.range(0.03, 0.09)
                        } else {
                            rng.range(0.004, 0.015)
                        },
                        cpc: if search {
                            rng.range(0.8, 3.5)
                        } else {
                            rng.range(0.2, 1.2)
                        },
                        cvr: rng.range(0.01, 0.08),
                        aov: rng.range(30.0, 160.0),
                    }
                })
                .collect()
        };
        let ids = |p: usize, n: usize, base: u64| -> Vec<String> {
            (0..n)
                .map(|i| format!("{}", base + t * 1_000_000 + (p as u64) * 500_000 + i as u64))
                .collect()
        };
        Self {
            index: t,
            id: format!("bench-t{index:02}"),
            currency: ["USD", "USD", "EUR", "GBP", "USD"][index as usize % 5],
            accounts: [
                format!("{}", 5_100_000_000 + t * 7_919),
                format!("act_{}", 880_000_000_000 + t * 13),
            ],
            property: format!("{}", 310_000_000 + t * 17),
            campaigns: [campaigns(0), campaigns(1)],
            groups: [
                ids(0, layout.campaigns * GROUPS_PER_CAMPAIGN, 140_000_000_000),
                ids(1, layout.campaigns * GROUPS_PER_CAMPAIGN, 238_000_000_000),
            ],
            ads: [
                ids(0, layout.campaigns * ADS_PER_CAMPAIGN, 650_000_000_000),
                ids(1, layout.campaigns * ADS_PER_CAMPAIGN, 239_000_000_000),
            ],
        }
    }
}

/// The SCD2 rows of every tenant: a few campaigns have 2 or 3 versions (budget, then bidding and
/// status changes inside the data range), some ads a second version (a new headline); the first
/// versions start before the data so every fact finds its version in the as-of join.
struct Dims {
    campaigns: Vec<CampaignRow>,
    groups: Vec<AdGroupRow>,
    ads: Vec<AdRow>,
}

fn dims(layout: &Layout, tenants: &[Tenant]) -> anyhow::Result<Dims> {
    let midnight = NaiveTime::MIN;
    let first = layout
        .start
        .checked_sub_days(Days::new(60))
        .context("data start")?;
    let first_ms = ch_millis(first, midnight);
    let extracted = ch_millis(layout.start, midnight) + 6 * 3_600_000;
    let mut out = Dims {
        campaigns: Vec::new(),
        groups: Vec::new(),
        ads: Vec::new(),
    };
    let hash = |parts: &[u64]| format!("{:016x}", Rng::of(parts).next());
    let start_day = Some(ch_date(first)?);
    for tenant in tenants {
        for p in 0..2 {
            let platform = PLATFORMS[p];
            let account = &tenant.accounts[p];
            for (c, campaign) in tenant.campaigns[p].iter().enumerate() {
                let mut rng = Rng::of(&[tenant.index, p as u64, c as u64, 2]);
                let versions = match c % 8 {
                    1 | 5 => 2,
                    3 => 3,
                    _ => 1,
                };
                // Version starts: before the data, then inside it.
                let mut starts = vec![first_ms];
                let mut day = 30 + rng.next() % u64::from(layout.days.saturating_sub(150).max(1));
                for _ in 1..versions {
                    let at = layout
                        .start
                        .checked_add_days(Days::new(day))
                        .context("version date")?;
                    starts.push(ch_millis(at, midnight) + (rng.next() % 86_400_000) as i64);
                    day += 20 + rng.next() % 60;
                }
                let budget = ((campaign.weight * 400.0).round() * 1e6) as i64;
                for v in 0..versions {
                    let last = v + 1 == versions;
                    let status = if v == 2 { "PAUSED" } else { ACTIVE[p] };
                    out.campaigns.push(CampaignRow {
                        tenant_id: tenant.id.clone(),
                        platform: platform.into(),
                        account_id: account.clone(),
                        campaign_id: campaign.id.clone(),
                        surrogate_key: format!("{platform}:{account}:{}:v{}", campaign.id, v + 1),
                        version: v as u32 + 1,
                        valid_from: starts[v],
                        valid_to: starts.get(v + 1).copied(),
                        is_current: u8::from(last),
                        name: campaign.name.clone(),
                        status: status.into(),
                        channel_type: campaign.channel.into(),
                        bidding_strategy: BIDDING[p][(c + usize::from(v >= 2)) % BIDDING[p].len()]
                            .into(),
                        budget_micros: Some(if v >= 1 { budget * 3 / 2 } else { budget }),
                        budget_period: "DAILY".into(),
                        start_date: start_day,
                        end_date: None,
                        attributes_hash: hash(&[tenant.index, p as u64, c as u64, v as u64]),
                        extracted_at: extracted,
                        run_id: "api-bench".into(),
                        revision: 1,
                        is_deleted: 0,
                    });
                }
            }
            for (g, group) in tenant.groups[p].iter().enumerate() {
                out.groups.push(AdGroupRow {
                    tenant_id: tenant.id.clone(),
                    platform: platform.into(),
                    account_id: account.clone(),
                    ad_group_id: group.clone(),
                    campaign_id: tenant.campaigns[p][g / GROUPS_PER_CAMPAIGN].id.clone(),
                    surrogate_key: format!("{platform}:{account}:{group}:v1"),
                    version: 1,
                    valid_from: first_ms,
                    valid_to: None,
                    is_current: 1,
                    name: format!("Ad group {g:03}"),
                    status: ACTIVE[p].into(),
                    ad_group_type: if p == 0 { "SEARCH_STANDARD" } else { "" }.into(),
                    bid_micros: Some(1_000_000 + (g as i64 % 7) * 250_000),
                    budget_micros: None,
                    attributes_hash: hash(&[tenant.index, p as u64, g as u64, 10]),
                    extracted_at: extracted,
                    run_id: "api-bench".into(),
                    revision: 1,
                    is_deleted: 0,
                });
            }
            for (a, ad) in tenant.ads[p].iter().enumerate() {
                let versions = if a % 10 == 7 { 2 } else { 1 };
                let change = ch_millis(
                    layout
                        .start
                        .checked_add_days(Days::new(u64::from(layout.days / 2)))
                        .context("ad version date")?,
                    midnight,
                );
                for v in 0..versions {
                    out.ads.push(AdRow {
                        tenant_id: tenant.id.clone(),
                        platform: platform.into(),
                        account_id: account.clone(),
                        ad_id: ad.clone(),
                        ad_group_id: tenant.groups[p][a / ADS_PER_GROUP].clone(),
                        campaign_id: tenant.campaigns[p][a / ADS_PER_CAMPAIGN].id.clone(),
                        surrogate_key: format!("{platform}:{account}:{ad}:v{}", v + 1),
                        version: v as u32 + 1,
                        valid_from: if v == 0 { first_ms } else { change },
                        valid_to: (v + 1 < versions).then_some(change),
                        is_current: u8::from(v + 1 == versions),
                        name: format!("Ad {a:04}"),
                        status: ACTIVE[p].into(),
                        ad_type: if p == 0 {
                            "RESPONSIVE_SEARCH_AD"
                        } else {
                            "IMAGE"
                        }
                        .into(),
                        headline: format!("Headline {a} rev {}", v + 1),
                        final_url: format!("https://shop.example/{}/{a}", tenant.id),
                        attributes_hash: hash(&[tenant.index, p as u64, a as u64, 20 + v as u64]),
                        extracted_at: extracted,
                        run_id: "api-bench".into(),
                        revision: 1,
                        is_deleted: 0,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// What one (day, tenant) slot has in common: the date, weekday and trend factors, the load
/// stamp.
struct Day {
    index: u64,
    date: u16,
    factor: f64,
    extracted_at: i64,
    run_id: String,
}

fn ad_row(layout: &Layout, tenant: &Tenant, day: &Day, k: usize) -> AdPerformanceRow {
    let p = k % 2;
    let j = k / 2;
    let device = j % 3;
    let a = j / 3;
    let g = a / ADS_PER_GROUP;
    let campaign = &tenant.campaigns[p][(g / GROUPS_PER_CAMPAIGN).min(layout.campaigns - 1)];
    let mut rng = Rng::of(&[tenant.index, day.index, k as u64, 3]);
    let impressions =
        (campaign.weight * day.factor * DEVICE_SHARE[device] * rng.range(150.0, 900.0)) as i64;
    let clicks = (impressions as f64 * campaign.ctr * rng.range(0.7, 1.3)).round() as i64;
    let cost = clicks as f64 * campaign.cpc * rng.range(0.8, 1.2);
    let conversions = (clicks as f64 * campaign.cvr * rng.range(0.5, 1.5) * 100.0).round() / 100.0;
    let value = conversions * campaign.aov * rng.range(0.8, 1.2);
    let video = campaign.channel == "VIDEO" || campaign.channel == "OUTCOME_AWARENESS";
    AdPerformanceRow {
        tenant_id: tenant.id.clone(),
        platform: PLATFORMS[p].into(),
        account_id: tenant.accounts[p].clone(),
        date: day.date,
        campaign_id: campaign.id.clone(),
        ad_group_id: tenant.groups[p][g.min(tenant.groups[p].len() - 1)].clone(),
        ad_id: tenant.ads[p][a.min(tenant.ads[p].len() - 1)].clone(),
        device: AD_DEVICES[p][device].into(),
        country: String::new(),
        currency: tenant.currency.into(),
        impressions,
        clicks,
        cost_micros: micros(cost),
        conversions,
        conversion_value_micros: micros(value),
        video_views: if video {
            (impressions as f64 * rng.range(0.1, 0.3)) as i64
        } else {
            0
        },
        engagements: if p == 1 {
            (impressions as f64 * rng.range(0.01, 0.05)) as i64
        } else {
            0
        },
        reach: if p == 1 {
            (impressions as f64 * rng.range(0.7, 0.9)) as i64
        } else {
            0
        },
        extracted_at: day.extracted_at,
        run_id: day.run_id.clone(),
    }
}

fn ga_row(layout: &Layout, tenant: &Tenant, day: &Day, k: usize) -> GaSessionsRow {
    let combos = layout.ga_combos();
    let combo = k % combos;
    let rest = k / combos;
    let device = rest % 3;
    let country = (rest / 3) % COUNTRIES.len();
    let (source, medium, channel_group, campaign) = if combo < ORGANIC.len() {
        let (s, m, g, c) = ORGANIC[combo];
        (s, m, g, c.to_owned())
    } else {
        let paid = combo - ORGANIC.len();
        let c = &tenant.campaigns[paid % 2][paid / 2];
        if paid.is_multiple_of(2) {
            ("google", "cpc", "Paid Search", c.name.clone())
        } else {
            ("facebook", "paid", "Paid Social", c.name.clone())
        }
    };
    let mut rng = Rng::of(&[tenant.index, day.index, k as u64, 4]);
    let sessions = (day.factor
        * DEVICE_SHARE[device]
        * rng.range(20.0, 400.0)
        * (1.0 / (1.0 + country as f64)))
        .max(1.0) as i64;
    let transactions = (sessions as f64 * rng.range(0.0, 0.03)).round() as i64;
    GaSessionsRow {
        tenant_id: tenant.id.clone(),
        platform: GA.into(),
        account_id: tenant.property.clone(),
        date: day.date,
        source: source.into(),
        medium: medium.into(),
        campaign,
        channel_group: channel_group.into(),
        device: GA_DEVICES[device].into(),
        country: COUNTRIES[country].into(),
        currency: tenant.currency.into(),
        sessions,
        engaged_sessions: (sessions as f64 * rng.range(0.5, 0.75)) as i64,
        screen_page_views: (sessions as f64 * rng.range(1.5, 4.0)) as i64,
        session_duration_seconds: (sessions as f64 * rng.range(60.0, 240.0)) as i64,
        transactions,
        purchase_revenue_micros: micros(transactions as f64 * rng.range(30.0, 160.0)),
        key_events: (sessions as f64 * rng.range(0.05, 0.15) * 10.0).round() / 10.0,
        extracted_at: day.extracted_at,
        run_id: day.run_id.clone(),
    }
}

fn conversion_row(tenant: &Tenant, day: &Day, k: usize) -> ConversionRow {
    let p = k % 2;
    let w = k / 2;
    let (action, category) = ACTIONS[w % ACTIONS.len()];
    let campaign = &tenant.campaigns[p][(w / ACTIONS.len()).min(tenant.campaigns[p].len() - 1)];
    let mut rng = Rng::of(&[tenant.index, day.index, k as u64, 5]);
    let conversions = (campaign.weight * day.factor * rng.range(0.0, 12.0) * 2.0).round() / 2.0;
    ConversionRow {
        tenant_id: tenant.id.clone(),
        platform: PLATFORMS[p].into(),
        account_id: tenant.accounts[p].clone(),
        date: day.date,
        campaign_id: campaign.id.clone(),
        conversion_action: action.into(),
        category: category.into(),
        currency: tenant.currency.into(),
        conversions,
        conversion_value_micros: if category == "purchase" {
            micros(conversions * campaign.aov)
        } else {
            0
        },
        extracted_at: day.extracted_at,
        run_id: day.run_id.clone(),
    }
}

#[derive(Debug, Clone, Serialize)]
struct LoadFigures {
    rows: u64,
    dimension_rows: u64,
    seconds: f64,
    rows_per_s: f64,
    optimize_seconds: Option<f64>,
}

/// Loads the dimensions, then the facts day by day in batches of about `batch_rows`, streaming:
/// rows are generated as they are written, never held.
async fn load(
    db: &clickhouse::Client,
    layout: &Layout,
    batch_rows: u64,
    optimize: bool,
) -> anyhow::Result<LoadFigures> {
    let tenants: Vec<Tenant> = (0..layout.tenants)
        .map(|t| Tenant::new(t, layout))
        .collect();
    let dims = dims(layout, &tenants)?;
    let dimension_rows = (dims.campaigns.len() + dims.groups.len() + dims.ads.len()) as u64;
    {
        let mut insert = db.insert::<CampaignRow>("dim_campaigns").await?;
        for row in &dims.campaigns {
            insert.write(row).await?;
        }
        insert.end().await?;
        let mut insert = db.insert::<AdGroupRow>("dim_ad_groups").await?;
        for row in &dims.groups {
            insert.write(row).await?;
        }
        insert.end().await?;
        let mut insert = db.insert::<AdRow>("dim_ads").await?;
        for row in &dims.ads {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    println!(
        "  dimensions: {} campaign versions, {} ad groups, {} ad versions ({} campaigns per tenant and ad platform)",
        dims.campaigns.len(),
        dims.groups.len(),
        dims.ads.len(),
        layout.campaigns
    );

    let total = layout.ads_total + layout.ga_total + layout.conv_total;
    let days_per_batch = (batch_rows / layout.rows_per_day().max(1)).max(1) as u32;
    let started = Instant::now();
    let mut written = 0u64;
    let mut next_day = 0u32;
    let loaded_at = NaiveTime::from_hms_opt(6, 0, 0).unwrap_or(NaiveTime::MIN);
    while next_day < layout.days {
        let last_day = (next_day + days_per_batch).min(layout.days);
        // Three INSERTs stream side by side; the server reads each body as it arrives.
        let mut ads = db.insert::<AdPerformanceRow>("fact_ad_performance").await?;
        let mut ga = db.insert::<GaSessionsRow>("fact_ga_sessions").await?;
        let mut conv = db.insert::<ConversionRow>("fact_conversions").await?;
        for d in next_day..last_day {
            let date = layout
                .start
                .checked_add_days(Days::new(u64::from(d)))
                .context("date")?;
            let weekend = matches!(
                chrono::Datelike::weekday(&date),
                chrono::Weekday::Sat | chrono::Weekday::Sun
            );
            let next = date.succ_opt().context("date")?;
            for tenant in &tenants {
                let slot = u64::from(d) * u64::from(layout.tenants) + tenant.index;
                let day = Day {
                    index: u64::from(d),
                    date: ch_date(date)?,
                    factor: (0.8 + 0.4 * f64::from(d) / f64::from(layout.days))
                        * if weekend { 0.8 } else { 1.0 },
                    extracted_at: ch_millis(next, loaded_at),
                    run_id: format!("bench-{}-{d}", tenant.index),
                };
                for k in 0..layout.share(layout.ads_total, slot) {
                    ads.write(&ad_row(layout, tenant, &day, k)).await?;
                }
                for k in 0..layout.share(layout.ga_total, slot) {
                    ga.write(&ga_row(layout, tenant, &day, k)).await?;
                }
                let n = layout.share(layout.conv_total, slot);
                for k in 0..n {
                    conv.write(&conversion_row(tenant, &day, k)).await?;
                }
                written += (layout.share(layout.ads_total, slot)
                    + layout.share(layout.ga_total, slot)
                    + n) as u64;
            }
        }
        ads.end().await?;
        ga.end().await?;
        conv.end().await?;
        next_day = last_day;
        let rate = per_second(written, started.elapsed());
        println!(
            "  loaded {written:>11} / {total} rows ({:>3.0} %), {rate:>8.0} rows/s, {:>5.0} s elapsed, ETA {:.0} s",
            100.0 * written as f64 / total.max(1) as f64,
            started.elapsed().as_secs_f64(),
            (total - written) as f64 / rate.max(1.0)
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut figures = LoadFigures {
        rows: written,
        dimension_rows,
        seconds,
        rows_per_s: written as f64 / seconds.max(1e-9),
        optimize_seconds: None,
    };
    println!(
        "  load: {written} fact rows in {seconds:.1} s = {:.0} rows/s (RowBinary, {days_per_batch} days per INSERT)",
        figures.rows_per_s
    );
    if optimize {
        let started = Instant::now();
        for table in [
            "fact_ad_performance",
            "fact_ga_sessions",
            "fact_conversions",
        ] {
            db.query(&format!("OPTIMIZE TABLE {table} FINAL"))
                .execute()
                .await
                .with_context(|| format!("OPTIMIZE TABLE {table} FINAL"))?;
        }
        let s = started.elapsed().as_secs_f64();
        println!("  OPTIMIZE … FINAL of the fact tables: {s:.1} s");
        figures.optimize_seconds = Some(s);
    }
    Ok(figures)
}

// ------------------------------------------------------------------------------------------
// The warehouse as found
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct Warehouse {
    database: String,
    tenants: Vec<String>,
    first: NaiveDate,
    last: NaiveDate,
    rows: BTreeMap<String, u64>,
    active_parts: BTreeMap<String, u64>,
}

impl Warehouse {
    fn fact_rows(&self) -> u64 {
        [
            "fact_ad_performance",
            "fact_ga_sessions",
            "fact_conversions",
        ]
        .iter()
        .filter_map(|t| self.rows.get(*t))
        .sum()
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Extent {
    first: u16,
    last: u16,
}

async fn inspect(db: &clickhouse::Client, database: &str) -> anyhow::Result<Warehouse> {
    let mut rows = BTreeMap::new();
    let mut active_parts = BTreeMap::new();
    for table in [
        "fact_ad_performance",
        "fact_ga_sessions",
        "fact_conversions",
        "dim_campaigns",
        "dim_ad_groups",
        "dim_ads",
    ] {
        let n: u64 = db
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await
            .with_context(|| format!("counting {database}.{table}"))?;
        rows.insert(table.to_owned(), n);
        let parts: u64 = db
            .query("SELECT count() FROM system.parts WHERE database = ? AND table = ? AND active")
            .bind(database)
            .bind(table)
            .fetch_one()
            .await
            .with_context(|| format!("parts of {database}.{table}"))?;
        active_parts.insert(table.to_owned(), parts);
    }
    let tenants: Vec<String> = db
        .query("SELECT DISTINCT toString(tenant_id) FROM fact_ad_performance ORDER BY 1")
        .fetch_all()
        .await
        .context("tenants")?;
    let extent: Extent = db
        .query("SELECT toUInt16(min(date)) AS first, toUInt16(max(date)) AS last FROM fact_ad_performance")
        .fetch_one()
        .await
        .context("date range")?;
    let day = |d: u16| NaiveDate::default() + Days::new(u64::from(d));
    Ok(Warehouse {
        database: database.to_owned(),
        tenants,
        first: day(extent.first),
        last: day(extent.last),
        rows,
        active_parts,
    })
}

// ------------------------------------------------------------------------------------------
// Requests
// ------------------------------------------------------------------------------------------

/// The date windows requests ask for: one fixed (cached), or a fresh one per request number.
#[derive(Debug, Clone, Copy)]
struct Windows {
    tenants: u64,
    /// Earliest start of an uncached window: a whole previous period of data lies before it.
    first_start: NaiveDate,
    /// Distinct starts of 30-day windows inside the data.
    starts: u64,
    fixed: TimeRange,
}

impl Windows {
    fn new(first: NaiveDate, last: NaiveDate, tenants: usize) -> anyhow::Result<Self> {
        let fixed_start = last
            .checked_sub_days(Days::new(WINDOW_DAYS - 1))
            .context("window")?;
        let first_start = first
            .checked_add_days(Days::new(WINDOW_DAYS))
            .context("window")?
            .min(fixed_start);
        let starts = ((fixed_start - first_start).num_days() + 1).max(1) as u64;
        Ok(Self {
            tenants: tenants.max(1) as u64,
            first_start,
            starts,
            fixed: TimeRange {
                start: fixed_start,
                end: last,
                grain: Grain::Day,
            },
        })
    }

    /// The tenant and window of request `n`: tenants in turn, then every start, then longer
    /// windows (31 days, 32, …), so no two request numbers ask the same question.
    fn distinct(&self, n: u64) -> (usize, TimeRange) {
        let tenant = (n % self.tenants) as usize;
        let m = n / self.tenants;
        let start = self.first_start + Days::new(m % self.starts);
        let days = WINDOW_DAYS + m / self.starts;
        (
            tenant,
            TimeRange {
                start,
                end: start + Days::new(days - 1),
                grain: Grain::Day,
            },
        )
    }

    fn cached(&self, n: u64) -> (usize, TimeRange) {
        ((n % self.tenants) as usize, self.fixed)
    }
}

/// What every client shares.
struct Ctx {
    http: reqwest::Client,
    base: String,
    tokens: Vec<String>,
    windows: Windows,
}

fn query_body(time: TimeRange) -> Value {
    json!({
        "metrics": QUERY_METRICS,
        "dimensions": QUERY_DIMENSIONS,
        "time": { "start": time.start, "end": time.end },
    })
}

impl Ctx {
    fn request(&self, kind: Kind, n: u64) -> reqwest::RequestBuilder {
        let (tenant, time) = match kind {
            Kind::Cached => self.windows.cached(n),
            Kind::Dashboard | Kind::Query => self.windows.distinct(n),
        };
        let token = &self.tokens[tenant % self.tokens.len()];
        let builder = match kind {
            Kind::Cached | Kind::Dashboard => self.http.get(format!(
                "{}/api/v1/dashboards/{DASHBOARD}?start_date={}&end_date={}",
                self.base, time.start, time.end
            )),
            Kind::Query => self
                .http
                .post(format!("{}/api/v1/query", self.base))
                .json(&query_body(time)),
        };
        builder.bearer_auth(token)
    }
}

/// The 1-minute load average (`/proc/loadavg`), to tell a busy machine from a slow API.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn sample(text: &str) -> String {
    text.chars().take(400).collect()
}

/// One client's record of a scenario.
#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u64>,
    /// Decoded (gunzipped) body bytes of the successful answers.
    body_bytes: u64,
    errors: u64,
    /// Answers whose `metadata.cached` was not what the scenario expects.
    cache_mismatches: u64,
    first_error: Option<String>,
}

/// Sends requests until `deadline`, one at a time; the one in flight at the deadline finishes
/// and counts (dropping it would hide exactly the slowest answers).
async fn client(
    ctx: Arc<Ctx>,
    kind: Kind,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let expect: &[u8] = if kind == Kind::Cached {
        b"\"cached\":true"
    } else {
        b"\"cached\":false"
    };
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = match ctx.request(kind, n).send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) if status == reqwest::StatusCode::OK => Ok(body),
                    Ok(body) => Err(format!(
                        "HTTP {status}: {}",
                        sample(&String::from_utf8_lossy(&body))
                    )),
                    Err(e) => Err(format!("HTTP {status}, body unreadable: {e}")),
                }
            }
            Err(e) => Err(format!("request failed: {e}")),
        };
        let elapsed = started.elapsed();
        match outcome {
            Ok(body) => {
                stats
                    .latencies_us
                    .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
                stats.body_bytes += body.len() as u64;
                if !contains(&body, expect) {
                    stats.cache_mismatches += 1;
                }
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e);
            }
        }
    }
    stats
}

/// Percentile by nearest rank of a sorted sample, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

/// One scenario's figures in one repetition.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    rep: u32,
    kind: Kind,
    scenario: &'static str,
    clients: usize,
    requests: u64,
    ok: u64,
    errors: u64,
    cache_mismatches: u64,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// Mean decoded body size of the successful answers.
    mean_body_bytes: f64,
    /// The machine's 1-minute load average when the scenario ended (it is shared).
    load_1m: Option<f64>,
    first_error: Option<String>,
}

async fn scenario(
    ctx: &Arc<Ctx>,
    kind: Kind,
    clients: usize,
    seconds: f64,
    rep: u32,
) -> anyhow::Result<Measured> {
    let counter = Arc::new(AtomicU64::new(0));
    if kind != Kind::Cached {
        // One request first (outside the measurement): connections warm, and a broken setup
        // fails here with the API's answer instead of after a minute of errors.
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let response = ctx.request(kind, n).send().await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(
            status == reqwest::StatusCode::OK,
            "{}: preflight answered {status}: {}",
            kind.label(),
            sample(&body)
        );
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(ctx.clone(), kind, counter.clone(), deadline)))
        .collect();
    let mut all = ClientStats::default();
    for task in tasks {
        let stats = task.await.context("a client task failed")?;
        all.latencies_us.extend(stats.latencies_us);
        all.body_bytes += stats.body_bytes;
        all.errors += stats.errors;
        all.cache_mismatches += stats.cache_mismatches;
        if all.first_error.is_none() {
            all.first_error = stats.first_error;
        }
    }
    let elapsed = started.elapsed();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len() as u64;
    let requests = ok + all.errors;
    let mean = if ok == 0 {
        f64::NAN
    } else {
        all.latencies_us.iter().sum::<u64>() as f64 / ok as f64 / 1000.0
    };
    Ok(Measured {
        rep,
        kind,
        scenario: kind.label(),
        clients,
        requests,
        ok,
        errors: all.errors,
        cache_mismatches: all.cache_mismatches,
        seconds: elapsed.as_secs_f64(),
        rps: per_second(requests, elapsed),
        p50_ms: percentile_ms(&all.latencies_us, 50.0),
        p95_ms: percentile_ms(&all.latencies_us, 95.0),
        p99_ms: percentile_ms(&all.latencies_us, 99.0),
        max_ms: all
            .latencies_us
            .last()
            .map_or(f64::NAN, |&x| x as f64 / 1000.0),
        mean_ms: mean,
        mean_body_bytes: all.body_bytes as f64 / ok.max(1) as f64,
        load_1m: load_average(),
        first_error: all.first_error,
    })
}

/// Fills the cache for every tenant's fixed window and checks that the next answer is a hit.
async fn warm(ctx: &Ctx, tenants: usize) -> anyhow::Result<()> {
    for n in 0..tenants as u64 {
        for attempt in 0..2 {
            let response = ctx.request(Kind::Cached, n).send().await?;
            let status = response.status();
            let body = response.text().await?;
            ensure!(
                status == reqwest::StatusCode::OK,
                "warming the cache: {status}: {}",
                sample(&body)
            );
            let value: Value = serde_json::from_str(&body).context("dashboard answer")?;
            if attempt == 1 && value["metadata"]["cached"] != json!(true) {
                bail!(
                    "the dashboard is not served from the cache after warming (metadata: {}): is Redis up?",
                    value["metadata"]
                );
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Profile of the uncached paths
// ------------------------------------------------------------------------------------------

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Group {
    #[allow(dead_code)] // read so the transfer and decoding are timed like the engine's
    dims: Vec<String>,
    #[allow(dead_code)]
    values: Vec<f64>,
    #[allow(dead_code)]
    currencies: Vec<String>,
}

fn median_ms(samples: &[Duration]) -> f64 {
    median(
        &samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>(),
    )
}

fn median(samples: &[f64]) -> f64 {
    Spread::of(samples).map_or(f64::NAN, |s| s.median)
}

/// The SQL with its bound values spliced in as quoted literals — which is also what the
/// `clickhouse` crate sends (its binds are client-side), so the text runs as is.
fn readable(sql: &str, binds: &[String]) -> String {
    let mut out = String::new();
    let mut binds = binds.iter();
    for (i, part) in sql.split('?').enumerate() {
        if i > 0 {
            match binds.next() {
                Some(b) => out.push_str(&format!(
                    "'{}'",
                    b.replace('\\', "\\\\").replace('\'', "\\'")
                )),
                None => out.push('?'),
            }
        }
        out.push_str(part);
    }
    out
}

/// ClickHouse's HTTP interface without the `clickhouse` crate: a new connection per statement
/// (no pool), and the server's own elapsed time from `X-ClickHouse-Summary`.
struct RawClickHouse {
    http: reqwest::Client,
    url: String,
    user: String,
    password: Option<String>,
}

impl RawClickHouse {
    fn new(settings: &mi_common::settings::ClickHouseSettings) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        Ok(Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .tcp_nodelay(true)
                .build()?,
            url: settings.url.clone(),
            user: settings.user.clone(),
            password: settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        })
    }

    /// Wall time and the server's elapsed time (when it says), in ms.
    async fn time(&self, sql: &str) -> anyhow::Result<(f64, Option<f64>)> {
        let mut request = self
            .http
            .post(&self.url)
            .query(&[("max_execution_time", "30"), ("default_format", "TSV")])
            .header("X-ClickHouse-User", &self.user)
            .body(sql.to_owned());
        if let Some(password) = &self.password {
            request = request.header("X-ClickHouse-Key", password);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let summary = response
            .headers()
            .get("X-ClickHouse-Summary")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str::<Value>(v).ok());
        let body = response.bytes().await?;
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            status == reqwest::StatusCode::OK,
            "{status}: {}",
            sample(&String::from_utf8_lossy(&body))
        );
        let server = summary.and_then(|s| {
            s["elapsed_ns"]
                .as_str()
                .and_then(|n| n.parse::<f64>().ok())
                .map(|ns| ns / 1e6)
        });
        Ok((wall, server))
    }
}

#[derive(Debug, Clone, Serialize)]
struct Statement {
    widget: String,
    source: String,
    period: String,
    groups: usize,
    /// The engine's own time (X-ClickHouse-Summary elapsed_ns).
    server_ms: f64,
    /// Round trip on a new connection.
    fresh_ms: f64,
    /// Round trip through the API's own `clickhouse` client (pooled, kept-alive connections).
    pooled_ms: f64,
    sql: String,
}

/// Times what an uncached answer is made of, one layer at a time, one request at a time: each
/// SQL statement the engine generates — the server's own time, a round trip on a new
/// connection, a round trip through the API's pooled `clickhouse` client — then the engine
/// in-process (no HTTP, no cache), and (from the scenarios) the same over HTTP.
async fn profile(
    state: &AppState,
    tenant: &TenantId,
    windows: &Windows,
    reps: usize,
) -> anyhow::Result<Value> {
    let client = state.warehouse.for_tenant(tenant);
    let raw = RawClickHouse::new(&state.settings.infra.clickhouse)?;
    let principal = Principal {
        subject: "api-bench".into(),
        tenant: tenant.clone(),
        role: Role::Analyst,
        service: false,
    };
    let engine = state.engine(&principal, &client);
    let time = windows.distinct(0).1;

    let time_sql = |label: (&str, &str, &str), sql: String, binds: Vec<String>| {
        let (client, raw) = (&client, &raw);
        let (widget, source, period) = (label.0.to_owned(), label.1.to_owned(), label.2.to_owned());
        async move {
            let text = readable(&sql, &binds);
            let (mut server, mut fresh, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
            let mut groups = 0;
            for _ in 0..reps {
                let (wall, elapsed) = raw
                    .time(&text)
                    .await
                    .with_context(|| format!("profiling {text}"))?;
                fresh.push(wall);
                server.extend(elapsed);
                let mut query = client.query(&sql);
                for b in &binds {
                    query = query.bind(b.as_str());
                }
                let started = Instant::now();
                let rows = query
                    .with_setting("max_execution_time", "30")
                    .fetch_all::<Group>()
                    .await
                    .with_context(|| format!("profiling {text}"))?;
                pooled.push(started.elapsed().as_secs_f64() * 1000.0);
                groups = rows.len();
            }
            anyhow::Ok(Statement {
                widget,
                source,
                period,
                groups,
                server_ms: median(&server),
                fresh_ms: median(&fresh),
                pooled_ms: median(&pooled),
                sql: text,
            })
        }
    };

    let mut statements = Vec::new();
    // The fixed cost of a statement: one of the same shape that reads nothing.
    let nothing = "SELECT CAST([], 'Array(String)') AS dims, CAST([], 'Array(Float64)') AS values, CAST([], 'Array(String)') AS currencies";
    statements.push(time_sql(("-", "-", "no table"), nothing.into(), vec![]).await?);
    // The dashboard: each widget's statements, as the engine compiles them.
    let dashboard = state
        .dashboards
        .dashboards
        .get(DASHBOARD)
        .with_context(|| format!("no dashboard {DASHBOARD}"))?;
    for widget in &dashboard.widgets {
        if widget.transform.is_some() {
            continue; // exec-summary has none; others would change the ranges asked
        }
        let query = widget.query(time, &[]);
        let plan = query.plan(&state.catalog, state.limits())?;
        let mut periods = vec![("current", time)];
        if query.compare.is_some()
            && let Some(previous) = time.previous()
        {
            periods.push(("previous", previous));
        }
        for source in &plan.sources {
            for (label, period) in &periods {
                let (sql, binds) = engine.compile(&plan, source, Some(*period));
                statements.push(time_sql((&widget.id, source.source, label), sql, binds).await?);
            }
        }
    }
    let mut engine_runs = Vec::new();
    for i in 0..reps {
        let params = Params {
            time: windows.distinct(i as u64 * windows.tenants).1,
            platforms: vec![],
            campaigns: vec![],
            target_cpa: None,
            target_roas: None,
        };
        let started = Instant::now();
        mi_query_api::dashboards::run::run(state, &principal, dashboard, &params).await?;
        engine_runs.push(started.elapsed());
    }
    let dashboard_engine_ms = median_ms(&engine_runs);

    // The /query scenario's statement(s).
    let query = Query {
        metrics: QUERY_METRICS.map(String::from).to_vec(),
        dimensions: QUERY_DIMENSIONS.map(String::from).to_vec(),
        filters: vec![],
        time: Some(time),
        having: vec![],
        order: vec![],
        limit: None,
        offset: 0,
        compare: None,
        attributes: AttributeTime::AsOf,
    };
    let plan = query.plan(&state.catalog, state.limits())?;
    for source in &plan.sources {
        let (sql, binds) = engine.compile(&plan, source, Some(time));
        statements.push(time_sql(("query", source.source, "current"), sql, binds).await?);
    }
    let mut answers = Vec::new();
    for i in 0..reps {
        let mut query = query.clone();
        query.time = Some(windows.distinct(i as u64 * windows.tenants).1);
        let started = Instant::now();
        state.answer(&principal, &query).await?;
        answers.push(started.elapsed());
    }
    let query_engine_ms = median_ms(&answers);

    let sums = |query: bool| {
        let these: Vec<&Statement> = statements
            .iter()
            .filter(|s| s.widget != "-" && (s.widget == "query") == query)
            .collect();
        json!({
            "statements": these.len(),
            "server_ms": these.iter().map(|s| s.server_ms).sum::<f64>(),
            "fresh_ms": these.iter().map(|s| s.fresh_ms).sum::<f64>(),
            "pooled_ms": these.iter().map(|s| s.pooled_ms).sum::<f64>(),
        })
    };
    Ok(json!({
        "tenant": tenant.as_str(),
        "window": { "start": time.start, "end": time.end },
        "reps": reps,
        "statements": statements,
        "dashboard": { "sql": sums(false), "engine_ms": dashboard_engine_ms },
        "query": { "sql": sums(true), "engine_ms": query_engine_ms },
    }))
}

fn print_profile(profile: &Value, http_p50: &BTreeMap<Kind, f64>) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    println!(
        "\nprofile of the uncached paths (tenant {}, {} .. {}, one request at a time, medians of {}):",
        s(&profile["tenant"]),
        s(&profile["window"]["start"]),
        s(&profile["window"]["end"]),
        profile["reps"]
    );
    println!(
        "  {:<14} {:<5} {:<9} {:>7} {:>10} {:>10} {:>10}",
        "widget", "src", "period", "groups", "server ms", "fresh ms", "pooled ms"
    );
    println!(
        "  (server: ClickHouse's own elapsed time; fresh: round trip on a new connection; pooled: through the API's clickhouse client)"
    );
    for st in profile["statements"].as_array().into_iter().flatten() {
        println!(
            "  {:<14} {:<5} {:<9} {:>7} {:>10.1} {:>10.1} {:>10.1}",
            s(&st["widget"]),
            s(&st["source"]),
            s(&st["period"]),
            st["groups"],
            f(&st["server_ms"]),
            f(&st["fresh_ms"]),
            f(&st["pooled_ms"])
        );
    }
    for (kind, key) in [(Kind::Dashboard, "dashboard"), (Kind::Query, "query")] {
        let part = &profile[key];
        let sql = &part["sql"];
        println!(
            "  {}: {} statement(s), summed (the dev ClickHouse runs one at a time): server {:.1} ms, fresh {:.1} ms, pooled {:.1} ms",
            kind.label(),
            sql["statements"],
            f(&sql["server_ms"]),
            f(&sql["fresh_ms"]),
            f(&sql["pooled_ms"])
        );
        let engine = f(&part["engine_ms"]);
        print!("    engine in-process (no HTTP, no cache) {engine:.1} ms");
        if let Some(http) = http_p50.get(&kind) {
            print!(
                "; over HTTP with 1 client p50 {http:.1} ms (+{:.1} ms: HTTP, auth, rate limit, cache miss and store, JSON, gzip)",
                http - engine
            );
        }
        println!();
    }
    println!(
        "  SQL as the engine generates it (bound values spliced in, as the clickhouse crate sends them):"
    );
    for st in profile["statements"].as_array().into_iter().flatten() {
        if st["widget"] == "-" {
            continue;
        }
        println!(
            "  -- {} / {} / {}\n  {}",
            s(&st["widget"]),
            s(&st["source"]),
            s(&st["period"]),
            s(&st["sql"]).replace('\n', "\n  ")
        );
    }
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

fn header() {
    println!(
        "  {:<20} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "scenario",
        "clients",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "load"
    );
}

fn line(m: &Measured) {
    println!(
        "  {:<20} {:>7} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>6.1}{}",
        m.scenario,
        m.clients,
        m.requests,
        m.rps,
        m.p50_ms,
        m.p95_ms,
        m.p99_ms,
        m.max_ms,
        m.errors,
        m.load_1m.unwrap_or(f64::NAN),
        if m.cache_mismatches > 0 {
            format!(
                "  ({} answers with an unexpected metadata.cached: for the cached scenario, computed because the cache lookup failed, e.g. Redis timed out)",
                m.cache_mismatches
            )
        } else {
            String::new()
        }
    );
}

/// The median over repetitions of one figure, with its spread.
fn spread_of(runs: &[&Measured], f: fn(&Measured) -> f64) -> Option<Spread> {
    Spread::of(&runs.iter().map(|m| f(m)).collect::<Vec<_>>())
}

fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({ "min": s.min, "median": s.median, "max": s.max }),
    )
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    what: String,
    target: String,
    measured_ms: Option<f64>,
    met: Option<bool>,
    note: String,
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.clients > 0, "--clients must be positive");
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    ensure!(args.reps > 0, "--reps must be positive");
    mi_common::telemetry::init(&LogSettings {
        // Failed requests are counted and sampled by the bench, and answers the cache should have
        // served are counted as unexpected `metadata.cached`: a log line per 5xx or per Redis
        // timeout would bury the table.
        filter: "warn,tower_http=off,mi_query_api::store=error".into(),
        format: LogFormat::Pretty,
    });
    let infra: Settings = mi_common::settings::load(None)?;
    let admin = clients::clickhouse(&infra.clickhouse).with_database("default");
    let (database, reused) = match &args.reuse_db {
        Some(name) => {
            ensure!(
                mi_sink::migrate::valid_database(name),
                "--reuse-db {name:?} is not a valid database name"
            );
            (name.clone(), true)
        }
        None => (
            format!(
                "mi_apibench_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            false,
        ),
    };
    let secrets = std::env::temp_dir().join(format!("mi-api-bench-{}", std::process::id()));
    let result = run(&args, &infra, &admin, &database, &secrets).await;
    let _ = std::fs::remove_dir_all(&secrets);
    if !reused && !args.keep {
        match admin
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
        {
            Ok(()) => println!("dropped the scratch database {database} (--keep keeps it)"),
            Err(e) => eprintln!("could not drop the scratch database {database}: {e}"),
        }
    } else {
        println!(
            "database {database} kept: measure again with --reuse-db {database}; drop it with `DROP DATABASE {database}`"
        );
    }
    result
}

async fn run(
    args: &Args,
    infra: &Settings,
    admin: &clickhouse::Client,
    database: &str,
    secrets: &Path,
) -> anyhow::Result<()> {
    println!(
        "api-bench: {} fact rows for {} tenants over {} days to {}, {} clients, {} s per scenario, {} repetition(s)",
        args.rows, args.tenants, args.days, args.end_date, args.clients, args.seconds, args.reps
    );

    // 1. Data.
    let db = admin.clone().with_database(database);
    let existing: u64 = admin
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'fact_ad_performance'",
        )
        .bind(database)
        .fetch_one()
        .await
        .context("is the stack up? (dev/stack up)")?;
    let has_rows = existing > 0
        && db
            .query("SELECT count() FROM fact_ad_performance")
            .fetch_one::<u64>()
            .await?
            > 0;
    let load_figures = if has_rows {
        // Migrations added since the database was loaded (idempotent: applies only new ones).
        let applied = mi_sink::migrate::migrate(admin, database).await?;
        println!("data: reusing {database} (migrations applied now: {applied:?})");
        None
    } else {
        let layout = Layout::new(args.rows, args.tenants, args.days, args.end_date)?;
        let applied = mi_sink::migrate::migrate(admin, database).await?;
        println!(
            "data: {database} created (migrations {applied:?}); loading {} + {} + {} rows (ads, GA4, conversions) for {} tenants, {} .. {}",
            layout.ads_total,
            layout.ga_total,
            layout.conv_total,
            layout.tenants,
            layout.start,
            args.end_date
        );
        Some(load(&db, &layout, args.batch_rows, args.optimize).await?)
    };
    let warehouse = inspect(&db, database).await?;
    println!(
        "  {} fact rows ({:?}), {} tenants, {} .. {}, active parts {:?}",
        warehouse.fact_rows(),
        warehouse.rows,
        warehouse.tenants.len(),
        warehouse.first,
        warehouse.last,
        warehouse.active_parts
    );
    ensure!(
        !warehouse.tenants.is_empty(),
        "{database} has no ad facts to query"
    );
    let tenants: Vec<TenantId> = warehouse
        .tenants
        .iter()
        .map(|t| TenantId::new(t.as_str()))
        .collect::<Result<_, _>>()?;

    // 2. Server.
    std::fs::create_dir_all(secrets)?;
    let jwt_secret = secrets.join("jwt");
    std::fs::write(
        &jwt_secret,
        format!("api-bench-{}", uuid::Uuid::new_v4().simple()),
    )?;
    let mut infra = infra.clone();
    infra.clickhouse.database = database.to_owned();
    infra.clickhouse.tenant_secret = Some("api-bench-tenant-master-secret".to_owned().into());
    let settings = ApiSettings {
        infra,
        api: ApiSection {
            auth: AuthSettings {
                secret: Some(SecretRef::File(jwt_secret)),
                access_ttl_secs: 24 * 3600,
                ..Default::default()
            },
            // High enough never to answer 429: the limiter still runs (one Redis script per
            // request), as in production.
            rate_limit: u32::MAX,
            ..Default::default()
        },
    };
    let state = AppState::new(settings)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = mi_query_api::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the API server stopped: {e}");
        }
    });
    let tokens = tenants
        .iter()
        .map(|t| state.auth.mint_access("api-bench", t, Role::Analyst))
        .collect::<Result<Vec<_>, _>>()?;
    // Earlier runs (other databases, same tenant names) may have left answers in Redis.
    for t in &tenants {
        state.cache.invalidate(t).await;
    }
    let http = reqwest::Client::builder()
        .gzip(true)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.clients + 8)
        .timeout(Duration::from_secs(120))
        .build()?;
    let windows = Windows::new(warehouse.first, warehouse.last, tenants.len())?;
    let ctx = Arc::new(Ctx {
        http,
        base: base.clone(),
        tokens,
        windows,
    });
    println!(
        "server: {base} (in-process router, database {database}); cached range {} .. {}; uncached windows of {WINDOW_DAYS}+ days starting {} .. {}",
        windows.fixed.start,
        windows.fixed.end,
        windows.first_start,
        windows.first_start + Days::new(windows.starts - 1)
    );

    // 3. Load.
    let mut plan: Vec<(Kind, usize)> = Vec::new();
    let mut kinds = args.scenarios.clone();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        if kind != Kind::Cached && args.clients != 1 {
            plan.push((kind, 1));
        }
        plan.push((kind, args.clients));
    }
    println!(
        "closed loop: each client sends its next request when its previous answer arrived; uncached requests each ask a (tenant, window) no earlier request asked; load = the machine's 1-minute load average at the end of the scenario ({} cores)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut runs: Vec<Measured> = Vec::new();
    for rep in 1..=args.reps {
        println!("\nrepetition {rep}/{}:", args.reps);
        header();
        for &(kind, clients) in &plan {
            if kind == Kind::Cached {
                warm(&ctx, tenants.len()).await?;
            } else {
                // Every uncached request asks a question no earlier request of this run asked;
                // bumping the generations also retires answers of earlier repetitions.
                for t in &tenants {
                    state.cache.invalidate(t).await;
                }
            }
            let m = scenario(&ctx, kind, clients, args.seconds, rep).await?;
            line(&m);
            if let Some(e) = &m.first_error {
                println!("    first error: {e}");
            }
            runs.push(m);
        }
    }

    // Summary across repetitions.
    println!(
        "\nsummary ({} repetition(s); figures are medians across them{}):",
        args.reps,
        if args.reps > 1 { ", spread below" } else { "" }
    );
    header();
    let mut summary = Vec::new();
    let mut medians: BTreeMap<(Kind, usize), (f64, f64, f64)> = BTreeMap::new();
    for &(kind, clients) in &plan {
        let these: Vec<&Measured> = runs
            .iter()
            .filter(|m| m.kind == kind && m.clients == clients)
            .collect();
        let med = |f: fn(&Measured) -> f64| spread_of(&these, f).map_or(f64::NAN, |s| s.median);
        let row = Measured {
            rep: 0,
            kind,
            scenario: kind.label(),
            clients,
            requests: these.iter().map(|m| m.requests).sum(),
            ok: these.iter().map(|m| m.ok).sum(),
            errors: these.iter().map(|m| m.errors).sum(),
            cache_mismatches: these.iter().map(|m| m.cache_mismatches).sum(),
            seconds: these.iter().map(|m| m.seconds).sum(),
            rps: med(|m| m.rps),
            p50_ms: med(|m| m.p50_ms),
            p95_ms: med(|m| m.p95_ms),
            p99_ms: med(|m| m.p99_ms),
            max_ms: med(|m| m.max_ms),
            mean_ms: med(|m| m.mean_ms),
            mean_body_bytes: med(|m| m.mean_body_bytes),
            load_1m: spread_of(&these, |m| m.load_1m.unwrap_or(f64::NAN)).map(|s| s.median),
            first_error: these.iter().find_map(|m| m.first_error.clone()),
        };
        line(&row);
        medians.insert((kind, clients), (row.p50_ms, row.p95_ms, row.p99_ms));
        summary.push(json!({
            "kind": kind,
            "scenario": kind.label(),
            "clients": clients,
            "reps": these.len(),
            "requests": row.requests,
            "errors": row.errors,
            "cache_mismatches": row.cache_mismatches,
            "rps": spread_json(spread_of(&these, |m| m.rps)),
            "p50_ms": spread_json(spread_of(&these, |m| m.p50_ms)),
            "p95_ms": spread_json(spread_of(&these, |m| m.p95_ms)),
            "p99_ms": spread_json(spread_of(&these, |m| m.p99_ms)),
            "max_ms": spread_json(spread_of(&these, |m| m.max_ms)),
            "mean_body_bytes": row.mean_body_bytes,
        }));
    }
    if args.reps > 1 {
        println!("  spread across repetitions (ms, median (min, max)):");
        for &(kind, clients) in &plan {
            let these: Vec<&Measured> = runs
                .iter()
                .filter(|m| m.kind == kind && m.clients == clients)
                .collect();
            let show = |f: fn(&Measured) -> f64| {
                spread_of(&these, f).map_or("-".to_owned(), |s| {
                    format!("{:.1} ({:.1}, {:.1})", s.median, s.min, s.max)
                })
            };
            println!(
                "  {:<20} {:>4} clients: p50 {}, p95 {}, p99 {}",
                kind.label(),
                clients,
                show(|m| m.p50_ms),
                show(|m| m.p95_ms),
                show(|m| m.p99_ms)
            );
        }
    }

    // 4. Targets.
    let fact_rows = warehouse.fact_rows();
    let mut targets = Vec::new();
    if let Some(&(_, _, p99)) = medians.get(&(Kind::Cached, args.clients)) {
        targets.push(Target {
            what: format!("cached dashboard, {} clients", args.clients),
            target: format!("p99 < {CACHED_P99_TARGET_MS} ms at {CACHED_TARGET_CLIENTS} clients"),
            measured_ms: Some(p99),
            met: (args.clients == CACHED_TARGET_CLIENTS).then_some(p99 < CACHED_P99_TARGET_MS),
            note: if args.clients == CACHED_TARGET_CLIENTS {
                String::new()
            } else {
                format!("not comparable: measured at {} clients", args.clients)
            },
        });
    }
    let mut client_counts = vec![1, args.clients];
    client_counts.dedup();
    for kind in [Kind::Dashboard, Kind::Query] {
        for &clients in &client_counts {
            let Some(&(_, p95, _)) = medians.get(&(kind, clients)) else {
                continue;
            };
            let mut notes = Vec::new();
            if kind == Kind::Query {
                notes.push("the target is the dashboard's; shown for reference".to_owned());
            }
            if fact_rows < UNCACHED_TARGET_ROWS {
                notes.push(format!("not comparable: {fact_rows} fact rows"));
            }
            targets.push(Target {
                what: format!(
                    "{}, {clients} client{}",
                    kind.label(),
                    if clients == 1 { "" } else { "s" }
                ),
                target: format!(
                    "p95 < {UNCACHED_P95_TARGET_MS} ms on {UNCACHED_TARGET_ROWS} fact rows"
                ),
                measured_ms: Some(p95),
                met: (fact_rows >= UNCACHED_TARGET_ROWS && kind == Kind::Dashboard)
                    .then_some(p95 < UNCACHED_P95_TARGET_MS),
                note: notes.join("; "),
            });
        }
    }
    println!("\ntargets (DESIGN §9):");
    for t in &targets {
        println!(
            "  {:<32} {:<38} measured {:>9.1} ms  {}{}",
            t.what,
            t.target,
            t.measured_ms.unwrap_or(f64::NAN),
            match t.met {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "-",
            },
            if t.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", t.note)
            }
        );
    }

    // 5. Profile.
    let profile = if args.profile_reps > 0
        && (args.scenarios.contains(&Kind::Dashboard) || args.scenarios.contains(&Kind::Query))
    {
        // The figures above are the point; a failed profile must not lose them.
        match profile(&state, &tenants[0], &windows, args.profile_reps).await {
            Ok(profile) => {
                let http_p50: BTreeMap<Kind, f64> = [Kind::Dashboard, Kind::Query]
                    .into_iter()
                    .filter_map(|k| medians.get(&(k, 1)).map(|m| (k, m.0)))
                    .collect();
                print_profile(&profile, &http_p50);
                profile
            }
            Err(e) => {
                println!(
                    "
profile failed: {e:#}"
                );
                json!({ "error": format!("{e:#}") })
            }
        }
    } else {
        Value::Null
    };

    let result = json!({
        "bench": "api-bench",
        "finished_at": Utc::now(),
        "config": {
            "rows": args.rows,
            "tenants": args.tenants,
            "days": args.days,
            "clients": args.clients,
            "seconds": args.seconds,
            "reps": args.reps,
            "dashboard": DASHBOARD,
            "query": query_body(windows.fixed),
            "uncached_method": "every request asks a (tenant, date window) no earlier request of the run asked: tenants in turn, then 30-day windows at every start in the data, then longer windows; cache generations bumped before each uncached scenario",
            "closed_loop": true,
        },
        "warehouse": warehouse,
        "load": load_figures,
        "runs": runs,
        "summary": summary,
        "targets": targets,
        "profile": profile,
    });
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("\nresult written to {}", args.out.display());
    Ok(())
}
