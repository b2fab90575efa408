//! Meta Marketing API (Graph): ad account node, `campaigns`, `adsets`, `ads`, `insights`, and
//! the long-lived token exchange, under `/graph/{version}/…`.
//!
//! * Tokens: `access_token` query parameter or `Authorization: Bearer`. Missing → code 104;
//!   unknown → 190; expired → 190 / subcode 463 (HTTP 400).
//! * Paging: cursor-based. `limit` defaults to 25 and is capped at `--meta-max-limit` (500) as
//!   Graph edges cap it; cursors are opaque base64; `paging.next` is a full URL repeating the
//!   request with `after=`, absent on the last page; `previous` appears after the first page.
//! * Every response carries `X-Business-Use-Case-Usage`, `X-Ad-Account-Usage` and
//!   `X-App-Usage` headers (JSON); they reach 100 when a throttle fault fires.
//! * Throttling: HTTP 400 with code 17 (subcode 2446079, "User request limit reached") and 613
//!   (subcode 1487742) alternately; server errors: HTTP 500 code 2, `is_transient`.
//!
//! Insights rows (`level=ad|adset|campaign|account`, `time_increment=1|N|all_days`,
//! `breakdowns=device_platform|country`) are ordered by period, then entity (account order),
//! then breakdown value; rows without delivery (zero impressions) are omitted like Meta does.
//! Money is printed as Meta prints it: a decimal string without trailing zeros ("12.3").
//! Conversions are the `purchase` action (or `lead` for OUTCOME_LEADS campaigns, without value);
//! engagements are `post_engagement` (also `inline_post_engagement`); video views are
//! `video_thruplay_watched_actions`. Deleted ads keep their insights (Meta needs an
//! `effective_status` filter to return them; the emulator always does, and ignores `filtering`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::date::Day;
use crate::errors::{MetaError, json_response};
use crate::faults::{Action, Decision, FaultPlatform, truncate};
use crate::generator::metrics::{ad_day, split};
use crate::generator::{AccountModel, Campaign, M, Platform, Status};
use crate::hash::H;
use crate::oauth::{
    TokenCheck, TokenKind, bearer, expired_token_error, invalid_token_error, meta_exchange,
};
use crate::{AppState, ZeroRows, json, lock};

/// Recent calls per ad account, for the usage headers.
#[derive(Debug, Default)]
pub struct Usage {
    calls: Mutex<HashMap<u64, VecDeque<Instant>>>,
}

impl Usage {
    /// Records a call and returns the account's utilisation, % (calls in the last minute × 2).
    fn touch(&self, account: u64) -> u64 {
        let now = Instant::now();
        let mut map = lock(&self.calls);
        let q = map.entry(account).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            q.pop_front();
        }
        q.push_back(now);
        (q.len() as u64 * 2).min(95)
    }
}

static TRACE_SEQ: AtomicU64 = AtomicU64::new(0);

