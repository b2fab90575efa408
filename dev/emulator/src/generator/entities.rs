//! Campaigns, ad groups and ads: lifecycles and attribute history.
//!
//! **Lifecycles.** Each account has `campaigns` *slots*. A slot hosts an endless succession of
//! campaign *generations*: every slot has its own cycle length (420–1019 days) and phase; a
//! generation is created on the first day of its cycle and removed 15–59 days before the cycle
//! ends, after which the slot is empty until the next generation (a new campaign, new id) is
//! created. With the default 400-day history most slots therefore show one long-lived campaign,
//! and many show a removal or a creation inside the window. The ad groups and ads of a
//! campaign are created on its first day (the first of each) or up to 60 / 30 days later, and
//! about 15 % are removed early. On Meta, removing a parent deletes its children (their own
//! status becomes `DELETED` that day); on Google the children keep their own status, as the
//! real platforms do.
//!
//! **Attribute changes (SCD2).** From its creation day an entity's life is cut into 30-day
//! periods; in each period after the first it changes at most once, with probability 35 %
//! (campaigns), 25 % (ad groups) or 15 % (ads), on a day drawn within the period. A change is
//! one of: status ENABLED↔PAUSED, daily budget, name, bidding strategy (campaigns); status, CPC
//! bid, name (ad groups); status, name (ads). Removal is the last version. Every version has a
//! `from` day and a minute of that day (Meta's `updated_time`). Only versions dated on or before
//! the clock's "today" are visible, so moving the clock reveals new versions and never alters
//! old ones.

use crate::date::Day;
use crate::hash::H;

use super::metrics::{self, Profile};
use super::{AccountInfo, Generator, Platform, tag};

/// Length of a change period, in days.
const PERIOD: i32 = 30;

/// Campaign themes: names are built from them, and GA4's paid campaign names reuse them.
pub const THEMES: [&str; 12] = [
    "Brand",
    "Spring Sale",
    "Summer Collection",
    "Back to School",
    "Black Friday",
    "Holiday Gifts",
    "Retargeting",
    "Prospecting",
    "New Arrivals",
    "Clearance",
    "Loyalty Members",
    "Competitor Conquest",
];

const AUDIENCES: [&str; 10] = [
    "Exact Match",
    "Broad Match",
    "Lookalike 1%",
    "Interests",
    "Remarketing 30d",
    "In-Market",
    "Generic Terms",
    "Brand Terms",
    "Cart Abandoners",
    "Top Customers",
];

const AD_VARIANTS: [&str; 8] = [
    "Headline A",
    "Headline B",
    "Carousel",
    "Video 15s",
    "Static Image",
    "UGC Testimonial",
    "Offer 10% Off",
    "Free Shipping",
];

/// Google conversion actions (name, category); each campaign reports 2 or 3 of them.
pub const CONVERSION_ACTIONS: [(&str, &str); 6] = [
    ("Purchase", "PURCHASE"),
    ("Add to cart", "ADD_TO_CART"),
    ("Lead form", "SUBMIT_LEAD_FORM"),
    ("Sign-up", "SIGNUP"),
    ("Phone call", "PHONE_CALL_LEAD"),
    ("Begin checkout", "BEGIN_CHECKOUT"),
];

/// Lifecycle status, rendered per platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Enabled,
    Paused,
    Removed,
}

impl Status {
    /// Google Ads enum value.
    pub fn google(self) -> &'static str {
        match self {
            Status::Enabled => "ENABLED",
            Status::Paused => "PAUSED",
            Status::Removed => "REMOVED",
        }
    }

    /// Meta `status` / `configured_status` value.
    pub fn meta(self) -> &'static str {
        match self {
            Status::Enabled => "ACTIVE",
            Status::Paused => "PAUSED",
            Status::Removed => "DELETED",
        }
    }
}

/// What a campaign is for; decides its metric profile. The first four are Google channel types,
/// the rest Meta objectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Search,
    Display,
    Video,
    PerformanceMax,
    Sales,
    Traffic,
    Awareness,
    Engagement,
    Leads,
}

