//! The GAQL fields the emulator serves: names, JSON types, and how to read them from a row.

use std::cmp::Ordering;

use crate::date::Day;
use crate::generator::{AccountInfo, Ad, AdGroup, Campaign, ConvAction, M};
use crate::json;

/// Resources a field can belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Res {
    Customer,
    Campaign,
    CampaignBudget,
    AdGroup,
    AdGroupAd,
    Metrics,
    Segments,
}

impl Res {
    /// The resource for a FROM clause name.
    pub fn from_name(s: &str) -> Option<Res> {
        match s {
            "customer" => Some(Res::Customer),
            "campaign" => Some(Res::Campaign),
            "ad_group" => Some(Res::AdGroup),
            "ad_group_ad" => Some(Res::AdGroupAd),
            _ => None,
        }
    }

    /// Resources whose fields may be selected when querying FROM `self`.
    pub fn selectable(self, field: Res) -> bool {
        match field {
            Res::Customer | Res::Metrics | Res::Segments => true,
            Res::Campaign => self != Res::Customer,
            Res::CampaignBudget => self == Res::Campaign,
            Res::AdGroup => matches!(self, Res::AdGroup | Res::AdGroupAd),
            Res::AdGroupAd => self == Res::AdGroupAd,
        }
    }

    /// JSON key of the resource object in a row.
    pub fn json_key(self) -> &'static str {
        match self {
            Res::Customer => "customer",
            Res::Campaign => "campaign",
            Res::CampaignBudget => "campaignBudget",
            Res::AdGroup => "adGroup",
            Res::AdGroupAd => "adGroupAd",
            Res::Metrics => "metrics",
            Res::Segments => "segments",
        }
    }
}

/// JSON representation of a field (proto3 JSON mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// int64: a quoted decimal string.
    I64,
    /// double: a JSON number.
    F64,
    Str,
    Enum,
    StrList,
}

/// Every field the emulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum F {
    CustomerResourceName,
    CustomerId,
    CustomerDescriptiveName,
    CustomerCurrencyCode,
    CustomerTimeZone,
    CampaignResourceName,
    CampaignId,
    CampaignName,
    CampaignStatus,
    CampaignChannelType,
    CampaignBiddingStrategyType,
    CampaignStartDate,
    CampaignEndDate,
    CampaignBudget,
    BudgetResourceName,
    BudgetId,
    BudgetAmountMicros,
    AdGroupResourceName,
    AdGroupId,
    AdGroupName,
    AdGroupStatus,
    AdGroupType,
    AdGroupCampaign,
    AdGroupCpcBidMicros,
    AdGroupAdResourceName,
    AdGroupAdStatus,
    AdGroupAdAdGroup,
    AdResourceName,
    AdId,
    AdName,
    AdType,
    AdFinalUrls,
    Impressions,
    Clicks,
    CostMicros,
    Conversions,
    ConversionsValue,
    AllConversions,
    AllConversionsValue,
    VideoViews,
    Engagements,
    Interactions,
    Ctr,
    AverageCpc,
    AverageCpm,
    CostPerConversion,
    Date,
    Device,
    ConversionAction,
    ConversionActionName,
    ConversionActionCategory,
}

/// A field definition.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub name: &'static str,
    pub f: F,
    pub res: Res,
    pub kind: Kind,
}

macro_rules! fields {
    ($( $name:literal => $f:ident, $res:ident, $kind:ident; )*) => {
        /// The field catalog.
        pub static FIELDS: &[FieldDef] = &[ $( FieldDef { name: $name, f: F::$f, res: Res::$res, kind: Kind::$kind }, )* ];
    };
}

