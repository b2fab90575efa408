//! GA4 sessions, at the finest grain the emulator knows.
//!
//! A property has eleven traffic sources (source / medium / campaign / default channel group),
//! three device categories and three countries. For every day with data it produces one row per
//! (source, device, country) with at least one session; a report with fewer dimensions sums
//! these rows (every supported metric is additive here). Paid campaign names reuse the ad
//! platforms' naming scheme ("Spring Sale | Search | US").
//!
//! Transactions, revenue and key events restate like ad conversions (70 % at age 1, 85 % at
//! age 2, final from age 3), revenue in proportion to the restated transactions.

use serde::Serialize;

use crate::date::Day;
use crate::hash::{H, round_prob};

use super::entities::{Channel, THEMES, campaign_name};
use super::metrics::restate;
use super::{AccountInfo, Generator, Platform, tag};

/// GA4 `deviceCategory` values.
pub const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];

/// One traffic source of a property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub source: &'static str,
    pub medium: &'static str,
    pub campaign: String,
    pub channel_group: &'static str,
    /// Share of the property's sessions, ‰ (0 = this property has no such traffic).
    pub share_pm: u64,
    /// Purchase conversion rate, ppm of sessions.
    pub cr_ppm: u64,
}

/// A GA4 property and its traffic model.
#[derive(Clone, Debug)]
pub struct Property {
    pub info: AccountInfo,
    pub today: Day,
    pub first_day: Day,
    pub last_day: Day,
    pub sources: Vec<Source>,
    base_sessions: u64,
    device_w: [u64; 3],
    country_w: [u64; 3],
    engaged_pm: u64,
    pages_pm: u64,
    aov_cents: u64,
    key: H,
}

/// GA4 metrics of one row (additive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GaMetrics {
    pub sessions: u64,
    pub engaged_sessions: u64,
    pub screen_page_views: u64,
    pub engagement_seconds: u64,
    pub transactions: u64,
    pub revenue_cents: u64,
    pub key_events: u64,
}

impl GaMetrics {
    pub fn add(&mut self, o: &GaMetrics) {
        self.sessions += o.sessions;
        self.engaged_sessions += o.engaged_sessions;
        self.screen_page_views += o.screen_page_views;
        self.engagement_seconds += o.engagement_seconds;
        self.transactions += o.transactions;
        self.revenue_cents += o.revenue_cents;
        self.key_events += o.key_events;
    }
}

/// A finest-grain row: indexes into the property's sources, [`DEVICES`] and countries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaRow {
    pub day: Day,
    pub source: u8,
    pub device: u8,
    pub country: u8,
    pub m: GaMetrics,
}

impl Generator {
    /// The GA4 property `id` as seen when the clock says `today`.
    pub fn property(&self, id: u64, today: Day) -> Property {
        let info = self.account(Platform::Ga4, id);
        let (first_day, last_day) = self.window(today);
        let h = self.base(Platform::Ga4, id).with(tag::GA4);
        let cc = info.countries[0].code;
        // Consecutive themes from a per-property start: distinct, so no two sources share a
        // campaign name (GA4 would merge their rows, and the ground truth counts rows).
        let first_theme = h.with(100).below(THEMES.len() as u64);
        let theme = |i: u64| ((first_theme + i) % THEMES.len() as u64) as usize;
        // (source, medium, campaign, channel group, share range ‰, conversion ppm range)
        let table: [SourceRow; 11] = [
            (
                "google",
                "organic",
                "(organic)".into(),
                "Organic Search",
                (200, 350),
                (10_000, 25_000),
            ),
            (
                "(direct)",
                "(none)",
                "(direct)".into(),
                "Direct",
                (150, 250),
                (15_000, 35_000),
            ),
            (
                "bing",
                "organic",
                "(organic)".into(),
                "Organic Search",
                (10, 40),
                (10_000, 25_000),
            ),
            (
                "google",
                "cpc",
                campaign_name(theme(0), Channel::Search, cc),
                "Paid Search",
                (50, 150),
                (20_000, 45_000),
            ),
            (
                "google",
                "cpc",
                campaign_name(theme(1), Channel::Search, cc),
                "Paid Search",
                (20, 80),
                (20_000, 45_000),
            ),
            (
                "google",
                "cpc",
                campaign_name(theme(2), Channel::PerformanceMax, cc),
                "Paid Search",
                (20, 80),
                (15_000, 40_000),
            ),
            (
                "facebook",
                "cpc",
                campaign_name(theme(3), Channel::Sales, cc),
                "Paid Social",
                (40, 120),
                (8_000, 25_000),
            ),
            (
                "instagram",
                "cpc",
                campaign_name(theme(4), Channel::Traffic, cc),
                "Paid Social",
                (20, 80),
                (5_000, 20_000),
            ),
            (
                "newsletter",
                "email",
                "weekly_digest".into(),
                "Email",
                (20, 60),
                (25_000, 60_000),
            ),
            (
                "l.facebook.com",
                "referral",
                "(referral)".into(),
                "Organic Social",
                (10, 50),
                (3_000, 12_000),
            ),
            (
                "partner-blog.com",
                "referral",
                "(referral)".into(),
                "Referral",
                (10, 40),
                (5_000, 20_000),
            ),
        ];
        let sources = table
            .into_iter()
            .enumerate()
            .map(
                |(i, (source, medium, campaign, channel_group, share, cr))| {
                    let hs = h.with(200 + i as u64);
                    // Some properties simply have no email or referral traffic.
                    let absent = i >= 8 && hs.with(1).chance(250);
                    Source {
                        source,
                        medium,
                        campaign,
                        channel_group,
                        share_pm: if absent {
                            0
                        } else {
                            hs.with(2).range(share.0, share.1)
                        },
                        cr_ppm: hs.with(3).range(cr.0, cr.1),
                    }
                },
            )
            .collect();
        let device = h.with(3).range(300, 500);
        let mobile = h.with(4).range(400, 950 - device);
        let main = h.with(5).range(600, 800);
        let second = h.with(6).range(100, 950 - main);
        Property {
            info,
            today,
            first_day,
            last_day,
            sources,
            base_sessions: h.with(7).range(500, 20_000),
            device_w: [device, mobile, 1_000 - device - mobile],
            country_w: [main, second, 1_000 - main - second],
            engaged_pm: h.with(8).range(450, 750),
            pages_pm: h.with(9).range(1_500, 4_000),
            aov_cents: h.with(10).range(3_000, 20_000),
            key: h.with(11),
        }
    }
}

