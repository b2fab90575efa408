//! What can go wrong in an extraction, always saying where: platform, account, endpoint, field.

use std::fmt;

use mi_common::Platform;

/// Where a request went: the context every extraction error carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Where {
    pub platform: Platform,
    pub account: String,
    pub endpoint: String,
}

impl Where {
    pub fn new(platform: Platform, account: &str, endpoint: impl Into<String>) -> Self {
        Self {
            platform,
            account: account.to_owned(),
            endpoint: endpoint.into(),
        }
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} account {} endpoint {}",
            self.platform, self.account, self.endpoint
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The platform refused the request for a reason retrying cannot fix.
    #[error("{at}: the API answered {status}: {message}")]
    Api {
        at: Where,
        status: u16,
        message: String,
    },
    /// The response does not have the documented shape.
    #[error("{at}: malformed response: field {field}: {problem}")]
    Malformed {
        at: Where,
        field: String,
        problem: String,
    },
    /// Throttling, server errors or expired tokens outlasted the retry budget.
    #[error("{at}: gave up after {attempts} attempts; last: {last}")]
    Exhausted {
        at: Where,
        attempts: u32,
        last: String,
    },
    /// OAuth failed (bad client, revoked refresh token).
    #[error("{at}: authentication failed: {message}")]
    Auth { at: Where, message: String },
    #[error(transparent)]
    Secret(#[from] mi_common::secret::SecretError),
    #[error("publishing to Kafka: {0}")]
    Publish(String),
    #[error("tenant {tenant} has no {platform} connection configured")]
    NotConnected { tenant: String, platform: Platform },
}

impl ExtractError {
    pub fn malformed(at: &Where, field: impl Into<String>, problem: impl Into<String>) -> Self {
        ExtractError::Malformed {
            at: at.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}
