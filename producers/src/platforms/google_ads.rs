//! Google Ads API (REST): `customers/{id}/googleAds:searchStream` with GAQL.
//!
//! One query per entity type (campaign, ad_group, ad_group_ad) for snapshots, one for daily ad
//! metrics by device, one for daily conversions by conversion action. Responses follow the
//! proto3 JSON mapping: camelCase names, int64 as strings, zero values omitted.

use std::time::Duration;

use mi_common::Platform;
use mi_schemas::{RawAd, RawAdGroup, RawAdPerformance, RawCampaign, RawConversion};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::fields::{self, at};
use crate::auth::GoogleTokens;
use crate::error::{ExtractError, Where};
use crate::http::{self, Attempt, proto_duration};
use crate::publish::Transaction;
use crate::run::RunContext;
use crate::settings::GoogleAdsConnection;

pub async fn extract(
    ctx: &RunContext<'_>,
    conn: &GoogleAdsConnection,
    tx: &mut Transaction<'_>,
) -> Result<(), ExtractError> {
    let what = |s: &str| format!("tenant {} google_ads {s}", ctx.tenant);
    let tokens = GoogleTokens::new(
        conn.oauth.client_id.clone(),
        conn.oauth.client_secret.resolve(&what("client_secret"))?,
        conn.oauth.refresh_token.resolve(&what("refresh_token"))?,
        ctx.endpoints.google_token_url.clone(),
        ctx.api.http.clone(),
    );
    let client = Client {
        ctx,
        tokens,
        developer_token: conn.developer_token.resolve(&what("developer_token"))?,
        login_customer_id: conn.login_customer_id.clone(),
    };
    ctx.progress.inc_length(conn.customer_ids.len() as u64 * 6);
    for customer in &conn.customer_ids {
        client.customer(customer, tx).await?;
    }
    Ok(())
}

struct Client<'a> {
    ctx: &'a RunContext<'a>,
    tokens: GoogleTokens,
    developer_token: secrecy::SecretString,
    login_customer_id: Option<String>,
}