fields! {
    "customer.resource_name" => CustomerResourceName, Customer, Str;
    "customer.id" => CustomerId, Customer, I64;
    "customer.descriptive_name" => CustomerDescriptiveName, Customer, Str;
    "customer.currency_code" => CustomerCurrencyCode, Customer, Str;
    "customer.time_zone" => CustomerTimeZone, Customer, Str;
    "campaign.resource_name" => CampaignResourceName, Campaign, Str;
    "campaign.id" => CampaignId, Campaign, I64;
    "campaign.name" => CampaignName, Campaign, Str;
    "campaign.status" => CampaignStatus, Campaign, Enum;
    "campaign.advertising_channel_type" => CampaignChannelType, Campaign, Enum;
    "campaign.bidding_strategy_type" => CampaignBiddingStrategyType, Campaign, Enum;
    "campaign.start_date" => CampaignStartDate, Campaign, Str;
    "campaign.end_date" => CampaignEndDate, Campaign, Str;
    "campaign.campaign_budget" => CampaignBudget, Campaign, Str;
    "campaign_budget.resource_name" => BudgetResourceName, CampaignBudget, Str;
    "campaign_budget.id" => BudgetId, CampaignBudget, I64;
    "campaign_budget.amount_micros" => BudgetAmountMicros, CampaignBudget, I64;
    "ad_group.resource_name" => AdGroupResourceName, AdGroup, Str;
    "ad_group.id" => AdGroupId, AdGroup, I64;
    "ad_group.name" => AdGroupName, AdGroup, Str;
    "ad_group.status" => AdGroupStatus, AdGroup, Enum;
    "ad_group.type" => AdGroupType, AdGroup, Enum;
    "ad_group.campaign" => AdGroupCampaign, AdGroup, Str;
    "ad_group.cpc_bid_micros" => AdGroupCpcBidMicros, AdGroup, I64;
    "ad_group_ad.resource_name" => AdGroupAdResourceName, AdGroupAd, Str;
    "ad_group_ad.status" => AdGroupAdStatus, AdGroupAd, Enum;
    "ad_group_ad.ad_group" => AdGroupAdAdGroup, AdGroupAd, Str;
    "ad_group_ad.ad.resource_name" => AdResourceName, AdGroupAd, Str;
    "ad_group_ad.ad.id" => AdId, AdGroupAd, I64;
    "ad_group_ad.ad.name" => AdName, AdGroupAd, Str;
    "ad_group_ad.ad.type" => AdType, AdGroupAd, Enum;
    "ad_group_ad.ad.final_urls" => AdFinalUrls, AdGroupAd, StrList;
    "metrics.impressions" => Impressions, Metrics, I64;
    "metrics.clicks" => Clicks, Metrics, I64;
    "metrics.cost_micros" => CostMicros, Metrics, I64;
    "metrics.conversions" => Conversions, Metrics, F64;
    "metrics.conversions_value" => ConversionsValue, Metrics, F64;
    "metrics.all_conversions" => AllConversions, Metrics, F64;
    "metrics.all_conversions_value" => AllConversionsValue, Metrics, F64;
    "metrics.video_views" => VideoViews, Metrics, I64;
    "metrics.engagements" => Engagements, Metrics, I64;
    "metrics.interactions" => Interactions, Metrics, I64;
    "metrics.ctr" => Ctr, Metrics, F64;
    "metrics.average_cpc" => AverageCpc, Metrics, F64;
    "metrics.average_cpm" => AverageCpm, Metrics, F64;
    "metrics.cost_per_conversion" => CostPerConversion, Metrics, F64;
    "segments.date" => Date, Segments, Str;
    "segments.device" => Device, Segments, Enum;
    "segments.conversion_action" => ConversionAction, Segments, Str;
    "segments.conversion_action_name" => ConversionActionName, Segments, Str;
    "segments.conversion_action_category" => ConversionActionCategory, Segments, Enum;
}

/// Looks a field up by its GAQL name.
pub fn lookup(name: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|d| d.name == name)
}

impl F {
    /// Metrics that cannot be segmented by conversion action (Google rejects the query with
    /// `PROHIBITED_SEGMENT_WITH_METRIC_IN_SELECT_OR_WHERE_CLAUSE`).
    pub fn incompatible_with_conversion_segments(self) -> bool {
        matches!(
            self,
            F::Impressions
                | F::Clicks
                | F::CostMicros
                | F::VideoViews
                | F::Engagements
                | F::Interactions
                | F::Ctr
                | F::AverageCpc
                | F::AverageCpm
                | F::CostPerConversion
        )
    }

