//! The query API over a warehouse loaded by the real pipeline from the emulator, with three
//! tenants side by side:
//!
//! - every dashboard number equals an independent computation from the emulator's ground truth;
//! - no request authenticated for one tenant ever returns another's data, whatever ids it names;
//! - JWT attacks are 401s on the real endpoints;
//! - hostile input is a clear 4xx in our JSON error shape, never a 500 and never SQL;
//! - roles gate CSV exports; gzip, request ids and CORS work;
//! - the cache hits, is invalidated per tenant and never crosses tenants; without Redis the API
//!   answers uncached; the rate limit is per tenant.
//!
//! The pipeline load (~15 s) happens once per test binary, in a shared fixture ([`world`]); every
//! test builds its own `AppState` (so Redis connections belong to its own runtime) and its own
//! emulator for the ground truth (the emulator is deterministic).
//!
//! Tests that check many things collect every failure and report them together, so that one API
//! bug does not hide the next.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Datelike, NaiveDate};
use mi_common::{Platform, TenantId};
use mi_query_api::auth::Role;
use mi_query_api::settings::{ApiSection, ApiSettings, AuthSettings};
use mi_query_api::{AppState, router};
use mi_tests::pipeline::{self, Loaded};
use mi_tests::{Emulator, secret_file, settings, tenant, today, unique};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tower::ServiceExt;

const JWT_SECRET: &str = "it-jwt-secret-of-at-least-32-bytes!!";
/// Days loaded, ending yesterday (2026-10-14): 2026-10-01 ..= 2026-10-14, so that the window
/// below and its previous period both lie inside the data.
const BACKFILL_DAYS: u32 = 14;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, d).expect("date")
}

/// The fixed window every ground-truth check uses, and its previous period.
fn window() -> (NaiveDate, NaiveDate) {
    (day(8), day(14))
}

fn previous() -> (NaiveDate, NaiveDate) {
    (day(1), day(7))
}

const DASHBOARDS: [&str; 25] = [
    "exec-summary",
    "spend-pacing",
    "channel-mix",
    "kpi-trends",
    "goal-tracking",
    "search-campaigns",
    "search-ad-groups",
    "search-ads",
    "search-devices",
    "search-wasted-spend",
    "social-campaigns",
    "social-ad-sets",
    "social-creatives",
    "social-video",
    "social-reach-frequency",
    "traffic-acquisition",
    "engagement",
    "ecommerce",
    "campaign-traffic",
    "key-events",
    "cross-channel-roas",
    "funnel",
    "conversion-breakdown",
    "campaign-changes",
    "anomalies",
];

// ------------------------------------------------------------------------------------------
// The shared fixture: three tenants loaded once through the real pipeline.
// ------------------------------------------------------------------------------------------

struct World {
    loaded: Loaded,
    tenants: Vec<TenantId>,
    /// What each tenant owns, read as admin straight from ClickHouse.
    ids: BTreeMap<TenantId, Identifiers>,
    /// Row count of every table of the scratch database right after the load.
    counts: BTreeMap<String, u64>,
}

/// Identifiers that must never reach another tenant.
#[derive(Debug, Default, Clone)]
struct Identifiers {
    accounts: BTreeSet<String>,
    campaign_ids: BTreeSet<String>,
    ad_group_ids: BTreeSet<String>,
    ad_ids: BTreeSet<String>,
    /// Campaign, ad group and ad names, and GA4 UTM campaigns.
    names: BTreeSet<String>,
}

impl Identifiers {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.accounts
            .iter()
            .chain(&self.campaign_ids)
            .chain(&self.ad_group_ids)
            .chain(&self.ad_ids)
            .chain(&self.names)
    }
}

impl World {
    /// Everything of the other tenants that `tenant` must never see: their tenant ids, and their
    /// identifiers that `tenant` does not happen to share (generated names can coincide).
    fn foreign(&self, tenant: &TenantId) -> Foreign {
        let own: BTreeSet<&String> = self
            .ids
            .get(tenant)
            .map(|i| i.all().collect())
            .unwrap_or_default();
        let mut out = Foreign::default();
        for (other, ids) in &self.ids {
            if other == tenant {
                continue;
            }
            out.contained.insert(other.to_string());
            for a in &ids.accounts {
                if !own.contains(a) {
                    out.contained.insert(a.clone());
                }
            }
            for v in ids.all() {
                if !own.contains(v) {
                    out.exact.insert(v.clone());
                }
            }
        }
        out
    }

    /// Campaign ids of the other tenants, none of which `tenant` has.
    fn foreign_campaigns(&self, tenant: &TenantId) -> Vec<String> {
        let own = &self.ids[tenant].campaign_ids;
        self.ids
            .iter()
            .filter(|(t, _)| *t != tenant)
            .flat_map(|(_, ids)| ids.campaign_ids.iter())
            .filter(|c| !own.contains(*c))
            .cloned()
            .collect()
    }

    fn account(&self, tenant: &TenantId, platform: Platform) -> String {
        self.loaded
            .account(tenant, platform)
            .unwrap_or_else(|| panic!("{tenant} has no {platform} account"))
    }

    fn admin(&self) -> clickhouse::Client {
        mi_common::clients::clickhouse(&settings().clickhouse).with_database(&self.loaded.database)
    }
}

#[derive(Debug, Default)]
struct Foreign {
    /// Must not appear anywhere in any string (distinctive: tenant and account ids).
    contained: BTreeSet<String>,
    /// Must not be any string of the body (ids, names).
    exact: BTreeSet<String>,
}

impl Foreign {
    /// Every foreign identifier found in `body` (strings and object keys, recursively), except
    /// in the echo of the caller's own request (`query`, a dashboard's `filters`).
    fn leaks(&self, body: &Value) -> Vec<String> {
        let mut body = body.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("query");
            o.remove("filters");
        }
        let mut strings = Vec::new();
        collect_strings(&body, &mut strings);
        let mut found = BTreeSet::new();
        for s in strings {
            if self.exact.contains(s) {
                found.insert(s.to_owned());
            }
            for c in &self.contained {
                if s.contains(c.as_str()) {
                    found.insert(c.clone());
                }
            }
        }
        found.into_iter().collect()
    }
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k);
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

static WORLD: OnceCell<World> = OnceCell::const_new();

/// The tests of this file that use [`world`]: the last one to finish drops the scratch database
/// (kept when any failed, to look into; kept too when a filter runs only some of them).
const TESTS: usize = 9;
static FINISHED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicBool = AtomicBool::new(false);

/// Held by each test; counts it finished (or failed) when dropped.
struct Finished(&'static World);

impl Drop for Finished {
    fn drop(&mut self) {
        if std::thread::panicking() {
            FAILED.store(true, Ordering::SeqCst);
        }
        if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 < TESTS {
            return;
        }
        let database = self.0.loaded.database.clone();
        if FAILED.load(Ordering::SeqCst) {
            eprintln!("a test failed: scratch database {database} kept");
            return;
        }
        // Outside the test's runtime, which is being dropped or blocked on this.
        let admin = self.0.admin();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(admin.query(&format!("DROP DATABASE {database}")).execute())
                        .map_err(anyhow::Error::from)
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the scratch database: {dropped:?}");
        }
    }
}

