//! Helpers for driving the emulator in-process with `tower::ServiceExt::oneshot`.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use mi_emulator::date::Day;
use mi_emulator::generator::GenConfig;
use mi_emulator::{AppState, Config, router_with_state};
use serde_json::Value;
use tower::ServiceExt;

pub const TODAY: &str = "2025-06-01";
pub const GOOGLE_CUSTOMER: &str = "1234567890";
pub const META_ACCOUNT: &str = "act_987654";
pub const GA4_PROPERTY: &str = "314159";

pub fn day(s: &str) -> Day {
    Day::parse(s).unwrap_or_else(|| panic!("bad date {s}"))
}

pub struct Emu {
    pub router: Router,
    pub state: Arc<AppState>,
}

pub fn config() -> Config {
    Config {
        today: Some(day(TODAY)),
        generator: GenConfig {
            seed: 42,
            ..GenConfig::default()
        },
        ..Config::default()
    }
}

pub fn emulator(cfg: Config) -> Emu {
    let state = Arc::new(AppState::new(cfg));
    Emu {
        router: router_with_state(state.clone()),
        state,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "invalid JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON, or `null` when it is not JSON (a cut response).
    pub fn json_lossy(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Emu {
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.send(
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .unwrap_or_default(),
        )
        .await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap_or_default();
        self.send(req).await
    }

    pub async fn post_form(&self, uri: &str, body: &str) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap_or_default();
        self.send(req).await
    }

    pub async fn send_delete(&self, uri: &str) -> Resp {
        self.send(
            Request::builder()
                .method(Method::DELETE)
                .uri(uri)
                .body(Body::empty())
                .unwrap_or_default(),
        )
        .await
    }

    pub async fn google_token(&self) -> String {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/oauth2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("grant_type=refresh_token&client_id=cid&client_secret=secret&refresh_token=1%2F%2Fabc"))
            .unwrap_or_default();
        let r = self.send(req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn meta_token(&self) -> String {
        let r = self
            .get("/graph/v21.0/oauth/access_token?grant_type=fb_exchange_token&client_id=1234&client_secret=s&fb_exchange_token=EAAshort123456")
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn search_stream(&self, token: &str, customer: &str, query: &str) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "/googleads/v21/customers/{customer}/googleAds:searchStream"
            ))
            .header("authorization", format!("Bearer {token}"))
            .header("developer-token", "dev-token")
            .header("login-customer-id", "9999999999")
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({ "query": query }).to_string(),
            ))
            .unwrap_or_default();
        self.send(req).await
    }

    /// All result rows of a successful searchStream, plus the number of batches.
    pub async fn gaql_rows(&self, token: &str, query: &str) -> (Vec<Value>, usize) {
        let r = self.search_stream(token, GOOGLE_CUSTOMER, query).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let batches = r.json();
        let batches = batches.as_array().cloned().unwrap_or_default();
        let n = batches.len();
        let rows = batches
            .iter()
            .flat_map(|b| b["results"].as_array().cloned().unwrap_or_default())
            .collect();
        (rows, n)
    }

    pub async fn run_report(&self, token: &str, property: &str, body: &Value) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "/analyticsdata/v1beta/properties/{property}:runReport"
            ))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap_or_default();
        self.send(req).await
    }

    pub async fn truth(&self, platform: &str, account: &str, from: &str, to: &str) -> Value {
        let r = self
            .get(&format!(
                "/_emulator/truth?platform={platform}&account={account}&from={from}&to={to}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()
    }

    pub async fn set_clock(&self, today: &str) {
        let r = self
            .post_json("/_emulator/clock", &serde_json::json!({ "today": today }))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }

    pub async fn set_faults(&self, faults: Value) {
        let r = self.post_json("/_emulator/faults", &faults).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Parses a decimal money string ("12.3", "12.34", "12") into micros.
pub fn decimal_micros(s: &str) -> u64 {
    let (units, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 2, "more than two decimals: {s}");
    let units: u64 = units.parse().unwrap_or_else(|_| panic!("bad decimal {s}"));
    let frac_padded = format!("{frac:0<2}");
    let cents: u64 = frac_padded.parse().unwrap_or(0);
    units * 1_000_000 + cents * 10_000
}

/// A Google double money value (123.45) into micros.
pub fn double_micros(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) * 100.0).round() as u64 * 10_000
}

/// An int64-as-string field.
pub fn int64(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an int64 string: {v}"))
}

/// Path and query of an absolute URL (Meta `paging.next`).
pub fn path_of(url: &str) -> String {
    let i = url
        .find("/graph/")
        .unwrap_or_else(|| panic!("not a graph URL: {url}"));
    url[i..].to_string()
}
