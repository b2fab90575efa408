//! Tenants and platforms: the two keys every record, row and request carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid tenant id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantIdError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id {0:?} is longer than {max} characters", max = TenantId::MAX_LEN)]
    TooLong(String),
    #[error(
        "tenant id {0:?} may only contain lowercase ASCII letters, digits, '-' and '_', and must start with a letter or digit"
    )]
    InvalidCharacter(String),
}

/// A tenant's id: the Kafka record key, the first column of every ClickHouse table and the
/// `tid` claim of every token.
///
/// The alphabet is deliberately narrow (`[a-z0-9][a-z0-9_-]*`, at most 64 characters): the id
/// reaches ClickHouse identities, row-policy predicates and Redis key prefixes, and a narrow
/// alphabet makes all of those safe by construction rather than by escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 64;

    pub fn new(id: impl Into<String>) -> Result<Self, TenantIdError> {
        let id = id.into();
        let mut chars = id.chars();
        match chars.next() {
            None => return Err(TenantIdError::Empty),
            Some(first) if !(first.is_ascii_lowercase() || first.is_ascii_digit()) => {
                return Err(TenantIdError::InvalidCharacter(id));
            }
            Some(_) => {}
        }
        if id.len() > Self::MAX_LEN {
            return Err(TenantIdError::TooLong(id));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            return Err(TenantIdError::InvalidCharacter(id));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

/// The advertising and analytics platforms a tenant can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    GoogleAds,
    MetaAds,
    Ga4,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown platform {0:?}: expected one of google_ads, meta_ads, ga4")]
pub struct UnknownPlatform(pub String);

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::GoogleAds, Platform::MetaAds, Platform::Ga4];

    /// The wire name, as it appears in Avro records, ClickHouse rows and API parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::GoogleAds => "google_ads",
            Platform::MetaAds => "meta_ads",
            Platform::Ga4 => "ga4",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = UnknownPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPlatform(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_the_narrow_alphabet_only() {
        assert_eq!(
            TenantId::new("acme-01").map(|t| t.to_string()),
            Ok("acme-01".into())
        );
        assert_eq!(TenantId::new(""), Err(TenantIdError::Empty));
        assert!(matches!(
            TenantId::new("Acme"),
            Err(TenantIdError::InvalidCharacter(_))
        ));
        assert!(matches!(
            TenantId::new("-acme"),
            Err(TenantIdError::InvalidCharacter(_))
        ));
        assert!(matches!(
            TenantId::new("a' OR 1=1 --"),
            Err(TenantIdError::InvalidCharacter(_))
        ));
        assert!(matches!(
            TenantId::new("a".repeat(65)),
            Err(TenantIdError::TooLong(_))
        ));
        assert!(TenantId::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn tenant_ids_are_validated_when_deserialized() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"acme\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"ACME;DROP\"");
        assert!(bad.is_err());
    }

    #[test]
    fn platforms_round_trip_through_their_wire_names() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>(), Ok(p));
        }
        assert_eq!(
            "bing".parse::<Platform>(),
            Err(UnknownPlatform("bing".into()))
        );
    }
}
