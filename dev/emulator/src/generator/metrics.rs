//! Daily metrics per ad, exact splits, and restatements.
//!
//! All arithmetic is integer (parts per thousand / million, money in cents), so the numbers are
//! identical on every platform and build. Money has two decimals by construction: costs and
//! values are whole cents (Google `cost_micros` is therefore always a multiple of 10,000).
//!
//! **Restatements.** Conversions for day D reported when the clock says T mature with the age
//! `T − D`: at age 1 the platform reports 70 % of the final count, at age 2 85 %, from age 3 on
//! 100 % (`final × (1 − 0.15 × (3 − age))`, rounded down). The conversion value is restated in
//! proportion to the restated count (`value × restated / final`, rounded down), so a day with
//! no conversions yet never carries value. Everything else is final as soon as it is visible.
//!
//! **Splits.** Device, country and conversion-action rows are carved out of the ad-day totals
//! with largest-remainder allocation under caps (clicks ≤ impressions, conversions ≤ clicks,
//! reach ≤ impressions …), so the parts always add up exactly to the undivided row and every
//! part is itself consistent.

use serde::Serialize;

use crate::date::Day;
use crate::hash::{H, round_prob};

use super::entities::{Ad, Channel};

/// One row's additive metrics. Money in cents of the account currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct M {
    pub impressions: u64,
    pub clicks: u64,
    /// Meta `inline_link_clicks` (≤ clicks).
    pub link_clicks: u64,
    pub cost_cents: u64,
    /// Whole conversions (Google `metrics.conversions`, Meta `purchase` or `lead` actions).
    pub conversions: u64,
    pub value_cents: u64,
    pub video_views: u64,
    pub engagements: u64,
    /// Meta only (≤ impressions).
    pub reach: u64,
}

impl M {
    pub fn add(&mut self, o: &M) {
        self.impressions += o.impressions;
        self.clicks += o.clicks;
        self.link_clicks += o.link_clicks;
        self.cost_cents += o.cost_cents;
        self.conversions += o.conversions;
        self.value_cents += o.value_cents;
        self.video_views += o.video_views;
        self.engagements += o.engagements;
        self.reach += o.reach;
    }

    /// True when every metric is zero (the platforms omit such rows from segmented reports).
    pub fn is_zero(&self) -> bool {
        *self == M::default()
    }
}

/// An ad's static performance profile, drawn once from its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub base_impressions: u64,
    pub ctr_ppm: u64,
    /// Cost per click in cents (search); 0 when the ad is bought per thousand impressions.
    pub cpc_cents: u64,
    /// Cost per thousand impressions in cents.
    pub cpm_cents: u64,
    pub cvr_ppm: u64,
    pub aov_cents: u64,
    pub video_ppm: u64,
    pub engagement_ppm: u64,
    /// Impressions per reached person, ‰ (≥ 1000).
    pub frequency_pm: u64,
    /// Conversions are leads without value (Meta lead ads).
    pub lead: bool,
    /// Google devices: MOBILE, DESKTOP, TABLET (‰, sum 1000).
    pub device_w: [u64; 3],
    /// Meta `device_platform`: mobile_app, mobile_web, desktop (‰).
    pub meta_device_w: [u64; 3],
    /// Meta `country`: the account's three countries (‰).
    pub country_w: [u64; 3],
}

fn three(h: H, first: (u64, u64), second_min: u64, reserve: u64) -> [u64; 3] {
    let a = h.with(1).range(first.0, first.1);
    let b = h.with(2).range(second_min, 1000 - reserve - a);
    [a, b, 1000 - a - b]
}