impl Channel {
    fn draw(platform: Platform, h: H) -> Channel {
        let google = [
            Channel::Search,
            Channel::Search,
            Channel::Display,
            Channel::Video,
            Channel::PerformanceMax,
        ];
        let meta = [
            Channel::Sales,
            Channel::Sales,
            Channel::Traffic,
            Channel::Awareness,
            Channel::Engagement,
            Channel::Leads,
        ];
        let table: &[Channel] = if platform == Platform::MetaAds {
            &meta
        } else {
            &google
        };
        h.pick(table).unwrap_or(Channel::Search)
    }

    /// Google `advertising_channel_type`.
    pub fn google_type(self) -> &'static str {
        match self {
            Channel::Search => "SEARCH",
            Channel::Display => "DISPLAY",
            Channel::Video => "VIDEO",
            Channel::PerformanceMax => "PERFORMANCE_MAX",
            _ => "UNKNOWN",
        }
    }

    /// Google ad group `type`.
    pub fn google_ad_group_type(self) -> &'static str {
        match self {
            Channel::Search => "SEARCH_STANDARD",
            Channel::Display => "DISPLAY_STANDARD",
            Channel::Video => "VIDEO_RESPONSIVE",
            _ => "UNKNOWN",
        }
    }

    /// Google ad `type`.
    pub fn google_ad_type(self) -> &'static str {
        match self {
            Channel::Search => "RESPONSIVE_SEARCH_AD",
            Channel::Video => "VIDEO_RESPONSIVE_AD",
            _ => "RESPONSIVE_DISPLAY_AD",
        }
    }

    /// Meta campaign `objective`.
    pub fn meta_objective(self) -> &'static str {
        match self {
            Channel::Sales => "OUTCOME_SALES",
            Channel::Traffic => "OUTCOME_TRAFFIC",
            Channel::Awareness => "OUTCOME_AWARENESS",
            Channel::Engagement => "OUTCOME_ENGAGEMENT",
            Channel::Leads => "OUTCOME_LEADS",
            _ => "OUTCOME_TRAFFIC",
        }
    }

    /// Meta ad set `optimization_goal`.
    pub fn meta_optimization_goal(self) -> &'static str {
        match self {
            Channel::Sales => "OFFSITE_CONVERSIONS",
            Channel::Traffic => "LINK_CLICKS",
            Channel::Awareness => "THRUPLAY",
            Channel::Engagement => "POST_ENGAGEMENT",
            Channel::Leads => "LEAD_GENERATION",
            _ => "LINK_CLICKS",
        }
    }

    /// Short label used in names.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Search => "Search",
            Channel::Display => "Display",
            Channel::Video => "Video",
            Channel::PerformanceMax => "PMax",
            Channel::Sales => "Sales",
            Channel::Traffic => "Traffic",
            Channel::Awareness => "Awareness",
            Channel::Engagement => "Engagement",
            Channel::Leads => "Leads",
        }
    }

    /// Whether the campaign's ads are videos (video views are reported).
    pub fn is_video(self) -> bool {
        matches!(
            self,
            Channel::Video | Channel::Awareness | Channel::Engagement
        )
    }

    fn bidding_strategies(self) -> &'static [&'static str] {
        match self {
            Channel::Search => &[
                "MANUAL_CPC",
                "MAXIMIZE_CONVERSIONS",
                "TARGET_CPA",
                "TARGET_SPEND",
            ],
            Channel::Display => &["MAXIMIZE_CONVERSIONS", "TARGET_CPA", "MANUAL_CPM"],
            Channel::Video => &["TARGET_CPM", "MAXIMIZE_CONVERSIONS", "MANUAL_CPV"],
            Channel::PerformanceMax => &[
                "MAXIMIZE_CONVERSIONS",
                "MAXIMIZE_CONVERSION_VALUE",
                "TARGET_ROAS",
            ],
            _ => &[
                "LOWEST_COST_WITHOUT_CAP",
                "LOWEST_COST_WITH_BID_CAP",
                "COST_CAP",
                "LOWEST_COST_WITH_MIN_ROAS",
            ],
        }
    }
}