/// (source, medium, campaign, channel group, share range ‰, conversion ppm range).
type SourceRow = (
    &'static str,
    &'static str,
    String,
    &'static str,
    (u64, u64),
    (u64, u64),
);

const WEEKDAY_PM: [u64; 7] = [1_000, 1_030, 1_040, 1_010, 950, 850, 820];

impl Property {
    /// Finest-grain rows of one day, in (source, device, country) order, with at least one
    /// session (or every combination when `keep_empty`). Empty outside the data window.
    pub fn day_rows(&self, day: Day, keep_empty: bool, out: &mut Vec<GaRow>) {
        if day < self.first_day || day > self.last_day {
            return;
        }
        let wd = WEEKDAY_PM
            .get(day.weekday() as usize)
            .copied()
            .unwrap_or(1_000);
        let hd = self.key.with_i(i64::from(day.0));
        let age = self.today.since(day);
        for (si, src) in self.sources.iter().enumerate() {
            for (di, dw) in self.device_w.iter().enumerate() {
                for (ki, kw) in self.country_w.iter().enumerate() {
                    let h = hd.with((si * 9 + di * 3 + ki) as u64);
                    let noise = h.with(1).range(700, 1_300);
                    let expected = u128::from(self.base_sessions)
                        * u128::from(src.share_pm)
                        * u128::from(*dw)
                        * u128::from(*kw)
                        * u128::from(wd)
                        * u128::from(noise);
                    let sessions = round_prob(expected, 1_000_000_000_000_000, h.with(2));
                    if sessions == 0 {
                        if keep_empty {
                            out.push(GaRow {
                                day,
                                source: si as u8,
                                device: di as u8,
                                country: ki as u8,
                                m: GaMetrics::default(),
                            });
                        }
                        continue;
                    }
                    let s = u128::from(sessions);
                    let engaged = round_prob(
                        s * u128::from(self.engaged_pm * h.with(3).range(900, 1_100)),
                        1_000_000,
                        h.with(4),
                    )
                    .min(sessions);
                    let views =
                        round_prob(s * u128::from(self.pages_pm), 1_000, h.with(5)).max(sessions);
                    let seconds = engaged * h.with(6).range(30, 180);
                    let transactions = round_prob(
                        s * u128::from(src.cr_ppm * h.with(7).range(700, 1_300)),
                        1_000_000_000,
                        h.with(8),
                    )
                    .min(sessions);
                    let revenue =
                        transactions * self.aov_cents * h.with(9).range(800, 1_200) / 1_000;
                    let extra_key = round_prob(
                        s * u128::from(h.with(10).range(5_000, 30_000)),
                        1_000_000,
                        h.with(11),
                    );
                    let (transactions_r, revenue_r) = restate(transactions, revenue, age);
                    let (key_events_r, _) = restate(transactions + extra_key, 0, age);
                    out.push(GaRow {
                        day,
                        source: si as u8,
                        device: di as u8,
                        country: ki as u8,
                        m: GaMetrics {
                            sessions,
                            engaged_sessions: engaged,
                            screen_page_views: views,
                            engagement_seconds: seconds,
                            transactions: transactions_r,
                            revenue_cents: revenue_r,
                            key_events: key_events_r,
                        },
                    });
                }
            }
        }
    }

    /// Days with data inside `[from, to]`.
    pub fn data_days(&self, from: Day, to: Day) -> Option<(Day, Day)> {
        let a = from.max(self.first_day);
        let b = to.min(self.last_day);
        (a <= b).then_some((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GenConfig;

    #[test]
    fn rows_are_consistent_and_restate() {
        let g = Generator::new(GenConfig::default());
        let today = Day::parse("2025-06-01").unwrap_or(Day(0));
        let p = g.property(123_456, today);
        let mut rows = Vec::new();
        p.day_rows(today.plus(-1), false, &mut rows);
        assert!(!rows.is_empty());
        for r in &rows {
            assert!(r.m.sessions >= r.m.engaged_sessions && r.m.sessions >= r.m.transactions);
            assert!(r.m.key_events >= r.m.transactions);
        }
        let later = g.property(123_456, today.plus(5));
        let mut rows_later = Vec::new();
        later.day_rows(today.plus(-1), false, &mut rows_later);
        let sum = |rs: &[GaRow]| rs.iter().map(|r| r.m.transactions).sum::<u64>();
        let sessions = |rs: &[GaRow]| rs.iter().map(|r| r.m.sessions).sum::<u64>();
        assert!(sum(&rows_later) >= sum(&rows));
        assert_eq!(sessions(&rows_later), sessions(&rows));
    }
}
