//! OAuth: Google's refresh-token grant and Meta's long-lived token exchange.
//!
//! Tokens are opaque strings remembered in memory with their expiry (wall-clock time, not the
//! emulator's calendar clock). Google access tokens look like `ya29.a0…`, Meta tokens like
//! `EAA…`. Data endpoints accept only tokens issued here and not yet expired, so extractors
//! must run the real flows: refresh before expiry, and again on 401 / code 190.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::errors::{MetaError, OAuthError, json_response};
use crate::faults::{Action, FaultPlatform, truncate};
use crate::hash::{H, mix};
use crate::{AppState, lock};

/// Scopes granted by the emulated Google token endpoint.
pub const GOOGLE_SCOPES: &str =
    "https://www.googleapis.com/auth/adwords https://www.googleapis.com/auth/analytics.readonly";

/// Which platform issued a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Google,
    Meta,
}

/// Result of checking a presented token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Clone, Copy, Debug)]
struct TokenRec {
    kind: TokenKind,
    expires: Instant,
}

/// Issued tokens and their expiry.
#[derive(Debug)]
pub struct TokenStore {
    tokens: Mutex<HashMap<String, TokenRec>>,
    seq: AtomicU64,
    seed: u64,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl TokenStore {
    pub fn new(seed: u64) -> Self {
        TokenStore {
            tokens: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            seed,
        }
    }

    /// Issues a new token valid for `ttl`.
    pub fn issue(&self, kind: TokenKind, ttl: Duration) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // Process start time keeps tokens of successive emulator runs distinct.
        let h = H::new(self.seed).with(n).with(process_nonce());
        let bytes: Vec<u8> = (0..24u64).flat_map(|i| h.with(i).0.to_le_bytes()).collect();
        let token = match kind {
            TokenKind::Google => {
                format!(
                    "ya29.a0{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..120])
                )
            }
            TokenKind::Meta => {
                let body: String = bytes[..170]
                    .iter()
                    .map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()]))
                    .collect();
                format!("EAA{body}")
            }
        };
        let now = Instant::now();
        let mut map = lock(&self.tokens);
        // Forget tokens that expired more than a day ago; keep recent ones so that "expired"
        // can be told apart from "unknown".
        map.retain(|_, r| r.expires + Duration::from_secs(86_400) > now);
        map.insert(
            token.clone(),
            TokenRec {
                kind,
                expires: now + ttl,
            },
        );
        token
    }

    /// Checks a presented token.
    pub fn check(&self, kind: TokenKind, token: &str) -> TokenCheck {
        match lock(&self.tokens).get(token) {
            Some(r) if r.kind == kind && r.expires > Instant::now() => TokenCheck::Valid,
            Some(r) if r.kind == kind => TokenCheck::Expired,
            _ => TokenCheck::Unknown,
        }
    }

    /// Marks a token expired now (fault injection).
    pub fn expire(&self, token: &str) {
        if let Some(r) = lock(&self.tokens).get_mut(token) {
            r.expires = Instant::now();
        }
    }
}

fn process_nonce() -> u64 {
    use std::sync::OnceLock;
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        mix(t as u64 ^ u64::from(std::process::id()))
    })
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then_some(token.trim())
}

/// Parses a form-encoded (or, as Google also accepts, JSON) request body into pairs.
fn parse_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            return map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
        }
        return HashMap::new();
    }
    form_urlencoded::parse(body).into_owned().collect()
}

/// Client credentials from HTTP Basic auth (`client_secret_basic`), if sent that way.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn oauth_err(http: StatusCode, error: &'static str, description: impl Into<String>) -> Response {
    OAuthError {
        http,
        error,
        description: description.into(),
    }
    .into_response()
}

