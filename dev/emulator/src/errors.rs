//! The platforms' error envelopes.
//!
//! * Google APIs (Ads, GA4): `{"error":{"code","message","status","details":[…]}}` — the
//!   google.rpc.Status JSON mapping. Ads errors carry a `GoogleAdsFailure` detail with typed
//!   error codes (`{"errorCode":{"queryError":"UNRECOGNIZED_FIELD"}}`); quota errors add
//!   `details.quotaErrorDetails` with a `retryDelay` Duration ("1s"). Because searchStream is a
//!   streaming method, its REST errors arrive wrapped in a JSON array (`[{"error":…}]`), as the
//!   real service sends them; `--google-error-shape object` turns that off.
//! * Google OAuth: `{"error":"invalid_grant","error_description":…}`.
//! * Meta Graph: `{"error":{"message","type","code","error_subcode","is_transient","fbtrace_id"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Content type of every JSON response (Google and Meta both send a charset).
pub const JSON_UTF8: &str = "application/json; charset=UTF-8";

/// Builds a JSON response with the given status and exact body bytes.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    resp
}

/// Quota details of a Google Ads quota error.
#[derive(Clone, Debug)]
pub struct QuotaDetail {
    pub rate_scope: &'static str,
    pub rate_name: &'static str,
    pub retry_delay_secs: u64,
}

/// One entry of a `GoogleAdsFailure`.
#[derive(Clone, Debug)]
pub struct AdsErrorDetail {
    /// The `ErrorCode` oneof member, e.g. `queryError`, `authenticationError`.
    pub kind: &'static str,
    /// The enum value, e.g. `UNRECOGNIZED_FIELD`.
    pub code: &'static str,
    pub message: String,
    /// The offending value (`trigger.stringValue`).
    pub trigger: Option<String>,
    pub quota: Option<QuotaDetail>,
}

/// A Google API error (google.rpc.Status).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct GoogleApiError {
    pub http: StatusCode,
    /// Canonical code name: INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, …
    pub status: &'static str,
    pub message: String,
    /// Rendered as a `GoogleAdsFailure` detail when non-empty (Ads only).
    pub ads_errors: Vec<AdsErrorDetail>,
    /// Rendered as a `google.rpc.ErrorInfo` detail (reason, domain).
    pub error_info: Option<(&'static str, &'static str)>,
    /// Adds a `Retry-After` header (seconds).
    pub retry_after: Option<u64>,
}

impl GoogleApiError {
    pub fn new(http: StatusCode, status: &'static str, message: impl Into<String>) -> Self {
        GoogleApiError {
            http,
            status,
            message: message.into(),
            ads_errors: Vec::new(),
            error_info: None,
            retry_after: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    /// An Ads request error: generic top-level message, typed detail.
    pub fn ads(http: StatusCode, status: &'static str, detail: AdsErrorDetail) -> Self {
        let message = match status {
            "INVALID_ARGUMENT" => "Request contains an invalid argument.".to_string(),
            "PERMISSION_DENIED" => "The caller does not have permission".to_string(),
            "UNAUTHENTICATED" => detail.message.clone(),
            _ => detail.message.clone(),
        };
        GoogleApiError {
            http,
            status,
            message,
            ads_errors: vec![detail],
            error_info: None,
            retry_after: None,
        }
    }

    /// Missing, unknown or expired bearer token.
    pub fn unauthenticated(missing: bool, expired: bool) -> Self {
        let message = if missing {
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
        } else {
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
        };
        let reason = if missing {
            "CREDENTIALS_MISSING"
        } else if expired {
            "ACCESS_TOKEN_EXPIRED"
        } else {
            "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        };
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
        e.error_info = Some((reason, "googleapis.com"));
        e
    }

    /// 503 UNAVAILABLE (the server-error fault).
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        )
    }

    /// The `{"error":{…}}` object.
    pub fn body(&self, ads_version: Option<&str>, request_id: &str, service: &str) -> Value {
        let mut details = Vec::new();
        if let Some(version) = ads_version.filter(|_| !self.ads_errors.is_empty()) {
            let errors: Vec<Value> = self
                .ads_errors
                .iter()
                .map(|e| {
                    let mut err = Map::new();
                    err.insert("errorCode".into(), json!({ e.kind: e.code }));
                    err.insert("message".into(), Value::String(e.message.clone()));
                    if let Some(t) = &e.trigger {
                        err.insert("trigger".into(), json!({ "stringValue": t }));
                    }
                    if let Some(q) = &e.quota {
                        err.insert(
                            "details".into(),
                            json!({ "quotaErrorDetails": {
                                "rateScope": q.rate_scope,
                                "rateName": q.rate_name,
                                "retryDelay": format!("{}s", q.retry_delay_secs),
                            }}),
                        );
                    }
                    Value::Object(err)
                })
                .collect();
            details.push(json!({
                "@type": format!("type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure"),
                "errors": errors,
                "requestId": request_id,
            }));
        }
        if let Some((reason, domain)) = self.error_info {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": domain,
                "metadata": { "service": service },
            }));
        }
        let mut err = Map::new();
        err.insert("code".into(), json!(self.http.as_u16()));
        err.insert("message".into(), Value::String(self.message.clone()));
        err.insert("status".into(), Value::String(self.status.to_string()));
        if !details.is_empty() {
            err.insert("details".into(), Value::Array(details));
        }
        json!({ "error": Value::Object(err) })
    }

    /// Renders the error; `wrap_array` for streaming methods (searchStream).
    pub fn render(
        &self,
        ads_version: Option<&str>,
        request_id: &str,
        service: &str,
        wrap_array: bool,
    ) -> Response {
        let body = self.body(ads_version, request_id, service);
        let body = if wrap_array {
            Value::Array(vec![body])
        } else {
            body
        };
        let mut resp = json_response(self.http, serde_json::to_vec(&body).unwrap_or_default());
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.http == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
        }
        resp
    }
}

/// A Meta Graph API error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("(#{code}) {message}")]
pub struct MetaError {
    pub http: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: u32,
    pub subcode: Option<u32>,
    pub transient: bool,
    pub user_title: Option<&'static str>,
    pub user_msg: Option<&'static str>,
}

impl MetaError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        MetaError {
            http: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "OAuthException",
            code,
            subcode: None,
            transient: false,
            user_title: None,
            user_msg: None,
        }
    }

    /// `(#100)` parameter errors.
    pub fn param(message: impl Into<String>) -> Self {
        Self::new(100, message)
    }

    pub fn body(&self, fbtrace_id: &str) -> Value {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(self.message.clone()));
        err.insert("type".into(), Value::String(self.kind.to_string()));
        err.insert("code".into(), json!(self.code));
        if let Some(s) = self.subcode {
            err.insert("error_subcode".into(), json!(s));
        }
        if self.transient {
            err.insert("is_transient".into(), Value::Bool(true));
        }
        if let Some(t) = self.user_title {
            err.insert("error_user_title".into(), Value::String(t.to_string()));
        }
        if let Some(m) = self.user_msg {
            err.insert("error_user_msg".into(), Value::String(m.to_string()));
        }
        err.insert("fbtrace_id".into(), Value::String(fbtrace_id.to_string()));
        json!({ "error": Value::Object(err) })
    }
}

/// A Google OAuth token endpoint error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub http: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        json_response(self.http, serde_json::to_vec(&body).unwrap_or_default())
    }
}
