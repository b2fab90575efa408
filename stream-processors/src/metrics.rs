//! Derived metrics: always ratios of sums, never averages of ratios.
//!
//! A fact row's ratios are computed by the same code as any aggregate: a row is the sum of one
//! row. So the query layer can sum the additive columns of any set of rows into [`AdTotals`],
//! [`GaTotals`] or [`ConversionTotals`] and call `ratios()`, and get exactly what the row-level
//! ratios would be for one row — while averaging per-row ratios would weight a day with 10
//! impressions like a day with a million.
//!
//! Every ratio is `None` when its denominator is 0 (a CPA of 0 would claim free conversions; NaN
//! and infinity would poison every sum downstream).

use mi_schemas::{
    FactAdPerformance, FactConversion, FactGaSessions, RawAdPerformance, RawConversion,
    RawGaSessions,
};

/// `numerator / denominator`, or `None` when the denominator is 0 or the result is not finite
/// (a non-finite input). Never returns NaN or ±∞.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator == 0.0 {
        return None;
    }
    let r = numerator / denominator;
    r.is_finite().then_some(r)
}

/// Integer counts as `f64` for ratios. Counts and micros are far below 2^53 in practice, where
/// the conversion is exact.
fn f(v: i64) -> f64 {
    v as f64
}

// ---------------------------------------------------------------------------------------------
// Ad performance
// ---------------------------------------------------------------------------------------------

/// The additive columns of ad performance, summed over any set of rows.
///
/// `video_views` and `reach` are optional per row (not every platform or ad reports them), so
/// their ratios use only the impressions of the rows that report them: a video view rate must not
/// be diluted by the impressions of search ads that cannot have views.
///
/// Reach is not additive across days or ads (the same person counted each day), so a frequency
/// over several daily rows is impressions per *summed daily* reach — an upper bound of unique
/// reach, hence a lower bound of true frequency. Exact multi-day reach needs the platform's own
/// multi-day query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdTotals {
    pub impressions: i64,
    pub clicks: i64,
    pub cost_micros: i64,
    pub conversions: f64,
    pub conversion_value_micros: i64,
    pub video_views: i64,
    /// Impressions of the rows that report `video_views`.
    pub video_impressions: i64,
    pub reach: i64,
    /// Impressions of the rows that report `reach`.
    pub reach_impressions: i64,
}

/// The derived metrics of ad performance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdRatios {
    pub ctr: Option<f64>,
    pub cpc_micros: Option<f64>,
    pub cpm_micros: Option<f64>,
    pub cpa_micros: Option<f64>,
    pub roas: Option<f64>,
    pub conversion_rate: Option<f64>,
    pub video_view_rate: Option<f64>,
    pub frequency: Option<f64>,
}

impl AdTotals {
    /// Adds one row's additive columns (saturating, so a corrupt row cannot wrap a sum).
    #[allow(clippy::too_many_arguments)]
    fn add_columns(
        &mut self,
        impressions: i64,
        clicks: i64,
        cost_micros: i64,
        conversions: f64,
        conversion_value_micros: i64,
        video_views: Option<i64>,
        reach: Option<i64>,
    ) {
        self.impressions = self.impressions.saturating_add(impressions);
        self.clicks = self.clicks.saturating_add(clicks);
        self.cost_micros = self.cost_micros.saturating_add(cost_micros);
        self.conversions += conversions;
        self.conversion_value_micros = self
            .conversion_value_micros
            .saturating_add(conversion_value_micros);
        if let Some(v) = video_views {
            self.video_views = self.video_views.saturating_add(v);
            self.video_impressions = self.video_impressions.saturating_add(impressions);
        }
        if let Some(r) = reach {
            self.reach = self.reach.saturating_add(r);
            self.reach_impressions = self.reach_impressions.saturating_add(impressions);
        }
    }

    /// Adds a fact row.
    pub fn add(&mut self, row: &FactAdPerformance) {
        self.add_columns(
            row.impressions,
            row.clicks,
            row.cost_micros,
            row.conversions,
            row.conversion_value_micros,
            row.video_views,
            row.reach,
        );
    }

