//! JWT access and service tokens: one algorithm fixed by configuration, strict validation, and
//! deliberately vague rejections (the precise reason goes to the debug log, not to the caller).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mi_common::TenantId;
use mi_common::secret::SecretRef;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Role};
use crate::error::ApiError;
use crate::settings::AuthSettings;

/// HMAC keys shorter than the hash output weaken HS256 (RFC 7518 §3.2).
const MIN_HMAC_SECRET_BYTES: usize = 32;
/// No legitimate token of ours comes near this; refusing early bounds the work a caller can cause.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a JWT is for. Anything else in the `kind` claim (e.g. `refresh`) fails to parse, so a
/// token minted for another purpose can never pass as an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A person's short-lived token.
    Access,
    /// An agent's long-lived token, at most [`Role::SERVICE_MAX`].
    Service,
}

/// The claims we mint and require. Unknown extra claims are ignored, missing ones reject.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    tid: String,
    role: Role,
    kind: TokenKind,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// Verifies (and, given a signing key, mints) tokens under the configured algorithm only.
pub struct Authenticator {
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// Absent where only a public key was configured: such an instance verifies but cannot mint.
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
    service_ttl_secs: u64,
    service_max_ttl_secs: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("can_mint", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

fn settings_error(message: impl Into<String>) -> AuthError {
    AuthError::Settings(message.into())
}

/// Reads a configured secret; the error names the setting, never the value.
fn resolve(secret: Option<&SecretRef>, what: &str) -> Result<Option<SecretString>, AuthError> {
    secret
        .map(|r| r.resolve(what).map_err(|e| settings_error(e.to_string())))
        .transpose()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random, URL-safe identifier with `bytes` bytes of entropy.
pub(crate) fn random_id(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

impl Authenticator {
    /// Builds the verifier (and signer, where a private key or secret is configured) for the one
    /// configured algorithm. Fails on unknown algorithms, missing or malformed keys, short HMAC
    /// secrets and key pairs that do not match.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthError> {
        let algorithm = match settings.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(settings_error(format!(
                    "api.auth.algorithm {other:?} is not supported: use HS256, RS256, ES256 or EdDSA"
                )));
            }
        };
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(settings_error(
                "api.auth.issuer and api.auth.audience must not be empty",
            ));
        }
        if settings.access_ttl_secs == 0 || settings.refresh_ttl_secs == 0 {
            return Err(settings_error(
                "api.auth.access_ttl_secs and api.auth.refresh_ttl_secs must be positive",
            ));
        }
        if settings.service_ttl_secs == 0
            || settings.service_ttl_secs > settings.service_max_ttl_secs
        {
            return Err(settings_error(
                "api.auth.service_ttl_secs must be positive and at most api.auth.service_max_ttl_secs",
            ));
        }

        let (decoding, encoding) = if algorithm == Algorithm::HS256 {
            let secret = resolve(settings.secret.as_ref(), "api.auth.secret")?
                .ok_or_else(|| settings_error("api.auth.secret is required for HS256"))?;
            let bytes = secret.expose_secret().as_bytes();
            if bytes.len() < MIN_HMAC_SECRET_BYTES {
                return Err(settings_error(format!(
                    "api.auth.secret must be at least {MIN_HMAC_SECRET_BYTES} bytes for HS256"
                )));
            }
            let invalid = |_| settings_error("api.auth.secret is not a usable HMAC key");
            (
                DecodingKey::from_secret(bytes).map_err(invalid)?,
                Some(EncodingKey::from_secret(bytes).map_err(invalid)?),
            )
        } else {
            let public =
                resolve(settings.public_key.as_ref(), "api.auth.public_key")?.ok_or_else(|| {
                    settings_error(format!(
                        "api.auth.public_key (PEM) is required for {algorithm:?}"
                    ))
                })?;
            let public = public.expose_secret().as_bytes();
            let decoding = match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(public),
                Algorithm::ES256 => DecodingKey::from_ec_pem(public),
                _ => DecodingKey::from_ed_pem(public),
            }
            .map_err(|e| {
                settings_error(format!(
                    "api.auth.public_key is not a {algorithm:?} PEM public key: {e}"
                ))
            })?;
            let encoding = resolve(settings.private_key.as_ref(), "api.auth.private_key")?
                .map(|private| {
                    let private = private.expose_secret().as_bytes();
                    match algorithm {
                        Algorithm::RS256 => EncodingKey::from_rsa_pem(private),
                        Algorithm::ES256 => EncodingKey::from_ec_pem(private),
                        _ => EncodingKey::from_ed_pem(private),
                    }
                    // The parse error never quotes the key, but say nothing more than needed.
                    .map_err(|_| {
                        settings_error(format!(
                            "api.auth.private_key is not a {algorithm:?} PEM private key (PKCS#8)"
                        ))
                    })
                })
                .transpose()?;
            (decoding, encoding)
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "exp", "nbf", "sub"]);

        let auth = Self {
            algorithm,
            decoding,
            encoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            access_ttl_secs: settings.access_ttl_secs,
            refresh_ttl_secs: settings.refresh_ttl_secs,
            service_ttl_secs: settings.service_ttl_secs,
            service_max_ttl_secs: settings.service_max_ttl_secs,
        };
        // A private key that does not belong to the public key would mint tokens nobody accepts:
        // catch that at startup rather than at the first login.
        if auth.encoding.is_some() {
            let tenant = TenantId::new("selftest")
                .map_err(|e| settings_error(format!("self-test tenant: {e}")))?;
            let probe = auth
                .mint_access("selftest", &tenant, Role::Viewer)
                .map_err(|e| settings_error(format!("cannot sign with the configured key: {e}")))?;
            auth.verify(&probe).map_err(|_| {
                settings_error("api.auth.private_key does not match api.auth.public_key")
            })?;
        }
        Ok(auth)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Seconds an access token lives: the `expires_in` of token responses.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl_secs
    }

    pub fn refresh_ttl_secs(&self) -> u64 {
        self.refresh_ttl_secs
    }

    pub fn service_ttl(&self) -> Duration {
        Duration::from_secs(self.service_ttl_secs)
    }

    /// Whether this instance holds a signing key.
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }

    /// A person's access token, valid for `access_ttl_secs`.
    pub fn mint_access(
        &self,
        subject: &str,
        tenant: &TenantId,
        role: Role,
    ) -> Result<String, AuthError> {
        self.mint(
            subject,
            tenant,
            role,
            TokenKind::Access,
            self.access_ttl_secs,
        )
    }

    /// An agent's token: long-lived (at most `service_max_ttl_secs`) and at most
    /// [`Role::SERVICE_MAX`], because it sits in an agent's configuration rather than a browser.
    pub fn mint_service(
        &self,
        name: &str,
        tenant: &TenantId,
        role: Role,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        if role > Role::SERVICE_MAX {
            return Err(AuthError::Mint(format!(
                "a service token may carry at most the {} role, not {role}",
                Role::SERVICE_MAX
            )));
        }
        let ttl = ttl.as_secs();
        if ttl == 0 || ttl > self.service_max_ttl_secs {
            return Err(AuthError::Mint(format!(
                "a service token lives between 1 and {} seconds (api.auth.service_max_ttl_secs), not {ttl}",
                self.service_max_ttl_secs
            )));
        }
        self.mint(name, tenant, role, TokenKind::Service, ttl)
    }

    fn mint(
        &self,
        subject: &str,
        tenant: &TenantId,
        role: Role,
        kind: TokenKind,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            AuthError::Mint("no signing key configured (api.auth.private_key)".into())
        })?;
        if subject.is_empty() {
            return Err(AuthError::Mint("the subject must not be empty".into()));
        }
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_owned(),
            tid: tenant.to_string(),
            role,
            kind,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            jti: random_id(16).map_err(|e| AuthError::Mint(format!("no randomness: {e}")))?,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| AuthError::Mint(format!("signing failed: {e}")))
    }

    /// The caller behind `token`, or `Unauthorized` ("token expired" for a genuine but expired
    /// token, "invalid token" for everything else; the precise reason is logged at debug).
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let reject = |reason: &dyn std::fmt::Display| {
            tracing::debug!(%reason, "bearer token rejected");
            ApiError::Unauthorized("invalid token".into())
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(reject(&"token too long"));
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data.claims,
            // The signature was checked before `exp`, so saying "expired" reveals nothing to a
            // forger and tells a genuine client to refresh.
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                tracing::debug!(reason = %e, "bearer token rejected");
                return Err(ApiError::Unauthorized("token expired".into()));
            }
            Err(e) => return Err(reject(&e)),
        };
        if claims.iat > now_secs().saturating_add(self.leeway_secs) {
            return Err(reject(&"iat is in the future"));
        }
        if claims.sub.is_empty() || claims.jti.is_empty() {
            return Err(reject(&"empty sub or jti"));
        }
        let tenant = TenantId::new(claims.tid).map_err(|e| reject(&e))?;
        let service = claims.kind == TokenKind::Service;
        if service && claims.role > Role::SERVICE_MAX {
            return Err(reject(&"service token above the service role cap"));
        }
        Ok(Principal {
            subject: claims.sub,
            tenant,
            role: claims.role,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs256() -> AuthSettings {
        AuthSettings {
            secret: Some(SecretRef::File(fixture_secret())),
            ..AuthSettings::default()
        }
    }

    /// A secret in a temporary file of its own (setting environment variables needs `unsafe`,
    /// and tests run in parallel).
    fn secret_file(content: &str) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mi-auth-unit-{}-{n}", std::process::id()));
        std::fs::write(&path, content).expect("write");
        path
    }

    fn fixture_secret() -> std::path::PathBuf {
        secret_file("unit-test-secret-unit-test-secret-0123456\n")
    }

    fn acme() -> TenantId {
        TenantId::new("acme").expect("tenant")
    }

    #[test]
    fn minted_tokens_verify_to_their_principal() {
        let auth = Authenticator::from_settings(&hs256()).expect("authenticator");
        let token = auth
            .mint_access("alice", &acme(), Role::TenantAdmin)
            .expect("mint");
        let p = auth.verify(&token).expect("valid");
        assert_eq!(p.subject, "alice");
        assert_eq!(p.tenant, acme());
        assert_eq!(p.role, Role::TenantAdmin);
        assert!(!p.service);

        let token = auth
            .mint_service("agent-1", &acme(), Role::Analyst, Duration::from_secs(3600))
            .expect("mint");
        let p = auth.verify(&token).expect("valid");
        assert!(p.service);
        assert_eq!(p.role, Role::Analyst);
    }

    #[test]
    fn service_tokens_are_capped_in_role_and_lifetime() {
        let auth = Authenticator::from_settings(&hs256()).expect("authenticator");
        let day = Duration::from_secs(86_400);
        assert!(
            auth.mint_service("a", &acme(), Role::TenantAdmin, day)
                .is_err()
        );
        assert!(
            auth.mint_service("a", &acme(), Role::SuperAdmin, day)
                .is_err()
        );
        assert!(
            auth.mint_service("a", &acme(), Role::Viewer, Duration::ZERO)
                .is_err()
        );
        assert!(
            auth.mint_service("a", &acme(), Role::Viewer, day * 400)
                .is_err()
        );
        assert!(auth.mint_service("a", &acme(), Role::Viewer, day).is_ok());
    }

    #[test]
    fn settings_are_checked_without_revealing_secrets() {
        let err = |s: AuthSettings| {
            Authenticator::from_settings(&s)
                .expect_err("should be refused")
                .to_string()
        };
        let e = err(AuthSettings {
            algorithm: "none".into(),
            ..hs256()
        });
        assert!(e.contains("not supported"), "{e}");
        let e = err(AuthSettings {
            algorithm: "HS512".into(),
            ..hs256()
        });
        assert!(e.contains("not supported"), "{e}");
        let e = err(AuthSettings {
            secret: Some(SecretRef::Env("MI_SURELY_UNSET_AUTH_SECRET".into())),
            ..hs256()
        });
        assert!(e.contains("MI_SURELY_UNSET_AUTH_SECRET"), "{e}");
        let e = err(AuthSettings {
            secret: None,
            ..hs256()
        });
        assert!(e.contains("required for HS256"), "{e}");
        let e = err(AuthSettings {
            algorithm: "RS256".into(),
            ..hs256()
        });
        assert!(e.contains("public_key"), "{e}");
        let e = err(AuthSettings {
            service_ttl_secs: 10,
            service_max_ttl_secs: 5,
            ..hs256()
        });
        assert!(e.contains("service_ttl_secs"), "{e}");
    }

    #[test]
    fn a_short_hmac_secret_is_refused() {
        let path = secret_file("short-secret");
        let e = Authenticator::from_settings(&AuthSettings {
            secret: Some(SecretRef::File(path)),
            ..AuthSettings::default()
        })
        .expect_err("short secret")
        .to_string();
        assert!(e.contains("at least 32 bytes"), "{e}");
        assert!(!e.contains("short-secret"), "{e}");
    }
}
