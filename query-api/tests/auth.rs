//! Authentication end to end: every JWT attack we know of is a 401, the extractor hands handlers
//! the right principal, and refresh tokens rotate, detect reuse and revoke against the real Redis
//! of the dev stack (`dev/stack up`).
//!
//! Secrets reach the settings through files rather than environment variables: setting a variable
//! in-process needs `unsafe` (forbidden here), while the CLI test sets `MI_JWT_SECRET` on the child.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mi_common::TenantId;
use mi_common::secret::SecretRef;
use mi_query_api::auth::{Authenticator, Principal, RefreshTokens, Role};
use mi_query_api::settings::AuthSettings;
use mi_query_api::store::Redis;
use mi_query_api::{ApiResult, ApiSettings, AppState};
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "integration-test-hmac-secret-0123456789-abcdef";
const OTHER_SECRET: &str = "another-hmac-secret-of-sufficient-length-9876543210";
const ISS: &str = "marketing-iq";
const AUD: &str = "marketing-iq-api";

// ------------------------------------------------------------------------------------ helpers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A secret in a file of its own (tests run in parallel).
fn secret_file(content: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("mi-auth-it-{}-{n}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256_auth() -> AuthSettings {
    AuthSettings {
        algorithm: "HS256".into(),
        secret: Some(SecretRef::File(secret_file(SECRET))),
        ..AuthSettings::default()
    }
}

fn asymmetric_auth(algorithm: &str, private: Option<&str>, public: &str) -> AuthSettings {
    AuthSettings {
        algorithm: algorithm.into(),
        secret: None,
        private_key: private.map(|p| SecretRef::File(fixture(p))),
        public_key: Some(SecretRef::File(fixture(public))),
        ..AuthSettings::default()
    }
}

fn rs256_auth() -> AuthSettings {
    asymmetric_auth(
        "RS256",
        Some("test-only-rsa-private.pem"),
        "test-only-rsa-public.pem",
    )
}

fn api_settings(auth: AuthSettings) -> ApiSettings {
    let mut settings = ApiSettings::default();
    settings.api.auth = auth;
    // AppState::new requires it; these tests never query ClickHouse.
    settings.infra.clickhouse.tenant_secret = Some(SecretString::from("test-tenant-secret"));
    settings
}

fn state(auth: AuthSettings) -> AppState {
    AppState::new(api_settings(auth)).unwrap()
}

/// The service's own router (for `/auth/*`).
fn app(state: &AppState) -> Router {
    mi_query_api::router(state.clone())
}

/// A test-local router whose handlers take a [`Principal`], as the real protected routes do.
fn protected(state: &AppState) -> Router {
    async fn whoami(p: Principal) -> axum::Json<Value> {
        axum::Json(json!({
            "subject": p.subject,
            "tenant": p.tenant.as_str(),
            "role": p.role,
            "service": p.service,
        }))
    }
    async fn analysts_only(p: Principal) -> ApiResult<&'static str> {
        p.require(Role::Analyst)?;
        Ok("ok")
    }
    Router::new()
        .route("/whoami", get(whoami))
        .route("/analysts", get(analysts_only))
        .with_state(state.clone())
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, body)
}

async fn get_with(router: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let (status, headers, body) = send(router, request.body(Body::empty()).unwrap()).await;
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer",
            "401s challenge for a bearer token"
        );
    }
    (status, body)
}

async fn whoami(router: &Router, token: &str) -> (StatusCode, Value) {
    get_with(router, "/whoami", Some(&format!("Bearer {token}"))).await
}

async fn post_json(router: &Router, path: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(router, request).await
}

/// Claims as we mint them, valid now; tests remove or alter them.
fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "tid": "acme",
        "role": "analyst",
        "kind": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-1",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
}