/// Tracked campaign attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignAttrs {
    pub name: String,
    pub status: Status,
    /// Google `bidding_strategy_type` or Meta `bid_strategy`.
    pub bidding: &'static str,
    /// Daily budget in minor units (cents).
    pub budget_cents: u64,
}

/// Tracked ad group (ad set) attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdGroupAttrs {
    pub name: String,
    pub status: Status,
    /// Google `cpc_bid_micros` / 10,000.
    pub bid_cents: u64,
}

/// Tracked ad attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdAttrs {
    pub name: String,
    pub status: Status,
}

/// One version of an entity's attributes, valid from `from` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version<A> {
    pub from: Day,
    /// Minute of `from` at which the change happened (0–1439), for timestamps.
    pub minute: u32,
    pub attrs: A,
}

/// A Google conversion action (account-level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAction {
    pub id: u64,
    pub name: &'static str,
    pub category: &'static str,
}

/// A campaign and its subtree.
#[derive(Clone, Debug)]
pub struct Campaign {
    pub slot: u32,
    pub id: u64,
    pub channel: Channel,
    pub theme: usize,
    pub created: Day,
    /// First day of status REMOVED / DELETED, if that has happened by "today".
    pub removed: Option<Day>,
    /// Planned last day (Google `end_date`, Meta `stop_time`), for some campaigns.
    pub end_date: Option<Day>,
    /// Versions visible as of "today", oldest first (never empty).
    pub versions: Vec<Version<CampaignAttrs>>,
    pub ad_groups: Vec<AdGroup>,
    /// Indexes into [`AccountModel::conv_actions`] and their split weights (Google only).
    pub conv: Vec<(usize, u64)>,
}

/// An ad group (Meta: ad set) and its ads.
#[derive(Clone, Debug)]
pub struct AdGroup {
    pub idx: u32,
    pub id: u64,
    pub created: Day,
    pub removed: Option<Day>,
    pub versions: Vec<Version<AdGroupAttrs>>,
    pub ads: Vec<Ad>,
}

/// An ad, with everything needed to compute its daily metrics.
#[derive(Clone, Debug)]
pub struct Ad {
    pub idx: u32,
    pub id: u64,
    pub creative_id: u64,
    pub variant: usize,
    pub created: Day,
    pub removed: Option<Day>,
    pub versions: Vec<Version<AdAttrs>>,
    /// Hash chain for the daily metrics of this ad.
    pub(crate) key: H,
    pub profile: Profile,
    /// First day the ad exists and first day it no longer does (its own, its ad group's or its
    /// campaign's removal, whichever comes first).
    pub exists_from: Day,
    pub exists_until: Option<Day>,
    /// Half-open day intervals during which campaign, ad group and ad are all enabled.
    pub active: Vec<(i32, i32)>,
}

impl Ad {
    /// Whether the ad exists on `day` (created and not removed).
    pub fn exists(&self, day: Day) -> bool {
        day >= self.exists_from && self.exists_until.is_none_or(|u| day < u)
    }

    /// Whether the ad can deliver on `day` (it and its parents are enabled).
    pub fn is_active(&self, day: Day) -> bool {
        let i = self.active.partition_point(|&(_, end)| end <= day.0);
        self.active.get(i).is_some_and(|&(start, _)| start <= day.0)
    }

    pub fn current(&self) -> &AdAttrs {
        &last(&self.versions).attrs
    }
}

impl AdGroup {
    pub fn current(&self) -> &AdGroupAttrs {
        &last(&self.versions).attrs
    }

    /// Minute of the last change (for `updated_time`).
    pub fn updated(&self) -> (Day, u32) {
        let v = last(&self.versions);
        (v.from, v.minute)
    }
}

impl Campaign {
    pub fn current(&self) -> &CampaignAttrs {
        &last(&self.versions).attrs
    }

