//! GA4 Data API: `properties/{id}:runReport`, daily sessions by source / medium / campaign /
//! channel group / device / country, with offset paging to `rowCount`.
//!
//! GA4 returns every value as a string, in the order of the requested dimensions and metrics;
//! the header names are checked against the request so a reordered or renamed column is an
//! error, not silently shifted data.

use std::time::Duration;

use mi_common::Platform;
use mi_schemas::RawGaSessions;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::fields::{self, at};
use crate::auth::GoogleTokens;
use crate::error::{ExtractError, Where};
use crate::http::{self, Attempt};
use crate::publish::Transaction;
use crate::run::RunContext;
use crate::settings::Ga4Connection;

const DIMENSIONS: [&str; 7] = [
    "date",
    "sessionSource",
    "sessionMedium",
    "sessionCampaignName",
    "sessionDefaultChannelGroup",
    "deviceCategory",
    "country",
];
const METRICS: [&str; 7] = [
    "sessions",
    "engagedSessions",
    "screenPageViews",
    "userEngagementDuration",
    "transactions",
    "purchaseRevenue",
    "keyEvents",
];

pub async fn extract(
    ctx: &RunContext<'_>,
    conn: &Ga4Connection,
    tx: &mut Transaction<'_>,
) -> Result<(), ExtractError> {
    let what = |s: &str| format!("tenant {} ga4 {s}", ctx.tenant);
    let tokens = GoogleTokens::new(
        conn.oauth.client_id.clone(),
        conn.oauth.client_secret.resolve(&what("client_secret"))?,
        conn.oauth.refresh_token.resolve(&what("refresh_token"))?,
        ctx.endpoints.google_token_url.clone(),
        ctx.api.http.clone(),
    );
    for property in &conn.property_ids {
        property_report(ctx, &tokens, property, tx).await?;
    }
    Ok(())
}

async fn property_report(
    ctx: &RunContext<'_>,
    tokens: &GoogleTokens,
    property: &str,
    tx: &mut Transaction<'_>,
) -> Result<(), ExtractError> {
    let w = Where::new(Platform::Ga4, property, "runReport");
    let url = format!(
        "{}/v1beta/properties/{property}:runReport",
        ctx.endpoints.ga4_base
    );
    let mut offset: u64 = 0;
    loop {
        let body = json!({
            "dateRanges": [{"startDate": ctx.window.from.to_string(), "endDate": ctx.window.to.to_string()}],
            "dimensions": DIMENSIONS.iter().map(|d| json!({"name": d})).collect::<Vec<_>>(),
            "metrics": METRICS.iter().map(|m| json!({"name": m})).collect::<Vec<_>>(),
            "limit": ctx.page_size,
            "offset": offset,
            "keepEmptyRows": false,
            "returnPropertyQuota": true,
        });
        let page = ctx
            .api
            .call(&w, || async {
                let token = match tokens.access_token(&w).await {
                    Ok(t) => t,
                    Err(e) => return Attempt::Fail(e),
                };
                let (status, hint, bytes) = match http::send(
                    ctx.api
                        .http
                        .post(&url)
                        .bearer_auth(token.expose_secret())
                        .json(&body),
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
                if status.is_success() {
                    return match fields::parse_body(&bytes, &w) {
                        Ok(v) => Attempt::Done(v),
                        Err(e) => Attempt::Fail(e),
                    };
                }
                let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let message = at(&error, "error.message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("no message")
                    .to_owned();
                match status {
                    StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                        after: hint.or(Some(Duration::from_secs(1))),
                        reason: format!("429 quota: {message}"),
                    },
                    StatusCode::UNAUTHORIZED => {
                        tokens.invalidate().await;
                        Attempt::Reauthenticate {
                            reason: format!("401: {message}"),
                        }
                    }
                    s if s.is_server_error() => Attempt::Retry {
                        after: hint,
                        reason: format!("{s}: {message}"),
                    },
                    s => Attempt::Fail(ExtractError::Api {
                        at: w.clone(),
                        status: s.as_u16(),
                        message,
                    }),
                }
            })
            .await?;

        check_headers(&page, "dimensionHeaders", &DIMENSIONS, &w)?;
        check_headers(&page, "metricHeaders", &METRICS, &w)?;
        let currency = fields::string(&page, "metadata.currencyCode", &w)?;
        let total = fields::opt_i64(&page, "rowCount", &w)?.unwrap_or(0).max(0) as u64;
        if offset == 0 {
            ctx.progress.inc_length(total);
        }
        let rows = match page.get("rows") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(rows)) => rows,
            Some(other) => {
                return Err(ExtractError::malformed(
                    &w,
                    "rows",
                    format!("expected a list, got {other}"),
                ));
            }
        };
        for (i, row) in rows.iter().enumerate() {
            let d = |k: usize| cell(row, "dimensionValues", k, &w);
            let m = |k: usize| cell(row, "metricValues", k, &w);
            let name = |k: usize| {
                format!(
                    "rows[{}].metricValues[{}] ({})",
                    offset + i as u64,
                    k,
                    METRICS[k]
                )
            };
            let int = |k: usize| -> Result<i64, ExtractError> {
                fields::count(&m(k)?, "value", &w).map_err(|_| {
                    ExtractError::malformed(&w, name(k), "expected a non-negative integer")
                })
            };
            tx.publish(&RawGaSessions {
                tenant_id: ctx.tenant.to_string(),
                platform: Platform::Ga4,
                account_id: property.to_owned(),
                extracted_at: ctx.extracted_at,
                run_id: ctx.run_id.to_owned(),
                date: fields::date(&d(0)?, "value", &w)?,
                source: fields::string(&d(1)?, "value", &w)?,
                medium: fields::string(&d(2)?, "value", &w)?,
                campaign: fields::string(&d(3)?, "value", &w)?,
                channel_group: fields::string(&d(4)?, "value", &w)?,
                device: fields::string(&d(5)?, "value", &w)?,
                country: fields::string(&d(6)?, "value", &w)?,
                currency: currency.clone(),
                sessions: int(0)?,
                engaged_sessions: int(1)?,
                screen_page_views: int(2)?,
                session_duration_seconds: int(3)?,
                transactions: int(4)?,
                purchase_revenue_micros: fields::micros(&m(5)?, "value", &w).map_err(|_| {
                    ExtractError::malformed(&w, name(5), "expected a non-negative amount")
                })?,
                key_events: fields::amount(&m(6)?, "value", &w).map_err(|_| {
                    ExtractError::malformed(&w, name(6), "expected a non-negative number")
                })?,
            })
            .await?;
        }
        ctx.progress.inc(rows.len() as u64);
        offset += rows.len() as u64;
        if rows.is_empty() || offset >= total {
            return Ok(());
        }
    }
}

fn cell(row: &Value, list: &str, k: usize, w: &Where) -> Result<Value, ExtractError> {
    row.get(list)
        .and_then(|l| l.get(k))
        .cloned()
        .ok_or_else(|| ExtractError::malformed(w, format!("{list}[{k}]"), "missing"))
}

fn check_headers(
    page: &Value,
    key: &str,
    expected: &[&str],
    w: &Where,
) -> Result<(), ExtractError> {
    let names: Vec<&str> = page
        .get(key)
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(|h| h.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names != expected {
        return Err(ExtractError::malformed(
            w,
            key,
            format!("expected {expected:?}, got {names:?}"),
        ));
    }
    Ok(())
}