fn fbtrace_id(seed: u64) -> String {
    let n = TRACE_SEQ.fetch_add(1, Ordering::Relaxed);
    let bytes = H::new(seed).with(0xFB).with(n).0.to_le_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn usage_headers(resp: &mut Response, account: Option<u64>, kind: &str, pct: u64, throttled: bool) {
    let pct = if throttled { 100 } else { pct };
    let cpu = if throttled { 100 } else { pct / 2 };
    let regain = u64::from(throttled);
    let h = resp.headers_mut();
    if let Some(acct) = account {
        let buc = json!({ acct.to_string(): [{
            "type": kind,
            "call_count": pct,
            "total_cputime": cpu,
            "total_time": cpu,
            "estimated_time_to_regain_access": 0,
            "ads_api_access_tier": "standard_access",
        }]});
        let acc = json!({ "acc_id_util_pct": pct as f64, "reset_time_duration": regain, "ads_api_access_tier": "standard_access" });
        if let Ok(v) = HeaderValue::from_str(&buc.to_string()) {
            h.insert("x-business-use-case-usage", v);
        }
        if let Ok(v) = HeaderValue::from_str(&acc.to_string()) {
            h.insert("x-ad-account-usage", v);
        }
    }
    let app = json!({ "call_count": pct, "total_cputime": cpu, "total_time": cpu });
    if let Ok(v) = HeaderValue::from_str(&app.to_string()) {
        h.insert("x-app-usage", v);
    }
}

fn error_response(
    st: &AppState,
    e: &MetaError,
    account: Option<u64>,
    kind: &str,
    pct: u64,
    throttled: bool,
) -> Response {
    let body = e.body(&fbtrace_id(st.cfg.generator.seed));
    let mut resp = json_response(e.http, serde_json::to_vec(&body).unwrap_or_default());
    usage_headers(&mut resp, account, kind, pct, throttled);
    resp
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

/// Parses `act_<digits>`.
fn ad_account(node: &str) -> Option<u64> {
    let digits = node.strip_prefix("act_")?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A requested field with optional sub-fields: `creative{id,title}`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldReq {
    name: String,
    sub: Option<Vec<String>>,
}

fn parse_fields(s: &str) -> Vec<FieldReq> {
    let mut out: Vec<FieldReq> = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    let push = |item: &str, out: &mut Vec<FieldReq>| {
        let item = item.trim();
        if item.is_empty() {
            return;
        }
        let req = match item.split_once('{') {
            Some((name, rest)) => FieldReq {
                name: name.trim().to_string(),
                sub: Some(
                    rest.trim_end_matches('}')
                        .split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect(),
                ),
            },
            None => FieldReq {
                name: item.to_string(),
                sub: None,
            },
        };
        if !out.iter().any(|f| f.name == req.name) {
            out.push(req);
        }
    };
    for ch in s.chars() {
        match ch {
            '{' => {
                depth += 1;
                cur.push(ch);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(ch);
            }
            ',' if depth == 0 => {
                push(&cur, &mut out);
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    push(&cur, &mut out);
    out
}

/// Meta timestamp: `2025-03-01T14:23:00+0000`.
fn meta_time(day: Day, minute: u32) -> String {
    format!(
        "{}T{:02}:{:02}:00+0000",
        day.iso(),
        minute / 60,
        minute % 60
    )
}

fn encode_cursor(i: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("mi-emu:{i}"))
}

fn decode_cursor(s: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("mi-emu:")?
        .parse()
        .ok()
}

/// `limit`, `after`, `before` of a request.
struct Paging {
    limit: usize,
    after: Option<u64>,
    before: Option<u64>,
}

fn paging(pairs: &[(String, String)], max: usize) -> Result<Paging, MetaError> {
    let limit = match param(pairs, "limit") {
        None => 25,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n.min(max.max(1)),
            _ => {
                return Err(MetaError::param(format!(
                    "(#100) Param limit must be a positive integer, got '{v}'"
                )));
            }
        },
    };
    let cursor = |k: &str| -> Result<Option<u64>, MetaError> {
        match param(pairs, k) {
            None => Ok(None),
            Some(c) => decode_cursor(c)
                .map(Some)
                .ok_or_else(|| MetaError::param(format!("(#100) The {k} cursor is invalid"))),
        }
    };
    Ok(Paging {
        limit,
        after: cursor("after")?,
        before: cursor("before")?,
    })
}

/// Builds `paging` with full `next` / `previous` URLs.
fn paging_json(
    base_url: &str,
    path: &str,
    pairs: &[(String, String)],
    first: u64,
    last: u64,
    has_more: bool,
    has_previous: bool,
) -> Value {
    let url = |k: &str, cursor: u64| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (key, v) in pairs {
            if key != "after" && key != "before" {
                ser.append_pair(key, v);
            }
        }
        ser.append_pair(k, &encode_cursor(cursor));
        format!("{base_url}{path}?{}", ser.finish())
    };
    let mut p = Map::new();
    p.insert(
        "cursors".into(),
        json!({ "before": encode_cursor(first), "after": encode_cursor(last) }),
    );
    if has_previous {
        p.insert("previous".into(), Value::String(url("before", first)));
    }
    if has_more {
        p.insert("next".into(), Value::String(url("after", last)));
    }
    Value::Object(p)
}

fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &st.cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8090");
    format!("http://{host}")
}

/// Everything a data request on an ad account needs.
struct Req<'a> {
    st: &'a AppState,
    account: u64,
    pairs: Vec<(String, String)>,
    path: String,
    base: String,
    decision: Decision,
}

/// `GET /graph/{version}/{node}` — the ad account node.
pub async fn node(
    State(st): State<Arc<AppState>>,
    Path((_version, node)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    handle(&st, &node, None, raw.as_deref(), uri.path(), &headers)
}

/// `GET /graph/{version}/{node}/{edge}` — edges, and `oauth/access_token`.
pub async fn edge(
    State(st): State<Arc<AppState>>,
    Path((_version, node, edge)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if node == "oauth" && edge == "access_token" {
        let params: HashMap<String, String> = query_pairs(raw.as_deref()).into_iter().collect();
        return match meta_exchange(&st, &params) {
            Ok(body) => {
                let mut resp = json_response(StatusCode::OK, body);
                usage_headers(&mut resp, None, "ads_management", 0, false);
                resp
            }
            Err(e) => error_response(&st, &e, None, "ads_management", 0, false),
        };
    }
    handle(
        &st,
        &node,
        Some(&edge),
        raw.as_deref(),
        uri.path(),
        &headers,
    )
}

fn handle(
    st: &AppState,
    node: &str,
    edge: Option<&str>,
    raw: Option<&str>,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let kind = if edge == Some("insights") {
        "ads_insights"
    } else {
        "ads_management"
    };
    let Some(account) = ad_account(node) else {
        let mut e = MetaError::param(format!(
            "(#100) Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ));
        e.subcode = Some(33);
        return error_response(st, &e, None, kind, 0, false);
    };
    let pct = st.meta_usage.touch(account);
    let pairs = query_pairs(raw);
    let token = param(&pairs, "access_token")
        .map(str::to_string)
        .or_else(|| bearer(headers).map(str::to_string));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        let e = MetaError::new(104, "An access token is required to request this resource.");
        return error_response(st, &e, Some(account), kind, pct, false);
    };
    match st.tokens.check(TokenKind::Meta, &token) {
        TokenCheck::Valid => {}
        TokenCheck::Expired => {
            return error_response(st, &expired_token_error(), Some(account), kind, pct, false);
        }
        TokenCheck::Unknown => {
            return error_response(st, &invalid_token_error(), Some(account), kind, pct, false);
        }
    }
    let decision = lock(&st.faults).next(FaultPlatform::MetaAds);
    match decision.action {
        Action::Throttle { nth } => {
            let mut e = if nth % 2 == 1 {
                let mut e = MetaError::new(17, "User request limit reached");
                e.subcode = Some(2_446_079);
                e
            } else {
                let mut e = MetaError::new(613, "Calls to this api have exceeded the rate limit.");
                e.subcode = Some(1_487_742);
                e.user_title = Some("Too many API calls");
                e.user_msg = Some(
                    "There have been too many calls from this ad-account. Please wait a bit and try again.",
                );
                e
            };
            e.transient = true;
            return error_response(st, &e, Some(account), kind, pct, true);
        }
        Action::ServerError => {
            let mut e = MetaError::new(2, "Service temporarily unavailable");
            e.http = StatusCode::INTERNAL_SERVER_ERROR;
            e.transient = true;
            return error_response(st, &e, Some(account), kind, pct, false);
        }
        Action::ExpireToken => {
            st.tokens.expire(&token);
            return error_response(st, &expired_token_error(), Some(account), kind, pct, false);
        }
        Action::Proceed => {}
    }
    let req = Req {
        st,
        account,
        pairs,
        path: path.to_string(),
        base: base_url(st, headers),
        decision,
    };
    let result = match edge {
        None => account_node(&req),
        Some("campaigns") | Some("adsets") | Some("ads") => {
            entities(&req, edge.unwrap_or("campaigns"))
        }
        Some("insights") => insights(&req),
        Some(other) => Err(MetaError::param(format!(
            "(#100) Tried accessing nonexisting field ({other}) on node type (AdAccount)"
        ))),
    };
    match result {
        Ok(body) => {
            let body = if req.decision.malformed {
                truncate(body)
            } else {
                body
            };
            let mut resp = json_response(StatusCode::OK, body);
            usage_headers(&mut resp, Some(account), kind, pct, false);
            resp
        }
        Err(e) => error_response(st, &e, Some(account), kind, pct, false),
    }
}

fn apply_overrides(obj: &mut Map<String, Value>, decision: &Decision, endpoint: &str) {
    for rule in decision.overrides_for(endpoint) {
        if obj.contains_key(&rule.field) {
            obj.insert(rule.field.clone(), rule.value.clone());
        }
    }
}

fn account_node(req: &Req<'_>) -> Result<Vec<u8>, MetaError> {
    let info = req.st.generator.account(Platform::MetaAds, req.account);
    let fields = param(&req.pairs, "fields")
        .map(parse_fields)
        .unwrap_or_else(|| parse_fields("id,account_id"));
    let mut obj = Map::new();
    for f in &fields {
        let v = match f.name.as_str() {
            "id" => json!(format!("act_{}", req.account)),
            "account_id" => json!(req.account.to_string()),
            "name" => json!(info.name),
            "currency" => json!(info.currency),
            "timezone_name" => json!(info.time_zone),
            "account_status" => json!(1),
            other => {
                return Err(MetaError::param(format!(
                    "(#100) Tried accessing nonexisting field ({other}) on node type (AdAccount)"
                )));
            }
        };
        obj.insert(f.name.clone(), v);
    }
    apply_overrides(&mut obj, &req.decision, "account");
    Ok(serde_json::to_vec(&Value::Object(obj)).unwrap_or_default())
}

const CAMPAIGN_FIELDS: &[&str] = &[
    "id",
    "account_id",
    "name",
    "status",
    "configured_status",
    "effective_status",
    "objective",
    "buying_type",
    "bid_strategy",
    "daily_budget",
    "lifetime_budget",
    "budget_remaining",
    "special_ad_categories",
    "start_time",
    "stop_time",
    "created_time",
    "updated_time",
];
const ADSET_FIELDS: &[&str] = &[
    "id",
    "account_id",
    "campaign_id",
    "name",
    "status",
    "configured_status",
    "effective_status",
    "optimization_goal",
    "billing_event",
    "bid_strategy",
    "bid_amount",
    "daily_budget",
    "lifetime_budget",
    "start_time",
    "end_time",
    "created_time",
    "updated_time",
];
const AD_FIELDS: &[&str] = &[
    "id",
    "account_id",
    "campaign_id",
    "adset_id",
    "name",
    "status",
    "configured_status",
    "effective_status",
    "creative",
    "created_time",
    "updated_time",
];
const CREATIVE_FIELDS: &[&str] = &[
    "id",
    "name",
    "title",
    "body",
    "object_type",
    "thumbnail_url",
    "image_url",
    "link_url",
    "url_tags",
    "video_id",
    "call_to_action_type",
];

fn campaign_effective(c: &Campaign) -> &'static str {
    c.current().status.meta()
}

fn adset_effective(c: &Campaign, own: Status) -> &'static str {
    match (own, c.current().status) {
        (Status::Removed, _) | (_, Status::Removed) => "DELETED",
        (_, Status::Paused) => "CAMPAIGN_PAUSED",
        (s, _) => s.meta(),
    }
}

fn ad_effective(c: &Campaign, group: Status, own: Status) -> &'static str {
    match (own, group, c.current().status) {
        (Status::Removed, ..) | (_, Status::Removed, _) | (.., Status::Removed) => "DELETED",
        (.., Status::Paused) => "CAMPAIGN_PAUSED",
        (_, Status::Paused, _) => "ADSET_PAUSED",
        (s, ..) => s.meta(),
    }
}

fn entities(req: &Req<'_>, edge: &str) -> Result<Vec<u8>, MetaError> {
    let today = req.st.today();
    let model = req
        .st
        .generator
        .model(Platform::MetaAds, req.account, today);
    let (allowed, node_type) = match edge {
        "campaigns" => (CAMPAIGN_FIELDS, "Campaign"),
        "adsets" => (ADSET_FIELDS, "AdSet"),
        _ => (AD_FIELDS, "Adgroup"),
    };
    let fields = param(&req.pairs, "fields")
        .map(parse_fields)
        .unwrap_or_else(|| parse_fields("id"));
    for f in &fields {
        if !allowed.contains(&f.name.as_str()) {
            return Err(MetaError::param(format!(
                "(#100) Tried accessing nonexisting field ({}) on node type ({node_type})",
                f.name
            )));
        }
        if let Some(sub) = &f.sub
            && let Some(bad) = sub.iter().find(|s| !CREATIVE_FIELDS.contains(&s.as_str()))
        {
            return Err(MetaError::param(format!(
                "(#100) Tried accessing nonexisting field ({bad}) on node type (AdCreative)"
            )));
        }
    }
    let statuses: Option<Vec<String>> = match param(&req.pairs, "effective_status") {
        None => None,
        Some(s) => Some(serde_json::from_str::<Vec<String>>(s).map_err(|_| {
            MetaError::param("(#100) Param effective_status must be a JSON array of statuses")
        })?),
    };
    let visible = |eff: &str| match &statuses {
        Some(list) => list.iter().any(|s| s == eff),
        None => eff != "DELETED" && eff != "ARCHIVED",
    };
    let info = &model.info;
    let acct = info.id.to_string();
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    for c in &model.campaigns {
        let ca = c.current();
        if edge == "campaigns" {
            let eff = campaign_effective(c);
            if !visible(eff) {
                continue;
            }
            let (ud, um) = c.updated();
            let mut o = Map::new();
            for f in &fields {
                let v = match f.name.as_str() {
                    "id" => Some(json!(c.id.to_string())),
                    "account_id" => Some(json!(acct)),
                    "name" => Some(json!(ca.name)),
                    "status" | "configured_status" => Some(json!(ca.status.meta())),
                    "effective_status" => Some(json!(eff)),
                    "objective" => Some(json!(c.channel.meta_objective())),
                    "buying_type" => Some(json!("AUCTION")),
                    "bid_strategy" => Some(json!(ca.bidding)),
                    "daily_budget" => Some(json!(ca.budget_cents.to_string())),
                    "lifetime_budget" => Some(json!("0")),
                    "budget_remaining" => Some(json!(ca.budget_cents.to_string())),
                    "special_ad_categories" => Some(json!([])),
                    "start_time" | "created_time" => {
                        Some(json!(meta_time(c.created, c.created_minute())))
                    }
                    "stop_time" => c.end_date.map(|d| json!(meta_time(d, 1439))),
                    "updated_time" => Some(json!(meta_time(ud, um))),
                    _ => None,
                };
                if let Some(v) = v {
                    o.insert(f.name.clone(), v);
                }
            }
            rows.push(o);
            continue;
        }
        for g in &c.ad_groups {
            let ga = g.current();
            if edge == "adsets" {
                let eff = adset_effective(c, ga.status);
                if !visible(eff) {
                    continue;
                }
                let (ud, um) = g.updated();
                let created_minute = g.versions.first().map_or(0, |v| v.minute);
                let mut o = Map::new();
                for f in &fields {
                    let v = match f.name.as_str() {
                        "id" => Some(json!(g.id.to_string())),
                        "account_id" => Some(json!(acct)),
                        "campaign_id" => Some(json!(c.id.to_string())),
                        "name" => Some(json!(ga.name)),
                        "status" | "configured_status" => Some(json!(ga.status.meta())),
                        "effective_status" => Some(json!(eff)),
                        "optimization_goal" => Some(json!(c.channel.meta_optimization_goal())),
                        "billing_event" => Some(json!("IMPRESSIONS")),
                        "bid_strategy" => Some(json!(ca.bidding)),
                        "bid_amount" => Some(json!(ga.bid_cents)),
                        "start_time" | "created_time" => {
                            Some(json!(meta_time(g.created, created_minute)))
                        }
                        "end_time" => c.end_date.map(|d| json!(meta_time(d, 1439))),
                        "updated_time" => Some(json!(meta_time(ud, um))),
                        // Budgets live on the campaign (campaign budget optimisation): Meta omits
                        // unset fields.
                        _ => None,
                    };
                    if let Some(v) = v {
                        o.insert(f.name.clone(), v);
                    }
                }
                rows.push(o);
                continue;
            }
            for ad in &g.ads {
                let aa = ad.current();
                let eff = ad_effective(c, ga.status, aa.status);
                if !visible(eff) {
                    continue;
                }
                let (ud, um) = ad.updated();
                let created_minute = ad.versions.first().map_or(0, |v| v.minute);
                let mut o = Map::new();
                for f in &fields {
                    let v = match f.name.as_str() {
                        "id" => json!(ad.id.to_string()),
                        "account_id" => json!(acct),
                        "campaign_id" => json!(c.id.to_string()),
                        "adset_id" => json!(g.id.to_string()),
                        "name" => json!(aa.name),
                        "status" | "configured_status" => json!(aa.status.meta()),
                        "effective_status" => json!(eff),
                        "created_time" => json!(meta_time(ad.created, created_minute)),
                        "updated_time" => json!(meta_time(ud, um)),
                        "creative" => creative_json(c, ad, f.sub.as_deref()),
                        _ => continue,
                    };
                    o.insert(f.name.clone(), v);
                }
                rows.push(o);
            }
        }
    }
    let p = paging(&req.pairs, req.st.cfg.meta_max_limit)?;
    let total = rows.len() as u64;
    let (start, end) = match (p.after, p.before) {
        (Some(a), _) => (
            a.saturating_add(1).min(total),
            a.saturating_add(1)
                .saturating_add(p.limit as u64)
                .min(total),
        ),
        (None, Some(b)) => (b.min(total).saturating_sub(p.limit as u64), b.min(total)),
        (None, None) => (0, (p.limit as u64).min(total)),
    };
    let mut data = Vec::new();
    for (i, mut row) in rows.into_iter().enumerate() {
        let i = i as u64;
        if i >= start && i < end {
            apply_overrides(&mut row, &req.decision, edge);
            data.push(Value::Object(row));
        }
    }
    let mut out = Map::new();
    let empty = data.is_empty();
    out.insert("data".into(), Value::Array(data));
    if !empty {
        out.insert(
            "paging".into(),
            paging_json(
                &req.base,
                &req.path,
                &req.pairs,
                start,
                end - 1,
                end < total,
                start > 0,
            ),
        );
    }
    Ok(serde_json::to_vec(&Value::Object(out)).unwrap_or_default())
}

fn creative_json(c: &Campaign, ad: &crate::generator::Ad, sub: Option<&[String]>) -> Value {
    let theme = crate::generator::entities::THEMES
        .get(c.theme)
        .copied()
        .unwrap_or("Brand");
    let mut o = Map::new();
    o.insert("id".into(), json!(ad.creative_id.to_string()));
    for s in sub.unwrap_or(&[]) {
        let v = match s.as_str() {
            "id" => continue,
            "name" => json!(format!("{} creative", ad.current().name)),
            "title" => json!(theme),
            "body" => json!(format!("Shop {theme} now.")),
            "object_type" => json!(if c.channel.is_video() {
                "VIDEO"
            } else {
                "SHARE"
            }),
            "thumbnail_url" => json!(format!(
                "https://scontent.example.com/t/{}.jpg",
                ad.creative_id
            )),
            "image_url" => json!(format!(
                "https://scontent.example.com/i/{}.jpg",
                ad.creative_id
            )),
            "link_url" => json!(format!(
                "https://www.example.com/{}",
                theme.to_ascii_lowercase().replace(' ', "-")
            )),
            "url_tags" => json!("utm_source=facebook&utm_medium=cpc"),
            "video_id" if c.channel.is_video() => json!((ad.creative_id + 1).to_string()),
            "call_to_action_type" => json!(if c.channel.meta_objective() == "OUTCOME_LEADS" {
                "SIGN_UP"
            } else {
                "SHOP_NOW"
            }),
            _ => continue,
        };
        o.insert(s.clone(), v);
    }
    Value::Object(o)
}

/// Fields `insights` accepts.
const INSIGHT_FIELDS: &[&str] = &[
    "account_id",
    "account_name",
    "account_currency",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "ad_id",
    "ad_name",
    "objective",
    "impressions",
    "clicks",
    "inline_link_clicks",
    "spend",
    "reach",
    "frequency",
    "ctr",
    "cpc",
    "cpm",
    "actions",
    "action_values",
    "inline_post_engagement",
    "video_thruplay_watched_actions",
    "video_p100_watched_actions",
    "date_start",
    "date_stop",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ad,
    AdSet,
    Campaign,
    Account,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Breakdown {
    None,
    Device,
    Country,
}

const META_DEVICES: [&str; 3] = ["mobile_app", "mobile_web", "desktop"];

/// Metrics of one insights cell, with Meta's split of conversions into purchases and leads.
#[derive(Clone, Copy, Default)]
struct Cell {
    m: M,
    leads: u64,
    exists: bool,
}

impl Cell {
    fn add(&mut self, m: &M, lead: bool) {
        let mut m = *m;
        if lead {
            self.leads += m.conversions;
            m.conversions = 0;
            m.value_cents = 0;
        }
        self.m.add(&m);
        self.exists = true;
    }
}

/// The reporting range and periods of an insights request.
fn insight_range(pairs: &[(String, String)], today: Day) -> Result<(Day, Day), MetaError> {
    // Graph also accepts the bracketed form time_range[since]=…&time_range[until]=….
    if let (Some(a), Some(b)) = (
        param(pairs, "time_range[since]"),
        param(pairs, "time_range[until]"),
    ) {
        let (Some(since), Some(until)) = (Day::parse(a), Day::parse(b)) else {
            return Err(MetaError::param(
                "(#100) Param time_range must contain since and until as YYYY-MM-DD",
            ));
        };
        if since > until {
            return Err(MetaError::param(
                "(#100) Param time_range: since must not be after until",
            ));
        }
        return Ok((since, until));
    }
    if let Some(tr) = param(pairs, "time_range") {
        let v: Value = serde_json::from_str(tr).map_err(|_| {
            MetaError::param("(#100) Param time_range must be a JSON object with since and until")
        })?;
        let get = |k: &str| v.get(k).and_then(Value::as_str).and_then(Day::parse);
        let (Some(since), Some(until)) = (get("since"), get("until")) else {
            return Err(MetaError::param(
                "(#100) Param time_range must contain since and until as YYYY-MM-DD",
            ));
        };
        if since > until {
            return Err(MetaError::param(
                "(#100) Param time_range: since must not be after until",
            ));
        }
        return Ok((since, until));
    }
    let preset = param(pairs, "date_preset").unwrap_or("last_30d");
    let y = today.plus(-1);
    let month = today.month_start();
    Ok(match preset {
        "today" => (today, today),
        "yesterday" => (y, y),
        "this_month" => (month, today),
        "last_month" => (month.plus(-1).month_start(), month.plus(-1)),
        "maximum" => (today.plus(-(37 * 31)), y),
        p => match p
            .strip_prefix("last_")
            .and_then(|r| r.strip_suffix('d'))
            .and_then(|n| n.parse::<i32>().ok())
        {
            Some(n) if (1..=90).contains(&n) => (today.plus(-n), y),
            _ => {
                return Err(MetaError::param(format!(
                    "(#100) date_preset must be one of the following values: today, yesterday, this_month, last_month, last_3d, last_7d, last_14d, last_28d, last_30d, last_90d, maximum (got {p})"
                )));
            }
        },
    })
}

fn insights(req: &Req<'_>) -> Result<Vec<u8>, MetaError> {
    let st = req.st;
    let today = st.today();
    let pairs = &req.pairs;
    let fields = param(pairs, "fields")
        .map(parse_fields)
        .unwrap_or_else(|| parse_fields("impressions,spend"));
    if let Some(bad) = fields
        .iter()
        .find(|f| !INSIGHT_FIELDS.contains(&f.name.as_str()))
    {
        return Err(MetaError::param(format!(
            "(#100) {} is not valid for fields param. please check https://developers.facebook.com/docs/marketing-api/reference/ads-insights/ for all valid values",
            bad.name
        )));
    }
    let level = match param(pairs, "level").unwrap_or("account") {
        "ad" => Level::Ad,
        "adset" => Level::AdSet,
        "campaign" => Level::Campaign,
        "account" => Level::Account,
        other => {
            return Err(MetaError::param(format!(
                "(#100) level must be one of the following values: ad, adset, campaign, account (got {other})"
            )));
        }
    };
    let breakdown = match param(pairs, "breakdowns")
        .map(|b| b.trim_matches(|c| c == '[' || c == ']' || c == '"'))
    {
        None | Some("") => Breakdown::None,
        Some("device_platform") => Breakdown::Device,
        Some("country") => Breakdown::Country,
        Some(other) => {
            return Err(MetaError::param(format!(
                "(#100) breakdowns[0] must be one of the following values supported by the emulator: device_platform, country (got {other})"
            )));
        }
    };
    let (since, until) = insight_range(pairs, today)?;
    let increment: Option<i32> = match param(pairs, "time_increment") {
        None | Some("all_days") => None,
        Some("monthly") => {
            return Err(MetaError::param(
                "(#100) time_increment=monthly is not supported by the emulator; use 1..90 or all_days",
            ));
        }
        Some(n) => match n.parse::<i32>() {
            Ok(k) if (1..=90).contains(&k) => Some(k),
            _ => {
                return Err(MetaError::param(format!(
                    "(#100) Param time_increment must be all_days, monthly or an integer between 1 and 90 (got {n})"
                )));
            }
        },
    };
    let model = st.generator.model(Platform::MetaAds, req.account, today);
    // Periods over the requested range; days without data simply contribute nothing.
    let periods: Vec<(Day, Day)> = match increment {
        None => vec![(since, until)],
        Some(k) => {
            let mut v = Vec::new();
            let mut d = since;
            while d <= until {
                let end = d.plus(k - 1).min(until);
                v.push((d, end));
                d = end.plus(1);
            }
            v
        }
    };
    let units: Vec<(Option<usize>, Option<usize>, Option<usize>)> = match level {
        Level::Ad => model
            .ads()
            .map(|(c, g, a, _)| (Some(c), Some(g), Some(a)))
            .collect(),
        Level::AdSet => model
            .campaigns
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| (0..c.ad_groups.len()).map(move |gi| (Some(ci), Some(gi), None)))
            .collect(),
        Level::Campaign => (0..model.campaigns.len())
            .map(|c| (Some(c), None, None))
            .collect(),
        Level::Account => vec![(None, None, None)],
    };
    let n_bd: u64 = if breakdown == Breakdown::None { 1 } else { 3 };
    let n_units = units.len() as u64;
    let total = periods.len() as u64 * n_units * n_bd;
    let include = st.cfg.zero_rows == ZeroRows::Include;
    let p = paging(pairs, st.cfg.meta_max_limit)?;

    let mut cache: Option<(u64, [Cell; 3])> = None;
    let mut cell_at = |i: u64| -> Option<Cell> {
        let b = i % n_bd;
        let pu = i / n_bd;
        if cache.as_ref().is_none_or(|(k, _)| *k != pu) {
            let (period, unit) = (
                periods.get((pu / n_units) as usize)?,
                units.get((pu % n_units) as usize)?,
            );
            cache = Some((pu, compute_cell(&model, *unit, *period, breakdown, today)));
        }
        let cell = cache.as_ref()?.1.get(b as usize).copied()?;
        let keep = if include {
            cell.exists
        } else {
            cell.m.impressions > 0
        };
        keep.then_some(cell)
    };
    // Positions of the rows on this page.
    let mut page: Vec<(u64, Cell)> = Vec::new();
    let mut has_more = false;
    match p.before {
        Some(before) if p.after.is_none() => {
            let mut window: VecDeque<(u64, Cell)> = VecDeque::new();
            for i in 0..before.min(total) {
                if let Some(c) = cell_at(i) {
                    window.push_back((i, c));
                    if window.len() > p.limit {
                        window.pop_front();
                    }
                }
            }
            page.extend(window);
            has_more = true;
        }
        _ => {
            let mut i = p.after.map_or(0, |a| a.saturating_add(1));
            while i < total {
                if let Some(c) = cell_at(i) {
                    if page.len() == p.limit {
                        has_more = true;
                        break;
                    }
                    page.push((i, c));
                }
                i += 1;
            }
        }
    }

    let overrides: HashMap<&str, &Value> = req
        .decision
        .overrides_for("insights")
        .map(|r| (r.field.as_str(), &r.value))
        .collect();
    let mut out = Vec::with_capacity(512 * page.len() + 256);
    out.extend_from_slice(b"{\"data\":[");
    for (k, (i, cell)) in page.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let b = (i % n_bd) as usize;
        let pu = i / n_bd;
        let period = periods
            .get((pu / n_units) as usize)
            .copied()
            .unwrap_or((since, until));
        let unit = units
            .get((pu % n_units) as usize)
            .copied()
            .unwrap_or((None, None, None));
        write_insight(
            &mut out, &model, &fields, unit, period, breakdown, b, cell, &overrides,
        );
    }
    out.push(b']');
    if let (Some((first, _)), Some((last, _))) = (page.first(), page.last()) {
        let has_previous = p.after.is_some() || (p.before.is_some() && *first > 0);
        let pj = paging_json(
            &req.base,
            &req.path,
            pairs,
            *first,
            *last,
            has_more,
            has_previous,
        );
        out.extend_from_slice(b",\"paging\":");
        json::value(&mut out, &pj);
    }
    out.push(b'}');
    Ok(out)
}