    pub fn updated(&self) -> (Day, u32) {
        let v = last(&self.versions);
        (v.from, v.minute)
    }

    pub fn created_minute(&self) -> u32 {
        self.versions.first().map_or(0, |v| v.minute)
    }
}

impl Ad {
    pub fn updated(&self) -> (Day, u32) {
        let v = last(&self.versions);
        (v.from, v.minute)
    }
}

fn last<A>(versions: &[Version<A>]) -> &Version<A> {
    // Versions are built with at least the creation version; see `build_*`.
    match versions.last() {
        Some(v) => v,
        None => unreachable_version(),
    }
}

#[cold]
fn unreachable_version() -> ! {
    // Every constructor pushes the creation version first, so this cannot be reached; failing
    // loudly is better than inventing attributes.
    panic!("entity without versions")
}

/// All entities of one ad account visible as of `today`.
#[derive(Clone, Debug)]
pub struct AccountModel {
    pub info: AccountInfo,
    pub today: Day,
    /// First and last day with data.
    pub first_day: Day,
    pub last_day: Day,
    pub campaigns: Vec<Campaign>,
    pub conv_actions: Vec<ConvAction>,
}

impl AccountModel {
    /// Iterates over every ad with its campaign and ad group indexes.
    pub fn ads(&self) -> impl Iterator<Item = (usize, usize, usize, &Ad)> {
        self.campaigns.iter().enumerate().flat_map(|(ci, c)| {
            c.ad_groups.iter().enumerate().flat_map(move |(gi, g)| {
                g.ads.iter().enumerate().map(move |(ai, a)| (ci, gi, ai, a))
            })
        })
    }

    /// Days with data inside `[from, to]`.
    pub fn data_days(&self, from: Day, to: Day) -> Option<(Day, Day)> {
        let a = from.max(self.first_day);
        let b = to.min(self.last_day);
        (a <= b).then_some((a, b))
    }
}

/// A change event drawn for one period: (day, minute, kind hash).
struct Event {
    day: Day,
    minute: u32,
    kind: H,
}

/// Draws the change events of an entity created on `created`, alive until `end` (exclusive),
/// visible up to `today`.
fn schedule(h: H, created: Day, end: Day, today: Day, per_mille: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut j: i32 = 1;
    loop {
        let start = created.plus(j * PERIOD);
        if start >= end || start > today {
            break;
        }
        let hj = h.with(tag::EVENT).with(j as u64);
        if hj.chance(per_mille) {
            let day = start.plus(hj.with(1).below(PERIOD as u64) as i32);
            if day < end && day <= today {
                out.push(Event {
                    day,
                    minute: hj.with(2).below(1440) as u32,
                    kind: hj.with(3),
                });
            }
        }
        j += 1;
    }
    out
}

/// Builds an entity's version history from its change schedule.
///
/// Change kind 0 is a status change: an enabled entity is paused — for 3–20 days (85 %), after
/// which it resumes by itself, or until its next status change (15 %); a paused entity resumes.
/// Other kinds are applied by `apply` (kind, hash). Two versions never share a day.
#[allow(clippy::too_many_arguments)]
fn evolve<A: Clone>(
    h: H,
    created: Day,
    end: Day,
    today: Day,
    per_mille: u64,
    kinds: u64,
    initial: A,
    status: fn(&mut A) -> &mut Status,
    mut apply: impl FnMut(&mut A, u64, H),
) -> Vec<Version<A>> {
    let mut attrs = initial;
    let mut versions = vec![Version {
        from: created,
        minute: h.with(tag::MINUTE).below(1440) as u32,
        attrs: attrs.clone(),
    }];
    let mut resume: Option<(Day, u32)> = None;
    let visible = |d: Day| d < end && d <= today;
    for ev in schedule(h, created, end, today, per_mille) {
        if let Some((day, minute)) = resume {
            if day < ev.day {
                resume = None;
                if visible(day) && *status(&mut attrs) == Status::Paused {
                    *status(&mut attrs) = Status::Enabled;
                    versions.push(Version {
                        from: day,
                        minute,
                        attrs: attrs.clone(),
                    });
                }
            } else if day == ev.day {
                resume = Some((day.plus(1), minute));
            }
        }
        let kind = ev.kind.below(kinds);
        if kind == 0 {
            let s = status(&mut attrs);
            if *s == Status::Paused {
                *s = Status::Enabled;
                resume = None;
            } else {
                *s = Status::Paused;
                resume = ev.kind.with(9).chance(850).then(|| {
                    (
                        ev.day.plus(ev.kind.with(10).range(3, 20) as i32),
                        ev.kind.with(11).below(1440) as u32,
                    )
                });
            }
        } else {
            apply(&mut attrs, kind, ev.kind.with(1));
        }
        versions.push(Version {
            from: ev.day,
            minute: ev.minute,
            attrs: attrs.clone(),
        });
    }
    if let Some((day, minute)) = resume
        && visible(day)
        && *status(&mut attrs) == Status::Paused
    {
        *status(&mut attrs) = Status::Enabled;
        versions.push(Version {
            from: day,
            minute,
            attrs,
        });
    }
    versions
}