    /// The resource-name field of a resource object (auto-included in rows).
    pub fn resource_name_of(res: Res) -> Option<F> {
        match res {
            Res::Customer => Some(F::CustomerResourceName),
            Res::Campaign => Some(F::CampaignResourceName),
            Res::CampaignBudget => Some(F::BudgetResourceName),
            Res::AdGroup => Some(F::AdGroupResourceName),
            Res::AdGroupAd => Some(F::AdGroupAdResourceName),
            Res::Metrics | Res::Segments => None,
        }
    }
}

/// Converts a snake_case path segment to lowerCamelCase (proto3 JSON names).
pub fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Google `segments.device` values, in split order.
pub const DEVICES: [&str; 3] = ["MOBILE", "DESKTOP", "TABLET"];

/// A field value, for output, filtering and ordering.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    I(u64),
    F(f64),
    S(String),
    E(&'static str),
    L(Vec<String>),
    Null,
}

impl Val {
    /// Whether a metric value is zero (for the zero-row rule).
    pub fn is_zero(&self) -> bool {
        match self {
            Val::I(v) => *v == 0,
            Val::F(v) => *v == 0.0,
            _ => false,
        }
    }

    /// Total order used by ORDER BY.
    pub fn cmp_val(&self, other: &Val) -> Ordering {
        match (self, other) {
            (Val::I(a), Val::I(b)) => a.cmp(b),
            (Val::F(a), Val::F(b)) => a.total_cmp(b),
            (Val::I(a), Val::F(b)) => (*a as f64).total_cmp(b),
            (Val::F(a), Val::I(b)) => a.total_cmp(&(*b as f64)),
            _ => self.text().cmp(&other.text()),
        }
    }

    /// Text form (strings and enums; numbers in decimal).
    pub fn text(&self) -> String {
        match self {
            Val::I(v) => v.to_string(),
            Val::F(v) => v.to_string(),
            Val::S(s) => s.clone(),
            Val::E(s) => (*s).to_string(),
            Val::L(l) => l.join(","),
            Val::Null => String::new(),
        }
    }

    /// Numeric form, if any.
    pub fn num(&self) -> Option<f64> {
        match self {
            Val::I(v) => Some(*v as f64),
            Val::F(v) => Some(*v),
            _ => None,
        }
    }

    /// Writes the value in proto3 JSON.
    pub fn write(&self, kind: Kind, out: &mut Vec<u8>) {
        match (self, kind) {
            (Val::I(v), Kind::I64) => json::uint_str(out, *v),
            (Val::I(v), _) => json::uint(out, *v),
            (Val::F(v), _) => json::double(out, *v),
            (Val::S(s), _) => json::string(out, s),
            (Val::E(s), _) => json::string(out, s),
            (Val::L(l), _) => {
                out.push(b'[');
                for (i, s) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::string(out, s);
                }
                out.push(b']');
            }
            (Val::Null, _) => out.extend_from_slice(b"null"),
        }
    }
}

/// Everything a row's fields can be read from.
pub struct RowCtx<'a> {
    pub account: &'a AccountInfo,
    pub campaign: Option<&'a Campaign>,
    pub ad_group: Option<&'a AdGroup>,
    pub ad: Option<&'a Ad>,
    pub m: &'a M,
    pub day: Option<Day>,
    pub device: Option<u8>,
    pub action: Option<&'a ConvAction>,
}

fn ratio(num: f64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num / den as f64 }
}