fn compute_cell(
    model: &AccountModel,
    unit: (Option<usize>, Option<usize>, Option<usize>),
    period: (Day, Day),
    breakdown: Breakdown,
    today: Day,
) -> [Cell; 3] {
    let mut cells = [Cell::default(); 3];
    let Some((from, to)) = model.data_days(period.0, period.1) else {
        return cells;
    };
    for (ci, gi, ai, ad) in model.ads() {
        if unit.0.is_some_and(|c| c != ci)
            || unit.1.is_some_and(|g| g != gi)
            || unit.2.is_some_and(|a| a != ai)
        {
            continue;
        }
        for day in from.through(to) {
            let Some(m) = ad_day(ad, day, today) else {
                continue;
            };
            let lead = ad.profile.lead;
            match breakdown {
                Breakdown::None => cells[0].add(&m, lead),
                Breakdown::Device | Breakdown::Country => {
                    let w = if breakdown == Breakdown::Device {
                        ad.profile.meta_device_w
                    } else {
                        ad.profile.country_w
                    };
                    for (cell, part) in cells.iter_mut().zip(split(&m, w).iter()) {
                        cell.add(part, lead);
                    }
                }
            }
        }
    }
    cells
}

fn ratio6(num: f64, den: u64) -> Option<String> {
    if den == 0 {
        return None;
    }
    let s = format!("{:.6}", num / den as f64);
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    Some(s)
}

