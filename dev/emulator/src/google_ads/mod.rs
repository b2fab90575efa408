//! Google Ads API: `POST /googleads/{version}/customers/{customer_id}/googleAds:searchStream`.
//!
//! The request body is `{"query": "<GAQL>"}`; the response is a JSON array of batches
//! `[{"results":[…],"fieldMask":"…","requestId":"…"}, …]` with at most `--batch-rows` rows each,
//! streamed as they are generated. Rows follow the proto3 JSON mapping: camelCase names, nested
//! resource objects, int64 as strings, doubles as numbers, enums as names, and every selected
//! resource carries its `resourceName` (unless `PARAMETERS omit_unselected_resource_names=true`).
//!
//! Row grain: one row per entity of the FROM resource and per value of each selected segment
//! (`segments.date`, `segments.device`, `segments.conversion_action*`). Metrics of coarser
//! resources are sums over their ads. Segmented rows whose selected metrics are all zero are
//! omitted, as documented by Google (unless `--zero-rows include`); unsegmented queries return
//! every entity. Entity attributes are always the current ones ("today" on the clock).

pub mod fields;
pub mod gaql;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::Value;

use crate::date::Day;
use crate::errors::{AdsErrorDetail, GoogleApiError, JSON_UTF8, QuotaDetail};
use crate::faults::{Action, FaultPlatform};
use crate::generator::metrics::{ad_day, split, split_conversions};
use crate::generator::{AccountModel, M, Platform};
use crate::hash::H;
use crate::oauth::{TokenCheck, TokenKind, bearer};
use crate::{AppState, GoogleErrorShape, ZeroRows, json, lock};

use fields::{F, FieldDef, Res, RowCtx, Val, get, lookup};
use gaql::{CmpOp, Condition, GaqlError, Literal};

const SERVICE: &str = "googleads.googleapis.com";

fn query_error(e: GaqlError) -> GoogleApiError {
    GoogleApiError::ads(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        AdsErrorDetail {
            kind: "queryError",
            code: e.code,
            message: e.message,
            trigger: e.trigger,
            quota: None,
        },
    )
}

fn request_error(code: &'static str, message: String) -> GoogleApiError {
    GoogleApiError::ads(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        AdsErrorDetail {
            kind: "requestError",
            code,
            message,
            trigger: None,
            quota: None,
        },
    )
}

/// The rate-limit error (fault injection).
fn quota_error() -> GoogleApiError {
    let mut e = GoogleApiError::ads(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        AdsErrorDetail {
            kind: "quotaError",
            code: "RESOURCE_EXHAUSTED",
            message: "Too many requests. Retry in 1 seconds.".into(),
            trigger: None,
            quota: Some(QuotaDetail {
                rate_scope: "ACCOUNT",
                rate_name: "Requests per account",
                retry_delay_secs: 1,
            }),
        },
    );
    e.message = "Resource has been exhausted (e.g. check quota).".into();
    e.retry_after = Some(1);
    e
}

fn auth_error(missing: bool, expired: bool) -> GoogleApiError {
    let (code, message) = if missing {
        (
            "AUTHENTICATION_ERROR",
            "Authentication of the request failed.",
        )
    } else if expired {
        (
            "OAUTH_TOKEN_EXPIRED",
            "The OAuth token in the header has expired.",
        )
    } else {
        (
            "OAUTH_TOKEN_INVALID",
            "The OAuth token in the header is not valid.",
        )
    };
    let mut e = GoogleApiError::unauthenticated(missing, expired);
    e.ads_errors.push(AdsErrorDetail {
        kind: "authenticationError",
        code,
        message: message.into(),
        trigger: None,
        quota: None,
    });
    e
}

/// A resolved WHERE filter on a non-date field.
#[derive(Clone, Debug)]
enum Filter {
    Cmp(F, CmpOp, Literal),
    In(F, bool, Vec<Literal>),
    Like(F, bool, String),
    IsNull(F, bool),
}