/// Half-open intervals where a status history says ENABLED.
fn enabled_intervals<A>(versions: &[Version<A>], status: impl Fn(&A) -> Status) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if status(&v.attrs) != Status::Enabled {
            continue;
        }
        let end = versions.get(i + 1).map_or(i32::MAX, |n| n.from.0);
        match out.last_mut() {
            Some(last) if last.1 == v.from.0 => last.1 = end,
            _ => out.push((v.from.0, end)),
        }
    }
    out
}

fn intersect(a: &[(i32, i32)], b: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(&(s1, e1)), Some(&(s2, e2))) = (a.get(i), b.get(j)) {
        let s = s1.max(s2);
        let e = e1.min(e2);
        if s < e {
            out.push((s, e));
        }
        if e1 < e2 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn min_day(a: Option<Day>, b: Option<Day>) -> Option<Day> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Campaign name: "Theme | Channel | CC".
pub fn campaign_name(theme: usize, channel: Channel, country: &str) -> String {
    format!(
        "{} | {} | {}",
        THEMES.get(theme).copied().unwrap_or("Brand"),
        channel.label(),
        country
    )
}

impl Generator {
    /// Builds every campaign, ad group and ad of an ad account visible as of `today`.
    pub fn model(&self, platform: Platform, account: u64, today: Day) -> AccountModel {
        let info = self.account(platform, account);
        let (first_day, last_day) = self.window(today);
        let base = self.base(platform, account);
        let conv_actions = CONVERSION_ACTIONS
            .iter()
            .enumerate()
            .map(|(i, (name, category))| ConvAction {
                id: 400_000_000 + base.with(tag::CONV).with(i as u64).below(500_000_000),
                name,
                category,
            })
            .collect();
        let mut campaigns = Vec::new();
        for slot in 0..self.config().campaigns {
            let hs = base.with(tag::SLOT).with(u64::from(slot));
            let cycle = 420 + hs.with(tag::CYCLE).below(600) as i64;
            let offset = hs.with(tag::CYCLE).with(1).below(cycle as u64) as i64;
            let k_first = (i64::from(first_day.0) + offset).div_euclid(cycle);
            let k_last = (i64::from(today.0) + offset).div_euclid(cycle);
            for k in k_first..=k_last {
                let gen_start = k * cycle - offset;
                let hk = hs.with(tag::GEN).with_i(k);
                let created = Day(gen_start as i32);
                let removal =
                    Day((gen_start + cycle - 15 - hk.with(tag::REMOVE).below(45) as i64) as i32);
                if created > today || removal <= first_day {
                    continue;
                }
                campaigns.push(self.build_campaign(&info, slot, hk, created, removal, today));
            }
        }
        AccountModel {
            info,
            today,
            first_day,
            last_day,
            campaigns,
            conv_actions,
        }
    }

    fn build_campaign(
        &self,
        info: &AccountInfo,
        slot: u32,
        hk: H,
        created: Day,
        removal: Day,
        today: Day,
    ) -> Campaign {
        let platform = info.platform;
        let meta = platform == Platform::MetaAds;
        let channel = Channel::draw(platform, hk.with(tag::CHANNEL));
        let id = entity_id(platform, hk.with(tag::ID), 0);
        let mut theme = hk.with(tag::THEME).below(THEMES.len() as u64) as usize;
        let country = info.countries[0].code;
        let strategies = channel.bidding_strategies();
        let initial = CampaignAttrs {
            name: campaign_name(theme, channel, country),
            status: if hk.with(tag::STATUS).chance(50) {
                Status::Paused
            } else {
                Status::Enabled
            },
            bidding: hk
                .with(tag::BIDDING)
                .pick(strategies)
                .unwrap_or("MANUAL_CPC"),
            budget_cents: hk.with(tag::BUDGET).range(20, 500) * 100,
        };
        let mut versions = evolve(
            hk,
            created,
            removal,
            today,
            350,
            4,
            initial,
            |a| &mut a.status,
            |attrs, kind, h| match kind {
                1 => {
                    let factor = h.range(70, 150);
                    attrs.budget_cents = ((attrs.budget_cents * factor / 100) / 100).max(5) * 100;
                }
                2 => {
                    theme = (theme + 1 + h.below(THEMES.len() as u64 - 1) as usize) % THEMES.len();
                    attrs.name = campaign_name(theme, channel, country);
                }
                _ => {
                    let n = strategies.len();
                    if let Some(cur) = strategies
                        .iter()
                        .position(|s| *s == attrs.bidding)
                        .filter(|_| n > 1)
                    {
                        attrs.bidding = strategies
                            .get((cur + 1 + h.below(n as u64 - 1) as usize) % n)
                            .copied()
                            .unwrap_or(attrs.bidding);
                    }
                }
            },
        );
        let mut attrs = last(&versions).attrs.clone();
        let removed = (removal <= today).then_some(removal);
        if removed.is_some() {
            attrs.status = Status::Removed;
            versions.push(Version {
                from: removal,
                minute: hk.with(tag::REMOVE).with(1).below(1440) as u32,
                attrs,
            });
        }
        let end_date = hk.with(tag::END).chance(300).then(|| removal.plus(-1));
        let conv = if meta {
            Vec::new()
        } else {
            let n = 2 + hk.with(tag::CONV).below(2) as usize;
            let start = hk
                .with(tag::CONV)
                .with(1)
                .below(CONVERSION_ACTIONS.len() as u64) as usize;
            (0..n)
                .map(|j| {
                    (
                        (start + j) % CONVERSION_ACTIONS.len(),
                        hk.with(tag::CONV).with(2 + j as u64).range(1, 10),
                    )
                })
                .collect()
        };
        let mut campaign = Campaign {
            slot,
            id,
            channel,
            theme,
            created,
            removed,
            end_date,
            versions,
            ad_groups: Vec::new(),
            conv,
        };
        let campaign_active = enabled_intervals(&campaign.versions, |a: &CampaignAttrs| a.status);
        let lifetime = removal.since(created).max(1) as u64;
        for g in 0..self.config().ad_groups {
            let hg = hk.with(tag::ADGROUP).with(u64::from(g));
            let g_created = if g == 0 {
                created
            } else {
                created.plus(hg.with(tag::CREATE).below(60.min(lifetime / 3)) as i32)
            };
            if g_created > today {
                continue;
            }
            let own_removal = hg
                .with(tag::REMOVE)
                .chance(150)
                .then(|| g_created.plus(30 + hg.with(tag::REMOVE).with(1).below(lifetime) as i32))
                .filter(|d| *d < removal);
            // Meta cascades a campaign's deletion to its ad sets; Google leaves their status alone.
            let g_removal = if meta {
                min_day(own_removal, Some(removal))
            } else {
                own_removal
            };
            let group = self.build_ad_group(
                info,
                &campaign,
                &campaign_active,
                g,
                hg,
                g_created,
                g_removal,
                removal,
                today,
            );
            campaign.ad_groups.push(group);
        }
        campaign
    }

    #[allow(clippy::too_many_arguments)]
    fn build_ad_group(
        &self,
        info: &AccountInfo,
        campaign: &Campaign,
        campaign_active: &[(i32, i32)],
        g: u32,
        hg: H,
        created: Day,
        removal: Option<Day>,
        campaign_removal: Day,
        today: Day,
    ) -> AdGroup {
        let meta = info.platform == Platform::MetaAds;
        let end = removal.unwrap_or(campaign_removal);
        let mut audience = hg.with(tag::NAME).below(AUDIENCES.len() as u64) as usize;
        let name_of = |aud: usize| {
            format!(
                "{} {}",
                AUDIENCES.get(aud).copied().unwrap_or("Audience"),
                g + 1
            )
        };
        let initial = AdGroupAttrs {
            name: name_of(audience),
            status: if hg.with(tag::STATUS).chance(40) {
                Status::Paused
            } else {
                Status::Enabled
            },
            bid_cents: hg.with(tag::BIDDING).range(50, 300),
        };
        let mut versions = evolve(
            hg,
            created,
            end,
            today,
            250,
            3,
            initial,
            |a| &mut a.status,
            |attrs, kind, h| {
                if kind == 1 {
                    attrs.bid_cents = (attrs.bid_cents * h.range(70, 140) / 100).max(10);
                } else {
                    audience = (audience + 1 + h.below(AUDIENCES.len() as u64 - 1) as usize)
                        % AUDIENCES.len();
                    attrs.name = name_of(audience);
                }
            },
        );
        let mut attrs = last(&versions).attrs.clone();
        let removed = removal.filter(|d| *d <= today);
        if let Some(day) = removed {
            attrs.status = Status::Removed;
            versions.push(Version {
                from: day,
                minute: hg.with(tag::REMOVE).with(2).below(1440) as u32,
                attrs,
            });
        }
        let mut group = AdGroup {
            idx: g,
            id: entity_id(info.platform, hg.with(tag::ID), 1),
            created,
            removed,
            versions,
            ads: Vec::new(),
        };
        let group_active = intersect(
            campaign_active,
            &enabled_intervals(&group.versions, |a: &AdGroupAttrs| a.status),
        );
        let lifetime = end.since(created).max(1) as u64;
        for a in 0..self.config().ads {
            let ha = hg.with(tag::AD).with(u64::from(a));
            let a_created = if a == 0 {
                created
            } else {
                created.plus(ha.with(tag::CREATE).below(30.min(lifetime / 3)) as i32)
            };
            if a_created > today {
                continue;
            }
            let own_removal = ha
                .with(tag::REMOVE)
                .chance(150)
                .then(|| a_created.plus(20 + ha.with(tag::REMOVE).with(1).below(lifetime) as i32))
                .filter(|d| *d < end);
            let a_removal = if meta {
                min_day(own_removal, Some(end))
            } else {
                own_removal
            };
            let variant = ha.with(tag::NAME).below(AD_VARIANTS.len() as u64) as usize;
            let name_of =
                |v: usize| format!("{} #{}", AD_VARIANTS.get(v).copied().unwrap_or("Ad"), a + 1);
            let initial = AdAttrs {
                name: name_of(variant),
                status: if ha.with(tag::STATUS).chance(30) {
                    Status::Paused
                } else {
                    Status::Enabled
                },
            };
            let a_end = a_removal.unwrap_or(end);
            let mut current_variant = variant;
            let mut versions = evolve(
                ha,
                a_created,
                a_end,
                today,
                150,
                2,
                initial,
                |a| &mut a.status,
                |attrs, _, _| {
                    current_variant = (current_variant + 1) % AD_VARIANTS.len();
                    attrs.name = name_of(current_variant);
                },
            );
            let mut attrs = last(&versions).attrs.clone();
            let removed = a_removal.filter(|d| *d <= today);
            if let Some(day) = removed {
                attrs.status = Status::Removed;
                versions.push(Version {
                    from: day,
                    minute: ha.with(tag::REMOVE).with(2).below(1440) as u32,
                    attrs,
                });
            }
            let active = intersect(
                &group_active,
                &enabled_intervals(&versions, |x: &AdAttrs| x.status),
            );
            let exists_until = min_day(min_day(a_removal, removal), Some(campaign_removal));
            group.ads.push(Ad {
                idx: a,
                id: entity_id(info.platform, ha.with(tag::ID), 2),
                creative_id: entity_id(info.platform, ha.with(tag::CREATIVE), 3),
                variant: current_variant,
                created: a_created,
                removed,
                versions,
                key: ha.with(tag::DAY),
                profile: metrics::profile(campaign.channel, ha.with(tag::PROFILE)),
                exists_from: a_created,
                exists_until: exists_until.filter(|d| *d <= today),
                active,
            });
        }
        group
    }
}

/// Stable numeric ids shaped like the platform's: Google campaigns have 11 digits, ad groups
/// and ads 12; Meta ids are 18-digit `1202…` numbers.
fn entity_id(platform: Platform, h: H, level: u64) -> u64 {
    match (platform, level) {
        (Platform::MetaAds, _) => 120_200_000_000_000_000 + h.below(100_000_000_000_000),
        (_, 0) => 20_000_000_000 + h.below(70_000_000_000),
        (_, 1) => 100_000_000_000 + h.below(400_000_000_000),
        (_, 2) => 600_000_000_000 + h.below(390_000_000_000),
        _ => 990_000_000_000 + h.below(9_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GenConfig;

    fn day(s: &str) -> Day {
        Day::parse(s).unwrap_or(Day(0))
    }

    #[test]
    fn history_is_stable_when_the_clock_moves() {
        let g = Generator::new(GenConfig::default());
        let early = g.model(Platform::GoogleAds, 1_234_567_890, day("2025-03-01"));
        let late = g.model(Platform::GoogleAds, 1_234_567_890, day("2025-06-01"));
        for c in &early.campaigns {
            if let Some(later) = late.campaigns.iter().find(|x| x.id == c.id) {
                // Every version visible early is still there, unchanged, later.
                assert!(later.versions.len() >= c.versions.len());
                assert_eq!(&later.versions[..c.versions.len()], &c.versions[..]);
            }
        }
    }

    #[test]
    fn lifecycles_and_changes_happen() {
        let g = Generator::new(GenConfig {
            campaigns: 20,
            ..GenConfig::default()
        });
        let m = g.model(Platform::MetaAds, 77, day("2025-06-01"));
        assert!(
            m.campaigns.iter().any(|c| c.versions.len() > 2),
            "some campaigns change"
        );
        assert!(
            m.campaigns.iter().any(|c| c.removed.is_some()),
            "some campaigns are removed"
        );
        assert!(
            m.campaigns.iter().any(|c| c.created > m.first_day),
            "some are created in the window"
        );
        // Meta cascades deletions.
        for c in m.campaigns.iter().filter(|c| c.removed.is_some()) {
            for ag in &c.ad_groups {
                assert!(ag.removed.is_some_and(|d| Some(d) <= c.removed));
            }
        }
        let ids: std::collections::BTreeSet<u64> = m.ads().map(|(_, _, _, a)| a.id).collect();
        assert_eq!(ids.len(), m.ads().count(), "ad ids are unique");
    }

    #[test]
    fn interval_helpers() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(5, 10), (20, 25)]
        );
        let v = vec![
            Version {
                from: Day(0),
                minute: 0,
                attrs: Status::Enabled,
            },
            Version {
                from: Day(5),
                minute: 0,
                attrs: Status::Paused,
            },
            Version {
                from: Day(9),
                minute: 0,
                attrs: Status::Enabled,
            },
        ];
        assert_eq!(enabled_intervals(&v, |s| *s), vec![(0, 5), (9, i32::MAX)]);
    }
}