impl Client<'_> {
    async fn customer(&self, customer: &str, tx: &mut Transaction<'_>) -> Result<(), ExtractError> {
        let ctx = self.ctx;
        let (from, to) = (ctx.window.from, ctx.window.to);
        let envelope = || {
            (
                ctx.tenant.to_string(),
                customer.to_owned(),
                ctx.extracted_at,
                ctx.run_id.to_owned(),
            )
        };

        let (w, rows) = self
            .search(
                customer,
                "customer",
                "SELECT customer.currency_code FROM customer",
            )
            .await?;
        let currency = rows
            .first()
            .map(|r| fields::string(r, "customer.currencyCode", &w))
            .transpose()?
            .ok_or_else(|| {
                ExtractError::malformed(&w, "customer.currencyCode", "no customer row")
            })?;

        let (w, rows) = self
            .search(
                customer,
                "campaign",
                "SELECT campaign.id, campaign.name, campaign.status, campaign.advertising_channel_type, \
                 campaign.bidding_strategy_type, campaign_budget.amount_micros, campaign.start_date, \
                 campaign.end_date FROM campaign",
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawCampaign {
                tenant_id,
                platform: Platform::GoogleAds,
                account_id,
                extracted_at,
                run_id,
                campaign_id: fields::string(row, "campaign.id", &w)?,
                name: fields::string(row, "campaign.name", &w)?,
                status: fields::string(row, "campaign.status", &w)?,
                channel_type: fields::opt_string(row, "campaign.advertisingChannelType", &w)?,
                bidding_strategy: fields::opt_string(row, "campaign.biddingStrategyType", &w)?,
                budget_micros: fields::opt_i64(row, "campaignBudget.amountMicros", &w)?,
                budget_period: at(row, "campaignBudget.amountMicros").map(|_| "DAILY".to_owned()),
                start_date: fields::opt_date(row, "campaign.startDate", &w)?,
                end_date: fields::opt_date(row, "campaign.endDate", &w)?,
                changed_at: None,
            })
            .await?;
        }

        let (w, rows) = self
            .search(
                customer,
                "ad_group",
                "SELECT ad_group.id, ad_group.name, ad_group.status, ad_group.type, \
                 ad_group.cpc_bid_micros, campaign.id FROM ad_group",
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawAdGroup {
                tenant_id,
                platform: Platform::GoogleAds,
                account_id,
                extracted_at,
                run_id,
                ad_group_id: fields::string(row, "adGroup.id", &w)?,
                campaign_id: fields::string(row, "campaign.id", &w)?,
                name: fields::string(row, "adGroup.name", &w)?,
                status: fields::string(row, "adGroup.status", &w)?,
                ad_group_type: fields::opt_string(row, "adGroup.type", &w)?,
                bid_micros: fields::opt_i64(row, "adGroup.cpcBidMicros", &w)?,
                budget_micros: None,
                changed_at: None,
            })
            .await?;
        }

        let (w, rows) = self
            .search(
                customer,
                "ad_group_ad",
                "SELECT ad_group_ad.ad.id, ad_group_ad.ad.name, ad_group_ad.ad.type, \
                 ad_group_ad.ad.final_urls, ad_group_ad.status, ad_group.id, campaign.id FROM ad_group_ad",
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            let final_url = match at(row, "adGroupAd.ad.finalUrls") {
                Some(Value::Array(urls)) => {
                    urls.first().and_then(|u| u.as_str()).map(str::to_owned)
                }
                None | Some(Value::Null) => None,
                Some(other) => {
                    return Err(ExtractError::malformed(
                        &w,
                        "adGroupAd.ad.finalUrls",
                        format!("expected a list, got {other}"),
                    ));
                }
            };
            tx.publish(&RawAd {
                tenant_id,
                platform: Platform::GoogleAds,
                account_id,
                extracted_at,
                run_id,
                ad_id: fields::string(row, "adGroupAd.ad.id", &w)?,
                ad_group_id: fields::string(row, "adGroup.id", &w)?,
                campaign_id: fields::string(row, "campaign.id", &w)?,
                name: fields::opt_string(row, "adGroupAd.ad.name", &w)?.unwrap_or_default(),
                status: fields::string(row, "adGroupAd.status", &w)?,
                ad_type: fields::opt_string(row, "adGroupAd.ad.type", &w)?,
                headline: None,
                final_url,
                changed_at: None,
            })
            .await?;
        }

        let (w, rows) = self
            .search(
                customer,
                "ad_group_ad metrics",
                &format!(
                    "SELECT campaign.id, ad_group.id, ad_group_ad.ad.id, segments.date, segments.device, \
                     metrics.impressions, metrics.clicks, metrics.cost_micros, metrics.conversions, \
                     metrics.conversions_value, metrics.video_views, metrics.engagements \
                     FROM ad_group_ad WHERE segments.date BETWEEN '{from}' AND '{to}'"
                ),
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawAdPerformance {
                tenant_id,
                platform: Platform::GoogleAds,
                account_id,
                extracted_at,
                run_id,
                date: fields::date(row, "segments.date", &w)?,
                campaign_id: fields::string(row, "campaign.id", &w)?,
                ad_group_id: fields::string(row, "adGroup.id", &w)?,
                ad_id: fields::string(row, "adGroupAd.ad.id", &w)?,
                device: fields::opt_string(row, "segments.device", &w)?,
                country: None,
                currency: currency.clone(),
                impressions: fields::count(row, "metrics.impressions", &w)?,
                clicks: fields::count(row, "metrics.clicks", &w)?,
                cost_micros: fields::count(row, "metrics.costMicros", &w)?,
                conversions: fields::amount(row, "metrics.conversions", &w)?,
                conversion_value_micros: fields::micros(row, "metrics.conversionsValue", &w)?,
                video_views: Some(fields::count(row, "metrics.videoViews", &w)?),
                engagements: Some(fields::count(row, "metrics.engagements", &w)?),
                reach: None,
            })
            .await?;
        }

        let (w, rows) = self
            .search(
                customer,
                "campaign conversions",
                &format!(
                    "SELECT campaign.id, segments.date, segments.conversion_action_name, \
                     segments.conversion_action_category, metrics.conversions, metrics.conversions_value \
                     FROM campaign WHERE segments.date BETWEEN '{from}' AND '{to}'"
                ),
            )
            .await?;
        for row in &rows {
            let (tenant_id, account_id, extracted_at, run_id) = envelope();
            tx.publish(&RawConversion {
                tenant_id,
                platform: Platform::GoogleAds,
                account_id,
                extracted_at,
                run_id,
                date: fields::date(row, "segments.date", &w)?,
                campaign_id: fields::string(row, "campaign.id", &w)?,
                conversion_action: fields::string(row, "segments.conversionActionName", &w)?,
                category: fields::string(row, "segments.conversionActionCategory", &w)?,
                currency: currency.clone(),
                conversions: fields::amount(row, "metrics.conversions", &w)?,
                conversion_value_micros: fields::micros(row, "metrics.conversionsValue", &w)?,
            })
            .await?;
        }
        Ok(())
    }

    /// Runs one GAQL query to the end and returns every row of every streamed batch.
    async fn search(
        &self,
        customer: &str,
        what: &str,
        gaql: &str,
    ) -> Result<(Where, Vec<Value>), ExtractError> {
        let ctx = self.ctx;
        let w = Where::new(
            Platform::GoogleAds,
            customer,
            format!("googleAds:searchStream ({what})"),
        );
        let url = format!(
            "{}/{}/customers/{customer}/googleAds:searchStream",
            ctx.endpoints.google_ads_base, ctx.endpoints.google_ads_version
        );
        let body = json!({ "query": gaql });
        let batches = ctx
            .api
            .call(&w, || async {
                let token = match self.tokens.access_token(&w).await {
                    Ok(t) => t,
                    Err(e) => return Attempt::Fail(e),
                };
                let mut request = ctx
                    .api
                    .http
                    .post(&url)
                    .bearer_auth(token.expose_secret())
                    .header("developer-token", self.developer_token.expose_secret())
                    .json(&body);
                if let Some(login) = &self.login_customer_id {
                    request = request.header("login-customer-id", login);
                }
                let (status, hint, bytes) = match http::send(request).await {
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
                self.classify(status, hint, &bytes, &w).await
            })
            .await?;
        let Value::Array(batches) = batches else {
            return Err(ExtractError::malformed(
                &w,
                "(body)",
                "expected an array of result batches",
            ));
        };
        let mut rows = Vec::new();
        for batch in batches {
            match batch.get("results") {
                Some(Value::Array(results)) => rows.extend(results.iter().cloned()),
                None => {}
                Some(other) => {
                    return Err(ExtractError::malformed(
                        &w,
                        "results",
                        format!("expected a list, got {other}"),
                    ));
                }
            }
        }
        ctx.progress.inc(1);
        Ok((w, rows))
    }

    /// Google's error semantics: 429 `RESOURCE_EXHAUSTED` waits for `retryDelay`, 401 refreshes
    /// the token, 5xx retries, the rest fails with Google's own message.
    async fn classify<T>(
        &self,
        status: StatusCode,
        hint: Option<Duration>,
        body: &[u8],
        w: &Where,
    ) -> Attempt<T> {
        // searchStream frames errors as a one-element array (`[{"error": …}]`), unary methods not.
        let error = match serde_json::from_slice(body).unwrap_or(Value::Null) {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        let message = at(&error, "error.message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_owned();
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let delay = hint.or_else(|| find_retry_delay(&error));
                Attempt::Retry {
                    after: delay,
                    reason: format!("429 RESOURCE_EXHAUSTED: {message}"),
                }
            }
            StatusCode::UNAUTHORIZED => {
                self.tokens.invalidate().await;
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
    }
}

/// The `retryDelay` Google puts in a quota error's details, wherever it sits.
fn find_retry_delay(v: &Value) -> Option<Duration> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("retryDelay", Value::String(s)) => proto_duration(s),
            _ => find_retry_delay(v),
        }),
        Value::Array(items) => items.iter().find_map(find_retry_delay),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_is_found_in_nested_quota_details() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.ads.googleads.v21.errors.GoogleAdsFailure",
             "errors": [{"details": {"quotaErrorDetails": {"retryDelay": "3s"}}}]}]}});
        assert_eq!(find_retry_delay(&body), Some(Duration::from_secs(3)));
        assert_eq!(find_retry_delay(&json!({"error": {}})), None);
    }
}