/// The profile of an ad in a campaign of the given channel.
pub fn profile(channel: Channel, h: H) -> Profile {
    let r = |t: u64, lo: u64, hi: u64| h.with(t).range(lo, hi);
    // (impressions, ctr ppm, cpc cents, cpm cents, cvr ppm, video ppm, engagement ppm)
    let (imp, ctr, cpc, cpm, cvr, video, eng) = match channel {
        Channel::Search => (
            (200, 3_000),
            (30_000, 90_000),
            (40, 300),
            (0, 0),
            (20_000, 100_000),
            (0, 0),
            (0, 0),
        ),
        Channel::Display => (
            (2_000, 30_000),
            (2_000, 10_000),
            (0, 0),
            (100, 600),
            (5_000, 30_000),
            (0, 0),
            (2_000, 8_000),
        ),
        Channel::Video => (
            (1_000, 20_000),
            (1_000, 6_000),
            (0, 0),
            (400, 1_200),
            (3_000, 20_000),
            (150_000, 350_000),
            (5_000, 15_000),
        ),
        Channel::PerformanceMax => (
            (1_500, 15_000),
            (10_000, 30_000),
            (0, 0),
            (300, 1_000),
            (30_000, 80_000),
            (0, 0),
            (1_000, 5_000),
        ),
        Channel::Sales => (
            (1_500, 20_000),
            (8_000, 20_000),
            (0, 0),
            (600, 1_500),
            (20_000, 60_000),
            (0, 0),
            (20_000, 50_000),
        ),
        Channel::Traffic => (
            (2_000, 25_000),
            (15_000, 30_000),
            (0, 0),
            (400, 1_000),
            (5_000, 20_000),
            (0, 0),
            (10_000, 30_000),
        ),
        Channel::Awareness => (
            (5_000, 50_000),
            (3_000, 8_000),
            (0, 0),
            (200, 600),
            (1_000, 5_000),
            (200_000, 400_000),
            (10_000, 30_000),
        ),
        Channel::Engagement => (
            (3_000, 30_000),
            (5_000, 15_000),
            (0, 0),
            (300, 900),
            (2_000, 8_000),
            (100_000, 250_000),
            (50_000, 100_000),
        ),
        Channel::Leads => (
            (1_500, 15_000),
            (8_000, 20_000),
            (0, 0),
            (800, 2_000),
            (50_000, 120_000),
            (0, 0),
            (5_000, 20_000),
        ),
    };
    Profile {
        base_impressions: r(1, imp.0, imp.1),
        ctr_ppm: r(2, ctr.0, ctr.1),
        cpc_cents: if cpc.1 == 0 { 0 } else { r(3, cpc.0, cpc.1) },
        cpm_cents: if cpm.1 == 0 { 0 } else { r(4, cpm.0, cpm.1) },
        cvr_ppm: r(5, cvr.0, cvr.1),
        aov_cents: r(6, 3_000, 25_000),
        video_ppm: if video.1 == 0 {
            0
        } else {
            r(7, video.0, video.1)
        },
        engagement_ppm: if eng.1 == 0 { 0 } else { r(8, eng.0, eng.1) },
        frequency_pm: r(9, 1_050, 1_600),
        lead: channel == Channel::Leads,
        device_w: three(h.with(10), (450, 750), 150, 50),
        meta_device_w: three(h.with(11), (500, 750), 100, 50),
        country_w: three(h.with(12), (600, 800), 100, 50),
    }
}

/// Weekly seasonality, ‰, Monday first.
const WEEKDAY_PM: [u64; 7] = [1_000, 1_040, 1_050, 1_020, 960, 830, 800];

/// Restated (conversions, value) for a day of the given age in days.
pub fn restate(conversions: u64, value_cents: u64, age: i32) -> (u64, u64) {
    if age >= 3 {
        return (conversions, value_cents);
    }
    let pct = (100 - 15 * (3 - age.max(0))) as u64;
    let c = conversions * pct / 100;
    let v = (value_cents * c).checked_div(conversions).unwrap_or(0);
    (c, v)
}

/// An ad's metrics for one day as reported when the clock says `today`: `None` when the ad
/// does not exist that day, all zeros when it exists but did not deliver (paused, or one of the
/// ~3 % "dark" days).
pub fn ad_day(ad: &Ad, day: Day, today: Day) -> Option<M> {
    if !ad.exists(day) {
        return None;
    }
    if !ad.is_active(day) {
        return Some(M::default());
    }
    let p = &ad.profile;
    let h = ad.key.with_i(i64::from(day.0));
    if h.with(1).chance(30) {
        return Some(M::default());
    }
    let wd = WEEKDAY_PM
        .get(day.weekday() as usize)
        .copied()
        .unwrap_or(1_000);
    let noise = h.with(2).range(700, 1_300);
    let impressions = round_prob(
        u128::from(p.base_impressions * noise * wd),
        1_000_000,
        h.with(3),
    );
    if impressions == 0 {
        return Some(M::default());
    }
    let imp = u128::from(impressions);
    let mut clicks = round_prob(
        imp * u128::from(p.ctr_ppm * h.with(4).range(800, 1_200)),
        1_000_000_000,
        h.with(5),
    )
    .min(impressions);
    // Some days bring impressions but no click at all.
    if h.with(6).chance(40) {
        clicks = 0;
    }
    let link_clicks = clicks - clicks / 5;
    let mut cost_cents = if p.cpc_cents > 0 {
        clicks * p.cpc_cents * h.with(7).range(850, 1_150) / 1_000
    } else {
        round_prob(
            imp * u128::from(p.cpm_cents * h.with(7).range(850, 1_150)),
            1_000_000,
            h.with(8),
        )
    };
    // … and some deliver for free (make-goods, bonus inventory).
    if h.with(9).chance(15) {
        cost_cents = 0;
    }
    let conversions_final = round_prob(
        u128::from(clicks) * u128::from(p.cvr_ppm * h.with(10).range(700, 1_300)),
        1_000_000_000,
        h.with(11),
    )
    .min(clicks);
    let value_final = if p.lead {
        0
    } else {
        conversions_final * p.aov_cents * h.with(12).range(800, 1_200) / 1_000
    };
    let (conversions, value_cents) = restate(conversions_final, value_final, today.since(day));
    let video_views = round_prob(
        imp * u128::from(p.video_ppm * h.with(13).range(800, 1_200)),
        1_000_000_000,
        h.with(14),
    )
    .min(impressions);
    let engagements = round_prob(
        imp * u128::from(p.engagement_ppm * h.with(15).range(800, 1_200)),
        1_000_000_000,
        h.with(16),
    )
    .min(impressions);
    let reach = (impressions * 1_000 / p.frequency_pm).clamp(1, impressions);
    Some(M {
        impressions,
        clicks,
        link_clicks,
        cost_cents,
        conversions,
        value_cents,
        video_views,
        engagements,
        reach,
    })
}