fn rs(claims: &Value, private_pem: &str) -> String {
    sign(
        Algorithm::RS256,
        claims,
        &EncodingKey::from_rsa_pem(&read_fixture(private_pem)).unwrap(),
    )
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Asserts a 401 with the generic message, whatever check failed.
async fn assert_rejected(router: &Router, token: &str, what: &str) {
    let (status, body) = whoami(router, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message == "invalid token" || message == "token expired",
        "{what}: the message must stay generic, got {message:?}"
    );
}

async fn redis_up() -> Redis {
    let redis = Redis::new(&mi_common::settings::RedisSettings::default().url);
    assert!(
        redis.is_up().await,
        "these tests need the dev stack's Redis on 127.0.0.1:6379: run `dev/stack up`"
    );
    redis
}

fn acme_principal(subject: &str, role: Role) -> Principal {
    Principal {
        subject: subject.into(),
        tenant: TenantId::new("acme").unwrap(),
        role,
        service: false,
    }
}

// ------------------------------------------------------------------------- happy path, roles

#[tokio::test]
async fn a_valid_token_yields_its_principal() {
    let state = state(hs256_auth());
    let router = protected(&state);
    let token = state
        .auth
        .mint_access("alice", &TenantId::new("acme").unwrap(), Role::TenantAdmin)
        .unwrap();
    let (status, body) = whoami(&router, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"subject": "alice", "tenant": "acme", "role": "tenant_admin", "service": false})
    );

    // A hand-made token with our claims is as good as a minted one; the scheme is case-insensitive.
    let (status, body) = get_with(
        &router,
        "/whoami",
        Some(&format!("bearer {}", hs(&claims()))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "analyst");

    let service = state
        .auth
        .mint_service(
            "agent-7",
            &TenantId::new("beta").unwrap(),
            Role::Viewer,
            Duration::from_secs(3600),
        )
        .unwrap();
    let (status, body) = whoami(&router, &service).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"subject": "agent-7", "tenant": "beta", "role": "viewer", "service": true})
    );
}