/// A JSON output node: a leaf field or a nested object.
#[derive(Clone, Debug)]
enum Node {
    Leaf { key: String, def: &'static FieldDef },
    Obj { key: String, children: Vec<Node> },
}

fn insert_node(nodes: &mut Vec<Node>, path: &[String], def: &'static FieldDef) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        let exists = nodes
            .iter()
            .any(|n| matches!(n, Node::Leaf { key, .. } if key == head));
        if !exists {
            nodes.push(Node::Leaf {
                key: head.clone(),
                def,
            });
        }
        return;
    }
    let idx = nodes
        .iter()
        .position(|n| matches!(n, Node::Obj { key, .. } if key == head));
    let idx = match idx {
        Some(i) => i,
        None => {
            nodes.push(Node::Obj {
                key: head.clone(),
                children: Vec::new(),
            });
            nodes.len() - 1
        }
    };
    if let Some(Node::Obj { children, .. }) = nodes.get_mut(idx) {
        insert_node(children, rest, def);
    }
}

/// A validated query.
#[derive(Clone, Debug)]
pub struct Plan {
    from: Res,
    metrics: Vec<F>,
    date: bool,
    device: bool,
    action: bool,
    needs_metrics: bool,
    range: (Day, Day),
    filters: Vec<Filter>,
    order: Vec<(&'static FieldDef, bool)>,
    limit: Option<u64>,
    tree: Vec<Node>,
    field_mask: String,
}

impl Plan {
    fn segmented(&self) -> bool {
        self.date || self.device || self.action
    }
}

fn resolve(name: &str, from: Res) -> Result<&'static FieldDef, GaqlError> {
    let def = lookup(name).ok_or_else(|| {
        GaqlError::new(
            "UNRECOGNIZED_FIELD",
            format!("Unrecognized field in the query: '{name}'."),
        )
        .with_trigger(name)
    })?;
    if !from.selectable(def.res) {
        return Err(GaqlError::new(
            "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
            format!("Cannot select or filter on the following field: '{name}', since the resource in the FROM clause is not compatible with its resource."),
        )
        .with_trigger(name));
    }
    Ok(def)
}

fn date_literal(l: &Literal) -> Result<Day, GaqlError> {
    Day::parse(l.text()).ok_or_else(|| {
        GaqlError::new(
            "BAD_VALUE",
            format!(
                "Invalid date literal: '{}'. Expected 'YYYY-MM-DD'.",
                l.text()
            ),
        )
        .with_trigger(l.text())
    })
}

fn during(range: &str, today: Day) -> Result<(Day, Day), GaqlError> {
    let yesterday = today.plus(-1);
    let month = today.month_start();
    let week = today.plus(-(today.weekday() as i32));
    Ok(match range {
        "TODAY" => (today, today),
        "YESTERDAY" => (yesterday, yesterday),
        "LAST_7_DAYS" => (today.plus(-7), yesterday),
        "LAST_14_DAYS" => (today.plus(-14), yesterday),
        "LAST_30_DAYS" => (today.plus(-30), yesterday),
        "THIS_MONTH" => (month, today),
        "LAST_MONTH" => (month.plus(-1).month_start(), month.plus(-1)),
        "THIS_WEEK_MON_TODAY" => (week, today),
        "LAST_WEEK_MON_SUN" => (week.plus(-7), week.plus(-1)),
        other => {
            return Err(GaqlError::new(
                "INVALID_VALUE_WITH_DURING_OPERATOR",
                format!("Invalid date literal supplied for DURING operator: {other}."),
            )
            .with_trigger(other));
        }
    })
}