    /// Adds a raw row.
    pub fn add_raw(&mut self, row: &RawAdPerformance) {
        self.add_columns(
            row.impressions,
            row.clicks,
            row.cost_micros,
            row.conversions,
            row.conversion_value_micros,
            row.video_views,
            row.reach,
        );
    }

    /// Adds another total (e.g. from a parallel partial sum).
    pub fn merge(&mut self, other: &AdTotals) {
        self.impressions = self.impressions.saturating_add(other.impressions);
        self.clicks = self.clicks.saturating_add(other.clicks);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.conversions += other.conversions;
        self.conversion_value_micros = self
            .conversion_value_micros
            .saturating_add(other.conversion_value_micros);
        self.video_views = self.video_views.saturating_add(other.video_views);
        self.video_impressions = self
            .video_impressions
            .saturating_add(other.video_impressions);
        self.reach = self.reach.saturating_add(other.reach);
        self.reach_impressions = self
            .reach_impressions
            .saturating_add(other.reach_impressions);
    }

    /// The ratios of the sums.
    pub fn ratios(&self) -> AdRatios {
        let cost = f(self.cost_micros);
        AdRatios {
            ctr: ratio(f(self.clicks), f(self.impressions)),
            cpc_micros: ratio(cost, f(self.clicks)),
            cpm_micros: ratio(1000.0 * cost, f(self.impressions)),
            cpa_micros: ratio(cost, self.conversions),
            roas: ratio(f(self.conversion_value_micros), cost),
            conversion_rate: ratio(self.conversions, f(self.clicks)),
            // No row reporting them: both sums are 0, hence None.
            video_view_rate: ratio(f(self.video_views), f(self.video_impressions)),
            frequency: ratio(f(self.reach_impressions), f(self.reach)),
        }
    }
}

impl<'a> FromIterator<&'a FactAdPerformance> for AdTotals {
    fn from_iter<I: IntoIterator<Item = &'a FactAdPerformance>>(rows: I) -> Self {
        let mut t = Self::default();
        rows.into_iter().for_each(|r| t.add(r));
        t
    }
}

/// The fact row of a (validated) raw row: every field copied, ratios derived.
pub fn ad_performance(raw: RawAdPerformance) -> FactAdPerformance {
    let mut t = AdTotals::default();
    t.add_raw(&raw);
    let r = t.ratios();
    FactAdPerformance {
        tenant_id: raw.tenant_id,
        platform: raw.platform,
        account_id: raw.account_id,
        extracted_at: raw.extracted_at,
        run_id: raw.run_id,
        date: raw.date,
        campaign_id: raw.campaign_id,
        ad_group_id: raw.ad_group_id,
        ad_id: raw.ad_id,
        device: raw.device,
        country: raw.country,
        currency: raw.currency,
        impressions: raw.impressions,
        clicks: raw.clicks,
        cost_micros: raw.cost_micros,
        conversions: raw.conversions,
        conversion_value_micros: raw.conversion_value_micros,
        video_views: raw.video_views,
        engagements: raw.engagements,
        reach: raw.reach,
        ctr: r.ctr,
        cpc_micros: r.cpc_micros,
        cpm_micros: r.cpm_micros,
        cpa_micros: r.cpa_micros,
        roas: r.roas,
        conversion_rate: r.conversion_rate,
        video_view_rate: r.video_view_rate,
        frequency: r.frequency,
    }
}

// ---------------------------------------------------------------------------------------------
// GA4 sessions
// ---------------------------------------------------------------------------------------------

/// The additive columns of GA4 sessions, summed over any set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GaTotals {
    pub sessions: i64,
    pub engaged_sessions: i64,
    pub transactions: i64,
    pub purchase_revenue_micros: i64,
}

/// The derived metrics of GA4 sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GaRatios {
    pub engagement_rate: Option<f64>,
    pub bounce_rate: Option<f64>,
    pub aov_micros: Option<f64>,
    pub transaction_rate: Option<f64>,
}

