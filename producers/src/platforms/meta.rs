//! Meta Marketing API (Graph): `/{act_id}/campaigns|adsets|ads` snapshots and
//! `/{act_id}/insights?level=ad&time_increment=1` daily metrics, with cursor paging.
//!
//! Meta reports money as decimal strings in the account currency, conversions as `actions` /
//! `action_values` lists keyed by `action_type`, and signals throttling with error codes 4, 17,
//! 613 (plus usage headers) and token expiry with code 190.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mi_common::Platform;
use mi_schemas::{RawAd, RawAdGroup, RawAdPerformance, RawCampaign, RawConversion};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::fields::{self, at};
use crate::auth::MetaTokens;
use crate::error::{ExtractError, Where};
use crate::http::{self, Attempt};
use crate::publish::Transaction;
use crate::run::RunContext;
use crate::settings::MetaConnection;

/// Action types counted as conversions, with the category they map to. Meta reports many
/// overlapping action types (`purchase`, `omni_purchase`, `offsite_conversion.fb_pixel_purchase`
/// …); counting only the canonical ones avoids counting one purchase several times.
const CONVERSION_ACTIONS: &[(&str, &str)] =
    &[("purchase", "PURCHASE"), ("lead", "SUBMIT_LEAD_FORM")];

/// Graph edges hide deleted and archived objects unless asked for every status; SCD2 history
/// needs to see an entity being deleted, so every snapshot asks for all of them.
const ALL_STATUSES: &str = r#"["ACTIVE","PAUSED","DELETED","ARCHIVED","IN_PROCESS","WITH_ISSUES","CAMPAIGN_PAUSED","ADSET_PAUSED","DISAPPROVED","PENDING_REVIEW","PREAPPROVED","PENDING_BILLING_INFO"]"#;

pub async fn extract(
    ctx: &RunContext<'_>,
    conn: &MetaConnection,
    tx: &mut Transaction<'_>,
) -> Result<(), ExtractError> {
    let what = |s: &str| format!("tenant {} meta_ads {s}", ctx.tenant);
    let tokens = MetaTokens::new(
        conn.app_id.clone(),
        conn.app_secret.resolve(&what("app_secret"))?,
        conn.access_token.resolve(&what("access_token"))?,
        format!(
            "{}/{}/oauth/access_token",
            ctx.endpoints.meta_base, ctx.endpoints.meta_version
        ),
        ctx.api.http.clone(),
    );
    let client = Client { ctx, tokens };
    ctx.progress.inc_length(conn.account_ids.len() as u64 * 4);
    for account in &conn.account_ids {
        client.account(account, tx).await?;
    }
    Ok(())
}

struct Client<'a> {
    ctx: &'a RunContext<'a>,
    tokens: MetaTokens,
}

fn updated(row: &Value, w: &Where) -> Result<Option<DateTime<Utc>>, ExtractError> {
    match fields::opt_string(row, "updated_time", w)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%z")
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| {
                ExtractError::malformed(
                    w,
                    "updated_time",
                    format!("expected an ISO 8601 time, got {s:?}"),
                )
            }),
    }
}

/// Meta budgets are in the currency's minor unit (cents): to micros.
fn budget_micros(row: &Value, path: &str, w: &Where) -> Result<Option<i64>, ExtractError> {
    Ok(fields::opt_i64(row, path, w)?
        .filter(|b| *b > 0)
        .map(|cents| cents * 10_000))
}

fn date_of(row: &Value, path: &str, w: &Where) -> Result<Option<chrono::NaiveDate>, ExtractError> {
    match fields::opt_string(row, path, w)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%z")
            .map(|d| Some(d.date_naive()))
            .or_else(|_| fields::opt_date(row, path, w)),
    }
}

/// Sums the values of the listed action types in an `actions`-style list.
fn actions(
    row: &Value,
    path: &str,
    types: &[&str],
    w: &Where,
    as_micros: bool,
) -> Result<BTreeMap<String, i64>, ExtractError> {
    let mut out = BTreeMap::new();
    let list = match at(row, path) {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(ExtractError::malformed(
                w,
                path,
                format!("expected a list, got {other}"),
            ));
        }
    };
    for item in list {
        let kind = fields::string(item, "action_type", w)?;
        if !types.contains(&kind.as_str()) {
            continue;
        }
        let field = format!("{path}[{kind}].value");
        let value = if as_micros {
            fields::micros(item, "value", w)
                .map_err(|_| ExtractError::malformed(w, &field, "expected an amount"))?
        } else {
            fields::count(item, "value", w)
                .map_err(|_| ExtractError::malformed(w, &field, "expected a count"))?
        };
        *out.entry(kind).or_default() += value;
    }
    Ok(out)
}