/// Reads one field of a row.
pub fn get(f: F, c: &RowCtx<'_>) -> Val {
    let cid = c.account.id;
    let m = c.m;
    match f {
        F::CustomerResourceName => Val::S(format!("customers/{cid}")),
        F::CustomerId => Val::I(cid),
        F::CustomerDescriptiveName => Val::S(c.account.name.clone()),
        F::CustomerCurrencyCode => Val::S(c.account.currency.to_string()),
        F::CustomerTimeZone => Val::S(c.account.time_zone.to_string()),
        F::Impressions => Val::I(m.impressions),
        F::Clicks => Val::I(m.clicks),
        F::CostMicros => Val::I(m.cost_cents * 10_000),
        F::Conversions | F::AllConversions => Val::F(m.conversions as f64),
        F::ConversionsValue | F::AllConversionsValue => Val::F(json::cents_to_f64(m.value_cents)),
        F::VideoViews => Val::I(m.video_views),
        F::Engagements => Val::I(m.engagements),
        F::Interactions => Val::I(m.clicks + m.video_views + m.engagements),
        F::Ctr => Val::F(ratio(m.clicks as f64, m.impressions)),
        F::AverageCpc => Val::F(ratio((m.cost_cents * 10_000) as f64, m.clicks)),
        F::AverageCpm => Val::F(ratio(
            (m.cost_cents * 10_000) as f64 * 1_000.0,
            m.impressions,
        )),
        F::CostPerConversion => Val::F(ratio((m.cost_cents * 10_000) as f64, m.conversions)),
        F::Date => c.day.map_or(Val::Null, |d| Val::S(d.iso())),
        F::Device => c.device.map_or(Val::Null, |d| {
            Val::E(DEVICES.get(usize::from(d)).copied().unwrap_or("OTHER"))
        }),
        F::ConversionAction => c.action.map_or(Val::Null, |a| {
            Val::S(format!("customers/{cid}/conversionActions/{}", a.id))
        }),
        F::ConversionActionName => c.action.map_or(Val::Null, |a| Val::S(a.name.to_string())),
        F::ConversionActionCategory => c.action.map_or(Val::Null, |a| Val::E(a.category)),
        _ => entity_field(f, c),
    }
}

fn entity_field(f: F, c: &RowCtx<'_>) -> Val {
    let cid = c.account.id;
    if let Some(camp) = c.campaign {
        let a = camp.current();
        let budget_id = camp.id + 7;
        match f {
            F::CampaignResourceName => {
                return Val::S(format!("customers/{cid}/campaigns/{}", camp.id));
            }
            F::CampaignId => return Val::I(camp.id),
            F::CampaignName => return Val::S(a.name.clone()),
            F::CampaignStatus => return Val::E(a.status.google()),
            F::CampaignChannelType => return Val::E(camp.channel.google_type()),
            F::CampaignBiddingStrategyType => return Val::E(a.bidding),
            F::CampaignStartDate => return Val::S(camp.created.iso()),
            F::CampaignEndDate => {
                return Val::S(
                    camp.end_date
                        .map_or_else(|| "2037-12-30".to_string(), Day::iso),
                );
            }
            F::CampaignBudget | F::BudgetResourceName => {
                return Val::S(format!("customers/{cid}/campaignBudgets/{budget_id}"));
            }
            F::BudgetId => return Val::I(budget_id),
            F::BudgetAmountMicros => return Val::I(a.budget_cents * 10_000),
            _ => {}
        }
        if let Some(g) = c.ad_group {
            let ga = g.current();
            match f {
                F::AdGroupResourceName | F::AdGroupAdAdGroup => {
                    return Val::S(format!("customers/{cid}/adGroups/{}", g.id));
                }
                F::AdGroupId => return Val::I(g.id),
                F::AdGroupName => return Val::S(ga.name.clone()),
                F::AdGroupStatus => return Val::E(ga.status.google()),
                F::AdGroupType => return Val::E(camp.channel.google_ad_group_type()),
                F::AdGroupCampaign => {
                    return Val::S(format!("customers/{cid}/campaigns/{}", camp.id));
                }
                F::AdGroupCpcBidMicros => return Val::I(ga.bid_cents * 10_000),
                _ => {}
            }
            if let Some(ad) = c.ad {
                let aa = ad.current();
                match f {
                    F::AdGroupAdResourceName => {
                        return Val::S(format!("customers/{cid}/adGroupAds/{}~{}", g.id, ad.id));
                    }
                    F::AdGroupAdStatus => return Val::E(aa.status.google()),
                    F::AdResourceName => return Val::S(format!("customers/{cid}/ads/{}", ad.id)),
                    F::AdId => return Val::I(ad.id),
                    F::AdName => return Val::S(aa.name.clone()),
                    F::AdType => return Val::E(camp.channel.google_ad_type()),
                    F::AdFinalUrls => {
                        let slug: String = crate::generator::entities::THEMES
                            .get(camp.theme)
                            .copied()
                            .unwrap_or("home")
                            .to_ascii_lowercase()
                            .replace(' ', "-");
                        return Val::L(vec![format!("https://www.example.com/{slug}")]);
                    }
                    _ => {}
                }
            }
        }
    }
    Val::Null
}