fn write_action_list(out: &mut Vec<u8>, items: &[(&str, String)]) {
    out.push(b'[');
    for (i, (t, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"action_type\":");
        json::string(out, t);
        out.extend_from_slice(b",\"value\":");
        json::string(out, v);
        out.push(b'}');
    }
    out.push(b']');
}

#[allow(clippy::too_many_arguments)]
fn write_insight(
    out: &mut Vec<u8>,
    model: &AccountModel,
    fields: &[FieldReq],
    unit: (Option<usize>, Option<usize>, Option<usize>),
    period: (Day, Day),
    breakdown: Breakdown,
    b: usize,
    cell: &Cell,
    overrides: &HashMap<&str, &Value>,
) {
    let m = &cell.m;
    let info = &model.info;
    let camp = unit.0.and_then(|c| model.campaigns.get(c));
    let group = camp.and_then(|c| unit.1.and_then(|g| c.ad_groups.get(g)));
    let ad = group.and_then(|g| unit.2.and_then(|a| g.ads.get(a)));
    out.push(b'{');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, key: &str, write: &dyn Fn(&mut Vec<u8>)| {
        if !first {
            out.push(b',');
        }
        first = false;
        json::key(out, key);
        match overrides.get(key) {
            Some(v) => json::value(out, v),
            None => write(out),
        }
    };
    let money = json::trimmed_money;
    for f in fields {
        let name = f.name.as_str();
        match name {
            "account_id" => put(out, name, &|o| json::uint_str(o, info.id)),
            "account_name" => put(out, name, &|o| json::string(o, &info.name)),
            "account_currency" => put(out, name, &|o| json::string(o, info.currency)),
            "campaign_id" => {
                if let Some(c) = camp {
                    put(out, name, &|o| json::uint_str(o, c.id));
                }
            }
            "campaign_name" => {
                if let Some(c) = camp {
                    put(out, name, &|o| json::string(o, &c.current().name));
                }
            }
            "objective" => {
                if let Some(c) = camp {
                    put(out, name, &|o| json::string(o, c.channel.meta_objective()));
                }
            }
            "adset_id" => {
                if let Some(g) = group {
                    put(out, name, &|o| json::uint_str(o, g.id));
                }
            }
            "adset_name" => {
                if let Some(g) = group {
                    put(out, name, &|o| json::string(o, &g.current().name));
                }
            }
            "ad_id" => {
                if let Some(a) = ad {
                    put(out, name, &|o| json::uint_str(o, a.id));
                }
            }
            "ad_name" => {
                if let Some(a) = ad {
                    put(out, name, &|o| json::string(o, &a.current().name));
                }
            }
            "impressions" => put(out, name, &|o| json::uint_str(o, m.impressions)),
            "clicks" => put(out, name, &|o| json::uint_str(o, m.clicks)),
            "inline_link_clicks" => put(out, name, &|o| json::uint_str(o, m.link_clicks)),
            "inline_post_engagement" => put(out, name, &|o| json::uint_str(o, m.engagements)),
            "reach" => put(out, name, &|o| json::uint_str(o, m.reach)),
            "spend" => put(out, name, &|o| json::string(o, &money(m.cost_cents))),
            "frequency" => {
                if let Some(v) = ratio6(m.impressions as f64, m.reach) {
                    put(out, name, &|o| json::string(o, &v));
                }
            }
            "ctr" => {
                if let Some(v) = ratio6(m.clicks as f64 * 100.0, m.impressions) {
                    put(out, name, &|o| json::string(o, &v));
                }
            }
            "cpc" => {
                if let Some(v) = ratio6(m.cost_cents as f64 / 100.0, m.clicks) {
                    put(out, name, &|o| json::string(o, &v));
                }
            }
            "cpm" => {
                if let Some(v) = ratio6(m.cost_cents as f64 * 10.0, m.impressions) {
                    put(out, name, &|o| json::string(o, &v));
                }
            }
            "actions" => {
                let mut items: Vec<(&str, String)> = Vec::new();
                if cell.leads > 0 {
                    items.push(("lead", cell.leads.to_string()));
                }
                if m.link_clicks > 0 {
                    items.push(("link_click", m.link_clicks.to_string()));
                }
                if m.engagements > 0 {
                    items.push(("post_engagement", m.engagements.to_string()));
                }
                if m.conversions > 0 {
                    items.push(("purchase", m.conversions.to_string()));
                }
                if !items.is_empty() || overrides.contains_key(name) {
                    put(out, name, &|o| write_action_list(o, &items));
                }
            }
            "action_values" if m.value_cents > 0 || overrides.contains_key(name) => {
                let items = [("purchase", money(m.value_cents))];
                put(out, name, &|o| write_action_list(o, &items));
            }
            "video_thruplay_watched_actions"
                if m.video_views > 0 || overrides.contains_key(name) =>
            {
                let items = [("video_view", m.video_views.to_string())];
                put(out, name, &|o| write_action_list(o, &items));
            }
            "video_p100_watched_actions" => {
                let p100 = m.video_views * 3 / 5;
                if p100 > 0 || overrides.contains_key(name) {
                    let items = [("video_view", p100.to_string())];
                    put(out, name, &|o| write_action_list(o, &items));
                }
            }
            _ => {}
        }
    }
    put(out, "date_start", &|o| json::string(o, &period.0.iso()));
    put(out, "date_stop", &|o| json::string(o, &period.1.iso()));
    match breakdown {
        Breakdown::None => {}
        Breakdown::Device => put(out, "device_platform", &|o| {
            json::string(o, META_DEVICES.get(b).copied().unwrap_or("unknown"))
        }),
        Breakdown::Country => put(out, "country", &|o| {
            json::string(o, info.countries.get(b).map_or("unknown", |c| c.code))
        }),
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_parse_with_subfields() {
        let f = parse_fields("id,name,creative{id,title},status");
        assert_eq!(f.len(), 4);
        assert_eq!(
            f[2],
            FieldReq {
                name: "creative".into(),
                sub: Some(vec!["id".into(), "title".into()])
            }
        );
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(12_345)), Some(12_345));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }
}
