//! Access tokens: fetched when first needed, refreshed a minute before they expire, and dropped
//! the moment the platform rejects one (401 / Meta code 190) so the retry gets a fresh one.

use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, RefreshToken, TokenResponse, TokenUrl};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::error::{ExtractError, Where};

/// Refresh this long before the stated expiry, so a token never expires in flight.
const EARLY: Duration = Duration::from_secs(60);

struct Cached {
    token: SecretString,
    expires_at: Instant,
}

/// Google OAuth2 (Google Ads and GA4): the refresh-token grant.
pub struct GoogleTokens {
    client_id: String,
    client_secret: SecretString,
    refresh_token: SecretString,
    token_url: String,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

impl GoogleTokens {
    pub fn new(
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
        token_url: String,
        http: reqwest::Client,
    ) -> Self {
        Self {
            client_id,
            client_secret,
            refresh_token,
            token_url,
            http,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, refreshing it first if it is missing or about to expire.
    pub async fn access_token(&self, at: &Where) -> Result<SecretString, ExtractError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.expires_at > Instant::now() + EARLY)
        {
            return Ok(c.token.clone());
        }
        let fresh = self.refresh(at).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the current token (the platform rejected it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn refresh(&self, at: &Where) -> Result<Cached, ExtractError> {
        let auth_error = |message: String| ExtractError::Auth {
            at: at.clone(),
            message,
        };
        let token_url = TokenUrl::new(self.token_url.clone())
            .map_err(|e| auth_error(format!("invalid token URL {}: {e}", self.token_url)))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            ))
            .set_token_uri(token_url);
        let refresh_token = RefreshToken::new(self.refresh_token.expose_secret().to_owned());
        let http = |request: oauth2::HttpRequest| send_oauth(&self.http, request);
        let response = client
            .exchange_refresh_token(&refresh_token)
            .request_async(&http)
            .await
            .map_err(|e| auth_error(describe_oauth_error(&e)))?;
        let ttl = response.expires_in().unwrap_or(Duration::from_secs(3600));
        Ok(Cached {
            token: SecretString::from(response.access_token().secret().to_owned()),
            expires_at: Instant::now() + ttl,
        })
    }
}

/// `oauth2` speaks `http` types; this adapts them to our `reqwest` client.
async fn send_oauth(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder.body(body).unwrap_or_default())
}

fn describe_oauth_error<RE: std::error::Error + 'static>(
    e: &oauth2::RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => match r.error_description() {
            Some(d) => format!("{}: {d}", r.error()),
            None => r.error().to_string(),
        },
        other => other.to_string(),
    }
}

/// Meta: a long-lived user token, exchanged (`fb_exchange_token`) for a fresh long-lived one
/// when Meta says it expired (code 190).
pub struct MetaTokens {
    app_id: String,
    app_secret: SecretString,
    exchange_url: String,
    http: reqwest::Client,
    current: Mutex<SecretString>,
}

impl MetaTokens {
    pub fn new(
        app_id: String,
        app_secret: SecretString,
        long_lived: SecretString,
        exchange_url: String,
        http: reqwest::Client,
    ) -> Self {
        Self {
            app_id,
            app_secret,
            exchange_url,
            http,
            current: Mutex::new(long_lived),
        }
    }

    pub async fn access_token(&self) -> SecretString {
        self.current.lock().await.clone()
    }

    /// Exchanges the token that was rejected for a fresh one. Concurrent callers that saw the
    /// same rejected token exchange it once.
    pub async fn renew(&self, rejected: &SecretString, at: &Where) -> Result<(), ExtractError> {
        let mut current = self.current.lock().await;
        if current.expose_secret() != rejected.expose_secret() {
            return Ok(());
        }
        let response = self
            .http
            .get(&self.exchange_url)
            .query(&[
                ("grant_type", "fb_exchange_token"),
                ("client_id", self.app_id.as_str()),
                ("client_secret", self.app_secret.expose_secret()),
                ("fb_exchange_token", current.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| ExtractError::Auth {
                at: at.clone(),
                message: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match body.get("access_token").and_then(|t| t.as_str()) {
            Some(token) if status.is_success() => {
                *current = SecretString::from(token.to_owned());
                Ok(())
            }
            _ => Err(ExtractError::Auth {
                at: at.clone(),
                message: format!(
                    "token exchange answered {status}: {}",
                    body.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("no access_token")
                ),
            }),
        }
    }
}