/// The loaded warehouse, shared by every test of this binary (loaded by the first to ask).
async fn world() -> (&'static World, Finished) {
    let w = WORLD
        .get_or_init(|| async {
            load_world()
                .await
                .expect("the pipeline loads three tenants")
        })
        .await;
    (w, Finished(w))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Ident {
    tenant: String,
    kind: String,
    value: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TableCount {
    name: String,
    n: u64,
}

async fn load_world() -> anyhow::Result<World> {
    let started = std::time::Instant::now();
    let emulator = Emulator::start(today()).await?;
    let loaded = pipeline::load(
        &emulator,
        vec![tenant(71)?, tenant(72)?, tenant(73)?],
        BACKFILL_DAYS,
    )
    .await?;
    eprintln!("fixture: pipeline loaded in {:?}", started.elapsed());
    let tenants: Vec<TenantId> = loaded.tenants.iter().map(|t| t.id.clone()).collect();
    let ch = mi_common::clients::clickhouse(&settings().clickhouse).with_database(&loaded.database);
    let db = &loaded.database;
    let sql = format!(
        "SELECT toString(tenant_id) AS tenant, 'account' AS kind, account_id AS value FROM {db}.fact_ad_performance GROUP BY tenant, value
         UNION ALL SELECT toString(tenant_id), 'account', account_id FROM {db}.fact_ga_sessions GROUP BY tenant_id, account_id
         UNION ALL SELECT toString(tenant_id), 'name', campaign FROM {db}.fact_ga_sessions GROUP BY tenant_id, campaign
         UNION ALL SELECT toString(tenant_id), 'account', account_id FROM {db}.dim_campaigns GROUP BY tenant_id, account_id
         UNION ALL SELECT toString(tenant_id), 'campaign_id', campaign_id FROM {db}.dim_campaigns GROUP BY tenant_id, campaign_id
         UNION ALL SELECT toString(tenant_id), 'name', name FROM {db}.dim_campaigns GROUP BY tenant_id, name
         UNION ALL SELECT toString(tenant_id), 'ad_group_id', ad_group_id FROM {db}.dim_ad_groups GROUP BY tenant_id, ad_group_id
         UNION ALL SELECT toString(tenant_id), 'name', name FROM {db}.dim_ad_groups GROUP BY tenant_id, name
         UNION ALL SELECT toString(tenant_id), 'ad_id', ad_id FROM {db}.dim_ads GROUP BY tenant_id, ad_id
         UNION ALL SELECT toString(tenant_id), 'name', name FROM {db}.dim_ads GROUP BY tenant_id, name"
    );
    let mut ids: BTreeMap<TenantId, Identifiers> = tenants
        .iter()
        .map(|t| (t.clone(), Identifiers::default()))
        .collect();
    for row in ch.query(&sql).fetch_all::<Ident>().await? {
        // A pipeline running alongside (another test binary) may have put a few records of
        // its tenants here too: more tenants whose identifiers must not leak.
        let entry = ids.entry(TenantId::new(row.tenant.clone())?).or_default();
        // Empty strings (no UTM campaign, …) identify nothing.
        if row.value.is_empty() || row.value.starts_with('(') {
            continue;
        }
        let set = match row.kind.as_str() {
            "account" => &mut entry.accounts,
            "campaign_id" => &mut entry.campaign_ids,
            "ad_group_id" => &mut entry.ad_group_ids,
            "ad_id" => &mut entry.ad_ids,
            _ => &mut entry.names,
        };
        set.insert(row.value);
    }
    for t in &tenants {
        let i = &ids[t];
        anyhow::ensure!(
            i.accounts.len() == 3 && !i.campaign_ids.is_empty() && !i.ad_ids.is_empty(),
            "{t}: {i:?}"
        );
    }
    let counts = table_counts(&ch, db).await?;
    Ok(World {
        loaded,
        tenants,
        ids,
        counts,
    })
}

async fn table_counts(ch: &clickhouse::Client, db: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    #[derive(Debug, clickhouse::Row, Deserialize)]
    struct Name {
        name: String,
    }
    let names = ch
        .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
        .bind(db)
        .fetch_all::<Name>()
        .await?;
    let mut out = BTreeMap::new();
    for Name { name } in names {
        let n = ch
            .query(&format!(
                "SELECT '{name}' AS name, count() AS n FROM {db}.`{name}`"
            ))
            .fetch_one::<TableCount>()
            .await?;
        out.insert(n.name, n.n);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The API, driven in-process through its real router.
// ------------------------------------------------------------------------------------------

struct Api {
    app: axum::Router,
    state: AppState,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `None` when the body is our JSON error shape with a code and a non-empty message.
    fn error_shape_problem(&self) -> Option<String> {
        let code = self.body["error"]["code"].as_str().unwrap_or("");
        let message = self.body["error"]["message"].as_str().unwrap_or("");
        if code.is_empty() || message.is_empty() {
            return Some(format!(
                "not the JSON error shape (content-type {:?}): {:?}",
                self.header("content-type"),
                String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(200)])
            ));
        }
        None
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Api {
    fn new(database: &str, tweak: impl FnOnce(&mut ApiSettings)) -> anyhow::Result<Self> {
        let mut infra = settings();
        infra.clickhouse.database = database.to_owned();
        infra.clickhouse.tenant_secret = Some("it-tenant-master-secret".to_owned().into());
        let mut settings = ApiSettings {
            infra,
            api: ApiSection {
                auth: AuthSettings {
                    // A file per instance: tests run in parallel.
                    secret: Some(secret_file(&unique("jwt"), JWT_SECRET)?),
                    ..Default::default()
                },
                rate_limit: 1_000_000,
                ..Default::default()
            },
        };
        tweak(&mut settings);
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

    async fn get(&self, token: &str, uri: &str) -> Resp {
        self.send(get_req(token, uri)).await
    }

    async fn post(&self, token: &str, uri: &str, body: &Value) -> Resp {
        self.send(post_req(token, uri, body.to_string(), "application/json"))
            .await
    }

    async fn send(&self, request: Request<Body>) -> Resp {
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body")
            .to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            body,
        }
    }

    /// A dashboard over `from..=to`, which must answer 200.
    async fn dashboard(&self, token: &str, id: &str, from: NaiveDate, to: NaiveDate) -> Value {
        let r = self
            .get(
                token,
                &format!("/api/v1/dashboards/{id}?start_date={from}&end_date={to}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.body);
        r.body
    }
}

fn get_req(token: &str, uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

fn post_req(token: &str, uri: &str, body: String, content_type: &str) -> Request<Body> {
    let mut builder = Request::post(uri).header("authorization", format!("Bearer {token}"));
    if !content_type.is_empty() {
        builder = builder.header("content-type", content_type);
    }
    builder.body(Body::from(body)).expect("request")
}

/// Percent-encodes everything but unreserved characters (query values and path segments).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn widget<'a>(dashboard: &'a Value, id: &str) -> &'a Value {
    dashboard["widgets"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("no widget {id} in {}", dashboard["dashboard_id"]))
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

// ------------------------------------------------------------------------------------------
// Ground truth and the metric definitions, computed independently of the API.
// ------------------------------------------------------------------------------------------

/// Ad-platform sums (integers; money in micros) as the emulator reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Ads {
    impressions: u64,
    clicks: u64,
    cost_micros: u64,
    conversions: u64,
    conversion_value_micros: u64,
    video_views: u64,
    engagements: u64,
    reach: u64,
}

impl Ads {
    fn from(v: &Value) -> Self {
        let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("truth {k}: {v}"));
        Self {
            impressions: u("impressions"),
            clicks: u("clicks"),
            cost_micros: u("cost_micros"),
            conversions: u("conversions"),
            conversion_value_micros: u("conversion_value_micros"),
            video_views: u("video_views"),
            engagements: u("engagements"),
            reach: u("reach"),
        }
    }

    fn add(self, o: Self) -> Self {
        Self {
            impressions: self.impressions + o.impressions,
            clicks: self.clicks + o.clicks,
            cost_micros: self.cost_micros + o.cost_micros,
            conversions: self.conversions + o.conversions,
            conversion_value_micros: self.conversion_value_micros + o.conversion_value_micros,
            video_views: self.video_views + o.video_views,
            engagements: self.engagements + o.engagements,
            reach: self.reach + o.reach,
        }
    }
}

/// GA4 sums as the emulator reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Ga {
    sessions: u64,
    engaged_sessions: u64,
    screen_page_views: u64,
    engagement_seconds: u64,
    transactions: u64,
    purchase_revenue_micros: u64,
    key_events: u64,
}

impl Ga {
    fn from(v: &Value) -> Self {
        let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("truth {k}: {v}"));
        Self {
            sessions: u("sessions"),
            engaged_sessions: u("engaged_sessions"),
            screen_page_views: u("screen_page_views"),
            engagement_seconds: u("engagement_seconds"),
            transactions: u("transactions"),
            purchase_revenue_micros: u("purchase_revenue_micros"),
            key_events: u("key_events"),
        }
    }
}

/// One tenant's truth over a date range.
struct Truth {
    google: Ads,
    meta: Ads,
    ga: Ga,
    google_days: BTreeMap<String, Ads>,
    meta_days: BTreeMap<String, Ads>,
    ga_days: BTreeMap<String, Ga>,
    /// Current daily budgets of every campaign, in micros.
    budget_micros: u64,
    /// The currencies of the two ad accounts, and of all three accounts.
    ads_currencies: BTreeSet<String>,
    currencies: BTreeSet<String>,
    /// Every campaign's channel (Google channel type, Meta objective) and every name it had.
    campaigns: BTreeMap<String, (String, BTreeSet<String>)>,
}

impl Truth {
    fn ads(&self) -> Ads {
        self.google.add(self.meta)
    }

    /// Both ad platforms per day, only days with rows (the APIs omit days without impressions).
    fn ads_days(&self) -> BTreeMap<String, Ads> {
        let mut out: BTreeMap<String, Ads> = BTreeMap::new();
        for (d, a) in self.google_days.iter().chain(&self.meta_days) {
            let e = out.entry(d.clone()).or_default();
            *e = e.add(*a);
        }
        out.retain(|_, a| a.impressions > 0);
        out
    }
}

async fn truth(
    emulator: &Emulator,
    w: &World,
    tenant: &TenantId,
    (from, to): (NaiveDate, NaiveDate),
) -> anyhow::Result<Truth> {
    let get = |p: Platform| {
        let account = w.account(tenant, p);
        async move { emulator.truth(p, &account, from, to).await }
    };
    let (g, m, ga) = tokio::try_join!(
        get(Platform::GoogleAds),
        get(Platform::MetaAds),
        get(Platform::Ga4)
    )?;
    let days_ads = |t: &Value| -> BTreeMap<String, Ads> {
        rows(&t["days"])
            .iter()
            .filter(|d| d["rows"].as_u64().unwrap_or(0) > 0)
            .map(|d| (d["date"].as_str().unwrap_or("").to_owned(), Ads::from(d)))
            .collect()
    };
    let mut budget_micros = 0;
    let mut campaigns = BTreeMap::new();
    for (t, channel, name) in [
        (&g, "campaign.advertising_channel_type", "campaign.name"),
        (&m, "objective", "name"),
    ] {
        for c in rows(&t["entities"]["campaigns"]) {
            let history = rows(&c["history"]);
            let names = history
                .iter()
                .filter_map(|v| v["attributes"][name].as_str().map(str::to_owned))
                .collect();
            let channel = history
                .last()
                .and_then(|v| v["attributes"][channel].as_str())
                .unwrap_or("")
                .to_owned();
            campaigns.insert(c["id"].as_str().unwrap_or("").to_owned(), (channel, names));
        }
    }
    for c in rows(&g["entities"]["campaigns"]) {
        let last = rows(&c["history"]).last().expect("a version");
        let b = &last["attributes"]["campaign_budget.amount_micros"];
        budget_micros += b.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    }
    for c in rows(&m["entities"]["campaigns"]) {
        let last = rows(&c["history"]).last().expect("a version");
        let b = &last["attributes"]["daily_budget"];
        budget_micros += b.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 10_000;
    }
    let currency = |t: &Value| t["currency"].as_str().unwrap_or("").to_owned();
    let ads_currencies: BTreeSet<String> = [currency(&g), currency(&m)].into();
    let currencies = [currency(&g), currency(&m), currency(&ga)].into();
    Ok(Truth {
        ads_currencies,
        currencies,
        google: Ads::from(&g["totals"]),
        meta: Ads::from(&m["totals"]),
        ga: Ga::from(&ga["totals"]),
        google_days: days_ads(&g),
        meta_days: days_ads(&m),
        ga_days: rows(&ga["days"])
            .iter()
            .filter(|d| d["rows"].as_u64().unwrap_or(0) > 0)
            .map(|d| (d["date"].as_str().unwrap_or("").to_owned(), Ga::from(d)))
            .collect(),
        budget_micros,
        campaigns,
    })
}

/// Money as ClickHouse computes it from micros (`sum(micros) / 1e6`, in f64).
fn amount(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Money as the API shows it: rounded to the micro-unit.
fn money(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The catalog's ratio metrics, as documented: numerator / denominator × scale, null on 0.
const RATIOS: [(&str, &str, &str, f64); 18] = [
    ("ctr", "clicks", "impressions", 1.0),
    ("cpc", "spend", "clicks", 1.0),
    ("cpm", "spend", "impressions", 1000.0),
    ("cpa", "spend", "conversions", 1.0),
    ("roas", "conversion_value", "spend", 1.0),
    ("conversion_rate", "conversions", "clicks", 1.0),
    ("frequency", "impressions", "reach", 1.0),
    ("video_view_rate", "video_views", "impressions", 1.0),
    ("engagement_rate_ads", "engagements", "impressions", 1.0),
    ("engagement_rate", "engaged_sessions", "sessions", 1.0),
    ("pages_per_session", "page_views", "sessions", 1.0),
    ("avg_session_duration", "session_duration", "sessions", 1.0),
    ("ecommerce_conversion_rate", "transactions", "sessions", 1.0),
    ("average_order_value", "revenue", "transactions", 1.0),
    ("key_event_rate", "key_events", "sessions", 1.0),
    ("ga_roas", "revenue", "spend", 1.0),
    ("cost_per_session", "spend", "sessions", 1.0),
    ("click_to_session_rate", "sessions", "clicks", 1.0),
];

/// Metrics in the account currency (shown rounded to micros).
const MONEY: [&str; 8] = [
    "spend",
    "conversion_value",
    "revenue",
    "cpc",
    "cpm",
    "cpa",
    "average_order_value",
    "cost_per_session",
];

fn base(metric: &str, a: &Ads, g: &Ga) -> f64 {
    match metric {
        "impressions" => a.impressions as f64,
        "clicks" => a.clicks as f64,
        "spend" => amount(a.cost_micros),
        "conversions" => a.conversions as f64,
        "conversion_value" => amount(a.conversion_value_micros),
        "video_views" => a.video_views as f64,
        "engagements" => a.engagements as f64,
        "reach" => a.reach as f64,
        "sessions" => g.sessions as f64,
        "engaged_sessions" => g.engaged_sessions as f64,
        "page_views" => g.screen_page_views as f64,
        // The producer maps GA4 userEngagementDuration (the truth's engagement_seconds).
        "session_duration" => g.engagement_seconds as f64,
        "transactions" => g.transactions as f64,
        "revenue" => amount(g.purchase_revenue_micros),
        "key_events" => g.key_events as f64,
        other => panic!("no base metric {other}"),
    }
}

/// A metric's exact value from sums, before display rounding.
fn raw(metric: &str, a: &Ads, g: &Ga) -> Option<f64> {
    match RATIOS.iter().find(|r| r.0 == metric) {
        Some((_, n, d, scale)) => {
            let (n, d) = (base(n, a, g), base(d, a, g));
            (d != 0.0).then(|| n / d * scale).filter(|r| r.is_finite())
        }
        None => Some(base(metric, a, g)),
    }
}

/// A metric as the API must show it.
fn shown(metric: &str, a: &Ads, g: &Ga) -> Option<f64> {
    raw(metric, a, g).map(|v| if MONEY.contains(&metric) { money(v) } else { v })
}

/// Relative change as documented: (now − before) / |before|, null when before is 0.
fn change(metric: &str, now: (&Ads, &Ga), before: (&Ads, &Ga)) -> Option<f64> {
    let n = raw(metric, now.0, now.1)?;
    let b = raw(metric, before.0, before.1)?;
    (b != 0.0).then(|| (n - b) / b.abs())
}

/// Collected mismatches, reported together at the end.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn num(&mut self, what: &str, got: &Value, want: Option<f64>) {
        let ok = match want {
            None => got.is_null(),
            Some(w) => got.as_f64() == Some(w),
        };
        if !ok {
            self.0.push(format!("{what}: got {got}, want {want:?}"));
        }
    }

    /// For values derived by summing rounded floats, whose addition order is not part of the
    /// contract (rolling averages of money).
    fn close(&mut self, what: &str, got: &Value, want: f64) {
        let ok = got
            .as_f64()
            .is_some_and(|g| (g - want).abs() <= 1e-12 * want.abs().max(1.0));
        if !ok {
            self.0.push(format!("{what}: got {got}, want ≈{want}"));
        }
    }

    fn that(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// Every metric of `values` (an object) against the truth sums.
    fn metrics(&mut self, what: &str, values: &Value, metrics: &[&str], a: &Ads, g: &Ga) {
        for m in metrics {
            self.num(&format!("{what}.{m}"), &values[*m], shown(m, a, g));
        }
    }

    fn changes(
        &mut self,
        what: &str,
        compare: &Value,
        metrics: &[&str],
        now: (&Ads, &Ga),
        before: (&Ads, &Ga),
    ) {
        for m in metrics {
            self.num(
                &format!("{what}.compare.totals.{m}"),
                &compare["totals"][*m],
                shown(m, before.0, before.1),
            );
            self.num(
                &format!("{what}.compare.change.{m}"),
                &compare["change"][*m],
                change(m, now, before),
            );
        }
    }

    fn finish(self, name: &str) {
        assert!(
            self.0.is_empty(),
            "{name}: {} failed checks:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

// ------------------------------------------------------------------------------------------
// 1. Ground truth
// ------------------------------------------------------------------------------------------

const ADS_KPIS: [&str; 9] = [
    "spend",
    "impressions",
    "clicks",
    "conversions",
    "conversion_value",
    "ctr",
    "cpc",
    "cpa",
    "roas",
];

/// Every checked dashboard number of every tenant equals the emulator's truth of that tenant's
/// own accounts over a fixed window — which also proves that the other tenants' data (loaded
/// alongside) never adds to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_numbers_equal_the_emulators_ground_truth() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let emulator = Emulator::start(today()).await?;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let (from, to) = window();
    let mut c = Checks::default();
    let mut spends = BTreeSet::new();
    let mut search_spend = 0;
    for tenant in &w.tenants {
        let t = truth(&emulator, w, tenant, window()).await?;
        let p = truth(&emulator, w, tenant, previous()).await?;
        let mtd = truth(&emulator, w, tenant, (day(1), to)).await?;
        spends.insert(t.ads().cost_micros);
        let (ads, ga) = (t.ads(), t.ga);
        let (pads, pga) = (p.ads(), p.ga);
        let none = Ga::default();
        let no_ads = Ads::default();
        let token = api.token(tenant, Role::Analyst);
        let ads_days = t.ads_days();
        c.that(ads_days.len() == 7 && t.ga_days.len() == 7, || {
            format!("{tenant}: the window should have 7 days of data in the truth")
        });

        // exec-summary: KPIs and website KPIs against the previous period, daily series, platforms.
        let d = api.dashboard(&token, "exec-summary", from, to).await;
        let kpis = widget(&d, "kpis");
        let what = format!("{tenant} exec-summary.kpis");
        c.metrics(&what, &kpis["totals"], &ADS_KPIS, &ads, &none);
        c.that(d["summary"] == kpis["totals"], || {
            format!("{what}: summary is not the KPI totals")
        });
        c.that(
            kpis["compare"]["time"]["start"] == json!(day(1))
                && kpis["compare"]["time"]["end"] == json!(day(7)),
            || format!("{what}: previous period {}", kpis["compare"]["time"]),
        );
        c.changes(
            &what,
            &kpis["compare"],
            &ADS_KPIS,
            (&ads, &none),
            (&pads, &none),
        );
        let web = ["sessions", "revenue", "transactions", "engagement_rate"];
        let what = format!("{tenant} exec-summary.web-kpis");
        c.metrics(&what, &widget(&d, "web-kpis")["totals"], &web, &no_ads, &ga);
        c.changes(
            &what,
            &widget(&d, "web-kpis")["compare"],
            &web,
            (&no_ads, &ga),
            (&no_ads, &pga),
        );
        let daily = widget(&d, "daily");
        check_days(
            &mut c,
            &format!("{tenant} exec-summary.daily"),
            &daily["rows"],
            &["spend", "clicks", "conversions"],
            &ads_days,
            &BTreeMap::new(),
        );
        c.that(d["time_series"] == daily["rows"], || {
            format!("{tenant} exec-summary: time_series is not the daily widget")
        });
        let by_platform = [
            "spend",
            "impressions",
            "clicks",
            "conversions",
            "ctr",
            "cpa",
            "roas",
        ];
        check_platforms(
            &mut c,
            &format!("{tenant} exec-summary.by-platform"),
            &widget(&d, "by-platform")["rows"],
            &by_platform,
            &t,
        );

        // channel-mix: platform rows, their share of spend, and the previous period's totals.
        let d = api.dashboard(&token, "channel-mix", from, to).await;
        let all = [
            "spend",
            "impressions",
            "clicks",
            "conversions",
            "conversion_value",
            "ctr",
            "cpc",
            "cpm",
            "cpa",
            "roas",
        ];
        let bp = widget(&d, "by-platform");
        check_platforms(
            &mut c,
            &format!("{tenant} channel-mix.by-platform"),
            &bp["rows"],
            &all,
            &t,
        );
        for m in ["impressions", "clicks", "conversions"] {
            c.num(
                &format!("{tenant} channel-mix.by-platform.compare.totals.{m}"),
                &bp["compare"]["totals"][m],
                raw(m, &pads, &none),
            );
        }
        c.that(
            bp["compare"]["totals"]["spend"]
                .as_f64()
                .map(|s| (s * 1e6).round() as u64)
                == Some(pads.cost_micros),
            || {
                format!(
                    "{tenant} channel-mix previous spend {} vs {} micros",
                    bp["compare"]["totals"]["spend"], pads.cost_micros
                )
            },
        );
        let share_rows = rows(&widget(&d, "spend-share")["rows"]);
        let total: f64 = share_rows.iter().filter_map(|r| r["spend"].as_f64()).sum();
        c.that(share_rows.len() == 2, || {
            format!(
                "{tenant} channel-mix.spend-share: {} rows",
                share_rows.len()
            )
        });
        for r in share_rows {
            let platform = r["platform"].as_str().unwrap_or("");
            let a = if platform == "google_ads" {
                &t.google
            } else {
                &t.meta
            };
            c.num(
                &format!("{tenant} channel-mix.spend-share.{platform}.spend"),
                &r["spend"],
                shown("spend", a, &none),
            );
            c.num(
                &format!("{tenant} channel-mix.spend-share.{platform}.spend_share"),
                &r["spend_share"],
                Some(money(amount(a.cost_micros)) / total),
            );
        }

        // Web analytics KPIs against GA4's truth.
        let d = api.dashboard(&token, "traffic-acquisition", from, to).await;
        let m = [
            "sessions",
            "engaged_sessions",
            "engagement_rate",
            "key_events",
            "revenue",
        ];
        let what = format!("{tenant} traffic-acquisition.kpis");
        c.metrics(&what, &widget(&d, "kpis")["totals"], &m, &no_ads, &ga);
        c.changes(
            &what,
            &widget(&d, "kpis")["compare"],
            &m,
            (&no_ads, &ga),
            (&no_ads, &pga),
        );
        let d = api.dashboard(&token, "engagement", from, to).await;
        let m = [
            "sessions",
            "engaged_sessions",
            "page_views",
            "session_duration",
            "engagement_rate",
            "pages_per_session",
            "avg_session_duration",
        ];
        let what = format!("{tenant} engagement.kpis");
        c.metrics(&what, &widget(&d, "kpis")["totals"], &m, &no_ads, &ga);
        c.changes(
            &what,
            &widget(&d, "kpis")["compare"],
            &m,
            (&no_ads, &ga),
            (&no_ads, &pga),
        );
        check_days(
            &mut c,
            &format!("{tenant} engagement.daily"),
            &widget(&d, "daily")["rows"],
            &["sessions", "engaged_sessions", "engagement_rate"],
            &BTreeMap::new(),
            &t.ga_days,
        );
        let d = api.dashboard(&token, "ecommerce", from, to).await;
        let m = [
            "transactions",
            "revenue",
            "sessions",
            "ecommerce_conversion_rate",
            "average_order_value",
        ];
        c.metrics(
            &format!("{tenant} ecommerce.kpis"),
            &widget(&d, "kpis")["totals"],
            &m,
            &no_ads,
            &ga,
        );
        check_days(
            &mut c,
            &format!("{tenant} ecommerce.daily"),
            &widget(&d, "daily")["rows"],
            &[
                "revenue",
                "transactions",
                "sessions",
                "ecommerce_conversion_rate",
            ],
            &BTreeMap::new(),
            &t.ga_days,
        );
        let d = api.dashboard(&token, "key-events", from, to).await;
        let m = ["key_events", "sessions", "key_event_rate"];
        c.metrics(
            &format!("{tenant} key-events.kpis"),
            &widget(&d, "kpis")["totals"],
            &m,
            &no_ads,
            &ga,
        );
        check_days(
            &mut c,
            &format!("{tenant} key-events.daily"),
            &widget(&d, "daily")["rows"],
            &m,
            &BTreeMap::new(),
            &t.ga_days,
        );

        // Weekly (weeks start on Monday, clipped to the range) and monthly grains.
        let mut weeks: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for (platform, days) in [("google_ads", &t.google_days), ("meta_ads", &t.meta_days)] {
            for (date, a) in days.iter().filter(|(_, a)| a.impressions > 0) {
                let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")?;
                let monday = d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()));
                *weeks.entry((monday.to_string(), platform)).or_default() += a.cost_micros;
            }
        }
        let weekly = rows(
            &widget(
                &api.dashboard(&token, "channel-mix", from, to).await,
                "weekly",
            )["rows"],
        )
        .to_vec();
        let got: BTreeMap<(String, &str), f64> = weekly
            .iter()
            .map(|r| {
                let platform = if r["platform"] == "google_ads" {
                    "google_ads"
                } else {
                    "meta_ads"
                };
                (
                    (r["date"].as_str().unwrap_or("").to_owned(), platform),
                    r["spend"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        let want: BTreeMap<(String, &str), f64> = weeks
            .iter()
            .map(|(k, v)| (k.clone(), money(amount(*v))))
            .collect();
        c.that(got == want && weekly.len() == want.len(), || {
            format!("{tenant} channel-mix.weekly: {got:?}, want {want:?}")
        });
        let d = api.dashboard(&token, "kpi-trends", from, to).await;
        let monthly = rows(&widget(&d, "monthly")["rows"]);
        c.that(
            monthly.len() == 1 && monthly[0]["date"] == "2026-10-01",
            || format!("{tenant} kpi-trends.monthly: {monthly:?}"),
        );
        c.metrics(
            &format!("{tenant} kpi-trends.monthly"),
            &monthly[0],
            &["spend", "clicks", "conversions", "cpa", "roas"],
            &ads,
            &none,
        );

        // A platform filter narrows the ad widgets and says which widgets it could not narrow.
        let r = api
            .get(&token, &format!("/api/v1/dashboards/exec-summary?start_date={from}&end_date={to}&platforms[]=meta_ads"))
            .await;
        c.metrics(
            &format!("{tenant} exec-summary(meta_ads).kpis"),
            &widget(&r.body, "kpis")["totals"],
            &ADS_KPIS,
            &t.meta,
            &none,
        );
        let web_kpis = widget(&r.body, "web-kpis");
        c.that(
            web_kpis["filters_not_applied"] == json!(["platform"]),
            || {
                format!(
                    "{tenant} exec-summary(meta_ads).web-kpis: filters_not_applied {}",
                    web_kpis["filters_not_applied"]
                )
            },
        );
        c.metrics(
            &format!("{tenant} exec-summary(meta_ads).web-kpis"),
            &web_kpis["totals"],
            &web,
            &no_ads,
            &ga,
        );

        // kpi-trends: daily values and their 7-day averages (ratios from 7-day sums).
        let d = api.dashboard(&token, "kpi-trends", from, to).await;
        let daily = widget(&d, "daily");
        let m = [
            "spend",
            "impressions",
            "clicks",
            "conversions",
            "conversion_value",
            "ctr",
            "cpa",
            "roas",
        ];
        check_days(
            &mut c,
            &format!("{tenant} kpi-trends.daily"),
            &daily["rows"],
            &m,
            &ads_days,
            &BTreeMap::new(),
        );
        check_rolling(
            &mut c,
            &format!("{tenant} kpi-trends.daily"),
            &daily["rows"],
            &ads_days,
        );
        let sessions = widget(&d, "sessions");
        check_days(
            &mut c,
            &format!("{tenant} kpi-trends.sessions"),
            &sessions["rows"],
            &["sessions", "revenue"],
            &BTreeMap::new(),
            &t.ga_days,
        );
        for r in rows(&sessions["rows"]) {
            let date = r["date"].as_str().unwrap_or("");
            let days: Vec<&Ga> = t
                .ga_days
                .iter()
                .filter(|(d, _)| within_7(d, date))
                .map(|(_, g)| g)
                .collect();
            let n = days.len() as f64;
            c.num(
                &format!("{tenant} kpi-trends.sessions.{date}.sessions_avg_7d"),
                &r["sessions_avg_7d"],
                Some(days.iter().map(|g| g.sessions).sum::<u64>() as f64 / n),
            );
            c.close(
                &format!("{tenant} kpi-trends.sessions.{date}.revenue_avg_7d"),
                &r["revenue_avg_7d"],
                days.iter()
                    .map(|g| money(amount(g.purchase_revenue_micros)))
                    .sum::<f64>()
                    / n,
            );
        }

        // funnel: impressions → clicks → sessions → key events → transactions.
        let d = api.dashboard(&token, "funnel", from, to).await;
        let steps = rows(&widget(&d, "funnel")["steps"]);
        let names = [
            "impressions",
            "clicks",
            "sessions",
            "key_events",
            "transactions",
        ];
        c.that(steps.len() == names.len(), || {
            format!("{tenant} funnel: {} steps", steps.len())
        });
        let mut before: Option<f64> = None;
        for (step, name) in steps.iter().zip(names) {
            let v = raw(name, &ads, &ga).unwrap_or(f64::NAN);
            c.that(step["step"] == name, || {
                format!(
                    "{tenant} funnel: step {} where {name} expected",
                    step["step"]
                )
            });
            c.num(
                &format!("{tenant} funnel.{name}.value"),
                &step["value"],
                Some(v),
            );
            c.num(
                &format!("{tenant} funnel.{name}.rate_from_previous"),
                &step["rate_from_previous"],
                before.map(|b| v / b),
            );
            before = Some(v);
        }
        check_days(
            &mut c,
            &format!("{tenant} funnel.daily"),
            &widget(&d, "daily")["rows"],
            &[
                "impressions",
                "clicks",
                "sessions",
                "key_events",
                "click_to_session_rate",
            ],
            &ads_days,
            &t.ga_days,
        );

        // cross-channel-roas: GA4 revenue over ad spend.
        let d = api.dashboard(&token, "cross-channel-roas", from, to).await;
        let m = ["spend", "revenue", "ga_roas", "conversion_value", "roas"];
        let what = format!("{tenant} cross-channel-roas.kpis");
        c.metrics(&what, &widget(&d, "kpis")["totals"], &m, &ads, &ga);
        c.changes(
            &what,
            &widget(&d, "kpis")["compare"],
            &m,
            (&ads, &ga),
            (&pads, &pga),
        );
        check_days(
            &mut c,
            &format!("{tenant} cross-channel-roas.daily"),
            &widget(&d, "daily")["rows"],
            &["spend", "revenue", "ga_roas"],
            &ads_days,
            &t.ga_days,
        );

        // Paid social: Meta only.
        let d = api.dashboard(&token, "social-campaigns", from, to).await;
        let m = [
            "spend",
            "impressions",
            "reach",
            "clicks",
            "conversions",
            "ctr",
            "cpm",
            "cpa",
            "roas",
        ];
        let what = format!("{tenant} social-campaigns.kpis");
        c.metrics(&what, &widget(&d, "kpis")["totals"], &m, &t.meta, &none);
        c.changes(
            &what,
            &widget(&d, "kpis")["compare"],
            &m,
            (&t.meta, &none),
            (&p.meta, &none),
        );
        check_days(
            &mut c,
            &format!("{tenant} social-campaigns.daily"),
            &widget(&d, "daily")["rows"],
            &["spend", "clicks", "conversions"],
            &t.meta_days,
            &BTreeMap::new(),
        );
        let d = api
            .dashboard(&token, "social-reach-frequency", from, to)
            .await;
        c.metrics(
            &format!("{tenant} social-reach-frequency.kpis"),
            &widget(&d, "kpis")["totals"],
            &["reach", "impressions", "frequency", "cpm", "spend"],
            &t.meta,
            &none,
        );
        let d = api.dashboard(&token, "social-video", from, to).await;
        c.metrics(
            &format!("{tenant} social-video.kpis"),
            &widget(&d, "kpis")["totals"],
            &["video_views", "impressions", "video_view_rate", "spend"],
            &t.meta,
            &none,
        );

        // goal-tracking: actual CPA and ROAS against the spec's targets and overridden ones.
        let d = api.dashboard(&token, "goal-tracking", from, to).await;
        let targets = widget(&d, "targets");
        c.metrics(
            &format!("{tenant} goal-tracking.targets"),
            &targets["totals"],
            &["spend", "conversions", "conversion_value", "cpa", "roas"],
            &ads,
            &none,
        );
        check_targets(
            &mut c,
            &format!("{tenant} goal-tracking"),
            &targets["targets"],
            &ads,
            50.0,
            3.0,
        );
        check_platforms(
            &mut c,
            &format!("{tenant} goal-tracking.by-platform"),
            &widget(&d, "by-platform")["rows"],
            &["spend", "conversions", "conversion_value", "cpa", "roas"],
            &t,
        );
        let r = api
            .get(&token, &format!("/api/v1/dashboards/goal-tracking?start_date={from}&end_date={to}&target_cpa=20&target_roas=4.5"))
            .await;
        c.that(r.status == StatusCode::OK, || {
            format!("{tenant} goal-tracking with targets: {}", r.status)
        });
        check_targets(
            &mut c,
            &format!("{tenant} goal-tracking(20, 4.5)"),
            &widget(&r.body, "targets")["targets"],
            &ads,
            20.0,
            4.5,
        );

        // spend-pacing: month to date (Oct 1 .. Oct 14) against current daily budgets.
        let d = api.dashboard(&token, "spend-pacing", from, to).await;
        let pacing = &widget(&d, "pacing")["totals"];
        let spend = money(amount(mtd.ads().cost_micros));
        c.num(
            &format!("{tenant} spend-pacing.spend"),
            &pacing["spend"],
            Some(spend),
        );
        c.num(
            &format!("{tenant} spend-pacing.forecast_spend"),
            &pacing["forecast_spend"],
            Some(spend / 14.0 * 31.0),
        );
        c.num(
            &format!("{tenant} spend-pacing.daily_budget"),
            &pacing["daily_budget"],
            Some(money(amount(t.budget_micros))),
        );
        c.num(
            &format!("{tenant} spend-pacing.month_budget"),
            &pacing["month_budget"],
            Some(money(amount(t.budget_micros)) * 31.0),
        );
        check_days(
            &mut c,
            &format!("{tenant} spend-pacing.daily"),
            &widget(&d, "daily")["rows"],
            &["spend"],
            &ads_days,
            &BTreeMap::new(),
        );

        // Campaign attributes as of each fact's date (the default): every ad row of the window
        // belongs to a campaign the warehouse knows, so it has that campaign's name and channel.
        check_campaign_attributes(&mut c, &api, &token, tenant, &t).await;
        // search-campaigns: Google's SEARCH campaigns (channel from the truth's entities), their
        // spend summed from the warehouse's facts independently of the API's joins.
        let search: Vec<&String> = t
            .campaigns
            .iter()
            .filter(|(_, (ch, _))| ch == "SEARCH")
            .map(|(id, _)| id)
            .collect();
        let micros = w
            .admin()
            .query(&format!(
                "SELECT toInt64(sum(cost_micros)) AS micros FROM {}.fact_ad_performance FINAL \
                 WHERE tenant_id = ? AND platform = 'google_ads' AND has(?, campaign_id) AND date BETWEEN ? AND ?",
                w.loaded.database
            ))
            .bind(tenant.as_str())
            .bind(&search)
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_one::<Micros>()
            .await?
            .micros;
        let d = api.dashboard(&token, "search-campaigns", from, to).await;
        let spend = &widget(&d, "kpis")["totals"]["spend"];
        search_spend += micros;
        c.that(spend.as_f64().map(|s| (s * 1e6).round() as i64) == Some(micros), || {
            format!("{tenant} search-campaigns.kpis.spend: got {spend}, want {micros} micros over {} SEARCH campaigns", search.len())
        });
        for r in rows(
            &widget(
                &api.dashboard(&token, "exec-summary", from, to).await,
                "top-campaigns",
            )["rows"],
        ) {
            let id = r["campaign_id"].as_str().unwrap_or("");
            let name = r["campaign"].as_str().unwrap_or("");
            c.that(t.campaigns.get(id).is_some_and(|(_, names)| names.contains(name)), || {
                format!("{tenant} exec-summary.top-campaigns: campaign {id} named {name:?}, want one of {:?}", t.campaigns.get(id).map(|x| &x.1))
            });
        }

        // conversion-breakdown: conversions by action add up to the platforms' conversions.
        let d = api
            .dashboard(&token, "conversion-breakdown", from, to)
            .await;
        c.num(
            &format!("{tenant} conversion-breakdown.kpis.action_conversions"),
            &widget(&d, "kpis")["totals"]["action_conversions"],
            Some(ads.conversions as f64),
        );

        // The unified query with a comparison, and the original plan's GET form.
        check_query_api(&mut c, &api, &token, tenant, (&t, &p), micros).await;
    }
    c.that(search_spend > 0, || {
        "no tenant has SEARCH spend: the search checks prove nothing".into()
    });
    // Three tenants with three different truths: equal numbers would not prove the fence.
    c.that(spends.len() == w.tenants.len(), || {
        format!("tenants share spend totals: {spends:?}")
    });
    c.finish("ground truth");
    Ok(())
}

/// Campaign name and channel, with the default `attributes: as_of` and with `current`, against
/// the truth's entities.
async fn check_campaign_attributes(
    c: &mut Checks,
    api: &Api,
    token: &str,
    tenant: &TenantId,
    t: &Truth,
) {
    let (from, to) = window();
    for attributes in ["as_of", "current"] {
        let body = json!({
            "metrics": ["spend"], "dimensions": ["campaign_id", "campaign", "channel_type"],
            "time": {"start": from, "end": to}, "attributes": attributes, "limit": 10000,
        });
        let r = api.post(token, "/api/v1/query", &body).await;
        let data = rows(&r.body["data"]);
        c.that(r.status == StatusCode::OK && !data.is_empty(), || {
            format!("{tenant} campaigns {attributes}: {}", r.status)
        });
        let mut wrong = Vec::new();
        for row in data {
            let id = row["campaign_id"].as_str().unwrap_or("");
            let (name, channel) = (
                row["campaign"].as_str().unwrap_or(""),
                row["channel_type"].as_str().unwrap_or(""),
            );
            let ok = t
                .campaigns
                .get(id)
                .is_some_and(|(ch, names)| ch == channel && names.contains(name));
            if !ok {
                wrong.push(format!("{id}: {name:?}/{channel:?}"));
            }
        }
        c.that(wrong.is_empty(), || {
            format!("{tenant} campaign attributes ({attributes}): {} of {} rows without their campaign's name and channel, e.g. {:?}", wrong.len(), data.len(), &wrong[..wrong.len().min(3)])
        });
    }
}

/// Rows keyed by date against per-day truth (ads and/or GA4, merged on the date as the engine
/// merges sources).
fn check_days(
    c: &mut Checks,
    what: &str,
    got: &Value,
    metrics: &[&str],
    ads: &BTreeMap<String, Ads>,
    ga: &BTreeMap<String, Ga>,
) {
    let dates: BTreeSet<&String> = ads.keys().chain(ga.keys()).collect();
    let got_dates: Vec<&str> = rows(got)
        .iter()
        .filter_map(|r| r["date"].as_str())
        .collect();
    c.that(
        got_dates
            .iter()
            .copied()
            .eq(dates.iter().map(|d| d.as_str())),
        || format!("{what}: dates {got_dates:?}, want {dates:?} in order"),
    );
    for r in rows(got) {
        let date = r["date"].as_str().unwrap_or("").to_owned();
        let a = ads.get(&date).copied().unwrap_or_default();
        let g = ga.get(&date).copied().unwrap_or_default();
        c.metrics(&format!("{what}.{date}"), r, metrics, &a, &g);
    }
}

/// Rows keyed by platform against each ad platform's truth.
fn check_platforms(c: &mut Checks, what: &str, got: &Value, metrics: &[&str], t: &Truth) {
    let got_rows = rows(got);
    let platforms: BTreeSet<&str> = got_rows
        .iter()
        .filter_map(|r| r["platform"].as_str())
        .collect();
    c.that(
        platforms == BTreeSet::from(["google_ads", "meta_ads"]) && got_rows.len() == 2,
        || format!("{what}: platforms {platforms:?}"),
    );
    for r in got_rows {
        let platform = r["platform"].as_str().unwrap_or("");
        let a = if platform == "google_ads" {
            &t.google
        } else {
            &t.meta
        };
        c.metrics(&format!("{what}.{platform}"), r, metrics, a, &Ga::default());
    }
}

/// `d` lies in the 7 days ending `end` (both ISO dates).
fn within_7(d: &str, end: &str) -> bool {
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    match (parse(d), parse(end)) {
        (Some(d), Some(e)) => d <= e && (e - d).num_days() < 7,
        _ => false,
    }
}

/// 7-day averages: base metrics are window sums over the days present, ratios come from the
/// window's summed parts (of the rows as shown, money rounded to micros).
fn check_rolling(c: &mut Checks, what: &str, got: &Value, ads: &BTreeMap<String, Ads>) {
    for r in rows(got) {
        let date = r["date"].as_str().unwrap_or("");
        let days: Vec<&Ads> = ads
            .iter()
            .filter(|(d, _)| within_7(d, date))
            .map(|(_, a)| a)
            .collect();
        let n = days.len() as f64;
        let sum = |f: fn(&Ads) -> u64| days.iter().map(|a| f(a)).sum::<u64>() as f64;
        let spend: f64 = days.iter().map(|a| money(amount(a.cost_micros))).sum();
        let value: f64 = days
            .iter()
            .map(|a| money(amount(a.conversion_value_micros)))
            .sum();
        let at = |m: &str| format!("{what}.{date}.{m}_avg_7d");
        c.num(
            &at("clicks"),
            &r["clicks_avg_7d"],
            Some(sum(|a| a.clicks) / n),
        );
        c.num(
            &at("conversions"),
            &r["conversions_avg_7d"],
            Some(sum(|a| a.conversions) / n),
        );
        c.num(
            &at("ctr"),
            &r["ctr_avg_7d"],
            Some(sum(|a| a.clicks) / sum(|a| a.impressions)),
        );
        c.close(&at("spend"), &r["spend_avg_7d"], spend / n);
        c.close(&at("cpa"), &r["cpa_avg_7d"], spend / sum(|a| a.conversions));
        c.close(&at("roas"), &r["roas_avg_7d"], value / spend);
    }
}

fn check_targets(c: &mut Checks, what: &str, targets: &Value, ads: &Ads, cpa: f64, roas: f64) {
    let none = Ga::default();
    let actual_cpa = shown("cpa", ads, &none).unwrap_or(f64::NAN);
    let actual_roas = shown("roas", ads, &none).unwrap_or(f64::NAN);
    c.num(
        &format!("{what}.cpa.actual"),
        &targets["cpa"]["actual"],
        Some(actual_cpa),
    );
    c.num(
        &format!("{what}.cpa.target"),
        &targets["cpa"]["target"],
        Some(cpa),
    );
    c.that(
        targets["cpa"]["on_target"] == json!(actual_cpa <= cpa),
        || format!("{what}.cpa.on_target: {}", targets["cpa"]),
    );
    c.num(
        &format!("{what}.roas.actual"),
        &targets["roas"]["actual"],
        Some(actual_roas),
    );
    c.num(
        &format!("{what}.roas.target"),
        &targets["roas"]["target"],
        Some(roas),
    );
    c.that(
        targets["roas"]["on_target"] == json!(actual_roas >= roas),
        || format!("{what}.roas.on_target: {}", targets["roas"]),
    );
}

/// `POST /api/v1/query` with `compare: previous_period`, rows by date and platform, and the
/// original plan's `GET /api/v1/metrics` query string answering exactly as the POST.
async fn check_query_api(
    c: &mut Checks,
    api: &Api,
    token: &str,
    tenant: &TenantId,
    (t, p): (&Truth, &Truth),
    search_micros: i64,
) {
    let (from, to) = window();
    let metrics = [
        "spend",
        "impressions",
        "clicks",
        "conversions",
        "ctr",
        "cpa",
        "sessions",
        "revenue",
        "ga_roas",
    ];
    let r = api
        .post(
            token,
            "/api/v1/query",
            &json!({"metrics": metrics, "time": {"start": from, "end": to}, "compare": "previous_period"}),
        )
        .await;
    c.that(r.status == StatusCode::OK, || {
        format!("{tenant} POST query compare: {} {}", r.status, r.body)
    });
    let what = format!("{tenant} POST /api/v1/query");
    c.metrics(&what, &r.body["totals"], &metrics, &t.ads(), &t.ga);
    c.metrics(
        &format!("{what} row"),
        &r.body["data"][0],
        &metrics,
        &t.ads(),
        &t.ga,
    );
    c.that(
        r.body["compare"]["time"] == json!({"start": day(1), "end": day(7), "grain": "day"}),
        || format!("{what}: compare.time {}", r.body["compare"]["time"]),
    );
    c.changes(
        &what,
        &r.body["compare"],
        &metrics,
        (&t.ads(), &t.ga),
        (&p.ads(), &p.ga),
    );

    // Money is never converted: the answer names every currency it adds, and warns when several.
    let currencies: BTreeSet<String> = rows(&r.body["metadata"]["currencies"])
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    c.that(currencies == t.currencies, || {
        format!("{what}: currencies {currencies:?}, want {:?}", t.currencies)
    });
    let warned = !rows(&r.body["metadata"]["warnings"]).is_empty();
    c.that(warned == (t.currencies.len() > 1), || {
        format!(
            "{what}: warnings {} for currencies {:?}",
            r.body["metadata"]["warnings"], t.currencies
        )
    });
    let r = api
        .post(token, "/api/v1/query", &json!({"metrics": ["spend"], "dimensions": ["currency"], "time": {"start": from, "end": to}}))
        .await;
    let by_currency: BTreeSet<String> = rows(&r.body["data"])
        .iter()
        .filter_map(|x| x["currency"].as_str().map(str::to_owned))
        .collect();
    c.that(
        by_currency == t.ads_currencies && rows(&r.body["metadata"]["warnings"]).is_empty(),
        || {
            format!(
                "{tenant} spend by currency: {by_currency:?} warnings {}",
                r.body["metadata"]["warnings"]
            )
        },
    );

    // Paging: a page is the slice of the whole ordered answer; total_rows counts them all.
    let all = json!({"metrics": ["spend", "clicks"], "dimensions": ["date", "platform"], "time": {"start": from, "end": to}, "order": [{"field": "clicks", "direction": "desc"}]});
    let mut page = all.clone();
    page["limit"] = json!(3);
    page["offset"] = json!(2);
    let (whole, part) = (
        api.post(token, "/api/v1/query", &all).await,
        api.post(token, "/api/v1/query", &page).await,
    );
    let slice: Vec<Value> = rows(&whole.body["data"])
        .iter()
        .skip(2)
        .take(3)
        .cloned()
        .collect();
    c.that(
        rows(&part.body["data"]) == slice.as_slice()
            && slice.len() == 3
            && part.body["total_rows"] == whole.body["total_rows"]
            && part.body["totals"] == whole.body["totals"],
        || format!("{tenant} paging: {} vs {slice:?}", part.body["data"]),
    );
    let clicks: Vec<f64> = rows(&whole.body["data"])
        .iter()
        .filter_map(|r| r["clicks"].as_f64())
        .collect();
    c.that(clicks.windows(2).all(|w| w[0] >= w[1]), || {
        format!("{tenant} order clicks desc: {clicks:?}")
    });

    // By date and platform, through GET (the original plan's form) and POST.
    let get = |filters: &str| {
        format!(
            "/api/v1/metrics?metrics[]=impressions&metrics[]=clicks&metrics[]=spend&dimensions[]=date&dimensions[]=platform\
             &start_date={from}&end_date={to}{filters}&order=spend:asc"
        )
    };
    let post = |filters: Value| {
        json!({
            "metrics": ["impressions", "clicks", "spend"],
            "dimensions": ["date", "platform"],
            "time": {"start": from, "end": to},
            "filters": filters,
            "order": [{"field": "spend", "direction": "asc"}],
        })
    };
    for (query_string, filters) in [
        (String::new(), json!([])),
        (
            format!("&filters={}", enc(r#"{"channel_type":"SEARCH"}"#)),
            json!([{"dimension": "channel_type", "op": "eq", "value": "SEARCH"}]),
        ),
    ] {
        let g = api.get(token, &get(&query_string)).await;
        // Lists may also be comma-separated or repeated plain keys.
        let commas = get(&query_string)
            .replace(
                "metrics[]=impressions&metrics[]=clicks&metrics[]=spend",
                "metrics=impressions,clicks&metrics=spend",
            )
            .replace(
                "dimensions[]=date&dimensions[]=platform",
                "dimensions=date,platform",
            );
        let g2 = api.get(token, &commas).await;
        c.that(
            g2.status == StatusCode::OK && g2.body["data"] == g.body["data"],
            || {
                format!(
                    "{tenant} GET metrics with comma lists: {} {}",
                    g2.status, g2.body["error"]
                )
            },
        );
        let q = api
            .post(token, "/api/v1/query", &post(filters.clone()))
            .await;
        c.that(
            g.status == StatusCode::OK && q.status == StatusCode::OK,
            || {
                format!(
                    "{tenant} GET metrics {filters}: {} {}, POST: {}",
                    g.status, g.body, q.status
                )
            },
        );
        for field in ["data", "totals", "total_rows", "columns", "limit", "offset"] {
            c.that(g.body[field] == q.body[field], || {
                format!(
                    "{tenant} GET metrics {filters} vs POST: {field} differs: {} vs {}",
                    g.body[field], q.body[field]
                )
            });
        }
        let data = rows(&g.body["data"]);
        let spends: Vec<f64> = data.iter().filter_map(|r| r["spend"].as_f64()).collect();
        c.that(spends.windows(2).all(|w| w[0] <= w[1]), || {
            format!("{tenant} GET metrics: not ordered by spend asc")
        });
        if filters == json!([]) {
            let expected = t.google_days.len() + t.meta_days.len();
            c.that(data.len() == expected, || {
                format!(
                    "{tenant} GET metrics by date×platform: {} rows, want {expected}",
                    data.len()
                )
            });
            for r in data {
                let date = r["date"].as_str().unwrap_or("");
                let platform = r["platform"].as_str().unwrap_or("");
                let days = if platform == "google_ads" {
                    &t.google_days
                } else {
                    &t.meta_days
                };
                let a = days.get(date).copied().unwrap_or_default();
                c.metrics(
                    &format!("{tenant} GET metrics.{date}.{platform}"),
                    r,
                    &["impressions", "clicks", "spend"],
                    &a,
                    &Ga::default(),
                );
            }
        } else {
            // SEARCH is a Google channel: Google rows only, the SEARCH campaigns' spend.
            let spend = &g.body["totals"]["spend"];
            c.that(
                data.iter().all(|r| r["platform"] == "google_ads")
                    && data.is_empty() == (search_micros == 0)
                    && spend.as_f64().map(|s| (s * 1e6).round() as i64) == Some(search_micros),
                || {
                    format!(
                        "{tenant} GET metrics SEARCH: {} rows (platforms {:?}), spend {spend}, want {search_micros} micros",
                        data.len(),
                        data.iter().filter_map(|r| r["platform"].as_str()).collect::<BTreeSet<_>>()
                    )
                },
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// 2. Tenant isolation on every endpoint
// ------------------------------------------------------------------------------------------

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Micros {
    micros: i64,
}

/// A token of one tenant never returns another's tenant id, accounts, campaigns, ad groups,
/// ads or names on any endpoint; another tenant's ids in paths are 404s, in filters, bodies and
/// dashboard parameters they select nothing; the tenant cannot be named in a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_is_fenced_to_the_tokens_tenant() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let admin = w.admin();
    let db = &w.loaded.database;
    let (from, to) = window();
    let range = format!("start_date={from}&end_date={to}");
    let mut c = Checks::default();
    for tenant in &w.tenants {
        let token = api.token(tenant, Role::Analyst);
        let foreign = w.foreign(tenant);
        let own = &w.ids[tenant];
        let scan = |c: &mut Checks, what: &str, r: &Resp| {
            c.that(r.status == StatusCode::OK, || {
                format!("{tenant} {what}: {} {}", r.status, r.body)
            });
            let leaks = foreign.leaks(&r.body);
            c.that(leaks.is_empty(), || {
                format!("{tenant} {what}: other tenants' identifiers {leaks:?}")
            });
        };

        // The unified query, at the finest grains that carry identifiers.
        for (dimensions, metrics) in [
            (
                json!([
                    "platform",
                    "account_id",
                    "campaign_id",
                    "campaign",
                    "campaign_status"
                ]),
                json!(["spend", "clicks"]),
            ),
            (
                json!([
                    "account_id",
                    "ad_group_id",
                    "ad_group",
                    "ad_id",
                    "ad",
                    "headline"
                ]),
                json!(["impressions"]),
            ),
            (
                json!(["account_id", "ga_campaign", "source", "medium"]),
                json!(["sessions"]),
            ),
            (
                json!(["platform", "account_id", "campaign", "conversion_action"]),
                json!(["action_conversions"]),
            ),
            (
                json!(["platform", "account_id", "campaign_id", "campaign"]),
                json!(["daily_budget"]),
            ),
        ] {
            let body = json!({"metrics": metrics, "dimensions": dimensions, "time": {"start": from, "end": to}, "limit": 10000});
            let r = api.post(&token, "/api/v1/query", &body).await;
            scan(&mut c, &format!("POST query {dimensions}"), &r);
            let data = rows(&r.body["data"]);
            c.that(!data.is_empty(), || {
                format!("{tenant} POST query {dimensions}: no rows")
            });
            for row in data {
                let account = row["account_id"].as_str().unwrap_or("");
                c.that(own.accounts.contains(account), || {
                    format!("{tenant} POST query {dimensions}: account {account}")
                });
                if let Some(id) = row["campaign_id"].as_str() {
                    c.that(own.campaign_ids.contains(id), || {
                        format!("{tenant} POST query: campaign {id}")
                    });
                }
            }
        }
        let r = api
            .get(&token, &format!("/api/v1/metrics?metrics[]=spend&dimensions[]=account_id&dimensions[]=campaign_id&dimensions[]=ad_id&{range}&limit=10000"))
            .await;
        scan(&mut c, "GET metrics by ad", &r);

        // Every dashboard (this is also the "all 25 answer 200 for every tenant" check).
        for id in DASHBOARDS {
            let r = api
                .get(&token, &format!("/api/v1/dashboards/{id}?{range}"))
                .await;
            scan(&mut c, &format!("dashboard {id}"), &r);
        }

        // Campaigns: the list is exactly the tenant's campaigns with spend in the range.
        let r = api
            .get(&token, &format!("/api/v1/campaigns?{range}&limit=10000"))
            .await;
        scan(&mut c, "campaigns", &r);
        let listed: BTreeSet<&str> = rows(&r.body["campaigns"])
            .iter()
            .filter_map(|x| x["campaign_id"].as_str())
            .collect();
        let expected = admin
            .query(&format!("SELECT uniqExact(platform, account_id, campaign_id) AS n FROM {db}.fact_ad_performance FINAL WHERE tenant_id = ? AND date BETWEEN ? AND ?"))
            .bind(tenant.as_str())
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_one::<Count>()
            .await?
            .n;
        c.that(
            listed.len() as u64 == expected && r.body["total_rows"] == json!(expected),
            || {
                format!(
                    "{tenant} campaigns: {} listed, total_rows {}, want {expected}",
                    listed.len(),
                    r.body["total_rows"]
                )
            },
        );
        c.that(
            listed.iter().all(|id| own.campaign_ids.contains(*id)),
            || format!("{tenant} campaigns: foreign ids listed"),
        );

        // One of its campaigns in detail: its own numbers, summed independently.
        let top = rows(&r.body["campaigns"])
            .first()
            .cloned()
            .unwrap_or(Value::Null);
        let id = top["campaign_id"].as_str().unwrap_or("").to_owned();
        let r = api
            .get(
                &token,
                &format!("/api/v1/campaigns/{}/performance?{range}", enc(&id)),
            )
            .await;
        scan(&mut c, "campaign performance", &r);
        let micros = admin
            .query(&format!("SELECT toInt64(sum(cost_micros)) AS micros FROM {db}.fact_ad_performance FINAL WHERE tenant_id = ? AND campaign_id = ? AND date BETWEEN ? AND ?"))
            .bind(tenant.as_str())
            .bind(&id)
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_one::<Micros>()
            .await?
            .micros;
        c.that(
            r.body["summary"]["spend"]
                .as_f64()
                .map(|s| (s * 1e6).round() as i64)
                == Some(micros)
                && micros > 0,
            || {
                format!(
                    "{tenant} campaign {id}: spend {} vs {micros} micros",
                    r.body["summary"]["spend"]
                )
            },
        );
        c.that(
            r.body["campaign_id"] == json!(id)
                && rows(&r.body["versions"]).iter().all(|v| {
                    own.accounts
                        .contains(v["account_id"].as_str().unwrap_or(""))
                }),
            || format!("{tenant} campaign {id}: {}", r.body["versions"]),
        );

        // Its time series adds up to its summary.
        let series: i64 = rows(&r.body["time_series"])
            .iter()
            .map(|x| (x["spend"].as_f64().unwrap_or(0.0) * 1e6).round() as i64)
            .sum();
        c.that(
            series == micros && rows(&r.body["time_series"]).len() <= 7,
            || format!("{tenant} campaign {id}: time series {series} vs {micros} micros"),
        );
        // A platform filter lists only that platform's campaigns.
        let r = api
            .get(
                &token,
                &format!("/api/v1/campaigns?{range}&platforms=meta_ads&limit=10000"),
            )
            .await;
        let listed = rows(&r.body["campaigns"]);
        c.that(
            !listed.is_empty()
                && listed.iter().all(|x| {
                    x["platform"] == "meta_ads"
                        && own
                            .campaign_ids
                            .contains(x["campaign_id"].as_str().unwrap_or(""))
                }),
            || {
                format!(
                    "{tenant} campaigns?platforms=meta_ads: {}",
                    r.body["campaigns"]
                )
            },
        );

        // Accounts: exactly its own three.
        let r = api.get(&token, "/api/v1/platforms").await;
        scan(&mut c, "platforms", &r);
        let accounts: BTreeSet<String> = rows(&r.body["platforms"])
            .iter()
            .flat_map(|p| rows(&p["accounts"]).iter())
            .filter_map(|a| a["account_id"].as_str().map(str::to_owned))
            .collect();
        c.that(accounts == own.accounts, || {
            format!("{tenant} platforms: {accounts:?} vs {:?}", own.accounts)
        });

        // Tenant-free catalogs.
        for uri in ["/api/v1/meta", "/api/v1/dashboards", "/api/v1/segments"] {
            scan(&mut c, uri, &api.get(&token, uri).await);
        }
        for s in [
            "executive",
            "paid-search",
            "paid-social",
            "web-analytics",
            "cross-channel",
        ] {
            let uri = format!("/api/v1/segments/{s}/dashboards");
            let r = api.get(&token, &uri).await;
            scan(&mut c, &uri, &r);
            c.that(rows(&r.body["dashboards"]).len() == 5, || {
                format!("{uri}: {}", r.body)
            });
        }
    }

    // Other tenants' ids, named by tenant A.
    let a = &w.tenants[0];
    let token = api.token(a, Role::Analyst);
    let foreign = w.foreign(a);
    let theirs = w.foreign_campaigns(a);
    anyhow::ensure!(theirs.len() > 10, "too few foreign campaigns to test with");
    let b = &w.tenants[1];
    let b_google = w.account(b, Platform::GoogleAds);
    let b_ga = w.account(b, Platform::Ga4);
    let b_names: Vec<&String> = w.ids[b]
        .names
        .iter()
        .filter(|n| !w.ids[a].names.contains(*n))
        .collect();
    let nothing = |c: &mut Checks, what: &str, r: &Resp, list: &str| {
        c.that(r.status == StatusCode::OK, || {
            format!("{what}: {} {}", r.status, r.body)
        });
        let leaks = foreign.leaks(&r.body);
        c.that(leaks.is_empty(), || {
            format!("{what}: other tenants' identifiers {leaks:?}")
        });
        c.that(rows(&r.body[list]).is_empty(), || {
            format!("{what}: rows {}", r.body[list])
        });
    };
    for (what, filter, dimension, metric) in [
        (
            "campaign_id in B's and C's",
            json!({"dimension": "campaign_id", "op": "in", "value": theirs}),
            "campaign_id",
            "spend",
        ),
        (
            "account_id = B's Google account",
            json!({"dimension": "account_id", "op": "eq", "value": b_google}),
            "campaign_id",
            "spend",
        ),
        (
            "account_id = B's GA4 property",
            json!({"dimension": "account_id", "op": "eq", "value": b_ga}),
            "source",
            "sessions",
        ),
        (
            "campaign_id starts with one of B's",
            json!({"dimension": "campaign_id", "op": "starts_with", "value": w.ids[b].campaign_ids.iter().next()}),
            "campaign_id",
            "clicks",
        ),
    ] {
        let body = json!({"metrics": [metric], "dimensions": [dimension], "filters": [filter], "time": {"start": from, "end": to}});
        let r = api.post(&token, "/api/v1/query", &body).await;
        nothing(&mut c, &format!("A: POST query {what}"), &r, "data");
        // Without dimensions the single total row must be zero, not B's number.
        let body =
            json!({"metrics": [metric], "filters": [filter], "time": {"start": from, "end": to}});
        let r = api.post(&token, "/api/v1/query", &body).await;
        c.num(
            &format!("A: POST query total {what}"),
            &r.body["totals"][metric],
            Some(0.0),
        );
    }
    if let Some(name) = b_names.first() {
        let body = json!({"metrics": ["spend"], "dimensions": ["campaign"], "filters": [{"dimension": "campaign", "op": "eq", "value": name}], "time": {"start": from, "end": to}});
        nothing(
            &mut c,
            "A: POST query campaign = B-only name",
            &api.post(&token, "/api/v1/query", &body).await,
            "data",
        );
    }
    let filters =
        enc(&json!({"campaign_id": theirs.iter().take(50).collect::<Vec<_>>()}).to_string());
    let r = api
        .get(
            &token,
            &format!(
                "/api/v1/metrics?metrics[]=spend&dimensions[]=campaign_id&{range}&filters={filters}"
            ),
        )
        .await;
    nothing(
        &mut c,
        "A: GET metrics filters campaign_id in B's",
        &r,
        "data",
    );
    let campaigns: String = theirs
        .iter()
        .take(200)
        .map(|id| format!("&campaigns[]={}", enc(id)))
        .collect();
    for id in DASHBOARDS {
        let r = api
            .get(
                &token,
                &format!("/api/v1/dashboards/{id}?{range}{campaigns}"),
            )
            .await;
        c.that(r.status == StatusCode::OK, || {
            format!(
                "A: dashboard {id} with B's campaigns: {} {}",
                r.status, r.body
            )
        });
        let leaks = foreign.leaks(&r.body);
        c.that(leaks.is_empty(), || {
            format!("A: dashboard {id} with B's campaigns: leaks {leaks:?}")
        });
        for wd in rows(&r.body["widgets"]) {
            // Widgets the campaign filter applies to select nothing.
            let filtered = wd["filters_not_applied"]
                .as_array()
                .is_some_and(Vec::is_empty);
            let spend = wd["totals"]["spend"].as_f64().unwrap_or(0.0);
            c.that(!filtered || spend == 0.0, || {
                format!(
                    "A: dashboard {id}.{} with B's campaigns: spend {spend}",
                    wd["id"]
                )
            });
            let has_ads_rows = rows(&wd["rows"])
                .iter()
                .any(|x| x["spend"].as_f64().unwrap_or(0.0) > 0.0);
            c.that(!filtered || !has_ads_rows, || {
                format!(
                    "A: dashboard {id}.{} with B's campaigns has spending rows",
                    wd["id"]
                )
            });
        }
    }
    for name in b_names.iter().take(3) {
        let r = api
            .get(
                &token,
                &format!("/api/v1/campaigns?{range}&search={}", enc(name)),
            )
            .await;
        c.that(r.status == StatusCode::OK, || {
            format!("A: campaigns search B's name: {}", r.status)
        });
        let ids: Vec<&str> = rows(&r.body["campaigns"])
            .iter()
            .filter_map(|x| x["campaign_id"].as_str())
            .collect();
        c.that(
            ids.iter().all(|id| w.ids[a].campaign_ids.contains(*id)),
            || format!("A: campaigns search {name}: {ids:?}"),
        );
    }
    // B's campaign in the path: exactly what a campaign that exists nowhere gets.
    let missing = api
        .get(
            &token,
            &format!("/api/v1/campaigns/404404404404/performance?{range}"),
        )
        .await;
    c.that(
        missing.status == StatusCode::NOT_FOUND && missing.code() == "not_found",
        || format!("unknown campaign: {} {}", missing.status, missing.body),
    );
    for id in theirs.iter().take(20) {
        let r = api
            .get(
                &token,
                &format!("/api/v1/campaigns/{}/performance?{range}", enc(id)),
            )
            .await;
        c.that(
            r.status == StatusCode::NOT_FOUND
                && r.code() == "not_found"
                && r.message() == format!("no campaign {id:?}")
                && r.body.as_object().map(|o| o.len()) == Some(1),
            || format!("A: B's campaign {id} in the path: {} {}", r.status, r.body),
        );
    }

    // The tenant comes from the token only: naming one is an unknown parameter or field.
    let bt = b.as_str();
    let mut named = vec![
        format!("/api/v1/metrics?metrics[]=spend&{range}&tid={bt}"),
        format!("/api/v1/metrics?metrics[]=spend&{range}&tenant_id={bt}"),
        format!("/api/v1/campaigns?{range}&tid={bt}"),
        format!(
            "/api/v1/campaigns/{}/performance?{range}&tid={bt}",
            enc(w.ids[a]
                .campaign_ids
                .iter()
                .next()
                .map_or("", |s| s.as_str()))
        ),
        format!("/api/v1/platforms?tid={bt}"),
        format!("/api/v1/meta?tid={bt}"),
        format!("/api/v1/dashboards?tid={bt}"),
        format!("/api/v1/segments?tid={bt}"),
        format!("/api/v1/segments/executive/dashboards?tid={bt}"),
    ];
    named.extend(
        DASHBOARDS
            .iter()
            .map(|id| format!("/api/v1/dashboards/{id}?{range}&tid={bt}")),
    );
    for uri in &named {
        let r = api.get(&token, uri).await;
        c.that(
            r.status == StatusCode::BAD_REQUEST
                && r.error_shape_problem().is_none()
                && (r.message().contains("tid") || r.message().contains("tenant_id")),
            || {
                format!(
                    "tid as a parameter must be a 400 naming it: GET {uri} → {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.bytes[..r.bytes.len().min(120)])
                )
            },
        );
    }
    let body = json!({"metrics": ["spend"], "time": {"start": from, "end": to}});
    let r = api
        .post(&token, &format!("/api/v1/query?tid={bt}"), &body)
        .await;
    c.that(
        r.status == StatusCode::BAD_REQUEST && r.message().contains("tid"),
        || {
            format!(
                "tid as a parameter must be a 400 naming it: POST /api/v1/query?tid=… → {} {}",
                r.status, r.body
            )
        },
    );
    let mut with_tid = body.clone();
    with_tid["tid"] = json!(bt);
    let r = api.post(&token, "/api/v1/query", &with_tid).await;
    c.that(
        r.status == StatusCode::BAD_REQUEST && r.message().contains("tid"),
        || {
            format!(
                "tid in the body must be a 400 naming it: {} {}",
                r.status, r.body
            )
        },
    );
    c.finish("isolation");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 3. JWT attacks through the real endpoints
// ------------------------------------------------------------------------------------------

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token signed with the API's real secret, with our claims but the given times.
fn forged(tenant: &TenantId, issued: u64, expires: u64) -> String {
    let claims = json!({
        "iss": "marketing-iq", "aud": "marketing-iq-api", "sub": "it-forger", "tid": tenant.as_str(),
        "role": "analyst", "kind": "access", "iat": issued, "nbf": issued, "exp": expires,
        "jti": unique("jti"),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key"),
    )
    .expect("encode")
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_401_on_the_api_endpoints() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let (a, b) = (&w.tenants[0], &w.tenants[1]);
    let (from, to) = window();
    let now = now_secs();
    let genuine = api.token(a, Role::Analyst);
    // A's genuine token with its payload rewritten to name B (signature of the original).
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    payload["tid"] = json!(b.as_str());
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&payload), parts[2]);
    let alg_none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "JWT"})),
        b64_json(&payload)
    );
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &payload,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-sufficient-length-0123456789")?,
    )?;
    // Beyond the 30 s leeway.
    let expired = forged(a, now - 7200, now - 3600);
    let attacks: [(&str, Option<String>); 6] = [
        ("no token", None),
        ("expired", Some(expired)),
        ("tampered to B", Some(tampered)),
        ("alg none", Some(alg_none)),
        ("signed with another key", Some(other_key)),
        ("garbage", Some("not.a.jwt".into())),
    ];
    let endpoints = [
        (
            "GET",
            format!("/api/v1/metrics?metrics[]=spend&start_date={from}&end_date={to}"),
        ),
        ("POST", "/api/v1/query".to_owned()),
        (
            "GET",
            format!("/api/v1/dashboards/exec-summary?start_date={from}&end_date={to}"),
        ),
        (
            "GET",
            format!("/api/v1/campaigns?start_date={from}&end_date={to}"),
        ),
        (
            "GET",
            format!(
                "/api/v1/campaigns/{}/performance",
                enc(w.ids[b]
                    .campaign_ids
                    .iter()
                    .next()
                    .map_or("", |s| s.as_str()))
            ),
        ),
        ("GET", "/api/v1/platforms".to_owned()),
        ("GET", "/api/v1/meta".to_owned()),
        ("GET", "/api/v1/dashboards".to_owned()),
        ("GET", "/api/v1/segments/executive/dashboards".to_owned()),
    ];
    let body = json!({"metrics": ["spend"], "time": {"start": from, "end": to}}).to_string();
    let mut c = Checks::default();
    // The forger's recipe is right: the same claims unexpired are accepted.
    let control = api
        .get(&forged(a, now - 60, now + 600), "/api/v1/platforms")
        .await;
    c.that(control.status == StatusCode::OK, || {
        format!("a well-formed forged token should pass: {}", control.status)
    });
    let foreign = w.foreign(a);
    for (method, uri) in &endpoints {
        for (attack, token) in &attacks {
            let mut builder = Request::builder()
                .method(*method)
                .uri(uri.as_str())
                .header("content-type", "application/json");
            if let Some(t) = token {
                builder = builder.header("authorization", format!("Bearer {t}"));
            }
            let request_body = if *method == "POST" {
                Body::from(body.clone())
            } else {
                Body::empty()
            };
            let r = api.send(builder.body(request_body)?).await;
            c.that(
                r.status == StatusCode::UNAUTHORIZED
                    && r.code() == "unauthorized"
                    && r.header("www-authenticate") == "Bearer"
                    && foreign.leaks(&r.body).is_empty(),
                || {
                    format!(
                        "{attack} on {method} {uri}: {} {} www-authenticate={:?}",
                        r.status,
                        r.body,
                        r.header("www-authenticate")
                    )
                },
            );
        }
    }
    c.finish("jwt");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 4. Hostile input
// ------------------------------------------------------------------------------------------

/// What a hostile request must get.
enum Expect {
    /// This status, our JSON error shape, and a message naming this.
    Error(StatusCode, &'static str),
    /// 200, and this list in the body is empty (a bound value that matches nothing).
    Empty(&'static str),
}

const INJECTIONS: [&str; 6] = [
    "' OR 1=1 --",
    "spend; DROP TABLE x",
    "x') UNION ALL SELECT tenant_id FROM fact_ad_performance --",
    "\u{0}",
    "日本語 ✓ \u{202e}ʇuǝds",
    "{tenant} ? ?? \\' \\\\ `",
];

/// What an error message must not contain: our SQL, the engine's errors, where it runs.
const LEAKY: [&str; 7] = [
    "DB::Exception",
    "Code: ",
    " FINAL",
    "tenant_id = ",
    "toFloat64",
    "mi_it_",
    "127.0.0.1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_a_clear_4xx_never_a_500() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let a = &w.tenants[0];
    let token = api.token(a, Role::Analyst);
    let (from, to) = window();
    let range = format!("start_date={from}&end_date={to}");
    let time = json!({"start": from, "end": to});
    let own_campaign = w.ids[a]
        .campaign_ids
        .iter()
        .next()
        .cloned()
        .unwrap_or_default();
    // Long enough to hurt, short enough for a URI (the http crate caps them at 64 KiB).
    let long = "x".repeat(20_000);
    let bad = StatusCode::BAD_REQUEST;
    let not_found = StatusCode::NOT_FOUND;
    use Expect::{Empty, Error};

    let mut posts: Vec<(String, Value, Expect)> = Vec::new();
    let mut gets: Vec<(String, String, Expect)> = Vec::new();
    for s in INJECTIONS.iter().copied().chain([long.as_str()]) {
        let short = &s[..s.len().min(20)];
        posts.push((
            format!("metric {short:?}"),
            json!({"metrics": [s], "time": time}),
            Error(bad, "metrics: unknown metric"),
        ));
        posts.push((
            format!("dimension {short:?}"),
            json!({"metrics": ["spend"], "dimensions": [s], "time": time}),
            Error(bad, "dimensions: unknown dimension"),
        ));
        posts.push((format!("filter dimension {short:?}"), json!({"metrics": ["spend"], "filters": [{"dimension": s, "op": "eq", "value": "x"}], "time": time}), Error(bad, "filters: unknown dimension")));
        posts.push((
            format!("order {short:?}"),
            json!({"metrics": ["spend"], "order": [{"field": s}], "time": time}),
            Error(bad, "order:"),
        ));
        posts.push((format!("having {short:?}"), json!({"metrics": ["spend"], "having": [{"metric": s, "op": "gt", "value": 1}], "time": time}), Error(bad, "having: unknown metric")));
        posts.push((format!("op {short:?}"), json!({"metrics": ["spend"], "filters": [{"dimension": "campaign", "op": s, "value": "x"}], "time": time}), Error(bad, "op")));
        posts.push((
            format!("time.start {short:?}"),
            json!({"metrics": ["spend"], "time": {"start": s, "end": to}}),
            Error(bad, "time"),
        ));
        posts.push((
            format!("grain {short:?}"),
            json!({"metrics": ["spend"], "time": {"start": from, "end": to, "grain": s}}),
            Error(bad, "grain"),
        ));
        posts.push((
            format!("compare {short:?}"),
            json!({"metrics": ["spend"], "time": time, "compare": s}),
            Error(bad, "compare"),
        ));
        posts.push((
            format!("attributes {short:?}"),
            json!({"metrics": ["spend"], "time": time, "attributes": s}),
            Error(bad, "attributes"),
        ));
        gets.push((
            format!("GET metric {short:?}"),
            format!("/api/v1/metrics?metrics[]={}&{range}", enc(s)),
            Error(bad, "unknown metric"),
        ));
        gets.push((
            format!("GET dimension {short:?}"),
            format!(
                "/api/v1/metrics?metrics[]=spend&dimensions[]={}&{range}",
                enc(s)
            ),
            Error(bad, "unknown dimension"),
        ));
        gets.push((
            format!("GET order {short:?}"),
            format!(
                "/api/v1/metrics?metrics[]=spend&order={}&{range}",
                enc(&format!("{s}:desc"))
            ),
            Error(bad, "order"),
        ));
        gets.push((
            format!("GET start_date {short:?}"),
            format!(
                "/api/v1/metrics?metrics[]=spend&start_date={}&end_date={to}",
                enc(s)
            ),
            Error(bad, "start_date"),
        ));
        gets.push((
            format!("GET grain {short:?}"),
            format!("/api/v1/metrics?metrics[]=spend&grain={}&{range}", enc(s)),
            Error(bad, "grain"),
        ));
        gets.push((
            format!("GET format {short:?}"),
            format!("/api/v1/metrics?metrics[]=spend&format={}&{range}", enc(s)),
            Error(bad, "format"),
        ));
        gets.push((
            format!("GET parameter name {short:?}"),
            format!("/api/v1/metrics?metrics[]=spend&{}=1&{range}", enc(s)),
            Error(bad, "unknown parameter"),
        ));
        gets.push((
            format!("dashboard id {short:?}"),
            format!(
                "/api/v1/dashboards/{}?{range}",
                enc(&format!("exec-summary{s}"))
            ),
            Error(not_found, "no dashboard"),
        ));
        gets.push((
            format!("segment id {short:?}"),
            format!(
                "/api/v1/segments/{}/dashboards",
                enc(&format!("executive{s}"))
            ),
            Error(not_found, "no segment"),
        ));
        gets.push((
            format!("campaign id {short:?}"),
            format!("/api/v1/campaigns/{}/performance?{range}", enc(s)),
            Error(not_found, "no campaign"),
        ));
        gets.push((
            format!("dashboard target_cpa {short:?}"),
            format!(
                "/api/v1/dashboards/goal-tracking?{range}&target_cpa={}",
                enc(s)
            ),
            Error(bad, "target_cpa"),
        ));
        gets.push((
            format!("dashboard csv widget {short:?}"),
            format!(
                "/api/v1/dashboards/exec-summary?{range}&format=csv&widget={}",
                enc(s)
            ),
            Error(bad, "widget"),
        ));
        gets.push((
            format!("campaigns order {short:?}"),
            format!("/api/v1/campaigns?{range}&order={}", enc(s)),
            Error(bad, "order"),
        ));
        gets.push((
            format!("campaigns end_date {short:?}"),
            format!("/api/v1/campaigns?start_date={from}&end_date={}", enc(s)),
            Error(bad, "end_date"),
        ));
        gets.push((
            format!("performance grain {short:?}"),
            format!(
                "/api/v1/campaigns/{}/performance?{range}&grain={}",
                enc(&own_campaign),
                enc(s)
            ),
            Error(bad, "grain"),
        ));
    }
    // Values are bound: hostile values are just strings that match nothing.
    let thousand = "x".repeat(1000);
    for s in INJECTIONS.iter().copied().chain([thousand.as_str()]) {
        let short = &s[..s.len().min(20)];
        for op in ["eq", "contains", "starts_with"] {
            let body = json!({"metrics": ["spend", "clicks"], "dimensions": ["campaign"], "filters": [{"dimension": "campaign", "op": op, "value": s}], "time": time});
            posts.push((format!("filter value {op} {short:?}"), body, Empty("data")));
        }
        // Still a valid query: it must answer, whatever it matches.
        let body = json!({"metrics": ["spend"], "dimensions": ["campaign"], "filters": [{"dimension": "campaign", "op": "gt", "value": s}], "time": time});
        posts.push((format!("filter value gt {short:?}"), body, Empty("")));
        posts.push((format!("filter value in {short:?}"), json!({"metrics": ["sessions"], "dimensions": ["source"], "filters": [{"dimension": "source", "op": "in", "value": [s, "zz"]}], "time": time}), Empty("data")));
        gets.push((
            format!("GET filters value {short:?}"),
            format!(
                "/api/v1/metrics?metrics[]=spend&dimensions[]=campaign&filters={}&{range}",
                enc(&json!({"campaign": s}).to_string())
            ),
            Empty("data"),
        ));
        gets.push((
            format!("dashboard platforms {short:?}"),
            format!(
                "/api/v1/dashboards/search-campaigns?{range}&platforms[]={}",
                enc(s)
            ),
            Empty("time_series"),
        ));
        gets.push((
            format!("dashboard campaigns {short:?}"),
            format!(
                "/api/v1/dashboards/exec-summary?{range}&campaigns[]={}",
                enc(s)
            ),
            Empty("time_series"),
        ));
        gets.push((
            format!("campaigns search {short:?}"),
            format!("/api/v1/campaigns?{range}&search={}", enc(s)),
            Empty("campaigns"),
        ));
        gets.push((
            format!("campaigns status {short:?}"),
            format!("/api/v1/campaigns?{range}&status={}", enc(s)),
            Empty("campaigns"),
        ));
        gets.push((
            format!("campaigns platforms {short:?}"),
            format!("/api/v1/campaigns?{range}&platforms={}", enc(s)),
            Empty("campaigns"),
        ));
    }
    // LIKE wildcards mean nothing to an equality.
    for s in ["%", "_", "%%", "\\%"] {
        let body = json!({"metrics": ["spend"], "dimensions": ["campaign"], "filters": [{"dimension": "campaign", "op": "eq", "value": s}], "time": time});
        posts.push((format!("filter value eq {s:?}"), body, Empty("data")));
    }
    posts.push(("filter value of 1001 bytes".into(), json!({"metrics": ["spend"], "filters": [{"dimension": "campaign", "op": "eq", "value": "x".repeat(1001)}], "time": time}), Error(bad, "longer than 1000")));
    posts.push(("date filter not a date".into(), json!({"metrics": ["spend"], "filters": [{"dimension": "date", "op": "eq", "value": "2026-10-08' OR 1=1"}], "time": time}), Error(bad, "not a date")));

    // Dates, ranges, limits and offsets.
    let reversed = json!({"start": to, "end": from});
    let decade = json!({"start": "2016-10-14", "end": to});
    posts.push((
        "reversed dates".into(),
        json!({"metrics": ["spend"], "time": reversed}),
        Error(bad, "reversed"),
    ));
    posts.push((
        "10-year range".into(),
        json!({"metrics": ["spend"], "time": decade}),
        Error(bad, "at most"),
    ));
    posts.push((
        "year 1900".into(),
        json!({"metrics": ["spend"], "time": {"start": "1900-01-01", "end": "1900-01-02"}}),
        Error(bad, "outside"),
    ));
    posts.push((
        "year 9999".into(),
        json!({"metrics": ["spend"], "time": {"start": "9999-12-30", "end": "9999-12-31"}}),
        Error(bad, "outside"),
    ));
    posts.push((
        "no time".into(),
        json!({"metrics": ["spend"]}),
        Error(bad, "time"),
    ));
    posts.push((
        "no metrics".into(),
        json!({"metrics": [], "time": time}),
        Error(bad, "metrics"),
    ));
    posts.push((
        "41 metrics".into(),
        json!({"metrics": vec!["spend"; 41], "time": time}),
        Error(bad, "metrics"),
    ));
    posts.push((
        "duplicate metric".into(),
        json!({"metrics": ["spend", "spend"], "time": time}),
        Error(bad, "twice"),
    ));
    posts.push((
        "ga dimension with ads metric".into(),
        json!({"metrics": ["spend"], "dimensions": ["source"], "time": time}),
        Error(bad, "not available"),
    ));
    for (limit, code) in [
        (json!(0), "limit"),
        (json!(-1), "limit"),
        (json!(1_000_000_000), "limit"),
        (json!(1e20), "limit"),
        (json!("10"), "limit"),
    ] {
        posts.push((
            format!("limit {limit}"),
            json!({"metrics": ["spend"], "time": time, "limit": limit}),
            Error(bad, code),
        ));
    }
    for offset in [json!(-1), json!(2_000_000), json!(99_999_999_999u64)] {
        posts.push((
            format!("offset {offset}"),
            json!({"metrics": ["spend"], "time": time, "offset": offset}),
            Error(bad, "offset"),
        ));
    }
    posts.push(("huge offset within bounds".into(), json!({"metrics": ["spend"], "dimensions": ["campaign"], "time": time, "offset": 1_000_000}), Empty("data")));
    posts.push(("having with a string operator".into(), json!({"metrics": ["spend"], "having": [{"metric": "spend", "op": "contains", "value": 1}], "time": time}), Error(bad, "having")));
    for (what, query) in [
        ("reversed", format!("start_date={to}&end_date={from}")),
        ("10-year", format!("start_date=2016-10-14&end_date={to}")),
        (
            "far future",
            "start_date=2099-01-01&end_date=2099-01-02".to_owned(),
        ),
        ("half a range", format!("start_date={from}")),
        (
            "impossible date",
            "start_date=2026-02-30&end_date=2026-03-01".to_owned(),
        ),
    ] {
        let expect = |fragment| Error(bad, fragment);
        let fragment = match what {
            "reversed" => "reversed",
            "10-year" => "at most",
            "far future" => "outside",
            "half a range" => "together",
            _ => "not a date",
        };
        gets.push((
            format!("GET metrics {what}"),
            format!("/api/v1/metrics?metrics[]=spend&{query}"),
            expect(fragment),
        ));
        if what != "half a range" {
            gets.push((
                format!("dashboard {what}"),
                format!("/api/v1/dashboards/exec-summary?{query}"),
                expect(fragment),
            ));
            gets.push((
                format!("campaigns {what}"),
                format!("/api/v1/campaigns?{query}"),
                expect(fragment),
            ));
            gets.push((
                format!("performance {what}"),
                format!(
                    "/api/v1/campaigns/{}/performance?{query}",
                    enc(&own_campaign)
                ),
                expect(fragment),
            ));
        }
    }
    for (param, value, fragment) in [
        ("limit", "0", "limit"),
        ("limit", "-1", "limit"),
        ("limit", "1000000000", "limit"),
        ("limit", "99999999999", "limit"),
        ("offset", "-1", "offset"),
        ("offset", "2000000", "offset"),
        ("offset", "99999999999", "offset"),
        ("compare", "next_period", "compare"),
        ("filters", "{not json", "filters"),
        ("filters", "[1,2]", "filters"),
        ("filters", r#"{"campaign": 5}"#, "filters"),
    ] {
        gets.push((
            format!("GET metrics {param}={value}"),
            format!(
                "/api/v1/metrics?metrics[]=spend&{range}&{param}={}",
                enc(value)
            ),
            Error(bad, fragment),
        ));
        if param == "limit" || param == "offset" {
            gets.push((
                format!("campaigns {param}={value}"),
                format!("/api/v1/campaigns?{range}&{param}={}", enc(value)),
                Error(bad, fragment),
            ));
        }
    }
    gets.push((
        "campaign id of 10k chars".into(),
        format!("/api/v1/campaigns/{}/performance", "9".repeat(10_000)),
        Error(not_found, "no campaign"),
    ));
    gets.push((
        "dashboard 11 platforms".into(),
        format!(
            "/api/v1/dashboards/exec-summary?{range}{}",
            (0..11)
                .map(|i| format!("&platforms[]=p{i}"))
                .collect::<String>()
        ),
        Error(bad, "at most"),
    ));
    gets.push((
        "unknown route".into(),
        "/api/v1/nothing-here".into(),
        Error(not_found, "route"),
    ));
    gets.push((
        "path not UTF-8: dashboard".into(),
        "/api/v1/dashboards/%FF%FE".into(),
        Error(bad, ""),
    ));
    gets.push((
        "path not UTF-8: campaign".into(),
        "/api/v1/campaigns/%C3%28/performance".into(),
        Error(bad, ""),
    ));
    gets.push((
        "path not UTF-8: segment".into(),
        "/api/v1/segments/%FF/dashboards".into(),
        Error(bad, ""),
    ));

    let mut c = Checks::default();
    let check = |c: &mut Checks, what: &str, r: Resp, expect: &Expect| {
        c.that(!r.status.is_server_error(), || {
            format!(
                "{what}: {} (a 5xx) {}",
                r.status,
                String::from_utf8_lossy(&r.bytes[..r.bytes.len().min(300)])
            )
        });
        match expect {
            Error(status, fragment) => {
                let shape = r.error_shape_problem();
                let message = r.message();
                c.that(
                    r.status == *status
                        && shape.is_none()
                        && message.contains(fragment)
                        // Client strings are echoed cut short (they may be huge).
                        && message.len() < 400
                        // Nothing of the warehouse behind: no SQL of ours, no engine error.
                        && !LEAKY.iter().any(|x| message.contains(x)),
                    || {
                        format!(
                            "{what}: want {status} naming {fragment:?}, got {} {}",
                            r.status,
                            shape.unwrap_or_else(|| r.body.to_string())
                        )
                    },
                );
            }
            Empty(list) => {
                c.that(r.status == StatusCode::OK, || {
                    format!("{what}: want 200, got {} {}", r.status, r.body)
                });
                if !list.is_empty() {
                    let found = &r.body[*list];
                    // A dashboard's time series is null or empty when nothing matches.
                    c.that(
                        found.is_null() && *list == "time_series"
                            || found.as_array().is_some_and(Vec::is_empty),
                        || {
                            format!(
                                "{what}: want no {list}, got {}",
                                &found.to_string()[..found.to_string().len().min(300)]
                            )
                        },
                    );
                }
            }
        }
    };
    for (what, body, expect) in &posts {
        let r = api.post(&token, "/api/v1/query", body).await;
        check(&mut c, &format!("POST {what}"), r, expect);
    }
    for (what, uri, expect) in &gets {
        let r = api.get(&token, uri).await;
        check(&mut c, what, r, expect);
    }

    // Bodies that are not a query at all.
    let raw = |body: &str, content_type: &str| {
        post_req(&token, "/api/v1/query", body.to_owned(), content_type)
    };
    for (what, request, expect) in [
        (
            "malformed JSON",
            raw("{\"metrics\": [", "application/json"),
            Error(bad, ""),
        ),
        ("empty body", raw("", "application/json"), Error(bad, "")),
        (
            "a JSON array",
            raw("[]", "application/json"),
            Error(bad, ""),
        ),
        (
            "metrics not a list",
            raw(r#"{"metrics": "spend"}"#, "application/json"),
            Error(bad, "metrics"),
        ),
        (
            "unknown field",
            raw(
                r#"{"metrics": ["spend"], "sql": "DROP TABLE x"}"#,
                "application/json",
            ),
            Error(bad, "sql"),
        ),
        (
            "wrong content type",
            raw(
                &json!({"metrics": ["spend"], "time": time}).to_string(),
                "text/plain",
            ),
            Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, ""),
        ),
        (
            "no content type",
            raw(&json!({"metrics": ["spend"], "time": time}).to_string(), ""),
            Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, ""),
        ),
    ] {
        let r = api.send(request).await;
        check(&mut c, &format!("POST {what}"), r, &expect);
    }
    // Over the 256 KiB limit, announced by Content-Length or not.
    let huge = json!({"metrics": ["spend"], "time": time, "filters": [{"dimension": "campaign", "op": "eq", "value": "y".repeat(300 * 1024)}]}).to_string();
    let mut announced = raw(&huge, "application/json");
    announced
        .headers_mut()
        .insert("content-length", huge.len().into());
    check(
        &mut c,
        "POST 300 KiB with content-length",
        api.send(announced).await,
        &Error(StatusCode::PAYLOAD_TOO_LARGE, ""),
    );
    check(
        &mut c,
        "POST 300 KiB without content-length",
        api.send(raw(&huge, "application/json")).await,
        &Error(StatusCode::PAYLOAD_TOO_LARGE, ""),
    );
    // A method the route does not have.
    let r = api.send(get_req(&token, "/api/v1/query")).await;
    check(
        &mut c,
        "GET /api/v1/query",
        r,
        &Error(StatusCode::METHOD_NOT_ALLOWED, ""),
    );
    let r = api
        .send(
            Request::delete("/api/v1/campaigns")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())?,
        )
        .await;
    check(
        &mut c,
        "DELETE /api/v1/campaigns",
        r,
        &Error(StatusCode::METHOD_NOT_ALLOWED, ""),
    );

    // Nothing was dropped, written or changed.
    let counts = table_counts(&w.admin(), &w.loaded.database).await?;
    c.that(counts == w.counts, || {
        format!("tables changed: {counts:?} vs {:?}", w.counts)
    });
    eprintln!("hostile input: {} requests", posts.len() + gets.len() + 11);
    c.finish("hostile input");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 5. Roles, CSV, gzip, request ids, CORS
// ------------------------------------------------------------------------------------------

/// A JSON value as it appears in a CSV cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_gate_csv_and_gzip_request_ids_and_cors_work() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let a = &w.tenants[0];
    let (viewer, analyst) = (api.token(a, Role::Viewer), api.token(a, Role::Analyst));
    let (from, to) = window();
    let metrics = format!(
        "/api/v1/metrics?metrics[]=spend&metrics[]=clicks&metrics[]=ctr&dimensions[]=date&dimensions[]=platform&start_date={from}&end_date={to}"
    );
    let dashboard = format!("/api/v1/dashboards/exec-summary?start_date={from}&end_date={to}");
    let body = json!({"metrics": ["spend", "clicks"], "dimensions": ["platform"], "time": {"start": from, "end": to}});
    let mut c = Checks::default();

    // Viewers look (JSON) but do not export.
    for uri in [
        format!("{metrics}&format=csv"),
        format!("{dashboard}&format=csv"),
    ] {
        let r = api.get(&viewer, &uri).await;
        c.that(
            r.status == StatusCode::FORBIDDEN
                && r.code() == "forbidden"
                && r.message().contains("analyst"),
            || format!("viewer CSV {uri}: {} {}", r.status, r.body),
        );
    }
    let r = api.post(&viewer, "/api/v1/query?format=csv", &body).await;
    c.that(
        r.status == StatusCode::FORBIDDEN && r.code() == "forbidden",
        || format!("viewer POST csv: {} {}", r.status, r.body),
    );
    let r = api.get(&viewer, &metrics).await;
    c.that(r.status == StatusCode::OK, || {
        format!("viewer JSON: {}", r.status)
    });

    // Analysts get CSV whose header and rows are the JSON answer's.
    let json_answer = api.get(&analyst, &metrics).await;
    let csv = api.get(&analyst, &format!("{metrics}&format=csv")).await;
    c.that(
        csv.status == StatusCode::OK && csv.header("content-type").starts_with("text/csv"),
        || {
            format!(
                "analyst CSV: {} {:?}",
                csv.status,
                csv.header("content-type")
            )
        },
    );
    c.that(csv.header("content-disposition").contains(".csv"), || {
        format!("CSV disposition {:?}", csv.header("content-disposition"))
    });
    let text = String::from_utf8(csv.bytes.clone())?;
    let mut lines = text.lines();
    let columns = ["date", "platform", "spend", "clicks", "ctr"];
    c.that(lines.next() == Some(columns.join(",").as_str()), || {
        format!("CSV header: {:?}", text.lines().next())
    });
    let expected: Vec<String> = rows(&json_answer.body["data"])
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|k| cell(&r[*k]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let got: Vec<&str> = lines.collect();
    c.that(!expected.is_empty() && got == expected, || {
        format!("CSV rows {got:?} vs JSON {expected:?}")
    });
    let r = api.post(&analyst, "/api/v1/query?format=csv", &body).await;
    let text = String::from_utf8_lossy(&r.bytes);
    c.that(
        r.status == StatusCode::OK
            && text.starts_with("platform,spend,clicks\n")
            && text.lines().count() == 3,
        || format!("analyst POST CSV: {} {text:?}", r.status),
    );
    // A dashboard widget's CSV: the widget's rows, every scalar column.
    let d = api.get(&analyst, &dashboard).await;
    let r = api
        .get(
            &analyst,
            &format!("{dashboard}&format=csv&widget=by-platform"),
        )
        .await;
    let text = String::from_utf8_lossy(&r.bytes).into_owned();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let widget_rows = rows(&widget(&d.body, "by-platform")["rows"]);
    let keys: BTreeSet<&str> = widget_rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    c.that(
        r.status == StatusCode::OK && header.iter().copied().collect::<BTreeSet<_>>() == keys,
        || format!("dashboard CSV header {header:?} vs {keys:?}"),
    );
    for (line, row) in lines.zip(widget_rows) {
        let want: Vec<String> = header.iter().map(|k| cell(&row[*k])).collect();
        c.that(line.split(',').eq(want.iter().map(String::as_str)), || {
            format!("dashboard CSV row {line:?} vs {want:?}")
        });
    }

    // gzip when asked, identical content.
    for uri in ["/api/v1/meta".to_owned(), dashboard.clone()] {
        let plain = api.get(&analyst, &uri).await;
        let mut request = get_req(&analyst, &uri);
        request
            .headers_mut()
            .insert("accept-encoding", "gzip".parse()?);
        let r = api.send(request).await;
        let mut unzipped = Vec::new();
        let decoded = flate2::read::GzDecoder::new(r.bytes.as_slice())
            .read_to_end(&mut unzipped)
            .is_ok();
        let mut value: Value = serde_json::from_slice(&unzipped).unwrap_or(Value::Null);
        let mut expected = plain.body.clone();
        // Timings differ between two requests.
        for v in [&mut value, &mut expected] {
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.retain(|k, _| !["cached", "cached_at", "query_time_ms"].contains(&k.as_str()));
            }
        }
        c.that(
            r.header("content-encoding") == "gzip"
                && decoded
                && value == expected
                && r.bytes.len() < plain.bytes.len(),
            || {
                format!(
                    "gzip {uri}: encoding {:?}, {} bytes vs {} plain, same content: {}",
                    r.header("content-encoding"),
                    r.bytes.len(),
                    plain.bytes.len(),
                    value == expected
                )
            },
        );
    }

    // Request ids: echoed when given (also on errors), generated when not.
    let mut request = get_req(&analyst, "/api/v1/meta");
    request
        .headers_mut()
        .insert("x-request-id", "it-request-42".parse()?);
    let r = api.send(request).await;
    c.that(r.header("x-request-id") == "it-request-42", || {
        format!("x-request-id echoed: {:?}", r.header("x-request-id"))
    });
    let mut request = get_req("bad", "/api/v1/meta");
    request
        .headers_mut()
        .insert("x-request-id", "it-request-43".parse()?);
    let r = api.send(request).await;
    c.that(
        r.status == StatusCode::UNAUTHORIZED && r.header("x-request-id") == "it-request-43",
        || format!("x-request-id on a 401: {:?}", r.header("x-request-id")),
    );
    let r = api.get(&analyst, "/api/v1/meta").await;
    c.that(
        uuid::Uuid::parse_str(r.header("x-request-id")).is_ok(),
        || format!("generated x-request-id: {:?}", r.header("x-request-id")),
    );

    // CORS: preflight answered without a token; responses carry the exposed headers.
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/api/v1/query")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(Body::empty())?;
    let r = api.send(preflight).await;
    let allow_headers = r
        .header("access-control-allow-headers")
        .to_ascii_lowercase();
    c.that(
        r.status.is_success()
            && r.header("access-control-allow-origin") == "*"
            && r.header("access-control-allow-methods").contains("POST")
            && allow_headers.contains("authorization")
            && allow_headers.contains("content-type"),
        || format!("CORS preflight: {} {:?}", r.status, r.headers),
    );
    let mut request = get_req(&analyst, "/api/v1/meta");
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse()?);
    let r = api.send(request).await;
    c.that(
        r.header("access-control-allow-origin") == "*"
            && r.header("access-control-expose-headers")
                .to_ascii_lowercase()
                .contains("x-request-id")
            && r.header("access-control-expose-headers")
                .to_ascii_lowercase()
                .contains("retry-after"),
        || format!("CORS on a response: {:?}", r.headers),
    );
    c.finish("roles, CSV, gzip, request ids, CORS");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 6. Cache and load events
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_is_invalidated_per_tenant_and_never_crosses_tenants() -> anyhow::Result<()>
{
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let (a, b) = (&w.tenants[0], &w.tenants[1]);
    let (ta, tb) = (api.token(a, Role::Analyst), api.token(b, Role::Analyst));
    let (from, to) = window();
    // A limit no other test uses: this test's requests start uncached.
    let body = json!({"metrics": ["spend", "clicks", "sessions"], "dimensions": ["date"], "time": {"start": from, "end": to}, "limit": 4321});
    let dashboard = format!(
        "/api/v1/dashboards/channel-mix?start_date={from}&end_date={to}&platforms[]=google_ads&platforms[]=meta_ads&target_roas=4.321"
    );
    let cached = |r: &Resp| r.body["metadata"]["cached"].clone();
    let strip = |r: &Resp| {
        let mut v = r.body.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.retain(|k, _| {
                !["cached", "cached_at", "query_time_ms", "engine_time_ms"].contains(&k.as_str())
            });
        }
        v
    };
    let mut c = Checks::default();
    for (what, request) in [("query", None), ("dashboard", Some(dashboard.as_str()))] {
        let call = |token: &str| {
            let token = token.to_owned();
            let api = &api;
            let body = &body;
            async move {
                match request {
                    None => api.post(&token, "/api/v1/query", body).await,
                    Some(uri) => api.get(&token, uri).await,
                }
            }
        };
        let first = call(&ta).await;
        let second = call(&ta).await;
        c.that(
            first.status == StatusCode::OK && cached(&first) == json!(false),
            || {
                format!(
                    "{what}: first A {} {}",
                    first.status, first.body["metadata"]
                )
            },
        );
        c.that(
            cached(&second) == json!(true) && second.body["metadata"]["cached_at"].is_string(),
            || format!("{what}: second A {}", second.body["metadata"]),
        );
        c.that(strip(&first) == strip(&second), || {
            format!("{what}: the cached answer differs from the computed one")
        });
        // The same request as B: B's own numbers, computed for B.
        let b_first = call(&tb).await;
        c.that(cached(&b_first) == json!(false), || {
            format!(
                "{what}: B was served A's cache entry: {}",
                b_first.body["metadata"]
            )
        });
        c.that(strip(&b_first) != strip(&first), || {
            format!("{what}: B got A's numbers")
        });
        c.that(w.foreign(b).leaks(&b_first.body).is_empty(), || {
            format!("{what}: B's answer holds other tenants' ids")
        });
        let b_second = call(&tb).await;
        c.that(
            cached(&b_second) == json!(true) && strip(&b_second) == strip(&b_first),
            || format!("{what}: B's second {}", b_second.body["metadata"]),
        );
        // A load event for A (what the follower calls): A recomputes, B stays cached.
        let generation = api.state.cache.invalidate(a).await;
        c.that(generation.is_some(), || {
            "invalidate: Redis did not answer".into()
        });
        let third = call(&ta).await;
        c.that(
            cached(&third) == json!(false) && strip(&third) == strip(&first),
            || format!("{what}: A after invalidation {}", third.body["metadata"]),
        );
        let fourth = call(&ta).await;
        c.that(cached(&fourth) == json!(true), || {
            format!("{what}: A after recomputation {}", fourth.body["metadata"])
        });
        let b_third = call(&tb).await;
        c.that(
            cached(&b_third) == json!(true) && strip(&b_third) == strip(&b_first),
            || {
                format!(
                    "{what}: B after A's invalidation {}",
                    b_third.body["metadata"]
                )
            },
        );
    }
    c.finish("cache");
    Ok(())
}

/// Without Redis the API still answers, uncached, and `/ready` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_api_answers_uncached() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |s| {
        s.infra.redis.url = "redis://127.0.0.1:1".into()
    })?;
    let a = &w.tenants[0];
    let token = api.token(a, Role::Analyst);
    let (from, to) = window();
    let mut c = Checks::default();
    let body = json!({"metrics": ["spend"], "dimensions": ["platform"], "time": {"start": from, "end": to}});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = api.post(&token, "/api/v1/query", &body).await;
        c.that(
            r.status == StatusCode::OK
                && r.body["metadata"]["cached"] == json!(false)
                && r.body["metadata"]["cache"] == "unavailable",
            || format!("query without Redis: {} {}", r.status, r.body),
        );
        answers.push(r.body["data"].clone());
        let d = api
            .get(
                &token,
                &format!("/api/v1/dashboards/exec-summary?start_date={from}&end_date={to}"),
            )
            .await;
        c.that(
            d.status == StatusCode::OK && d.body["metadata"]["cached"] == json!(false),
            || {
                format!(
                    "dashboard without Redis: {} {}",
                    d.status, d.body["metadata"]
                )
            },
        );
    }
    c.that(
        answers[0] == answers[1] && !rows(&answers[0]).is_empty(),
        || "answers without Redis differ".into(),
    );
    let r = api.send(Request::get("/ready").body(Body::empty())?).await;
    c.that(
        r.status == StatusCode::OK
            && r.body["cache"]
                .as_str()
                .is_some_and(|s| s.starts_with("disabled"))
            && r.body["checks"]["redis"]["ok"] == json!(false),
        || format!("/ready without Redis: {} {}", r.status, r.body),
    );
    c.finish("no Redis");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 7. Rate limit
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_tenant() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |s| {
        s.api.rate_limit = 5;
        s.api.rate_window_secs = 60;
    })?;
    // Fresh tenants: no other request of any run counts against them.
    let fresh = |n: u32| TenantId::new(format!("it-rl-{}-{n}", &unique("x")[2..12]));
    let (t, u) = (fresh(1)?, fresh(2)?);
    let (tt, tu) = (api.token(&t, Role::Viewer), api.token(&u, Role::Viewer));
    let mut c = Checks::default();
    for i in 1..=5 {
        let r = api.get(&tt, "/api/v1/platforms").await;
        c.that(r.status == StatusCode::OK, || {
            format!("request {i} of 5: {} {}", r.status, r.body)
        });
    }
    let r = api.get(&tt, "/api/v1/platforms").await;
    let retry_after: u64 = r.header("retry-after").parse().unwrap_or(0);
    c.that(
        r.status == StatusCode::TOO_MANY_REQUESTS
            && (1..=60).contains(&retry_after)
            && r.code() == "rate_limited"
            && r.message().contains("retry"),
        || {
            format!(
                "6th request: {} retry-after {:?} {}",
                r.status,
                r.header("retry-after"),
                r.body
            )
        },
    );
    let r = api
        .post(
            &tt,
            "/api/v1/query",
            &json!({"metrics": ["spend"], "time": {"start": day(8), "end": day(14)}}),
        )
        .await;
    c.that(r.status == StatusCode::TOO_MANY_REQUESTS, || {
        format!("7th request (another endpoint): {}", r.status)
    });
    // Another tenant is unaffected.
    let r = api.get(&tu, "/api/v1/platforms").await;
    c.that(r.status == StatusCode::OK, || {
        format!("another tenant: {} {}", r.status, r.body)
    });
    // Outside the limited API: health stays reachable.
    let r = api.send(Request::get("/health").body(Body::empty())?).await;
    c.that(r.status == StatusCode::OK, || {
        format!("/health while limited: {}", r.status)
    });
    c.finish("rate limit");
    Ok(())
}

/// A tenant that has no data yet (just onboarded) gets empty answers everywhere, not errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_data_gets_empty_answers() -> anyhow::Result<()> {
    let (w, _finished) = world().await;
    let api = Api::new(&w.loaded.database, |_| {})?;
    let tenant = TenantId::new(format!("it-empty-{}", &unique("x")[2..12]))?;
    let token = api.token(&tenant, Role::Analyst);
    let (from, to) = window();
    let range = format!("start_date={from}&end_date={to}");
    let foreign = w.foreign(&tenant);
    let mut c = Checks::default();
    let mut uris: Vec<String> = DASHBOARDS
        .iter()
        .map(|id| format!("/api/v1/dashboards/{id}?{range}"))
        .collect();
    uris.push(format!("/api/v1/campaigns?{range}"));
    uris.push("/api/v1/platforms".into());
    uris.push(format!(
        "/api/v1/metrics?metrics[]=spend&metrics[]=daily_budget&dimensions[]=campaign&{range}"
    ));
    for uri in &uris {
        let r = api.get(&token, uri).await;
        c.that(
            r.status == StatusCode::OK && foreign.leaks(&r.body).is_empty(),
            || format!("no data: GET {uri} → {} {}", r.status, r.body),
        );
    }
    for metrics in [
        json!(["spend", "sessions", "action_conversions"]),
        json!(["daily_budget"]),
    ] {
        let r = api
            .post(
                &token,
                "/api/v1/query",
                &json!({"metrics": metrics, "time": {"start": from, "end": to}}),
            )
            .await;
        c.that(r.status == StatusCode::OK, || {
            format!("no data: POST {metrics} → {} {}", r.status, r.body)
        });
        for m in rows(&metrics) {
            let m = m.as_str().unwrap_or("");
            c.num(&format!("no data: {m}"), &r.body["totals"][m], Some(0.0));
        }
    }
    let id = w.ids[&w.tenants[0]]
        .campaign_ids
        .iter()
        .next()
        .cloned()
        .unwrap_or_default();
    let r = api
        .get(
            &token,
            &format!("/api/v1/campaigns/{}/performance", enc(&id)),
        )
        .await;
    c.that(r.status == StatusCode::NOT_FOUND, || {
        format!("no data: another tenant's campaign → {}", r.status)
    });
    c.finish("tenant without data");
    Ok(())
}