/// Validates a parsed query against the catalog and resolves its date range.
pub fn plan(q: &gaql::Query, today: Day, window: (Day, Day)) -> Result<Plan, GaqlError> {
    let from = Res::from_name(&q.from).ok_or_else(|| {
        GaqlError::new(
            "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
            format!("Invalid resource type in the FROM clause: '{}'. The emulator serves customer, campaign, ad_group and ad_group_ad.", q.from),
        )
        .with_trigger(q.from.clone())
    })?;
    let mut selected: Vec<&'static FieldDef> = Vec::new();
    for name in &q.select {
        let def = resolve(name, from)?;
        if selected.iter().any(|d| d.f == def.f) {
            return Err(GaqlError::new(
                "DUPLICATE_FIELDS_IN_SELECT_CLAUSE",
                format!("Duplicate field in SELECT clause: '{name}'."),
            )
            .with_trigger(name.clone()));
        }
        selected.push(def);
    }
    let metrics: Vec<F> = selected
        .iter()
        .filter(|d| d.res == Res::Metrics)
        .map(|d| d.f)
        .collect();
    let date = selected.iter().any(|d| d.f == F::Date);
    let device = selected.iter().any(|d| d.f == F::Device);
    let action = selected.iter().any(|d| {
        matches!(
            d.f,
            F::ConversionAction | F::ConversionActionName | F::ConversionActionCategory
        )
    });

    let mut lo: Option<Day> = None;
    let mut hi: Option<Day> = None;
    let mut filters = Vec::new();
    let mut filter_uses_metrics = false;
    for c in &q.conditions {
        let def = resolve(c.field(), from)?;
        if def.f == F::Date {
            let (a, b) = match c {
                Condition::Between { lo, hi, .. } => {
                    (Some(date_literal(lo)?), Some(date_literal(hi)?))
                }
                Condition::During { range, .. } => {
                    let (a, b) = during(range, today)?;
                    (Some(a), Some(b))
                }
                Condition::Cmp { op, value, .. } => {
                    let d = date_literal(value)?;
                    match op {
                        CmpOp::Eq => (Some(d), Some(d)),
                        CmpOp::Ge => (Some(d), None),
                        CmpOp::Gt => (Some(d.plus(1)), None),
                        CmpOp::Le => (None, Some(d)),
                        CmpOp::Lt => (None, Some(d.plus(-1))),
                        CmpOp::Ne => {
                            return Err(GaqlError::new(
                                "BAD_OPERATOR",
                                "Operator != is not supported on segments.date.",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(GaqlError::new(
                        "BAD_OPERATOR",
                        "Unsupported operator on segments.date.",
                    ));
                }
            };
            if let Some(a) = a {
                lo = Some(lo.map_or(a, |x| x.max(a)));
            }
            if let Some(b) = b {
                hi = Some(hi.map_or(b, |x| x.min(b)));
            }
            continue;
        }
        if def.res == Res::Segments && !selected.iter().any(|d| d.f == def.f) {
            return Err(GaqlError::new(
                "EXPECTED_FILTERS_ON_DATE_RANGE",
                format!(
                    "The segment '{}' is used in the WHERE clause but not in the SELECT clause.",
                    def.name
                ),
            )
            .with_trigger(def.name));
        }
        filter_uses_metrics |= def.res == Res::Metrics;
        filters.push(match c {
            Condition::Cmp { op, value, .. } => Filter::Cmp(def.f, *op, value.clone()),
            Condition::In {
                negated, values, ..
            } => Filter::In(def.f, *negated, values.clone()),
            Condition::Like {
                negated, pattern, ..
            } => Filter::Like(def.f, *negated, pattern.clone()),
            Condition::IsNull { negated, .. } => Filter::IsNull(def.f, *negated),
            Condition::Between { .. } | Condition::During { .. } => {
                return Err(GaqlError::new(
                    "BAD_OPERATOR",
                    format!(
                        "BETWEEN and DURING apply to date segments only, not '{}'.",
                        def.name
                    ),
                ));
            }
        });
    }
    if date && (lo.is_none() || hi.is_none()) {
        return Err(GaqlError::new(
            "EXPECTED_FILTERS_ON_DATE_RANGE",
            "Filters on date/week/month/quarter/year are not fully specified: selecting segments.date requires a finite date range in the WHERE clause.",
        ));
    }
    let range = (lo.unwrap_or(window.0), hi.unwrap_or(window.1));
    if range.0 > range.1 {
        return Err(GaqlError::new(
            "DATE_RANGE_TOO_NARROW",
            "Filters on date/week/month/quarter have a start date after end date.",
        ));
    }
    let all_metric_fields = metrics
        .iter()
        .copied()
        .chain(filters.iter().map(|f| match f {
            Filter::Cmp(f, ..)
            | Filter::In(f, ..)
            | Filter::Like(f, ..)
            | Filter::IsNull(f, ..) => *f,
        }));
    if action
        && let Some(bad) = all_metric_fields
            .clone()
            .find(|f| f.incompatible_with_conversion_segments())
    {
        let name = fields::FIELDS
            .iter()
            .find(|d| d.f == bad)
            .map_or("metric", |d| d.name);
        return Err(GaqlError::new(
            "PROHIBITED_SEGMENT_WITH_METRIC_IN_SELECT_OR_WHERE_CLAUSE",
            format!("The following segment cannot be selected with the metric '{name}': conversion action segments."),
        )
        .with_trigger(name));
    }
    let mut order = Vec::new();
    for (name, desc) in &q.order_by {
        let def = resolve(name, from)?;
        filter_uses_metrics |= def.res == Res::Metrics;
        order.push((def, *desc));
    }
    let omit_names = q
        .parameters
        .iter()
        .any(|(k, v)| k == "omit_unselected_resource_names" && v.eq_ignore_ascii_case("true"));
    for (k, _) in &q.parameters {
        if k != "omit_unselected_resource_names" && k != "include_drafts" {
            return Err(GaqlError::new(
                "BAD_PARAMETER_NAME",
                format!("Parameter unknown or not supported: {k}."),
            )
            .with_trigger(k.clone()));
        }
    }

    // Output tree: resource names first (Google adds them for every selected resource), then
    // the selected fields, grouped by resource in a stable order.
    let mut defs: Vec<&'static FieldDef> = Vec::new();
    if !omit_names {
        let mut resources: Vec<Res> = selected.iter().map(|d| d.res).collect();
        resources.sort();
        resources.dedup();
        for r in resources {
            if let Some(rn) =
                F::resource_name_of(r).and_then(|f| fields::FIELDS.iter().find(|d| d.f == f))
            {
                defs.push(rn);
            }
        }
        if selected
            .iter()
            .any(|d| d.name.starts_with("ad_group_ad.ad."))
            && let Some(rn) = fields::FIELDS.iter().find(|d| d.f == F::AdResourceName)
        {
            defs.push(rn);
        }
    }
    let mut by_res = selected.clone();
    by_res.sort_by_key(|d| d.res);
    defs.extend(by_res);
    let mut tree = Vec::new();
    for d in defs {
        let mut parts = d.name.split('.');
        let _prefix = parts.next();
        let mut path = vec![d.res.json_key().to_string()];
        path.extend(parts.map(fields::camel));
        insert_node(&mut tree, &path, d);
    }
    let field_mask = selected
        .iter()
        .map(|d| {
            d.name
                .split('.')
                .map(fields::camel)
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect::<Vec<_>>()
        .join(",");
    let needs_metrics = !metrics.is_empty() || date || device || action || filter_uses_metrics;
    Ok(Plan {
        from,
        metrics,
        date,
        device,
        action,
        needs_metrics,
        range,
        filters,
        order,
        limit: q.limit,
        tree,
        field_mask,
    })
}

/// A generated row: indexes of its entities, its segment values and its metrics.
#[derive(Clone, Copy, Debug)]
struct MetricRow {
    c: Option<usize>,
    g: Option<usize>,
    a: Option<usize>,
    day: Option<Day>,
    device: Option<u8>,
    action: Option<u8>,
    m: M,
}

/// Produces rows unit by unit (a unit is one entity of the FROM resource).
struct RowGen {
    model: AccountModel,
    plan: Plan,
    zero_rows: ZeroRows,
    units: Vec<(Option<usize>, Option<usize>, Option<usize>)>,
    next_unit: usize,
    pending: VecDeque<MetricRow>,
    days: Vec<Day>,
}

impl RowGen {
    fn new(model: AccountModel, plan: Plan, zero_rows: ZeroRows) -> Self {
        let units: Vec<_> = match plan.from {
            Res::Customer => vec![(None, None, None)],
            Res::Campaign => (0..model.campaigns.len())
                .map(|c| (Some(c), None, None))
                .collect(),
            Res::AdGroup => model
                .campaigns
                .iter()
                .enumerate()
                .flat_map(|(ci, c)| {
                    (0..c.ad_groups.len()).map(move |gi| (Some(ci), Some(gi), None))
                })
                .collect(),
            _ => model
                .ads()
                .map(|(c, g, a, _)| (Some(c), Some(g), Some(a)))
                .collect(),
        };
        let days = match model.data_days(plan.range.0, plan.range.1) {
            Some((a, b)) => a.through(b).collect(),
            None => Vec::new(),
        };
        RowGen {
            model,
            plan,
            zero_rows,
            units,
            next_unit: 0,
            pending: VecDeque::new(),
            days,
        }
    }

    fn ctx<'a>(&'a self, r: &'a MetricRow) -> RowCtx<'a> {
        let campaign = r.c.and_then(|c| self.model.campaigns.get(c));
        let ad_group = campaign.and_then(|c| r.g.and_then(|g| c.ad_groups.get(g)));
        let ad = ad_group.and_then(|g| r.a.and_then(|a| g.ads.get(a)));
        RowCtx {
            account: &self.model.info,
            campaign,
            ad_group,
            ad,
            m: &r.m,
            day: r.day,
            device: r.device,
            action: r
                .action
                .and_then(|i| self.model.conv_actions.get(usize::from(i))),
        }
    }

    /// Generates the rows of the next unit into `pending`; false when there are no more units.
    fn fill_next(&mut self) -> bool {
        let Some(&(c, g, a)) = self.units.get(self.next_unit) else {
            return false;
        };
        self.next_unit += 1;
        if !self.plan.needs_metrics {
            self.pending.push_back(MetricRow {
                c,
                g,
                a,
                day: None,
                device: None,
                action: None,
                m: M::default(),
            });
            return true;
        }
        let plan = &self.plan;
        let n_days = if plan.date { self.days.len() } else { 1 };
        let n_dev = if plan.device { 3 } else { 1 };
        let n_act = if plan.action {
            self.model.conv_actions.len()
        } else {
            1
        };
        let idx = |d: usize, v: usize, k: usize| (d * n_dev + v) * n_act + k;
        let mut buf = vec![M::default(); n_days * n_dev * n_act];
        let mut exists = vec![false; buf.len()];
        let today = self.model.today;
        for (ci, camp) in self.model.campaigns.iter().enumerate() {
            if c.is_some_and(|x| x != ci) {
                continue;
            }
            let mut weights = [0u64; 3];
            let mut action_idx = [0usize; 3];
            for (j, (ai, w)) in camp.conv.iter().take(3).enumerate() {
                weights[j] = *w;
                action_idx[j] = *ai;
            }
            for (gi, group) in camp.ad_groups.iter().enumerate() {
                if g.is_some_and(|x| x != gi) {
                    continue;
                }
                for (ai, ad) in group.ads.iter().enumerate() {
                    if a.is_some_and(|x| x != ai) {
                        continue;
                    }
                    for (di, day) in self.days.iter().enumerate() {
                        let Some(m) = ad_day(ad, *day, today) else {
                            continue;
                        };
                        let slot = if plan.date { di } else { 0 };
                        let parts: [M; 3] = if plan.device {
                            split(&m, ad.profile.device_w)
                        } else {
                            [m, M::default(), M::default()]
                        };
                        for (v, pm) in parts.iter().enumerate().take(n_dev) {
                            if plan.action {
                                let conv = split_conversions(pm, weights);
                                for j in 0..camp.conv.len().min(3) {
                                    let k = idx(slot, v, action_idx[j]);
                                    if let (Some(cell), Some(e)) =
                                        (buf.get_mut(k), exists.get_mut(k))
                                    {
                                        cell.conversions += conv[j].0;
                                        cell.value_cents += conv[j].1;
                                        *e = true;
                                    }
                                }
                            } else {
                                let k = idx(slot, v, 0);
                                if let (Some(cell), Some(e)) = (buf.get_mut(k), exists.get_mut(k)) {
                                    cell.add(pm);
                                    *e = true;
                                }
                            }
                        }
                    }
                }
            }
        }
        let segmented = plan.segmented();
        for d in 0..n_days {
            for v in 0..n_dev {
                for k in 0..n_act {
                    let i = idx(d, v, k);
                    let (Some(m), Some(&e)) = (buf.get(i), exists.get(i)) else {
                        continue;
                    };
                    let row = MetricRow {
                        c,
                        g,
                        a,
                        day: plan.date.then(|| self.days.get(d).copied()).flatten(),
                        device: plan.device.then_some(v as u8),
                        action: plan.action.then_some(k as u8),
                        m: *m,
                    };
                    if segmented {
                        let keep = match self.zero_rows {
                            ZeroRows::Include => e,
                            ZeroRows::Omit if plan.metrics.is_empty() => !m.is_zero(),
                            ZeroRows::Omit => {
                                let ctx = self.ctx(&row);
                                plan.metrics.iter().any(|f| !get(*f, &ctx).is_zero())
                            }
                        };
                        if !keep {
                            continue;
                        }
                    }
                    self.pending.push_back(row);
                }
            }
        }
        true
    }

    fn passes(&self, r: &MetricRow) -> bool {
        let ctx = self.ctx(r);
        self.plan.filters.iter().all(|f| filter_matches(f, &ctx))
    }

    /// The next row that passes the filters.
    fn next_row(&mut self) -> Option<MetricRow> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                if self.passes(&r) {
                    return Some(r);
                }
                continue;
            }
            if !self.fill_next() {
                return None;
            }
        }
    }

    fn write_row(&self, r: &MetricRow, overrides: &HashMap<F, Value>, out: &mut Vec<u8>) {
        let ctx = self.ctx(r);
        write_nodes(&self.plan.tree, &ctx, overrides, out);
    }
}

fn write_nodes(nodes: &[Node], ctx: &RowCtx<'_>, overrides: &HashMap<F, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, n) in nodes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match n {
            Node::Leaf { key, def } => {
                json::key(out, key);
                match overrides.get(&def.f) {
                    Some(v) => json::value(out, v),
                    None => get(def.f, ctx).write(def.kind, out),
                }
            }
            Node::Obj { key, children } => {
                json::key(out, key);
                write_nodes(children, ctx, overrides, out);
            }
        }
    }
    out.push(b'}');
}

fn like(pattern: &str, text: &str) -> bool {
    fn rec(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| rec(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && rec(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && rec(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    rec(&p, &t)
}

fn filter_matches(f: &Filter, ctx: &RowCtx<'_>) -> bool {
    match f {
        Filter::Cmp(field, op, lit) => {
            let v = get(*field, ctx);
            let ord = match (lit, v.num()) {
                (Literal::Num(n, _), Some(x)) => x.total_cmp(n),
                _ => v.text().as_str().cmp(lit.text()),
            };
            match op {
                CmpOp::Eq => ord.is_eq(),
                CmpOp::Ne => !ord.is_eq(),
                CmpOp::Gt => ord.is_gt(),
                CmpOp::Ge => ord.is_ge(),
                CmpOp::Lt => ord.is_lt(),
                CmpOp::Le => ord.is_le(),
            }
        }
        Filter::In(field, negated, values) => {
            let v = get(*field, ctx);
            let text = v.text();
            let hit = values.iter().any(|l| match (l, v.num()) {
                (Literal::Num(n, _), Some(x)) => x == *n,
                _ => l.text() == text,
            });
            hit != *negated
        }
        Filter::Like(field, negated, pattern) => {
            like(pattern, &get(*field, ctx).text()) != *negated
        }
        Filter::IsNull(field, negated) => (get(*field, ctx) == Val::Null) != *negated,
    }
}

/// Where rows come from: live generation, or a sorted buffer for ORDER BY.
enum Source {
    Live,
    Sorted(std::vec::IntoIter<MetricRow>),
}

/// Streams the response: `[` batch `,` batch … `]`.
struct BatchStream {
    rows: RowGen,
    source: Source,
    overrides: HashMap<F, Value>,
    batch_rows: usize,
    request_id: String,
    remaining: Option<u64>,
    started: bool,
    finished: bool,
    malformed: bool,
}

impl BatchStream {
    fn next_row(&mut self) -> Option<MetricRow> {
        if self.remaining == Some(0) {
            return None;
        }
        let r = match &mut self.source {
            Source::Live => self.rows.next_row(),
            Source::Sorted(it) => it.next(),
        }?;
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
        }
        Some(r)
    }

    fn batch(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut n = 0;
        while n < self.batch_rows {
            let Some(r) = self.next_row() else { break };
            if n == 0 {
                out.extend_from_slice(b"{\"results\":[");
            } else {
                out.push(b',');
            }
            self.rows.write_row(&r, &self.overrides, &mut out);
            n += 1;
        }
        if n == 0 {
            if self.started {
                return None;
            }
            out.push(b'{');
        } else {
            out.extend_from_slice(b"],");
        }
        json::key(&mut out, "fieldMask");
        json::string(&mut out, &self.rows.plan.field_mask);
        out.push(b',');
        json::key(&mut out, "requestId");
        json::string(&mut out, &self.request_id);
        out.push(b'}');
        Some(out)
    }
}

impl Iterator for BatchStream {
    type Item = Result<Bytes, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let first = !self.started;
        let batch = self.batch();
        self.started = true;
        let chunk = match batch {
            Some(b) => {
                let mut chunk = Vec::with_capacity(b.len() + 1);
                chunk.push(if first { b'[' } else { b',' });
                chunk.extend_from_slice(&b);
                if self.malformed {
                    self.finished = true;
                    chunk = crate::faults::truncate(chunk);
                }
                chunk
            }
            None => {
                self.finished = true;
                b"]".to_vec()
            }
        };
        Some(Ok(Bytes::from(chunk)))
    }
}

fn request_id(seed: u64, customer: u64, query: &str, today: Day) -> String {
    let mut h = H::new(seed).with(customer).with_i(i64::from(today.0));
    for chunk in query.as_bytes().chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        h = h.with(u64::from_le_bytes(b));
    }
    let bytes: Vec<u8> = [h.0, h.with(1).0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..16])
}

/// The searchStream handler.
pub async fn search_stream(
    State(st): State<Arc<AppState>>,
    Path((version, customer, method)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wrap = st.cfg.google_error_shape == GoogleErrorShape::Array;
    let today = st.today();
    let query_text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let cid = customer.parse::<u64>().unwrap_or(0);
    let rid = request_id(st.cfg.generator.seed, cid, &query_text, today);
    let fail = |e: GoogleApiError| e.render(Some(&version), &rid, SERVICE, wrap);

    if method != "googleAds:searchStream" {
        return fail(GoogleApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Method not found: {method}. The emulator serves googleAds:searchStream."),
        ));
    }
    // Authentication first, as Google's front end does.
    let token = match bearer(&headers) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return fail(auth_error(true, false)),
    };
    match st.tokens.check(TokenKind::Google, &token) {
        TokenCheck::Valid => {}
        TokenCheck::Expired => return fail(auth_error(false, true)),
        TokenCheck::Unknown => return fail(auth_error(false, false)),
    }
    let dev_token = headers
        .get("developer-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if dev_token.is_empty() {
        return fail(request_error(
            "DEVELOPER_TOKEN_PARAMETER_MISSING",
            "developer-token parameter is missing.".into(),
        ));
    }
    if let Some(login) = headers.get("login-customer-id") {
        let ok = login
            .to_str()
            .is_ok_and(|s| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return fail(GoogleApiError::ads(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                AdsErrorDetail {
                    kind: "headerError",
                    code: "INVALID_LOGIN_CUSTOMER_ID",
                    message: "The login customer ID could not be validated: it must be digits only, without dashes.".into(),
                    trigger: None,
                    quota: None,
                },
            ));
        }
    }
    if customer.is_empty() || customer.len() > 10 || !customer.bytes().all(|b| b.is_ascii_digit()) {
        return fail(request_error(
            "INVALID_CUSTOMER_ID",
            format!("Invalid customer ID '{customer}': it must be 10 digits without dashes."),
        ));
    }

    let decision = lock(&st.faults).next(FaultPlatform::GoogleAds);
    match decision.action {
        Action::Throttle { .. } => return fail(quota_error()),
        Action::ServerError => return fail(GoogleApiError::unavailable()),
        Action::ExpireToken => {
            st.tokens.expire(&token);
            return fail(auth_error(false, true));
        }
        Action::Proceed => {}
    }

    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return fail(GoogleApiError::invalid_argument(format!(
                "Invalid JSON payload received. {e}"
            )));
        }
    };
    let Some(obj) = parsed.as_object() else {
        return fail(GoogleApiError::invalid_argument(
            "Invalid JSON payload received. Expected an object.",
        ));
    };
    for k in obj.keys() {
        if k != "query" && k != "summaryRowSetting" {
            return fail(GoogleApiError::invalid_argument(format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            )));
        }
    }
    if let Some(s) = obj.get("summaryRowSetting").and_then(Value::as_str)
        && s != "NO_SUMMARY_ROW"
        && s != "UNSPECIFIED"
    {
        return fail(request_error(
            "INVALID_INPUT",
            format!("summaryRowSetting {s} is not supported by the emulator."),
        ));
    }
    if query_text.trim().is_empty() {
        return fail(query_error(GaqlError::new(
            "QUERY_ERROR",
            "The query is empty.",
        )));
    }
    let window = st.generator.window(today);
    let plan = match gaql::parse(&query_text).and_then(|q| plan(&q, today, window)) {
        Ok(p) => p,
        Err(e) => return fail(query_error(e)),
    };
    let model = st.generator.model(Platform::GoogleAds, cid, today);
    let overrides: HashMap<F, Value> = decision
        .overrides_for("searchStream")
        .filter_map(|r| lookup(&r.field).map(|d| (d.f, r.value.clone())))
        .collect();
    let mut rowgen = RowGen::new(model, plan, st.cfg.zero_rows);
    let source = if rowgen.plan.order.is_empty() {
        Source::Live
    } else {
        let mut sorted = Vec::new();
        while let Some(r) = rowgen.next_row() {
            sorted.push(r);
        }
        let order = rowgen.plan.order.clone();
        sorted.sort_by(|x, y| {
            let (cx, cy) = (rowgen.ctx(x), rowgen.ctx(y));
            order
                .iter()
                .map(|(def, desc)| {
                    let o = get(def.f, &cx).cmp_val(&get(def.f, &cy));
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| !o.is_eq())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Source::Sorted(sorted.into_iter())
    };
    let remaining = rowgen.plan.limit;
    let stream = BatchStream {
        rows: rowgen,
        source,
        overrides,
        batch_rows: st.cfg.batch_rows.max(1),
        request_id: rid,
        remaining,
        started: false,
        finished: false,
        malformed: decision.malformed,
    };
    let mut resp = Response::new(Body::from_stream(futures::stream::iter(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    resp
}

/// Runs a GAQL query in-process and returns the exact response body searchStream would stream
/// (for tests and benchmarks).
pub fn render_query(state: &AppState, customer: u64, query: &str) -> Result<Vec<u8>, GaqlError> {
    let today = state.today();
    let q = gaql::parse(query)?;
    let plan = plan(&q, today, state.generator.window(today))?;
    let model = state.generator.model(Platform::GoogleAds, customer, today);
    let stream = BatchStream {
        rows: RowGen::new(model, plan, state.cfg.zero_rows),
        source: Source::Live,
        overrides: HashMap::new(),
        batch_rows: state.cfg.batch_rows.max(1),
        request_id: request_id(state.cfg.generator.seed, customer, query, today),
        remaining: q.limit,
        started: false,
        finished: false,
        malformed: false,
    };
    let mut body = Vec::new();
    for chunk in stream.flatten() {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Runs a GAQL query in-process and returns the parsed batches.
pub fn run_query(state: &AppState, customer: u64, query: &str) -> Result<Vec<Value>, GaqlError> {
    let body = render_query(state, customer, query)?;
    Ok(serde_json::from_slice::<Vec<Value>>(&body).unwrap_or_default())
}
