//! The deterministic data model behind all three emulated platforms.
//!
//! Nothing here is stored: an account's campaigns, their attribute history, every ad's daily
//! metrics and every GA4 report row are pure functions of the seed, the account id, the date and
//! the emulator's clock ("today"). The clock only decides what is *visible*: which attribute
//! versions have happened yet, which days have data (up to yesterday), and how far recent
//! conversions have matured (restatements). Moving the clock forward therefore never rewrites
//! history older than three days, exactly like the real platforms.
//!
//! * [`entities`]: account → campaigns → ad groups (Meta: ad sets) → ads, with lifecycles
//!   (created, removed) and a change schedule for SCD2 testing.
//! * [`metrics`]: daily metrics per ad, their exact device/country/conversion-action splits and
//!   the restatement rule.
//! * [`ga4`]: GA4 sessions by source / medium / campaign / channel group / device / country.

pub mod entities;
pub mod ga4;
pub mod metrics;

use serde::{Deserialize, Serialize};

pub use entities::{
    AccountModel, Ad, AdAttrs, AdGroup, AdGroupAttrs, Campaign, CampaignAttrs, Channel, ConvAction,
    Status, Version,
};
pub use metrics::M;

use crate::date::Day;
use crate::hash::H;

/// The three source platforms, named as in the data contracts (`platform` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    GoogleAds,
    MetaAds,
    Ga4,
}

impl Platform {
    /// The contract name (`google_ads`, `meta_ads`, `ga4`).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::GoogleAds => "google_ads",
            Platform::MetaAds => "meta_ads",
            Platform::Ga4 => "ga4",
        }
    }

    /// Parses the contract name.
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "google_ads" => Some(Platform::GoogleAds),
            "meta_ads" => Some(Platform::MetaAds),
            "ga4" => Some(Platform::Ga4),
            _ => None,
        }
    }

    fn tag(self) -> u64 {
        match self {
            Platform::GoogleAds => 0x600_61E,
            Platform::MetaAds => 0x3E7A,
            Platform::Ga4 => 0x6A4,
        }
    }
}

/// Hash-chain tags, so that independent decisions never share a hash input.
pub(crate) mod tag {
    pub const ACCOUNT: u64 = 1;
    pub const SLOT: u64 = 2;
    pub const GEN: u64 = 3;
    pub const ID: u64 = 4;
    pub const ADGROUP: u64 = 5;
    pub const AD: u64 = 6;
    pub const EVENT: u64 = 7;
    pub const THEME: u64 = 8;
    pub const STATUS: u64 = 9;
    pub const BUDGET: u64 = 10;
    pub const BIDDING: u64 = 11;
    pub const MINUTE: u64 = 12;
    pub const REMOVE: u64 = 13;
    pub const CREATE: u64 = 14;
    pub const CHANNEL: u64 = 15;
    pub const PROFILE: u64 = 16;
    pub const DAY: u64 = 17;
    pub const CONV: u64 = 18;
    pub const NAME: u64 = 19;
    pub const END: u64 = 20;
    pub const CREATIVE: u64 = 21;
    pub const GA4: u64 = 22;
    pub const CYCLE: u64 = 23;
}

/// Sizes and seed of the synthetic world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenConfig {
    /// Seeds every synthetic value: ids, names, schedules and metrics all derive from it.
    pub seed: u64,
    /// Campaign slots per ad account (each slot hosts successive campaigns over time).
    pub campaigns: u32,
    /// Ad groups (Meta: ad sets) per campaign.
    pub ad_groups: u32,
    /// Ads per ad group.
    pub ads: u32,
    /// Data exists for each day from `today - history_days` to yesterday.
    pub history_days: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            campaigns: 4,
            ad_groups: 3,
            ads: 2,
            history_days: 400,
        }
    }
}

/// A country an account sells in: ISO code (Meta's `country` breakdown) and English name (GA4's
/// `country` dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Country {
    pub code: &'static str,
    pub name: &'static str,
}

const COUNTRIES_USD: [Country; 3] = [
    Country {
        code: "US",
        name: "United States",
    },
    Country {
        code: "CA",
        name: "Canada",
    },
    Country {
        code: "MX",
        name: "Mexico",
    },
];
const COUNTRIES_EUR: [Country; 3] = [
    Country {
        code: "DE",
        name: "Germany",
    },
    Country {
        code: "FR",
        name: "France",
    },
    Country {
        code: "ES",
        name: "Spain",
    },
];
const COUNTRIES_GBP: [Country; 3] = [
    Country {
        code: "GB",
        name: "United Kingdom",
    },
    Country {
        code: "IE",
        name: "Ireland",
    },
    Country {
        code: "NL",
        name: "Netherlands",
    },
];

/// Static facts about one account (Google customer, Meta ad account or GA4 property).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountInfo {
    pub platform: Platform,
    pub id: u64,
    /// ISO 4217; money is always in this currency, with 2 decimals.
    pub currency: &'static str,
    /// IANA zone; dates are local dates in this zone.
    pub time_zone: &'static str,
    pub countries: [Country; 3],
    pub name: String,
}

/// The generator: configuration plus pure functions from it.
#[derive(Clone, Debug)]
pub struct Generator {
    cfg: GenConfig,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Self {
        Generator { cfg }
    }

    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    pub(crate) fn base(&self, platform: Platform, account: u64) -> H {
        H::new(self.cfg.seed).with(platform.tag()).with(account)
    }

    /// Currency, time zone and countries of an account, derived from its id.
    pub fn account(&self, platform: Platform, id: u64) -> AccountInfo {
        let h = self.base(platform, id).with(tag::ACCOUNT);
        let (currency, zones, countries): (&str, &[&str], [Country; 3]) = match h.below(3) {
            0 => (
                "USD",
                &["America/New_York", "America/Chicago", "America/Los_Angeles"],
                COUNTRIES_USD,
            ),
            1 => (
                "EUR",
                &["Europe/Berlin", "Europe/Paris", "Europe/Madrid"],
                COUNTRIES_EUR,
            ),
            _ => ("GBP", &["Europe/London"], COUNTRIES_GBP),
        };
        let time_zone = h.with(1).pick(zones).unwrap_or("UTC");
        let name = match platform {
            Platform::GoogleAds => format!("Emulated Customer {id}"),
            Platform::MetaAds => format!("Emulated Ad Account {id}"),
            Platform::Ga4 => format!("Emulated Property {id}"),
        };
        AccountInfo {
            platform,
            id,
            currency,
            time_zone,
            countries,
            name,
        }
    }

    /// First and last day with data when the clock says `today`.
    pub fn window(&self, today: Day) -> (Day, Day) {
        let history = i32::try_from(self.cfg.history_days).unwrap_or(i32::MAX);
        (today.plus(-history), today.plus(-1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_facts_are_stable() {
        let g = Generator::new(GenConfig::default());
        let a = g.account(Platform::GoogleAds, 1_234_567_890);
        assert_eq!(a, g.account(Platform::GoogleAds, 1_234_567_890));
        assert!(["USD", "EUR", "GBP"].contains(&a.currency));
        let currencies: std::collections::BTreeSet<_> = (0..50)
            .map(|i| g.account(Platform::MetaAds, i).currency)
            .collect();
        assert_eq!(currencies.len(), 3, "all currencies appear across accounts");
    }
}