impl Client<'_> {
    async fn account(&self, account: &str, tx: &mut Transaction<'_>) -> Result<(), ExtractError> {
        let ctx = self.ctx;
        let envelope = || {
            (
                ctx.tenant.to_string(),
                account.to_owned(),
                ctx.extracted_at,
                ctx.run_id.to_owned(),
            )
        };

        let (w, rows) = self
            .pages(account, "campaigns", &[("effective_status", ALL_STATUSES), ("fields", "id,name,status,objective,bid_strategy,daily_budget,lifetime_budget,start_time,stop_time,updated_time")])
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            let daily = budget_micros(row, "daily_budget", &w)?;
            let lifetime = budget_micros(row, "lifetime_budget", &w)?;
            tx.publish(&RawCampaign {
                tenant_id,
                platform: Platform::MetaAds,
                account_id,
                extracted_at,
                run_id,
                campaign_id: fields::string(row, "id", &w)?,
                name: fields::string(row, "name", &w)?,
                status: fields::string(row, "status", &w)?,
                channel_type: fields::opt_string(row, "objective", &w)?,
                bidding_strategy: fields::opt_string(row, "bid_strategy", &w)?,
                budget_micros: daily.or(lifetime),
                budget_period: daily
                    .map(|_| "DAILY")
                    .or(lifetime.map(|_| "LIFETIME"))
                    .map(str::to_owned),
                start_date: date_of(row, "start_time", &w)?,
                end_date: date_of(row, "stop_time", &w)?,
                changed_at: updated(row, &w)?,
            })
            .await?;
        }

        let (w, rows) = self
            .pages(account, "adsets", &[("effective_status", ALL_STATUSES), ("fields", "id,name,status,campaign_id,optimization_goal,bid_amount,daily_budget,lifetime_budget,updated_time")])
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawAdGroup {
                tenant_id,
                platform: Platform::MetaAds,
                account_id,
                extracted_at,
                run_id,
                ad_group_id: fields::string(row, "id", &w)?,
                campaign_id: fields::string(row, "campaign_id", &w)?,
                name: fields::string(row, "name", &w)?,
                status: fields::string(row, "status", &w)?,
                ad_group_type: fields::opt_string(row, "optimization_goal", &w)?,
                bid_micros: budget_micros(row, "bid_amount", &w)?,
                budget_micros: budget_micros(row, "daily_budget", &w)?.or(budget_micros(
                    row,
                    "lifetime_budget",
                    &w,
                )?),
                changed_at: updated(row, &w)?,
            })
            .await?;
        }

        let (w, rows) = self
            .pages(
                account,
                "ads",
                &[
                    ("effective_status", ALL_STATUSES),
                    (
                        "fields",
                        "id,name,status,adset_id,campaign_id,creative{title,link_url},updated_time",
                    ),
                ],
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawAd {
                tenant_id,
                platform: Platform::MetaAds,
                account_id,
                extracted_at,
                run_id,
                ad_id: fields::string(row, "id", &w)?,
                ad_group_id: fields::string(row, "adset_id", &w)?,
                campaign_id: fields::string(row, "campaign_id", &w)?,
                name: fields::string(row, "name", &w)?,
                status: fields::string(row, "status", &w)?,
                ad_type: None,
                headline: fields::opt_string(row, "creative.title", &w)?,
                final_url: fields::opt_string(row, "creative.link_url", &w)?,
                changed_at: updated(row, &w)?,
            })
            .await?;
        }

        let time_range =
            json!({"since": ctx.window.from.to_string(), "until": ctx.window.to.to_string()})
                .to_string();
        let (w, rows) = self
            .pages(
                account,
                "insights",
                &[
                    ("level", "ad"),
                    ("time_increment", "1"),
                    ("time_range", &time_range),
                    ("fields", "account_currency,campaign_id,adset_id,ad_id,date_start,impressions,clicks,spend,reach,actions,action_values,video_thruplay_watched_actions,inline_post_engagement"),
                ],
            )
            .await?;
        let types: Vec<&str> = CONVERSION_ACTIONS.iter().map(|(t, _)| *t).collect();
        let mut by_campaign: BTreeMap<(chrono::NaiveDate, String, String), (i64, i64)> =
            BTreeMap::new();
        let mut currency = String::new();
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            let date = fields::date(row, "date_start", &w)?;
            let campaign_id = fields::string(row, "campaign_id", &w)?;
            currency = fields::string(row, "account_currency", &w)?;
            let counts = actions(row, "actions", &types, &w, false)?;
            let values = actions(row, "action_values", &types, &w, true)?;
            for (kind, n) in &counts {
                let e = by_campaign
                    .entry((date, campaign_id.clone(), kind.clone()))
                    .or_default();
                e.0 += n;
                e.1 += values.get(kind).copied().unwrap_or(0);
            }
            let video = actions(
                row,
                "video_thruplay_watched_actions",
                &["video_view"],
                &w,
                false,
            )?;
            tx.publish(&RawAdPerformance {
                tenant_id,
                platform: Platform::MetaAds,
                account_id,
                extracted_at,
                run_id,
                date,
                campaign_id,
                ad_group_id: fields::string(row, "adset_id", &w)?,
                ad_id: fields::string(row, "ad_id", &w)?,
                device: None,
                country: None,
                currency: currency.clone(),
                impressions: fields::count(row, "impressions", &w)?,
                clicks: fields::count(row, "clicks", &w)?,
                cost_micros: fields::micros(row, "spend", &w)?,
                conversions: counts.values().sum::<i64>() as f64,
                conversion_value_micros: values.values().sum(),
                video_views: Some(video.values().sum()),
                engagements: fields::opt_i64(row, "inline_post_engagement", &w)?,
                reach: Some(fields::count(row, "reach", &w)?),
            })
            .await?;
        }
        for ((date, campaign_id, kind), (n, value)) in by_campaign {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            let category = CONVERSION_ACTIONS
                .iter()
                .find(|(t, _)| *t == kind)
                .map(|(_, c)| *c)
                .unwrap_or("OTHER");
            tx.publish(&RawConversion {
                tenant_id,
                platform: Platform::MetaAds,
                account_id,
                extracted_at,
                run_id,
                date,
                campaign_id,
                conversion_action: kind,
                category: category.to_owned(),
                currency: currency.clone(),
                conversions: n as f64,
                conversion_value_micros: value,
            })
            .await?;
        }
        Ok(())
    }

    /// Follows `paging.cursors.after` until Meta stops returning a `next` page.
    async fn pages(
        &self,
        account: &str,
        edge: &str,
        params: &[(&str, &str)],
    ) -> Result<(Where, Vec<Value>), ExtractError> {
        let ctx = self.ctx;
        let w = Where::new(Platform::MetaAds, account, edge);
        let url = format!(
            "{}/{}/{account}/{edge}",
            ctx.endpoints.meta_base, ctx.endpoints.meta_version
        );
        let limit = ctx.page_size.to_string();
        let mut rows = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = ctx
                .api
                .call(&w, || async {
                    let token = self.tokens.access_token().await;
                    let mut query: Vec<(&str, &str)> = params.to_vec();
                    query.push(("limit", &limit));
                    if let Some(cursor) = &after {
                        query.push(("after", cursor));
                    }
                    let (status, hint, bytes) = match http::send(
                        ctx.api
                            .http
                            .get(&url)
                            .bearer_auth(token.expose_secret())
                            .query(&query),
                    )
                    .await
                    {
                        Ok(r) => (r.status, r.retry_after, r.body),
                        Err(reason) => {
                            return Attempt::Retry {
                                after: None,
                                reason,
                            };
                        }
                    };
                    let body = fields::parse_body(&bytes, &w);
                    match body {
                        Ok(v) if status.is_success() => Attempt::Done(v),
                        Ok(v) => self.classify(status.as_u16(), hint, &v, &token, &w).await,
                        Err(e) if status.is_success() => Attempt::Fail(e),
                        Err(_) if status.is_server_error() => Attempt::Retry {
                            after: hint,
                            reason: format!("{status}"),
                        },
                        Err(e) => Attempt::Fail(e),
                    }
                })
                .await?;
            match page.get("data") {
                Some(Value::Array(data)) => rows.extend(data.iter().cloned()),
                other => {
                    return Err(ExtractError::malformed(
                        &w,
                        "data",
                        format!(
                            "expected a list, got {}",
                            other.map_or("nothing".into(), |v| v.to_string())
                        ),
                    ));
                }
            }
            let has_next = at(&page, "paging.next").is_some();
            after = if has_next {
                fields::opt_string(&page, "paging.cursors.after", &w)?
            } else {
                None
            };
            if after.is_none() {
                break;
            }
        }
        ctx.progress.inc(1);
        Ok((w, rows))
    }

    /// Meta's error codes: 4/17/613/80004 are throttling, 190 an expired or invalid token,
    /// 1/2 and 5xx transient; anything else fails the run with Meta's message.
    async fn classify<T>(
        &self,
        status: u16,
        hint: Option<Duration>,
        body: &Value,
        token: &SecretString,
        w: &Where,
    ) -> Attempt<T> {
        let code = at(body, "error.code").and_then(Value::as_i64).unwrap_or(0);
        let message = at(body, "error.message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_owned();
        match code {
            4 | 17 | 613 | 80000..=80014 => Attempt::Retry {
                after: hint.or(Some(Duration::from_secs(1))),
                reason: format!("throttled (code {code}): {message}"),
            },
            190 => match self.tokens.renew(token, w).await {
                Ok(()) => Attempt::Reauthenticate {
                    reason: format!("code 190: {message}"),
                },
                Err(e) => Attempt::Fail(e),
            },
            1 | 2 => Attempt::Retry {
                after: hint,
                reason: format!("transient (code {code}): {message}"),
            },
            _ if status >= 500 => Attempt::Retry {
                after: hint,
                reason: format!("{status}: {message}"),
            },
            _ => Attempt::Fail(ExtractError::Api {
                at: w.clone(),
                status,
                message: format!("code {code}: {message}"),
            }),
        }
    }
}