/// Allocates `total` across three parts in proportion to `basis`, never exceeding `caps`,
/// handing the rounding remainder to the largest parts first. Parts with a zero basis get
/// nothing. The parts sum to `total` whenever `total` ≤ the caps of the non-zero parts, which
/// every caller guarantees.
pub fn alloc(total: u64, basis: [u64; 3], caps: [u64; 3]) -> [u64; 3] {
    let sum: u64 = basis.iter().sum();
    if total == 0 || sum == 0 {
        return [0; 3];
    }
    let mut out = [0u64; 3];
    for i in 0..3 {
        let share = (u128::from(total) * u128::from(basis[i]) / u128::from(sum)) as u64;
        out[i] = share.min(caps[i]);
    }
    let mut rem = total - out.iter().sum::<u64>();
    let mut order = [0usize, 1, 2];
    order.sort_by(|a, b| basis[*b].cmp(&basis[*a]).then(a.cmp(b)));
    for i in order {
        if rem == 0 {
            break;
        }
        if basis[i] == 0 {
            continue;
        }
        let give = (caps[i] - out[i]).min(rem);
        out[i] += give;
        rem -= give;
    }
    debug_assert_eq!(rem, 0, "allocation precondition violated");
    out
}

const NO_CAP: [u64; 3] = [u64::MAX; 3];

/// Splits a row three ways by ‰ weights (devices, countries), keeping every part consistent.
pub fn split(m: &M, weights: [u64; 3]) -> [M; 3] {
    let imp = alloc(m.impressions, weights, NO_CAP);
    let clicks = alloc(m.clicks, imp, imp);
    let link = alloc(m.link_clicks, clicks, clicks);
    let cost = alloc(m.cost_cents, imp, NO_CAP);
    let conv = alloc(m.conversions, clicks, clicks);
    let value = alloc(m.value_cents, conv, NO_CAP);
    let video = alloc(m.video_views, imp, imp);
    let eng = alloc(m.engagements, imp, imp);
    let reach = alloc(m.reach, imp, imp);
    std::array::from_fn(|i| M {
        impressions: imp[i],
        clicks: clicks[i],
        link_clicks: link[i],
        cost_cents: cost[i],
        conversions: conv[i],
        value_cents: value[i],
        video_views: video[i],
        engagements: eng[i],
        reach: reach[i],
    })
}

/// Splits conversions and their value across up to three conversion actions by weight.
pub fn split_conversions(m: &M, weights: [u64; 3]) -> [(u64, u64); 3] {
    let conv = alloc(m.conversions, weights, NO_CAP);
    let value = alloc(m.value_cents, conv, NO_CAP);
    std::array::from_fn(|i| (conv[i], value[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_is_exact_and_capped() {
        for t in 0..200u64 {
            let h = H::new(t);
            let imp = [
                h.with(1).below(50),
                h.with(2).below(50),
                h.with(3).below(50),
            ];
            let total_imp: u64 = imp.iter().sum();
            let clicks = h.with(4).below(total_imp + 1);
            let parts = alloc(clicks, imp, imp);
            assert_eq!(parts.iter().sum::<u64>(), clicks);
            for i in 0..3 {
                assert!(parts[i] <= imp[i]);
            }
        }
    }

    #[test]
    fn split_preserves_totals() {
        let m = M {
            impressions: 1_001,
            clicks: 37,
            link_clicks: 30,
            cost_cents: 12_345,
            conversions: 5,
            value_cents: 99_999,
            video_views: 200,
            engagements: 17,
            reach: 900,
        };
        let parts = split(&m, [600, 300, 100]);
        let mut sum = M::default();
        for p in &parts {
            assert!(
                p.clicks <= p.impressions && p.conversions <= p.clicks && p.reach <= p.impressions
            );
            sum.add(p);
        }
        assert_eq!(sum, m);
    }

    #[test]
    fn restatement_matures() {
        assert_eq!(restate(10, 1_000, 1), (7, 700));
        assert_eq!(restate(10, 1_000, 2), (8, 800));
        assert_eq!(restate(10, 1_000, 3), (10, 1_000));
        assert_eq!(restate(1, 500, 1), (0, 0));
    }
}