#[tokio::test]
async fn roles_are_ordered_viewer_analyst_tenant_admin_super_admin() {
    let state = state(hs256_auth());
    let router = protected(&state);
    let acme = TenantId::new("acme").unwrap();
    for (role, expected) in [
        (Role::Viewer, StatusCode::FORBIDDEN),
        (Role::Analyst, StatusCode::OK),
        (Role::TenantAdmin, StatusCode::OK),
        (Role::SuperAdmin, StatusCode::OK),
    ] {
        let token = state.auth.mint_access("u", &acme, role).unwrap();
        let (status, body) = get_with(&router, "/analysts", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, expected, "{role}: {body}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
}

#[tokio::test]
async fn every_configured_algorithm_round_trips_and_refuses_the_others() {
    let es = Authenticator::from_settings(&asymmetric_auth(
        "ES256",
        Some("test-only-ec-private.pem"),
        "test-only-ec-public.pem",
    ))
    .unwrap();
    let ed = Authenticator::from_settings(&asymmetric_auth(
        "EdDSA",
        Some("test-only-ed25519-private.pem"),
        "test-only-ed25519-public.pem",
    ))
    .unwrap();
    let rs = Authenticator::from_settings(&rs256_auth()).unwrap();
    let hs = Authenticator::from_settings(&hs256_auth()).unwrap();
    let acme = TenantId::new("acme").unwrap();
    let all = [&hs, &rs, &es, &ed];
    for (i, minter) in all.iter().enumerate() {
        let token = minter.mint_access("alice", &acme, Role::Viewer).unwrap();
        for (j, verifier) in all.iter().enumerate() {
            let verdict = verifier.verify(&token);
            if i == j {
                assert_eq!(verdict.unwrap().tenant, acme);
            } else {
                assert!(
                    verdict.is_err(),
                    "{:?} accepted a {:?} token",
                    verifier.algorithm(),
                    minter.algorithm()
                );
            }
        }
    }

    // A verifier with only the public key verifies but cannot mint.
    let verify_only =
        Authenticator::from_settings(&asymmetric_auth("RS256", None, "test-only-rsa-public.pem"))
            .unwrap();
    assert!(!verify_only.can_mint());
    let token = rs.mint_access("alice", &acme, Role::Analyst).unwrap();
    assert_eq!(verify_only.verify(&token).unwrap().role, Role::Analyst);
    assert!(
        verify_only
            .mint_access("alice", &acme, Role::Viewer)
            .is_err()
    );

    // A private key that does not belong to the public key is caught at startup.
    let err = Authenticator::from_settings(&asymmetric_auth(
        "RS256",
        Some("test-only-rsa-other-private.pem"),
        "test-only-rsa-public.pem",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // And a key of the wrong type is refused by name.
    let err =
        Authenticator::from_settings(&asymmetric_auth("ES256", None, "test-only-rsa-public.pem"))
            .unwrap_err();
    assert!(err.to_string().contains("api.auth.public_key"), "{err}");
}

// ------------------------------------------------------------------------------- JWT attacks

#[tokio::test]
async fn alg_none_is_refused() {
    let router = protected(&state(hs256_auth()));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        let unsigned = format!("{}.{}.", b64(&header), b64(&claims()));
        assert_rejected(&router, &unsigned, &format!("alg {alg}")).await;
        // …also with a signature copied from a genuine token.
        let genuine = hs(&claims());
        let signature = genuine.rsplit('.').next().unwrap();
        assert_rejected(
            &router,
            &format!("{unsigned}{signature}"),
            "alg none, signed",
        )
        .await;
    }
}

#[tokio::test]
async fn hs_rs_algorithm_confusion_is_refused() {
    // The classic: an HS256 token whose HMAC key is the server's RSA *public* key.
    let rs_router = protected(&state(rs256_auth()));
    let public_pem = read_fixture("test-only-rsa-public.pem");
    let forged = sign(
        Algorithm::HS256,
        &claims(),
        &EncodingKey::from_secret(&public_pem).unwrap(),
    );
    assert_rejected(&rs_router, &forged, "HS256 signed with the RSA public key").await;
    // The same with the trailing newline stripped (the other common PEM spelling).
    let trimmed = String::from_utf8(public_pem).unwrap();
    let forged = sign(
        Algorithm::HS256,
        &claims(),
        &EncodingKey::from_secret(trimmed.trim_end().as_bytes()).unwrap(),
    );
    assert_rejected(&rs_router, &forged, "HS256 signed with the trimmed PEM").await;
    // Sanity: the RS256 router does accept a genuine RS256 token.
    let (status, _) = whoami(&rs_router, &rs(&claims(), "test-only-rsa-private.pem")).await;
    assert_eq!(status, StatusCode::OK);

    // And the other way round: a correctly signed RS256 token means nothing to an HS256 server.
    let hs_router = protected(&state(hs256_auth()));
    assert_rejected(
        &hs_router,
        &rs(&claims(), "test-only-rsa-private.pem"),
        "RS256 against HS256",
    )
    .await;
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused() {
    let hs_router = protected(&state(hs256_auth()));
    let other = sign(
        Algorithm::HS256,
        &claims(),
        &EncodingKey::from_secret(OTHER_SECRET.as_bytes()).unwrap(),
    );
    assert_rejected(&hs_router, &other, "HS256 with another secret").await;

    let rs_router = protected(&state(rs256_auth()));
    assert_rejected(
        &rs_router,
        &rs(&claims(), "test-only-rsa-other-private.pem"),
        "RS256 with another private key",
    )
    .await;
}

#[tokio::test]
async fn expiry_and_not_before_are_enforced_with_the_configured_leeway() {
    let state = state(hs256_auth());
    let leeway = state.settings.api.auth.leeway_secs;
    assert!(leeway > 5);
    let router = protected(&state);
    let now = now();

    let expired = hs(&with(claims(), "exp", json!(now - leeway - 10)));
    let (status, body) = whoami(&router, &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "token expired");

    // Within the leeway, clock skew is forgiven.
    let (status, _) = whoami(&router, &hs(&with(claims(), "exp", json!(now - 5)))).await;
    assert_eq!(status, StatusCode::OK);

    let early = hs(&with(claims(), "nbf", json!(now + leeway + 60)));
    assert_rejected(&router, &early, "nbf in the future").await;
    let (status, _) = whoami(&router, &hs(&with(claims(), "nbf", json!(now + 5)))).await;
    assert_eq!(status, StatusCode::OK, "nbf within the leeway");

    let from_the_future = hs(&with(claims(), "iat", json!(now + leeway + 3600)));
    assert_rejected(&router, &from_the_future, "iat in the future").await;

    let not_a_number = hs(&with(claims(), "exp", json!("tomorrow")));
    assert_rejected(&router, &not_a_number, "exp as a string").await;
}

#[tokio::test]
async fn audience_and_issuer_must_be_ours() {
    let router = protected(&state(hs256_auth()));
    assert_rejected(
        &router,
        &hs(&with(claims(), "aud", json!("another-api"))),
        "wrong aud",
    )
    .await;
    assert_rejected(
        &router,
        &hs(&with(claims(), "aud", json!(["another-api"]))),
        "wrong aud list",
    )
    .await;
    assert_rejected(
        &router,
        &hs(&with(claims(), "iss", json!("evil-issuer"))),
        "wrong iss",
    )
    .await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let router = protected(&state(hs256_auth()));
    let genuine = hs(&claims());
    let (status, _) = whoami(&router, &genuine).await;
    assert_eq!(status, StatusCode::OK);

    let parts: Vec<&str> = genuine.split('.').collect();
    for (key, value) in [
        ("tid", json!("beta")),
        ("role", json!("super_admin")),
        ("exp", json!(now() + 86_400 * 365)),
    ] {
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&with(claims(), key, value)),
            parts[2]
        );
        assert_rejected(&router, &tampered, &format!("tampered {key}")).await;
    }
    // A flipped signature byte.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_rejected(&router, &flipped, "flipped signature bit").await;
}

#[tokio::test]
async fn every_required_claim_must_be_present() {
    let router = protected(&state(hs256_auth()));
    for claim in [
        "iss", "aud", "sub", "tid", "role", "kind", "iat", "nbf", "exp", "jti",
    ] {
        assert_rejected(
            &router,
            &hs(&without(claims(), claim)),
            &format!("missing {claim}"),
        )
        .await;
    }
    assert_rejected(&router, &hs(&with(claims(), "sub", json!(""))), "empty sub").await;
    assert_rejected(&router, &hs(&with(claims(), "jti", json!(""))), "empty jti").await;
    assert_rejected(
        &router,
        &hs(&with(claims(), "role", json!("owner"))),
        "unknown role",
    )
    .await;
}

#[tokio::test]
async fn an_invalid_tenant_id_is_refused() {
    let router = protected(&state(hs256_auth()));
    for tid in [
        json!("../x"),
        json!("a'b"),
        json!("ACME"),
        json!(""),
        json!("acme; DROP TABLE x"),
        json!("x".repeat(65)),
        json!(42),
        json!(null),
        json!(["acme"]),
    ] {
        assert_rejected(
            &router,
            &hs(&with(claims(), "tid", tid.clone())),
            &format!("tid {tid}"),
        )
        .await;
    }
}

#[tokio::test]
async fn only_access_and_service_tokens_are_access_tokens() {
    let state = state(hs256_auth());
    let router = protected(&state);
    // A JWT of another kind, correctly signed, is still refused.
    for kind in ["refresh", "id", "Access", ""] {
        assert_rejected(
            &router,
            &hs(&with(claims(), "kind", json!(kind))),
            &format!("kind {kind:?}"),
        )
        .await;
    }
    // A service token above the service cap cannot be minted, and a forged one is refused.
    assert!(
        state
            .auth
            .mint_service(
                "agent",
                &TenantId::new("acme").unwrap(),
                Role::TenantAdmin,
                Duration::from_secs(60)
            )
            .is_err()
    );
    let forged = hs(&with(
        with(claims(), "kind", json!("service")),
        "role",
        json!("super_admin"),
    ));
    assert_rejected(&router, &forged, "service token above analyst").await;

    // An opaque refresh token is not a bearer token.
    let redis = redis_up().await;
    let refresh = RefreshTokens::new(redis, 600)
        .issue_refresh(&acme_principal("alice", Role::Analyst))
        .await
        .unwrap();
    assert_rejected(&router, &refresh, "refresh token as access token").await;
}

#[tokio::test]
async fn missing_or_garbage_authorization_is_refused() {
    let router = protected(&state(hs256_auth()));
    let (status, body) = get_with(&router, "/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "missing bearer token");
    let genuine = hs(&claims());
    for value in [
        "".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer garbage".to_owned(),
        "Bearer a.b.c".to_owned(),
        "Bearer ..".to_owned(),
        format!("Basic {genuine}"),
        format!("Token {genuine}"),
        format!("Bearer {genuine}.extra"),
        format!("Bearer {}", "x".repeat(10_000)),
        format!("Bearer {}", genuine.replace('.', "")),
    ] {
        let (status, body) = get_with(&router, "/whoami", Some(&value)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value:.40}: {body}");
    }
}

// ---------------------------------------------------------------------------- refresh tokens

async fn refresh(router: &Router, token: &str) -> (StatusCode, HeaderMap, Value) {
    post_json(router, "/auth/refresh", json!({ "refresh_token": token })).await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let redis = redis_up().await;
    let state = state(hs256_auth());
    let router = app(&state);
    let tokens = RefreshTokens::new(redis, state.auth.refresh_ttl_secs());
    let first = tokens
        .issue_refresh(&acme_principal("alice", Role::TenantAdmin))
        .await
        .unwrap();

    let (status, headers, body) = refresh(&router, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], state.auth.access_ttl_secs());
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let access = body["access_token"].as_str().unwrap();
    let principal = state.auth.verify(access).unwrap();
    assert_eq!(principal, acme_principal("alice", Role::TenantAdmin));

    // The newest token rotates in turn.
    let (status, _, body) = refresh(&router, &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let third = body["refresh_token"].as_str().unwrap().to_owned();

    // Replaying a rotated token: refused, and the whole family dies with it.
    let (status, _, body) = refresh(&router, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["message"], "invalid refresh token");
    let (status, _, _) = refresh(&router, &third).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the family's newest token is revoked too"
    );
    let (status, _, _) = refresh(&router, &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another family of the same user is untouched.
    let other = tokens
        .issue_refresh(&acme_principal("alice", Role::TenantAdmin))
        .await
        .unwrap();
    let (status, _, _) = refresh(&router, &other).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let redis = redis_up().await;
    let state = state(hs256_auth());
    let router = app(&state);
    let tokens = RefreshTokens::new(redis, state.auth.refresh_ttl_secs());
    let first = tokens
        .issue_refresh(&acme_principal("bob", Role::Viewer))
        .await
        .unwrap();
    let (status, _, body) = refresh(&router, &first).await;
    assert_eq!(status, StatusCode::OK);
    let second = body["refresh_token"].as_str().unwrap().to_owned();

    let (status, _, body) =
        post_json(&router, "/auth/logout", json!({ "refresh_token": second })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = refresh(&router, &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "logged out");

    // Logging out again, or with an unknown or malformed token, is not an error and says nothing.
    for token in [
        second.as_str(),
        "mirt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "garbage",
    ] {
        let (status, _, _) =
            post_json(&router, "/auth/logout", json!({ "refresh_token": token })).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{token}");
    }
    // A body without the field is a 400, not a 401 or 500.
    let (status, _, body) = post_json(&router, "/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = refresh(&router, "garbage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_succeed_exactly_once() {
    let redis = redis_up().await;
    let state = state(hs256_auth());
    let router = app(&state);
    let tokens = RefreshTokens::new(redis, state.auth.refresh_ttl_secs());
    for round in 0..20 {
        let token = tokens
            .issue_refresh(&acme_principal("carol", Role::Analyst))
            .await
            .unwrap();
        let (a, b) = (router.clone(), router.clone());
        let (t1, t2) = (token.clone(), token.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { refresh(&a, &t1).await.0 }),
            tokio::spawn(async move { refresh(&b, &t2).await.0 }),
        );
        let mut statuses = [r1.unwrap(), r2.unwrap()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::UNAUTHORIZED],
            "round {round}"
        );
    }
}

#[tokio::test]
async fn redis_holds_only_hashes_with_a_ttl_and_tokens_expire() {
    let redis = redis_up().await;
    let token = RefreshTokens::new(redis, 2)
        .issue_refresh(&acme_principal("dave", Role::Viewer))
        .await
        .unwrap();
    let client = redis::Client::open(mi_common::settings::RedisSettings::default().url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let secret = token.strip_prefix("mirt_").unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{secret}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "the raw token is never a key: {keys:?}");
    let family: Option<String> = redis::cmd("HGET")
        .arg(refresh_key(&token))
        .arg("fam")
        .query_async(&mut conn)
        .await
        .unwrap();
    let family = family.expect("the token's hash is stored under mi:auth:rt:");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("mi:auth:fam:{family}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=2).contains(&ttl), "family TTL {ttl}");

    // After its TTL, the token is gone.
    let state = state(hs256_auth());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, _, _) = refresh(&app(&state), &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn refresh_key(token: &str) -> String {
    use sha2::Digest;
    format!(
        "mi:auth:rt:{}",
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

#[tokio::test]
async fn without_redis_refresh_and_logout_answer_503_and_access_tokens_still_work() {
    let mut settings = api_settings(hs256_auth());
    settings.infra.redis.url = "redis://127.0.0.1:1".into();
    let state = AppState::new(settings).unwrap();
    let router = app(&state);
    let token = format!("mirt_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
    let (status, _, body) = refresh(&router, &token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _, _) =
        post_json(&router, "/auth/logout", json!({ "refresh_token": token })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let access = state
        .auth
        .mint_access("erin", &TenantId::new("acme").unwrap(), Role::Viewer)
        .unwrap();
    let (status, _) = whoami(&protected(&state), &access).await;
    assert_eq!(status, StatusCode::OK, "verification needs no Redis");
}

// ------------------------------------------------------------------------------------------ CLI

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_query-api"))
        .arg("token")
        .args(args)
        .env("MI_JWT_SECRET", SECRET)
        .env_remove("MI_CONFIG")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_token_command_mints_verifiable_tokens_and_never_logs_them() {
    redis_up().await;
    let auth = Authenticator::from_settings(&hs256_auth()).unwrap();

    let out = cli(&[
        "--tenant",
        "acme",
        "--role",
        "analyst",
        "--subject",
        "alice",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    let principal = auth.verify(token).unwrap();
    assert_eq!(principal, acme_principal("alice", Role::Analyst));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token));

    let out = cli(&[
        "--tenant",
        "acme",
        "--role",
        "viewer",
        "--subject",
        "agent-1",
        "--service",
        "--ttl-secs",
        "86400",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let principal = auth
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert!(principal.service);

    // Service tokens stop at analyst; refresh is for people; tenants are validated.
    for args in [
        &[
            "--tenant",
            "acme",
            "--role",
            "tenant_admin",
            "--subject",
            "a",
            "--service",
        ][..],
        &[
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--subject",
            "a",
            "--service",
            "--refresh",
        ],
        &["--tenant", "../x", "--role", "viewer", "--subject", "a"],
        &["--tenant", "acme", "--role", "owner", "--subject", "a"],
        &[
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--subject",
            "a",
            "--ttl-secs",
            "5",
        ],
    ] {
        let out = cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }

    // --refresh prints the same JSON as /auth/refresh, and the refresh token works there.
    let out = cli(&[
        "--tenant",
        "acme",
        "--role",
        "tenant_admin",
        "--subject",
        "alice",
        "--refresh",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let access = body["access_token"].as_str().unwrap();
    let refresh_token = body["refresh_token"].as_str().unwrap();
    assert!(!stderr.contains(access) && !stderr.contains(refresh_token));
    assert_eq!(auth.verify(access).unwrap().role, Role::TenantAdmin);
    let state = state(hs256_auth());
    let (status, _, body) = refresh(&app(&state), refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
