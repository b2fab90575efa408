//! Validation of raw records before they become facts or dimensions.
//!
//! A record that fails goes to the dead-letter topic with [`Invalid`]'s message as the reason
//! and its [`Invalid::code`] as a metric label; the pipeline goes on. Messages name the field,
//! the offending value and the record (platform, account, entity, date), because whoever reads a
//! dead letter must find the row at the source without decoding the original bytes.
//!
//! Checks run in a fixed order (identity, tenant, counts, cross-field rules, dates, currency) and
//! the first failure is reported.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use mi_common::Platform;
use mi_schemas::{RawAd, RawAdGroup, RawAdPerformance, RawCampaign, RawConversion, RawGaSessions};

/// The tenants whose records are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantRegistry {
    /// `None`: every tenant (no registry configured, e.g. local runs and tests).
    allowed: Option<BTreeSet<String>>,
}

impl TenantRegistry {
    /// Accepts every tenant id.
    pub fn allow_all() -> Self {
        Self { allowed: None }
    }

    /// Accepts only these tenant ids.
    pub fn from_ids<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allowed: Some(ids.into_iter().map(Into::into).collect()),
        }
    }

    pub fn contains(&self, tenant_id: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|ids| ids.contains(tenant_id))
    }
}

/// The kind of a validation failure: a stable short code for metrics and alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    MissingField,
    UnknownTenant,
    NegativeCount,
    NotFinite,
    ClicksExceedImpressions,
    ReachExceedsImpressions,
    EngagedExceedsSessions,
    DateOutOfRange,
    BadCurrency,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingField => "missing_field",
            Code::UnknownTenant => "unknown_tenant",
            Code::NegativeCount => "negative_count",
            Code::NotFinite => "not_finite",
            Code::ClicksExceedImpressions => "clicks_exceed_impressions",
            Code::ReachExceedsImpressions => "reach_exceeds_impressions",
            Code::EngagedExceedsSessions => "engaged_exceeds_sessions",
            Code::DateOutOfRange => "date_out_of_range",
            Code::BadCurrency => "bad_currency",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record is invalid, e.g. `field clicks: 12 exceeds impressions 10 (google_ads account
/// 123 ad 9 on 2026-11-01)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {detail} ({record})")]
pub struct Invalid {
    code: Code,
    field: &'static str,
    detail: String,
    record: String,
}

impl Invalid {
    /// The stable short code (`missing_field`, `unknown_tenant`, `negative_count`, …).
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
    pub fn kind(&self) -> Code {
        self.code
    }
    /// The offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

/// The earliest date any record may carry.
pub const MIN_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};
/// The latest campaign start/end date (schedules are in the future; Google's "no end date" is
/// 2037-12-30).
pub const MAX_SCHEDULE_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2100, 12, 31) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// Collects the context of one record and checks its fields.
struct Check<'a> {
    record: &'a dyn Fn() -> String,
}

impl Check<'_> {
    fn fail(&self, code: Code, field: &'static str, detail: String) -> Invalid {
        Invalid {
            code,
            field,
            detail,
            record: (self.record)(),
        }
    }

    fn required(&self, field: &'static str, value: &str) -> Result<(), Invalid> {
        if value.trim().is_empty() {
            return Err(self.fail(Code::MissingField, field, format!("is empty ({value:?})")));
        }
        Ok(())
    }

    fn tenant(&self, tenants: &TenantRegistry, tenant_id: &str) -> Result<(), Invalid> {
        self.required("tenant_id", tenant_id)?;
        if !tenants.contains(tenant_id) {
            return Err(self.fail(
                Code::UnknownTenant,
                "tenant_id",
                format!("unknown tenant {tenant_id:?}"),
            ));
        }
        Ok(())
    }

    fn envelope(
        &self,
        tenants: &TenantRegistry,
        tenant_id: &str,
        account_id: &str,
        run_id: &str,
    ) -> Result<(), Invalid> {
        self.tenant(tenants, tenant_id)?;
        self.required("account_id", account_id)?;
        self.required("run_id", run_id)
    }

    fn count(&self, field: &'static str, value: i64) -> Result<(), Invalid> {
        if value < 0 {
            return Err(self.fail(Code::NegativeCount, field, format!("{value} is negative")));
        }
        Ok(())
    }

    fn opt_count(&self, field: &'static str, value: Option<i64>) -> Result<(), Invalid> {
        value.map_or(Ok(()), |v| self.count(field, v))
    }

    fn fractional(&self, field: &'static str, value: f64) -> Result<(), Invalid> {
        if !value.is_finite() {
            return Err(self.fail(Code::NotFinite, field, format!("{value} is not finite")));
        }
        if value < 0.0 {
            return Err(self.fail(Code::NegativeCount, field, format!("{value} is negative")));
        }
        Ok(())
    }

    fn at_most(
        &self,
        code: Code,
        field: &'static str,
        value: i64,
        bound_name: &str,
        bound: i64,
    ) -> Result<(), Invalid> {
        if value > bound {
            return Err(self.fail(code, field, format!("{value} exceeds {bound_name} {bound}")));
        }
        Ok(())
    }

    /// A report date: not before 2000-01-01, and not after the extraction's (UTC) date + 1 day —
    /// the day of slack covers accounts whose time zone is ahead of UTC.
    fn report_date(
        &self,
        field: &'static str,
        date: NaiveDate,
        extracted_at: DateTime<Utc>,
    ) -> Result<(), Invalid> {
        let latest = extracted_at.date_naive() + TimeDelta::days(1);
        if date < MIN_DATE || date > latest {
            return Err(self.fail(
                Code::DateOutOfRange,
                field,
                format!("{date} is outside {MIN_DATE}..={latest} (extracted at {extracted_at})"),
            ));
        }
        Ok(())
    }

    fn schedule_date(&self, field: &'static str, date: Option<NaiveDate>) -> Result<(), Invalid> {
        match date {
            Some(d) if d < MIN_DATE || d > MAX_SCHEDULE_DATE => Err(self.fail(
                Code::DateOutOfRange,
                field,
                format!("{d} is outside {MIN_DATE}..={MAX_SCHEDULE_DATE}"),
            )),
            _ => Ok(()),
        }
    }

    /// Instants: `extracted_at` not before 2000, and `changed_at` (which becomes an SCD2
    /// `valid_from`) neither before 2000 nor more than a day after the extraction.
    fn instants(
        &self,
        extracted_at: DateTime<Utc>,
        changed_at: Option<DateTime<Utc>>,
    ) -> Result<(), Invalid> {
        let min = MIN_DATE.and_time(chrono::NaiveTime::MIN).and_utc();
        if extracted_at < min {
            return Err(self.fail(
                Code::DateOutOfRange,
                "extracted_at",
                format!("{extracted_at} is before {min}"),
            ));
        }
        if let Some(c) = changed_at {
            let max = extracted_at + TimeDelta::days(1);
            if c < min || c > max {
                return Err(self.fail(
                    Code::DateOutOfRange,
                    "changed_at",
                    format!("{c} is outside {min}..={max}"),
                ));
            }
        }
        Ok(())
    }

    fn currency(&self, currency: &str) -> Result<(), Invalid> {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(self.fail(
                Code::BadCurrency,
                "currency",
                format!("{currency:?} is not a 3-letter uppercase ISO 4217 code"),
            ));
        }
        Ok(())
    }
}

/// Daily ad metrics.
pub fn validate_ad_performance(
    r: &RawAdPerformance,
    tenants: &TenantRegistry,
) -> Result<(), Invalid> {
    let record = || {
        format!(
            "{} account {} ad {} on {}",
            r.platform, r.account_id, r.ad_id, r.date
        )
    };
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.required("campaign_id", &r.campaign_id)?;
    c.required("ad_group_id", &r.ad_group_id)?;
    c.required("ad_id", &r.ad_id)?;
    c.count("impressions", r.impressions)?;
    c.count("clicks", r.clicks)?;
    c.count("cost_micros", r.cost_micros)?;
    c.fractional("conversions", r.conversions)?;
    c.count("conversion_value_micros", r.conversion_value_micros)?;
    c.opt_count("video_views", r.video_views)?;
    c.opt_count("engagements", r.engagements)?;
    c.opt_count("reach", r.reach)?;
    // Google counts a click only on an impression; Meta's `clicks` include non-link clicks
    // (likes, profile clicks…) and may legitimately exceed impressions.
    if r.platform == Platform::GoogleAds {
        c.at_most(
            Code::ClicksExceedImpressions,
            "clicks",
            r.clicks,
            "impressions",
            r.impressions,
        )?;
    }
    // Reach counts distinct people among the impressions.
    if let Some(reach) = r.reach {
        c.at_most(
            Code::ReachExceedsImpressions,
            "reach",
            reach,
            "impressions",
            r.impressions,
        )?;
    }
    c.instants(r.extracted_at, None)?;
    c.report_date("date", r.date, r.extracted_at)?;
    c.currency(&r.currency)
}

/// GA4 daily sessions.
pub fn validate_ga_sessions(r: &RawGaSessions, tenants: &TenantRegistry) -> Result<(), Invalid> {
    let record = || {
        format!(
            "{} property {} {}/{} campaign {:?} on {}",
            r.platform, r.account_id, r.source, r.medium, r.campaign, r.date
        )
    };
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.count("sessions", r.sessions)?;
    c.count("engaged_sessions", r.engaged_sessions)?;
    c.count("screen_page_views", r.screen_page_views)?;
    c.count("session_duration_seconds", r.session_duration_seconds)?;
    c.count("transactions", r.transactions)?;
    c.count("purchase_revenue_micros", r.purchase_revenue_micros)?;
    c.fractional("key_events", r.key_events)?;
    c.at_most(
        Code::EngagedExceedsSessions,
        "engaged_sessions",
        r.engaged_sessions,
        "sessions",
        r.sessions,
    )?;
    c.instants(r.extracted_at, None)?;
    c.report_date("date", r.date, r.extracted_at)?;
    c.currency(&r.currency)
}

/// Daily conversions per campaign and action.
pub fn validate_conversion(r: &RawConversion, tenants: &TenantRegistry) -> Result<(), Invalid> {
    let record = || {
        format!(
            "{} account {} campaign {} action {:?} on {}",
            r.platform, r.account_id, r.campaign_id, r.conversion_action, r.date
        )
    };
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.required("campaign_id", &r.campaign_id)?;
    c.required("conversion_action", &r.conversion_action)?;
    c.fractional("conversions", r.conversions)?;
    c.count("conversion_value_micros", r.conversion_value_micros)?;
    c.instants(r.extracted_at, None)?;
    c.report_date("date", r.date, r.extracted_at)?;
    c.currency(&r.currency)
}

/// A campaign snapshot.
pub fn validate_campaign(r: &RawCampaign, tenants: &TenantRegistry) -> Result<(), Invalid> {
    let record = || {
        format!(
            "{} account {} campaign {}",
            r.platform, r.account_id, r.campaign_id
        )
    };
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.required("campaign_id", &r.campaign_id)?;
    c.opt_count("budget_micros", r.budget_micros)?;
    c.instants(r.extracted_at, r.changed_at)?;
    c.schedule_date("start_date", r.start_date)?;
    c.schedule_date("end_date", r.end_date)
}

/// An ad group (ad set) snapshot.
pub fn validate_ad_group(r: &RawAdGroup, tenants: &TenantRegistry) -> Result<(), Invalid> {
    let record = || {
        format!(
            "{} account {} ad group {}",
            r.platform, r.account_id, r.ad_group_id
        )
    };
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.required("ad_group_id", &r.ad_group_id)?;
    c.required("campaign_id", &r.campaign_id)?;
    c.opt_count("bid_micros", r.bid_micros)?;
    c.opt_count("budget_micros", r.budget_micros)?;
    c.instants(r.extracted_at, r.changed_at)
}

/// An ad snapshot.
pub fn validate_ad(r: &RawAd, tenants: &TenantRegistry) -> Result<(), Invalid> {
    let record = || format!("{} account {} ad {}", r.platform, r.account_id, r.ad_id);
    let c = Check { record: &record };
    c.envelope(tenants, &r.tenant_id, &r.account_id, &r.run_id)?;
    c.required("ad_id", &r.ad_id)?;
    c.required("ad_group_id", &r.ad_group_id)?;
    c.required("campaign_id", &r.campaign_id)?;
    c.instants(r.extracted_at, r.changed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }
    /// 2026-11-02T00:00:00Z.
    const EXTRACTED: i64 = 1_793_577_600_000;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn all() -> TenantRegistry {
        TenantRegistry::allow_all()
    }

    fn perf() -> RawAdPerformance {
        RawAdPerformance {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "123".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            date: day(2026, 11, 1),
            campaign_id: "11".into(),
            ad_group_id: "21".into(),
            ad_id: "9".into(),
            device: None,
            country: None,
            currency: "USD".into(),
            impressions: 10,
            clicks: 10,
            cost_micros: 0,
            conversions: 0.0,
            conversion_value_micros: 0,
            video_views: Some(0),
            engagements: Some(0),
            reach: Some(10),
        }
    }

    fn ga() -> RawGaSessions {
        RawGaSessions {
            tenant_id: "acme".into(),
            platform: Platform::Ga4,
            account_id: "987".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            date: day(2026, 11, 1),
            source: "google".into(),
            medium: "cpc".into(),
            campaign: "brand".into(),
            channel_group: "Paid Search".into(),
            device: "mobile".into(),
            country: "US".into(),
            currency: "USD".into(),
            sessions: 10,
            engaged_sessions: 10,
            screen_page_views: 0,
            session_duration_seconds: 0,
            transactions: 0,
            purchase_revenue_micros: 0,
            key_events: 0.0,
        }
    }

    fn conversion() -> RawConversion {
        RawConversion {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "123".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            date: day(2026, 11, 1),
            campaign_id: "11".into(),
            conversion_action: "Purchase".into(),
            category: "PURCHASE".into(),
            currency: "USD".into(),
            conversions: 0.0,
            conversion_value_micros: 0,
        }
    }

    fn campaign() -> RawCampaign {
        RawCampaign {
            tenant_id: "acme".into(),
            platform: Platform::MetaAds,
            account_id: "act_1".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            campaign_id: "11".into(),
            name: String::new(),
            status: "ACTIVE".into(),
            channel_type: None,
            bidding_strategy: None,
            budget_micros: Some(0),
            budget_period: None,
            start_date: Some(MIN_DATE),
            end_date: Some(MAX_SCHEDULE_DATE),
            changed_at: Some(ts(EXTRACTED)),
        }
    }

    fn ad_group() -> RawAdGroup {
        RawAdGroup {
            tenant_id: "acme".into(),
            platform: Platform::MetaAds,
            account_id: "act_1".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            ad_group_id: "21".into(),
            campaign_id: "11".into(),
            name: "Set".into(),
            status: "ACTIVE".into(),
            ad_group_type: None,
            bid_micros: Some(0),
            budget_micros: Some(0),
            changed_at: None,
        }
    }

    fn ad() -> RawAd {
        RawAd {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "123".into(),
            extracted_at: ts(EXTRACTED),
            run_id: "run-1".into(),
            ad_id: "31".into(),
            ad_group_id: "21".into(),
            campaign_id: "11".into(),
            name: "Ad".into(),
            status: "ENABLED".into(),
            ad_type: None,
            headline: None,
            final_url: None,
            changed_at: None,
        }
    }

    /// Asserts the failure's code and field, and that the message names the field.
    #[track_caller]
    fn fails(result: Result<(), Invalid>, code: &str, field: &str) -> String {
        let err = result.expect_err("should be invalid");
        assert_eq!((err.code(), err.field()), (code, field), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("field {field}: ")), "{msg}");
        msg
    }

    /// The boundary samples (clicks = impressions = reach, engaged = sessions, zero counts,
    /// date = extraction date + 1, edge schedule dates…) are all valid: every rule below is
    /// tested against a sample that passes every other rule.
    #[test]
    fn boundary_samples_are_valid() {
        let t = all();
        validate_ad_performance(&perf(), &t).unwrap();
        let mut p = perf();
        p.date = day(2026, 11, 3);
        validate_ad_performance(&p, &t).unwrap();
        p.date = MIN_DATE;
        validate_ad_performance(&p, &t).unwrap();
        validate_ga_sessions(&ga(), &t).unwrap();
        validate_conversion(&conversion(), &t).unwrap();
        validate_campaign(&campaign(), &t).unwrap();
        validate_ad_group(&ad_group(), &t).unwrap();
        validate_ad(&ad(), &t).unwrap();
    }

    #[test]
    fn required_ids() {
        let t = all();
        let mut p = perf();
        p.tenant_id = String::new();
        fails(
            validate_ad_performance(&p, &t),
            "missing_field",
            "tenant_id",
        );
        let mut p = perf();
        p.account_id = " ".into();
        fails(
            validate_ad_performance(&p, &t),
            "missing_field",
            "account_id",
        );
        let mut p = perf();
        p.run_id = String::new();
        fails(validate_ad_performance(&p, &t), "missing_field", "run_id");
        for field in ["campaign_id", "ad_group_id", "ad_id"] {
            let mut p = perf();
            match field {
                "campaign_id" => p.campaign_id.clear(),
                "ad_group_id" => p.ad_group_id.clear(),
                _ => p.ad_id.clear(),
            }
            fails(validate_ad_performance(&p, &t), "missing_field", field);
        }
        let mut g = ga();
        g.run_id.clear();
        fails(validate_ga_sessions(&g, &t), "missing_field", "run_id");
        let mut g = ga();
        g.tenant_id.clear();
        fails(validate_ga_sessions(&g, &t), "missing_field", "tenant_id");
        let mut g = ga();
        g.account_id.clear();
        fails(validate_ga_sessions(&g, &t), "missing_field", "account_id");
        let mut c = conversion();
        c.campaign_id.clear();
        fails(validate_conversion(&c, &t), "missing_field", "campaign_id");
        let mut c = conversion();
        c.conversion_action.clear();
        fails(
            validate_conversion(&c, &t),
            "missing_field",
            "conversion_action",
        );
        let mut c = conversion();
        c.account_id.clear();
        fails(validate_conversion(&c, &t), "missing_field", "account_id");
        let mut e = campaign();
        e.campaign_id.clear();
        fails(validate_campaign(&e, &t), "missing_field", "campaign_id");
        let mut e = campaign();
        e.run_id.clear();
        fails(validate_campaign(&e, &t), "missing_field", "run_id");
        let mut g = ad_group();
        g.ad_group_id.clear();
        fails(validate_ad_group(&g, &t), "missing_field", "ad_group_id");
        let mut g = ad_group();
        g.campaign_id.clear();
        fails(validate_ad_group(&g, &t), "missing_field", "campaign_id");
        let mut g = ad_group();
        g.tenant_id.clear();
        fails(validate_ad_group(&g, &t), "missing_field", "tenant_id");
        for field in ["ad_id", "ad_group_id", "campaign_id", "account_id"] {
            let mut a = ad();
            match field {
                "ad_id" => a.ad_id.clear(),
                "ad_group_id" => a.ad_group_id.clear(),
                "campaign_id" => a.campaign_id.clear(),
                _ => a.account_id.clear(),
            }
            fails(validate_ad(&a, &t), "missing_field", field);
        }
    }

    #[test]
    fn tenant_must_be_known() {
        let only_acme = TenantRegistry::from_ids(["acme"]);
        validate_ad_performance(&perf(), &only_acme).unwrap();
        let mut p = perf();
        p.tenant_id = "globex".into();
        validate_ad_performance(&p, &all()).unwrap();
        let msg = fails(
            validate_ad_performance(&p, &only_acme),
            "unknown_tenant",
            "tenant_id",
        );
        assert!(msg.contains("\"globex\""), "{msg}");
        let mut g = ga();
        g.tenant_id = "globex".into();
        fails(
            validate_ga_sessions(&g, &only_acme),
            "unknown_tenant",
            "tenant_id",
        );
        let mut c = conversion();
        c.tenant_id = "globex".into();
        fails(
            validate_conversion(&c, &only_acme),
            "unknown_tenant",
            "tenant_id",
        );
        let mut e = campaign();
        e.tenant_id = "globex".into();
        fails(
            validate_campaign(&e, &only_acme),
            "unknown_tenant",
            "tenant_id",
        );
        let mut e = ad_group();
        e.tenant_id = "globex".into();
        fails(
            validate_ad_group(&e, &only_acme),
            "unknown_tenant",
            "tenant_id",
        );
        let mut e = ad();
        e.tenant_id = "globex".into();
        fails(validate_ad(&e, &only_acme), "unknown_tenant", "tenant_id");
        assert!(!TenantRegistry::from_ids(Vec::<String>::new()).contains("acme"));
    }

    #[test]
    fn ad_counts_are_non_negative() {
        let t = all();
        type Set = fn(&mut RawAdPerformance);
        let cases: [(&str, Set); 9] = [
            ("impressions", |p| p.impressions = -1),
            ("clicks", |p| p.clicks = -1),
            ("cost_micros", |p| p.cost_micros = -1),
            ("conversions", |p| p.conversions = -0.5),
            ("conversion_value_micros", |p| {
                p.conversion_value_micros = -1
            }),
            ("video_views", |p| p.video_views = Some(-1)),
            ("engagements", |p| p.engagements = Some(-1)),
            ("reach", |p| p.reach = Some(-1)),
            // A negative count on Meta (no clicks ≤ impressions rule there).
            ("clicks", |p| {
                p.platform = Platform::MetaAds;
                p.clicks = -3;
            }),
        ];
        for (field, set) in cases {
            let mut p = perf();
            set(&mut p);
            let msg = fails(validate_ad_performance(&p, &t), "negative_count", field);
            assert!(msg.contains("is negative"), "{msg}");
        }
        for bad in [f64::NAN, f64::INFINITY] {
            let mut p = perf();
            p.conversions = bad;
            fails(validate_ad_performance(&p, &t), "not_finite", "conversions");
        }
    }

    #[test]
    fn ga_and_conversion_counts_are_non_negative() {
        let t = all();
        type Set = fn(&mut RawGaSessions);
        let cases: [(&str, Set); 7] = [
            ("sessions", |g| g.sessions = -1),
            ("engaged_sessions", |g| g.engaged_sessions = -1),
            ("screen_page_views", |g| g.screen_page_views = -1),
            ("session_duration_seconds", |g| {
                g.session_duration_seconds = -1
            }),
            ("transactions", |g| g.transactions = -1),
            ("purchase_revenue_micros", |g| {
                g.purchase_revenue_micros = -1
            }),
            ("key_events", |g| g.key_events = -1.0),
        ];
        for (field, set) in cases {
            let mut g = ga();
            set(&mut g);
            fails(validate_ga_sessions(&g, &t), "negative_count", field);
        }
        let mut g = ga();
        g.key_events = f64::NAN;
        fails(validate_ga_sessions(&g, &t), "not_finite", "key_events");

        let mut c = conversion();
        c.conversions = -1.0;
        fails(validate_conversion(&c, &t), "negative_count", "conversions");
        let mut c = conversion();
        c.conversions = f64::NEG_INFINITY;
        fails(validate_conversion(&c, &t), "not_finite", "conversions");
        let mut c = conversion();
        c.conversion_value_micros = -1;
        fails(
            validate_conversion(&c, &t),
            "negative_count",
            "conversion_value_micros",
        );

        let mut e = campaign();
        e.budget_micros = Some(-1);
        fails(validate_campaign(&e, &t), "negative_count", "budget_micros");
        let mut e = ad_group();
        e.bid_micros = Some(-1);
        fails(validate_ad_group(&e, &t), "negative_count", "bid_micros");
        let mut e = ad_group();
        e.budget_micros = Some(-1);
        fails(validate_ad_group(&e, &t), "negative_count", "budget_micros");
    }

    #[test]
    fn google_clicks_cannot_exceed_impressions_but_meta_clicks_can() {
        let t = all();
        let mut p = perf();
        p.clicks = 12;
        p.reach = None;
        let msg = fails(
            validate_ad_performance(&p, &t),
            "clicks_exceed_impressions",
            "clicks",
        );
        assert_eq!(
            msg,
            "field clicks: 12 exceeds impressions 10 (google_ads account 123 ad 9 on 2026-11-01)"
        );
        p.platform = Platform::MetaAds;
        validate_ad_performance(&p, &t).unwrap();
    }

    #[test]
    fn reach_cannot_exceed_impressions() {
        let t = all();
        let mut p = perf();
        p.platform = Platform::MetaAds;
        p.reach = Some(11);
        let msg = fails(
            validate_ad_performance(&p, &t),
            "reach_exceeds_impressions",
            "reach",
        );
        assert!(msg.contains("11 exceeds impressions 10"), "{msg}");
        p.reach = None;
        validate_ad_performance(&p, &t).unwrap();
    }

    #[test]
    fn engaged_sessions_cannot_exceed_sessions() {
        let mut g = ga();
        g.engaged_sessions = 11;
        let msg = fails(
            validate_ga_sessions(&g, &all()),
            "engaged_exceeds_sessions",
            "engaged_sessions",
        );
        assert!(msg.contains("11 exceeds sessions 10"), "{msg}");
        assert!(msg.contains("ga4 property 987 google/cpc"), "{msg}");
    }

    #[test]
    fn report_dates_in_a_sane_range() {
        let t = all();
        let too_late = day(2026, 11, 4); // extracted 2026-11-02: at most 11-03
        let too_early = day(1999, 12, 31);
        for date in [too_late, too_early] {
            let mut p = perf();
            p.date = date;
            let msg = fails(validate_ad_performance(&p, &t), "date_out_of_range", "date");
            assert!(msg.contains(&date.to_string()), "{msg}");
            let mut g = ga();
            g.date = date;
            fails(validate_ga_sessions(&g, &t), "date_out_of_range", "date");
            let mut c = conversion();
            c.date = date;
            fails(validate_conversion(&c, &t), "date_out_of_range", "date");
        }
    }

    #[test]
    fn instants_and_schedule_dates_in_a_sane_range() {
        let t = all();
        let mut p = perf();
        p.extracted_at = ts(0);
        fails(
            validate_ad_performance(&p, &t),
            "date_out_of_range",
            "extracted_at",
        );
        let mut e = campaign();
        e.changed_at = Some(ts(EXTRACTED + 86_400_001));
        fails(validate_campaign(&e, &t), "date_out_of_range", "changed_at");
        let mut e = campaign();
        e.changed_at = Some(ts(0));
        fails(validate_campaign(&e, &t), "date_out_of_range", "changed_at");
        let mut g = ad_group();
        g.changed_at = Some(ts(EXTRACTED + 2 * 86_400_000));
        fails(validate_ad_group(&g, &t), "date_out_of_range", "changed_at");
        let mut a = ad();
        a.extracted_at = ts(1_000);
        fails(validate_ad(&a, &t), "date_out_of_range", "extracted_at");
        let mut e = campaign();
        e.start_date = Some(day(1999, 12, 31));
        fails(validate_campaign(&e, &t), "date_out_of_range", "start_date");
        let mut e = campaign();
        e.end_date = Some(day(2101, 1, 1));
        fails(validate_campaign(&e, &t), "date_out_of_range", "end_date");
    }

    #[test]
    fn currency_is_three_uppercase_letters() {
        let t = all();
        for bad in ["usd", "US", "USDX", "", "U$D", "ÉUR"] {
            let mut p = perf();
            p.currency = bad.into();
            fails(validate_ad_performance(&p, &t), "bad_currency", "currency");
            let mut g = ga();
            g.currency = bad.into();
            fails(validate_ga_sessions(&g, &t), "bad_currency", "currency");
            let mut c = conversion();
            c.currency = bad.into();
            fails(validate_conversion(&c, &t), "bad_currency", "currency");
        }
    }
}