impl GaTotals {
    fn add_columns(&mut self, sessions: i64, engaged: i64, transactions: i64, revenue: i64) {
        self.sessions = self.sessions.saturating_add(sessions);
        self.engaged_sessions = self.engaged_sessions.saturating_add(engaged);
        self.transactions = self.transactions.saturating_add(transactions);
        self.purchase_revenue_micros = self.purchase_revenue_micros.saturating_add(revenue);
    }

    pub fn add(&mut self, row: &FactGaSessions) {
        self.add_columns(
            row.sessions,
            row.engaged_sessions,
            row.transactions,
            row.purchase_revenue_micros,
        );
    }

    pub fn add_raw(&mut self, row: &RawGaSessions) {
        self.add_columns(
            row.sessions,
            row.engaged_sessions,
            row.transactions,
            row.purchase_revenue_micros,
        );
    }

    pub fn merge(&mut self, other: &GaTotals) {
        self.add_columns(
            other.sessions,
            other.engaged_sessions,
            other.transactions,
            other.purchase_revenue_micros,
        );
    }

    /// The ratios of the sums. GA4 defines bounce rate as the complement of engagement rate.
    pub fn ratios(&self) -> GaRatios {
        let sessions = f(self.sessions);
        let engagement_rate = ratio(f(self.engaged_sessions), sessions);
        GaRatios {
            engagement_rate,
            bounce_rate: engagement_rate.map(|e| 1.0 - e),
            aov_micros: ratio(f(self.purchase_revenue_micros), f(self.transactions)),
            transaction_rate: ratio(f(self.transactions), sessions),
        }
    }
}

impl<'a> FromIterator<&'a FactGaSessions> for GaTotals {
    fn from_iter<I: IntoIterator<Item = &'a FactGaSessions>>(rows: I) -> Self {
        let mut t = Self::default();
        rows.into_iter().for_each(|r| t.add(r));
        t
    }
}

/// The fact row of a (validated) raw GA4 row.
pub fn ga_sessions(raw: RawGaSessions) -> FactGaSessions {
    let mut t = GaTotals::default();
    t.add_raw(&raw);
    let r = t.ratios();
    FactGaSessions {
        tenant_id: raw.tenant_id,
        platform: raw.platform,
        account_id: raw.account_id,
        extracted_at: raw.extracted_at,
        run_id: raw.run_id,
        date: raw.date,
        source: raw.source,
        medium: raw.medium,
        campaign: raw.campaign,
        channel_group: raw.channel_group,
        device: raw.device,
        country: raw.country,
        currency: raw.currency,
        sessions: raw.sessions,
        engaged_sessions: raw.engaged_sessions,
        screen_page_views: raw.screen_page_views,
        session_duration_seconds: raw.session_duration_seconds,
        transactions: raw.transactions,
        purchase_revenue_micros: raw.purchase_revenue_micros,
        key_events: raw.key_events,
        engagement_rate: r.engagement_rate,
        bounce_rate: r.bounce_rate,
        aov_micros: r.aov_micros,
        transaction_rate: r.transaction_rate,
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

/// The additive columns of conversions, summed over any set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConversionTotals {
    pub conversions: f64,
    pub conversion_value_micros: i64,
}

impl ConversionTotals {
    pub fn add(&mut self, row: &FactConversion) {
        self.conversions += row.conversions;
        self.conversion_value_micros = self
            .conversion_value_micros
            .saturating_add(row.conversion_value_micros);
    }

    pub fn add_raw(&mut self, row: &RawConversion) {
        self.conversions += row.conversions;
        self.conversion_value_micros = self
            .conversion_value_micros
            .saturating_add(row.conversion_value_micros);
    }

    /// Value per conversion, in micros.
    pub fn value_per_conversion_micros(&self) -> Option<f64> {
        ratio(f(self.conversion_value_micros), self.conversions)
    }
}

impl<'a> FromIterator<&'a FactConversion> for ConversionTotals {
    fn from_iter<I: IntoIterator<Item = &'a FactConversion>>(rows: I) -> Self {
        let mut t = Self::default();
        rows.into_iter().for_each(|r| t.add(r));
        t
    }
}