/// `POST /oauth2/token` — Google's token endpoint, refresh-token grant.
pub async fn google_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_params(&headers, &body);
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let decision = lock(&st.faults).next(FaultPlatform::Oauth);
    match decision.action {
        Action::Throttle { .. } => {
            return oauth_err(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate Limit Exceeded",
            );
        }
        Action::ServerError => {
            return oauth_err(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal_failure",
                "Backend Error",
            );
        }
        Action::ExpireToken => {
            return oauth_err(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Token has been expired or revoked.",
            );
        }
        Action::Proceed => {}
    }
    let grant = get("grant_type");
    if grant != "refresh_token" {
        let desc = if grant.is_empty() {
            "Missing required parameter: grant_type".to_string()
        } else {
            format!("Invalid grant_type: {grant}")
        };
        let error = if grant.is_empty() {
            "invalid_request"
        } else {
            "unsupported_grant_type"
        };
        return oauth_err(StatusCode::BAD_REQUEST, error, desc);
    }
    let (client_id, client_secret) = basic_credentials(&headers).unwrap_or_else(|| {
        (
            get("client_id").to_string(),
            get("client_secret").to_string(),
        )
    });
    if client_id.is_empty() {
        return oauth_err(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    if client_secret.is_empty() {
        return oauth_err(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
    }
    let refresh = get("refresh_token");
    if refresh.is_empty() {
        return oauth_err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    }
    if !refresh.starts_with("1//") {
        return oauth_err(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    }
    let ttl = {
        let f = lock(&st.faults);
        f.token_ttl(FaultPlatform::GoogleAds)
            .or_else(|| f.token_ttl(FaultPlatform::Ga4))
    }
    .unwrap_or(st.cfg.google_token_ttl_secs);
    let token = st.tokens.issue(TokenKind::Google, Duration::from_secs(ttl));
    let mut body = json!({
        "access_token": token,
        "expires_in": ttl,
        "scope": GOOGLE_SCOPES,
        "token_type": "Bearer",
    });
    apply_overrides(&mut body, &decision);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    json_response(
        StatusCode::OK,
        if decision.malformed {
            truncate(bytes)
        } else {
            bytes
        },
    )
}

fn apply_overrides(body: &mut Value, decision: &crate::faults::Decision) {
    if let Value::Object(map) = body {
        for rule in decision.overrides_for("token") {
            if map.contains_key(&rule.field) {
                map.insert(rule.field.clone(), rule.value.clone());
            }
        }
    }
}

/// `GET /graph/{version}/oauth/access_token` — Meta's exchange of a short-lived user token for a
/// long-lived one (`grant_type=fb_exchange_token`). Any `EAA…` token the emulator has not issued
/// is taken as a fresh short-lived token from a user login; a token it issued must be valid.
pub fn meta_exchange(
    st: &AppState,
    params: &HashMap<String, String>,
) -> Result<Vec<u8>, MetaError> {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let decision = lock(&st.faults).next(FaultPlatform::Oauth);
    match decision.action {
        Action::Throttle { .. } => {
            let mut e = MetaError::new(4, "(#4) Application request limit reached");
            e.transient = true;
            return Err(e);
        }
        Action::ServerError => {
            let mut e = MetaError::new(2, "Service temporarily unavailable");
            e.http = StatusCode::INTERNAL_SERVER_ERROR;
            e.transient = true;
            return Err(e);
        }
        Action::ExpireToken => return Err(expired_token_error()),
        Action::Proceed => {}
    }
    if get("grant_type") != "fb_exchange_token" {
        return Err(MetaError::param(
            "(#100) The parameter grant_type must be fb_exchange_token",
        ));
    }
    let client_id = get("client_id");
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MetaError::new(
            101,
            "Error validating application. Invalid application ID.",
        ));
    }
    if get("client_secret").is_empty() {
        return Err(MetaError::new(1, "Error validating client secret."));
    }
    let short = get("fb_exchange_token");
    match st.tokens.check(TokenKind::Meta, short) {
        TokenCheck::Valid => {}
        TokenCheck::Expired => return Err(expired_token_error()),
        TokenCheck::Unknown if short.starts_with("EAA") && short.len() > 8 => {}
        TokenCheck::Unknown => return Err(invalid_token_error()),
    }
    let ttl = lock(&st.faults)
        .token_ttl(FaultPlatform::MetaAds)
        .unwrap_or(st.cfg.meta_token_ttl_secs);
    let token = st.tokens.issue(TokenKind::Meta, Duration::from_secs(ttl));
    let mut body = json!({ "access_token": token, "token_type": "bearer", "expires_in": ttl });
    apply_overrides(&mut body, &decision);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Ok(if decision.malformed {
        truncate(bytes)
    } else {
        bytes
    })
}

/// Code 190 / subcode 463: the token has expired.
pub fn expired_token_error() -> MetaError {
    let mut e = MetaError::new(
        190,
        "Error validating access token: Session has expired. The current time is after the token's expiry.",
    );
    e.subcode = Some(463);
    e
}

/// Code 190 without subcode: the token is not one the emulator issued.
pub fn invalid_token_error() -> MetaError {
    MetaError::new(
        190,
        "Invalid OAuth access token - Cannot parse access token",
    )
}