/// The fact row of a (validated) raw conversion row.
pub fn conversion(raw: RawConversion) -> FactConversion {
    let mut t = ConversionTotals::default();
    t.add_raw(&raw);
    FactConversion {
        tenant_id: raw.tenant_id,
        platform: raw.platform,
        account_id: raw.account_id,
        extracted_at: raw.extracted_at,
        run_id: raw.run_id,
        date: raw.date,
        campaign_id: raw.campaign_id,
        conversion_action: raw.conversion_action,
        category: raw.category,
        currency: raw.currency,
        conversions: raw.conversions,
        conversion_value_micros: raw.conversion_value_micros,
        value_per_conversion_micros: t.value_per_conversion_micros(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate, Utc};
    use mi_common::Platform;

    fn ad(impressions: i64, clicks: i64, cost: i64, conv: f64, value: i64) -> RawAdPerformance {
        RawAdPerformance {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "123".into(),
            extracted_at: DateTime::<Utc>::from_timestamp_millis(1_764_000_000_000).unwrap(),
            run_id: "run-1".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            campaign_id: "11".into(),
            ad_group_id: "21".into(),
            ad_id: "31".into(),
            device: Some("MOBILE".into()),
            country: None,
            currency: "USD".into(),
            impressions,
            clicks,
            cost_micros: cost,
            conversions: conv,
            conversion_value_micros: value,
            video_views: None,
            engagements: Some(4),
            reach: None,
        }
    }

    fn ga(sessions: i64, engaged: i64, transactions: i64, revenue: i64) -> RawGaSessions {
        RawGaSessions {
            tenant_id: "acme".into(),
            platform: Platform::Ga4,
            account_id: "987".into(),
            extracted_at: DateTime::<Utc>::from_timestamp_millis(1_764_000_000_000).unwrap(),
            run_id: "run-1".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            source: "google".into(),
            medium: "cpc".into(),
            campaign: "brand".into(),
            channel_group: "Paid Search".into(),
            device: "mobile".into(),
            country: "US".into(),
            currency: "USD".into(),
            sessions,
            engaged_sessions: engaged,
            screen_page_views: 300,
            session_duration_seconds: 5000,
            transactions,
            purchase_revenue_micros: revenue,
            key_events: 4.0,
        }
    }

    fn conv(conversions: f64, value: i64) -> RawConversion {
        RawConversion {
            tenant_id: "acme".into(),
            platform: Platform::MetaAds,
            account_id: "act_1".into(),
            extracted_at: DateTime::<Utc>::from_timestamp_millis(1_764_000_000_000).unwrap(),
            run_id: "run-1".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            campaign_id: "11".into(),
            conversion_action: "Purchase".into(),
            category: "PURCHASE".into(),
            currency: "EUR".into(),
            conversions,
            conversion_value_micros: value,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    #[test]
    fn ratio_is_none_for_zero_denominators_and_non_finite_results() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(0.0, 4.0), Some(0.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(0.0, 0.0), None);
        assert_eq!(ratio(1.0, -0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
        assert_eq!(ratio(f64::MAX, f64::MIN_POSITIVE), None);
    }

    #[test]
    fn hand_computed_ad_row() {
        // 1 000 impressions, 40 clicks, $12.00, 2 conversions worth $30.00.
        let f = ad_performance(ad(1_000, 40, 12_000_000, 2.0, 30_000_000));
        assert_eq!(f.ctr, Some(0.04));
        assert_eq!(f.cpc_micros, Some(300_000.0));
        assert_eq!(f.cpm_micros, Some(12_000_000.0));
        assert_eq!(f.cpa_micros, Some(6_000_000.0));
        assert_eq!(f.roas, Some(2.5));
        assert_eq!(f.conversion_rate, Some(0.05));
        assert_eq!(f.video_view_rate, None, "no video views reported");
        assert_eq!(f.frequency, None, "no reach reported");
        // Every field copied.
        assert_eq!(
            (f.impressions, f.clicks, f.cost_micros, f.engagements),
            (1_000, 40, 12_000_000, Some(4))
        );
        assert_eq!(
            (f.ad_id.as_str(), f.device.as_deref()),
            ("31", Some("MOBILE"))
        );
    }

    #[test]
    fn zero_impressions() {
        let f = ad_performance(ad(0, 0, 0, 0.0, 0));
        assert_eq!((f.ctr, f.cpm_micros), (None, None));
        assert_eq!((f.cpc_micros, f.cpa_micros, f.roas), (None, None, None));
        assert_eq!(f.conversion_rate, None);
    }

    #[test]
    fn zero_clicks() {
        let f = ad_performance(ad(500, 0, 1_000_000, 0.0, 0));
        assert_eq!(f.ctr, Some(0.0), "a real 0 % CTR");
        assert_eq!(f.cpc_micros, None);
        assert_eq!(f.conversion_rate, None);
        assert_eq!(f.cpm_micros, Some(2_000_000.0));
    }

    #[test]
    fn zero_cost() {
        let f = ad_performance(ad(500, 5, 0, 1.0, 10_000_000));
        assert_eq!(
            f.roas, None,
            "value from free traffic is not an infinite ROAS"
        );
        assert_eq!(f.cpc_micros, Some(0.0));
        assert_eq!(f.cpa_micros, Some(0.0));
        assert_eq!(f.cpm_micros, Some(0.0));
    }

    #[test]
    fn zero_conversions() {
        let f = ad_performance(ad(500, 5, 1_000_000, 0.0, 0));
        assert_eq!(
            f.cpa_micros, None,
            "a CPA of 0 would claim free conversions"
        );
        assert_eq!(f.conversion_rate, Some(0.0));
        assert_eq!(f.roas, Some(0.0));
    }

    #[test]
    fn video_views_and_reach() {
        let mut raw = ad(1_000, 10, 1_000_000, 0.0, 0);
        raw.video_views = Some(250);
        raw.reach = Some(400);
        let f = ad_performance(raw.clone());
        assert_eq!(f.video_view_rate, Some(0.25));
        assert_eq!(f.frequency, Some(2.5));
        raw.reach = Some(0);
        raw.video_views = Some(0);
        let f = ad_performance(raw);
        assert_eq!(f.frequency, None, "zero reach");
        assert_eq!(
            f.video_view_rate,
            Some(0.0),
            "views reported as 0 are a 0 rate"
        );
    }

    #[test]
    fn ga_hand_computed_and_zero_denominators() {
        let f = ga_sessions(ga(200, 150, 4, 100_000_000));
        assert_eq!(f.engagement_rate, Some(0.75));
        assert_eq!(f.bounce_rate, Some(0.25));
        assert_eq!(f.aov_micros, Some(25_000_000.0));
        assert_eq!(f.transaction_rate, Some(0.02));
        assert_eq!(
            (f.sessions, f.screen_page_views, f.key_events),
            (200, 300, 4.0)
        );

        let f = ga_sessions(ga(0, 0, 0, 0));
        assert_eq!(f.engagement_rate, None, "zero sessions");
        assert_eq!(
            f.bounce_rate, None,
            "not 100 % bounce: there was nothing to bounce"
        );
        assert_eq!(f.transaction_rate, None);
        assert_eq!(f.aov_micros, None);

        let f = ga_sessions(ga(10, 4, 0, 0));
        assert_eq!(f.aov_micros, None, "zero transactions");
        assert_eq!(f.transaction_rate, Some(0.0));
        assert!(close(f.bounce_rate, 0.6));
    }

    #[test]
    fn conversions_value_per_conversion() {
        let f = conversion(conv(4.0, 10_000_000));
        assert_eq!(f.value_per_conversion_micros, Some(2_500_000.0));
        assert_eq!(
            (f.conversion_action.as_str(), f.currency.as_str()),
            ("Purchase", "EUR")
        );
        let f = conversion(conv(0.0, 10_000_000));
        assert_eq!(f.value_per_conversion_micros, None);
        // Fractional (attributed) conversions.
        let f = conversion(conv(0.5, 1_000_000));
        assert_eq!(f.value_per_conversion_micros, Some(2_000_000.0));
    }

    #[test]
    fn restated_day_takes_the_newer_values() {
        // The same row, extracted twice: the platform restated conversions a week later.
        let first = ad(1_000, 40, 12_000_000, 2.0, 30_000_000);
        let mut restated = first.clone();
        restated.extracted_at = first.extracted_at + chrono::TimeDelta::days(7);
        restated.conversions = 3.0;
        restated.conversion_value_micros = 48_000_000;
        let old = ad_performance(first);
        let new = ad_performance(restated);
        assert_eq!((old.cpa_micros, old.roas), (Some(6_000_000.0), Some(2.5)));
        assert_eq!((new.cpa_micros, new.roas), (Some(4_000_000.0), Some(4.0)));
        assert_eq!(new.ctr, old.ctr, "unchanged columns, unchanged ratios");

        // Newest extraction per natural key wins, then sum: the old version contributes nothing.
        let rows = [old, new];
        let newest = rows.iter().max_by_key(|r| r.extracted_at).unwrap();
        let t: AdTotals = std::iter::once(newest).collect();
        assert_eq!(t.ratios().cpa_micros, Some(4_000_000.0));
    }

    #[test]
    fn ratio_of_sums_is_not_average_of_ratios() {
        // Day 1: 10 impressions, 5 clicks (CTR 50 %). Day 2: 990 impressions, 5 clicks (0.505 %).
        let rows = [
            ad_performance(ad(10, 5, 1_000_000, 1.0, 4_000_000)),
            ad_performance(ad(990, 5, 9_000_000, 0.0, 0)),
        ];
        let totals: AdTotals = rows.iter().collect();
        let r = totals.ratios();
        assert_eq!(r.ctr, Some(0.01), "10 clicks / 1 000 impressions");
        let mean_ctr = rows.iter().filter_map(|r| r.ctr).sum::<f64>() / 2.0;
        assert!(
            (mean_ctr - (0.5 + 5.0 / 990.0) / 2.0).abs() < 1e-15,
            "{mean_ctr}"
        );
        assert!(r.ctr.is_some_and(|c| (c - mean_ctr).abs() > 0.2));

        // CPA: $10 / 1 conversion = $10; day 2's CPA is None and cannot even be averaged.
        assert_eq!(r.cpa_micros, Some(10_000_000.0));
        assert_eq!(rows[0].cpa_micros, Some(1_000_000.0));
        assert_eq!(rows[1].cpa_micros, None);

        // ROAS: 4 / 10 = 0.4, while the mean of per-day ROAS is (4 + 0) / 2 = 2.
        assert_eq!(r.roas, Some(0.4));

        // GA4 the same: 1/1 engaged and 1/99 engaged.
        let ga_rows = [ga_sessions(ga(1, 1, 0, 0)), ga_sessions(ga(99, 1, 0, 0))];
        let gt: GaTotals = ga_rows.iter().collect();
        assert_eq!(gt.ratios().engagement_rate, Some(0.02));
        assert_eq!(gt.ratios().bounce_rate, Some(0.98));

        // Totals are associative: merge of partial sums equals the sum of all rows.
        let mut a: AdTotals = rows[..1].iter().collect();
        let b: AdTotals = rows[1..].iter().collect();
        a.merge(&b);
        assert_eq!(a, totals);
    }

    #[test]
    fn optional_columns_only_weigh_rows_that_report_them() {
        let mut video = ad(100, 1, 0, 0.0, 0);
        video.video_views = Some(50);
        let search = ad(900, 9, 0, 0.0, 0);
        let rows = [ad_performance(video), ad_performance(search)];
        let t: AdTotals = rows.iter().collect();
        assert_eq!(t.ratios().video_view_rate, Some(0.5), "not 50 / 1 000");
        assert_eq!(t.ratios().frequency, None, "nobody reported reach");
        assert_eq!(t.ratios().ctr, Some(0.01));
    }
}
